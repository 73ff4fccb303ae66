"""A transaction's private view of the database.

The view is a map of the rows the transaction touched, per table: the old
committed row (None if inserted here) and the private new copy (None if
deleted here).  A row is copied only when first written and tables are never
copied, so reading through the view costs a dictionary lookup.  Ops (ops.py)
write through it; the commit (commit.py) checks it and applies it.
"""

from __future__ import annotations

from .ids import new_txn_id
from .tables import Contents, Row, Table
from .values import Datum


class TxnRow:
    """A row this transaction touched: ``old`` is committed (None if inserted),
    ``new`` is the private copy (None if deleted)."""

    __slots__ = ("new", "old")

    def __init__(self, old: Row | None, new: Row | None) -> None:
        self.old = old
        self.new = new


class View:
    """The rows one transaction touched, over the committed ``db``."""

    __slots__ = ("db", "deleted", "id", "modified", "tables", "touched")

    def __init__(self, db: Contents) -> None:
        self.db = db
        self.tables = db.tables
        self.touched: dict[str, dict[str, TxnRow]] = {}
        # Whether any row was modified / deleted: commit skips the work they would need.
        self.modified = False
        self.deleted = False
        self.id: str | None = None  # made when first needed: most reads need none

    def txn_id(self) -> str:
        if self.id is None:
            self.id = new_txn_id()
        return self.id

    def new_version(self) -> Datum:
        """A fresh ``_version``: the transaction's id for the first row it changes."""
        if self.id is None:
            return (self.txn_id(),)
        return (new_txn_id(),)

    @staticmethod
    def current(table: Table, touched: dict[str, TxnRow] | None, uuid: str) -> Row | None:
        if touched:
            t = touched.get(uuid)
            if t is not None:
                return t.new
        return table.rows.get(uuid)

    def writable(self, table: Table, row: Row) -> Row:
        """The transaction's own copy of ``row`` (copied on first write)."""
        uuid = row["_uuid"][0]
        touched = self.touched.setdefault(table.name, {})
        t = touched.get(uuid)
        if t is None:
            new = dict(row)
            touched[uuid] = TxnRow(row, new)
            self.modified = True
            return new
        assert t.new is not None
        return t.new

    def delete(self, table: Table, uuid: str) -> None:
        self.deleted = True
        touched = self.touched.setdefault(table.name, {})
        t = touched.get(uuid)
        if t is None:
            touched[uuid] = TxnRow(table.rows[uuid], None)
        elif t.old is None:
            del touched[uuid]  # inserted by this transaction: as if it never was
        else:
            t.new = None

    def alive(self, table_name: str, uuid: str) -> bool:
        touched = self.touched.get(table_name)
        if touched:
            t = touched.get(uuid)
            if t is not None:
                return t.new is not None
        return uuid in self.tables[table_name].rows

    def exists(self, table_name: str, uuid: str) -> bool:
        """Whether a reference may point at the row: it exists or this transaction touched it."""
        touched = self.touched.get(table_name)
        return (touched is not None and uuid in touched) or uuid in self.tables[table_name].rows


__all__ = ["TxnRow", "View"]

"""Change sets as JSON: what a log record stores of a commit, and back.

A commit's change set (``Changes``: old and new row per touched row) becomes
``{table: {uuid: {column: value, ...} | null}}``, values in OVSDB JSON
notation, ``null`` for a deleted row (PROTOCOL.md 7.2):

- a new row holds its persistent columns that are not at their default;
- a modified row holds its changed persistent columns (full new values);
- a row whose changes touch only ephemeral columns is left out;
- a row whose only change is a new ``_version`` (a weak reference it gained
  to a row deleted in the same transaction, removed again) holds just that;
- ``_version`` is left out when it is the id of the transaction that wrote
  it (the first row a transaction changes gets that id), since every record
  names its transaction; replay gives such a row the record's id back.

A snapshot is every row in the new-row form.  Applying JSON back trusts it
to meet the schema's constraints (it was checked at commit), so it parses
values without the constraint checks; it still checks every type.

No I/O here: the server's record codec wraps this JSON with the record's
sequence number, id, date and writer.
"""

from __future__ import annotations

from typing import Any

from .database import Database
from .errors import OVSDBError
from .tables import Changes, Row, Table
from .values import Datum


def changes_to_json(database: Database, changes: Changes, txn_id: str) -> dict[str, Any]:
    """The change set of transaction ``txn_id`` as a log record stores it."""
    out: dict[str, Any] = {}
    for name, rows in changes.items():
        table = database.tables[name]
        records: dict[str, Any] = {}
        for uuid, (old, new) in rows.items():
            if new is None:
                records[uuid] = None
            elif old is None:
                records[uuid] = table.stored_json(new, txn_id)
            else:
                changed = {c: encode(new[c]) for c, encode in table.stored
                           if old[c] != new[c]}
                if changed or _only_version_changed(old, new):
                    version = new["_version"][0]
                    if version != txn_id:
                        changed["_version"] = version
                    records[uuid] = changed
        if records:
            out[name] = records
    return out


def _only_version_changed(old: Row, new: Row) -> bool:
    return all(old[c] == new[c] for c in new if c != "_version")


def snapshot_json(database: Database, txn_id: str) -> dict[str, Any]:
    """Every row in the new-row form, for a snapshot record whose id is ``txn_id``."""
    return {name: {uuid: table.stored_json(row, txn_id) for uuid, row in table.rows.items()}
            for name, table in database.tables.items() if table.rows}


def apply_changes_json(database: Database, txn_id: str, tables: dict[str, Any],
                       snapshot: bool = False) -> Changes:
    """Apply the JSON of transaction ``txn_id`` to ``database`` and return
    the change set; a ``snapshot`` first empties the database.

    A row stored without ``_version`` gets ``txn_id``.  Raises OVSDBError
    naming the table, row or column that does not fit the schema.
    """
    version = (txn_id,)
    if snapshot:
        database.reset_tables()
    changes: Changes = {}
    for name, rows in tables.items():
        table = database.tables.get(name)
        if table is None:
            raise OVSDBError("syntax error", f"No table named {name}.")
        if type(rows) is not dict:
            raise OVSDBError("syntax error", f"Table {name}: rows are not a JSON object.")
        applied = changes[name] = {}
        for uuid, data in rows.items():
            if data is not None and type(data) is not dict:
                raise OVSDBError("syntax error",
                                 f"Row {uuid} of table {name} is neither a JSON object nor null.")
            old = table.rows.get(uuid)
            if data is None and old is None:
                continue  # already gone: replay is idempotent
            new = None if data is None else _replayed_row(table, uuid, old, data, version)
            if table.strong_columns:
                database.count_references(table, uuid, old, new)
            table.apply(uuid, old, new)
            if table.weak_columns:
                database.index_weak_references(table, uuid, old, new)
            applied[uuid] = (old, new)
    return changes


def _replayed_row(table: Table, uuid: str, old: Row | None, data: dict[str, Any],
                  version: Datum) -> Row:
    row = dict(old) if old is not None else table.defaults.copy()
    row["_version"] = version  # unless ``data`` holds another
    parsers = table.replay_parsers
    for column, value in data.items():
        parser = parsers.get(column)
        if parser is None:
            raise OVSDBError("syntax error", f"No column {column} in table {table.name}.")
        row[column] = parser.parse(value, None)
    row["_uuid"] = (uuid,)
    return row


__all__ = ["apply_changes_json", "changes_to_json", "snapshot_json"]

"""The committed contents of a database: tables, rows, indexes and reference bookkeeping.

A row is a dict of column -> datum, shared between the table and every change
set that names it: it is never changed in place once committed (a transaction
writes a copy).  Each table keeps its unique indexes, value indexes it builds
for itself, strong reference counts into its rows and a reverse index of
the weak references to them, all kept exact by ``Table.apply`` and
``Contents.index_weak_references`` at every commit and replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from . import values
from .conditions import ConditionParser
from .errors import OVSDBError
from .hashorder import ovs_column_order
from .mutations import MutationParser
from .schema import ColumnSchema, DbSchema, TableSchema
from .types import Type
from .values import Datum

Row = dict[str, Datum]
Changes = dict[str, dict[str, tuple[Row | None, Row | None]]]


# A column holding references: (column, key's refTable, value's refTable, is a map).
RefColumn = tuple[str, str | None, str | None, bool]


def _ref_columns(table: TableSchema, kind: str) -> list[RefColumn]:
    found = []
    for name, column in table.user_columns.items():
        key, value = column.type.key, column.type.value
        key_ref = key.ref_table if key.ref_table is not None and key.ref_type == kind else None
        value_ref = (value.ref_table if value is not None and value.ref_table is not None
                     and value.ref_type == kind else None)
        if key_ref or value_ref:
            found.append((name, key_ref, value_ref, value is not None))
    return found


def ref_atoms(ref: RefColumn, elements: Any) -> Iterator[tuple[str, str]]:
    """(table, uuid) of every reference in ``elements`` (atoms, or pairs for a map)."""
    _, key_ref, value_ref, is_map = ref
    if not is_map:
        for atom in elements:
            yield key_ref, atom  # type: ignore[misc]
        return
    for key, value in elements:
        if key_ref is not None:
            yield key_ref, key
        if value_ref is not None:
            yield value_ref, value


def _sort_key(type_: Type) -> Callable[[Datum], Any]:
    # OVS orders datums by size first, then keys, then values.
    if type_.is_map:
        return lambda d: (len(d), [k for k, _ in d], [v for _, v in d])
    return lambda d: (len(d), d)


class Table:
    """The committed rows of one table, its unique indexes and reference bookkeeping."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.name = schema.name
        self.columns: dict[str, ColumnSchema] = schema.columns
        self.types: dict[str, Type] = {n: c.type for n, c in schema.columns.items()}
        # Per column: its value parser (with constraint checks) and JSON encoder.
        self.parsers = {n: values.parser(t) for n, t in self.types.items()}
        self.encoders = {n: values.encoder(t) for n, t in self.types.items()}
        self.rows: dict[str, Row] = {}
        self.indexes = [Index(columns) for columns in schema.indexes]
        # Indexes the table builds for itself (see ``scanned``): column -> value index.
        self.value_indexes: dict[str, ValueIndex] = {}
        self.scans: dict[str, int] = {}
        # Strong references into each row from other rows (absent = 0).
        self.refs: dict[str, int] = {}
        # Reverse weak-reference index: row -> {(referring table, row): count}.
        self.weak_refs: dict[str, dict[tuple[str, str], int]] = {}
        self.strong_columns = _ref_columns(schema, "strong")
        self.weak_columns = _ref_columns(schema, "weak")
        self.defaults: Row = {n: values.default(t) for n, t in self.types.items()}
        # Columns whose default breaks their own constraints: an insert must set
        # them.  Of several left unset, ovsdb-server reports the first it visits.
        self.checked_defaults = [n for n in ovs_column_order(list(schema.user_columns))
                                 if len(self.defaults[n]) == 1
                                 and not _valid(self.types[n], self.defaults[n])]
        # The persistent columns and their encoders: what the journal stores.
        self.stored = [(n, self.encoders[n]) for n, c in schema.user_columns.items()
                       if c.persistent]
        self.sort_keys = {n: _sort_key(t) for n, t in self.types.items()}
        self.conditions = ConditionParser(schema)
        self.mutations = MutationParser(schema)
        # Replay trusts what the journal holds to meet the constraints
        # (``_version`` gets its own parser from Database).
        self.replay_parsers = {n: values.parser(t, checked=False) for n, t in self.types.items()}

    def lookup(self, eq: dict[str, Datum]) -> list[str] | None:
        """Committed rows whose indexed columns equal ``eq``; None if no index applies."""
        for index in self.indexes:
            if all(c in eq for c in index.columns):
                found = index.rows.get(index.key(eq))
                return [] if found is None else [found]
        if self.value_indexes:
            for column, datum in eq.items():
                value_index = self.value_indexes.get(column)
                if value_index is not None:
                    return list(value_index.rows.get(datum, ()))
        return None

    def scanned(self, eq: dict[str, Datum]) -> bool:
        """Note a scan for ``eq`` that no index could answer; True when it made one.

        A column that keeps being searched for equality in a big table gets a
        value index (as SQLite builds automatic indexes): one scan's worth of
        work, then every later search by that column is a dictionary lookup,
        and every commit keeps it current.
        """
        if len(self.rows) < VALUE_INDEX_MIN_ROWS:
            return False
        for column in eq:
            seen = self.scans.get(column, 0) + 1
            self.scans[column] = seen
            if seen >= VALUE_INDEX_AFTER_SCANS and column != "_uuid":
                self.value_indexes[column] = ValueIndex(column, self.rows)
                return True
        return False

    def row_json(self, row: Row, columns: list[str]) -> dict[str, Any]:
        encoders = self.encoders
        return {c: encoders[c](row[c]) for c in columns}

    def stored_json(self, row: Row, txn_id: str) -> dict[str, Any]:
        """A new row as the journal stores it in the record of transaction ``txn_id``:
        persistent columns not at their default, and ``_version`` unless it is ``txn_id``.

        _version is kept (ovsdb-server does not), so that a client that resumes
        a monitor after a restart holds the rows' current versions; replay
        gives a row without one the id of its record.
        """
        defaults = self.defaults
        stored = {c: encode(row[c]) for c, encode in self.stored if row[c] != defaults[c]}
        version = row["_version"][0]
        if version != txn_id:
            stored["_version"] = version
        return stored

    def apply(self, uuid: str, old: Row | None, new: Row | None) -> None:
        """Make a change permanent: rows and unique indexes (reference counts are separate)."""
        if old is not None:
            for index in self.indexes:
                key = index.key(old)
                if index.rows.get(key) == uuid:  # a swap may already have taken it over
                    del index.rows[key]
        for value_index in self.value_indexes.values():
            value_index.apply(uuid, old, new)
        if new is None:
            del self.rows[uuid]
            return
        self.rows[uuid] = new
        for index in self.indexes:
            index.rows[index.key(new)] = uuid


class Index:
    """A unique index: the key of a row (its datum for one column, a tuple of datums
    for several) -> the uuid of the committed row that has it."""

    __slots__ = ("columns", "key", "rows")

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.key: Callable[[Row], Any] = itemgetter(*columns)
        self.rows: dict[Any, str] = {}


# A table builds a value index on a column once it holds this many rows and
# has been scanned this many times for equality on the column.
VALUE_INDEX_MIN_ROWS = 1000
VALUE_INDEX_AFTER_SCANS = 3


class ValueIndex:
    """A non-unique index on one column: datum -> the committed rows that have it
    (a dict used as an insertion-ordered set)."""

    __slots__ = ("column", "rows")

    def __init__(self, column: str, rows: dict[str, Row]) -> None:
        self.column = column
        self.rows: dict[Datum, dict[str, None]] = {}
        for uuid, row in rows.items():
            self.rows.setdefault(row[column], {})[uuid] = None

    def apply(self, uuid: str, old: Row | None, new: Row | None) -> None:
        column = self.column
        before = old[column] if old is not None else None
        after = new[column] if new is not None else None
        if before == after:
            return
        if before is not None:
            bucket = self.rows[before]
            del bucket[uuid]
            if not bucket:
                del self.rows[before]
        if after is not None:
            self.rows.setdefault(after, {})[uuid] = None


def _valid(type_: Type, datum: Datum) -> bool:
    try:
        values.check(type_, datum)
    except OVSDBError:
        return False
    return True


def difference(old: Datum, new: Datum) -> tuple[Any, Any]:
    """(removed, added) elements (pairs for maps) between two datums."""
    if not old or not new:
        return old, new
    old_set, new_set = set(old), set(new)
    return old_set - new_set, new_set - old_set


class Contents:
    """One database's committed tables, the tables each commit step must visit,
    and the reverse weak-reference index across them."""

    def __init__(self, schema: DbSchema) -> None:
        self.schema = schema
        self.name = schema.name
        # Names starting with "_" are reserved for the server's own databases.
        self.reserved = schema.name.startswith("_")
        self.reset_tables()

    def reset_tables(self) -> None:
        """Empty every table (a snapshot replaces everything)."""
        self.tables = {name: Table(ts) for name, ts in self.schema.tables.items()}
        # The commit steps each schema needs at all.
        self.weak_tables = [t for t in self.tables.values() if t.weak_columns]
        self.limited_tables = [t for t in self.tables.values() if t.schema.max_rows is not None]
        self.collected_tables = [t for t in self.tables.values() if not t.schema.is_root]

    def count_references(self, table: Table, uuid: str, old: Row | None,
                         new: Row | None) -> None:
        """Keep the strong reference counts in step with one row's change (a
        row's references to itself do not count)."""
        for ref in table.strong_columns:
            column = ref[0]
            removed, added = difference(old[column] if old is not None else (),
                                        new[column] if new is not None else ())
            for delta, elements in ((-1, removed), (1, added)):
                for target_table, target in ref_atoms(ref, elements):
                    if target == uuid:
                        continue
                    refs = self.tables[target_table].refs
                    total = refs.get(target, 0) + delta
                    if total:
                        refs[target] = total
                    else:
                        refs.pop(target, None)

    def index_weak_references(self, table: Table, uuid: str, old: Row | None,
                              new: Row | None) -> None:
        """Keep the reverse weak-reference index in step with one row's change."""
        source = (table.name, uuid)
        for ref in table.weak_columns:
            column = ref[0]
            before = old[column] if old is not None else ()
            after = new[column] if new is not None else ()
            if before == after:
                continue
            removed, added = difference(before, after)
            for target_name, target in ref_atoms(ref, removed):
                weak_refs = self.tables[target_name].weak_refs
                holders = weak_refs.get(target)
                if holders is not None and source in holders:
                    holders[source] -= 1
                    if not holders[source]:
                        del holders[source]
                        if not holders:
                            del weak_refs[target]
            for target_name, target in ref_atoms(ref, added):
                if target_name != table.name or target != uuid:
                    holders = self.tables[target_name].weak_refs.setdefault(target, {})
                    holders[source] = holders.get(source, 0) + 1


__all__ = ["VALUE_INDEX_AFTER_SCANS", "VALUE_INDEX_MIN_ROWS", "Changes", "Contents", "Index",
           "RefColumn", "Row", "Table", "ValueIndex", "difference", "ref_atoms"]

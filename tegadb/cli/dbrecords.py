"""Naming tables, columns and records as ovs-vsctl does, for any schema.

A local copy of the tables the commands touch (`Snapshot`, filled from a
``monitor_cond_since`` reply and kept up to date by its updates), and the lookups of
OVS's lib/db-ctl-base.c on it: a table or column by a unique abbreviation
(``get_table``, ``get_column``), a record by UUID, by UUID prefix, by ``.``
(the only row), or by the value of the table's name column.  ovs-vsctl knows
each Open_vSwitch table's name column from tables compiled into it; here the
schema says: the first column of the table's first index, when that is a
single string, integer or uuid.

Errors keep OVS's words (tests compare them with ovs-vsctl's) and add the
closest name when there is one: ``...; did you mean "mtu"?``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..core import values
from ..core.atoms import UUID_RE
from ..core.hashorder import ovs_hmap_order, ovs_member_order
from ..core.schema import ColumnSchema, DbSchema, TableSchema
from ..core.types import UNLIMITED

_PARTIAL_UUID_RE = re.compile(r"[0-9a-fA-F]{1,8}(?:-[0-9a-fA-F]{0,4}){0,3}(?:-[0-9a-fA-F]{0,12})?\Z")


class NotFound(Exception):
    """A table, column or record that cannot be found; the message says which."""


def suggestion(wrong: str, names: Iterable[str]) -> str:
    """``; did you mean "NAME"?`` for the closest of ``names``, or nothing."""
    close = difflib.get_close_matches(wrong, list(names), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _normalized(c: str) -> str:
    return "_" if c == "-" else c.lower()


def partial_match_score(name: str, given: str) -> int:
    """OVS's ``score_partial_match``: how well ``given`` (user input) names ``name``.

    Exact: highest; equal but for case and ``-``/``_``: next; a prefix: its
    length; anything else: 0.
    """
    if name == given:
        return 1 << 32
    if len(name) == len(given) and all(map(lambda a, b: _normalized(a) == _normalized(b),
                                           name, given)):
        return (1 << 32) - 1
    common = 0
    for a, b in zip(name, given):
        if _normalized(a) != _normalized(b):
            break
        common += 1
    return common if common == len(given) else 0


def best_match(names: Iterable[str], given: str) -> list[str]:
    """The names ``given`` matches best (none, one, or an ambiguous several)."""
    best: list[str] = []
    best_score = 0
    for name in names:
        score = partial_match_score(name, given)
        if score and score >= best_score:
            if score > best_score:
                best = []
            best.append(name)
            best_score = score
    return best


def get_table(schema: DbSchema, given: str) -> TableSchema:
    matches = best_match(schema.tables, given)
    if not matches:
        raise NotFound(f'unknown table "{given}"' + suggestion(given, schema.tables))
    if len(matches) > 1:
        raise NotFound(f'"{given}" matches multiple table names: {", ".join(sorted(matches))}')
    return schema.tables[matches[0]]


def get_column(table: TableSchema, given: str) -> ColumnSchema:
    columns = table.user_columns
    matches = best_match(columns, given)
    if not matches:
        raise NotFound(f'{table.name} does not contain a column whose name matches '
                           f'"{given}"' + suggestion(given, columns))
    if len(matches) > 1:
        raise NotFound(f"{table.name} contains more than one column whose name matches "
                           f'"{given}": {", ".join(sorted(matches))}')
    return columns[matches[0]]


def name_column(table: TableSchema) -> ColumnSchema | None:
    """The column whose value names a record: the first column of the first
    index, if it holds one string, integer or uuid."""
    if not table.indexes:
        return None
    column = table.columns[table.indexes[0][0]]
    scalar = column.type.is_scalar or column.type.is_optional
    if scalar and column.type.key.type in ("string", "integer", "uuid"):
        return column
    return None


def partial_uuid_length(text: str) -> int:
    """OVS's ``uuid_is_partial_string``: the length of ``text`` if it can begin a UUID."""
    if len(text) > 36 or not _PARTIAL_UUID_RE.match(text):
        return 0
    hyphens = [i for i, c in enumerate(text) if c == "-"]
    return len(text) if all(i in (8, 13, 18, 23) for i in hyphens) else 0


# --- the local copy ----------------------------------------------------------------

@dataclass
class Row:
    uuid: str
    data: dict[str, values.Datum]
    version: str | None = None  # None: inserted by these commands
    deleted: bool = False
    written: set[str] = field(default_factory=set)  # columns the commands changed
    uuid_chosen: bool = False  # inserted with the UUID ``--id=UUID`` gave


def idl_row_order(uuids: Iterable[str]) -> list[str]:
    """Rows, given in the order the OVS IDL inserted them, in the order it
    visits them: its hmap keyed by the first 32 bits of the uuid."""
    return ovs_hmap_order(uuids, _uuid_hash)


def _uuid_hash(uuid: str) -> int:
    return int(uuid[:8], 16)


class Snapshot:
    """The rows of some tables, as a ``monitor_cond_since`` of all their
    columns shows them (the request ovs-vsctl's IDL makes).

    Rows are kept in the order ovs-vsctl's IDL lists them, which depends on
    the order it put them in its hash map: it reads the tables and rows of
    an update in JSON-object (shash) order, and reading a row that refers
    to another, not yet seen, puts that one in first (an "orphan").  A
    reference column the IDL does not read counts as its default: one
    all-zero UUID when the column may not be empty.  ``idl_columns`` says
    which columns it reads, by table (the tables to keep).
    """

    def __init__(self, schema: DbSchema, idl_columns: dict[str, set[str]]) -> None:
        self.schema = schema
        self.idl_columns = idl_columns
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in idl_columns}
        self._placed: dict[str, dict[str, None]] = {name: {} for name in idl_columns}

    def copy(self) -> Snapshot:
        """A working copy: its rows can change without changing these."""
        copy = Snapshot(self.schema, {})
        copy.rows = {table: {uuid: replace(row, data=dict(row.data), written=set())
                             for uuid, row in rows.items()}
                     for table, rows in self.rows.items()}
        return copy

    def monitor_requests(self) -> dict[str, Any]:
        return {name: [{"columns": [*sorted(self.schema.tables[name].user_columns),
                                    "_version"]}]
                for name in self.rows}

    def apply(self, updates: Any) -> None:
        """<table-updates2>: rows in (initial, insert), changed (modify) and out."""
        updates = {name: rows for name, rows in (updates or {}).items() if name in self.rows}
        for table_name in ovs_member_order(updates):
            table = self.schema.tables[table_name]
            known = self.rows[table_name]
            rows = updates[table_name]
            for uuid in ovs_member_order(rows):
                change = rows[uuid]
                if "delete" in change:
                    known.pop(uuid, None)
                    self._placed[table_name].pop(uuid, None)
                elif "modify" in change:
                    self._modify(table, known[uuid], change["modify"])
                else:
                    new = change.get("initial") or change.get("insert") or {}
                    data = {name: values.parse_unchecked(column.type, new[name])
                            if name in new else values.default(column.type)
                            for name, column in table.user_columns.items()}
                    known[uuid] = Row(uuid, data, new["_version"][1])
                    self._place(table_name, uuid)
                    self._place_references(table, data)
        for table_name in updates:
            known = self.rows[table_name]
            self.rows[table_name] = {uuid: known[uuid]
                                     for uuid in idl_row_order(self._placed[table_name])
                                     if uuid in known}

    def _place(self, table: str, uuid: str) -> None:
        self._placed[table].setdefault(uuid, None)

    def _place_references(self, table: TableSchema, data: dict[str, values.Datum]) -> None:
        """The rows ``data`` refers to, in the order the IDL parses its columns."""
        read = self.idl_columns[table.name]
        for name in sorted(table.user_columns):
            type_ = table.columns[name].type
            datum = data[name] if name in read else values.default(type_)
            pairs = datum if type_.is_map else [(atom, None) for atom in datum]
            for key, value in pairs:
                for base, atom in ((type_.key, key), (type_.value, value)):
                    if base is not None and base.ref_table in self._placed and atom:
                        self._place(base.ref_table, atom)

    @staticmethod
    def _modify(table: TableSchema, row: Row, diffs: dict[str, Any]) -> None:
        for name, diff in diffs.items():
            if name == "_version":
                row.version = diff[1]
                continue
            type_ = table.columns[name].type
            change = values.parse_unchecked(type_.relaxed(0, UNLIMITED), diff)
            row.data[name] = values.apply_diff(type_, row.data[name], change)

    def table_rows(self, table: str) -> Iterator[Row]:
        return (row for row in self.rows[table].values() if not row.deleted)

    def find(self, table: str, uuid: str) -> Row | None:
        row = self.rows[table].get(uuid)
        return None if row is None or row.deleted else row

    def get_row(self, table: TableSchema, record: str, must_exist: bool) -> Row | None:
        """OVS's ``ctl_get_row``: by UUID, ``.``, name, then UUID prefix."""
        row = self.find(table.name, record.lower()) if UUID_RE.match(record) else None
        if row is None and record == ".":
            rows = list(self.table_rows(table.name))
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            row = self._by_name(table, record)
        if row is None and partial_uuid_length(record) >= 4:
            row = self._by_uuid_prefix(table, record.lower())
        if row is None and must_exist:
            names = self._names(table)
            raise NotFound(f'no row "{record}" in table {table.name}'
                               + suggestion(record, names))
        return row

    def _names(self, table: TableSchema) -> list[str]:
        column = name_column(table)
        if column is None:
            return []
        return [values.atom_to_string(column.type.key.type, row.data[column.name][0])
                if column.type.key.type != "string" else row.data[column.name][0]
                for row in self.table_rows(table.name) if row.data[column.name]]

    def _by_name(self, table: TableSchema, record: str) -> Row | None:
        column = name_column(table)
        if column is None:
            return None
        kind = column.type.key.type
        if kind == "integer" and not record.isdigit():
            return None
        found = None
        for row in self.table_rows(table.name):
            datum = row.data[column.name]
            if len(datum) == 1 and _names_equal(datum[0], kind, record):
                if found is not None:
                    raise NotFound(f'multiple rows in {table.name} match "{record}"')
                found = row
        return found

    def _by_uuid_prefix(self, table: TableSchema, prefix: str) -> Row | None:
        found = None
        for row in self.table_rows(table.name):
            if row.uuid.startswith(prefix):
                if found is not None:
                    raise NotFound(f"{table.name} contains 2 or more rows whose UUIDs begin "
                                       f"with {prefix}: at least {found.uuid} and {row.uuid}")
                found = row
        return found


def _names_equal(name: Any, kind: str, record: str) -> bool:
    """OVS's ``record_id_equals``: a string name matches itself, or (a name
    that is a UUID) a prefix of 4 or more; an integer its decimal text."""
    if kind == "string":
        return bool(name == record or (len(record) >= 4 and UUID_RE.match(name)
                                       and name.startswith(record)))
    if kind == "uuid":
        return bool(UUID_RE.match(record)) and name == record.lower()
    return bool(name == int(record))


__all__ = [
    "NotFound",
    "Row",
    "Snapshot",
    "best_match",
    "get_column",
    "get_table",
    "idl_row_order",
    "name_column",
    "suggestion",
]

"""Executing a transaction's ops (PROTOCOL.md 4.2-4.6) against its private view.

Each op's members are read in the order ovsdb-server reads them, so the first
error is the one it reports; then the op runs: reads go through the view
(queries use an index or ``_uuid`` lookup when the where clause allows),
writes make the view's private copies.  Nothing here touches the committed
tables; commit.py checks and applies the view afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from . import conditions, mutations, values
from .atoms import UUID_RE, NamedUUIDs, is_id
from .conditions import Clause
from .errors import OVSDBError, syntax_error
from .hashorder import ovs_member_order
from .ids import new_uuid
from .tables import Contents, Row, Table
from .types import check_members
from .values import Datum
from .view import TxnRow, View


class LockHolder(Protocol):
    """What an ``assert`` op needs from the client that sent the transaction."""

    def owns_lock(self, name: str) -> bool: ...


# Members of each op, in the order ovsdb-server reads them (the first error wins):
# (name, kind, optional), where kind is the JSON value's Python type, or "id" for
# an <id> string, or "table" for an <id> naming a table of the database.
Kind = type | str
Spec = tuple[tuple[str, Kind, bool], ...]
_TABLE: Kind = "table"
_ID: Kind = "id"
_SPECS: dict[str, Spec] = {
    "insert": (("table", _TABLE, False), ("uuid", str, True), ("uuid-name", _ID, True),
               ("row", dict, False)),
    "select": (("table", _TABLE, False), ("where", list, False), ("columns", list, True),
               ("sort", list, True)),
    "update": (("table", _TABLE, False), ("where", list, False), ("row", dict, False)),
    "mutate": (("table", _TABLE, False), ("where", list, False), ("mutations", list, False)),
    "delete": (("where", list, False), ("table", _TABLE, False)),
    "wait": (("timeout", int, True), ("where", list, False), ("columns", list, True),
             ("until", str, False), ("rows", list, False), ("table", _TABLE, False)),
    "commit": (("durable", bool, False),),
    "abort": (),
    "comment": (("comment", str, False),),
    "assert": (("lock", _ID, False),),
}
_ALLOWED = {op: ("op", *(name for name, _, _ in spec)) for op, spec in _SPECS.items()}
_READ_ONLY_OPS = frozenset(("select", "wait", "abort", "comment", "assert"))


_ABSENT = object()


class Parked(Exception):
    """An unsatisfied ``wait`` that has not timed out: park the whole transaction."""


class Transaction(View):
    """One transaction: its private view, and the ops that read and write it."""

    __slots__ = ("comments", "durable", "elapsed_ms", "lock_holder", "symtab", "wait_timeout")

    def __init__(self, db: Contents, lock_holder: LockHolder | None, elapsed_ms: int) -> None:
        super().__init__(db)
        self.lock_holder = lock_holder
        self.elapsed_ms = elapsed_ms
        self.symtab = NamedUUIDs()
        self.comments: list[str] = []
        self.durable = False
        self.wait_timeout: int | None = None

    def execute(self, op: Any, index: int, count: int, read_only: bool,
                privileged: bool) -> dict[str, Any]:
        if type(op) is not dict:
            raise OVSDBError("syntax error",
                             f"Parsing ovsdb operation {index} of {count} failed: Object expected.")
        name = op.get("op")
        spec = _SPECS.get(name) if type(name) is str else None
        if spec is None or name is None:
            if "op" not in op:
                problem = "Required 'op' member is missing."
            elif not is_id(name):
                problem = "Type mismatch for member 'op'."
            else:
                problem = f'No operation "{name}"'
            raise _parse_error(op, index, count, problem)
        args = self._members(op, spec, index, count)
        try:
            result = _EXECUTORS[name](self, op, *args)
        except (OVSDBError, Parked):
            # A misspelt member says more than what it caused (OVS reports it first).
            self._check_members(op, name, args, index, count)
            raise
        self._check_members(op, name, args, index, count)
        if name not in _READ_ONLY_OPS:
            if read_only:
                raise OVSDBError("not allowed", f"{name} operation not allowed when database "
                                 "server is in read only mode")
            if self.db.reserved and not privileged:
                raise OVSDBError("not allowed", f"{name} operation not allowed on table in "
                                 f"reserved database {self.db.name}")
        return result

    def _members(self, op: dict[str, Any], spec: Spec, index: int, count: int) -> list[Any]:
        args: list[Any] = []
        problem = None
        for member, kind, optional in spec:
            value = op.get(member, _ABSENT)
            if value is _ABSENT:
                if not optional and problem is None:
                    problem = f"Required '{member}' member is missing."
                value = None
            elif kind is _TABLE:
                table = self.tables.get(value) if type(value) is str else None
                if table is None and problem is None:
                    problem = (f"No table named {value}." if is_id(value)
                               else f"Type mismatch for member '{member}'.")
                value = table
            elif type(value) is not kind and (kind is not _ID or not is_id(value)):
                problem = problem or f"Type mismatch for member '{member}'."
                value = None
            args.append(value)
        if problem is not None:
            raise _parse_error(op, index, count, problem)
        return args

    @staticmethod
    def _check_members(op: dict[str, Any], name: str, args: list[Any], index: int,
                       count: int) -> None:
        # Every member present was consumed, unless there are unknown ones.
        if len(op) != 1 + len(args) - args.count(None):
            check_members(op, _ALLOWED[name], f"ovsdb operation {index} of {count}")

    def op_insert(self, op: dict[str, Any], table: Table, uuid_text: str | None,
                  uuid_name: str | None, row_json: dict[str, Any]) -> dict[str, Any]:
        rows = self.touched.get(table.name)
        if uuid_text is not None:
            if not UUID_RE.match(uuid_text):
                raise syntax_error("bad uuid", uuid_text)
            uuid = uuid_text.lower()
            if uuid in table.rows or (rows is not None and uuid in rows):
                # ovsdb-server 3.1's wording (later versions name the table).
                raise OVSDBError(
                    "duplicate uuid", "This UUID would duplicate a UUID already present within "
                    "the table or deleted within the same transaction.", uuid_text)
        if uuid_name is not None:
            uuid = self.symtab.declare(uuid_name, uuid if uuid_text is not None else None)
        elif uuid_text is None:
            uuid = new_uuid()
        row = table.defaults.copy()
        self._parse_row(table, row_json, row)
        for column in table.checked_defaults:
            if column not in row_json:
                values.check(table.types[column], row[column])
        # _uuid and _version given in the row are parsed, then ignored (as OVS does).
        row["_uuid"] = (uuid,)
        row["_version"] = self.new_version()
        if rows is None:
            rows = self.touched[table.name] = {}
        rows[uuid] = TxnRow(None, row)
        return {"uuid": ["uuid", uuid]}

    def op_select(self, op: dict[str, Any], table: Table, where: list[Any],
                  columns_json: list[Any] | None, sort_json: list[Any] | None) -> dict[str, Any]:
        clauses = table.conditions.parse(where, self.symtab)
        columns = _column_list(table, columns_json)
        sort = _column_list(table, sort_json) if sort_json is not None else None
        rows = self._query(table, clauses)
        if columns_json is not None and "_uuid" not in columns:
            # Identical projections are reported once (OVS's ovsdb_query_distinct).
            distinct: dict[tuple[Datum, ...], Row] = {}
            for row in rows:
                distinct.setdefault(tuple([row[c] for c in columns]), row)
            rows = list(distinct.values())
        if sort:
            keys = table.sort_keys
            rows.sort(key=lambda r: [keys[c](r[c]) for c in sort])
        return {"rows": [table.row_json(row, columns) for row in rows]}

    def op_update(self, op: dict[str, Any], table: Table, where: list[Any],
                  row_json: dict[str, Any]) -> dict[str, Any]:
        changes: Row = {}
        self._parse_row(table, row_json, changes)
        columns = table.columns
        for column in changes:
            if not columns[column].mutable:
                # Of several, ovsdb-server names the first in its hash order.
                first = next(c for c in ovs_member_order(changes) if not columns[c].mutable)
                raise OVSDBError("constraint violation", f"Cannot update immutable column "
                                 f"{first} in table {table.name}.", op)
        rows = self._query(table, table.conditions.parse(where, self.symtab))
        items = changes.items()
        for row in rows:
            for column, datum in items:
                if row[column] != datum:
                    self.writable(table, row).update(changes)
                    break
        return {"count": len(rows)}

    def op_mutate(self, op: dict[str, Any], table: Table, where: list[Any],
                  mutations_json: list[Any]) -> dict[str, Any]:
        parsed = table.mutations.parse(mutations_json, self.symtab)
        rows = self._query(table, table.conditions.parse(where, self.symtab))
        for row in rows:
            mutations.apply(parsed, self.writable(table, row))
        return {"count": len(rows)}

    def op_delete(self, op: dict[str, Any], where: list[Any], table: Table) -> dict[str, Any]:
        rows = self._query(table, table.conditions.parse(where, self.symtab))
        for row in rows:
            self.delete(table, row["_uuid"][0])
        return {"count": len(rows)}

    def op_wait(self, op: dict[str, Any], timeout: int | None, where: list[Any],
                columns_json: list[Any] | None, until: str, rows_json: list[Any],
                table: Table) -> dict[str, Any]:
        clauses = table.conditions.parse(where, self.symtab)
        columns = _column_list(table, columns_json)
        if timeout is not None:
            if timeout < 0:
                raise syntax_error("timeout must be nonnegative", timeout)
            if self.wait_timeout is None or timeout < self.wait_timeout:
                self.wait_timeout = timeout
        if until not in ("==", "!="):
            raise syntax_error('"until" must be "==" or "!="', until)
        expected = set()
        for row_json in rows_json:
            if type(row_json) is not dict:
                raise syntax_error("row must be JSON object", row_json)
            row = table.defaults.copy()
            self._parse_row(table, row_json, row)
            expected.add(tuple([row[c] for c in columns]))
        actual = {tuple([row[c] for c in columns]) for row in self._query(table, clauses)}
        if (actual == expected) == (until == "=="):
            return {}
        if timeout is not None and self.elapsed_ms >= timeout:
            if self.elapsed_ms:
                raise OVSDBError("timed out", f'"wait" timed out after {self.elapsed_ms} ms')
            raise OVSDBError("timed out", '"where" clause test failed')
        raise Parked

    def op_commit(self, op: dict[str, Any], durable: bool) -> dict[str, Any]:
        self.durable = self.durable or durable
        return {}

    def op_abort(self, op: dict[str, Any]) -> dict[str, Any]:
        raise OVSDBError("aborted", "aborted by request")

    def op_comment(self, op: dict[str, Any], comment: str) -> dict[str, Any]:
        self.comments.append(comment)
        return {}

    def op_assert(self, op: dict[str, Any], lock: str) -> dict[str, Any]:
        if self.lock_holder is not None and self.lock_holder.owns_lock(lock):
            return {}
        raise OVSDBError("not owner", f"Asserted lock {lock} not held.")

    # --- rows and queries --------------------------------------------------------
    def _parse_row(self, table: Table, row_json: dict[str, Any], row: Row) -> None:
        parsers, symtab = table.parsers, self.symtab
        try:
            for name, value in row_json.items():
                parser = parsers.get(name)
                if parser is None:
                    raise _unknown_column(table, name, row_json)
                row[name] = parser.parse(value, symtab)
        except OVSDBError as e:
            if len(row_json) > 1:
                raise self._first_row_error(table, row_json, e) from None
            raise

    def _first_row_error(self, table: Table, row_json: dict[str, Any],
                         error: OVSDBError) -> OVSDBError:
        """Of a row's bad members, the one ovsdb-server reports: the first in its hash order."""
        parsers = table.parsers
        for name in ovs_member_order(row_json):
            parser = parsers.get(name)
            if parser is None:
                return _unknown_column(table, name, row_json)
            try:
                parser.parse(row_json[name], self.symtab)
            except OVSDBError as e:
                return e
        return error

    def _query(self, table: Table, clauses: list[Clause]) -> list[Row]:
        """The rows matching every clause, as this transaction sees them.

        An ``==`` on ``_uuid`` or on every column of an index is answered by a
        lookup; only rows this transaction touched are then checked one by one.
        """
        touched = self.touched.get(table.name)
        eq = conditions.equalities(clauses) if clauses else None
        if eq:
            # With a single clause, whatever the lookup finds matches.
            exact = len(clauses) == 1
            uuid_datum = eq.get("_uuid")
            if uuid_datum is not None:
                row = self.current(table, touched, uuid_datum[0])
                if row is None or not (exact or conditions.match_all(clauses)(row)):
                    return []
                return [row]
            hits = table.lookup(eq)
            if hits is not None:
                committed = table.rows
                found = [committed[u] for u in hits if not touched or u not in touched]
                if not exact or touched:
                    match = conditions.match_all(clauses)
                    found = [row for row in found if exact or match(row)]
                    if touched:
                        found += [t.new for t in touched.values()
                                  if t.new is not None and match(t.new)]
                return found
        if eq and table.scanned(eq):
            return self._query(table, clauses)
        committed = table.rows
        if eq and len(clauses) == 1 and not touched:
            # One equality on a column without an index: compare inside the
            # loop instead of calling a predicate per row (measured 1.6x
            # faster over 10k rows); datums are canonical tuples, so tuple
            # equality is the clause's meaning.
            ((column, datum),) = eq.items()
            return [row for row in committed.values() if row[column] == datum]
        match = conditions.match_all(clauses)
        if not touched:
            return [row for row in committed.values() if match(row)]
        found = [row for u, row in committed.items() if u not in touched and match(row)]
        found += [t.new for t in touched.values() if t.new is not None and match(t.new)]
        return found


_EXECUTORS: dict[str, Callable[..., dict[str, Any]]] = {
    name: getattr(Transaction, "op_" + name) for name in _SPECS}


def _parse_error(op: Any, index: int, count: int, problem: str) -> OVSDBError:
    return syntax_error(f"Parsing ovsdb operation {index} of {count} failed: {problem}", op)


def _unknown_column(table: Table, name: str, row_json: dict[str, Any]) -> OVSDBError:
    return OVSDBError("unknown column", f"No column {name} in table {table.name}.", row_json)


def _column_list(table: Table, json: list[Any] | None) -> list[str]:
    """A ``columns`` or ``sort`` member; all columns when absent."""
    if json is None:
        return list(table.columns)
    seen: set[str] = set()
    for name in json:
        if type(name) is not str:
            raise syntax_error("array of distinct column names expected", json)
        if name not in table.columns:
            raise syntax_error(f"{name} is not a valid column name", json)
        if name in seen:
            raise syntax_error("array of distinct column names expected", json)
        seen.add(name)
    return json



__all__ = ["LockHolder", "Parked", "Transaction"]

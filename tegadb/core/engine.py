"""The transaction engine: in-memory tables, indexes and ``transact`` (PROTOCOL.md 4).

A transaction runs its ops in order against a private view: a map of the rows
it touched (old committed row, new private copy), so a row is copied only when
first written and tables are never copied.  When every op succeeded, commit
runs OVS's checks in OVS's order (4.7), each over the touched rows only:

1. drop rows whose final value equals the original;
2. strong reference counts (kept per row, adjusted by the changed atoms) and
   referential integrity;
3. garbage collection of unreferenced rows in non-root tables, cascading;
4. maxRows;
5. weak references to deleted or missing rows are removed (the referring rows
   are found through a reverse index, not by scanning); a row whose change
   this undoes stays modified, as in ovsdb-server;
6. unique indexes, against the final state;
7. a fresh ``_version`` for every modified row (inserted rows got theirs at
   the insert).  The first row a transaction changes takes the transaction's
   id as its version: the journal need not store that one, as every record
   names its transaction's id, so a single-row transaction's record holds
   no version at all.

Only then is the view applied to the tables, so a failed transaction changes
nothing.  The engine knows nothing of sockets, clocks or files: the caller
passes how long a parked ``wait`` has been waiting, and gets the change set to
journal and to feed monitors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from operator import itemgetter
from random import getrandbits
from typing import Any, Final, Protocol

from . import conditions, mutations, values
from .conditions import Clause, ConditionParser
from .errors import OVSDBError, syntax_error
from .hashorder import ovs_member_order
from .mutations import MutationParser
from .schema import ColumnSchema, DbSchema, TableSchema
from .types import UUID_RE, ZERO_UUID, Type, check_members, is_id
from .values import Datum, NamedUUIDs

Row = dict[str, Datum]
Changes = dict[str, dict[str, tuple[Row | None, Row | None]]]
WAIT_FOREVER = float("inf")


class Session(Protocol):
    """What the engine needs from a client session (for ``assert``)."""

    def owns_lock(self, name: str) -> bool: ...


_UUID_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


def new_uuid() -> str:
    """A random (version 4) UUID as canonical text, about twice as cheap as uuid.uuid4()."""
    h = "%032x" % (getrandbits(128) & _UUID_MASK | _UUID_V4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Versions and transaction ids only have to differ from every other one: a
# random per-process prefix and a counter make one for a fifth of the cost
# of a random UUID, still in UUID form.
_SERIAL_PREFIX: Final = new_uuid()[:24]
_serial = count(getrandbits(40))


def new_txn_id() -> str:
    """A fresh transaction id (unique, not random)."""
    # Not an f-string: compiled by mypyc, one with a format spec becomes
    # str.format calls, 2.5x the time of this.
    return _SERIAL_PREFIX + "%012x" % next(_serial)  # noqa: UP031


class TxnOutcome:
    """What a transaction produced.

    ``results`` is the result array to send (None while parked); ``changes``
    the committed change set, None when nothing changed or the transaction
    failed; ``wait_deadline_ms`` is set only when an unsatisfied ``wait``
    parks the transaction: the smallest ``timeout`` of its waits, in ms since
    the request arrived, or ``WAIT_FOREVER``.
    """

    # Not a dataclass: mypyc compiles this __init__, while a dataclass gets
    # its __init__ generated at import and interpreted on every transaction.
    __slots__ = ("changes", "comment", "durable", "results", "txn_id", "wait_deadline_ms")

    def __init__(self, results: list[Any] | None, changes: Changes | None = None,
                 wait_deadline_ms: float | None = None, durable: bool = False,
                 comment: str | None = None, txn_id: str | None = None) -> None:
        self.results = results
        self.changes = changes
        self.wait_deadline_ms = wait_deadline_ms
        self.durable = durable
        self.comment = comment
        self.txn_id = txn_id  # with ``changes``: the id to journal and report


# --- tables -------------------------------------------------------------------

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


def _ref_atoms(ref: RefColumn, elements: Any) -> Iterator[tuple[str, str]]:
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
        # Columns whose default breaks their own constraints: an insert must set them.
        self.checked_defaults = [n for n, c in schema.user_columns.items()
                                 if len(self.defaults[n]) == 1
                                 and not _valid(c.type, self.defaults[n])]
        # The persistent columns and their encoders: what the journal stores.
        self.stored = [(n, self.encoders[n]) for n, c in schema.user_columns.items()
                       if c.persistent]
        self.sort_keys = {n: _sort_key(t) for n, t in self.types.items()}
        self.conditions = ConditionParser(schema)
        self.mutations = MutationParser(schema)
        # Replay trusts what the journal holds to meet the constraints.
        self.replay_parsers = {n: values.parser(t, checked=False) for n, t in self.types.items()}
        self.replay_parsers["_version"] = _ReplayedVersion(self.types["_version"])

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


# --- op parsing ----------------------------------------------------------------

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


class _Parked(Exception):
    """An unsatisfied ``wait`` that has not timed out: park the whole transaction."""


class _TxnRow:
    """A row this transaction touched: ``old`` is committed (None if inserted),
    ``new`` is the private copy (None if deleted)."""

    __slots__ = ("new", "old")

    def __init__(self, old: Row | None, new: Row | None) -> None:
        self.old = old
        self.new = new


class _Transaction:
    """One transaction's private view of the database, and its ops."""

    __slots__ = ("comments", "db", "deleted", "durable", "elapsed_ms", "id", "modified",
                 "session", "symtab", "tables", "touched", "wait_timeout")

    def __init__(self, db: Database, session: Session | None, elapsed_ms: int) -> None:
        self.db = db
        self.tables = db.tables
        self.session = session
        self.elapsed_ms = elapsed_ms
        self.symtab = NamedUUIDs()
        self.touched: dict[str, dict[str, _TxnRow]] = {}
        self.comments: list[str] = []
        self.durable = False
        self.wait_timeout: int | None = None
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

    # --- executing ops ---------------------------------------------------------
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
        except (OVSDBError, _Parked):
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
        rows[uuid] = _TxnRow(None, row)
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
                    self._writable(table, row).update(changes)
                    break
        return {"count": len(rows)}

    def op_mutate(self, op: dict[str, Any], table: Table, where: list[Any],
                  mutations_json: list[Any]) -> dict[str, Any]:
        parsed = table.mutations.parse(mutations_json, self.symtab)
        rows = self._query(table, table.conditions.parse(where, self.symtab))
        for row in rows:
            mutations.apply(parsed, self._writable(table, row))
        return {"count": len(rows)}

    def op_delete(self, op: dict[str, Any], where: list[Any], table: Table) -> dict[str, Any]:
        rows = self._query(table, table.conditions.parse(where, self.symtab))
        for row in rows:
            self._delete(table, row["_uuid"][0])
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
        raise _Parked

    def op_commit(self, op: dict[str, Any], durable: bool) -> dict[str, Any]:
        self.durable = self.durable or durable
        return {}

    def op_abort(self, op: dict[str, Any]) -> dict[str, Any]:
        raise OVSDBError("aborted", "aborted by request")

    def op_comment(self, op: dict[str, Any], comment: str) -> dict[str, Any]:
        self.comments.append(comment)
        return {}

    def op_assert(self, op: dict[str, Any], lock: str) -> dict[str, Any]:
        if self.session is not None and self.session.owns_lock(lock):
            return {}
        raise OVSDBError("not owner", f"Asserted lock {lock} not held.")

    # --- the private view --------------------------------------------------------
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
                row = self._current(table, touched, uuid_datum[0])
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

    @staticmethod
    def _current(table: Table, touched: dict[str, _TxnRow] | None, uuid: str) -> Row | None:
        if touched:
            t = touched.get(uuid)
            if t is not None:
                return t.new
        return table.rows.get(uuid)

    def _writable(self, table: Table, row: Row) -> Row:
        """The transaction's own copy of ``row`` (copied on first write)."""
        uuid = row["_uuid"][0]
        touched = self.touched.setdefault(table.name, {})
        t = touched.get(uuid)
        if t is None:
            new = dict(row)
            touched[uuid] = _TxnRow(row, new)
            self.modified = True
            return new
        assert t.new is not None
        return t.new

    def _delete(self, table: Table, uuid: str) -> None:
        self.deleted = True
        touched = self.touched.setdefault(table.name, {})
        t = touched.get(uuid)
        if t is None:
            touched[uuid] = _TxnRow(table.rows[uuid], None)
        elif t.old is None:
            del touched[uuid]  # inserted by this transaction: as if it never was
        else:
            t.new = None

    def _alive(self, table_name: str, uuid: str) -> bool:
        touched = self.touched.get(table_name)
        if touched:
            t = touched.get(uuid)
            if t is not None:
                return t.new is not None
        return uuid in self.tables[table_name].rows

    # --- commit ----------------------------------------------------------------
    def commit(self) -> Changes:
        """Check the transaction (4.7) and apply it; returns the rows that changed."""
        db = self.db
        if self.modified:
            self._drop_unchanged()
        if not self.touched:
            return {}
        refs = self._count_references()
        if db.collected_tables:
            self._collect_garbage(refs)
        if db.limited_tables:
            self._check_max_rows()
        if db.weak_tables:
            # A row whose change the removal undoes stays changed, as in
            # ovsdb-server: it gets a new _version, and monitors see that.
            self._remove_weak_references()
        self._check_indexes()
        return self._apply(refs)

    def _drop_unchanged(self) -> None:
        for name in list(self.touched):
            touched = self.touched[name]
            for uuid in [u for u, t in touched.items() if t.old is not None and t.old == t.new]:
                del touched[uuid]
            if not touched:
                del self.touched[name]

    def _count_references(self) -> dict[str, dict[str, int]]:
        """Strong reference count changes per (table, row); checks referential integrity."""
        deltas: dict[str, dict[str, int]] = {}
        for name, touched in self.touched.items():
            table = self.tables[name]
            for ref in table.strong_columns:
                column = ref[0]
                for uuid, t in touched.items():
                    old = t.old[column] if t.old is not None else ()
                    new = t.new[column] if t.new is not None else ()
                    if old == new:
                        continue
                    removed, added = _difference(old, new)
                    for target_table, target in _ref_atoms(ref, removed):
                        if target != uuid:  # references to oneself do not count
                            counts = deltas.setdefault(target_table, {})
                            counts[target] = counts.get(target, 0) - 1
                    for target_table, target in _ref_atoms(ref, added):
                        if target == uuid:
                            continue
                        if not self._exists(target_table, target):
                            raise OVSDBError(
                                "referential integrity violation",
                                f"Table {name} column {column} row {uuid} references nonexistent "
                                f"row {target} in table {target_table}.")
                        counts = deltas.setdefault(target_table, {})
                        counts[target] = counts.get(target, 0) + 1
        if not self.deleted:
            return deltas
        for name, touched in self.touched.items():
            table = self.tables[name]
            if not table.refs and name not in deltas:
                continue
            counts = deltas.get(name, {})
            for uuid, t in touched.items():
                if t.new is None:
                    remaining = table.refs.get(uuid, 0) + counts.get(uuid, 0)
                    if remaining:
                        raise OVSDBError(
                            "referential integrity violation",
                            f"cannot delete {name} row {uuid} because of {remaining} "
                            "remaining reference(s)")
        return deltas

    def _exists(self, table_name: str, uuid: str) -> bool:
        """Whether a reference may point at the row: it exists or this transaction touched it."""
        touched = self.touched.get(table_name)
        return (touched is not None and uuid in touched) or uuid in self.tables[table_name].rows

    def _collect_garbage(self, refs: dict[str, dict[str, int]]) -> None:
        """Delete the rows of non-root tables left without strong references, cascading."""
        doomed: list[tuple[Table, str]] = []
        for table in self.db.collected_tables:
            touched = self.touched.get(table.name)
            counts = refs.get(table.name)
            if not touched and not counts:
                continue
            candidates = set(counts or ())
            if touched:
                candidates.update(u for u, t in touched.items() if t.new is not None)
            committed = table.refs
            doomed += [(table, u) for u in candidates
                       if committed.get(u, 0) + (counts.get(u, 0) if counts else 0) == 0]
        while doomed:
            table, uuid = doomed.pop()
            row = self._current(table, self.touched.get(table.name), uuid)
            if row is None:
                continue
            self._delete(table, uuid)
            for ref in table.strong_columns:
                for target_name, target in _ref_atoms(ref, row[ref[0]]):
                    if target == uuid:
                        continue
                    counts = refs.setdefault(target_name, {})
                    counts[target] = counts.get(target, 0) - 1
                    target_table = self.tables[target_name]
                    if (not target_table.schema.is_root
                            and target_table.refs.get(target, 0) + counts[target] == 0):
                        doomed.append((target_table, target))

    def _check_max_rows(self) -> None:
        for table in self.db.limited_tables:
            name = table.name
            touched = self.touched.get(name)
            if not touched:
                continue
            limit = table.schema.max_rows
            assert limit is not None
            n = len(table.rows)
            for t in touched.values():
                n += (t.old is None) - (t.new is None)
            if n > limit:
                raise OVSDBError("constraint violation", f'transaction causes "{name}" table to '
                                 f"contain {n} rows, greater than the schema-defined limit of "
                                 f"{limit} row(s)")

    def _remove_weak_references(self) -> None:
        """Drop weak references to rows that are gone, from every row that holds one."""
        holders = self._weak_holders() if self.deleted else {}
        for table in self.db.weak_tables:
            touched = self.touched.get(table.name)
            suspects = holders.get(table.name, ())
            if touched:
                for uuid, t in touched.items():
                    if t.new is not None:
                        self._check_weak_row(table, uuid, t.old, t.new, uuid in suspects)
            for uuid in suspects:
                if not touched or uuid not in touched:
                    row = table.rows[uuid]
                    self._check_weak_row(table, uuid, row, row, True)

    def _weak_holders(self) -> dict[str, set[str]]:
        """Rows holding committed weak references to rows deleted here (reverse index)."""
        holders: dict[str, set[str]] = {}
        for name, touched in self.touched.items():
            weak_refs = self.tables[name].weak_refs
            if weak_refs:
                for uuid, t in touched.items():
                    if t.new is None:
                        for source_table, source in weak_refs.get(uuid, ()):
                            holders.setdefault(source_table, set()).add(source)
        return holders

    def _check_weak_row(self, table: Table, uuid: str, old: Row | None, new: Row,
                        suspect: bool) -> None:
        for ref in table.weak_columns:
            column = ref[0]
            datum = new[column]
            if not datum or not (suspect or old is None or old[column] != datum):
                continue
            alive = self._alive
            kept = tuple(e for e in datum
                         if all(alive(t, u) or (t == table.name and u == uuid)
                                for t, u in _ref_atoms(ref, (e,))))
            if len(kept) == len(datum):
                continue
            if old is new:  # a committed row: take it into the transaction
                new = self._writable(table, new)
            new[column] = kept
            n_min = table.types[column].n_min
            if len(kept) >= n_min:
                continue
            inserted = old is None
            zero = any(u == ZERO_UUID for e in datum if e not in kept
                       for _, u in _ref_atoms(ref, (e,)))
            if zero and inserted:
                raise OVSDBError(
                    "constraint violation",
                    f'Weak reference column "{column}" in "{table.name}" row {uuid} (inserted '
                    "within this transaction) contained all-zeros UUID (probably as the default "
                    "value for this column) but deleting this value caused a constraint volation "
                    "because this column is not allowed to be empty.")
            raise OVSDBError(
                "constraint violation",
                f"Deletion of {len(datum) - len(kept)} weak reference(s) to deleted (or "
                f'never-existing) rows from column "{column}" in "{table.name}" row {uuid} '
                f"{'(inserted within this transaction) ' if inserted else ''}caused this column "
                "to become empty, but constraints on this column disallow an empty column.")

    def _check_indexes(self) -> None:
        for name, touched in self.touched.items():
            table = self.tables[name]
            for index in table.indexes:
                key_of, committed_rows = index.key, index.rows
                seen: dict[Any, str] = {}
                for uuid, t in touched.items():
                    if t.new is None:
                        continue
                    key = key_of(t.new)
                    other = seen.get(key)
                    if other is None:
                        committed = committed_rows.get(key)
                        if committed is not None and committed != uuid and committed not in touched:
                            other = committed
                    if other is not None:
                        raise self._index_error(table, index, other, uuid)
                    seen[key] = uuid

    def _index_error(self, table: Table, index: Index, first: str, second: str) -> OVSDBError:
        """``first`` is the row met first: an untouched row, or one checked earlier."""
        columns = index.columns
        what = (f'column "{columns[0]}"' if len(columns) == 1 else
                "columns " + _english([f'"{c}"' for c in columns]))
        row = self.touched[table.name][second].new
        assert row is not None
        return OVSDBError(
            "constraint violation",
            f'Transaction causes multiple rows in "{table.name}" table to have identical values '
            f"({_values_text(table, columns, row)}) for index on {what}.  "
            f"{self._index_row_text(table, columns, first, 'First')}  "
            f"{self._index_row_text(table, columns, second, 'Second')}")

    def _index_row_text(self, table: Table, columns: tuple[str, ...], uuid: str,
                        title: str) -> str:
        text = f"{title} row, with UUID {uuid}, "
        t = self.touched[table.name].get(uuid)
        if t is None:
            return text + ("existed in the database before this transaction and was not "
                           "modified by the transaction.")
        if t.old is None:
            return text + "was inserted by this transaction."
        assert t.new is not None
        if all(t.old[c] == t.new[c] for c in columns):
            return text + ("existed in the database before this transaction, which modified "
                           "some of the row's columns but not any columns in this index.")
        return (text + "had the following index values before the transaction: "
                f"{_values_text(table, columns, t.old)}.")

    def _apply(self, refs: dict[str, dict[str, int]]) -> Changes:
        """Make the transaction permanent; nothing here can fail."""
        changes: Changes = {}
        tables = self.tables
        index_weak_references = self.db.index_weak_references
        for name, touched in self.touched.items():
            if not touched:
                continue  # every row it touched was collected or unchanged
            table = tables[name]
            weak = bool(table.weak_columns)
            applied = changes[name] = {}
            for uuid, t in touched.items():
                old, new = t.old, t.new
                if old is not None and new is not None:
                    new["_version"] = self.new_version()
                table.apply(uuid, old, new)
                if weak:
                    index_weak_references(table, uuid, old, new)
                applied[uuid] = (old, new)
        for name, counts in refs.items():
            table_refs = tables[name].refs
            for uuid, delta in counts.items():
                if delta:
                    total = table_refs.get(uuid, 0) + delta
                    if total:
                        table_refs[uuid] = total
                    else:
                        del table_refs[uuid]
        return changes


_EXECUTORS: dict[str, Callable[..., dict[str, Any]]] = {
    name: getattr(_Transaction, "op_" + name) for name in _SPECS}


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


def _difference(old: Datum, new: Datum) -> tuple[Any, Any]:
    """(removed, added) elements (pairs for maps) between two datums."""
    if not old or not new:
        return old, new
    old_set, new_set = set(old), set(new)
    return old_set - new_set, new_set - old_set


def _english(words: list[str]) -> str:
    """"a", "a and b", "a, b, and c", as OVS joins lists in messages."""
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + ", and " + words[-1]


def _datum_text(type_: Type, datum: Datum) -> str:
    """A datum as OVS writes it in messages: bare atom, or [a, b] / {k=v}."""
    key_type = type_.key.type
    if type_.value is not None:
        value_type = type_.value.type
        text = ", ".join(f"{values.atom_to_string(key_type, k)}="
                         f"{values.atom_to_string(value_type, v)}" for k, v in datum)
        return "{" + text + "}"
    text = ", ".join(values.atom_to_string(key_type, a) for a in datum)
    return f"[{text}]" if type_.n_max > 1 or not datum else text


def _values_text(table: Table, columns: tuple[str, ...], row: Row) -> str:
    return _english([_datum_text(table.types[c], row[c]) for c in columns])


# --- the database ---------------------------------------------------------------

class Database:
    """One database's schema and committed contents."""

    def __init__(self, schema: DbSchema) -> None:
        self.schema = schema
        self.name = schema.name
        # Names starting with "_" are reserved for the server's own databases.
        self.reserved = schema.name.startswith("_")
        self._load_tables()

    def _load_tables(self) -> None:
        self.tables = {name: Table(ts) for name, ts in self.schema.tables.items()}
        # The commit steps each schema needs at all.
        self.weak_tables = [t for t in self.tables.values() if t.weak_columns]
        self.limited_tables = [t for t in self.tables.values() if t.schema.max_rows is not None]
        self.collected_tables = [t for t in self.tables.values() if not t.schema.is_root]

    def transact(self, ops: list[Any], session: Session | None = None, *, elapsed_ms: int = 0,
                 read_only: bool = False, privileged: bool = False) -> TxnOutcome:
        """Run ``ops`` (the params after the database name) as one transaction.

        ``elapsed_ms`` is how long the request has waited (for ``wait`` timeouts);
        ``read_only`` makes write ops fail as on a read-only server; ``privileged``
        lets the server itself write a reserved database.
        """
        txn = _Transaction(self, session, elapsed_ms)
        results: list[Any] = []
        count = len(ops)
        for index, op in enumerate(ops, 1):
            try:
                results.append(txn.execute(op, index, count, read_only, privileged))
            except _Parked:
                deadline = txn.wait_timeout
                return TxnOutcome(None, wait_deadline_ms=WAIT_FOREVER if deadline is None
                                  else deadline)
            except OVSDBError as e:
                results.append(e.to_json())
                results.extend([None] * (count - index))
                return TxnOutcome(results)
        try:
            changes = txn.commit()
        except OVSDBError as e:
            results.append(e.to_json())
            return TxnOutcome(results)
        comment = "\n".join(txn.comments) or None
        if not changes:
            return TxnOutcome(results, None, None, txn.durable, comment)
        return TxnOutcome(results, changes, None, txn.durable, comment, txn.txn_id())

    def insert_internal(self, table: str, row: dict[str, Any]) -> Changes | None:
        """Insert a row (OVSDB JSON values) on the server's own behalf, even when reserved."""
        outcome = self.transact([{"op": "insert", "table": table, "row": row}], privileged=True)
        assert outcome.results is not None
        error = outcome.results[-1]
        if "error" in error:
            raise OVSDBError(error["error"], error.get("details"))
        return outcome.changes

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
            removed, added = _difference(before, after)
            for target_name, target in _ref_atoms(ref, removed):
                weak_refs = self.tables[target_name].weak_refs
                holders = weak_refs.get(target)
                if holders is not None and source in holders:
                    holders[source] -= 1
                    if not holders[source]:
                        del holders[source]
                        if not holders:
                            del weak_refs[target]
            for target_name, target in _ref_atoms(ref, added):
                if target_name != table.name or target != uuid:
                    holders = self.tables[target_name].weak_refs.setdefault(target, {})
                    holders[source] = holders.get(source, 0) + 1

    # --- journal -----------------------------------------------------------------
    def changes_to_json(self, changes: Changes, txn_id: str) -> dict[str, Any]:
        """The change set of transaction ``txn_id`` as the journal stores it
        (PROTOCOL.md 7.2, full new values).

        New rows list their persistent columns not at default, modified rows their
        changed persistent columns, deleted rows are null; rows whose changes touch
        only ephemeral columns are left out.  A row's ``_version`` is left out
        too when it is ``txn_id``, as the transaction gives the first row it changes.
        """
        out: dict[str, Any] = {}
        for name, rows in changes.items():
            table = self.tables[name]
            records: dict[str, Any] = {}
            for uuid, (old, new) in rows.items():
                if new is None:
                    records[uuid] = None
                elif old is None:
                    records[uuid] = table.stored_json(new, txn_id)
                else:
                    changed = {c: encode(new[c]) for c, encode in table.stored
                               if old[c] != new[c]}
                    if changed:
                        version = new["_version"][0]
                        if version != txn_id:
                            changed["_version"] = version
                        records[uuid] = changed
            if records:
                out[name] = records
        return out

    def snapshot_json(self, txn_id: str) -> dict[str, Any]:
        """Every row in the journal's new-row form, for compaction into a
        snapshot record whose id is ``txn_id``."""
        return {name: {uuid: table.stored_json(row, txn_id) for uuid, row in table.rows.items()}
                for name, table in self.tables.items() if table.rows}

    def apply_journal_record(self, record: dict[str, Any]) -> Changes:
        """Replay one journal record (a transaction, or a snapshot replacing everything).

        A row that the record stores without ``_version`` gets the record's ``txn``.
        """
        txn_id = record.get("txn")
        if type(txn_id) is not str:
            raise OVSDBError("syntax error", 'Record has no "txn" string.')
        version = (txn_id,)
        tables = record.get("changes")
        if type(tables) is not dict:
            # The journal checks this too; checked here, compiled code also
            # knows it iterates a dict, which is several times faster.
            raise OVSDBError("syntax error", 'Record has no "changes" object.')
        if record.get("snapshot"):
            self._load_tables()
        changes: Changes = {}
        for name, rows in tables.items():
            table = self.tables.get(name)
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
                new = None if data is None else self._replayed_row(table, uuid, old, data,
                                                                   version)
                if table.strong_columns:
                    self._replay_references(table, uuid, old, new)
                table.apply(uuid, old, new)
                if table.weak_columns:
                    self.index_weak_references(table, uuid, old, new)
                applied[uuid] = (old, new)
        return changes

    @staticmethod
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

    def _replay_references(self, table: Table, uuid: str, old: Row | None,
                           new: Row | None) -> None:
        for ref in table.strong_columns:
            column = ref[0]
            removed, added = _difference(old[column] if old is not None else (),
                                         new[column] if new is not None else ())
            for delta, elements in ((-1, removed), (1, added)):
                for target_table, target in _ref_atoms(ref, elements):
                    if target == uuid:
                        continue
                    refs = self.tables[target_table].refs
                    total = refs.get(target, 0) + delta
                    if total:
                        refs[target] = total
                    else:
                        refs.pop(target, None)


class _ReplayedVersion(values.ValueParser):
    """A row's ``_version`` as written (bare text), so that a monitor resumes
    exactly after a restart."""

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        if type(json) is str:
            return (json,)
        raise syntax_error("_version is not a string", json)


__all__ = ["WAIT_FOREVER", "Changes", "Database", "Row", "Session", "Table", "TxnOutcome",
           "new_txn_id", "new_uuid"]

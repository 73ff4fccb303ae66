"""An asyncio replica: the tables a controller watches, in memory and kept current.

`Replica` is the `UpdateSink` of a `Follower` (follower.py): it connects to
one of several remotes, follows the chosen tables and columns with
``monitor_cond_since``, and across disconnects resumes or resynchronizes,
against tegadb and ovsdb-server alike.  On top of the copy:

- reads from memory: `Replica.rows`, `Replica.lookup` (the schema's indexes);
- changes: `Replica.on_change` callbacks and `Replica.changes` streams, one
  `Change` per row per update, after the whole update is in the copy (a full
  resync after a reconnect shows as the changes between the old copy and
  the new one);
- optimistic transactions: `Replica.transact` runs a function (and
  `Replica.attempts` a block) that reads rows of the copy and prepares
  changes; the transaction is sent with a ``wait`` on the ``_version`` of
  every row read, and when another writer changed one of them first, it runs
  again on the fresh copy (the server sends that writer's update before our
  reply, PROTOCOL.md 1.6), up to ``retries`` times, then `ConflictError`;
- `Replica.cond_change` narrows or widens the rows followed, without a resync.

Values are plain Python (rows.py says which type is which).  Every followed
table carries ``_version`` (added to a column list that lacks it): the
transactions need it.  Callbacks run in the event loop as updates arrive:
keep them short, and do not await in them (use `changes` for that).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ..core.schema import DbSchema, TableSchema
from ..core.types import UNLIMITED
from ..core.values import Datum, apply_diff, default, parse_unchecked
from .follower import Follower
from .rows import UUID, Change, NewRow, Row, to_json, to_python

if TYPE_CHECKING:
    import ssl

DEFAULT_RETRIES = 5
T = TypeVar("T")

log = logging.getLogger(__name__)


class ConflictError(Exception):
    """Another writer changed rows the transaction read, on every attempt allowed."""


class TransactionError(Exception):
    """The server refused the transaction: ``error`` is its error object,
    ``op`` the operation it names (None for a commit-time error)."""

    def __init__(self, error: dict[str, Any], op: dict[str, Any] | None) -> None:
        where = f" in {json.dumps(op)[:300]}" if op is not None else ""
        super().__init__(f"{error.get('error')}: {error.get('details', '')}{where}")
        self.error = error
        self.op = op


class _TableCopy:
    """One followed table: its rows as datums (what diffs apply to) and as
    `Row`s, and the schema's indexes over the followed columns."""

    def __init__(self, schema: TableSchema, columns: Iterable[str]) -> None:
        self.name = schema.name
        self.types = {c: schema.columns[c].type for c in columns}
        # A set's or map's diff may hold up to twice its maximum (PROTOCOL.md 5.4).
        self.diff_types = {c: t.relaxed(0, UNLIMITED) if t.is_composite else t
                           for c, t in self.types.items()}
        self.defaults = {c: default(t) for c, t in self.types.items()}
        self.datums: dict[str, dict[str, Datum]] = {}
        self.rows: dict[UUID, Row] = {}
        self.indexes: dict[tuple[str, ...], dict[tuple[Datum, ...], UUID]] = {
            index: {} for index in schema.indexes if set(index) <= self.types.keys()}

    def datum(self, column: str, value: Any) -> Datum:
        """A Python value as the datum the copy holds for ``column``."""
        type_ = self.types.get(column)
        if type_ is None:
            raise KeyError(f"table {self.name} has no column {column!r} in the replica")
        return parse_unchecked(type_, to_json(type_, value, f"{self.name}.{column}"))

    def apply(self, updates: Mapping[str, Any]) -> list[Change]:
        """Apply one table's ``<table-updates2>``; the rows' changes.

        Index entries of every changed row go before any comes back, since
        within one transaction rows may swap indexed values.
        """
        applied = []
        for uuid_text, update in updates.items():
            try:
                outcome = self._apply_row(uuid_text, update)
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f"table {self.name}, row {uuid_text}: cannot apply {update!r:.200}: "
                                 f"{e}") from e
            if outcome is not None:
                applied.append(outcome)
        for change, old, _ in applied:
            if old is not None:
                self._unindex(change.uuid, old)
        for change, _, new in applied:
            if new is not None:
                self._index(change.uuid, new)
        return [change for change, _, _ in applied]

    def _apply_row(self, uuid_text: str, update: Mapping[str, Any]
                   ) -> tuple[Change, dict[str, Datum] | None, dict[str, Datum] | None] | None:
        """One row's update: its change, and its datums before and after."""
        row_uuid = UUID(uuid_text)
        old = self.datums.get(uuid_text)
        old_row = self.rows.get(row_uuid)
        if "delete" in update:
            if old is None:
                return None  # a row this copy never had
            del self.datums[uuid_text], self.rows[row_uuid]
            return Change("delete", self.name, row_uuid, old_row, None), old, None
        if "modify" in update:
            if old is None:
                raise ValueError("modify of a row the replica does not have")
            datums = dict(old)
            for column, diff in update["modify"].items():
                datums[column] = apply_diff(self.types[column], old[column],
                                            parse_unchecked(self.diff_types[column], diff))
            kind = "modify"
        else:
            body = update["initial"] if "initial" in update else update["insert"]
            datums = dict(self.defaults)
            for column, value in body.items():
                datums[column] = parse_unchecked(self.types[column], value)
            kind = "insert" if old is None else "modify"
        row = self.make_row(row_uuid, datums)
        self.datums[uuid_text] = datums
        self.rows[row_uuid] = row
        return Change(kind, self.name, row_uuid, old_row, row), old, datums

    def make_row(self, row_uuid: UUID, datums: dict[str, Datum]) -> Row:
        return Row(self.name, row_uuid, {c: to_python(self.types[c], d) for c, d in datums.items()})

    def _index(self, row_uuid: UUID, datums: dict[str, Datum]) -> None:
        for index, entries in self.indexes.items():
            entries[tuple(datums[c] for c in index)] = row_uuid

    def _unindex(self, row_uuid: UUID, datums: dict[str, Datum]) -> None:
        for index, entries in self.indexes.items():
            key = tuple(datums[c] for c in index)
            if entries.get(key) == row_uuid:
                del entries[key]


ChangeCallback = Callable[[Change], None]
_END = object()


class ChangeStream:
    """The changes from the moment it is made, for ``async for``; `close` ends it.

    It queues without bound: read it, or close it.
    """

    def __init__(self, streams: set[ChangeStream]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams = streams
        streams.add(self)

    def put(self, change: Change) -> None:
        self._queue.put_nowait(change)

    def close(self) -> None:
        if self in self._streams:
            self._streams.discard(self)
            self._queue.put_nowait(_END)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        change: Change = item
        return change

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Replica:
    """An in-memory copy of some tables of one database; see the module doc.

    ``tables`` maps tables to their columns (an empty list: all columns);
    None replicates every table.  ``conditions`` maps tables to ``where``
    clauses (ORed).  Make one with ``await Replica.open(...)``.
    """

    def __init__(self, remotes: str | list[str], database: str, *,
                 tables: dict[str, list[str]] | None = None,
                 conditions: dict[str, list[Any]] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 leader_only: bool = False,
                 backoff: tuple[float, float] = (0.1, 4.0)) -> None:
        if isinstance(remotes, str):
            remotes = remotes.split(",")
        if tables is not None:
            tables = {t: sorted({*columns, "_version"}) if columns else [] for t, columns in tables.items()}
        self.database = database
        self.schema: DbSchema | None = None
        self._copies: dict[str, _TableCopy] = {}
        self._callbacks: list[ChangeCallback] = []
        self._streams: set[ChangeStream] = set()
        self._follower = Follower(remotes, database, self, tables=tables, conditions=conditions,
                                  ssl_context=ssl_context, leader_only=leader_only, backoff=backoff)
        self._tables = tables
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, remotes: str | list[str], database: str, *, timeout: float = 10.0,
                   **options: Any) -> Replica:
        """A replica that holds the source's contents: ConnectionError when
        no remote could be followed within ``timeout`` seconds."""
        replica = cls(remotes, database, **options)
        replica._task = asyncio.create_task(replica._follower.run())
        try:
            await replica._follower.wait_connected(timeout)
        except TimeoutError:
            await replica.close()
            raise ConnectionError(f"could not follow database {database} within {timeout} s: "
                                  f"{replica._follower.last_error}") from None
        return replica

    # --- state ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False while reconnecting: the copy is then kept but stale."""
        return self._follower.connected

    @property
    def last_id(self) -> str:
        """The id of the last transaction the copy holds (all zeros from a standalone ovsdb-server)."""
        return self._follower.last_id

    @property
    def last_error(self) -> str | None:
        """The last connection problem, with its remote."""
        return self._follower.last_error

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self._follower.wait_connected(timeout)

    # --- reads ----------------------------------------------------------------------

    def rows(self, table: str) -> Mapping[UUID, Row]:
        """The rows of ``table`` by uuid: a read-only view that follows the copy."""
        return MappingProxyType(self._copy(table).rows)

    def lookup(self, table: str, **index_values: Any) -> Row | None:
        """The row whose indexed columns hold these values, or None.

        The columns named must be exactly one of the table's indexes.
        """
        copy = self._copy(table)
        columns = sorted(index_values)
        for index, entries in copy.indexes.items():
            if sorted(index) == columns:
                row_uuid = entries.get(tuple(copy.datum(c, index_values[c]) for c in index))
                return None if row_uuid is None else copy.rows[row_uuid]
        known = "; ".join(", ".join(index) for index in copy.indexes) or "none"
        raise ValueError(f"table {table} has no index on {', '.join(columns)} among the replicated "
                         f"columns (its indexes: {known})")

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` for every change from now on; returns
        the function that stops it.  A callback's exception is logged, not raised."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def changes(self) -> ChangeStream:
        """``async for change in replica.changes()``: every change from now on."""
        return ChangeStream(self._streams)

    def _copy(self, table: str) -> _TableCopy:
        copy = self._copies.get(table)
        if copy is None:
            raise KeyError(f"table {table} is not replicated (replicated: {', '.join(self._copies)})")
        return copy

    # --- writes -----------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """One attempt: ``async with replica.transaction() as txn:`` commits at
        the end of the block and raises ConflictError if a row read changed."""
        return Transaction(self)

    def attempts(self, retries: int = DEFAULT_RETRIES) -> Attempts:
        """The retrying form of a transaction block::

            async for txn in replica.attempts():
                async with txn:
                    ...

        Each attempt is a new transaction on the copy as it is then; the loop
        ends when one commits, and raises ConflictError after ``retries``
        more attempts."""
        return Attempts(self, retries)

    async def transact(self, prepare: Callable[[Transaction], T | Awaitable[T]], *,
                       retries: int = DEFAULT_RETRIES) -> T:
        """`attempts` for a function: run ``prepare(txn)`` (plain or async) on
        the copy and commit, again on the fresh copy after a conflict.
        Returns what ``prepare`` returned on the attempt that committed."""
        outcome: Any = None
        async for txn in self.attempts(retries):
            async with txn:
                outcome = prepare(txn)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        result: T = outcome
        return result

    async def request(self, method: str, params: list[Any]) -> Any:
        """A request to the source on the replica's connection (ConnectionError if none)."""
        return await self._follower.request(method, params)

    async def cond_change(self, conditions: dict[str, list[Any]]) -> None:
        """New ``where`` clauses for the listed tables, applied without a resync:
        rows that stop matching leave the copy, rows that start matching join it."""
        await self._follower.cond_change(conditions)

    # --- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop following; change streams end."""
        await self._follower.close()
        if self._task is not None:
            await self._task
        for stream in list(self._streams):
            stream.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- UpdateSink ---------------------------------------------------------------------

    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        schema = DbSchema.from_json(schema_json)
        if found and schema == self.schema:
            self.update(updates, last_id)
            return
        if found:
            raise ValueError("the source resumed under another schema")
        copies = {name: _TableCopy(schema.tables[name],
                                   columns or [c for c in schema.tables[name].columns if c != "_uuid"])
                  for name, columns in self._followed(schema).items()}
        for name, rows in updates.items():
            copies[name].apply(rows)
        changes = _differences(self._copies, copies)
        self.schema, self._copies = schema, copies
        self._emit(changes)

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        changes = []
        for name, rows in updates.items():
            changes += self._copy(name).apply(rows)
        self._emit(changes)

    def disconnected(self) -> None:
        """Nothing to do: the copy stays as it is, and `connected` says it is stale."""

    def _followed(self, schema: DbSchema) -> dict[str, list[str]]:
        if self._tables is None:
            return {name: [] for name in schema.tables}
        return self._tables

    def _emit(self, changes: list[Change]) -> None:
        for change in changes:
            for callback in list(self._callbacks):
                try:
                    callback(change)
                except Exception:
                    log.exception("a change callback of the %s replica failed on %s", self.database, change)
            for stream in self._streams:
                stream.put(change)


def _differences(old: dict[str, _TableCopy], new: dict[str, _TableCopy]) -> list[Change]:
    """The changes that turn the copy ``old`` into ``new`` (after a full resync)."""
    changes = []
    for name in old.keys() | new.keys():
        old_rows = old[name].rows if name in old else {}
        new_rows = new[name].rows if name in new else {}
        for row_uuid, row in new_rows.items():
            before = old_rows.get(row_uuid)
            if before is None:
                changes.append(Change("insert", name, row_uuid, None, row))
            elif before != row:
                changes.append(Change("modify", name, row_uuid, before, row))
        changes += [Change("delete", name, row_uuid, row, None)
                    for row_uuid, row in old_rows.items() if row_uuid not in new_rows]
    return changes


class Attempts:
    """The transactions of `Replica.attempts`, one per attempt."""

    def __init__(self, replica: Replica, retries: int) -> None:
        self._replica = replica
        self._allowed = retries + 1
        self._current: Transaction | None = None
        self._made = 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Transaction:
        current = self._current
        if current is not None:
            if not current._committed:
                raise RuntimeError("use each attempt as `async with txn:` (it commits at the block's end)")
            if current.conflict is None:
                raise StopAsyncIteration
            if self._made == self._allowed:
                raise ConflictError(f"gave up after {self._made} attempts: another writer got there "
                                    f"first each time (last: {current.conflict})")
        self._made += 1
        self._current = Transaction(self._replica)
        self._current._absorb_conflict = True
        return self._current


def _by_uuid(row_uuid: UUID) -> list[Any]:
    return [["_uuid", "==", ["uuid", str(row_uuid)]]]


class Transaction:
    """Changes prepared against the copy, sent as one OVSDB transaction.

    Every row read (`row`, `lookup`, `read`, or written through `set` and
    `delete`) is checked at commit: a ``wait`` that its ``_version`` is still
    the one read.  Use it inside `Replica.transact`, or as an ``async with``
    block for a single attempt.
    """

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._reads: dict[tuple[str, UUID], UUID | None] = {}
        self._ops: list[dict[str, Any]] = []
        self._updates: dict[tuple[str, UUID], dict[str, Any]] = {}
        self._inserts: dict[NewRow, tuple[int, dict[str, Any]]] = {}
        self._comment: str | None = None
        self._committed = False
        self.conflict: ConflictError | None = None  # set instead of raised in `Replica.attempts`
        self._absorb_conflict = False

    def row(self, table: str, row_uuid: UUID | str) -> Row:
        """The row of the copy (LookupError if it has none), marked as read."""
        key = row_uuid if isinstance(row_uuid, UUID) else UUID(row_uuid)
        row = self._replica.rows(table).get(key)
        if row is None:
            raise LookupError(f"table {table} has no row {row_uuid} in the replica")
        return self.read(row)

    def lookup(self, table: str, **index_values: Any) -> Row | None:
        """`Replica.lookup`, marking the row found as read."""
        row = self._replica.lookup(table, **index_values)
        return None if row is None else self.read(row)

    def read(self, row: Row) -> Row:
        """Mark a row as read: the commit fails if it changed meanwhile."""
        self._reads.setdefault((row._table, row._uuid), row._version)
        return row

    def set(self, row: Row | NewRow, column: str, value: Any) -> None:
        """Give ``column`` of ``row`` (read from the copy, or inserted here) a new value."""
        if isinstance(row, NewRow):
            self._inserts[row][1][column] = self._json(row.table, column, value)
            return
        self.read(row)
        key = (row._table, row._uuid)
        if key not in self._updates:
            self._updates[key] = {}
            self._ops.append({"op": "update", "table": row._table, "where": _by_uuid(row._uuid),
                              "row": self._updates[key]})
        self._updates[key][column] = self._json(row._table, column, value)

    def insert(self, table: str, **columns: Any) -> NewRow:
        """A new row; its uuid is set once the transaction commits."""
        new = NewRow(table, f"row{len(self._inserts)}")
        values = {c: self._json(table, c, v) for c, v in columns.items()}
        self._inserts[new] = (len(self._ops), values)
        self._ops.append({"op": "insert", "table": table, "row": values, "uuid-name": new.name})
        return new

    def delete(self, row: Row) -> None:
        """Delete a row of the copy."""
        self.read(row)
        self._ops.append({"op": "delete", "table": row._table, "where": _by_uuid(row._uuid)})

    def comment(self, text: str) -> None:
        """A comment for the server's log (ovsdb-server) or the journal (tegadb)."""
        self._comment = text

    async def commit(self) -> None:
        """Send the transaction: ConflictError if a row read has changed,
        TransactionError if the server refuses it, ConnectionError when not connected."""
        if self._committed:
            raise RuntimeError("this transaction was already committed")
        self._committed = True
        if not self._ops:
            return
        waits = [{"op": "wait", "table": table, "timeout": 0, "where": _by_uuid(row_uuid),
                  "columns": ["_version"], "until": "==",
                  "rows": [{"_version": ["uuid", str(version)]}]}
                 for (table, row_uuid), version in self._reads.items()]
        ops = [*waits, *self._ops]
        if self._comment is not None:
            ops.append({"op": "comment", "comment": self._comment})
        result = await self._replica.request("transact", [self._replica.database, *ops])
        for i, outcome in enumerate(result):
            if isinstance(outcome, dict) and "error" in outcome:
                if i < len(waits) and outcome["error"] == "timed out":
                    table, row_uuid = list(self._reads)[i]
                    raise ConflictError(f"row {row_uuid} of table {table} changed since it was read")
                raise TransactionError(outcome, ops[i] if i < len(ops) else None)
        for new, (position, _) in self._inserts.items():
            new.uuid = UUID(result[len(waits) + position]["uuid"][1])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                await self.commit()
            except ConflictError as e:
                if not self._absorb_conflict:
                    raise
                self.conflict = e

    def _json(self, table: str, column: str, value: Any) -> Any:
        schema = self._replica.schema
        table_schema = schema.tables.get(table) if schema is not None else None
        if table_schema is None:
            raise KeyError(f"database {self._replica.database} has no table {table}")
        column_schema = table_schema.columns.get(column)
        if column_schema is None or column in ("_uuid", "_version"):
            raise KeyError(f"table {table} has no column {column!r} to write")
        return to_json(column_schema.type, value, f"{table}.{column}")

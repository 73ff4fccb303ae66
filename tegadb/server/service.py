"""Served databases: each one's engine, storage and commit pipeline.

No sockets and no event loop here: the server shell attaches two hooks, one
that schedules the group-commit flush for the end of the loop turn and one
that runs a callback later (wait timeouts).  Each database's log is a
``storage.Storage``; which one is this module's caller's choice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from os import PathLike
from typing import Any, Protocol

import ujson

from ..core import changesets, values
from ..core.commit import undo
from ..core.database import Database, TxnOutcome
from ..core.errors import OVSDBError, syntax_error
from ..core.history import History
from ..core.ids import new_txn_id, new_uuid
from ..core.locks import LockTable
from ..core.monitor import Monitor, MonitorHub
from ..core.ops import LockHolder
from ..core.schema import DbSchema
from ..core.tables import Changes, Row, Table
from ..core.types import ZERO_UUID
from . import journal
from .records import Header, Record
from .server_db import SERVER_DB_NAME, STANDALONE, ServerDatabase
from .storage import MemoryStorage, Storage, StorageError

log = logging.getLogger("tegadb.service")

# ovsdb-server's compaction timing (PROTOCOL.md 7.3): look no sooner than
# ten minutes after the last compaction, and compact anything after a day.
COMPACT_MIN_INTERVAL = 10 * 60.0
COMPACT_MAX_INTERVAL = 24 * 60 * 60.0


def read_schema_file(path: str | PathLike[str]) -> DbSchema:
    with open(path, "rb") as f:
        return DbSchema.from_json(ujson.loads(f.read()))


def create_database_file(db_file: str | PathLike[str], schema_file: str | PathLike[str],
                         mode: int = journal.DEFAULT_FILE_MODE) -> DbSchema:
    """A new, empty database file from a schema file (``tegadb-tool create``),
    with permissions `mode`."""
    schema = read_schema_file(schema_file)
    journal.create(str(db_file), Header(schema.to_json()), mode)
    return schema


def now_ms() -> int:
    return int(time.time() * 1000)


def _id_key(request_id: Any) -> str:
    return ujson.dumps(request_id, sort_keys=True)


class ClientSession(LockHolder, Protocol):
    """What the service needs from a client session (``methods.Session``)."""

    peer: str                              # the writer its commits record
    dirty: bool                            # a monitor may have an update to send
    change_aware: bool
    monitors: dict[str, Monitor]
    cleanups: list[Callable[[], object]]   # run when the session closes

    @property
    def closed(self) -> bool: ...

    def reply(self, request_id: Any, result: Any, dialect: int = 1) -> None: ...

    def reply_error(self, request_id: Any, error: Any, dialect: int = 1) -> None: ...

    def notify(self, method_name: str, params: list[Any]) -> None: ...

    def flush_monitors(self, force: bool = False) -> None: ...

    def disconnect(self) -> None: ...  # after a conversion, when not change-aware


class ForwardedReply:
    """The forwarding member's session as the writer's service sees it: the
    reply carries the log position the forwarding member must reach first."""

    dirty = False
    change_aware = False

    def __init__(self, session: ClientSession, position: Callable[[], int]) -> None:
        self.session = session
        self.position = position
        self.peer = session.peer
        self.cleanups: list[Callable[[], object]] = []
        self.monitors: dict[str, Monitor] = {}

    @property
    def closed(self) -> bool:
        return self.session.closed

    def reply(self, request_id: Any, result: Any, dialect: int = 1) -> None:
        self.session.reply(request_id, {"seq": self.position(), "result": result}, dialect)

    def reply_error(self, request_id: Any, error: Any, dialect: int = 1) -> None:
        self.session.reply_error(request_id, error, dialect)

    def notify(self, method_name: str, params: list[Any]) -> None:
        pass

    def flush_monitors(self, force: bool = False) -> None:
        pass

    def disconnect(self) -> None:
        self.session.disconnect()

    def owns_lock(self, name: str) -> bool:
        return False


class ParkedTransaction:
    """A transaction whose ``wait`` is not yet satisfied."""

    __slots__ = ("arrived", "dialect", "ops", "request_id", "session", "timer")

    def __init__(self, session: ClientSession, request_id: Any, dialect: int,
                 ops: list[Any]) -> None:
        self.session = session
        self.request_id = request_id
        self.dialect = dialect
        self.ops = ops
        self.arrived = time.monotonic()
        self.timer: Any = None

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.arrived) * 1000)


class BatchEntry:
    """A transaction of the loop turn's batch: what to reply once its storage
    took the batch (or refused it)."""

    __slots__ = ("conversion", "dialect", "line", "ops", "outcome", "record", "request_id",
                 "session")

    def __init__(self, session: ClientSession, request_id: Any, dialect: int, ops: list[Any],
                 outcome: TxnOutcome, record: Record | None, line: bytes | None = None,
                 conversion: DbSchema | None = None) -> None:
        self.session = session
        self.request_id = request_id
        self.dialect = dialect
        self.ops = ops
        self.outcome = outcome
        self.record = record  # None: a read that ran after the batch's first write
        self.line = line  # the record as a shared log stores it
        self.conversion = conversion  # the schema a conversion proposes (a shared log)


def io_error(error: StorageError) -> dict[str, Any]:
    """The error that ends the results of a transaction whose batch could not be written."""
    return {"error": "I/O error", "details": str(error)}


class DatabaseService:
    """One database served from one storage."""

    def convert_through_log(self, session: ClientSession, request_id: Any, dialect: int,
                            schema: DbSchema) -> None:
        """A shared log's conversion: every server applies it at one position."""
        raise AssertionError(f"{self.name}: its log is not shared")

    def server_state(self) -> dict[str, Any]:
        """The state columns of this database's row in ``_Server``."""
        return STANDALONE

    def shares_log(self) -> bool:
        """Whether the log is shared with other servers (cluster.ClusterService)."""
        return False

    def tentative(self) -> bool:
        """Whether this turn's commits may still fail: they are not written yet."""
        return bool(self.batch)

    def accepts_transactions(self) -> bool:
        """Whether another transaction may run this turn (a shared log's
        batch may be full)."""
        return True

    def __init__(self, schema: DbSchema, database: Database, storage: Storage,
                 history: History | None = None) -> None:
        self.schema = schema
        self.name = schema.name
        self.schema_json = schema.to_json()
        self.database = database
        self.storage = storage
        self.seq = 0
        self.last_txn = ZERO_UUID
        self.history = history or History()
        self.hub = MonitorHub(database, self.history)
        # Sessions whose monitors have updates waiting, flushed each loop turn.
        self.dirty_sessions: set[ClientSession] = set()
        self.durable_pending = False
        # This turn's transactions, answered once their records are written
        # (or failed, and their changes undone, when the write fails).
        self.batch: list[BatchEntry] = []
        self.batch_records = 0
        self.parked: dict[tuple[int, str], ParkedTransaction] = {}
        self.compacted_at = time.monotonic()
        self.compactions = 0
        # Told of every finished transaction when --metrics is on (metrics.Metrics).
        self.observer: Any = None
        self.request_flush: Callable[[], None] = lambda: None
        # Starts a compaction in the background (the server shell's
        # Server.compact); without it, compaction runs at once.
        self.compact_in_background: Callable[[DatabaseService], None] | None = None
        self.call_later: Callable[[float, Callable[[], None]], Any] | None = None

    @classmethod
    def open(cls, path: str | PathLike[str], history: History | None = None) -> DatabaseService:
        """Open a database file (the file storage) and replay it into memory."""
        return cls.load(journal.Journal.open(str(path)), history)

    @classmethod
    def load(cls, storage: Storage, history: History | None = None) -> DatabaseService:
        """Serve the database whose log ``storage`` holds, replayed into memory.

        ``history`` bounds the transactions kept for ``monitor_cond_since``.
        Raises StorageError naming where a record that does not apply is.
        """
        try:
            service = cls._replay(storage, history)
        except BaseException:
            storage.close()
            raise
        log.info("%s: opened %s (%d transactions replayed)", service.name, storage.name,
                 service.seq)
        return service

    @classmethod
    def _replay(cls, storage: Storage, history: History | None) -> DatabaseService:
        schema = DbSchema.from_json(storage.header.schema)
        service = cls(schema, Database(schema), storage, history)
        history = service.history
        database = service.database
        # Only the newest transactions can stay in the history: append just
        # those and the one before them (it becomes the base), instead of
        # every one, dropping almost all.  A snapshot's id is the base when
        # fewer transactions follow it.  A list trimmed now and then, not a
        # deque: compiled, its append is a direct call.
        keep = max(history.max_transactions, 0) + 1
        trim_at = keep + keep // 4 + 1
        recent: list[tuple[str, Changes, str | None, int]] = []
        base = None
        record = Record(0, ZERO_UUID, 0, {})
        for record in storage.read():
            try:
                changes = changesets.apply_changes_json(database, record.txn, record.changes,
                                                        record.snapshot)
            except (OVSDBError, LookupError, TypeError, ValueError, AttributeError) as e:
                raise StorageError(f"{storage.where(record)}: cannot replay record: {e}") from None
            if record.snapshot:
                recent.clear()
                base = record.txn
            else:
                recent.append((record.txn, changes, record.writer, record.date))
                if len(recent) >= trim_at:
                    del recent[:-keep]
        if base is not None:
            history.reset(base)
        for txn, changes, writer, date_ms in recent[-keep:]:
            history.append(txn, changes)
            history.note_origin(txn, writer, date_ms)
        service.seq = record.seq
        service.last_txn = record.txn
        return service

    # --- transactions -------------------------------------------------------
    def transact(self, session: ClientSession, request_id: Any, dialect: int,
                 ops: list[Any]) -> list[Any] | None:
        """Run a transaction; None means it is parked and answered later."""
        # Most transactions never park: the bookkeeping for parking is made
        # only when one does (or when a parked one might share the id).
        if self.parked and (id(session), _id_key(request_id)) in self.parked:
            raise syntax_error("transact: duplicate request ID", [self.name, *ops])
        outcome = self.database.transact(ops, session)
        if outcome.wait_deadline_ms is None:
            return self._finish(session, request_id, dialect, ops, outcome)
        self._park(session, request_id, dialect, ops, outcome.wait_deadline_ms)
        return None

    def _park(self, session: ClientSession, request_id: Any, dialect: int, ops: list[Any],
              deadline_ms: float) -> None:
        key = (id(session), _id_key(request_id))
        txn = self.parked[key] = ParkedTransaction(session, request_id, dialect, ops)
        session.cleanups.append(lambda: self._unpark(key))
        self._arm_timer(txn, key, deadline_ms)

    def forwarded_reply(self, session: ClientSession) -> ForwardedReply:
        """The session a transaction forwarded by another member runs as."""
        return ForwardedReply(session, lambda: self.seq)

    def _finish(self, session: ClientSession, request_id: Any, dialect: int, ops: list[Any],
                outcome: TxnOutcome) -> list[Any] | None:
        """The results of a transaction that ran, or None: they go out with
        this turn's batch, once its records are written.  A read joins the
        batch when a write came before it: it saw what may yet be undone."""
        assert outcome.results is not None  # only a parked transaction has none
        if self.observer is not None:
            self.observer.transaction_finished(outcome)
        changes = outcome.changes
        if not changes and not self.batch:
            return outcome.results
        record = None
        if changes:
            txn_id = outcome.txn_id
            assert txn_id is not None  # an id comes with every change set
            self.batch_records += 1
            record = Record(self.seq + self.batch_records, txn_id, now_ms(),
                            changesets.changes_to_json(self.database, changes, txn_id),
                            outcome.comment, session.peer)
            self.storage.append(record)
            self.durable_pending |= outcome.durable
        batch = self.batch
        batch.append(BatchEntry(session, request_id, dialect, ops, outcome, record))
        if len(batch) == 1:
            self.request_flush()  # once a batch: it is written at the end of the turn
        return None

    def _arm_timer(self, txn: ParkedTransaction, key: tuple[int, str], deadline_ms: float) -> None:
        """Run the transaction again when its smallest wait timeout expires."""
        if deadline_ms == float("inf") or self.call_later is None:
            return
        if txn.timer is not None:
            txn.timer.cancel()
        # A timer may fire a little early: the re-run then re-arms it.
        delay = max(1.0, deadline_ms - txn.elapsed_ms()) / 1000.0
        txn.timer = self.call_later(delay, lambda: self._retry(key))

    def _unpark(self, key: tuple[int, str]) -> ParkedTransaction | None:
        txn = self.parked.pop(key, None)
        if txn is not None and txn.timer is not None:
            txn.timer.cancel()
        return txn

    def _retry(self, key: tuple[int, str]) -> None:
        """Run a parked transaction again: answer it, or let it wait on."""
        txn = self.parked.get(key)
        if txn is None:
            return
        outcome = self.database.transact(txn.ops, txn.session, elapsed_ms=txn.elapsed_ms())
        if outcome.wait_deadline_ms is not None:
            self._arm_timer(txn, key, outcome.wait_deadline_ms)
            return
        self._unpark(key)
        results = self._finish(txn.session, txn.request_id, txn.dialect, txn.ops, outcome)
        if results is not None:
            txn.session.reply(txn.request_id, results, txn.dialect)

    def apply_committed(self, seq: int, txn: str, changes_json: dict[str, Any],
                        snapshot: bool = False, writer: str | None = None,
                        date_ms: int = 0) -> Changes:
        """Apply what was committed elsewhere (another member's log record, a
        relay's source) as transaction ``txn`` at position ``seq``, and publish
        it.  Raises what changesets.apply_changes_json raises when it does not fit."""
        changes = changesets.apply_changes_json(self.database, txn, changes_json, snapshot)
        self.seq = seq
        self.last_txn = txn
        self.publish(changes, txn)
        self.history.note_origin(txn, writer, date_ms)
        return changes

    def publish(self, changes: Any, txn_id: str) -> None:
        """Feed a committed change set to the monitors; flush at the end of the turn."""
        self._feed_monitors(changes, txn_id)
        self.request_flush()

    def _feed_monitors(self, changes: Any, txn_id: str) -> None:
        """Publish without asking for a flush: what a batch being answered
        publishes goes out when the server opens its gate after the batch."""
        dirty = self.dirty_sessions
        for monitor in self.hub.commit(changes, txn_id):
            session = monitor.owner
            session.dirty = True
            dirty.add(session)

    def flush_sessions(self) -> None:
        """Send every pending monitor update (sessions that are not backed up)."""
        dirty, self.dirty_sessions = self.dirty_sessions, set()
        for session in dirty:
            if not session.closed:
                session.flush_monitors()

    def cancel(self, session: ClientSession, request_id: Any) -> bool:
        txn = self._unpark((id(session), _id_key(request_id)))
        if txn is None:
            return False
        session.reply_error(request_id, "canceled", txn.dialect)
        return True

    def cancel_parked(self) -> None:
        """Fail every parked transaction with "canceled" (a conversion)."""
        for key in list(self.parked):
            txn = self._unpark(key)
            if txn is not None and not txn.session.closed:
                txn.session.reply_error(txn.request_id, "canceled", txn.dialect)

    # --- the batch ------------------------------------------------------------
    def _acknowledge(self) -> None:
        """The batch is written: publish its changes and send its replies."""
        if self._answer(self._take_batch()) and self.parked:
            for key in list(self.parked):
                self._retry(key)

    def _answer(self, batch: list[BatchEntry]) -> bool:
        """Publish a written batch's changes and send its replies, in order;
        whether it committed anything."""
        self._count_written(batch)
        committed = False
        for entry in batch:
            record = entry.record
            if entry.conversion is not None:
                self._converted(entry)
                continue
            if record is not None:
                self.seq = record.seq
                self.last_txn = record.txn
                assert entry.outcome.changes is not None
                self._feed_monitors(entry.outcome.changes, record.txn)
                self.history.note_origin(record.txn, record.writer, record.date)
                committed = True
            assert entry.outcome.results is not None
            if not entry.session.closed:
                entry.session.reply(entry.request_id, entry.outcome.results, entry.dialect)
        return committed

    def _converted(self, entry: BatchEntry) -> None:
        """A conversion in the batch (only a log shared with others has them)."""
        raise AssertionError(f"{self.name}: a conversion in a standalone batch")

    def _count_written(self, batch: list[BatchEntry]) -> None:
        if self.observer is not None:
            self.observer.commits_written(sum(1 for e in batch if e.record is not None))

    def _take_batch(self) -> list[BatchEntry]:
        batch, self.batch = self.batch, []
        self.batch_records = 0
        return batch

    def _undo_batch(self) -> list[BatchEntry]:
        """Take the batch back out of memory, the newest change first."""
        batch = self._take_batch()
        for entry in reversed(batch):
            if entry.outcome.changes:
                undo(self.database, entry.outcome.changes)
        return batch

    def _refuse_batch(self, failure: dict[str, Any]) -> None:
        """The batch could not be stored: undo it and answer each
        transaction with its results followed by ``failure``; a read that
        saw the batch runs again on what is committed."""
        for entry in self._undo_batch():
            assert entry.outcome.results is not None
            if entry.record is not None and self.observer is not None:
                self.observer.commit_refused(str(failure.get("error")))
            if entry.session.closed:
                continue
            if entry.conversion is not None:
                entry.session.reply_error(entry.request_id, failure, entry.dialect)
                continue
            if entry.record is None:
                outcome = self.database.transact(entry.ops, entry.session)
                if outcome.results is not None and not outcome.changes:
                    entry.session.reply(entry.request_id, outcome.results, entry.dialect)
                    continue
                if outcome.changes:
                    undo(self.database, outcome.changes)
            entry.session.reply(entry.request_id, [*entry.outcome.results, failure],
                                entry.dialect)

    def converted(self, schema: DbSchema) -> Database:
        """A new database holding this one's rows under ``schema``.

        The rows go in as one transaction of inserts that keep their UUIDs, so
        the engine checks every constraint of the new schema, referential
        integrity and indexes, and collects rows that nothing references now.
        Raises the first error the transaction reports.
        """
        ops: list[Any] = []
        for name, new_table in schema.tables.items():
            old_table = self.database.tables.get(name)
            if old_table is None:
                continue
            columns = [c for c in new_table.user_columns if c in old_table.schema.columns]
            for uuid_text, row in old_table.rows.items():
                ops.append({"op": "insert", "table": name, "uuid": uuid_text, "row": {
                    c: values.to_json(old_table.schema.columns[c].type, row[c])
                    for c in columns}})
        database = Database(schema)
        outcome = database.transact(ops)
        assert outcome.results is not None
        for result in outcome.results:
            if isinstance(result, dict) and "error" in result:
                raise OVSDBError.from_json(result)
        return database

    def replace_schema(self, schema: DbSchema, database: Database, seq: int | None = None,
                       txn: str | None = None) -> None:
        """Adopt a converted database (as of ``seq`` and ``txn``, by default the
        next position and a new id) and compact the storage into its snapshot.

        Monitors of the old database end here: the history restarts, so no
        client resumes across a conversion.
        """
        self.schema = schema
        self.schema_json = schema.to_json()
        self.database = database
        self.seq = self.seq + 1 if seq is None else seq
        self.last_txn = new_txn_id() if txn is None else txn
        self.history.reset(self.last_txn)
        self.hub = MonitorHub(database, self.history)
        self.compact()

    def flush(self) -> Awaitable[None] | None:
        """Write this loop turn's commits as one batch (synced if one asked).

        A log shared with other servers returns what settles the batch
        (cluster.ClusterService); until it has, no reply of the turn goes out.
        """
        sync, self.durable_pending = self.durable_pending, False
        try:
            self.storage.flush(sync)
        except StorageError as e:
            # Only this batch fails; the storage is back at its last good
            # record, and the next batch tries again (the disk may have room by then).
            log.error("%s: %s; failing the %d transactions of this batch", self.name, e,
                      len(self.batch))
            self._refuse_batch(io_error(e))
            return None
        if self.batch:
            self._acknowledge()
        since = time.monotonic() - self.compacted_at
        # Not while answering started a new batch (a parked transaction
        # ran): a snapshot now would hold it before it is written.
        if since >= COMPACT_MIN_INTERVAL and not self.batch and self.storage.should_compact(
                since >= COMPACT_MAX_INTERVAL):
            self.compacted_at = time.monotonic()  # asked once, not every turn meanwhile
            if self.compact_in_background is None:
                self.compact()
            else:
                self.compact_in_background(self)
        return None

    def compact(self) -> None:
        """Replace the log with one snapshot of every row, now."""
        snapshot = Record(self.seq, self.last_txn, now_ms(),
                          changesets.snapshot_json(self.database, self.last_txn), snapshot=True)
        self.storage.compact(Header(self.schema_json), snapshot)
        self.compacted_at = time.monotonic()
        self.compactions += 1

    def begin_compaction(self) -> journal.Compaction | None:
        """The start of a compaction that does not stop the server: the
        rows as they are now, frozen (each table's row dict copied: rows
        are never changed in place, only replaced), for a worker thread to
        write (``Compaction.write``), then ``finish_compaction``.  Call it
        between batches (none written yet would be in the snapshot).  None
        when the storage is not a file: it compacted at once."""
        storage = self.storage
        if not isinstance(storage, journal.Journal):
            self.compact()
            return None
        txn = self.last_txn
        frozen = [(name, table, dict(table.rows))
                  for name, table in self.database.tables.items() if table.rows]
        return storage.begin_compaction(Header(self.schema_json),
                                        Record(self.seq, txn, now_ms(), {}, snapshot=True),
                                        _snapshot_chunks(frozen, txn))

    def finish_compaction(self, compaction: journal.Compaction) -> None:
        """Switch to the new file; StorageError if that fails (the old one stays)."""
        if compaction.finish():
            self.compacted_at = time.monotonic()
            self.compactions += 1

    def close(self) -> None:
        for key in list(self.parked):
            self._unpark(key)
        self.storage.flush(True)
        self.storage.close()


# Rows per chunk of a snapshot serialized in the background: ~1 ms of work
# that holds the interpreter between two writes.
SNAPSHOT_CHUNK = 256


def _snapshot_chunks(frozen: list[tuple[str, Table, dict[str, Row]]],
                     txn_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a frozen view as a snapshot stores them, in chunks."""
    for name, table, rows in frozen:
        chunk: dict[str, Any] = {}
        for uuid, row in rows.items():
            chunk[uuid] = table.stored_json(row, txn_id)
            if len(chunk) == SNAPSHOT_CHUNK:
                yield name, chunk
                chunk = {}
        if chunk:
            yield name, chunk


class ServerDatabases:
    """Every database this server serves, plus the ``_Server`` database."""

    def __init__(self, services: list[DatabaseService]) -> None:
        names = [s.name for s in services]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"database {sorted(duplicates)[0]} is served twice")
        for name in names:
            if name.startswith("_"):
                raise ValueError(f'{name}: names beginning with "_" are reserved')
        self.services = {s.name: s for s in services}
        self.shared = [s for s in services if s.shares_log()]
        self.server_id = new_uuid()
        self.locks = LockTable()
        # In a cluster, locks are the cluster's (cluster_locks.ClusterLocks).
        self.cluster_locks: Any = None
        self.sessions: set[ClientSession] = set()
        # Told of errors replied and of transactions when --metrics is on (metrics.Metrics).
        self.observer: Any = None
        self.server_db = ServerDatabase()
        self.stale_rows: set[DatabaseService] = set()   # their _Server rows lag
        for service in services:
            self.server_db.add(service.name, service.schema_json, service.server_state())
        self.services[SERVER_DB_NAME] = DatabaseService(
            self.server_db.schema, self.server_db.database,
            MemoryStorage(self.server_db.schema.to_json(), SERVER_DB_NAME))

    def attach(self, request_flush: Callable[[], None],
               call_later: Callable[[float, Callable[[], None]], Any],
               compact_in_background: Callable[[DatabaseService], None] | None = None) -> None:
        for service in self.services.values():
            service.request_flush = request_flush
            service.call_later = call_later
            service.compact_in_background = compact_in_background

    def observe(self, observer: Any) -> None:
        """Tell ``observer`` of every transaction and error reply (--metrics)."""
        self.observer = observer
        for service in self.services.values():
            service.observer = observer

    def get(self, name: str) -> DatabaseService | None:
        if self.stale_rows and name == SERVER_DB_NAME:
            self.refresh_server_rows()
        return self.services.get(name)

    def names(self) -> list[str]:
        return list(self.services)

    def cancel(self, session: ClientSession, request_id: Any) -> None:
        for service in self.services.values():
            if service.cancel(session, request_id):
                return

    def flush(self) -> list[Awaitable[None]]:
        """Flush every database; what settles the batches of shared logs."""
        settling = []
        for service in self.services.values():
            pending = service.flush()
            if pending is not None:
                settling.append(pending)
        return settling

    @property
    def tentative(self) -> bool:
        """Whether a batch that may not commit is being built this turn."""
        return any(s.tentative() for s in self.services.values())

    @property
    def accepts_transactions(self) -> bool:
        """Whether every batch being built can take another transaction."""
        return all(s.accepts_transactions() for s in self.shared)

    def state_changed(self, service: DatabaseService) -> None:
        """``service``'s row in ``_Server`` is out of date (a cluster member's state).

        It is brought up to date at once while a monitor watches ``_Server``,
        else when a request next names ``_Server`` (``get``): a member's
        ``index`` moves with every commit, and updating a row nobody looks
        at cost a follower a third of its time per commit."""
        self.stale_rows.add(service)
        server = self.services[SERVER_DB_NAME]
        if server.hub.group_count:
            self.refresh_server_rows()

    def refresh_server_rows(self) -> None:
        stale, self.stale_rows = self.stale_rows, set()
        for service in stale:
            changes = self.server_db.set_state(service.name, service.server_state())
            if changes:
                self.services[SERVER_DB_NAME].publish(changes, new_txn_id())

    def convert(self, service: DatabaseService, schema: DbSchema) -> list[ClientSession]:
        """Convert ``service`` to ``schema`` (PROTOCOL.md 2.10).

        Change-aware sessions get ``monitor_canceled`` for the database's
        monitors and "canceled" for its parked transactions; the sessions that
        are not change-aware are returned, to be disconnected after the reply.
        Raises OVSDBError, changing nothing, when the data does not fit.
        """
        return self.switch_schema(service, schema, service.converted(schema))

    def switch_schema(self, service: DatabaseService, schema: DbSchema, database: Database,
                      seq: int | None = None, txn: str | None = None) -> list[ClientSession]:
        """Serve ``database`` (converted to ``schema``) as ``service``'s contents,
        at position ``seq`` with id ``txn`` (a cluster's conversion record), and
        end what the old schema had; returns the sessions to disconnect."""
        for session in list(self.sessions):
            if not session.change_aware:
                continue
            for key, monitor in list(session.monitors.items()):
                if monitor.spec.db == service.name:
                    session.notify("monitor_canceled", [monitor.id])
                    monitor.cancel()
                    del session.monitors[key]
        service.cancel_parked()
        service.replace_schema(schema, database, seq, txn)
        server = self.services[SERVER_DB_NAME]
        changes = self.server_db.set_schema(service.name, service.schema_json)
        if changes:
            server.publish(changes, new_txn_id())
        return [s for s in self.sessions if not s.change_aware]

    def stats(self) -> dict[str, int]:
        """What the server holds for its clients (tegadb_stats; like ovs-appctl memory/show)."""
        services = self.services.values()
        return {
            "sessions": len(self.sessions),
            "monitors": sum(len(s.monitors) for s in self.sessions),
            "monitor_specs": sum(s.hub.group_count for s in services),
            "locks": (len(self.locks.records) if self.cluster_locks is None
                      else self.cluster_locks.names_in_use),
            "parked_transactions": sum(len(s.parked) for s in services),
        }

    def flush_sessions(self) -> None:
        for service in self.services.values():
            if service.dirty_sessions:
                service.flush_sessions()

    def close(self) -> None:
        for service in self.services.values():
            service.close()


__all__ = [
    "DatabaseService",
    "OVSDBError",
    "ServerDatabases",
    "create_database_file",
    "read_schema_file",
]

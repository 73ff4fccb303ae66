"""A database served as a member of a cluster whose log is in etcd (docs/cluster.md).

Every member holds the whole database and runs transactions against its copy
as of log position P.  A loop turn's commits form a batch, appended to the
log in etcd only if the log is still at P (``etcd_log``).  Until etcd says
yes, the batch is *tentative*: its replies and monitor updates wait, and the
server holds other input (``connections``), so nothing outside the batch
reads what may not commit.  When another member got there first, the member
undoes its batch (``core.commit.undo``), applies the other records, and runs
the same transactions again: the client never sees the conflict.  Records
appended by others arrive through an etcd watch and are applied in order,
so every member reports every commit with the same transaction id.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..core import changesets
from ..core.commit import undo
from ..core.database import Database, TxnOutcome
from ..core.errors import OVSDBError
from ..core.history import History
from ..core.ids import new_txn_id
from ..core.schema import DbSchema
from . import journal
from .cluster_forward import Forwarder, WriterLease, forwardable
from .etcd_log import (
    MAX_REQUEST_BYTES,
    Etcd,
    EtcdLog,
    EtcdUnavailable,
    LogTrimmed,
    encode_line,
)
from .records import Header, Record
from .service import BatchEntry, ClientSession, DatabaseService, ForwardedReply, now_ms
from .storage import MemoryStorage, StorageError

log = logging.getLogger("tegadb.cluster")

# A member that appends a batch crossing a multiple of this many records
# stores a snapshot and trims the log before it, but for TRIM_KEEP records
# (members a little behind catch up from the log, not the snapshot).
SNAPSHOT_EVERY = 5_000
TRIM_KEEP = 1_000
RECONNECT_DELAY = 0.5
# How often a member checks that its watch keeps up with the log.
HEALTH_INTERVAL = 1.0


class ClusterService(DatabaseService):
    """One database served as a cluster member; ``storage`` is the member's
    local file, a cache of the cluster's contents, never the source of truth."""

    log: EtcdLog
    cid: str
    sid: str

    def setup(self, etcd_log: EtcdLog, loaded_revision: int, cid: str, sid: str,
              snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self.log = etcd_log
        self.snapshot_every = max(snapshot_every, 1)
        self.snapshot_seq = self.seq              # where this member last stored one
        self.cid = cid
        self.sid = sid
        self.revision = loaded_revision       # etcd revision the copy is current with
        self.connected = True
        self.batch: list[BatchEntry] = []
        self.converting = False               # the batch holds a conversion
        self.batch_records = 0
        self.batch_bytes = 0
        # Transactions that did not fit in the batch, run after it settles.
        self.overflow: list[tuple[ClientSession, Any, int, list[Any]]] = []
        self.in_flight = False
        self.sent = b""                       # the batch in flight, as appended
        self.inbox: list[Record] = []         # records from the watch while busy
        self.retry_later: set[tuple[int, str]] = set()
        self.follower: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        # Writes forwarded to one member while appends contend (cluster_forward).
        self.writer_lease: WriterLease | None = None
        self.forwarder: Forwarder | None = None
        self.position_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        # The server shell's hooks: _Server's row follows the state; a copy
        # that left the log stops the member.
        self.on_state_change: Callable[[], None] = lambda: None
        self.on_fatal: Callable[[str], None] = _stop
        # A conversion: serve the new database, end what the old schema had;
        # the sessions to disconnect (ServerDatabases.switch_schema).
        self.on_schema_change: Callable[[DbSchema, Database, int, str],
                                        list[ClientSession]] = self._replace_only

    @property
    def busy(self) -> bool:
        return bool(self.batch) or self.in_flight

    def shares_log(self) -> bool:
        return True

    def server_state(self) -> dict[str, Any]:
        # Every member takes writes while it follows the log, so each is a
        # "leader" to clients (the IDL's default leader-only mode works with any).
        return {"model": "clustered", "connected": self.connected, "leader": self.connected,
                "index": self.seq, "cid": ["uuid", self.cid], "sid": ["uuid", self.sid]}

    def tentative(self) -> bool:
        """A batch is being built this loop turn (not yet sent)."""
        return bool(self.batch) and not self.in_flight

    # --- forwarding to the writer -------------------------------------------------
    def forward_writes(self, remote: str | None) -> None:
        """Forward writes to the writer while appends contend; ``remote`` is
        where other members reach this one (None: it never becomes the writer)."""
        self.writer_lease = WriterLease(self.log, self.sid, remote)
        self.forwarder = Forwarder(self.name, self.writer_lease, self.reached)

    def forwarded_reply(self, session: ClientSession) -> ForwardedReply:
        if self.writer_lease is not None:
            self.writer_lease.last_forwarded = time.monotonic()
        return super().forwarded_reply(session)

    def reached(self, position: int) -> asyncio.Future[None] | None:
        """None if the copy holds ``position``, else a future done when it does."""
        if self.seq >= position:
            return None
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self.position_waiters, (position, id(future), future))
        return future

    def _wake_waiters(self) -> None:
        waiters = self.position_waiters
        while waiters and waiters[0][0] <= self.seq:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    def transact(self, session: ClientSession, request_id: Any, dialect: int,
                 ops: list[Any]) -> list[Any] | None:
        forwarder = self.forwarder
        if forwarder is None or isinstance(session, ForwardedReply):
            return super().transact(session, request_id, dialect, ops)
        if session in forwarder.held:  # keep the client's order
            forwarder.hold(session, request_id, dialect, ops)
            return None
        if forwardable(ops) and forwarder.usable():
            forwarder.forward(session, request_id, dialect, ops, self._run_held)
            return None
        if forwarder.holds(session):
            forwarder.hold(session, request_id, dialect, ops)
            return None
        return super().transact(session, request_id, dialect, ops)

    def _run_held(self, session: ClientSession, request_id: Any, dialect: int,
                  ops: list[Any]) -> None:
        try:
            results = self.transact(session, request_id, dialect, ops)
        except OVSDBError as e:
            session.reply_error(request_id, e, dialect)
            return
        if results is not None:
            session.reply(request_id, results, dialect)

    async def stop_forwarding(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.writer_lease is not None and self.writer_lease.holding:
            await self.writer_lease.release()

    # --- transactions -------------------------------------------------------
    def _finish(self, session: ClientSession, request_id: Any, dialect: int, ops: list[Any],
                outcome: TxnOutcome) -> list[Any] | None:
        """Answer a transaction that ran: now, or with its batch."""
        assert outcome.results is not None
        if self.observer is not None:
            self.observer.transaction_finished(outcome)
        changes = outcome.changes
        if changes and not self.connected:
            undo(self.database, changes)
            if self.observer is not None:
                self.observer.commit_refused("cluster unavailable")
            return [*outcome.results, self._unavailable_error()]
        if not changes and not self.batch:
            return outcome.results  # it read committed contents only
        record = line = None
        if changes:
            assert outcome.txn_id is not None
            record = Record(self.seq + self.batch_records + 1, outcome.txn_id, now_ms(),
                            changesets.changes_to_json(self.database, changes, outcome.txn_id),
                            outcome.comment, session.peer)
            line = encode_line(record.to_json())
            if len(line) > MAX_REQUEST_BYTES:
                undo(self.database, changes)
                if self.observer is not None:
                    self.observer.commit_refused("resources exhausted")
                return [*outcome.results, {
                    "error": "resources exhausted",
                    "details": f"the transaction's log record of {len(line)} bytes exceeds the "
                               f"largest etcd request ({MAX_REQUEST_BYTES} bytes)"}]
            if self.batch_bytes + len(line) > MAX_REQUEST_BYTES:
                # The batch is full: run this one (and all input after it)
                # once the batch settled.
                undo(self.database, changes)
                self.overflow.append((session, request_id, dialect, ops))
                self.request_flush()
                return None
            self.batch_records += 1
            self.batch_bytes += len(line) + 1
        self.batch.append(BatchEntry(session, request_id, dialect, ops, outcome, record, line))
        self.request_flush()
        return None

    def accepts_transactions(self) -> bool:
        """Whether a transaction may join this turn's batch (it is neither
        full nor a conversion, after which transactions see the new schema)."""
        return not self.overflow and not self.converting

    def _retry(self, key: tuple[int, str]) -> None:
        if self.in_flight and key in self.parked:
            self.retry_later.add(key)  # it would read the tentative batch
            return
        super()._retry(key)

    def _unavailable_error(self) -> dict[str, Any]:
        return {"error": "cluster unavailable",
                "details": f"database {self.name} cannot commit: its log in etcd "
                           f"({self.log.etcd.where}) is unreachable"}

    # --- the batch ------------------------------------------------------------
    def flush(self) -> Awaitable[None] | None:
        """Send this turn's batch to etcd; the awaitable settles it."""
        if not self.batch or self.in_flight:
            return None
        self.in_flight = True
        return self._settle()

    async def _settle(self) -> None:
        try:
            while True:
                records = [e.record for e in self.batch if e.record is not None]
                if not records:
                    self._acknowledge()
                    return
                value = b"\n".join([e.line for e in self.batch if e.line is not None])
                # One handler, then isinstance: mypyc-compiled handlers that
                # bind ``as e`` mis-typed exceptions raised through awaits.
                self.sent = value
                try:
                    theirs = await self.log.append(self.seq, records, value)
                except Exception as e:
                    if not isinstance(e, StorageError):
                        raise
                    log.warning("%s: %s", self.name, e)
                    self._fail_batch(e)
                    if isinstance(e, LogTrimmed):
                        self._diverged("its copy fell behind the log's snapshot")
                    elif isinstance(e, EtcdUnavailable):
                        self._set_connected(False)
                    return
                if theirs is None:
                    self._acknowledge()
                    return
                if self.writer_lease is not None:
                    self.writer_lease.contended()
                self._run_again(theirs)
        finally:
            self.in_flight = False
            self.sent = b""
            self._after_settling()

    def _acknowledge(self) -> None:
        committed = self._answer(self._take_batch())
        if self.position_waiters:
            self._wake_waiters()
        if self.seq - self.snapshot_seq >= self.snapshot_every and self._snapshot_due():
            self._store_snapshot()
        if self.parked and committed:
            self.retry_later.update(self.parked)  # run once the batch has settled
        self.on_state_change()

    def _converted(self, entry: BatchEntry) -> None:
        record = entry.record
        assert record is not None and entry.conversion is not None
        to_disconnect = self._adopt(record)
        log.info("%s: converted %s to schema version %s at %d", entry.session.peer,
                 self.name, entry.conversion.version or "(none)", record.seq)
        if not entry.session.closed:
            entry.session.reply(entry.request_id, {}, entry.dialect)
        for session in to_disconnect:
            session.disconnect()

    # --- conversions -----------------------------------------------------------------
    def _replace_only(self, schema: DbSchema, database: Database, seq: int,
                      txn: str) -> list[ClientSession]:
        self.replace_schema(schema, database, seq, txn)
        return []

    def convert_through_log(self, session: ClientSession, request_id: Any, dialect: int,
                            schema: DbSchema) -> None:
        """Propose converting to ``schema``: a snapshot record that carries the
        schema; every member applies it at the position the log gives it.
        Raises OVSDBError when the data does not fit ``schema`` or is too big."""
        record, line = self._conversion_record(
            DbSchema.from_json(all_persistent(schema.to_json())), session.peer)
        self.batch.append(BatchEntry(session, request_id, dialect, [], TxnOutcome([]), record,
                                     line, schema))
        self.converting = True
        self.batch_records += 1
        self.batch_bytes += len(line) + 1
        self.request_flush()

    def _conversion_record(self, schema: DbSchema, writer: str) -> tuple[Record, bytes]:
        database = self.converted(schema)
        txn = new_txn_id()
        record = Record(self.seq + self.batch_records + 1, txn, now_ms(),
                        changesets.snapshot_json(database, txn), None, writer, snapshot=True,
                        schema=schema.to_json())
        line = encode_line(record.to_json())
        if len(line) > MAX_REQUEST_BYTES:
            raise OVSDBError("not allowed", f"the converted contents of {self.name} take "
                             f"{len(line)} bytes, more than the largest etcd request "
                             f"({MAX_REQUEST_BYTES} bytes), and cannot go through its log")
        return record, line

    def _adopt(self, record: Record) -> list[ClientSession]:
        """Apply a conversion record: its schema and rows replace the database's."""
        assert record.schema is not None
        schema = DbSchema.from_json(record.schema)
        database = Database(schema)
        changesets.apply_changes_json(database, record.txn, record.changes, snapshot=True)
        return self.on_schema_change(schema, database, record.seq, record.txn)

    def _take_batch(self) -> list[BatchEntry]:
        batch, self.batch = self.batch, []
        self.batch_records = self.batch_bytes = 0
        self.converting = False
        return batch

    def _fail_batch(self, error: StorageError | None) -> None:
        self._refuse_batch(self._unavailable_error() if error is None
                           or isinstance(error, EtcdUnavailable) else
                           {"error": "cluster unavailable", "details": str(error)})

    def _run_again(self, theirs: list[Record]) -> None:
        """Another member appended first: take its records, then rerun ours."""
        batch = self._undo_batch()
        self._apply(theirs)
        for entry in batch:
            if entry.session.closed:
                continue
            if entry.conversion is not None:
                try:
                    self.convert_through_log(entry.session, entry.request_id, entry.dialect,
                                             entry.conversion)
                except OVSDBError as e:  # the data no longer fits
                    entry.session.reply_error(entry.request_id, e.to_json(), entry.dialect)
                continue
            outcome = self.database.transact(entry.ops, entry.session)
            if outcome.wait_deadline_ms is not None:
                self._park(entry.session, entry.request_id, entry.dialect, entry.ops,
                           outcome.wait_deadline_ms)
                continue
            results = self._finish(entry.session, entry.request_id, entry.dialect, entry.ops,
                                   outcome)
            if results is not None:
                entry.session.reply(entry.request_id, results, entry.dialect)

    def _after_settling(self) -> None:
        if self.inbox:
            inbox, self.inbox = self.inbox, []
            self._apply(inbox)
        overflow, self.overflow = self.overflow, []
        for session, request_id, dialect, ops in overflow:
            if session.closed:
                continue
            results = self.transact(session, request_id, dialect, ops)
            if results is not None:
                session.reply(request_id, results, dialect)
        for key in list(self.retry_later):
            self.retry_later.discard(key)
            self._retry(key)

    # --- following the log ----------------------------------------------------
    def receive(self, records: list[Record]) -> None:
        """Records from the watch: applied now, or after the batch settles."""
        if self.busy:
            self.inbox.extend(records)
        else:
            self._apply(records)
            self.on_state_change()

    def _apply(self, records: list[Record]) -> None:
        """Apply others' records in order (own ones are already applied), then
        rerun the parked transactions once."""
        applied = False
        for record in records:
            if record.seq <= self.seq:
                continue
            if record.seq != self.seq + 1:
                self._catch_up_later()
                break
            try:
                if record.schema is not None:
                    for session in self._adopt(record):
                        session.disconnect()
                    applied = True
                    continue
                self.apply_committed(record.seq, record.txn, record.changes, record.snapshot,
                                     record.writer, record.date)
            except (OVSDBError, LookupError, TypeError, ValueError, AttributeError) as e:
                self._diverged(f"cannot apply {self.log.where(record.seq)}: {e}")
                return
            applied = True
        if applied and self.position_waiters:
            self._wake_waiters()
        if applied and self.parked:
            for key in list(self.parked):
                self._retry(key)

    def _catch_up_later(self) -> None:
        asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        try:
            records, _ = await self.log.read_after(self.seq)
        except Exception as e:
            if isinstance(e, LogTrimmed):
                self._diverged("its copy fell behind the log's snapshot")
            elif isinstance(e, StorageError):
                log.warning("%s: catching up: %s", self.name, e)
            else:
                raise
            return
        self.receive(records)

    def _diverged(self, why: str) -> None:
        """Never serve a copy that left the log: stop the member."""
        log.error("%s: stopping: %s", self.name, why)
        self.on_fatal(f"{self.name}: {why}")

    async def follow(self) -> None:
        """Apply what others append, for as long as the member runs.

        A watch delivers the records.  Once a second the member also reads
        the log's head: a watch that stalled (its connection closed under
        it) is made again through the next endpoint, and only when no
        endpoint answers does the member say it lost etcd (refusing writes)
        until etcd is back and the member caught up.
        """
        while True:
            consumer: asyncio.Task[None] | None = None
            try:
                watch = await self.log.watch(self.revision + 1)
                records, revision = await self.log.read_after(self.seq)
                self.receive(records)
                self.revision = max(self.revision, revision)
                self._set_connected(True)
                consumer = asyncio.get_running_loop().create_task(self._consume(watch))
                await self._watch_health(consumer)
            except Exception as e:
                if isinstance(e, LogTrimmed):
                    self._diverged("its copy fell behind the log's snapshot")
                    return
                if isinstance(e, EtcdUnavailable):
                    log.warning("%s: following the log: %s", self.name, e)
                    self._set_connected(False)
                    await asyncio.sleep(RECONNECT_DELAY)
                elif isinstance(e, StorageError):
                    self._diverged(f"following the log: {e}")
                    return
                else:  # the watch stream broke: its etcd member is gone
                    log.info("%s: watching the log: %s; watching again", self.name,
                             e or type(e).__name__)
                    self.log.etcd.drop_current()
            finally:
                if consumer is not None and not consumer.done():
                    consumer.cancel()  # not awaited: a stalled stream may never end

    async def _consume(self, watch: Any) -> None:
        async for event in watch:
            kv = event.kv
            self.revision = max(self.revision, kv.mod_revision)
            # A batch this member appended (or already has) is not decoded again.
            if (event.kind == "PUT" and kv.value != self.sent
                    and self.log.batch_end(kv.key) > self.seq):
                self.receive(self.log.decode_batch(kv.value))

    async def _watch_health(self, consumer: asyncio.Task[None]) -> None:
        """Return when the watch ended or stalled; raise what ended it."""
        seen = self.seq
        while True:
            done, _ = await asyncio.wait({consumer}, timeout=HEALTH_INTERVAL)
            if done:
                consumer.result()  # raises what broke the stream
                return  # the stream ended (its client was closed): watch again
            if self.writer_lease is not None:
                await self.writer_lease.refresh()
            head = await self.log.head()
            if head > self.seq and self.seq == seen and not self.busy:
                log.info("%s: the watch stalled at %d (the log is at %d); watching again",
                         self.name, self.seq, head)
                self.log.etcd.drop_current()
                return
            seen = self.seq

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            log.info("%s: %s etcd", self.name, "connected to" if connected else "lost")
            self.on_state_change()

    # --- snapshots -------------------------------------------------------------
    def _snapshot_due(self) -> bool:
        """A snapshot costs the whole database: store one only once the log
        since the last has as many records as half the rows, so that a large
        database's snapshots cost about a row per record."""
        rows = sum(len(table.rows) for table in self.database.tables.values())
        return self.seq - self.snapshot_seq >= rows // 2

    def _store_snapshot(self) -> None:
        if self.snapshot_task is not None and not self.snapshot_task.done():
            return
        self.snapshot_seq = self.seq
        header = Header(self.schema_json)
        snapshot = Record(self.seq, self.last_txn, now_ms(),
                          changesets.snapshot_json(self.database, self.last_txn), snapshot=True)
        self.snapshot_task = asyncio.get_running_loop().create_task(
            self._write_snapshot(header, snapshot))

    async def _write_snapshot(self, header: Header, snapshot: Record) -> None:
        try:
            await self.log.store_snapshot(header, snapshot,
                                          min(TRIM_KEEP, self.snapshot_every // 2))
            log.info("%s: stored a snapshot at %d in etcd", self.name, snapshot.seq)
        except Exception as e:
            if not isinstance(e, StorageError):
                raise
            log.warning("%s: storing a snapshot: %s", self.name, e)

    def compact(self) -> None:
        """Write the local cache: the cluster's contents at this member's position."""
        self.compactions += 1
        snapshot = Record(self.seq, self.last_txn, now_ms(),
                          changesets.snapshot_json(self.database, self.last_txn), snapshot=True)
        self.storage.compact(Header(self.schema_json), snapshot)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
        for key in list(self.parked):
            self._unpark(key)
        if self.batch:
            self._undo_batch()
        try:
            self.compact()
        finally:
            self.storage.close()


async def join(db_file: str, etcd: Etcd, prefix: str, history: History,
               snapshot_every: int = SNAPSHOT_EVERY) -> ClusterService:
    """Serve ``db_file``'s database as a member of the cluster whose log is
    under ``prefix`` in ``etcd``: seed the log from the file if there is none
    yet, else take the cluster's contents (and write them to the file, the
    member's cache)."""
    local = journal.Journal.open(db_file)
    seeded = ClusterService.load(local, history)  # closes the file if it fails
    assert isinstance(seeded, ClusterService)
    local_schema = all_persistent(seeded.schema_json)
    etcd_log = EtcdLog(etcd, prefix, seeded.name)
    # The file is the member's cache: where it ends, the log need only be
    # read after (a file that never held the cluster's log starts from nothing).
    cached = (seeded.seq, seeded.last_txn) if seeded.seq > 0 else None
    try:
        loaded = await etcd_log.load(cached)
        if loaded is None:
            snapshot = Record(seeded.seq, seeded.last_txn, now_ms(),
                              changesets.snapshot_json(seeded.database, seeded.last_txn),
                              snapshot=True)
            if await etcd_log.seed(Header(local_schema), snapshot):
                log.info("%s: started the cluster's log in etcd from %s (position %d)",
                         seeded.name, db_file, seeded.seq)
            loaded = await etcd_log.load()
            if loaded is None:
                raise StorageError(f"etcd {etcd_log.base}: the log vanished while seeding it")
        if loaded.header is not None:
            _check_schema(db_file, local_schema, loaded.header)
    except BaseException:
        local.close()
        raise
    if loaded.header is None:
        service = seeded
        log.info("%s: started from %s at position %d, then %d records from etcd",
                 service.name, db_file, service.seq, len(loaded.records))
    else:
        service = _replay(loaded.header, loaded.records, history)
        service.storage = local
    service.setup(etcd_log, loaded.revision, loaded.cid,
                  member_sid(loaded.cid, os.path.abspath(db_file), socket.gethostname()),
                  snapshot_every)
    if loaded.header is None:
        service.receive(loaded.records)
    service.compact()
    return service


def _replay(header: Header, records: list[Record], history: History) -> ClusterService:
    memory = MemoryStorage(header.schema, f"etcd {header.name}")
    for record in records:
        memory.append(record)
    memory.flush(sync=False)
    service = ClusterService.load(memory, history)
    assert isinstance(service, ClusterService)
    return service


def _check_schema(db_file: str, local: dict[str, Any], header: Header) -> None:
    cluster = header.schema
    if cluster != local:
        raise StorageError(
            f"{db_file}: schema {local.get('name')} version {local.get('version', '?')} "
            f"differs from the cluster's schema {cluster.get('name')} version "
            f"{cluster.get('version', '?')}; convert the cluster (tegadb-client convert) "
            "or give this member the cluster's schema")


def all_persistent(schema_json: dict[str, Any]) -> dict[str, Any]:
    """``schema_json`` with every ephemeral column made persistent: every
    member must see every change, so a cluster keeps them all in its log
    (ovsdb-server's clusters do the same, and ovsdb-client says so)."""
    tables = {}
    for name, table in schema_json.get("tables", {}).items():
        columns = {c: {k: v for k, v in column.items() if k != "ephemeral"}
                   for c, column in table.get("columns", {}).items()}
        tables[name] = {**table, "columns": columns}
    return {**schema_json, "tables": tables}


def _stop(why: str) -> None:
    raise StorageError(why)


def member_sid(cid: str, db_file: str, node: str) -> str:
    """A member's stable id: the same for the same file on the same host."""
    return str(uuid.uuid5(uuid.UUID(cid), f"{node}:{db_file}"))


__all__ = ["ClusterService", "join", "member_sid"]

"""A database served as a relay of a source OVSDB server (docs/relay.md).

``tegadb-server relay:DB:REMOTE[,REMOTE...]`` keeps a copy of the source's
database DB in memory, following it with ``monitor_cond_since`` through
``client.follower.Follower``, and serves it as a local database: monitors
(of every flavour, resuming against the relay's own history), read-only
transactions, ``get_schema`` and ``_Server`` run here.  What needs the
source goes to it:

- a transaction with any op but ``select``, ``comment`` and ``abort`` (a
  write, a ``wait``, an ``assert``, a ``commit``) is forwarded, and its reply
  goes back only once the copy holds what it committed: the source sends a
  session its monitor updates before a reply (PROTOCOL.md 1.6), so on the
  follower's own connection the update has been applied when the reply
  comes; a reply from another connection (a lock holder's, below) is
  followed by an empty transaction on the follower's, whose reply comes
  after the update;
- ``lock``, ``steal`` and ``unlock`` go to the source over one connection per
  client that locks (``RelayLocks``): the source sees each client as its own
  session, so its queue, ``locked``/``stolen`` and ``assert`` work as they do
  for its direct clients.  That client's transactions are forwarded over its
  connection (an ``assert`` is checked against the session that locked).
  Relays of different sources in one server refuse locks: which server a
  lock means is ambiguous;
- a client's ``cancel`` of a forwarded transaction becomes a ``cancel`` of
  its id at the source, on the connection it went over; the source's answer
  ("canceled", or the outcome if it had already run) is the client's.

Each update from the source is applied to the copy as one transaction with
the source's transaction id (a fresh one where the source reports none, as a
standalone ovsdb-server does), so the relay's own clients can resume after
it.  A full resync (the source could not resume) is diffed against the copy:
clients see only what really changed.  A schema change on the source
(``convert``) is followed as a local conversion is (ServerDatabases.switch_schema).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import ujson

from ..client.connection import Connection, Notification, RPCError
from ..client.follower import Follower
from ..core import changesets, values
from ..core.database import Database
from ..core.errors import OVSDBError, syntax_error
from ..core.history import History
from ..core.ids import new_txn_id
from ..core.schema import DbSchema
from ..core.tables import Row, Table
from ..core.types import UNLIMITED, ZERO_UUID
from ..protocol.remotes import parse_active
from .service import ClientSession, DatabaseService, ServerDatabases
from .storage import MemoryStorage

log = logging.getLogger("tegadb.relay")

# Ops a relay runs on its copy; a transaction with any other goes to the source.
LOCAL_OPS = frozenset(("select", "comment", "abort"))
# How long a starting server waits for each relay's first copy before it
# listens anyway (its databases then report connected false).
FIRST_SYNC_TIMEOUT = 5.0


def parse_relay(text: str) -> tuple[str, list[str]]:
    """``relay:DB:REMOTE[,REMOTE...]`` -> (DB, remotes); ValueError naming what is wrong."""
    if not text.startswith("relay:"):
        raise ValueError(f"{text}: not a relay (relay:DBNAME:REMOTE[,REMOTE...])")
    name, _, remotes = text[len("relay:"):].partition(":")
    if not name or not remotes:
        raise ValueError(f"{text}: expected relay:DBNAME:REMOTE[,REMOTE...]")
    if name.startswith("_"):
        raise ValueError(f'{text}: database names beginning with "_" are reserved')
    sources = [r for r in remotes.split(",") if r]
    for source in sources:
        try:
            parse_active(source)
        except ValueError as e:
            raise ValueError(f"{text}: {e}") from None
    return name, sources


def placeholder_schema(name: str) -> DbSchema:
    """What a relay serves before it first reaches its source: no tables."""
    return DbSchema.from_json({"name": name, "version": "0.0.0", "tables": {}})


# --- updates from the source as changes to the copy --------------------------------

def _stored_row(row_json: dict[str, Any]) -> dict[str, Any]:
    """An update2 ``initial``/``insert`` row as a log record stores a new row
    (default columns left out, as both do; ``_version`` as bare text)."""
    version = row_json.get("_version")
    if version is None:
        return row_json
    return {**row_json, "_version": version[1]}


def _modified(table: Table, old: Row, change: dict[str, Any]) -> dict[str, Any]:
    """An update2 ``modify`` as a log record stores a modified row: the changed
    columns' full new values."""
    stored: dict[str, Any] = {}
    for column, json in change.items():
        if column == "_version":
            stored[column] = json[1]
            continue
        type_ = table.types.get(column)
        if type_ is None:
            raise OVSDBError("syntax error", f"No column {column} in table {table.name}.")
        if type_.is_composite:
            diff = values.parse_unchecked(type_.relaxed(0, UNLIMITED), json)
            stored[column] = table.encoders[column](values.apply_diff(type_, old[column], diff))
        else:
            stored[column] = json
    return stored


def record_of_update(database: Database, updates: dict[str, Any]) -> dict[str, Any]:
    """An update3's ``<table-updates2>`` as the changes of a log record
    (changesets.apply_changes_json applies them)."""
    record: dict[str, Any] = {}
    for name, rows in updates.items():
        table = database.tables.get(name)
        if table is None:
            raise OVSDBError("syntax error", f"No table named {name}.")
        out = record[name] = {}
        for uuid, change in rows.items():
            if "modify" in change:
                old = table.rows.get(uuid)
                if old is None:
                    raise OVSDBError("syntax error",
                                     f"modify of row {uuid} of table {name}, which the copy lacks")
                out[uuid] = _modified(table, old, change["modify"])
            elif "delete" in change:
                out[uuid] = None
            else:
                out[uuid] = _stored_row(change.get("insert") or change.get("initial") or {})
    return record


def record_of_resync(database: Database, contents: dict[str, Any]) -> dict[str, Any]:
    """Full contents (``initial`` rows) as the changes that turn the copy into
    them: rows gone, rows new, and only the columns that differ."""
    record: dict[str, Any] = {}
    for name, table in database.tables.items():
        rows = contents.get(name) or {}
        out: dict[str, Any] = {}
        for uuid in table.rows.keys() - rows.keys():
            out[uuid] = None
        for uuid, change in rows.items():
            stored = _stored_row(change.get("initial") or change.get("insert") or {})
            old = table.rows.get(uuid)
            if old is None:
                out[uuid] = stored
                continue
            new = dict(table.defaults)
            for column, json in stored.items():
                parser = table.replay_parsers.get(column)
                if parser is None:
                    raise OVSDBError("syntax error", f"No column {column} in table {name}.")
                new[column] = parser.parse(json, None)
            changed = {c: (v[0] if c == "_version" else table.encoders[c](v))
                       for c, v in new.items()
                       if c != "_uuid" and (c != "_version" or "_version" in stored)
                       and old[c] != v}
            if changed:
                out[uuid] = changed
        if out:
            record[name] = out
    unknown = contents.keys() - database.tables.keys()
    if unknown:
        raise OVSDBError("syntax error", f"No table named {sorted(unknown)[0]}.")
    return record


# --- the service ------------------------------------------------------------------

class RelayService(DatabaseService):
    """One database served as a relay: the copy, and the follower's UpdateSink."""

    # Set by create (not __init__, which DatabaseService's constructors call).
    remotes: list[str]
    synced: bool                  # the copy holds the source's contents
    connected: bool               # the follower is connected to the source
    databases: ServerDatabases | None
    follower: Follower | None
    following: asyncio.Task[None] | None
    first_sync: asyncio.Event
    forwarded: dict[tuple[int, str], _Forwarded]
    in_flight: dict[int, int]     # per session (id): its forwarded transactions not answered
    locks: RelayLocks | None

    @classmethod
    def create(cls, name: str, remotes: list[str], history: History | None = None,
               ) -> RelayService:
        """A relay of ``name`` at ``remotes``, empty until ``follow`` reaches the source."""
        schema = placeholder_schema(name)
        service = cls(schema, Database(schema), MemoryStorage(schema.to_json(), f"relay {name}"),
                      history)
        service.remotes = remotes
        service.synced = False
        service.connected = False
        service.databases = None
        service.follower = None
        service.following = None
        service.first_sync = asyncio.Event()
        service.forwarded = {}
        service.in_flight = {}
        service.locks = None
        return service

    @property
    def source(self) -> str:
        return ",".join(self.remotes)

    def follow(self, databases: ServerDatabases, ssl_context: ssl.SSLContext | None) -> None:
        """Start following the source; ``databases`` serves this relay."""
        self.databases = databases
        self.follower = Follower(self.remotes, self.name, self, ssl_context=ssl_context)
        self.following = asyncio.get_running_loop().create_task(self.follower.run())

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.close()
        if self.following is not None:
            await self.following

    def server_state(self) -> dict[str, Any]:
        # Every source forwards writes (a cluster's follower to its leader, a
        # relay to its source), and the follower leaves a source that says
        # it is not connected: the relay takes writes while it follows, and
        # is a "leader" to leader-only clients (ovs-vsctl, ovn-nbctl, IDLs).
        # Those refuse any row whose model is "relay", whatever its leader
        # (lib/ovsdb-cs.c 3.1.0 line 1992, ovs/db/idl.py 4.0.0 line 1133):
        # the relay says "clustered", which they judge on connected and
        # leader, as it behaves (docs/relay.md, "_Server").
        state: dict[str, Any] = {"model": "clustered", "connected": self.connected,
                                 "leader": self.connected}
        if not self.synced:
            state["schema"] = ["set", []]  # clients wait for the real one
        return state

    # --- UpdateSink: what the follower reports ---------------------------------------
    # A failure to apply raises: the follower then starts again from nothing,
    # and the resync's diff repairs the copy (each row applies whole or not).
    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        """A (re)connection's ``monitor_cond_since`` reply."""
        schema = DbSchema.from_json(schema_json)
        if not self.synced or schema.to_json() != self.schema_json:
            self._adopt(schema, updates, last_id)
        elif found:
            self._apply(record_of_update(self.database, updates), last_id)
        else:
            # The source could not resume from the copy's id: a new epoch,
            # whose id the copy must not have seen (the history keys on it).
            self._apply(record_of_resync(self.database, updates), ZERO_UUID)
        self.synced = True
        self._set_connected(True)
        self.first_sync.set()

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        """An ``update3`` from the source, in order."""
        self._apply(record_of_update(self.database, updates), last_id)

    def disconnected(self) -> None:
        self._set_connected(False)

    def _txn_id(self, last_id: str) -> str:
        """The source's id for what it committed; a fresh one where it gives
        none (standalone ovsdb-server: all zeros) or one the copy already has."""
        if last_id == ZERO_UUID or last_id == self.last_txn:
            return new_txn_id()
        return last_id

    def _apply(self, record: dict[str, Any], last_id: str) -> None:
        if any(record.values()):
            self.apply_committed(self.seq + 1, self._txn_id(last_id), record)

    def _adopt(self, schema: DbSchema, contents: dict[str, Any], last_id: str) -> None:
        """The source's schema (first contact, or a conversion there) and contents."""
        database = Database(schema)
        txn = self._txn_id(last_id)
        changesets.apply_changes_json(
            database, txn, {name: {uuid: _stored_row(row.get("initial") or {})
                                   for uuid, row in rows.items()}
                            for name, rows in contents.items()})
        if self.synced:
            log.info("%s: the source (%s) changed the schema to version %s", self.name,
                     self.source, schema.version or "(none)")
        assert self.databases is not None
        for session in self.databases.switch_schema(self, schema, database, self.seq + 1, txn):
            session.disconnect()

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        log.info("%s: %s the source (%s)", self.name,
                 "following" if connected else "lost", self.source)
        if self.databases is not None:
            self.databases.state_changed(self)

    # --- transactions ---------------------------------------------------------------
    def transact(self, session: ClientSession, request_id: Any, dialect: int,
                 ops: list[Any]) -> list[Any] | None:
        """Run a read on the copy; forward anything else (None: answered later).

        A read that follows a client's forwarded transaction still in flight
        is forwarded too, behind it: it must see that write, as on the source.
        """
        client = id(session)
        if (all(type(op) is dict and op.get("op") in LOCAL_OPS for op in ops)
                and not self.in_flight.get(client)):
            return super().transact(session, request_id, dialect, ops)
        key = (client, _id_key(request_id))
        if key in self.forwarded:
            raise syntax_error("transact: duplicate request ID", [self.name, *ops])
        forwarded = _Forwarded(dialect)
        task = asyncio.get_running_loop().create_task(
            self._forward(session, request_id, forwarded, ops))
        forwarded.task = task
        self.forwarded[key] = forwarded
        if client not in self.in_flight:
            session.cleanups.append(lambda: self._forget_session(session))
        self.in_flight[client] = self.in_flight.get(client, 0) + 1

        def forget(_: object) -> None:
            if self.forwarded.get(key) is forwarded:
                del self.forwarded[key]
            left = self.in_flight.get(client, 0) - 1
            if left > 0:
                self.in_flight[client] = left
            elif client in self.in_flight:
                self.in_flight[client] = 0  # kept: the session's cleanup is registered

        task.add_done_callback(forget)
        return None

    def _forget_session(self, session: ClientSession) -> None:
        """The client is gone: its forwarded transactions are canceled at the
        source (a blocking ``wait`` would stay parked there) and not waited for."""
        self.in_flight.pop(id(session), None)
        for key, forwarded in list(self.forwarded.items()):
            if key[0] == id(session):
                forwarded.cancel_at_source()
                forwarded.stop()

    async def _forward(self, session: ClientSession, request_id: Any, forwarded: _Forwarded,
                       ops: list[Any]) -> None:
        # Every relay of the server has the locks' source (RelayLocks).
        link = self.locks.links.get(session) if self.locks is not None else None
        params = [self.name, *ops]
        dialect = forwarded.dialect
        sent = False
        try:
            if self.follower is None or not self.connected:
                raise ConnectionError
            sent = True
            if link is None:
                result = await self.follower.request("transact", params, forwarded.sent)
            else:
                # A lock holder's transaction goes where its locks are (its
                # asserts); its update comes on the follower's connection,
                # before the source answers this there.
                result = await link.request("transact", params, forwarded.sent)
                await self.follower.request("transact", [self.name])
        # One handler, then isinstance: mypyc-compiled handlers that bind
        # ``as e`` mis-type exceptions raised through awaits (as in cluster.py).
        except Exception as e:
            if isinstance(e, RPCError):
                error: Any = e.error       # the source's own error, unchanged
            elif not isinstance(e, (ConnectionError, OSError)):
                raise
            elif sent:
                error = {"error": "not connected",
                         "details": f"{self.name}: the relay lost its source ({self.source}) "
                                    "before the answer: the transaction may or may not have "
                                    "been committed"}
            else:
                error = self.not_connected("a transaction that writes, waits or asserts")
            if not session.closed:
                session.reply_error(request_id, error, dialect)
            return
        if not session.closed:
            session.reply(request_id, result, dialect)

    def not_connected(self, what: str) -> dict[str, Any]:
        """The error for ``what`` while the source cannot be reached."""
        return {"error": "not connected",
                "details": f"{what} on {self.name} needs its source ({self.source}), "
                           "and the relay is not connected to it"}

    def cancel(self, session: ClientSession, request_id: Any) -> bool:
        """A client's ``cancel``.  A forwarded transaction is canceled at the
        source, and the client gets the source's answer: "canceled", or the
        outcome if it had already run there (a "canceled" reply must mean it
        did not commit).  One not sent yet is dropped here."""
        key = (id(session), _id_key(request_id))
        forwarded = self.forwarded.get(key)
        if forwarded is None:
            return super().cancel(session, request_id)
        if forwarded.at_source is None:
            del self.forwarded[key]
            forwarded.stop()
            session.reply_error(request_id, "canceled", forwarded.dialect)
        else:
            forwarded.cancel_at_source()
        return True

    def converted(self, schema: DbSchema) -> Database:
        raise OVSDBError("not allowed", f"{self.name} is a relay: convert it on its source "
                         f"({self.source})")

    def flush(self) -> None:
        return None  # nothing is stored: the source keeps the log

    def compact(self) -> None:
        return None

    def close(self) -> None:
        for forwarded in list(self.forwarded.values()):
            forwarded.stop()
        super().close()


class _Forwarded:
    """A client's transaction forwarded to the source, until it is answered."""

    def __init__(self, dialect: int) -> None:
        self.dialect = dialect
        self.task: asyncio.Task[None] | None = None
        # The connection it went on and its id there, once written.
        self.at_source: tuple[Connection, int] | None = None

    def sent(self, connection: Connection, source_id: int) -> None:
        self.at_source = (connection, source_id)

    def cancel_at_source(self) -> None:
        """Send the source a ``cancel`` for it; it answers on the same
        connection.  Nothing to do once that connection is gone: the source
        dropped the transaction with it."""
        if self.at_source is not None and not self.at_source[0].closed.done():
            _spawn(_send_cancel(*self.at_source))

    def stop(self) -> None:
        """Stop waiting for the answer."""
        if self.task is not None:
            self.task.cancel()


async def _send_cancel(connection: Connection, source_id: int) -> None:
    try:
        await connection.notify("cancel", [source_id])
    except (ConnectionError, OSError):
        pass  # the connection went meanwhile, and the transaction with it


# --- locks ------------------------------------------------------------------------

class _LockLink:
    """One locking client's own connection to the source.  Notices that come
    while a lock request is in flight wait until its reply went out."""

    def __init__(self, remote: str, ssl_context: ssl.SSLContext | None,
                 on_notice: Callable[[str, str], None],
                 on_lost: Callable[[bool], None]) -> None:
        self.remote = remote
        self.on_notice = on_notice
        self.on_lost = on_lost
        self.in_flight = 0
        self.held: list[tuple[str, str]] = []
        self.closing = False
        self.opened = asyncio.get_running_loop().create_task(self._open(ssl_context))
        self.opened.add_done_callback(self._watch)

    async def _open(self, ssl_context: ssl.SSLContext | None) -> Connection:
        connection = await Connection.open(self.remote, ssl_context, self._received)
        try:
            # ovsdb-server answers a "cancel" only on a change-aware session.
            await connection.request("set_db_change_aware", [True])
        except RPCError:
            pass  # as the follower: every server with monitor_cond_since has it
        except BaseException:
            await connection.close()
            raise
        return connection

    async def request(self, method: str, params: list[Any],
                      sent: Callable[[Connection, int], None] | None = None) -> Any:
        # Shielded: a canceled request must not cancel the opening the
        # client's other requests share.
        connection = await asyncio.shield(self.opened)
        if sent is None:
            return await connection.request(method, params)
        return await connection.request(method, params, functools.partial(sent, connection))

    def _watch(self, opened: asyncio.Task[Connection]) -> None:
        if opened.cancelled() or opened.exception() is not None:
            self._lost(False)
        else:
            opened.result().closed.add_done_callback(lambda _: self._lost(True))

    def _lost(self, was_open: bool) -> None:
        """The connection could not be made, or ended (``was_open``)."""
        if not self.closing:
            self.closing = True
            self.on_lost(was_open)

    def _received(self, notification: Notification) -> None:
        params = notification.params
        if notification.method not in ("locked", "stolen") or len(params) != 1:
            return
        if self.in_flight:
            self.held.append((notification.method, params[0]))
        else:
            self.on_notice(notification.method, params[0])

    def answered(self) -> None:
        """A lock request's reply went out: the notices held for it follow."""
        self.in_flight -= 1
        if not self.in_flight:
            held, self.held = self.held, []
            for notice, name in held:
                self.on_notice(notice, name)

    def close(self) -> None:
        self.closing = True
        if not self.opened.done():
            self.opened.cancel()
        elif not self.opened.cancelled() and self.opened.exception() is None:
            _spawn(self.opened.result().close())


class RelayLocks:
    """The server's locks kept at its relays' source (PROTOCOL.md 6), in
    ``ServerDatabases.cluster_locks``'s place: one connection to the source per
    client that locks, so the source queues each client as its own session.
    That client's transactions on every relay database go over it.

    A lock belongs to one server: when the relays' sources differ (another
    set of SOURCEs), which one a lock means is ambiguous, and ``lock`` and
    ``steal`` are refused (docs/relay.md, "Locks").

    A client whose connection to the source is lost has lost its locks there:
    the relay disconnects it, as the source would have.
    """

    def __init__(self, relays: list[RelayService], ssl_context: ssl.SSLContext | None,
                 notify: Callable[[Any, str, str], None]) -> None:
        self.relays = relays
        self.ssl_context = ssl_context
        self.notify = notify
        self.links: dict[Any, _LockLink] = {}
        self.records: set[tuple[Any, str]] = set()
        self.owned: set[tuple[Any, str]] = set()
        self.ambiguous = len({frozenset(relay.remotes) for relay in relays}) > 1
        self.label = ",".join(relay.name for relay in relays)  # for the log

    def _refusal(self, method: str) -> dict[str, Any]:
        sources = "; ".join(f"{relay.name} from {relay.source}" for relay in self.relays)
        return {"error": "not allowed",
                "details": f'"{method}": this server relays databases of different sources '
                           f"({sources}), and a lock belongs to one server: serve each "
                           "source's relays from a tegadb-server of their own"}

    def has_record(self, holder: Any, name: str) -> bool:
        return (holder, name) in self.records

    def owner_is(self, holder: Any, name: str) -> bool:
        return (holder, name) in self.owned

    def lock(self, holder: Any, name: str) -> asyncio.Future[bool]:
        return self._acquire(holder, name, "lock")

    def steal(self, holder: Any, name: str) -> asyncio.Future[bool]:
        return self._acquire(holder, name, "steal")

    def unlock(self, holder: Any, name: str) -> None:
        self.records.discard((holder, name))
        self.owned.discard((holder, name))
        link = self.links.get(holder)
        if link is not None:
            _spawn(self._unlock(link, name))

    def release_all(self, holder: Any, names: list[str]) -> None:
        """A client is gone: closing its connection releases its locks at the source."""
        for name in names:
            self.records.discard((holder, name))
            self.owned.discard((holder, name))
        link = self.links.pop(holder, None)
        if link is not None:
            link.close()

    def _acquire(self, holder: Any, name: str, method: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        if self.ambiguous:
            answer.set_exception(RPCError(self._refusal(method)))
            return answer
        self.records.add((holder, name))
        link = self.links.get(holder) or self._open_link(holder)
        if link is None:
            self.records.discard((holder, name))
            answer.set_exception(RPCError(self.relays[0].not_connected(f'"{method}"')))
            return answer
        link.in_flight += 1
        _spawn(self._ask(link, holder, name, method, answer))
        return answer

    def _open_link(self, holder: Any) -> _LockLink | None:
        """A link to the source, where one of the relays follows it now."""
        remote = next((relay.follower.remote for relay in self.relays
                       if relay.connected and relay.follower is not None
                       and relay.follower.remote is not None), None)
        if remote is None:
            return None
        link = _LockLink(remote, self.ssl_context,
                         lambda notice, name: self._notice(holder, notice, name),
                         lambda was_open: self._lost(holder, was_open))
        self.links[holder] = link
        return link

    async def _ask(self, link: _LockLink, holder: Any, name: str, method: str,
                   answer: asyncio.Future[bool]) -> None:
        try:
            result = await link.request(method, [name])
        except Exception as e:  # one handler: see RelayService._forward
            if not isinstance(e, (RPCError, ConnectionError, OSError)):
                raise
            self.records.discard((holder, name))
            if not isinstance(e, RPCError):
                log.warning("%s: %s at %s: %s", self.label, method, link.remote, e)
                e = RPCError(self.relays[0].not_connected(f'"{method}"'))
            answer.set_exception(e)
        else:
            locked = bool(isinstance(result, dict) and result.get("locked"))
            if locked:
                self.owned.add((holder, name))
            answer.set_result(locked)
        # After the answer's callbacks (the reply): the notices held meanwhile.
        asyncio.get_running_loop().call_soon(link.answered)

    async def _unlock(self, link: _LockLink, name: str) -> None:
        try:
            await link.request("unlock", [name])
        except Exception as e:  # one handler: see RelayService._forward
            if not isinstance(e, (RPCError, ConnectionError, OSError)):
                raise
            log.warning("%s: unlock at %s: %s", self.label, link.remote, e)

    def _notice(self, holder: Any, notice: str, name: str) -> None:
        if (holder, name) not in self.records:
            return
        if notice == "locked":
            self.owned.add((holder, name))
        else:
            self.owned.discard((holder, name))
        self.notify(holder, notice, name)

    def _lost(self, holder: Any, was_open: bool) -> None:
        """A holder's connection to the source is gone.  One that never opened
        held nothing there (its requests fail "not connected")."""
        if self.links.pop(holder, None) is None or not was_open:
            return
        log.warning("%s: lost %s's connection to the source: disconnecting it (its locks "
                    "are gone there)", self.label, getattr(holder, "peer", holder))
        for key in [k for k in self.records if k[0] is holder]:
            self.records.discard(key)
            self.owned.discard(key)
        holder.disconnect()


async def start_relays(databases: ServerDatabases, relays: list[RelayService],
                       ssl_context: ssl.SSLContext | None,
                       notify: Callable[[Any, str, str], None]) -> None:
    """Follow every relay's source, and keep the server's locks there
    (RelayLocks); returns once each copy is there, or after FIRST_SYNC_TIMEOUT."""
    databases.cluster_locks = RelayLocks(relays, ssl_context, notify)
    for service in relays:
        service.locks = databases.cluster_locks
        service.follow(databases, ssl_context)
    waits = [asyncio.ensure_future(s.first_sync.wait()) for s in relays]
    _, pending = await asyncio.wait(waits, timeout=FIRST_SYNC_TIMEOUT)
    for wait in pending:
        wait.cancel()
    for service in relays:
        if not service.synced:
            assert service.follower is not None
            log.warning("%s: no copy of the source (%s) yet: serving it as not connected "
                        "(%s)", service.name, service.source,
                        service.follower.last_error or "no answer")


# Tasks nothing awaits, kept until done (the loop holds only weak references).
_background: set[asyncio.Task[Any]] = set()


def _spawn(coroutine: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _id_key(request_id: Any) -> str:
    return ujson.dumps(request_id, sort_keys=True)


__all__ = ["RelayLocks", "RelayService", "parse_relay", "record_of_resync",
           "record_of_update", "start_relays"]

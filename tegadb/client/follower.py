"""Following a database on an OVSDB server: the machinery under the replica and the relay.

A `Follower` connects to one of several remotes, checks the database's row in
``_Server`` (as the ovs IDL does), fetches the schema and ``monitor_cond_since``s
the chosen tables and columns with the last transaction id it holds.  It hands
what the server sends to an `UpdateSink`, in order, and keeps doing so across
disconnects: back-off, the next remote, resume from the last transaction id
(tegadb then sends only what was missed; standalone ovsdb-server answers
found=false and sends everything).

Rules:
- Per connection the sink sees ``start`` once (the ``monitor_cond_since``
  reply), then ``update`` for each ``update3``, in order, then
  ``disconnected`` once when that connection ends.  Nothing reaches it from
  a connection that failed before ``start``.
- Updates are applied as the connection's read loop receives them, so when
  the reply to a `request` arrives, every update the server sent before it
  (the commit of one's own transaction among them, PROTOCOL.md 5.9) is
  already in the sink.
- A schema change on the source (``monitor_canceled``, or a new ``schema`` in
  the ``_Server`` row) ends the session; the next one fetches the schema
  again and asks for everything (last id zero).  So does a sink that fails
  to apply an update, or a condition changed while disconnected.
- With ``leader_only``, a source whose ``_Server`` row says ``leader: false``
  (or ``connected: false``) is left for the next remote.
- A source that goes silent is probed with ``echo`` every ``probe_interval``
  seconds and left when a probe gets no answer in that time.
- Connection trouble never raises out of `run`: it is logged with the remote
  and the reason, and kept in ``last_error``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core.types import ZERO_UUID
from ..protocol.framer import ProtocolError
from ..protocol.remotes import parse_active
from .connection import Connection, Notification, RPCError

if TYPE_CHECKING:
    import ssl

DATA_MONITOR = "tegadb-follower"
SERVER_MONITOR = "tegadb-follower-_Server"
SERVER_COLUMNS = ["name", "model", "connected", "leader", "schema"]

log = logging.getLogger(__name__)


class UpdateSink(Protocol):
    """Where a `Follower` puts what it receives."""

    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        """After each (re)connect, the ``monitor_cond_since`` reply.

        found=False: ``updates`` is the whole contents (``initial`` rows) and
        replaces the copy; found=True: only what was missed.  ``schema_json``
        may differ from the last one (a schema change on the source).
        """

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        """One ``update3`` notification's table updates."""

    def disconnected(self) -> None:
        """The connection was lost: the copy is kept but stale."""


class SourceError(Exception):
    """A source that cannot be followed now: it lacks the database, is not the
    leader, or answered something that is not OVSDB."""


@dataclass(frozen=True)
class _End:
    """Why a session ended, and whether the next one should stay on the same
    remote and resynchronize from scratch."""

    reason: str
    resync: bool = False


class Follower:
    """Keeps an `UpdateSink` current with one database of a source; see the module doc.

    ``tables`` maps each table to follow to its columns (an empty list: every
    column); None follows every table and column.  ``conditions`` maps tables
    to ``where`` clauses (ORed, as in ``monitor_cond``).  Notifications other
    than the monitors' own (``locked``, ``stolen``...) go to ``on_notification``.
    """

    def __init__(self, remotes: list[str], database: str, sink: UpdateSink, *,
                 tables: dict[str, list[str]] | None = None,
                 conditions: dict[str, list[Any]] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 on_notification: Callable[[str, list[Any]], None] | None = None,
                 leader_only: bool = False,
                 backoff: tuple[float, float] = (0.1, 4.0),
                 setup_timeout: float = 10.0,
                 probe_interval: float | None = 5.0) -> None:
        if not remotes:
            raise ValueError("a Follower needs at least one remote")
        for remote in remotes:  # a bad remote is the caller's error, reported now
            if parse_active(remote).uses_tls and ssl_context is None:
                raise ValueError(f"{remote}: ssl: remotes need an SSL context (key, certificate, CA)")
        if tables is not None and conditions:
            unknown = sorted(set(conditions) - set(tables))
            if unknown:
                raise ValueError(f"conditions name tables that are not followed: {', '.join(unknown)}")
        self.remotes = list(remotes)
        self.database = database
        self.sink = sink
        self.connected = False
        self.last_id = ZERO_UUID
        self.remote: str | None = None
        self.schema_json: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._tables = tables
        self._conditions: dict[str, list[Any]] = dict(conditions or {})
        self._ssl_context = ssl_context
        self._on_notification = on_notification
        self._leader_only = leader_only
        self._backoff = backoff
        self._setup_timeout = setup_timeout
        self._probe_interval = probe_interval
        self._connection: Connection | None = None
        self._session_task: asyncio.Task[tuple[bool, _End]] | None = None
        self._end: asyncio.Future[_End] | None = None
        self._early_updates: list[list[Any]] | None = None  # update3s received before `start`
        self._server_row: dict[str, Any] = {}
        self._resync_next = False
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()

    # --- public API ---------------------------------------------------------

    async def run(self) -> None:
        """Follow the source until `close`, connecting again after every loss."""
        index = 0
        delay = self._backoff[0]
        resynced = False  # the last session ended asking for a resync
        while not self._stopping.is_set():
            remote = self.remotes[index % len(self.remotes)]
            self._session_task = asyncio.create_task(self._follow(remote))
            try:
                started, end = await self._session_task
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    break  # `close` cut a connect or set-up short
                raise
            if self._stopping.is_set():
                break
            self.last_error = f"{remote}: {end.reason}"
            log.warning("%s: database %s: %s", remote, self.database, end.reason)
            if end.resync:
                # The source is fine: follow its new contents at once, but only
                # once in a row, so that a sink that keeps failing does not spin.
                if not resynced:
                    resynced = True
                    continue
            else:
                index += 1
                if started:
                    delay = self._backoff[0]
            resynced = end.resync
            await self._sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    @property
    def server_row(self) -> dict[str, Any]:
        """The source's ``_Server`` row for the database, as last seen (``name``,
        ``model``, ``connected``, ``leader``, ``schema``); empty when the source
        has no ``_Server``.  A relay reports ``leader`` from it."""
        if not self._server_row:
            return {}
        return {"connected": False, "leader": False, **self._server_row}

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until the sink has had its ``start`` on a live connection (TimeoutError after ``timeout``)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def request(self, method: str, params: list[Any],
                      sent: Callable[[Connection, int], None] | None = None) -> Any:
        """A request on the current connection; ConnectionError when there is none.

        Every update the server sends before the reply is in the sink when it
        returns.  ``sent`` is called with the connection and the request's id
        there once it is written (what a ``cancel`` of it must name).
        """
        connection = self._connection
        if connection is None or not self.connected:
            raise ConnectionError(f"not connected to a source of database {self.database}")
        if sent is None:
            return await connection.request(method, params)
        return await connection.request(method, params, functools.partial(sent, connection))

    async def cond_change(self, conditions: dict[str, list[Any]]) -> None:
        """New ``where`` clauses for the listed tables (others keep theirs).

        On a live monitor the server sends the rows that start or stop
        matching as one update before it answers; while disconnected, the
        next connection asks for everything under the new conditions.
        """
        if self._tables is not None:
            unknown = sorted(set(conditions) - set(self._tables))
            if unknown:
                raise ValueError(f"cond_change names tables that are not followed: {', '.join(unknown)}")
        self._conditions.update(conditions)
        change = {table: [{"where": where}] for table, where in conditions.items()}
        try:
            await self.request("monitor_cond_change", [DATA_MONITOR, DATA_MONITOR, change])
        except ConnectionError:
            self._resync_next = True

    async def close(self) -> None:
        """Stop following; `run` returns."""
        self._stopping.set()
        self._finish("closed")
        if self._session_task is not None and not self.connected:
            self._session_task.cancel()  # connecting or setting up: that may take setup_timeout
        if self._connection is not None:
            await self._connection.close()

    # --- one session ----------------------------------------------------------

    async def _follow(self, remote: str) -> tuple[bool, _End]:
        """One connection to ``remote``, from connect to its end: (whether the
        sink was started, why it ended)."""
        loop = asyncio.get_running_loop()
        end: asyncio.Future[_End] = loop.create_future()
        self._end = end
        self._early_updates = []
        try:
            connection = await asyncio.wait_for(
                Connection.open(remote, self._ssl_context, functools.partial(self._received, end)),
                self._setup_timeout)
        except (OSError, TimeoutError, ValueError) as e:
            return False, _End(f"cannot connect: {_describe(e)}")
        self._connection = connection
        connection.closed.add_done_callback(
            lambda closed: self._finish(f"connection lost: {_describe(closed.result())}", session=end))
        try:
            try:
                found, updates = await asyncio.wait_for(self._subscribe(connection),
                                                        self._setup_timeout)
            except (RPCError, SourceError, ConnectionError, OSError, ProtocolError,
                    TimeoutError) as e:
                return False, end.result() if end.done() else _End(_describe(e))
            if end.done():
                return False, end.result()
            self._start(remote, found, updates)
            return True, await self._until_end(connection, end)
        finally:
            self._connection = None
            if self.connected:
                self.connected = False
                self._connected.clear()
                self.sink.disconnected()
            await connection.close()

    async def _until_end(self, connection: Connection, end: asyncio.Future[_End]) -> _End:
        """Wait for the session's end, probing the source with ``echo`` as OVS
        peers do: a source that stopped answering (a host gone without
        closing its connections) is left after two probe intervals."""
        interval = self._probe_interval
        while not end.done():
            done, _ = await asyncio.wait({end}, timeout=interval)
            if done or interval is None:
                break
            try:
                await asyncio.wait_for(connection.request("echo", []), interval)
            except TimeoutError:
                self._finish(f"no answer to an echo probe in {interval} s")
            except (ConnectionError, OSError, ProtocolError, RPCError) as e:
                self._finish(f"echo probe failed: {_describe(e)}")
        return end.result()

    async def _subscribe(self, connection: Connection) -> tuple[bool, dict[str, Any]]:
        """The requests that set a session up; the ``monitor_cond_since`` reply's
        found and updates (its last id is in ``last_id`` already)."""
        await self._watch_server(connection)
        try:
            await connection.request("set_db_change_aware", [True])
        except RPCError:
            pass  # an older server: a schema change then disconnects us instead
        schema_json = await connection.request("get_schema", [self.database])
        if not isinstance(schema_json, dict) or not isinstance(schema_json.get("tables"), dict):
            raise SourceError(f"get_schema answered something that is not a schema: {schema_json!r:.200}")
        last_id = ZERO_UUID if self._resync_next else self.last_id
        reply = await connection.request(
            "monitor_cond_since", [self.database, DATA_MONITOR, self._requests(schema_json), last_id])
        if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], bool)
                and isinstance(reply[1], str) and isinstance(reply[2], dict)):
            raise SourceError(f"monitor_cond_since reply is not [found, last-txn-id, updates]: "
                              f"{reply!r:.200}")
        self.schema_json = schema_json
        self.last_id = reply[1]
        return reply[0], reply[2]

    def _requests(self, schema_json: dict[str, Any]) -> dict[str, Any]:
        tables = self._tables if self._tables is not None else {name: [] for name in schema_json["tables"]}
        requests = {}
        for table, columns in tables.items():
            request: dict[str, Any] = {"columns": list(columns)} if columns else {}
            if table in self._conditions:
                request["where"] = self._conditions[table]
            requests[table] = [request]
        return requests

    async def _watch_server(self, connection: Connection) -> None:
        """Monitor our database's ``_Server`` row and check it can be followed."""
        request = {"Database": [{"columns": SERVER_COLUMNS,
                                 "where": [["name", "==", self.database]]}]}
        try:
            initial = await connection.request("monitor_cond", ["_Server", SERVER_MONITOR, request])
        except RPCError as e:
            if self._leader_only:
                raise SourceError(f"the server has no _Server database to say who leads ({e})") from e
            self._server_row = {}
            return
        rows = initial.get("Database") if isinstance(initial, dict) else None
        if not rows:
            raise SourceError(f"the server does not have database {self.database}")
        row = next(iter(rows.values())) if isinstance(rows, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("initial"), dict):
            raise SourceError(f"the _Server monitor reply is not <table-updates2>: {initial!r:.200}")
        self._server_row = dict(row["initial"])
        problem = self._server_problem()
        if problem:
            raise SourceError(problem)

    def _server_problem(self) -> str | None:
        """Why the ``_Server`` row says this source should not be followed, if it does.
        (``initial`` rows omit default values: false, no schema.)"""
        row = self._server_row
        if not row.get("connected", False):
            return f"the server says database {self.database} is not connected (to its cluster or source)"
        if self._leader_only and not row.get("leader", False):
            return f"the server is not the leader for database {self.database} (leader-only)"
        return None

    def _start(self, remote: str, found: bool, updates: dict[str, Any]) -> None:
        assert self.schema_json is not None
        try:
            self.sink.start(self.schema_json, found, updates, self.last_id)
        except Exception as e:
            log.exception("%s: the sink failed to start from the monitor reply", remote)
            self._fail_sink(e)
            return
        self._resync_next = False
        self.remote = remote
        self.connected = True
        self._connected.set()
        early, self._early_updates = self._early_updates or [], None
        for params in early:
            self._apply(params)
        log.info("%s: following database %s (found=%s, last id %s)",
                 remote, self.database, found, self.last_id)

    # --- notifications (called by the connection's read loop) ----------------

    def _received(self, session: asyncio.Future[_End], notification: Notification) -> None:
        if session is not self._end or session.done():
            return  # a late message from a session already over
        method, params = notification.method, notification.params
        monitor = params[0] if isinstance(params, list) and params else None
        try:
            if method == "update3" and monitor == DATA_MONITOR:
                if self._early_updates is not None:
                    self._early_updates.append(params)
                else:
                    self._apply(params)
                return
            if method == "update2" and monitor == SERVER_MONITOR:
                self._server_update(params[1] if len(params) == 2 else None)
                return
        except Exception as e:  # a broken source must not break the connection's read loop
            log.exception("%s notification from the source of %s", method, self.database)
            self._finish(f"unreadable {method} notification: {_describe(e)}")
            return
        if method == "monitor_canceled":
            self._finish(f"the server canceled monitor {params} (schema change or database removed)",
                         resync=True)
        elif self._on_notification is not None:
            try:
                self._on_notification(method, params)
            except Exception:
                log.exception("the on_notification callback failed on %s %s", method, params)

    def _apply(self, params: list[Any]) -> None:
        if len(params) != 3 or not isinstance(params[1], str) or not isinstance(params[2], dict):
            self._finish(f"malformed update3 notification: {params!r:.200}")
            return
        try:
            self.sink.update(params[2], params[1])
        except Exception as e:
            log.exception("the sink failed to apply an update of database %s", self.database)
            self._fail_sink(e)
            return
        self.last_id = params[1]

    def _server_update(self, updates: Any) -> None:
        rows = updates.get("Database") if isinstance(updates, dict) else None
        if not isinstance(rows, dict):
            return
        old_schema = self._server_row.get("schema")
        for change in rows.values():
            if "delete" in change:
                self._finish(f"the server no longer serves database {self.database}")
                return
            self._server_row.update(change.get("insert") or change.get("modify") or {})
        if self._server_row.get("schema") != old_schema and _parsed(old_schema) != _parsed(
                self._server_row.get("schema")):
            self._finish("the database's schema changed on the server", resync=True)
            return
        problem = self._server_problem()
        if problem:
            self._finish(problem)

    def _fail_sink(self, error: Exception) -> None:
        """The copy may be damaged: start again from nothing."""
        self._finish(f"the sink could not apply what the server sent: {_describe(error)}", resync=True)

    def _finish(self, reason: str, resync: bool = False,
                session: asyncio.Future[_End] | None = None) -> None:
        """End ``session`` (by default the current one), for ``reason``."""
        session = session or self._end
        if session is None or session.done():
            return
        if resync:
            self._resync_next = True
        session.set_result(_End(reason, resync))

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass


def _parsed(schema_text: Any) -> Any:
    """The ``_Server`` row's schema string as JSON (servers differ in key order and spacing)."""
    try:
        return json.loads(schema_text) if isinstance(schema_text, str) else schema_text
    except ValueError:
        return schema_text


def _describe(error: BaseException) -> str:
    if isinstance(error, RPCError):
        return f"the server answered {json.dumps(error.error)[:300]}"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__

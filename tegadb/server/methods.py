"""The RPC methods and the per-session state behind them.

jsonrpcserver is the method registry and the result types for both dialects,
and dispatches JSON-RPC 2.0 requests. OVSDB's JSON-RPC 1.0 requests are the
hot path: after the wire layer's shape checks they look the method up in the
same registry and call it directly, skipping jsonrpcserver's per-request
schema validation (~96 us, against a budget of ~15 us per transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import ujson
from jsonrpcserver import Error, Result, Success, method
from jsonrpcserver.main import dispatch_to_response
from jsonrpcserver.methods import global_methods as METHODS
from oslash.either import Right  # type: ignore[import-untyped]

from ..core.errors import OVSDBError, syntax_error
from ..core.locks import Notice
from ..core.monitor import parse_cond_change, parse_monitor
from ..core.schema import DbSchema
from ..core.types import is_id
from ..protocol import wire

if TYPE_CHECKING:
    from ..core.monitor import Monitor
    from .service import DatabaseService, ServerDatabases

log = logging.getLogger("tegadb.server.methods")

# A method returns ANSWERED (Success(DEFERRED)) when it sends its reply
# itself, now or later (a parked transaction).
DEFERRED = object()
ANSWERED = Success(DEFERRED)

CODE_UNKNOWN_METHOD = -32601
CODE_INVALID = -32602
CODE_OVSDB = -32000


class Session:
    """One client's state: its dialect, pending transactions, locks, monitors."""

    def __init__(self, databases: ServerDatabases, peer: str,
                 write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.databases = databases
        self.peer = peer
        self.write = write
        self._close = close
        self.dialect = 0          # dialect of the first request; 0 until then
        self.request_id: Any = None
        self.request_dialect = 1
        self.closed = False
        self.change_aware = False
        self.lock_names: set[str] = set()
        self.cleanups: list[Callable[[], object]] = []
        self.monitors: dict[str, Monitor] = {}
        self.dirty = False          # some monitor may have an update to send
        self.backlogged = False     # the peer is not reading: hold updates back
        databases.sessions.add(self)

    # --- output -------------------------------------------------------------
    # Every message to the client goes out after the session's pending monitor
    # updates: a client then sees its own commit's update before the reply.
    def reply(self, request_id: Any, result: Any, dialect: int = 1) -> None:
        if self.dirty:
            self.flush_monitors(force=True)
        self.write(wire.encode_reply(request_id, result, dialect))

    def reply_error(self, request_id: Any, error: Any, dialect: int = 1) -> None:
        if self.dirty:
            self.flush_monitors(force=True)
        self.write(wire.encode_error(request_id, error, dialect))

    def notify(self, method_name: str, params: list[Any]) -> None:
        if self.dirty:
            self.flush_monitors(force=True)
        self._notify(method_name, params)

    def _notify(self, method_name: str, params: list[Any]) -> None:
        self.write(wire.encode_notification(method_name, params, self.dialect or 1))

    def flush_monitors(self, force: bool = False) -> None:
        """Send what the monitors have pending (unless the peer is backed up)."""
        if self.backlogged and not force:
            return
        self.dirty = False
        dialect = self.dialect or 1
        for monitor in self.monitors.values():
            update = monitor.take()
            if update is not None:
                self.write(wire.encode_notification_around(
                    monitor.method, monitor.head(), update.encoded(), dialect))

    # --- state ----------------------------------------------------------------
    def owns_lock(self, name: str) -> bool:
        return self.databases.locks.owner(name) is self

    def disconnect(self) -> None:
        """Drop the connection (the shell calls close() when it is gone)."""
        self._close()

    def close(self) -> None:
        """Forget everything this session held: the connection is gone."""
        if self.closed:
            return
        self.closed = True
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in cleanups:
            cleanup()
        send_notices(self.databases.locks.release_all(self, sorted(self.lock_names)))
        self.lock_names.clear()
        for monitor in self.monitors.values():
            monitor.cancel()
        self.monitors.clear()
        self.databases.sessions.discard(self)


def handle_message(session: Session, raw: Any) -> None:
    """Classify one parsed message and act on it (raises wire.ProtocolError)."""
    if type(raw) is dict and raw.get("jsonrpc") == "2.0" and "method" in raw:
        # jsonrpcserver validates JSON-RPC 2.0 requests itself, answering a
        # malformed one with a 2.0 error instead of dropping the connection.
        if not session.dialect:
            session.dialect = 2
        _dispatch_jsonrpc2(session, raw)
        return
    message = wire.classify(raw)
    kind = message.kind
    if kind == "request":
        if not session.dialect:
            session.dialect = message.dialect
        assert message.method is not None and message.params is not None
        call_method(session, message.method, message.params, message.id, 1)
    elif kind == "notification":
        if message.method == "cancel" and message.params is not None:
            cancel(session, message.params)
    elif message.id != "echo":
        raise wire.ProtocolError("received unexpected reply message")


def call_method(session: Session, name: str, params: list[Any], request_id: Any,
                dialect: int) -> None:
    """The OVSDB hot path: registry lookup and a direct call."""
    function = METHODS.get(name)
    if function is None:
        session.reply_error(request_id, "unknown method", dialect)
        return
    session.request_id = request_id
    session.request_dialect = dialect
    result = function(session, *params)
    if type(result) is Right:
        value = result._value.result
        if value is not DEFERRED:
            session.reply(request_id, value, dialect)
    else:
        session.reply_error(request_id, result._error.data, dialect)


def _dispatch_jsonrpc2(session: Session, raw: dict[str, Any]) -> None:
    """A JSON-RPC 2.0 request goes through jsonrpcserver's full dispatch."""
    request_id = raw.get("id")
    session.request_id = request_id
    session.request_dialect = 2
    response = dispatch_to_response(raw, METHODS, context=session,  # type: ignore[arg-type]
                                    deserializer=_already_parsed)
    if response is None:
        return
    assert not isinstance(response, list)  # one request in, one response out
    if type(response) is Right:
        if response._value.result is not DEFERRED:
            session.reply(request_id, response._value.result, 2)
        return
    # Our methods' errors carry the OVSDB error in data; jsonrpcserver's own
    # (invalid request, invalid params, method not found) come as they are.
    error = response._error
    data = "unknown method" if error.code == CODE_UNKNOWN_METHOD else error.data
    if session.dirty:
        session.flush_monitors(force=True)
    session.write(wire.encode_jsonrpc2_error(request_id, error.code, error.message, data))


def _already_parsed(request: Any) -> Any:
    """The wire layer has parsed the request already."""
    return request


def ovsdb_error(error: OVSDBError) -> Result:
    """An OVSDB error object as a jsonrpcserver Error (the object in ``data``)."""
    code = CODE_INVALID if error.tag in ("syntax error", "invalid parameters") else CODE_OVSDB
    return Error(code, error.tag, error.to_json())


def bare_error(text: str) -> Result:
    """One of the bare-string errors clients compare exactly."""
    code = CODE_UNKNOWN_METHOD if text == "unknown method" else CODE_OVSDB
    return Error(code, text, text)


def lookup_database(session: Session, method_name: str, params: tuple[Any, ...],
                    ) -> DatabaseService:
    if not params or not isinstance(params[0], str):
        raise syntax_error(f"{method_name} request params must begin with <db-name>",
                           list(params))
    service = session.databases.get(params[0])
    if service is None:
        raise OVSDBError("unknown database",
                         f"{method_name} request specifies unknown database {params[0]}",
                         list(params))
    return service


# --- methods ---------------------------------------------------------------

@method
def list_dbs(session: Session, *params: Any) -> Result:
    return Success(session.databases.names())


@method
def get_schema(session: Session, *params: Any) -> Result:
    try:
        service = lookup_database(session, "get_schema", params[:1])
    except OVSDBError as e:
        return ovsdb_error(e)
    return Success(service.schema_json)


@method
def transact(session: Session, *params: Any) -> Result:
    try:
        service = lookup_database(session, "transact", params)
        results = service.transact(session, session.request_id, session.request_dialect,
                                   list(params[1:]))
    except OVSDBError as e:
        return ovsdb_error(e)
    # Answered here (or later, if parked) in the request's dialect: the reply
    # then needs no Result object of its own.
    if results is not None:
        session.reply(session.request_id, results, session.request_dialect)
    return ANSWERED


@method
def echo(session: Session, *params: Any) -> Result:
    return Success(list(params))


@method
def get_server_id(session: Session, *params: Any) -> Result:
    return Success(session.databases.server_id)


@method
def set_db_change_aware(session: Session, *params: Any) -> Result:
    if len(params) != 1 or not isinstance(params[0], bool):
        return ovsdb_error(syntax_error(
            "set_db_change_aware: true or false parameter expected", list(params)))
    session.change_aware = params[0]
    return Success({})


def monitor_key(monitor_id: Any) -> str:
    """Monitor ids are any JSON value: compare them as canonical JSON text."""
    return ujson.dumps(monitor_id, sort_keys=True)


def _open_monitor(method_name: str, session: Session, *params: Any) -> Result:
    try:
        service = lookup_database(session, method_name, params)
        request = parse_monitor(method_name, params, service.database,
                                lambda mid: monitor_key(mid) in session.monitors)
    except OVSDBError as e:
        return ovsdb_error(e)
    monitor, result = service.hub.open(request, owner=session)
    session.monitors[monitor_key(request.monitor_id)] = monitor
    if request.version == 3:
        log.info("%s: monitor_cond_since %s on %s from transaction %s", session.peer,
                 "resumed" if result[0] else "sent everything", service.name,
                 request.last_txn_id)
    return Success(result)


def _register_variants(handler: Callable[..., Result], *names: str) -> None:
    """Register one handler under several method names it tells apart.  A
    partial, not a closure: jsonrpcserver's 2.0 dispatch reads the method's
    signature, which a compiled closure lacks."""
    for name in names:
        method(partial(handler, name), name=name)


_register_variants(_open_monitor, "monitor", "monitor_cond", "monitor_cond_since")


@method
def monitor_cancel(session: Session, *params: Any) -> Result:
    if len(params) != 1:
        return bare_error("invalid parameters")
    monitor_ = session.monitors.pop(monitor_key(params[0]), None)
    if monitor_ is None:
        return bare_error("unknown monitor")
    monitor_.cancel()
    return Success({})


@method
def monitor_cond_change(session: Session, *params: Any) -> Result:
    try:
        monitor_, new_id, requests = parse_cond_change(
            params, lambda mid: session.monitors.get(monitor_key(mid)))
        updates = monitor_.change_conditions(new_id, requests)
    except OVSDBError as e:
        return ovsdb_error(e)
    for update in updates:
        session._notify(monitor_.method, update)
    del session.monitors[monitor_key(params[0])]
    session.monitors[monitor_key(new_id)] = monitor_
    return Success({})


@method
def convert(session: Session, *params: Any) -> Result:
    try:
        service = lookup_database(session, "convert", params)
        if len(params) != 2:
            raise syntax_error("array expected", list(params))
        if service.name.startswith("_"):
            raise OVSDBError("not allowed",
                             f"conversion is not allowed for read-only database {service.name}")
        schema = DbSchema.from_json(params[1])
        if schema.name != service.name:
            raise OVSDBError("invalid parameters", f"new schema name ({schema.name}) does not "
                             f"match database name ({service.name})")
        to_disconnect = session.databases.convert(service, schema)
    except OVSDBError as e:
        return ovsdb_error(e)
    log.info("%s: converted %s to schema version %s", session.peer, service.name,
             schema.version or "(none)")
    session.reply(session.request_id, {}, session.request_dialect)
    for other in to_disconnect:
        other.disconnect()
    return ANSWERED


@method
def tegadb_stats(session: Session, *params: Any) -> Result:
    """tegadb's own: counts of sessions, monitors, locks and parked transactions."""
    return Success(session.databases.stats())


def send_notices(notices: list[Notice]) -> None:
    for holder, notice, lock_name in notices:
        assert isinstance(holder, Session)
        if not holder.closed:
            holder.notify(notice, [lock_name])


def _lock_name(method_name: str, params: tuple[Any, ...]) -> str:
    if len(params) != 1 or not is_id(params[0]):
        raise syntax_error(f"{method_name} request params must be <id>", list(params))
    name: str = params[0]
    return name


def _acquire(method_name: str, session: Session, *params: Any) -> Result:
    locks = session.databases.locks
    try:
        name = _lock_name(method_name, params)
        if locks.has_record(session, name):
            raise syntax_error(f'must issue "unlock" before new "{method_name}"', list(params))
    except OVSDBError as e:
        return ovsdb_error(e)
    session.lock_names.add(name)
    if method_name == "lock":
        return Success({"locked": locks.lock(session, name)})
    send_notices(locks.steal(session, name))
    return Success({"locked": True})


_register_variants(_acquire, "lock", "steal")


@method
def unlock(session: Session, *params: Any) -> Result:
    locks = session.databases.locks
    try:
        name = _lock_name("unlock", params)
        if not locks.has_record(session, name):
            raise syntax_error('unlock: "unlock" without "lock" or "steal"', list(params))
    except OVSDBError as e:
        return ovsdb_error(e)
    session.lock_names.discard(name)
    send_notices(locks.unlock(session, name))
    return Success({})


def cancel(session: Session, params: list[Any]) -> None:
    """The ``cancel`` notification: abandon a parked transaction."""
    if len(params) == 1:
        session.databases.cancel(session, params[0])


__all__ = [
    "DEFERRED",
    "Session",
    "bare_error",
    "call_method",
    "handle_message",
    "lookup_database",
    "ovsdb_error",
]

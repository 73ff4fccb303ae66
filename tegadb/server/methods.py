"""The RPC methods and the per-session state behind them.

`METHODS` is the registry: method name -> handler, called as
``handler(session, *params)``.  A handler returns its result (never None),
or DEFERRED when it sends the reply itself (now, or later for a parked
transaction), or raises OVSDBError (an error object) or BareError (one of
the bare-string errors).  OVSDB's JSON-RPC 1.0 requests are the hot path:
after `messages.classify` they are looked up here and called directly.
JSON-RPC 2.0 requests go through `jsonrpc2` (jsonrpcserver's
dispatch), which is imported on the first of them: its imports cost about
half the server's start-up, and its per-request schema validation ~96 us
against a budget of ~15 us per transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import ujson

from ..core.atoms import is_id
from ..core.errors import OVSDBError, syntax_error
from ..core.locks import Notice
from ..core.monitor import parse_cond_change, parse_monitor
from ..core.schema import DbSchema
from ..protocol.framer import ProtocolError
from ..protocol.messages import (
    JSONRPC2_DIALECT,
    JSONRPC2_METHOD_NOT_FOUND,
    OVSDB_DIALECT,
    BareError,
    classify,
    encode_error,
    encode_jsonrpc2_error,
    encode_notification,
    encode_notification_around,
    encode_reply,
)

if TYPE_CHECKING:
    from ..core.monitor import Monitor
    from .service import DatabaseService, ServerDatabases

log = logging.getLogger("tegadb.server.methods")

# What a handler returns when it sends its reply itself, now or later (a
# parked transaction).
DEFERRED = object()


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
        self.write(encode_reply(request_id, result, dialect))

    def reply_error(self, request_id: Any, error: Any, dialect: int = 1) -> None:
        if self.dirty:
            self.flush_monitors(force=True)
        self.write(encode_error(request_id, error, dialect))

    def notify(self, method_name: str, params: list[Any]) -> None:
        if self.dirty:
            self.flush_monitors(force=True)
        self._notify(method_name, params)

    def _notify(self, method_name: str, params: list[Any]) -> None:
        self.write(encode_notification(method_name, params, self.dialect or 1))

    def flush_monitors(self, force: bool = False) -> None:
        """Send what the monitors have pending (unless the peer is backed up)."""
        if self.backlogged and not force:
            return
        self.dirty = False
        dialect = self.dialect or 1
        for monitor in self.monitors.values():
            update = monitor.take()
            if update is not None:
                self.write(encode_notification_around(
                    monitor.method, monitor.head(), update.encoded(), dialect))

    # --- state ----------------------------------------------------------------
    def owns_lock(self, name: str) -> bool:
        cluster_locks = self.databases.cluster_locks
        if cluster_locks is not None:
            return bool(cluster_locks.owner_is(self, name))
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
        cluster_locks = self.databases.cluster_locks
        if cluster_locks is not None:
            cluster_locks.release_all(self, sorted(self.lock_names))
        else:
            send_notices(self.databases.locks.release_all(self, sorted(self.lock_names)))
        self.lock_names.clear()
        for monitor in self.monitors.values():
            monitor.cancel()
        self.monitors.clear()
        self.databases.sessions.discard(self)


def handle_message(session: Session, raw: Any) -> None:
    """Classify one parsed message and act on it (raises ProtocolError)."""
    if type(raw) is dict and raw.get("jsonrpc") == "2.0" and "method" in raw:
        # jsonrpcserver validates JSON-RPC 2.0 requests itself, answering a
        # malformed one with a 2.0 error instead of dropping the connection.
        if not session.dialect:
            session.dialect = JSONRPC2_DIALECT
        if raw["method"] == "cancel" and "id" not in raw:
            # A notification, which jsonrpcserver would answer with nothing
            # and run nowhere: OVSDB's cancel is no method of the registry.
            params = raw.get("params")
            if type(params) is list:
                cancel(session, params)
            return
        _dispatch_jsonrpc2(session, raw)
        return
    message = classify(raw)
    kind = message.kind
    if kind == "request":
        if not session.dialect:
            session.dialect = message.dialect
        assert message.method is not None and message.params is not None
        call_method(session, message.method, message.params, message.id, OVSDB_DIALECT)
    elif kind == "notification":
        if message.method == "cancel" and message.params is not None:
            cancel(session, message.params)
    elif message.id != "echo":
        raise ProtocolError("received unexpected reply message")


def call_method(session: Session, name: str, params: list[Any], request_id: Any,
                dialect: int) -> None:
    """The OVSDB hot path: registry lookup and a direct call."""
    function = METHODS.get(name)
    if function is None:
        session.reply_error(request_id, "unknown method", dialect)
        return
    session.request_id = request_id
    session.request_dialect = dialect
    try:
        result = function(session, *params)
    # Each clause names its exception differently: mypyc types the name by
    # its first clause.
    except OVSDBError as error:
        if session.databases.observer is not None:
            session.databases.observer.error(error.tag)
        session.reply_error(request_id, error, dialect)
        return
    except BareError as bare:
        if session.databases.observer is not None:
            session.databases.observer.error(bare.text)
        session.reply_error(request_id, bare.text, dialect)
        return
    if result is not DEFERRED:
        session.reply(request_id, result, dialect)


def _dispatch_jsonrpc2(session: Session, raw: dict[str, Any]) -> None:
    """A JSON-RPC 2.0 request goes through jsonrpcserver's full dispatch."""
    from . import jsonrpc2  # on the first 2.0 request: see the module docstring

    request_id = raw.get("id")
    session.request_id = request_id
    session.request_dialect = JSONRPC2_DIALECT
    response = jsonrpc2.dispatch(raw, METHODS, session)
    if response is None:
        return
    if "result" in response:
        if response["result"] is not DEFERRED:
            session.reply(request_id, response["result"], JSONRPC2_DIALECT)
        return
    # Our methods' errors carry the OVSDB error in data; jsonrpcserver's own
    # (invalid request, invalid params, method not found) come as they are.
    error = response["error"]
    code = error["code"]
    data = "unknown method" if code == JSONRPC2_METHOD_NOT_FOUND else error.get("data")
    if session.dirty:
        session.flush_monitors(force=True)
    session.write(encode_jsonrpc2_error(request_id, code, error["message"], data))


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

def list_dbs(session: Session, *params: Any) -> Any:
    return session.databases.names()


def get_schema(session: Session, *params: Any) -> Any:
    return lookup_database(session, "get_schema", params[:1]).schema_json


def transact(session: Session, *params: Any) -> Any:
    service = lookup_database(session, "transact", params)
    results = service.transact(session, session.request_id, session.request_dialect,
                               list(params[1:]))
    # Answered here (or later, if parked) in the request's dialect.
    if results is not None:
        session.reply(session.request_id, results, session.request_dialect)
    return DEFERRED


def forward_transact(session: Session, *params: Any) -> Any:
    """tegadb's own, between cluster members: a transaction another member
    forwarded to this one (the writer); answered ``{"seq": N, "result": R}``,
    N the log position the forwarding member waits for before it replies."""
    service = lookup_database(session, "transact", params)
    forwarded = service.forwarded_reply(session)
    results = service.transact(forwarded, session.request_id, session.request_dialect,
                               list(params[1:]))
    if results is not None:
        forwarded.reply(session.request_id, results, session.request_dialect)
    return DEFERRED


def echo(session: Session, *params: Any) -> Any:
    return list(params)


def get_server_id(session: Session, *params: Any) -> Any:
    return session.databases.server_id


def set_db_change_aware(session: Session, *params: Any) -> Any:
    if len(params) != 1 or not isinstance(params[0], bool):
        raise syntax_error("set_db_change_aware: true or false parameter expected", list(params))
    session.change_aware = params[0]
    return {}


def monitor_key(monitor_id: Any) -> str:
    """Monitor ids are any JSON value: compare them as canonical JSON text."""
    return ujson.dumps(monitor_id, sort_keys=True)


def open_monitor(method_name: str, session: Session, *params: Any) -> Any:
    """``monitor``, ``monitor_cond`` and ``monitor_cond_since``."""
    service = lookup_database(session, method_name, params)
    request = parse_monitor(method_name, params, service.database,
                            lambda mid: monitor_key(mid) in session.monitors)
    monitor, result = service.hub.open(request, owner=session)
    session.monitors[monitor_key(request.monitor_id)] = monitor
    if request.version == 3:
        log.info("%s: monitor_cond_since %s on %s from transaction %s", session.peer,
                 "resumed" if result[0] else "sent everything", service.name,
                 request.last_txn_id)
    return result


def monitor_cancel(session: Session, *params: Any) -> Any:
    if len(params) != 1:
        raise BareError("invalid parameters")
    monitor_ = session.monitors.pop(monitor_key(params[0]), None)
    if monitor_ is None:
        raise BareError("unknown monitor")
    monitor_.cancel()
    return {}


def monitor_cond_change(session: Session, *params: Any) -> Any:
    monitor_, new_id, requests = parse_cond_change(
        params, lambda mid: session.monitors.get(monitor_key(mid)))
    updates = monitor_.change_conditions(new_id, requests)
    for update in updates:
        session._notify(monitor_.method, update)
    del session.monitors[monitor_key(params[0])]
    session.monitors[monitor_key(new_id)] = monitor_
    return {}


def convert(session: Session, *params: Any) -> Any:
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
    if service.shares_log():
        service.convert_through_log(session, session.request_id, session.request_dialect,
                                    schema)
        return DEFERRED
    to_disconnect = session.databases.convert(service, schema)
    log.info("%s: converted %s to schema version %s", session.peer, service.name,
             schema.version or "(none)")
    session.reply(session.request_id, {}, session.request_dialect)
    for other in to_disconnect:
        other.disconnect()
    return DEFERRED


def tegadb_stats(session: Session, *params: Any) -> Any:
    """tegadb's own: counts of sessions, monitors, locks and parked transactions."""
    return session.databases.stats()


def tegadb_writers(session: Session, *params: Any) -> Any:
    """tegadb's own: who committed each of the given transactions, and when,
    for those still in the database's history whose writer is known:
    ``{TXN: {"writer": ADDRESS, "date": MS}}`` (what ``tegadb-client watch`` shows)."""
    service = lookup_database(session, "tegadb_writers", params)
    if len(params) != 2 or type(params[1]) is not list \
            or not all(type(txn) is str for txn in params[1]):
        raise syntax_error("tegadb_writers request params must be <db-name> "
                           "and an array of transaction ids", list(params))
    writers = {}
    for txn in params[1]:
        origin = service.history.origin(txn)
        if origin is not None:
            writers[txn] = {"writer": origin[0], "date": origin[1]}
    return writers


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


def acquire(method_name: str, session: Session, *params: Any) -> Any:
    """``lock`` and ``steal``."""
    cluster_locks = session.databases.cluster_locks
    locks = session.databases.locks if cluster_locks is None else cluster_locks
    name = _lock_name(method_name, params)
    if locks.has_record(session, name):
        raise syntax_error(f'must issue "unlock" before new "{method_name}"', list(params))
    session.lock_names.add(name)
    if cluster_locks is not None:
        return _acquire_in_cluster(cluster_locks, method_name, session, name)
    if method_name == "lock":
        return {"locked": session.databases.locks.lock(session, name)}
    send_notices(session.databases.locks.steal(session, name))
    return {"locked": True}


def _acquire_in_cluster(cluster_locks: Any, method_name: str, session: Session,
                        name: str) -> Any:
    """Ask the cluster (cluster_locks); reply once etcd answered.  The reply
    goes out from the future's callback: notices that came meanwhile follow it."""
    request_id, dialect = session.request_id, session.request_dialect
    answer = (cluster_locks.lock if method_name == "lock" else cluster_locks.steal)(session, name)

    def reply(answer: Any) -> None:
        if session.closed:
            return
        error = answer.exception()
        if error is None:
            session.reply(request_id, {"locked": answer.result()}, dialect)
            return
        session.lock_names.discard(name)
        # Imported here: the client library is ~1.4 ms of every start, needed only by relays.
        from ..client.connection import RPCError

        if isinstance(error, RPCError):  # a relay's source answered, or cannot be reached
            session.reply_error(request_id, error.error, dialect)
            return
        session.reply_error(request_id, {"error": "cluster unavailable", "details": str(error)},
                            dialect)

    answer.add_done_callback(reply)
    return DEFERRED


def unlock(session: Session, *params: Any) -> Any:
    cluster_locks = session.databases.cluster_locks
    locks = session.databases.locks if cluster_locks is None else cluster_locks
    name = _lock_name("unlock", params)
    if not locks.has_record(session, name):
        raise syntax_error('unlock: "unlock" without "lock" or "steal"', list(params))
    session.lock_names.discard(name)
    if cluster_locks is not None:
        cluster_locks.unlock(session, name)
    else:
        send_notices(session.databases.locks.unlock(session, name))
    return {}


def send_cluster_notice(holder: Any, notice: str, lock_name: str) -> None:
    """A notice from the cluster's locks (cluster_locks.ClusterLocks's ``notify``)."""
    if not holder.closed:
        holder.notify(notice, [lock_name])


def cancel(session: Session, params: list[Any]) -> None:
    """The ``cancel`` notification: abandon a parked transaction."""
    if len(params) == 1:
        session.databases.cancel(session, params[0])


# The registry: method name -> handler.  One handler serves several names
# through a partial that gives it the name.
METHODS: dict[str, Callable[..., Any]] = {
    "list_dbs": list_dbs,
    "get_schema": get_schema,
    "transact": transact,
    "echo": echo,
    "get_server_id": get_server_id,
    "set_db_change_aware": set_db_change_aware,
    "monitor": partial(open_monitor, "monitor"),
    "monitor_cond": partial(open_monitor, "monitor_cond"),
    "monitor_cond_since": partial(open_monitor, "monitor_cond_since"),
    "monitor_cancel": monitor_cancel,
    "monitor_cond_change": monitor_cond_change,
    "convert": convert,
    "lock": partial(acquire, "lock"),
    "steal": partial(acquire, "steal"),
    "unlock": unlock,
    "tegadb_stats": tegadb_stats,
    "tegadb_forward": forward_transact,
    "tegadb_writers": tegadb_writers,
}

__all__ = [
    "DEFERRED",
    "METHODS",
    "Session",
    "call_method",
    "handle_message",
    "lookup_database",
]

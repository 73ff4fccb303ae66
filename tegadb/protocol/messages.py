"""JSON-RPC messages: their shapes in both dialects, and their bytes.

`classify` checks a parsed value's JSON-RPC shape (PROTOCOL.md section 1.3)
and says what it is; the `encode_*` functions return the bytes to send.
Sans-IO: the values come from the `framer`, the bytes go to the caller.

Rules this module enforces:
- Message type is decided by which members are non-null, in the order
  result, error, id; then each type has required and forbidden members.
  Unknown members are ignored (PROTOCOL.md 1.3 allows it on input).
- ``params``: on the OVSDB dialect (JSON-RPC 1.0) a request or notification
  without ``params``, or with ``"params": null``, is a protocol error that
  closes the connection, as ovsdb-server does (``request must have
  "params"``).  In the JSON-RPC 2.0 dialect ``params`` may be omitted (the
  2.0 specification, section 4) and counts as ``[]``.
- Output on the OVSDB dialect carries only method, params, result, error and
  id.  A request carrying ``"jsonrpc": "2.0"`` is answered in the 2.0
  dialect, whose errors carry a JSON-RPC 2.0 code (`jsonrpc2_code`), the
  OVSDB error's tag as message and the OVSDB error itself as data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ujson

from ..core.errors import OVSDBError
from .framer import ProtocolError

OVSDB_DIALECT = 1
JSONRPC2_DIALECT = 2

# JSON-RPC 2.0 error codes, by the OVSDB error tag (or bare error string)
# they answer; every other OVSDB error is a server error.
JSONRPC2_METHOD_NOT_FOUND = -32601
JSONRPC2_INVALID_PARAMS = -32602
JSONRPC2_SERVER_ERROR = -32000
_JSONRPC2_CODES = {
    "unknown method": JSONRPC2_METHOD_NOT_FOUND,
    "invalid parameters": JSONRPC2_INVALID_PARAMS,
    "syntax error": JSONRPC2_INVALID_PARAMS,
}


class BareError(Exception):
    """An error answered as a bare JSON string, such as ``"unknown monitor"``
    or ``"invalid parameters"``: clients compare these exactly."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def jsonrpc2_code(tag: str) -> int:
    """The JSON-RPC 2.0 error code for an OVSDB error tag or bare error string."""
    return _JSONRPC2_CODES.get(tag, JSONRPC2_SERVER_ERROR)


class Message(NamedTuple):
    """One received JSON-RPC message.  Absent and null members are None,
    except that a JSON-RPC 2.0 request's or notification's missing params
    become []."""

    kind: str            # "request" | "notification" | "reply" | "error"
    method: str | None
    params: list[Any] | None
    id: Any
    result: Any
    error: Any
    dialect: int         # OVSDB_DIALECT or JSONRPC2_DIALECT


_MEMBERS = ("method", "params", "result", "error", "id")
# Which of _MEMBERS each kind must have (True) or must not have (False).
_SHAPES = {
    "request": (True, True, False, False, True),
    "notification": (True, True, False, False, False),
    "reply": (False, False, True, False, True),
    "error": (False, False, False, True, True),
}


def classify(msg: Any) -> Message:
    """Checks a received value's JSON-RPC shape (PROTOCOL.md section 1.3).

    Unknown members are ignored.  `"jsonrpc":"2.0"` selects the JSON-RPC 2.0
    dialect for the answer, where a missing params is taken as []; on the
    OVSDB dialect it is a protocol error, as in ovsdb-server.
    """
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a JSON object")
    method = msg.get("method")
    params = msg.get("params")
    result = msg.get("result")
    error = msg.get("error")
    id_ = msg.get("id")
    if method is not None and not isinstance(method, str):
        raise ProtocolError("method is not a JSON string")
    dialect = JSONRPC2_DIALECT if msg.get("jsonrpc") == "2.0" else OVSDB_DIALECT
    if params is None:
        if dialect == JSONRPC2_DIALECT and result is None and error is None:
            params = []
    elif not isinstance(params, list):
        raise ProtocolError('"params" must be JSON array')
    if result is not None:
        kind = "reply"
    elif error is not None:
        kind = "error"
    elif id_ is not None:
        kind = "request"
    else:
        kind = "notification"
    present = (method is not None, params is not None, result is not None,
               error is not None, id_ is not None)
    shape = _SHAPES[kind]
    if present != shape:
        name, must = next((n, m) for n, m, p in zip(_MEMBERS, shape, present) if m != p)
        raise ProtocolError(f'{kind} must{"" if must else " not"} have "{name}"')
    # tuple.__new__ skips the NamedTuple's Python-level constructor (per message).
    return _new_tuple(Message, (kind, method, params, id_, result, error, dialect))


_new_tuple = tuple.__new__


# ---------------------------------------------------------------------------
# Encoding

def _dumps(value: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def encode_reply(id_: Any, result: Any, dialect: int = OVSDB_DIALECT) -> bytes:
    """A successful reply; `result` must not be None (use {} or [])."""
    if dialect == JSONRPC2_DIALECT:
        return _dumps({"jsonrpc": "2.0", "result": result, "id": id_})
    return _dumps({"id": id_, "result": result, "error": None})


def encode_error(id_: Any, error: str | dict[str, Any] | OVSDBError,
                 dialect: int = OVSDB_DIALECT) -> bytes:
    """An error reply.  `error` is a bare string such as "unknown method" or
    an OVSDB error (object or exception).  OVSDB dialect: as ovsdb-server
    sends it, without "result".  JSON-RPC 2.0: a 2.0 error object with the
    OVSDB error in `data` and its tag (or the bare string) as `message`."""
    if isinstance(error, OVSDBError):
        error = error.to_json()
    if dialect != JSONRPC2_DIALECT:
        return _dumps({"id": id_, "error": error})
    tag = error if isinstance(error, str) else str(error.get("error"))
    return encode_jsonrpc2_error(id_, jsonrpc2_code(tag), tag, error)


def encode_jsonrpc2_error(id_: Any, code: int, message: str, data: Any) -> bytes:
    """A JSON-RPC 2.0 error reply with its code, message and data."""
    return _dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message, "data": data},
                   "id": id_})


def encode_notification(method: str, params: list[Any], dialect: int = OVSDB_DIALECT) -> bytes:
    """A server-to-client notification (update, update2, locked, ...)."""
    if dialect == JSONRPC2_DIALECT:
        return _dumps({"jsonrpc": "2.0", "method": method, "params": params})
    return _dumps({"id": None, "method": method, "params": params})


def encode_notification_around(method: str, head: list[Any], body: bytes,
                               dialect: int = OVSDB_DIALECT) -> bytes:
    """A notification whose last param, ``body``, is JSON encoded once and shared
    by every session that sends it (monitor fan-out)."""
    if dialect == JSONRPC2_DIALECT:
        start = b'{"jsonrpc":"2.0","method":' + _dumps(method) + b',"params":'
    else:
        start = b'{"id":null,"method":' + _dumps(method) + b',"params":'
    head_json = _dumps(head)
    return start + head_json[:-1] + (b"," if head else b"") + body + b"]}"


def encode_request(id_: Any, method: str, params: list[Any], dialect: int = OVSDB_DIALECT) -> bytes:
    """A server-initiated request: the inactivity probe
    `{"id":"echo","method":"echo","params":[]}`."""
    if dialect == JSONRPC2_DIALECT:
        return _dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": id_})
    return _dumps({"id": id_, "method": method, "params": params})

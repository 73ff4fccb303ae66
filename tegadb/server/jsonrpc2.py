"""The JSON-RPC 2.0 dialect: one request through jsonrpcserver's public dispatch.

jsonrpcserver validates the request (against the JSON-RPC 2.0 schema, with
jsonschema), checks its params against the handler and answers malformed
requests with 2.0 errors.  Import this module only when a 2.0 request
arrives: jsonrpcserver and jsonschema are about half of the server's
start-up imports, and OVSDB's JSON-RPC 1.0 requests never need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jsonrpcserver import Error, Result, Success, dispatch_to_serializable

from ..core.errors import OVSDBError
from ..protocol.messages import BareError, jsonrpc2_code

Handler = Callable[..., Any]


def dispatch(request: dict[str, Any], handlers: Mapping[str, Handler],
             context: Any) -> dict[str, Any] | None:
    """The JSON-RPC 2.0 response object for `request`, None for a notification.

    A handler is called as ``handler(context, *params)``; it returns the
    result, or raises OVSDBError or BareError, which become 2.0 errors with
    the code `jsonrpc2_code` gives, the tag as message and the OVSDB error
    (or the bare string) as data.  The result is passed through as it is.
    """
    name = request.get("method")
    handler = handlers.get(name) if isinstance(name, str) else None
    methods = {} if handler is None else {name: _as_method(handler)}
    response = dispatch_to_serializable(request, methods, context=context,
                                        deserializer=_already_parsed)
    assert not isinstance(response, list)  # one request in, one response out
    return response


def _as_method(handler: Handler) -> Callable[..., Result]:
    """`handler` as a jsonrpcserver method.  A plain function, not a partial:
    jsonrpcserver reads the method's signature on every call, and reading a
    partial's made a 2.0 echo cost a fifth more instructions."""
    def method(context: Any, *params: Any) -> Result:
        try:
            return Success(handler(context, *params))
        except OVSDBError as error:
            return Error(jsonrpc2_code(error.tag), error.tag, error.to_json())
        except BareError as bare:
            return Error(jsonrpc2_code(bare.text), bare.text, bare.text)
    return method


def _already_parsed(request: Any) -> Any:
    """The framer has parsed the request already."""
    return request

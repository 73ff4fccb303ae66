"""Unit tests for tegadb.server.jsonrpc2, and for when jsonrpcserver is imported."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tegadb.core.errors import OVSDBError, syntax_error
from tegadb.protocol.messages import BareError
from tegadb.server.jsonrpc2 import dispatch

PASSED_THROUGH = object()


def echo(context: list[Any], *params: Any) -> Any:
    context.append(params)
    return list(params)


def fail(context: list[Any], kind: str) -> Any:
    if kind == "syntax":
        raise syntax_error("bad", ["x"])
    if kind == "ovsdb":
        raise OVSDBError("unknown database", "d")
    raise BareError(kind)


HANDLERS = {"echo": echo, "fail": fail, "later": lambda context: PASSED_THROUGH}


def call(**request: Any) -> tuple[dict[str, Any] | None, list[Any]]:
    context: list[Any] = []
    return dispatch({"jsonrpc": "2.0", **request}, HANDLERS, context), context


def test_result_and_context() -> None:
    assert call(method="echo", params=[1, "a"], id=7) == (
        {"jsonrpc": "2.0", "result": [1, "a"], "id": 7}, [(1, "a")])
    assert call(method="echo", id=8)[0] == {"jsonrpc": "2.0", "result": [], "id": 8}
    response, _ = call(method="later", id=9)
    assert response is not None and response["result"] is PASSED_THROUGH


@pytest.mark.parametrize("kind,code,message,data", [
    ("syntax", -32602, "syntax error",
     {"error": "syntax error", "details": "bad", "syntax": '["x"]'}),
    ("ovsdb", -32000, "unknown database", {"error": "unknown database", "details": "d"}),
    ("invalid parameters", -32602, "invalid parameters", "invalid parameters"),
    ("unknown monitor", -32000, "unknown monitor", "unknown monitor"),
])
def test_errors_carry_the_ovsdb_error(kind: str, code: int, message: str, data: Any) -> None:
    assert call(method="fail", params=[kind], id=1)[0] == {
        "jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": message, "data": data}}


def test_jsonrpcservers_own_errors() -> None:
    response, _ = call(method="nope", params=[], id=2)
    assert response is not None and response["error"]["code"] == -32601
    response, _ = call(method="echo", params={"named": 1}, id=3)
    assert response is not None and response["error"]["code"] == -32602
    response, context = call(method="echo", params=[], id=4, extra=1)
    assert response is not None and response["error"]["code"] == -32600 and context == []


def test_notification_runs_without_response() -> None:
    assert call(method="echo", params=[5]) == (None, [(5,)])


def test_jsonrpcserver_is_imported_only_for_jsonrpc2() -> None:
    """The server starts and serves OVSDB requests without jsonrpcserver (and
    jsonschema): they are about half its start-up imports."""
    script = """if True:
        import sys
        from tegadb.server import main, methods
        from tegadb.server.service import ServerDatabases
        out = []
        session = methods.Session(ServerDatabases([]), "t", out.append, lambda: None)
        methods.handle_message(session, {"id": 1, "method": "echo", "params": [1]})
        methods.handle_message(session, {"id": 2, "method": "nope", "params": []})
        before = {"jsonrpcserver", "jsonschema"} & set(sys.modules)
        methods.handle_message(session, {"jsonrpc": "2.0", "id": 3, "method": "echo"})
        print(len(out), sorted(before), "jsonrpcserver" in sys.modules)
    """
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert run.stdout.split() == ["3", "[]", "True"]

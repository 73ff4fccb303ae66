"""Unit tests for tegadb.protocol.messages: classification and encoding."""

from __future__ import annotations

from typing import Any

import pytest
import ujson

from tegadb.core.errors import OVSDBError
from tegadb.protocol.framer import Framer, ProtocolError
from tegadb.protocol.messages import (
    JSONRPC2_DIALECT,
    OVSDB_DIALECT,
    Message,
    classify,
    encode_error,
    encode_notification,
    encode_notification_around,
    encode_reply,
    encode_request,
)

# ---------------------------------------------------------------------------
# Classification

def test_top_level_array_is_framed_and_rejected_by_classify() -> None:
    [value] = Framer().feed(b"[1,2]")
    with pytest.raises(ProtocolError, match="message is not a JSON object"):
        classify(value)


@pytest.mark.parametrize("msg,expected", [
    ({"id": 0, "method": "list_dbs", "params": []},
     Message("request", "list_dbs", [], 0, None, None, OVSDB_DIALECT)),
    ({"id": 1, "method": "list_dbs", "params": [], "result": None, "error": None},
     Message("request", "list_dbs", [], 1, None, None, OVSDB_DIALECT)),
    ({"id": None, "method": "cancel", "params": [5]},
     Message("notification", "cancel", [5], None, None, None, OVSDB_DIALECT)),
    ({"id": "echo", "result": []},
     Message("reply", None, None, "echo", [], None, OVSDB_DIALECT)),
    ({"id": 3, "result": {}, "error": None},
     Message("reply", None, None, 3, {}, None, OVSDB_DIALECT)),
    ({"id": 4, "error": "unknown method"},
     Message("error", None, None, 4, None, "unknown method", OVSDB_DIALECT)),
    ({"id": 5, "result": None, "error": {"error": "x"}},
     Message("error", None, None, 5, None, {"error": "x"}, OVSDB_DIALECT)),
    ({"id": 6, "method": "m", "params": [], "extra": 1},  # unknown members ignored
     Message("request", "m", [], 6, None, None, OVSDB_DIALECT)),
    ({"jsonrpc": "2.0", "id": 7, "method": "list_dbs", "params": []},
     Message("request", "list_dbs", [], 7, None, None, JSONRPC2_DIALECT)),
    # JSON-RPC 2.0 lets a request or notification leave params out.
    ({"jsonrpc": "2.0", "method": "list_dbs"},
     Message("notification", "list_dbs", [], None, None, None, JSONRPC2_DIALECT)),
    ({"jsonrpc": "2.0", "id": 9, "method": "list_dbs"},
     Message("request", "list_dbs", [], 9, None, None, JSONRPC2_DIALECT)),
    ({"jsonrpc": "2.0", "id": 10, "method": "list_dbs", "params": None},
     Message("request", "list_dbs", [], 10, None, None, JSONRPC2_DIALECT)),
    ({"jsonrpc": "1.0", "id": 8, "method": "m", "params": []},
     Message("request", "m", [], 8, None, None, OVSDB_DIALECT)),
])
def test_classify(msg: Any, expected: Message) -> None:
    assert classify(msg) == expected


@pytest.mark.parametrize("msg,reason", [
    ([], "message is not a JSON object"),
    ("x", "message is not a JSON object"),
    ({"id": 1, "method": 5, "params": []}, "method is not a JSON string"),
    ({"id": 1, "method": "m", "params": {}}, '"params" must be JSON array'),
    ({"id": 1, "method": "m", "params": "x"}, '"params" must be JSON array'),
    ({"id": 1, "result": [], "params": 5}, '"params" must be JSON array'),
    ({"id": 1}, 'request must have "method"'),
    ({"id": 1, "params": []}, 'request must have "method"'),
    ({}, 'notification must have "method"'),
    ({"id": 1, "result": [], "method": "m"}, 'reply must not have "method"'),
    ({"id": 1, "result": [], "params": []}, 'reply must not have "params"'),
    ({"id": 1, "result": [], "error": "e"}, 'reply must not have "error"'),
    ({"result": []}, 'reply must have "id"'),
    ({"id": 1, "error": "e", "method": "m"}, 'error must not have "method"'),
    ({"id": 1, "error": "e", "params": []}, 'error must not have "params"'),
    ({"error": "e"}, 'error must have "id"'),
    # The OVSDB dialect requires params, as ovsdb-server does.
    ({"id": 1, "method": "list_dbs"}, 'request must have "params"'),
    ({"id": 1, "method": "list_dbs", "params": None}, 'request must have "params"'),
    ({"jsonrpc": "1.0", "id": 1, "method": "list_dbs"}, 'request must have "params"'),
    ({"method": "cancel"}, 'notification must have "params"'),
    ({"id": None, "method": "cancel", "params": None}, 'notification must have "params"'),
])
def test_classify_errors(msg: Any, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        classify(msg)
    assert info.value.reason == reason == str(info.value)


# ---------------------------------------------------------------------------
# Encoding

@pytest.mark.parametrize("encoded,expected", [
    (encode_reply(1, ["A", "_Server"]), b'{"id":1,"result":["A","_Server"],"error":null}'),
    (encode_reply(0, {}), b'{"id":0,"result":{},"error":null}'),
    (encode_reply([1, {"x": 2}], {"r": 2.0}), b'{"id":[1,{"x":2}],"result":{"r":2.0},"error":null}'),
    (encode_reply("x", ["é/ü"]), '{"id":"x","result":["é/ü"],"error":null}'.encode()),
    (encode_reply(1, [], JSONRPC2_DIALECT), b'{"jsonrpc":"2.0","result":[],"id":1}'),
    (encode_error(107, "unknown method"), b'{"id":107,"error":"unknown method"}'),
    (encode_error(1, {"error": "unknown database", "details": "d"}),
     b'{"id":1,"error":{"error":"unknown database","details":"d"}}'),
    (encode_error(2, OVSDBError("syntax error", "bad", {"b": 1, "a": [2]})),
     b'{"id":2,"error":{"error":"syntax error","details":"bad","syntax":"{\\"a\\":[2],\\"b\\":1}"}}'),
    (encode_error(3, "unknown method", JSONRPC2_DIALECT),
     (b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"unknown method",'
      b'"data":"unknown method"},"id":3}')),
    (encode_error(4, "invalid parameters", JSONRPC2_DIALECT),
     (b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"invalid parameters",'
      b'"data":"invalid parameters"},"id":4}')),
    (encode_error(5, OVSDBError("syntax error", "d"), JSONRPC2_DIALECT),
     (b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"syntax error",'
      b'"data":{"error":"syntax error","details":"d"}},"id":5}')),
    (encode_error(6, OVSDBError("unknown database", "d"), JSONRPC2_DIALECT),
     (b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"unknown database",'
      b'"data":{"error":"unknown database","details":"d"}},"id":6}')),
    (encode_error(7, "canceled", JSONRPC2_DIALECT),
     b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"canceled","data":"canceled"},"id":7}'),
    (encode_notification("update2", ["m2", {"T": {}}]),
     b'{"id":null,"method":"update2","params":["m2",{"T":{}}]}'),
    (encode_notification("locked", ["L"], JSONRPC2_DIALECT),
     b'{"jsonrpc":"2.0","method":"locked","params":["L"]}'),
    (encode_request("echo", "echo", []), b'{"id":"echo","method":"echo","params":[]}'),
    (encode_request("echo", "echo", [], JSONRPC2_DIALECT),
     b'{"jsonrpc":"2.0","method":"echo","params":[],"id":"echo"}'),
])
def test_encoders(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


def test_encoded_messages_frame_and_classify_back() -> None:
    stream = b"".join([
        encode_request("echo", "echo", []), encode_reply(1, []), encode_error(2, "canceled"),
        encode_notification("update", [None, {}]),
        encode_request(3, "echo", [1], JSONRPC2_DIALECT),
    ])
    kinds = [(m.kind, m.dialect) for m in map(classify, Framer().feed(stream))]
    assert kinds == [("request", 1), ("reply", 1), ("error", 1), ("notification", 1),
                     ("request", 2)]


def test_notification_around_shared_body_equals_plain_encoding() -> None:
    body = {"Root": {"u": {"modify": {"n": 1, "s": "é/"}}}}
    shared = ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode()
    for head in (["m1"], [["monid", "db"], "00000000-0000-0000-0000-000000000000"], []):
        for dialect in (OVSDB_DIALECT, JSONRPC2_DIALECT):
            assert encode_notification_around("update2", head, shared, dialect) == \
                encode_notification("update2", [*head, body], dialect)


"""The server over real sockets, each test run against ovsdb-server and tegadb.

Where both servers must answer alike, the test is parametrized over both
(`peer` fixture) and asserts the exact reply, so every expectation here is
checked against ovsdb-server on each run.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from peers import ConnectionClosed, RawClient

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def test_list_dbs(peer):
    server = peer()
    with server.client() as c:
        reply = c.request("list_dbs", [])
    assert sorted(reply["result"]) == ["Test", "_Server"]
    assert reply["error"] is None


def test_list_dbs_over_tcp_ignores_extra_params(peer):
    server = peer()
    with server.client(tcp=True) as c:
        assert sorted(c.request("list_dbs", ["junk"])["result"]) == ["Test", "_Server"]


@pytest.mark.parametrize("request_id", [0, 1.5, "x", [1, {"x": 2}], {"a": None}])
def test_echo_round_trips_params_and_id(peer, request_id):
    server = peer()
    with server.client() as c:
        c.send({"method": "echo", "params": [{"x": [1, 2.5, None]}], "id": request_id})
        reply = c.recv()
    assert reply == {"id": request_id, "result": [{"x": [1, 2.5, None]}], "error": None}


def test_unknown_method(peer):
    server = peer()
    with server.client() as c:
        reply = c.request("frobnicate", [])
        assert reply["error"] == "unknown method"
        # The connection stays usable.
        assert c.request("echo", [1])["result"] == [1]


def test_get_schema_ignores_extra_params_and_matches_reference(ovsdb_peer, tegadb_peer):
    replies = []
    for factory in (ovsdb_peer, tegadb_peer):
        with factory().client() as c:
            replies.append(c.request("get_schema", ["Test", "extra"])["result"])
    assert replies[0] == replies[1]


def test_server_schema_matches_reference(ovsdb_peer, tegadb_peer):
    replies = []
    for factory in (ovsdb_peer, tegadb_peer):
        with factory().client() as c:
            replies.append(c.request("get_schema", ["_Server"])["result"])
    assert replies[0] == replies[1]


@pytest.mark.parametrize("method", ["get_schema", "transact"])
def test_database_errors(peer, method):
    server = peer()
    with server.client() as c:
        assert c.request(method, ["Nope"])["error"] == {
            "error": "unknown database",
            "details": f"{method} request specifies unknown database Nope",
            "syntax": '["Nope"]'}
        assert c.request(method, [])["error"] == {
            "error": "syntax error",
            "details": f"{method} request params must begin with <db-name>",
            "syntax": "[]"}


def test_get_server_id_is_stable_uuid(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        first = a.request("get_server_id", [])["result"]
        assert b.request("get_server_id", [])["result"] == first
    assert len(first) == 36 and first.count("-") == 4


def test_empty_transact(peer):
    server = peer()
    with server.client() as c:
        assert c.transact("Test") == []


def test_insert_select_round_trip(peer):
    server = peer()
    with server.client() as c:
        result = c.transact("Test", {"op": "insert", "table": "Root",
                                     "row": {"name": "a", "tags": ["set", ["x", "y"]],
                                             "props": ["map", [["k", "v"]]]}})
        uuid = result[0]["uuid"][1]
        rows = c.transact("Test", {"op": "select", "table": "Root",
                                   "where": [["name", "==", "a"]],
                                   "columns": ["_uuid", "name", "tags", "props", "count"]})
    assert rows == [{"rows": [{"_uuid": ["uuid", uuid], "name": "a",
                               "tags": ["set", ["x", "y"]], "props": ["map", [["k", "v"]]],
                               "count": 0}]}]


def test_server_database_rows(peer):
    server = peer()
    with server.client() as c:
        rows = c.transact("_Server", {"op": "select", "table": "Database", "where": [],
                                      "columns": ["name", "model", "connected", "leader",
                                                  "cid", "sid", "index"]})[0]["rows"]
        schema_rows = c.transact("_Server", {"op": "select", "table": "Database",
                                             "where": [["name", "==", "Test"]],
                                             "columns": ["schema"]})[0]["rows"]
        refused = c.transact("_Server", {"op": "delete", "table": "Database", "where": []})
    expected = [{"name": name, "model": "standalone", "connected": True, "leader": True,
                 "cid": ["set", []], "sid": ["set", []], "index": ["set", []]}
                for name in ("Test", "_Server")]
    if os.environ.get("TEGADB_TEST_CLUSTER") and server.kind == "tegadb":
        # A cluster member (test_cluster.py checks the values).
        (member,) = [r for r in rows if r["name"] == "Test"]
        cid, sid = member["cid"], member["sid"]
        expected[0].update(model="clustered", cid=cid, sid=sid, index=0)
        assert cid[0] == "uuid" and sid[0] == "uuid"
    assert sorted(rows, key=lambda r: r["name"]) == expected
    assert '"name":"Test"' in schema_rows[0]["schema"]
    assert refused == [{"error": "not allowed", "details":
                        "delete operation not allowed on table in reserved database _Server"}]


# --- protocol violations: each closes the connection, the server lives on ----

@pytest.mark.parametrize("data", [
    b'[1,2]',                                              # not an object
    b'"hello"',                                            # not an object or array
    b'{"method":"echo","params":{},"id":1}',               # params not an array
    b'{"method":"echo","params":[],"id":1,"result":1}',    # reply member on a request
    b'{"id":5,"result":[]}',                               # unexpected reply
    b'{"method":"echo","params":["\\u0000"],"id":1}',      # null byte in a string
    b'{"method":"echo",,}',                                # malformed JSON
    # JSON-RPC 1.0 requires params (PROTOCOL.md 1.3): missing or null, in a
    # request or a notification, is a violation for ovsdb-server too.
    b'{"method":"echo","id":1}',
    b'{"method":"echo","params":null,"id":1}',
    b'{"method":"list_dbs","id":1,"jsonrpc":"1.0"}',
    b'{"method":"cancel","id":null}',
    b'{"method":"cancel"}',
    b'{"method":"cancel","params":null,"id":null}',
    # Not JSON numbers, though ujson reads them (PROTOCOL.md 1.2): syntax errors.
    b'{"method":"echo","params":[NaN],"id":1}',
    b'{"method":"echo","params":[Infinity],"id":1}',
    b'{"method":"echo","params":[-Infinity],"id":1}',
    b'{"method":"echo","params":[1e400],"id":1}',
    b'{"method":"echo","params":[-1e400],"id":1}',
    b'{"method":"echo","params":[1%s],"id":1}' % (b"0" * 400),
    b'{"method":"echo","params":[],"id":NaN}',
    b'{"method":"transact","params":["Test",{"op":"insert","table":"Root",'
    b'"row":{"name":"n","ratio":NaN}}],"id":1}',
])
def test_protocol_violations_close_connection(peer, data):
    server = peer()
    with server.client() as c:
        c.send_raw(data)
        assert c.wait_closed(timeout=5)
    with server.client() as c:
        assert c.request("echo", ["still alive"])["result"] == ["still alive"]


def test_non_finite_number_gets_no_reply_and_writes_nothing(peer):
    """The request is dropped with its connection, before anything is
    answered or committed; requests before it in the stream are served."""
    server = peer()
    with server.client() as c:
        c.send_raw(b'{"method":"echo","params":["before"],"id":1}'
                   b'{"method":"transact","params":["Test",{"op":"insert","table":"Root",'
                   b'"row":{"name":"inf","ratio":1e400}}],"id":2}')
        assert c.recv() == {"id": 1, "result": ["before"], "error": None}
        assert c.wait_closed(timeout=5)
        with pytest.raises(ConnectionClosed):  # and request 2 got no reply
            c.recv(timeout=1)
    with server.client() as c:
        [selected] = c.transact("Test", {"op": "select", "table": "Root", "where": []})
        assert selected == {"rows": []}


def test_numbers_that_underflow_are_zero(peer):
    server = peer()
    with server.client() as c:
        c.send_raw(b'{"method":"echo","params":[1e-400,-1e-400],"id":1}')
        assert c.recv()["result"] == [0, 0]


# Number literals as sent, and as ovsdb-server quotes them back in "syntax":
# integral values within int64 are integers however written, reals "%.15g".
SYNTAX_NUMBERS = [
    (b"3.0", "3"), (b"-0.0", "0"), (b"1e15", "1000000000000000"), (b"1.5e15", "1500000000000000"),
    (b"1.2345678901234568e+17", "123456789012345680"), (b"9223372036854775808", "9.22337203685478e+18"),
    (b"100000000000000000000", "1e+20"), (b"1.5e-7", "1.5e-07"), (b"1E-5", "1e-05"),
    (b"0.30000000000000004", "0.3"), (b"1e300", "1e+300"), (b"-9223372036854775808",
                                                              "-9223372036854775808"),
]


def test_error_syntax_quotes_numbers_as_ovsdb_server(peer):
    server = peer()
    with server.client() as c:
        for literal, quoted in SYNTAX_NUMBERS:
            request_id = c.next_id()
            c.send_raw(b'{"id":%d,"method":"transact","params":["Test",{"op":"bogus","x":[%s]}]}'
                       % (request_id, literal))
            [error] = c.reply(request_id)["result"]
            assert error["syntax"] == f'{{"op":"bogus","x":[{quoted}]}}', literal


def test_messages_split_and_concatenated(peer):
    server = peer()
    with server.client() as c:
        data = (b'{"method":"echo","params":["a"],"id":1}  {"method":"echo",'
                b'"params":["b"],"id":2}{"method":"echo","params":["c{\\"}"],"id":3}')
        for i in range(0, len(data), 7):
            c.send_raw(data[i:i + 7])
        replies = [c.recv() for _ in range(3)]
    assert [r["result"] for r in replies] == [["a"], ["b"], ['c{"}']]


def test_client_disconnecting_mid_message_leaves_server_serving(peer):
    server = peer()
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.tcp_port))
        sock.sendall(b'{"method":"transact","params":["Test",{"op":"insert","table":"Root",')
        sock.close()
    with server.client() as c:
        assert c.transact("Test", {"op": "select", "table": "Root", "where": []}) == [{"rows": []}]


def test_jsonrpc2_request_gets_jsonrpc2_reply(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        c.send({"jsonrpc": "2.0", "method": "echo", "params": [1, "two"], "id": 7})
        assert c.recv() == {"jsonrpc": "2.0", "result": [1, "two"], "id": 7}
        c.send({"jsonrpc": "2.0", "method": "list_dbs", "params": [], "id": 8})
        assert sorted(c.recv()["result"]) == ["Test", "_Server"]
        c.send({"jsonrpc": "2.0", "method": "nope", "params": [], "id": 9})
        reply = c.recv()
        assert reply["id"] == 9 and reply["error"]["code"] == -32601
        assert reply["error"]["data"] == "unknown method"
        c.send({"jsonrpc": "2.0", "method": "transact", "params": ["Test", {
            "op": "insert", "table": "Root", "row": {"name": "rpc2"}}], "id": 10})
        reply = c.recv()
        assert reply["jsonrpc"] == "2.0" and reply["result"][0]["uuid"][0] == "uuid"
        # An OVSDB 1.0 request on the same connection still gets a 1.0 reply.
        assert c.request("echo", [])["error"] is None


def test_jsonrpc2_cancel_notification_cancels_a_waiting_transaction(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        wait = {"op": "wait", "table": "Root", "where": [], "columns": ["name"],
                "until": "==", "rows": [{"name": "never"}], "timeout": 60000}
        c.send({"jsonrpc": "2.0", "method": "transact", "params": ["Test", wait], "id": 20})
        with server.client() as other:
            def parked() -> int:
                return other.request("tegadb_stats", [])["result"]["parked_transactions"]

            c.send({"jsonrpc": "2.0", "method": "echo", "params": [], "id": 21})
            assert c.recv(timeout=5)["id"] == 21   # the wait before it is parked by now
            assert parked() == 1
            c.send({"jsonrpc": "2.0", "method": "cancel", "params": [20]})
            reply = c.recv(timeout=5)
            assert reply["jsonrpc"] == "2.0" and reply["id"] == 20, reply
            assert reply["error"]["data"] == "canceled", reply
            # Canceled, not only answered: the connection is still open.
            assert parked() == 0


ZERO_TXN = "00000000-0000-0000-0000-000000000000"
JSONRPC2_CALLS = [
    ("get_schema", ["Test"], lambda result: result["name"] == "Test"),
    ("get_server_id", [], lambda result: isinstance(result, str)),
    ("set_db_change_aware", [True], lambda result: result == {}),
    ("monitor", ["Test", "m1", {"Root": {"columns": ["name"]}}], lambda result: result == {}),
    ("monitor_cond", ["Test", "m2", {"Root": [{"columns": ["name"]}]}],
     lambda result: result == {}),
    ("monitor_cond_since", ["Test", "m3", {"Root": [{"columns": ["name"]}]}, ZERO_TXN],
     lambda result: result[0] is False and result[2] == {}),
    ("monitor_cond_change", ["m2", "m2b", {"Root": [{"where": [["name", "==", "x"]]}]}],
     lambda result: result == {}),
    ("monitor_cancel", ["m1"], lambda result: result == {}),
    ("lock", ["l"], lambda result: result == {"locked": True}),
    ("steal", ["k"], lambda result: result == {"locked": True}),
    ("unlock", ["k"], lambda result: result == {}),
]


def test_every_method_answers_jsonrpc2(tegadb_peer):
    """jsonrpcserver's 2.0 dispatch reaches each method of the registry, and
    a bad call still gets the method's own error."""
    server = tegadb_peer()
    with server.client() as c:
        for i, (name, params, check) in enumerate(JSONRPC2_CALLS):
            c.send({"jsonrpc": "2.0", "method": name, "params": params, "id": i})
            reply = c.recv()
            assert reply.get("id") == i and "error" not in reply, (name, reply)
            assert check(reply["result"]), (name, reply)
        for i, name in enumerate(["monitor", "monitor_cond", "monitor_cond_since"], start=100):
            c.send({"jsonrpc": "2.0", "method": name, "id": i,
                    "params": ["Test", "bad", {"Root": [{"columns": [1.5]}]}]})
            reply = c.recv()
            assert reply["id"] == i and reply["error"]["code"] == -32602, (name, reply)
            assert reply["error"]["data"]["error"] == "syntax error", (name, reply)


def test_oversized_message_closes_connection(tegadb_peer, tmp_path):
    server = tegadb_peer()
    with server.client() as c:
        # Well past the cap? The default cap is 64 MiB; send an incomplete
        # 65 MiB string and expect the connection to be closed.
        c.send_raw(b'{"method":"echo","id":1,"params":["')
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(66):
                c.send_raw(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.wait_closed(timeout=10)
    with server.client() as c:
        assert c.request("echo", [])["result"] == []


def test_data_survives_restart(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        c.transact("Test",
                   {"op": "insert", "table": "Root", "row": {"name": "keep", "count": 5}},
                   {"op": "insert", "table": "Root", "row": {"name": "gone"}},
                   {"op": "comment", "comment": "first"})
        c.transact("Test", {"op": "delete", "table": "Root", "where": [["name", "==", "gone"]]})
        c.transact("Test", {"op": "mutate", "table": "Root", "where": [["name", "==", "keep"]],
                            "mutations": [["count", "+=", 2]]})
        before = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                     "columns": ["_uuid", "name", "count"]})
    server.restart()
    with server.client() as c:
        after = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                    "columns": ["_uuid", "name", "count"]})
    assert after == before
    assert after[0]["rows"][0]["count"] == 7


def test_blocking_wait_parks_transaction_not_connection(peer):
    server = peer()
    with server.client() as waiter, server.client() as writer:
        wait_id = waiter.next_id()
        waiter.send({"method": "transact", "id": wait_id, "params": ["Test", {
            "op": "wait", "table": "Root", "where": [["name", "==", "w"]], "columns": ["name"],
            "until": "==", "rows": [{"name": "w"}], "timeout": 10000}]})
        # The same connection keeps answering while the transaction is parked.
        assert waiter.request("echo", ["busy"])["result"] == ["busy"]
        writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "w"}})
        assert waiter.reply(wait_id)["result"] == [{}]


def test_wait_times_out(peer):
    server = peer()
    with server.client() as c:
        start = time.monotonic()
        result = c.transact("Test", {"op": "wait", "table": "Root", "where": [],
                                     "columns": ["name"], "until": "==",
                                     "rows": [{"name": "zz"}], "timeout": 300})
        elapsed = time.monotonic() - start
    assert result[0]["error"] == "timed out"
    assert result[0]["details"].startswith('"wait" timed out after ')
    # Both servers time on a millisecond clock (OVS's time_msec, libuv's
    # loop time), so the wait may end up to a tick before 300 ms by ours:
    # ovsdb-server once answered after 299.88 ms.
    assert elapsed >= 0.3 - 0.002


def test_many_clients_are_independent(peer):
    server = peer()
    clients = [RawClient(server.remote_unix) for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": f"n{i}"}})
        rows = clients[0].transact("Test", {"op": "select", "table": "Root", "where": [],
                                            "columns": ["name"]})[0]["rows"]
    finally:
        for c in clients:
            c.close()
    assert sorted(r["name"] for r in rows) == sorted(f"n{i}" for i in range(20))


def test_bare_errors_in_both_dialects(tegadb_peer):
    """The bare-string errors: as they are on OVSDB's dialect, and with the
    JSON-RPC 2.0 code of their tag on 2.0 (messages.jsonrpc2_code)."""
    server = tegadb_peer()
    with server.client() as c:
        assert c.request("monitor_cancel", ["nope"]) == {"id": 0, "error": "unknown monitor"}
        assert c.request("monitor_cancel", [1, 2]) == {"id": 1, "error": "invalid parameters"}
        c.send({"jsonrpc": "2.0", "method": "monitor_cancel", "params": ["nope"], "id": 2})
        assert c.recv() == {"jsonrpc": "2.0", "id": 2, "error": {
            "code": -32000, "message": "unknown monitor", "data": "unknown monitor"}}
        c.send({"jsonrpc": "2.0", "method": "monitor_cancel", "params": [1, 2], "id": 3})
        assert c.recv() == {"jsonrpc": "2.0", "id": 3, "error": {
            "code": -32602, "message": "invalid parameters", "data": "invalid parameters"}}


def test_jsonrpc2_params_may_be_omitted(tegadb_peer):
    """JSON-RPC 2.0 makes params optional, unlike the OVSDB dialect."""
    server = tegadb_peer()
    with server.client() as c:
        c.send({"jsonrpc": "2.0", "method": "echo", "id": 1})
        assert c.recv() == {"jsonrpc": "2.0", "result": [], "id": 1}
        c.send({"jsonrpc": "2.0", "method": "list_dbs", "id": 2})
        assert sorted(c.recv()["result"]) == ["Test", "_Server"]


def test_malformed_jsonrpc2_requests_get_jsonrpc2_errors(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        c.send({"jsonrpc": "2.0", "method": "echo", "params": {"named": 1}, "id": 1})
        reply = c.recv()
        assert reply["id"] == 1 and reply["error"]["code"] == -32602
        c.send({"jsonrpc": "2.0", "method": "echo", "params": [], "id": 2, "extra": True})
        reply = c.recv()
        assert reply["error"]["code"] == -32600
        c.send({"jsonrpc": "2.0", "method": "transact", "params": ["Nope"], "id": 3})
        reply = c.recv()
        assert reply["error"]["code"] == -32000
        assert reply["error"]["data"]["error"] == "unknown database"
        # Still connected.
        assert c.request("echo", ["ok"])["result"] == ["ok"]


def dump(client):
    """Every row of every Test table, all columns but _version."""
    tables = ["Root", "Child", "Weak", "Singleton"]
    results = client.transact("Test", *[{"op": "select", "table": t, "where": []}
                                        for t in tables])
    return {t: sorted(({k: v for k, v in row.items() if k != "_version"}
                       for row in r["rows"]), key=repr) for t, r in zip(tables, results)}


def test_restart_keeps_gc_and_weak_reference_cleanups_and_ignores_failures(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        c.transact("Test",
                   {"op": "insert", "table": "Weak", "row": {"name": "w1"}, "uuid-name": "w1"},
                   {"op": "insert", "table": "Weak", "row": {"name": "w2"}, "uuid-name": "w2"},
                   {"op": "insert", "table": "Child", "row": {"value": "c"}, "uuid-name": "c"},
                   {"op": "insert", "table": "Root", "row": {
                       "name": "r", "weak": ["set", [["named-uuid", "w1"], ["named-uuid", "w2"]]],
                       "children": ["named-uuid", "c"]}})
        # Deleting w1 removes it from Root.weak; emptying children collects the Child.
        c.transact("Test", {"op": "delete", "table": "Weak", "where": [["name", "==", "w1"]]},
                   {"op": "update", "table": "Root", "where": [], "row": {
                       "children": ["set", []]}})
        size = (server.directory / "Test.db").stat().st_size
        failed = c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "x"}},
                            {"op": "insert", "table": "Root", "row": {"count": 1000}})
        assert failed[1]["error"] == "constraint violation"
        assert (server.directory / "Test.db").stat().st_size == size
        before = dump(c)
    assert before["Child"] == []
    assert [w["name"] for w in before["Weak"]] == ["w2"]
    assert before["Root"][0]["weak"] == before["Weak"][0]["_uuid"]
    server.restart()
    with server.client() as c:
        assert dump(c) == before

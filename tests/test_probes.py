"""Inactivity probes and echo handling over real sockets (PROTOCOL.md 1.5)."""

from __future__ import annotations

import time

from peers import TEST_SCHEMA, start_tegadb_server


def test_idle_tcp_peer_is_probed_then_dropped(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--inactivity-probe=1000"])
    try:
        with server.client(tcp=True) as c:
            start = time.monotonic()
            assert c.recv(timeout=3) == {"id": "echo", "method": "echo", "params": []}
            assert 0.9 <= time.monotonic() - start < 2.5
            assert c.wait_closed(timeout=3)
            assert time.monotonic() - start >= 1.9
        assert "no response to inactivity probe" in server.log_path.read_text()
    finally:
        server.stop()


def test_answering_probes_keeps_the_connection(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--inactivity-probe=1000"])
    try:
        with server.client(tcp=True) as c:
            for _ in range(3):
                probe = c.recv(timeout=3)
                assert probe["method"] == "echo"
                # The reply to a probe is swallowed by the server: no answer comes back.
                c.send({"id": "echo", "result": [], "error": None})
            assert c.request("echo", ["alive"])["result"] == ["alive"]
    finally:
        server.stop()


def test_unix_socket_peers_are_not_probed(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--inactivity-probe=1000"])
    try:
        with server.client() as c:
            assert not c.wait_closed(timeout=2.5)
            assert c.request("echo", [])["result"] == []
    finally:
        server.stop()


def test_set_db_change_aware(peer):
    server = peer()
    with server.client() as c:
        assert c.request("set_db_change_aware", [True])["result"] == {}
        error = c.request("set_db_change_aware", ["yes"])["error"]
        assert error == {"error": "syntax error",
                         "details": "set_db_change_aware: true or false parameter expected",
                         "syntax": '["yes"]'}


def test_cancel_parked_transaction(peer):
    server = peer()
    with server.client() as c:
        c.request("set_db_change_aware", [True])
        c.send({"method": "transact", "id": "w", "params": ["Test", {
            "op": "wait", "table": "Root", "where": [], "columns": ["name"], "until": "==",
            "rows": [{"name": "never"}]}]})
        c.send({"method": "cancel", "params": ["w"], "id": None})
        assert c.reply("w") == {"id": "w", "error": "canceled"}

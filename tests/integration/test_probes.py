"""Inactivity probes and echo handling over real sockets (PROTOCOL.md 1.5)."""

from __future__ import annotations

import socket
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


def test_unix_socket_peers_are_probed_unless_told_not_to(tmp_path):
    probed = start_tegadb_server(tmp_path / "p", [TEST_SCHEMA], ["--inactivity-probe=1000"])
    unprobed = start_tegadb_server(tmp_path / "u", [TEST_SCHEMA],
                                   ["--inactivity-probe=1000", "--no-unix-probes"])
    try:
        with probed.client() as c, unprobed.client() as quiet:
            assert c.recv(timeout=3) == {"id": "echo", "method": "echo", "params": []}
            assert c.wait_closed(timeout=3)
            assert not quiet.wait_closed(timeout=0.5)
            assert quiet.request("echo", [])["result"] == []
        assert "no response to inactivity probe" in probed.log_path.read_text()
    finally:
        probed.stop()
        unprobed.stop()


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


def test_client_that_does_not_read_is_dropped_past_the_backlog_limit(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--max-backlog=300000"])
    try:
        with server.client() as slow, server.client() as other:
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            big = "x" * 1_000_000
            try:
                for i in range(4):
                    slow.send({"method": "echo", "params": [big], "id": i})
            except (BrokenPipeError, ConnectionResetError):
                pass  # dropped while still sending: what this test wants
            deadline = time.monotonic() + 10
            while "output backlog" not in server.log_path.read_text():
                assert time.monotonic() < deadline, server.diagnostics()
                time.sleep(0.05)
            # Everyone else is served as before.
            assert other.request("echo", ["fine"])["result"] == ["fine"]
    finally:
        server.stop()


def test_monitor_updates_merge_while_a_client_does_not_read(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    try:
        with server.client() as slow, server.client() as writer:
            slow.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["count", "tags"]}]}])
            writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "n"}})
            # 300 updates of ~4 kB each: far more than the socket buffers hold.
            for i in range(300):
                writer.transact("Test", {"op": "update", "table": "Root", "where": [],
                                         "row": {"count": i % 100,
                                                 "tags": ["set", [f"{i}" + "x" * 4000]]}})
            # Now read everything: the final state arrives, in fewer notifications
            # than commits because updates merged while the client was backed up.
            count = None
            received = 0
            while count != 99:
                message = slow.wait_notification("update2", timeout=5)
                received += 1
                for row in message["params"][1]["Root"].values():
                    change = row.get("modify") or row.get("insert") or {}
                    count = change.get("count", count)
            assert received < 300
    finally:
        server.stop()

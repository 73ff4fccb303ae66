"""``tegadb_writers``: who committed a transaction still in the history, and
when (what ``tegadb-client watch`` shows), kept across a restart."""

from __future__ import annotations

import time

ZERO = "00000000-0000-0000-0000-000000000000"
MONITOR = {"Root": [{"columns": ["name"]}]}


def last_txn(client) -> str:
    reply = client.request("monitor_cond_since", ["Test", "m", MONITOR, ZERO])["result"]
    client.request("monitor_cancel", ["m"])
    return reply[1]


def test_writers_name_the_committing_client_and_survive_a_restart(tegadb_peer):
    server = tegadb_peer()
    before = int(time.time() * 1000)
    with server.client(tcp=True) as tcp_writer:
        tcp_writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "a"}})
        first = last_txn(tcp_writer)
        tcp_address = "{}:{}".format(*tcp_writer.sock.getsockname())
    with server.client() as unix_writer:
        unix_writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "b"}})
        second = last_txn(unix_writer)
    after = int(time.time() * 1000)
    for attempt in ("running", "restarted"):
        with server.client() as c:
            writers = c.request("tegadb_writers", ["Test", [first, second, ZERO]])["result"]
        assert set(writers) == {first, second}, (attempt, writers)
        assert writers[first]["writer"] == tcp_address, attempt
        assert writers[second]["writer"] == server.remote_unix, attempt
        assert all(before <= w["date"] <= after for w in writers.values()), (attempt, writers)
        if attempt == "running":
            server.restart()


def test_writers_refuses_bad_params(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        for params in (["Test"], ["Test", "x"], ["Test", [1]], ["Test", [], 3]):
            error = c.request("tegadb_writers", params)["error"]
            assert error["error"] == "syntax error", (params, error)
            assert "tegadb_writers request params" in error["details"], error
        error = c.request("tegadb_writers", ["Nope", []])["error"]
        assert error["error"] == "unknown database", error

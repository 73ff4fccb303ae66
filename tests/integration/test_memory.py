"""Memory bounds (issue 14, item 3): a cap on the input held by all
connections together, memory handed back after a burst, and the JSON
nesting cap of ovsdb-server's parser."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from peers import TEST_SCHEMA, ConnectionClosed, Peer, RawClient, start_tegadb_server

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def unfinished(client: RawClient, size: int) -> bool:
    """Send the start of an echo request of `size` bytes, never its end;
    False if the server dropped the connection meanwhile."""
    try:
        client.send_raw(b'{"method":"echo","id":"big","params":["' + b"x" * size)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def finish(client: RawClient) -> None:
    client.send_raw(b'"]}')
    assert client.reply("big", timeout=30)["error"] is None


def settle(server: Peer, client: RawClient) -> None:
    """Until the server read everything sent so far (an echo of its own comes back)."""
    assert client.request("echo", ["sync"], timeout=30)["result"] == ["sync"]


@pytest.fixture
def capped(tmp_path: Path) -> Peer:
    peer = start_tegadb_server(tmp_path / "capped", [TEST_SCHEMA], [f"--max-input={8 * MiB}"])
    yield peer
    peer.stop()


def test_input_across_connections_is_capped(capped: Peer) -> None:
    """Four clients each hold 3 MiB of an unfinished message under an 8 MiB
    cap: the server drops clients until it holds no more than the cap, and
    the others finish their messages as usual."""
    clients = [capped.client(timeout=30) for _ in range(4)]
    syncs = [capped.client(timeout=30) for _ in range(4)]
    try:
        for client, sync in zip(clients, syncs, strict=True):
            unfinished(client, 3 * MiB)
            settle(capped, sync)
        dropped = [c for c in clients if c.wait_closed(timeout=0.5)]
        kept = [c for c in clients if c not in dropped]
        assert len(dropped) == 2 and len(kept) == 2  # 4 x 3 MiB > 8 MiB >= 2 x 3 MiB
        for client in kept:
            finish(client)
        log = capped.log_path.read_text()
        assert log.count("exceeds the limit of 8388608; this one holds 3145") == 2, log
    finally:
        for client in clients + syncs:
            client.close()


def test_memory_goes_back_after_a_burst(tegadb_peer) -> None:
    """Four clients each send 60 MiB of an unfinished message, then leave:
    the server's RSS comes back to within a few MiB of where it was (glibc
    kept it all before: 28 MiB, 270 at the peak, 270 after)."""
    server = tegadb_peer()
    with server.client() as client:
        settle(server, client)
    before = rss_mib(server.pid)
    clients = [server.client(timeout=30) for _ in range(4)]
    with server.client(timeout=30) as sync:
        for client in clients:
            assert unfinished(client, 60 * MiB)
        settle(server, sync)
        peak = rss_mib(server.pid)
        for client in clients:
            client.sock.shutdown(socket.SHUT_RDWR)
            client.close()
        deadline = time.monotonic() + 10
        while rss_mib(server.pid) > before + 16 and time.monotonic() < deadline:
            time.sleep(0.1)
        settle(server, sync)
    after = rss_mib(server.pid)
    assert peak > before + 200  # the burst was held (4 x 60 MiB)
    assert after < before + 16, (before, peak, after)


@pytest.mark.parametrize("depth", [1000, 1001])
def test_json_nesting_is_capped_as_ovsdb_servers_parser_caps_it(peer, depth: int) -> None:
    """ovsdb-server's JSON parser takes 1000 levels and no more (PROTOCOL.md 1.2)."""
    server = peer()
    # The request object is one level, its params array and what it holds
    # the others.  An unknown method: its reply does not echo them back.
    nested = b"[" * (depth - 1) + b"]" * (depth - 1)
    with server.client() as client:
        client.send_raw(b'{"method":"no_such_method","id":1,"params":' + nested + b"}")
        if depth <= 1000:
            assert client.reply(1)["error"] == "unknown method"
        else:
            with pytest.raises(ConnectionClosed):
                client.reply(1)

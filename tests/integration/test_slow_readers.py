"""Clients that do not read (issue 14, item 5): dropped at once when their
output backlog would pass the limit or they fail a probe, with the socket
closed from the server's side and their memory and locks released."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

from peers import TEST_SCHEMA, RawClient, start_tegadb_server

ROW_BYTES = 200_000


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def never_reading(client: RawClient) -> RawClient:
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return client


def bytes_until_closed(client: RawClient, timeout: float) -> int:
    """Read (and discard) until the server closes the socket; how many bytes came."""
    client.sock.settimeout(timeout)
    total = 0
    try:
        while chunk := client.sock.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


def wait_for_log(server, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := server.log_path.read_text()):
        assert time.monotonic() < deadline, server.diagnostics()
        time.sleep(0.05)
    return log


def take_lock(client: RawClient, name: str) -> bool:
    return bool(client.request("lock", [name])["result"]["locked"])


def test_reader_past_the_backlog_limit_is_aborted_before_it_grows(tmp_path):
    limit = 10_000_000
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA],
                                 [f"--max-backlog={limit}", "--inactivity-probe=0"])
    try:
        with server.client() as writer, never_reading(server.client()) as slow:
            writer.transact("Test", *[{"op": "insert", "table": "Root",
                                       "row": {"name": f"r{i}" + "x" * ROW_BYTES}}
                                      for i in range(10)])
            assert take_lock(slow, "slow_lock")
            baseline = status_kib(server.pid, "VmRSS")
            # 40 transactions that each commit (so their replies wait for the
            # group commit together) and read 2 MB: 80 MB of replies unbounded.
            select = {"op": "select", "table": "Root", "where": []}
            slow.send_raw(b"".join(json.dumps(
                {"method": "transact", "id": i, "params": [
                    "Test", {"op": "insert", "table": "Weak", "row": {}}, select]}).encode()
                for i in range(40)))
            log = wait_for_log(server, "output backlog", timeout=20)
            backlog = int(re.search(r"output backlog of (\d+) bytes", log).group(1))
            assert backlog <= limit
            # Aborted: the queued megabytes are dropped, not flushed to it.
            assert bytes_until_closed(slow, timeout=5) < 2_000_000
            peak = status_kib(server.pid, "VmHWM")
            assert (peak - baseline) * 1024 < 4 * limit, (baseline, peak)
            # Its session is gone: the lock it held is free.
            assert take_lock(writer, "slow_lock")
            time.sleep(0.5)
            after = status_kib(server.pid, "VmRSS")
            assert (after - baseline) * 1024 < limit // 2, (baseline, peak, after)
    finally:
        server.stop()


def test_reader_that_fails_a_probe_is_aborted_while_monitors_produce_updates(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--inactivity-probe=1000"])
    try:
        with server.client() as writer, never_reading(server.client()) as slow:
            slow.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]}]}])
            assert take_lock(slow, "slow_lock")
            start = time.monotonic()
            i = 0
            while "no response to inactivity probe" not in server.log_path.read_text():
                assert time.monotonic() - start < 10, server.diagnostics()
                writer.transact("Test", {"op": "insert", "table": "Root",
                                         "row": {"name": f"r{i}" + "x" * 20_000}})
                i += 1
            # Dropped after one probe interval of silence and one more unanswered.
            assert 1.9 <= time.monotonic() - start < 5
            assert bytes_until_closed(slow, timeout=5) < 2_000_000
            assert take_lock(writer, "slow_lock")
    finally:
        server.stop()

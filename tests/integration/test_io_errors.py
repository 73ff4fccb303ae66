"""A full disk under a running server (issue 14, item 2), on a real tmpfs:
writes fail with "I/O error" while reads and monitors go on, writes work
again once there is room, without a restart, and a restart then serves
exactly what was acknowledged."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import REPO_ROOT, TEST_SCHEMA, Peer, RawClient

from tegadb.server.journal import check

DB = "Test"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_tool", *args],
                          capture_output=True, text=True, env=env, check=False)


@pytest.fixture
def server(tmp_path: Path, disk: Path) -> Iterator[Peer]:
    """tegadb-server with its database on the tmpfs, everything else off it."""
    db_file = disk / "Test.db"
    assert tool("create", str(db_file), str(TEST_SCHEMA)).returncode == 0
    directory = tmp_path / "server"
    directory.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "tegadb.server", f"--remote=punix:{directory / 'db.sock'}",
                f"--remote=ptcp:{port}:127.0.0.1", f"--log-file={directory / 'server.log'}",
                f"--unixctl={directory / 'server.ctl'}", str(db_file)]

    peer = Peer("tegadb", directory, command, env)
    peer.start()
    yield peer
    peer.stop()


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def insert(name: str) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "row": {"name": name}}


def send(client: RawClient, method: str, params: list[Any]) -> int:
    """Send a request without waiting for its reply; its id."""
    request_id = client.next_id()
    client.send({"method": method, "params": params, "id": request_id})
    return request_id


def names(client: RawClient) -> list[str]:
    rows = client.transact(DB, {"op": "select", "table": "Root", "where": [],
                                "columns": ["name"]})[0]["rows"]
    return sorted(r["name"] for r in rows)


def test_a_full_disk_fails_writes_only_until_there_is_room(server: Peer, disk: Path) -> None:
    db_file = disk / "Test.db"
    watcher = server.client()
    watcher.request("monitor_cond", [DB, "m", {"Root": [{"columns": ["name"]}]}])
    acked = []
    with server.client() as client:
        for i in range(5):
            client.transact(DB, insert(f"before{i}"))
            acked.append(f"before{i}")
        fill(disk / "filler")
        # Pipelined: they fail together or one by one, each with its own reply.
        # Names longer than a page: no record fits in the file's last page.
        big = "x" * 5000
        ids = [send(client, "transact", [DB, insert(f"lost{i}{big}")]) for i in range(4)]
        for request_id in ids:
            *results, failure = client.reply(request_id)["result"]
            assert "uuid" in results[0]
            assert failure["error"] == "I/O error"
            assert failure["details"] == f"{db_file}: No space left on device"
        # The server is up, serves reads, and memory holds no failed write.
        assert names(client) == sorted(acked)
        # No half line left behind (tegadb-tool check refuses a file in use).
        assert check(str(db_file)).problems == []
        (disk / "filler").unlink()
        client.transact(DB, insert("after"))  # room again: no restart needed
        acked.append("after")
    # The watcher saw the acknowledged inserts only.
    seen = []
    for _ in range(6):
        update = watcher.wait_notification("update2")
        seen += [row["insert"]["name"] for row in update["params"][1]["Root"].values()]
    assert sorted(seen) == sorted(acked)
    watcher.close()
    assert "No space left on device; failing the" in server.log_path.read_text()
    server.restart()
    with server.client() as client:
        assert names(client) == sorted(acked)
    server.stop()
    checked = tool("check", str(db_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr

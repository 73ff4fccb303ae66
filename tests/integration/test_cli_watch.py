"""tegadb-client watch: another client's changes as they happen.

The watch runs as a real subprocess against a real server; changes are made
with tegadb-client's database commands (another connection), and the lines
the watch prints are checked: one per row change, the transaction id, the
diff, JSON for scripts, colour only on a terminal.  The watch survives a
server restart without printing anything twice, and ends cleanly on Ctrl-C
(status 130) and when its reader goes away (``| head``).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import REPO_ROOT, SCHEMA_DIR, Peer

ROUTER = SCHEMA_DIR / "router.ovsschema"
DEADLINE = 20.0
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<txn>[0-9a-f-]{36}|-) "
                  r"(?P<writer>\S+) (?P<rest>.*)")
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
CLIENT = [sys.executable, "-m", "tegadb.cli.client_main"]


class WatchProcess:
    """``tegadb-client watch ARGS``, started and ready (its "watching" line read)."""

    def __init__(self, *args: str, stdout: int | None = subprocess.PIPE) -> None:
        self.process = subprocess.Popen([*CLIENT, "watch", *args], stdout=stdout,
                                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                        env=ENV)
        self.stderr = self._read_line(self.process.stderr)
        assert "watching" in self.stderr, self.stderr + self.finish()[2]
        self.lines: list[str] = []

    def _read_line(self, stream: object) -> str:
        assert stream is not None
        fd = stream.fileno()  # type: ignore[attr-defined]
        data = b""
        deadline = time.monotonic() + DEADLINE
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 1)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def next_lines(self, count: int) -> list[str]:
        got = [self._read_line(self.process.stdout) for _ in range(count)]
        self.lines += got
        return [line.rstrip("\n") for line in got]

    def quiet(self, seconds: float = 0.5) -> bool:
        """True if nothing more is printed for ``seconds``."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout.fileno()], [], [], seconds)
        return not ready

    def finish(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            out, err = self.process.communicate(timeout=DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, (out or b"").decode(), (err or b"").decode()


def client(peer: Peer, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLIENT, f"--db={peer.remote_unix}", *args], capture_output=True,
                            text=True, env=ENV, timeout=DEADLINE)
    assert result.returncode == 0, result.stderr
    return result


def _router(factory) -> Peer:  # type: ignore[no-untyped-def]
    peer: Peer = factory(ROUTER)
    client(peer, "create", "Interface", "name=lan", "type=ethernet", "addressing=static",
           "mtu=1500")
    return peer


@pytest.fixture
def router(tegadb_peer) -> Peer:  # type: ignore[no-untyped-def]
    """tegadb-server with the Router example and one interface, lan."""
    return _router(tegadb_peer)


@pytest.fixture
def any_router(peer) -> Peer:  # type: ignore[no-untyped-def]
    """The same on each server: ovsdb-server cannot resume (found: false)."""
    return _router(peer)


def test_watch_shows_each_change_of_another_client(any_router: Peer) -> None:
    router = any_router
    watch = WatchProcess(f"--db={router.remote_unix}", "Interface", "mtu", "addresses")
    try:
        client(router, "set", "Interface", "lan", "mtu=9000", "--",
               "add", "Interface", "lan", "addresses", "10.0.0.1/24")
        client(router, "create", "Interface", "name=wan", "type=ethernet", "addressing=dhcp")
        client(router, "destroy", "Interface", "wan")
        lines = watch.next_lines(3)
        parsed = [LINE.fullmatch(line) for line in lines]
        assert all(parsed), lines
        rests = [m.group("rest") for m in parsed if m]
        assert rests == ['Interface lan mtu: 1500 -> 9000, addresses: [] -> ["10.0.0.1/24"]',
                         "Interface wan +", "Interface wan -"]
        txns = [m.group("txn") for m in parsed if m]
        writers = [m.group("writer") for m in parsed if m]
        # One transaction each; a standalone ovsdb-server names none, nor their writers.
        if router.kind == "ovsdb-server":
            assert txns == ["-"] * 3 and writers == ["-"] * 3
        else:
            assert len(set(txns)) == 3
            # tegadb-server names the client that committed each (tegadb_writers).
            assert writers == [f"unix:{router.unix_path}"] * 3, writers
        assert watch.quiet()
    finally:
        status, _, err = watch.finish()
    assert status == 130, err
    assert "Traceback" not in err


def test_watch_json_where_and_since(router: Peer) -> None:
    watch = WatchProcess(f"--db={router.remote_unix}", "--format=json", "Interface",
                         "--where", "mtu>1000")
    try:
        client(router, "set", "Interface", "lan", "mtu=9000")
        client(router, "create", "Interface", "name=wan", "type=ethernet",
               "addressing=dhcp", "mtu=576")  # outside the condition: not shown
        client(router, "set", "Interface", "lan", "mtu=1400")
        first, second = (json.loads(line) for line in watch.next_lines(2))
        assert watch.quiet()
    finally:
        watch.finish()
    assert (first["table"], first["row"], first["op"]) == ("Interface", "lan", "modify")
    assert first["changes"] == {"mtu": {"old": 1500, "new": 9000}}
    assert first["writer"] == f"unix:{router.unix_path}"
    assert second["changes"] == {"mtu": {"old": 9000, "new": 1400}}
    # --since: what came after the first change, at once.
    again = WatchProcess(f"--db={router.remote_unix}", "--format=json", "--since", first["txn"],
                         "Interface", "mtu")
    try:
        replayed = [json.loads(line) for line in again.next_lines(2)]
        assert again.quiet()
    finally:
        again.finish()
    # Replayed: the rows as the changes left them (old values unknown to a new watch).
    assert sorted((r["row"], r["op"], r["changes"]["mtu"]["new"]) for r in replayed) == [
        ("lan", "modify", 1400), ("wan", "insert", 576)]


def test_watch_resumes_after_a_restart_without_repeating(any_router: Peer) -> None:
    router = any_router
    watch = WatchProcess(f"--db={router.remote_unix}", "Interface", "mtu")
    try:
        client(router, "set", "Interface", "lan", "mtu=2000")
        assert watch.next_lines(1)[0].endswith("Interface lan mtu: 1500 -> 2000")
        router.restart()
        client(router, "set", "Interface", "lan", "mtu=3000")
        assert watch.next_lines(1)[0].endswith("Interface lan mtu: 2000 -> 3000")
        assert watch.quiet(1.0)
    finally:
        status, out, err = watch.finish()
    assert status == 130
    assert "connection lost" in err and "reconnected" in err and "Traceback" not in err
    assert out == ""  # everything was read above: nothing printed twice


def test_watch_colours_only_on_a_terminal(router: Peer) -> None:
    controller, terminal = pty.openpty()
    try:
        watch = WatchProcess(f"--db={router.remote_unix}", "Interface", "mtu", stdout=terminal)
        try:
            client(router, "create", "Interface", "name=wan", "type=ethernet",
                   "addressing=dhcp")
            client(router, "destroy", "Interface", "wan")
            text = b""
            deadline = time.monotonic() + DEADLINE
            while text.count(b"\n") < 2 and time.monotonic() < deadline:
                if select.select([controller], [], [], 0.1)[0]:
                    text += os.read(controller, 4096)
        finally:
            watch.finish()
    finally:
        os.close(controller)
        os.close(terminal)
    insert, delete = text.decode().splitlines()[:2]
    assert "\x1b[32m" in insert and "Interface wan +" in insert  # green
    assert "\x1b[31m" in delete and "Interface wan -" in delete  # red
    # In a pipe, plain text (the other tests read it).


def test_watch_ends_cleanly_when_its_reader_goes(router: Peer, tmp_path: Path) -> None:
    pipeline = subprocess.Popen(
        f"{' '.join(CLIENT)} watch --db={router.remote_unix} Interface mtu | head -n 1",
        shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    try:
        assert pipeline.stderr is not None
        assert "watching" in pipeline.stderr.readline()
        for mtu in range(1600, 1610):  # after head exits, a write finds the pipe closed
            client(router, "set", "Interface", "lan", f"mtu={mtu}")
        out, err = pipeline.communicate(timeout=DEADLINE)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait()
    assert out.count("\n") == 1 and "mtu: 1500 -> 1600" in out
    assert "Traceback" not in err and "Error" not in err


def test_watch_errors(router: Peer, tmp_path: Path) -> None:
    def watch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLIENT, "watch", *args], capture_output=True, text=True,
                              env=ENV, timeout=DEADLINE)

    db = f"--db={router.remote_unix}"
    assert watch(db, "Interfce").stderr == (
        'tegadb-client: unknown table "Interfce"; did you mean "Interface"?\n')
    assert watch(db, "Interface", "mut").stderr == (
        'tegadb-client: Interface does not contain a column whose name matches "mut"; '
        'did you mean "mtu"?\n')
    bad_where = watch(db, "Interface", "--where", "mtu")
    assert bad_where.returncode == 1 and "OP one of" in bad_where.stderr
    assert watch(db, "Interface", "--since", "yesterday").stderr == (
        'tegadb-client: --since "yesterday" is not a transaction id (a UUID)\n')
    assert "--where=COND" in watch("--help").stdout
    gone = watch(f"--db=unix:{tmp_path}/none.sock", "Interface")
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1

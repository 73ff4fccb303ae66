"""The real ovsdb-client's long-running commands against ovsdb-server and tegadb.

``ovsdb-client monitor``, ``monitor-cond``, ``monitor-cond-since``, ``lock``
and ``steal`` run as subprocesses whose stdout is read as it comes, with a
deadline on every wait, and are killed at the end.  Another client changes
the data (insert, modify, delete) in steps; after each step the test waits
for the kinds of rows the step shows (``insert``, ``old``/``new``, ``delete``
...).  The monitor scenarios run against both servers at once, and what
ovsdb-client printed for tegadb must equal what it printed for ovsdb-server
once UUIDs are normalized.  Lock transcripts hold no UUIDs: each server must
print exactly the expected text.

`Watcher` is also used by tests/integration/test_cli_client.py to run tegadb-client's
monitor and lock commands beside ovsdb-client's.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

import pytest
from peers import TEST_SCHEMA, Peer, PeerFactory

DEADLINE = 5.0  # seconds to wait for any one expected output
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
ACTION = re.compile(r"(?<![\w-])(initial|insert|modify|delete|old|new)(?![\w-])")
DASHES = re.compile(r"-+( -+)*")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


# --- a command that keeps running --------------------------------------------------

class Watcher:
    """A client subprocess whose stdout is collected as it arrives.

    Every wait has a deadline; `stop()` kills the process (by its pid) and
    returns its exit status and all its output.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env, cwd=cwd)
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._data = bytearray()
        self._eof = False
        self._result: tuple[int, str, str] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def output(self) -> str:
        """Everything printed so far."""
        self._read(0)
        return self._data.decode(errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The output once ``predicate(output)`` holds, or as it is at the deadline
        (or when the program ends); the caller asserts."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.output
            remaining = deadline - time.monotonic()
            if predicate(text) or remaining <= 0 or self._eof:
                return text
            self._read(remaining)

    def wait_exit(self, timeout: float = DEADLINE) -> tuple[int | None, str, str]:
        """Exit status (None if still running at the deadline), stdout and stderr."""
        self.wait_for(lambda _: False, timeout)
        try:
            self.process.wait(max(0.1, timeout / 10))
        except subprocess.TimeoutExpired:
            pass
        return self.stop() if self.process.returncode is not None else (None, self.output, "")

    def stop(self) -> tuple[int, str, str]:
        """Kill the program if it still runs; its exit status, stdout and stderr."""
        if self._result is None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(DEADLINE)
            deadline = time.monotonic() + DEADLINE
            while not self._eof and time.monotonic() < deadline:
                self._read(deadline - time.monotonic())
            assert self.process.stdout is not None and self.process.stderr is not None
            self.process.stdout.close()
            err = self.process.stderr.read().decode(errors="replace")
            self.process.stderr.close()
            self._result = (self.process.returncode, self._data.decode(errors="replace"), err)
        return self._result

    def _read(self, timeout: float) -> None:
        """Take what is in the pipe, waiting up to ``timeout`` for something."""
        if self._eof or self._result is not None:
            return
        ready, _, _ = select.select([self._fd], [], [], max(timeout, 0))
        while ready:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
                return
            self._data += chunk


@pytest.fixture(name="watch")
def watch_fixture() -> Iterator[Callable[..., Watcher]]:
    """Factory: ``watch(*argv)`` starts a Watcher; all are killed when the test ends.

    Every user runs the real ovsdb-client, so the test is skipped without it
    (and fails in CI).
    """
    if shutil.which("ovsdb-client") is None:
        message = "ovsdb-client not installed (run `make peers`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started: list[Watcher] = []

    def start(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Watcher:
        watcher = Watcher(argv, env, cwd)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def actions(text: str) -> Counter[str]:
    """How many rows of each kind (initial, insert, old, new, modify, delete) are shown."""
    return Counter(ACTION.findall(text))


def complete(text: str, expected: Counter[str]) -> bool:
    """True once ``text`` shows at least ``expected`` rows and ends a line."""
    return text.endswith("\n") and not expected - actions(text)


def showing(expected: Counter[str]) -> Callable[[str], bool]:
    """`complete` for these ``expected`` rows, as a predicate for `Watcher.wait_for`."""
    return lambda text: complete(text, expected)


def with_server(args: Sequence[str], remote: str) -> list[str]:
    """``args`` with SERVER placed right after the command (the first non-option)."""
    at = next((i + 1 for i, arg in enumerate(args) if not arg.startswith("-")), len(args))
    return [*args[:at], remote, *args[at:]]


# --- normalizing what differs between servers ---------------------------------------

def normalize(text: str, names: dict[str, str]) -> str:
    """``text`` with the server's random parts replaced consistently.

    Rows the test made get their names (``<a>``), other UUIDs (``_version``)
    a number in order of appearance (``<#1>``), both padded to 36 characters
    so that columns stay aligned; transaction ids become ``<txn>`` (ovsdb-
    server's are all zero).  Rows of one table update are sorted, since they
    come in the hash order of their UUIDs.
    """
    text = TIMESTAMP.sub("<time>", text)
    text = re.sub(f"last_id: {UUID}", "last_id: <txn>", text)
    text = re.sub(UUID, lambda m: _label(names[m.group()]) if m.group() in names
                  else m.group(), text)
    text = _sort_rows(text)
    others: dict[str, str] = {}
    return re.sub(UUID, lambda m: others.setdefault(m.group(), _label(f"#{len(others) + 1}")),
                  text)


def _label(name: str) -> str:
    return f"<{name}>".ljust(36, ".")


def _sort_rows(text: str) -> str:
    """Sort the rows under each table's dashes line (a row's "new" line stays with it)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        i += 1
        if not DASHES.fullmatch(out[-1]):
            continue
        groups: list[list[str]] = []
        while i < len(lines) and lines[i]:
            if lines[i].startswith(" ") and groups:
                groups[-1].append(lines[i])
            else:
                groups.append([lines[i]])
            i += 1
        out.extend(line for group in sorted(groups) for line in group)
    return "\n".join(out)


# --- the data and the steps that change it -----------------------------------------

class Step(NamedTuple):
    """Operations on the Test database (named-uuid "new" names a row), and what shows."""

    ops: list[dict[str, Any]]
    shows: dict[str, int]  # rows of each action the step adds to the output


def root_row(name: str, **columns: Any) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "uuid-name": "new", "row": {"name": name, **columns}}


def update(table: str, where_name: str, **row: Any) -> dict[str, Any]:
    return {"op": "update", "table": table, "where": [["name", "==", where_name]], "row": row}


def delete(*names: str) -> dict[str, Any]:
    """Delete the Root rows of these names: ``[name, "includes", set]`` needs a set
    column, so each is a separate op."""
    return {"op": "delete", "table": "Root", "where": [["name", "==", names[0]]]}


SEED = [
    root_row("a", count=1, tags=["set", ["x", "y"]], props=["map", [["k", "v"]]]),
    {"op": "insert", "table": "Root", "row": {"name": "b", "count": 7, "note": "with space"}},
    {"op": "insert", "table": "Weak", "row": {"name": "w"}},
]
INSERT_C = [root_row("c", count=3, tags="c", ratio=0.25)]
MODIFY_A = [update("Root", "a", count=2, tags=["set", ["z"]], props=["map", [["k", "v2"], ["n", "1"]]]),
            update("Weak", "w", name="w2")]
COUNT_C = [update("Root", "c", count=4)]  # a column the narrow monitors do not show
DELETE_BC = [delete("b"), delete("c")]


class Server:
    """A running server, a raw client to change its data, and the names of its rows."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.remote = peer.remote_unix
        self.client = peer.client()
        self.names: dict[str, str] = {}

    def apply(self, ops: list[dict[str, Any]]) -> None:
        """Run the ops; remember each inserted row's uuid under its name."""
        results = self.client.transact("Test", *ops)
        assert not any("error" in r for r in results if r), results
        for op, result in zip(ops, results):
            if op["op"] == "insert":
                self.names[result["uuid"][1]] = op["row"]["name"]

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def servers(ovsdb_peer: PeerFactory, tegadb_peer: PeerFactory) -> Iterator[list[Server]]:
    """ovsdb-server and tegadb, each holding the SEED rows."""
    pair = [Server(ovsdb_peer()), Server(tegadb_peer())]
    for server in pair:
        server.apply(SEED)
    yield pair
    for server in pair:
        server.close()


def run_scenario(servers: list[Server], watch: Callable[..., Watcher], args: list[str],
                 initial: dict[str, int], steps: list[Step]) -> list[str]:
    """``ovsdb-client ARGS`` (SERVER after the command) against each server, through
    ``steps``; returns each server's normalized output after the last step."""
    watchers = [watch("ovsdb-client", *with_server(args, s.remote)) for s in servers]
    expected: Counter[str] = Counter()
    for step in [Step([], initial), *steps]:
        for server in servers:
            if step.ops:
                server.apply(step.ops)
        expected += Counter(step.shows)
        for watcher in watchers:
            text = watcher.wait_for(showing(Counter(expected)))
            assert complete(text, expected), f"{watcher.argv}: wanted {dict(expected)}:\n{text}"
    outputs = []
    for server, watcher in zip(servers, watchers):
        _, out, err = watcher.stop()
        assert actions(out) == expected, f"{watcher.argv}:\n{out}{err}"
        assert "ovsdb-client:" not in err, err
        outputs.append(normalize(out, server.names))
    return outputs


STEPS_ALL_COLUMNS = [
    Step(INSERT_C, {"insert": 1}),
    Step(MODIFY_A, {"old": 1, "new": 1}),
    Step(COUNT_C, {"old": 1, "new": 1}),
    Step(DELETE_BC, {"delete": 2}),
]
SCENARIOS = {
    # v1: "update" notifications; a modification is an "old" and a "new" line.
    "monitor": (["monitor", "Test", "Root"], {"initial": 2}, STEPS_ALL_COLUMNS),
    "monitor columns": (["monitor", "Test", "Root", "name,tags,props"], {"initial": 2}, [
        Step(INSERT_C, {"insert": 1}),
        Step(MODIFY_A, {"old": 1, "new": 1}),
        Step(COUNT_C, {}),  # only an unmonitored column changed: nothing
        Step(DELETE_BC, {"delete": 2}),
    ]),
    # Several column sets with their own select flags; !initial, !delete.
    "monitor select": (["monitor", "Test", "Root", "name,count,!initial", "tags,!delete"],
                       {"initial": 2}, [
        Step(INSERT_C, {"insert": 1}),
        Step(MODIFY_A, {"old": 1, "new": 1}),
        Step(COUNT_C, {"old": 1, "new": 1}),
        Step(DELETE_BC, {"delete": 2}),
    ]),
    # Every table, each captioned; one transaction touches two tables.
    "monitor ALL": (["monitor", "Test", "ALL"], {"initial": 3}, [
        Step(INSERT_C, {"insert": 1}),
        Step(MODIFY_A, {"old": 2, "new": 2}),
        Step(COUNT_C, {"old": 1, "new": 1}),
        Step(DELETE_BC, {"delete": 2}),
    ]),
    "monitor json": (["--format=json", "monitor", "Test", "Weak"], {"initial": 1}, [
        Step(MODIFY_A, {"old": 1, "new": 1}),
        Step([{"op": "delete", "table": "Weak", "where": []}], {"delete": 1}),
    ]),
    # (Other formats than "table" keep to one row per table: rows come in hash order.)
    "monitor csv timestamp": (["--format=csv", "--timestamp", "monitor", "Test", "Weak"],
                              {"initial": 1}, [
        Step(MODIFY_A, {"old": 1, "new": 1}),
        Step([{"op": "delete", "table": "Weak", "where": []}], {"delete": 1}),
    ]),
    "monitor-cond list": (["--format=list", "monitor-cond", "Test", '[["name","!=","a"]]',
                           "Root", "name,count,tags,note"], {"initial": 1}, [
        Step(INSERT_C, {"insert": 1}),
        Step([delete("b")], {"delete": 1}),
        Step(COUNT_C, {"modify": 1}),
        Step([delete("c")], {"delete": 1}),
    ]),
    # v2: "update2"; modify shows only what changed (sets as a difference).
    "monitor-cond": (["monitor-cond", "Test", '[["count",">",1]]', "Root", "name,count,tags"],
                     {"initial": 1}, [
        Step(INSERT_C, {"insert": 1}),
        Step(MODIFY_A, {"insert": 1}),  # a enters the condition: a full row
        Step(COUNT_C, {"modify": 1}),
        Step([update("Root", "a", count=0)], {"delete": 1}),  # a leaves it
        Step(DELETE_BC, {"delete": 2}),
    ]),
    "monitor-cond all columns": (["monitor-cond", "Test", "[true]", "Root"], {"initial": 2},
                                 [Step(ops, {"modify": 1} if "old" in shows else shows)
                                  for ops, shows in STEPS_ALL_COLUMNS]),
    # v3: "update3" with the newest transaction id (all zero from ovsdb-server).
    "monitor-cond-since": (["monitor-cond-since", "Test", '[["name","!=","b"]]', "Root",
                            "name,count,props"], {"initial": 1}, [
        Step(INSERT_C, {"insert": 1}),
        Step(MODIFY_A, {"modify": 1}),
        Step(COUNT_C, {"modify": 1}),
        Step(DELETE_BC, {"delete": 1}),  # b was never shown
    ]),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS)
def test_monitor_output_matches_ovsdb_server(
        servers: list[Server], watch: Callable[..., Watcher],
        scenario: tuple[list[str], dict[str, int], list[Step]]) -> None:
    theirs, ours = run_scenario(servers, watch, *scenario)
    assert ours == theirs


def test_monitor_transcript(servers: list[Server], watch: Callable[..., Watcher]) -> None:
    """One transcript spelled out, to show what the comparisons compare."""
    args = ["monitor-cond-since", "Test", '[["count","<",5]]', "Root", "name,count,tags"]
    steps = [Step(INSERT_C, {"insert": 1}), Step(MODIFY_A, {"modify": 1}),
             Step(DELETE_BC, {"delete": 1})]
    expected = """\
found: false, last_id: <txn>
row                                  action  name count tags
------------------------------------ ------- ---- ----- ------
<a>................................. initial a    1     [x, y]

last_id: <txn>
row                                  action name count tags
------------------------------------ ------ ---- ----- ----
<c>................................. insert c    3     [c]

last_id: <txn>
row                                  action name count tags
------------------------------------ ------ ---- ----- ---------
<a>................................. modify      2     [x, y, z]

last_id: <txn>
row                                  action name count tags
------------------------------------ ------ ---- ----- ----
<c>................................. delete
"""
    assert run_scenario(servers, watch, args, {"initial": 1}, steps) == [expected, expected]


def test_monitor_cond_since_resumes(peer: PeerFactory, watch: Callable[..., Watcher]) -> None:
    """Given the last_id an earlier run printed, tegadb sends only what changed
    since; standalone ovsdb-server cannot, and sends everything again."""
    server = Server(peer())
    server.apply(SEED)
    args = ['[["name","!=","zzz"]]', "Root", "name,count"]
    first = watch("ovsdb-client", "monitor-cond-since", server.remote, "Test", *args)
    text = first.wait_for(showing(Counter(initial=2)))
    last_id = re.match(f"found: false, last_id: ({UUID})\n", text)
    assert last_id, text
    first.stop()
    for ops in (INSERT_C, MODIFY_A, [delete("b")]):
        server.apply(ops)
    second = watch("ovsdb-client", "monitor-cond-since", server.remote, "Test",
                   last_id.group(1), *args)
    if server.peer.kind == "ovsdb-server":
        assert last_id.group(1) == ZERO_UUID
        text = second.wait_for(showing(Counter(initial=2)))
        expected = """\
found: false, last_id: <txn>
row                                  action  name count
------------------------------------ ------- ---- -----
<a>................................. initial a    2
<c>................................. initial c    3
"""
    else:
        text = second.wait_for(showing(Counter(insert=1, modify=1, delete=1)))
        expected = """\
found: true, last_id: <txn>
row                                  action name count
------------------------------------ ------ ---- -----
<a>................................. modify      2
<b>................................. delete
<c>................................. insert c    3
"""
        assert last_id.group(1) != ZERO_UUID and text.startswith("found: true, last_id: ")
    assert normalize(text, server.names) == expected
    # Notifications keep coming, each with the newest transaction id.
    server.apply(COUNT_C)
    text = second.wait_for(lambda t: "\nlast_id: " in t and t.endswith("\n"))
    assert normalize(text, server.names).endswith("""
last_id: <txn>
row                                  action name count
------------------------------------ ------ ---- -----
<c>................................. modify      4
""")
    server.close()


def test_monitor_ends_when_the_server_goes(peer: PeerFactory,
                                           watch: Callable[..., Watcher]) -> None:
    server = Server(peer())
    server.apply(SEED)
    watcher = watch("ovsdb-client", "monitor", server.remote, "Test", "Weak", "name")
    assert watcher.wait_for(showing(Counter(initial=1))).endswith(" initial w\n")
    server.close()
    server.peer.stop()
    status, _, err = watcher.wait_exit()
    assert (status, err) == (1, f"ovsdb-client: {server.remote}: receive failed (End of file)\n")


def test_monitor_ends_when_the_database_is_converted(
        peer: PeerFactory, watch: Callable[..., Watcher], tmp_path: Path) -> None:
    """A change-aware monitor is cancelled by "convert" (monitor_canceled)."""
    server = Server(peer())
    server.apply(SEED)
    watcher = watch("ovsdb-client", "monitor", server.remote, "Test", "Weak", "name")
    assert complete(watcher.wait_for(showing(Counter(initial=1))),
                    Counter(initial=1))
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "1.3.0"
    schema["tables"]["Weak"]["columns"]["extra"] = {"type": "integer"}
    new_schema = tmp_path / "new.ovsschema"
    new_schema.write_text(json.dumps(schema))
    convert = subprocess.run(["ovsdb-client", "convert", server.remote, str(new_schema)],
                             capture_output=True, text=True, timeout=DEADLINE, check=False)
    stderr = convert.stderr
    if os.environ.get("TEGADB_TEST_CLUSTER") and server.peer.kind == "tegadb":
        # ovsdb-client says this to every clustered server (ovsdb-server's too).
        assert "because clusters do not support ephemeral columns" in stderr
        stderr = ""
    assert (convert.returncode, stderr) == (0, "")
    status, out, err = watcher.wait_exit()
    assert (status, err) == (1, f"ovsdb-client: {server.remote}: Test database was removed\n")
    assert normalize(out, server.names) == """\
row                                  action  name
------------------------------------ ------- ----
<w>................................. initial w
"""
    server.close()


# --- locks ---------------------------------------------------------------------------

def lock_transcripts(remote: str, watch: Callable[..., Watcher], name: str = "lock",
                     client: Sequence[str] = ("ovsdb-client",),
                     env: dict[str, str] | None = None) -> dict[str, str]:
    """Four clients contend for one lock; returns what each printed.

    a locks, b waits, b gives up; c waits, d steals from a, d exits (a, who
    locked rather than stole, is owner again), a exits (c gets the lock).
    All have exited at the end.
    """
    locked, stolen = f'locked\n["{name}"]\n', f'stolen\n["{name}"]\n'
    lock = '{"locked":true}\n'
    wait = '{"locked":false}\n'

    def start(command: str) -> Watcher:
        return watch(*client, command, remote, name, env=env)

    def expect(watcher: Watcher, text: str) -> None:
        got = watcher.wait_for(lambda t: len(t) >= len(text))
        assert got == text, f"{watcher.argv}"

    a = start("lock")
    expect(a, lock)
    b = start("lock")
    expect(b, wait)
    b.stop()
    # ovsdb-server tells the owner "locked" again when a waiter leaves.
    expect(a, lock + locked)
    c = start("lock")
    expect(c, wait)
    d = start("steal")
    expect(d, lock)
    expect(a, lock + locked + stolen)
    d.stop()
    expect(a, lock + locked + stolen + locked)
    a.stop()
    expect(c, wait + locked)
    c.stop()
    return {"a": a.output, "b": b.output, "c": c.output, "d": d.output}


def test_lock_contention(peer: PeerFactory, watch: Callable[..., Watcher]) -> None:
    server = peer()
    transcripts = lock_transcripts(server.remote_unix, watch)
    assert transcripts["b"] == '{"locked":false}\n'
    assert transcripts["d"] == '{"locked":true}\n'

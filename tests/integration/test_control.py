"""The control socket and the metrics endpoint, over real servers.

The control socket is driven by the real `ovs-appctl` (and by `tegadb-client
appctl`); the commands tegadb shares with ovsdb-server run on both, and
their output, error texts and exit statuses are compared.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import REPO_ROOT, TEST_SCHEMA, Peer, free_tcp_port, start_tegadb_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(shutil.which("ovs-appctl") is None,
                                reason="ovs-appctl not installed (run `make peers`)")

UNKNOWN = ('"nope" is not a valid command (use "list-commands" to see a list of valid '
           'commands)\n')
VLOG_HEADER = ("                 console    syslog    file\n"
               "                 -------    ------    ------\n")
VLOG_ROW = re.compile(r"^\S+ +(OFF|EMER|ERR|WARN|INFO|DBG) +(OFF|EMER|ERR|WARN|INFO|DBG) +"
                      r"(OFF|EMER|ERR|WARN|INFO|DBG)$")


def control_path(peer: Peer) -> Path:
    """Where each server's control socket is: ovsdb-server's is given by
    tests/peers.py, tegadb's is the default under the server's directory."""
    if peer.kind == "ovsdb-server":
        return peer.directory / "ovsdb-server.ctl"
    return peer.directory / "var" / "tegadb-server.ctl"


def appctl(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ovs-appctl", "-t", str(target), *args], capture_output=True,
                          text=True, timeout=10, check=False)


def client_appctl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_client", "appctl", *args],
                          capture_output=True, text=True, timeout=10, check=False, cwd=cwd,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})


def assert_fails(result: subprocess.CompletedProcess[str], error: str, target: Path) -> None:
    """ovs-appctl's failure: the server's text, its own line, status 2."""
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{error}ovs-appctl: {target}: server returned an error\n"


# --- the commands shared with ovsdb-server -------------------------------------------

def test_list_dbs(peer):
    server = peer()
    result = appctl(control_path(server), "ovsdb-server/list-dbs")
    assert (result.returncode, result.stdout) == (0, "Test\n_Server\n")


def test_list_commands_has_the_shared_commands(peer):
    server = peer()
    result = appctl(control_path(server), "list-commands")
    assert result.returncode == 0
    head, *lines = result.stdout.splitlines()
    assert head == "The available commands are:"
    assert all(re.fullmatch(r"  \S+ +.*", line) for line in lines), lines
    names = {line.split()[0] for line in lines}
    assert {"exit", "list-commands", "memory/show", "ovsdb-server/compact",
            "ovsdb-server/list-dbs", "vlog/list", "vlog/set", "version"} <= names
    # The names are padded to one column, as unixctl.c does.
    assert "  list-commands           \n" in result.stdout


def test_memory_show_is_counters_on_one_line(peer):
    server = peer()
    result = appctl(control_path(server), "memory/show")
    assert result.returncode == 0
    assert re.fullmatch(r"[a-z-]+:\d+( [a-z-]+:\d+)*\n", result.stdout), result.stdout


def test_vlog_list_is_ovs_table(peer):
    server = peer()
    result = appctl(control_path(server), "vlog/list")
    assert result.returncode == 0
    assert result.stdout.startswith(VLOG_HEADER)
    rows = result.stdout[len(VLOG_HEADER):].splitlines()
    assert rows and all(VLOG_ROW.match(row) for row in rows), rows


def test_compact_succeeds_silently(peer):
    server = peer()
    target = control_path(server)
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "a"}})
    for args in ([], ["Test"]):
        result = appctl(target, "ovsdb-server/compact", *args)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(("args", "error"), [
    (["nope"], UNKNOWN),
    (["ovsdb-server/list-dbs", "extra"],
     '"ovsdb-server/list-dbs" command takes at most 0 arguments\n'),
    (["memory/show", "x"], '"memory/show" command takes at most 0 arguments\n'),
    (["ovsdb-server/compact", "Nope"], "no database by that name\n"),
    (["ovsdb-server/compact", "_Server"], "cannot compact built-in databases\n"),
    (["vlog/set", "bogus"], 'no destination, level, or module "bogus"\n'),
])
def test_errors_are_ovsdb_servers(peer, args, error):
    server = peer()
    target = control_path(server)
    assert_fails(appctl(target, *args), error, target)


def test_exit_stops_the_server(peer):
    server = peer()
    result = appctl(control_path(server), "exit")
    assert (result.returncode, result.stdout) == (0, "")
    assert server.process is not None
    assert server.process.wait(timeout=10) == 0
    assert not control_path(server).exists()


# --- tegadb's own ----------------------------------------------------------------

@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Peer]:
    """tegadb-server with its own file, even under TEGADB_TEST_CLUSTER (a
    member's file is a cache of the log, and its locks are kept in etcd)."""
    server = start_tegadb_server(tmp_path / "standalone", [TEST_SCHEMA])
    yield server
    server.stop()


def test_compact_rewrites_the_file(standalone):
    server = standalone
    db_file = server.directory / "Test.db"
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "a"}})
        for count in range(50):
            c.transact("Test", {"op": "update", "table": "Root", "where": [],
                                "row": {"count": count % 100}})
    lines_before = len(db_file.read_bytes().splitlines())
    assert appctl(control_path(server), "ovsdb-server/compact", "Test").returncode == 0
    # A header and one snapshot record replace the 51 transactions.
    assert lines_before > 50 > len(db_file.read_bytes().splitlines())
    with server.client() as c:
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name", "count"]})
    assert rows == [{"rows": [{"name": "a", "count": 49}]}]
    assert "compacted (asked on the control socket)" in server.log_path.read_text()


def test_sessions_monitors_and_locks(standalone):
    server = standalone
    target = control_path(server)
    with server.client() as holder, server.client() as waiter:
        holder.request("monitor_cond", ["Test", "mine", {"Root": [{"columns": ["name"]}]}])
        assert holder.request("lock", ["L"])["result"] == {"locked": True}
        assert waiter.request("lock", ["L"])["result"] == {"locked": False}
        sessions = appctl(target, "tegadb/sessions").stdout.splitlines()
        assert len(sessions) == 2
        assert sum(" monitors:1 locks:L" in line for line in sessions) == 1
        assert sum(" monitors:0 locks:L" in line for line in sessions) == 1
        monitors = appctl(target, "tegadb/monitors").stdout
        assert re.fullmatch(r'unix:\S+ Test notifies:update2 "mine"\n', monitors), monitors
        locks = appctl(target, "tegadb/locks").stdout
        assert re.fullmatch(r"L owner:unix:\S+ waiting:unix:\S+\n", locks), locks
        memory = appctl(target, "memory/show").stdout
        assert "sessions:2 monitors:1 " in memory and " locks:1 " in memory
    deadline = time.monotonic() + 5
    while appctl(target, "tegadb/sessions").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert appctl(target, "tegadb/sessions").stdout == ""
    assert appctl(target, "tegadb/locks").stdout == ""


def test_vlog_set_changes_what_is_logged(tegadb_peer):
    server = tegadb_peer()
    target = control_path(server)
    assert re.search(r"^server +OFF +OFF +INFO$", appctl(target, "vlog/list").stdout, re.M)
    with server.client() as c:
        c.request("echo", [])  # the connection has been seen
    assert "connected" not in server.log_path.read_text()  # a debug message
    assert appctl(target, "vlog/set", "server:file:dbg").returncode == 0
    assert re.search(r"^server +OFF +OFF +DBG$", appctl(target, "vlog/list").stdout, re.M)
    with server.client() as c:
        c.request("echo", [])  # the connection has been seen
    assert ": connected" in server.log_path.read_text()
    assert appctl(target, "vlog/set", "warn").returncode == 0
    listed = appctl(target, "vlog/list").stdout
    assert re.search(r"^server +OFF +OFF +WARN$", listed, re.M)
    assert not re.search(r"INFO|DBG", listed[len(VLOG_HEADER):])


def test_control_socket_is_not_world_writable(standalone):
    assert control_path(standalone).stat().st_mode & 0o777 == 0o770


def test_metrics_port_taken_fails_the_start_cleanly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="address already in use"):
            start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [f"--metrics={port}"])
    assert not (tmp_path / "s" / "var" / "tegadb-server.ctl").exists()


def test_control_socket_beside_the_pidfile(tmp_path):
    pidfile = tmp_path / "run" / "tegadb.pid"
    pidfile.parent.mkdir()
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [f"--pidfile={pidfile}"])
    try:
        target = pidfile.parent / "tegadb-server.ctl"
        assert appctl(target, "ovsdb-server/list-dbs").stdout == "Test\n_Server\n"
        assert not (server.directory / "var").exists()
    finally:
        server.stop()
    assert not target.exists()  # removed at exit


def test_a_second_server_may_not_take_a_live_control_socket(tmp_path):
    target = tmp_path / "shared.ctl"
    first = start_tegadb_server(tmp_path / "a", [TEST_SCHEMA], [f"--unixctl={target}"])
    try:
        with pytest.raises(RuntimeError, match="is in use by a running server"):
            start_tegadb_server(tmp_path / "b", [TEST_SCHEMA], [f"--unixctl={target}"])
        assert appctl(target, "ovsdb-server/list-dbs").returncode == 0
    finally:
        first.stop()


# --- tegadb-client appctl ---------------------------------------------------------

def test_client_appctl_matches_ovs_appctl(tegadb_peer):
    server = tegadb_peer()
    target = control_path(server)
    for args in (["ovsdb-server/list-dbs"], ["list-commands"], ["memory/show"],
                 ["vlog/list"], ["tegadb/sessions"]):
        ours, theirs = client_appctl("-t", str(target), *args), appctl(target, *args)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (
            0, theirs.stdout)
    failed = client_appctl("-t", str(target), "nope")
    assert (failed.returncode, failed.stdout) == (2, "")
    assert failed.stderr == f"{UNKNOWN}tegadb-client: {target}: server returned an error\n"
    # The default target, relative to the current directory.
    default = client_appctl("ovsdb-server/list-dbs", cwd=server.directory)
    assert (default.returncode, default.stdout) == (0, "Test\n_Server\n")


def test_client_appctl_without_a_server(tmp_path):
    result = client_appctl("-t", str(tmp_path / "none.ctl"), "list-commands")
    assert result.returncode == 1
    assert result.stderr == (f'tegadb-client: cannot connect to "{tmp_path / "none.ctl"}" '
                             "(No such file or directory)\n")


# --- the metrics endpoint ---------------------------------------------------------

def scrape(port: int) -> dict[str, float]:
    """Every sample, keyed ``name{label="value",...}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_count_what_happened(tmp_path):
    port = free_tcp_port()
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [f"--metrics={port}"])
    try:
        before = scrape(port)
        assert before['tegadb_transactions_total{outcome="committed"}'] == 0
        assert before["tegadb_commit_duration_seconds_count"] == 0
        with server.client() as c, server.client() as watcher:
            watcher.request("monitor_cond", ["Test", 1, {"Root": [{"columns": ["name"]}]}])
            for i in range(5):
                c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": f"r{i}"}})
            c.transact("Test", {"op": "select", "table": "Root", "where": []})
            failed = c.transact("Test", {"op": "insert", "table": "Root",
                                         "row": {"name": "r0"}})
            assert failed[-1]["error"] == "constraint violation"
            assert c.request("transact", ["Nope"])["error"]["error"] == "unknown database"
            during = scrape(port)
        after = scrape(port)
        assert appctl(server.directory / "var" / "tegadb-server.ctl",
                      "ovsdb-server/compact").returncode == 0
        compacted = scrape(port)
    finally:
        server.stop()
    assert during["tegadb_sessions"] == 2 and during["tegadb_monitors"] == 1
    assert after["tegadb_sessions"] == 0 and after["tegadb_monitors"] == 0
    assert after['tegadb_transactions_total{outcome="committed"}'] == 5
    assert after['tegadb_transactions_total{outcome="unchanged"}'] == 1
    assert after['tegadb_transactions_total{outcome="failed"}'] == 1
    assert after['tegadb_errors_total{kind="constraint violation"}'] == 1
    assert after['tegadb_errors_total{kind="unknown database"}'] == 1
    assert after['tegadb_commits_total{db="Test"}'] == 5
    assert 1 <= after["tegadb_commit_duration_seconds_count"] <= 5
    assert after['tegadb_commit_duration_seconds_bucket{le="+Inf"}'] == (
        after["tegadb_commit_duration_seconds_count"])
    assert after["tegadb_commit_duration_seconds_sum"] > 0
    assert after["tegadb_received_bytes_total"] > before["tegadb_received_bytes_total"] + 500
    assert after["tegadb_sent_bytes_total"] > before["tegadb_sent_bytes_total"] + 500
    assert after["tegadb_output_backlog_bytes"] == 0
    assert after["process_resident_memory_bytes"] > 10_000_000
    assert compacted['tegadb_compactions_total{db="Test"}'] == (
        after['tegadb_compactions_total{db="Test"}'] + 1)


def test_metrics_endpoint_answers_only_get_metrics(tmp_path):
    port = free_tcp_port()
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [f"--metrics=127.0.0.1:{port}"])
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", data=b"x", timeout=5)
        assert posted.value.code == 405
    finally:
        server.stop()


def test_prometheus_client_is_not_loaded_at_start():
    """Only --metrics imports it: its import would add to every start."""
    code = ("import sys; import tegadb.server.main; "
            "print(sorted(m for m in sys.modules if m.startswith('prometheus')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.stdout == "[]\n"

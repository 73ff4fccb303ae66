"""tegadb-client's wait, backup, restore, convert, needs-conversion, echo and
bulk transact, against ovsdb-client on the same servers (ovsdb-server and tegadb).

Where the two print the same, the tests require the same stdout, stderr
(program name aside) and exit status.  ``backup`` is compared by what
ovsdb-tool reads from each file, and ``restore`` by the dump (UUIDs
included) that ovsdb-client prints afterwards.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from peers import (
    REPO_ROOT,
    TEST_SCHEMA,
    Peer,
    PeerFactory,
    free_tcp_port,
    start_tegadb_server,
)
from test_cli_client import (
    DATA,
    STARTERS,
    TEGADB_CLIENT,
    UUID,
    _require_peers,
    ovsdb_client,
    run,
    serving,
    tegadb_client,
    tegadb_env,
)

from tegadb.cli import ovsdb_file

CLIENTS = {"ovsdb-client": ["ovsdb-client"], "tegadb-client": TEGADB_CLIENT}
# Every column of Root but the ephemeral "status", which no backup holds.
ROOT_COLUMNS = ["_uuid", "name", "count", "ratio", "flag", "color", "note", "tags", "numbers",
                "props", "children", "named", "weak", "serial"]
CHANGES = ["Test",
           {"op": "delete", "table": "Root", "where": [["name", "==", "eth0"]]},
           {"op": "insert", "table": "Weak", "row": {"name": "new"}},
           {"op": "update", "table": "Root", "where": [["name", "==", "plain"]],
            "row": {"count": 1, "tags": ["set", []], "props": ["map", [["k", "changed"]]]}}]


def client(name: str, *args: str, stdin: Any = None, stdout: Any = None,
           timeout: float = 60) -> tuple[int, str, str]:
    """Run ovsdb-client or tegadb-client; stdout (unless redirected) and stderr as text."""
    proc = subprocess.run([*CLIENTS[name], *args], stdin=stdin, capture_output=stdout is None,
                          stdout=stdout, stderr=None if stdout is None else subprocess.PIPE,
                          env=tegadb_env(), timeout=timeout, check=False)
    err = re.sub(r"^(ovsdb|tegadb)-client:", "PROG:", proc.stderr.decode(), flags=re.MULTILINE)
    return proc.returncode, (proc.stdout or b"").decode(), err


def both(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The same run of both clients, which must agree; returns it."""
    ours, theirs = tegadb_client(*args, timeout=timeout), ovsdb_client(*args, timeout=timeout)
    assert ours == theirs, f"tegadb-client {' '.join(args)}"
    return ours


def dump(remote: str) -> str:
    """Every persistent column of every table, UUIDs included, as ovsdb-client shows it."""
    out = [ovsdb_client("dump", remote, "Test", "Root", *ROOT_COLUMNS)]
    out += [ovsdb_client("dump", remote, "Test", table) for table in ("Child", "Weak", "Singleton")]
    assert all(status == 0 for status, _, _ in out), out
    return "".join(text for _, text, _ in out)


def transact(remote: str, transaction: list[Any]) -> str:
    status, out, err = ovsdb_client("transact", remote, json.dumps(transaction))
    assert status == 0 and '"error"' not in out, out + err
    return out


@pytest.fixture
def loaded(peer: PeerFactory) -> Peer:
    """A server (ovsdb-server, then tegadb: conftest's ``peer``) holding the
    Test database with DATA in it."""
    _require_peers()  # ovsdb-client too
    server = peer()
    transact(server.remote_unix, DATA)
    return server


def backup(name: str, remote: str, path: Path, *options: str) -> tuple[int, str, str]:
    with open(path, "wb") as out:
        return client(name, *options, "backup", remote, stdout=out)


def restore(name: str, remote: str, path: Path, *options: str) -> tuple[int, str, str]:
    with open(path, "rb") as stdin:
        return client(name, *options, "restore", remote, stdin=stdin)


def records(path: Path) -> list[Any]:
    with open(path, "rb") as f:
        return list(ovsdb_file.read_records(f, str(path)))


# --- backup ------------------------------------------------------------------------

def test_backup_is_the_file_ovsdb_client_writes(loaded: Peer, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    assert backup("tegadb-client", loaded.remote_unix, ours) == (0, "", "")
    assert backup("ovsdb-client", loaded.remote_unix, theirs) == (0, "", "")
    (our_schema, our_txn), (their_schema, their_txn) = records(ours), records(theirs)
    assert our_schema == their_schema
    assert our_txn.pop("_comment") == 'produced by "tegadb-client backup"'
    assert their_txn.pop("_comment") == 'produced by "ovsdb-client backup"'
    assert abs(our_txn.pop("_date") - their_txn.pop("_date")) < 60_000
    assert our_txn == their_txn and len(our_txn["Root"]) == 4
    # ovsdb-tool reads it as it reads ovsdb-client's.
    query = json.dumps(["Test", *({"op": "select", "table": table, "where": []}
                                  for table in ("Root", "Child", "Weak", "Singleton"))])
    # The same rows (in the order each file lists them; _version is new at each read).
    results = [[sorted(json.dumps({k: v for k, v in row.items() if k != "_version"},
                                  sort_keys=True) for row in result["rows"])
                for result in json.loads(run(["ovsdb-tool", "query", str(path), query])[1])]
               for path in (ours, theirs)]
    assert results[0] == results[1] and len(results[0][0]) == 4
    # The same records, rows and values; only the date and comment differ.
    logs = [sorted(re.sub(r"(?m)^record 1: .*$", "record 1:",
                          run(["ovsdb-tool", "show-log", "-mm", str(path)])[1]).splitlines())
            for path in (ours, theirs)]
    assert logs[0] == logs[1] and '  table Root insert row "plain" (' in " ".join(logs[0])


def test_backup_and_restore_refuse_a_terminal(loaded: Peer, tmp_path: Path) -> None:
    for name in CLIENTS:
        controller, terminal = pty.openpty()
        try:
            assert client(name, "backup", loaded.remote_unix, stdout=terminal) == (
                1, "", "PROG: not writing backup to a terminal; please redirect stdout to a file\n")
            assert client(name, "restore", loaded.remote_unix, stdin=terminal) == (
                1, "", "PROG: not reading backup from a terminal; please redirect stdin from a"
                " file\n")
        finally:
            os.close(controller)
            os.close(terminal)


def on_a_terminal(argv: list[str], stdin: Any = None, stdout: Any = None) -> tuple[int, bytes]:
    """Run ``argv`` with stderr on a pseudo-terminal: its status, and what it drew there.

    A thread drains the terminal as the command runs, so that a bar drawn
    often cannot fill it and stall the command.
    """
    controller, terminal = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(controller, 1 << 16)
            except OSError:  # EIO: the command has exited and nothing holds the terminal
                return
            if not data:
                return
            drawn.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=terminal, env=tegadb_env(),
                              cwd=REPO_ROOT, timeout=60, check=False)
    finally:
        os.close(terminal)
        reader.join(30)
        os.close(controller)
    return proc.returncode, b"".join(drawn)


def test_progress_only_on_a_terminal(loaded: Peer, tmp_path: Path) -> None:
    """The bar goes to stderr when it is a terminal, never into the data; --quiet stops it."""
    backup_file = tmp_path / "b.db"
    with open(backup_file, "wb") as out:
        status, drawn = on_a_terminal([*TEGADB_CLIENT, "backup", loaded.remote_unix], stdout=out)
    assert status == 0 and b"backup of Test" in drawn
    assert records(backup_file)[0]["name"] == "Test"
    with open(backup_file, "wb") as out:
        assert on_a_terminal([*TEGADB_CLIENT, "--quiet", "backup", loaded.remote_unix],
                             stdout=out) == (0, b"")
    with open(backup_file, "rb") as backup_data:
        status, drawn = on_a_terminal([*TEGADB_CLIENT, "restore", loaded.remote_unix],
                                      stdin=backup_data)
    assert status == 0 and b"restore" in drawn


# --- restore -----------------------------------------------------------------------

def test_restore_keeps_uuids(loaded: Peer, tmp_path: Path) -> None:
    remote = loaded.remote_unix
    before = dump(remote)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    assert backup("tegadb-client", remote, ours)[0] == 0
    assert backup("ovsdb-client", remote, theirs)[0] == 0
    for path in (ours, theirs):
        transact(remote, CHANGES)
        assert dump(remote) != before
        assert restore("tegadb-client", remote, path) == (0, "", "")
        assert dump(remote) == before
    # ovsdb-client restores tegadb-client's backup too, with new UUIDs.
    assert restore("ovsdb-client", remote, ours) == (0, "", "")
    after = dump(remote)
    assert after != before and UUID.sub("U", after) == UUID.sub("U", before)


def test_restore_with_new_uuids_when_an_immutable_column_differs(loaded: Peer,
                                                                 tmp_path: Path) -> None:
    remote = loaded.remote_unix
    before = dump(remote)
    assert backup("tegadb-client", remote, tmp_path / "b.db")[0] == 0
    uuid = json.loads(transact(remote, ["Test", {"op": "select", "table": "Root", "where": [
        ["name", "==", "plain"]], "columns": ["_uuid"]}]))[0]["rows"][0]["_uuid"][1]
    # The same row UUID, but another value in the immutable column "serial".
    transact(remote, ["Test", {"op": "delete", "table": "Root", "where": [["name", "==", "plain"]]}])
    transact(remote, ["Test", {"op": "insert", "table": "Root", "uuid": uuid,
                               "row": {"name": "plain", "serial": 8}}])
    assert restore("tegadb-client", remote, tmp_path / "b.db") == (
        0, "", f"PROG: row UUIDs not kept: row {uuid} of table Root has another value in its"
        " immutable column serial; the restored rows have new UUIDs\n")
    after = dump(remote)
    assert uuid not in after and UUID.sub("U", after) == UUID.sub("U", before)


def test_restore_of_another_schema(loaded: Peer, tmp_path: Path) -> None:
    remote = loaded.remote_unix
    schema = json.loads(TEST_SCHEMA.read_text())
    backup_path = tmp_path / "b.db"
    with open(backup_path, "wb") as f:
        f.write(ovsdb_file.compose_record(schema | {"version": "1.0.0"}))
        f.write(ovsdb_file.compose_record(ovsdb_file.transaction_record(
            {"Weak": {"01234567-89ab-cdef-0123-456789abcdef": {"name": "only"}}}, "c", 0)))
    ours = restore("tegadb-client", remote, backup_path)
    theirs = restore("ovsdb-client", remote, backup_path)
    assert ours == (theirs[0], theirs[1], theirs[2].replace('"ovsdb-client convert"',
                                                            '"tegadb-client convert"'))
    assert ours == (1, "", 'PROG: backup schema has version "1.0.0" but database schema has'
                    ' version "1.2.3" (use --force to override differences, or'
                    ' "tegadb-client convert" to change the schema)\n')
    assert restore("tegadb-client", remote, backup_path, "--force") == (0, "", "")
    rows = json.loads(transact(remote, ["Test", {"op": "select", "table": "Weak", "where": [],
                                                 "columns": ["_uuid", "name"]}]))[0]["rows"]
    assert rows == [{"_uuid": ["uuid", "01234567-89ab-cdef-0123-456789abcdef"], "name": "only"}]


def test_restore_of_an_ovsdb_server_database_file(tmp_path: Path) -> None:
    """A file ovsdb-server wrote, transaction by transaction (set and map
    columns as diffs), restored into tegadb: the same rows, the same UUIDs."""
    with serving("ovsdb-server", tmp_path / "ovsdb", [TEST_SCHEMA]) as source:
        transact(source.remote_unix, DATA)
        transact(source.remote_unix, CHANGES)
        transact(source.remote_unix, ["Test", {
            "op": "mutate", "table": "Root", "where": [["name", "==", "plain"]],
            "mutations": [["tags", "insert", ["set", ["new", "z"]]],
                          ["props", "delete", ["set", ["k"]]], ["numbers", "delete", 2]]}])
        expected = dump(source.remote_unix)
        db_file = source.directory / "Test.db"
        assert b'"_is_diff":true' in db_file.read_bytes()
        with serving("tegadb", tmp_path / "tegadb", [TEST_SCHEMA]) as target:
            assert restore("tegadb-client", target.remote_unix, db_file) == (0, "", "")
            assert dump(target.remote_unix) == expected


def test_restore_rejects_a_damaged_file(loaded: Peer, tmp_path: Path) -> None:
    good = tmp_path / "good.db"
    assert backup("tegadb-client", loaded.remote_unix, good)[0] == 0
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    data[-10] ^= 1
    damaged.write_bytes(bytes(data))
    status, out, err = restore("tegadb-client", loaded.remote_unix, damaged)
    assert (status, out) == (1, "") and err.startswith("PROG: /dev/stdin: record at offset ")
    assert err.endswith(": SHA-1 does not match the record's contents\n")


# --- needs-conversion, convert -------------------------------------------------------

def warned(*args: str) -> tuple[int, str]:
    """Both clients' status and output, and the same warnings: none, or (a
    cluster) the ephemeral columns made persistent, which ovsdb-client logs."""
    ours, theirs = tegadb_client(*args), ovsdb_client(*args)
    assert ours[:2] == theirs[:2]
    warnings = [line.split("|WARN|")[1] for line in theirs[2].splitlines() if "|WARN|" in line]
    assert ours[2] == "".join(f"PROG: {warning}\n" for warning in warnings)
    return ours[0], ours[1]


def test_needs_conversion_and_convert_match_ovsdb_client(loaded: Peer, tmp_path: Path) -> None:
    remote = loaded.remote_unix
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "1.3.0"
    schema["tables"]["Weak"]["columns"]["extra"] = {"type": {"key": "integer", "min": 0,
                                                             "max": 1}}
    newer = tmp_path / "newer.ovsschema"
    newer.write_text(json.dumps(schema))
    assert warned("needs-conversion", remote, str(TEST_SCHEMA)) == (0, "no\n")
    assert warned("needs-conversion", remote, str(newer)) == (0, "yes\n")

    def kept() -> str:
        """The rows, UUIDs included, in the columns both schemas have."""
        return (ovsdb_client("dump", remote, "Test", "Root", *ROOT_COLUMNS)[1]
                + ovsdb_client("dump", remote, "Test", "Weak", "_uuid", "name")[1])

    before = kept()
    assert tegadb_client("convert", remote, str(newer))[:2] == (0, "")
    assert warned("needs-conversion", remote, str(newer)) == (0, "no\n")
    assert both("get-schema-version", remote) == (0, "1.3.0\n", "")
    assert kept() == before and "plain" in before
    missing = str(tmp_path / "missing.ovsschema")
    assert both("convert", remote, missing) == (
        1, "", f'PROG: failed to read schema: "{missing}" could not be read as JSON (error'
        f' opening "{missing}": No such file or directory)\n')
    if loaded.kind == "tegadb":  # (a conversion that fails crashes ovsdb-server 3.1)
        # A conversion the server refuses: a new required reference to no row.
        schema["tables"]["Weak"]["columns"]["extra"] = {
            "type": {"key": {"type": "uuid", "refTable": "Root"}}}
        refused = tmp_path / "refused.ovsschema"
        refused.write_text(json.dumps(schema))
        status, out, err = tegadb_client("convert", remote, str(refused))
        assert (status, out) == (1, "")
        assert err.splitlines()[-1].startswith("PROG: transaction returned error: {")
        assert kept() == before


# --- wait ------------------------------------------------------------------------------

def wait(*args: str) -> tuple[int, str, str]:
    """``wait`` run by both clients: the same status and output.  (ovsdb-client
    also logs its connection attempts on stderr; tegadb-client does not.)"""
    ours, theirs = tegadb_client("wait", *args, timeout=30), ovsdb_client("wait", *args, timeout=30)
    assert ours[:2] == theirs[:2] and ours[2] == (theirs[2] if ours[0] == 1 else "")
    return ours


def test_wait_returns_at_once_when_the_state_holds(loaded: Peer) -> None:
    for database, state in (("Test", "connected"), ("Test", "added"), ("Nope", "removed")):
        assert wait(loaded.remote_unix, database, state) == (0, "", "")
    assert wait(loaded.remote_unix, "Test", "bogus") == (1, "", "PROG: bogus: unknown state\n")


def test_wait_times_out_like_ovsdb_client(loaded: Peer) -> None:
    """-t bounds the whole wait; both end by SIGALRM."""
    assert wait("-t", "1", loaded.remote_unix, "Test", "removed") == (-signal.SIGALRM, "", "")


@contextmanager
def still_waiting(remote: str, database: str, state: str) -> Iterator[subprocess.Popen[bytes]]:
    """tegadb-client ``wait``, seen still waiting a second after its start.

    The block makes the state hold; when it ends without an error, the wait
    must end with status 0 and no output.  The client is killed if it is
    still running when the block is left either way.
    """
    waiting = subprocess.Popen([*TEGADB_CLIENT, "wait", remote, database, state],
                               env=tegadb_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        assert waiting.poll() is None
        yield waiting
        assert waiting.wait(30) == 0
        assert waiting.communicate() == (b"", b"")
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()


def test_wait_for_a_server_not_started_yet(tmp_path: Path) -> None:
    """wait keeps trying to connect, as ovsdb-client does."""
    _require_peers()
    port = free_tcp_port()
    server: Peer | None = None
    try:
        with still_waiting(f"tcp:127.0.0.1:{port}", "Test", "connected"):
            server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
            server.stop()
            server.start(port)
    finally:
        if server is not None:
            server.stop()


def test_wait_reconnects_until_the_state_holds(tmp_path: Path) -> None:
    """A server without the database goes away; one with it comes up on the same port."""
    _require_peers()
    other_schema = tmp_path / "other.ovsschema"
    other_schema.write_text(json.dumps(json.loads(TEST_SCHEMA.read_text()) | {"name": "Other"}))
    without = start_tegadb_server(tmp_path / "without", [TEST_SCHEMA])
    with_other = start_tegadb_server(tmp_path / "with", [TEST_SCHEMA, other_schema])
    with_other.stop()
    try:
        with still_waiting(without.remote_tcp, "Other", "added") as waiting:
            without.stop()
            time.sleep(0.5)
            assert waiting.poll() is None
            with_other.start(without.tcp_port)
    finally:
        without.stop()
        with_other.stop()


def test_wait_for_a_database_added_and_removed(tmp_path: Path) -> None:
    """ovsdb-server adds and removes databases at run time (ovs-appctl)."""
    other_schema = tmp_path / "other.ovsschema"
    other_schema.write_text(json.dumps(json.loads(TEST_SCHEMA.read_text()) | {"name": "Other"}))
    other_db = tmp_path / "other.db"
    subprocess.run(["ovsdb-tool", "create", str(other_db), str(other_schema)], check=True)
    with serving("ovsdb-server", tmp_path / "server", [TEST_SCHEMA]) as server:
        control = ["ovs-appctl", "-t", str(server.directory / "ovsdb-server.ctl")]
        for state, command in (("added", "ovsdb-server/add-db"),
                               ("removed", "ovsdb-server/remove-db")):
            waiting = {name: subprocess.Popen([*argv, "wait", server.remote_unix, "Other", state],
                                              env=tegadb_env(), stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL)
                       for name, argv in CLIENTS.items()}
            time.sleep(1)
            assert [p.poll() for p in waiting.values()] == [None, None]
            argument = str(other_db) if state == "added" else "Other"
            subprocess.run([*control, command, argument], check=True, capture_output=True)
            assert [p.wait(30) for p in waiting.values()] == [0, 0]


# --- echo, bulk transact ----------------------------------------------------------------

def test_echo(loaded: Peer) -> None:
    assert tegadb_client("echo", loaded.remote_unix, "a", "b c") == (0, '["a","b c"]\n', "")
    assert tegadb_client("echo", loaded.remote_unix) == (0, "[]\n", "")


def test_transact_from_a_file(loaded: Peer, tmp_path: Path) -> None:
    remote = loaded.remote_unix
    transactions = [
        ["Test", {"op": "select", "table": "Child", "where": [], "columns": ["value", "number"]}],
        ["Test", {"op": "update", "table": "Root", "where": [], "row": {"count": 101}}],
        ["Test", {"op": "mutate", "table": "Root", "where": [["name", "==", "plain"]],
                  "mutations": [["count", "+=", 1]]},
         {"op": "select", "table": "Root", "where": [["name", "==", "plain"]],
          "columns": ["count"]}]]
    path = tmp_path / "bulk.json"
    path.write_text("\n".join(json.dumps(t) for t in transactions) + "\n")
    # What ovsdb-client prints for each, run one by one on the same data.
    probe = ["Test", {"op": "update", "table": "Root", "where": [["name", "==", "plain"]],
                      "row": {"count": 42}}]
    expected = []
    for transaction in transactions:
        status, out, _ = ovsdb_client("transact", remote, json.dumps(transaction))
        assert status == 0
        expected.append(out)
    transact(remote, probe)
    assert tegadb_client("transact", remote, f"@{path}") == (0, "".join(expected), "")
    path.write_text(json.dumps(transactions[0]) + '["Test", {"op"')
    assert tegadb_client("transact", remote, f"@{path}") == (
        1, "", f"PROG: {path}: the last transaction is incomplete\n")
    assert tegadb_client("transact", remote, "@/nonexistent") == (
        1, "", "PROG: /nonexistent: No such file or directory\n")


# --- bad input: an unreachable server, Ctrl-C, a reader gone -----------------------------

@pytest.mark.parametrize("args", [
    ["backup"], ["needs-conversion", str(TEST_SCHEMA)], ["convert", str(TEST_SCHEMA)],
    ["get-schema", "_Server"], ["restore"],
], ids=" ".join)
def test_unreachable_server(args: list[str]) -> None:
    _require_peers()
    remote = "unix:/nonexistent/db.sock"
    argv = [args[0], remote, *args[1:]]
    with open(os.devnull, "rb") as stdin:
        ours = client("tegadb-client", *argv, stdin=stdin)
    with open(os.devnull, "rb") as stdin:
        theirs = client("ovsdb-client", *argv, stdin=stdin)
    assert ours == theirs == (
        1, "", f'PROG: failed to connect to "{remote}" (No such file or directory)\n')


def test_get_schema_of_every_database(loaded: Peer) -> None:
    for database in ("Test", "_Server"):
        for args in (["get-schema"], ["--pretty", "get-schema"], ["get-schema-version"],
                     ["get-schema-cksum"], ["list-tables"], ["list-columns"]):
            *options, command = args
            assert both(*options, command, loaded.remote_unix, database)[0] == 0


def wait_connected(pid: int, timeout: float = 30) -> None:
    """Until process ``pid`` holds a socket: it is past its start-up, in its command."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    return
            except OSError:
                pass  # closed meanwhile
        time.sleep(0.05)
    raise AssertionError(f"process {pid} opened no socket in {timeout} s")


def test_ctrl_c_ends_by_sigint(loaded: Peer) -> None:
    """monitor and wait, interrupted: no traceback, the status of SIGINT (130 in a shell)."""
    for args in (["monitor", loaded.remote_unix, "Test", "Weak"],
                 ["wait", loaded.remote_unix, "Test", "removed"]):
        proc = subprocess.Popen([*TEGADB_CLIENT, *args], env=tegadb_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_connected(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert (proc.returncode, err) == (-signal.SIGINT, b""), args
    # (set -m: a background job of a script would otherwise ignore SIGINT.)
    shell = subprocess.run(
        ["bash", "-c", f"set -m; {' '.join(TEGADB_CLIENT)} wait {loaded.remote_unix} Test"
         " removed & p=$!; until ls -l /proc/$p/fd 2>/dev/null | grep -q socket:; do"
         " sleep 0.05; done; kill -INT $p; wait $p; echo $?"],
        env=tegadb_env(), capture_output=True, text=True, timeout=60, check=False)
    # (stderr holds only bash's own job notice, "[1]+ Interrupt ...".)
    assert shell.stdout == "130\n" and "Traceback" not in shell.stderr


def test_reader_gone_during_monitor(loaded: Peer) -> None:
    """`monitor | head -1`: at its next output the monitor ends with one line
    of complaint and status 1, not a traceback."""
    proc = subprocess.Popen([*TEGADB_CLIENT, "monitor", loaded.remote_unix, "Test", "Weak"],
                            env=tegadb_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"row ")
        proc.stdout.close()  # what `head -1` does once it has its line
        transact(loaded.remote_unix, ["Test", {"op": "insert", "table": "Weak",
                                               "row": {"name": "more"}}])
        assert proc.wait(30) == 1
        assert proc.stderr is not None
        assert proc.stderr.read() == b"tegadb-client: write to stdout failed\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_restore_of_a_tegadb_database_file(tmp_path: Path) -> None:
    """A copy of a tegadb server's file (its journal) is a backup too, for either server."""
    with serving("tegadb", tmp_path / "source", [TEST_SCHEMA]) as source:
        transact(source.remote_unix, DATA)
        transact(source.remote_unix, CHANGES)
        expected = dump(source.remote_unix)
        copy = tmp_path / "copy.db"
        copy.write_bytes((source.directory / "Test.db").read_bytes())
    # A last line cut short by a crash is dropped, as the server drops it.
    with open(copy, "ab") as f:
        f.write(b'{"seq":99,"txn":"x","date":0,"changes":{"Weak":{')
    for kind in sorted(STARTERS):
        with serving(kind, tmp_path / kind, [TEST_SCHEMA]) as target:
            assert restore("tegadb-client", target.remote_unix, copy) == (0, "", "")
            assert dump(target.remote_unix) == expected, kind
    lines = copy.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"name"', b'"nome"')
    copy.write_bytes(b"".join(lines[:-1]))
    with serving("tegadb", tmp_path / "damaged", [TEST_SCHEMA]) as target:
        status, out, err = restore("tegadb-client", target.remote_unix, copy)
        assert (status, out) == (1, "") and err.startswith("PROG: /dev/stdin: line 3: ")

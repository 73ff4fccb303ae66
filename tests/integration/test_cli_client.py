"""tegadb-client against ovsdb-client, and the client library underneath.

The comparison tests run ``tegadb-client`` (as ``python -m tegadb.cli.tegadb_client``)
and the real ``ovsdb-client`` with the same arguments against the same server,
and require the same stdout and exit status, and the same stderr once the
program name is set aside.  The server is a parameter: ovsdb-server, and
tegadb once it runs; the data, loaded with ``ovsdb-client transact``, has
strings that need quoting, integers, reals, booleans, uuid references, sets,
maps and empty sets.

The commands that keep running (``monitor``, ``monitor-cond``,
``monitor-cond-since``, ``lock``, ``steal``, ``unlock``) run side by side
as `Watcher` subprocesses (from test_ovsdb_client_monitor.py) while the data
changes, and must have printed the same when both are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import (
    REPO_ROOT,
    TEST_SCHEMA,
    Peer,
    RawClient,
    free_tcp_port,
    make_pki,
    missing_ovs_binaries,
    start_ovsdb_server,
    start_tegadb_server,
)
from test_ovsdb_client_monitor import (  # watch_fixture: the "watch" fixture
    TIMESTAMP,
    Watcher,
    lock_transcripts,
    watch_fixture,  # noqa: F401
)

from tegadb.cli.tegadb_client import COMMANDS
from tegadb.client.connection import (
    ClientProtocol,
    Connection,
    Notification,
    ProtocolError,
    Reply,
    RPCError,
    SyncConnection,
)

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
STARTERS = {"ovsdb-server": start_ovsdb_server, "tegadb": start_tegadb_server}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

DATA = ["Test",
        {"op": "insert", "table": "Child", "uuid-name": "c1", "row": {"value": "x", "number": -1}},
        {"op": "insert", "table": "Child", "uuid-name": "c2",
         "row": {"value": "needs space", "number": 2}},
        # Same values as c1: only the uuid orders the two in dump.
        {"op": "insert", "table": "Child", "uuid-name": "c3", "row": {"value": "x", "number": -1}},
        {"op": "insert", "table": "Weak", "uuid-name": "w1", "row": {"name": "w"}},
        {"op": "insert", "table": "Weak", "row": {"name": "zzz"}},
        {"op": "insert", "table": "Root", "row": {
            "name": "plain", "count": 42, "ratio": 0.5, "flag": True, "color": "red",
            "note": "short", "tags": ["set", ["a", "b c", "1x"]], "numbers": ["set", [3, 1, 2]],
            "props": ["map", [["k", "v"], ["key 2", 'va"l']]],
            "children": ["set", [["named-uuid", "c1"], ["named-uuid", "c2"]]],
            "named": ["map", [["first", ["named-uuid", "c1"]], ["second", ["named-uuid", "c3"]]]],
            "weak": ["named-uuid", "w1"], "serial": 7, "status": "up"}},
        {"op": "insert", "table": "Root", "row": {
            "name": 'needs "quotes", commas\nand newline\t', "count": 0, "ratio": 1,
            "flag": False,
            "tags": ["set", ["éàü", "_ok-x.y", "01234567-89ab-cdef-0123-456789abcdef", "true", ""]],
            "props": ["map", [["", "x"]]]}},
        {"op": "insert", "table": "Root", "row": {
            "name": "", "count": 100, "ratio": 0.1, "numbers": -5, "note": "trail  "}},
        {"op": "insert", "table": "Root", "row": {
            "name": "eth0", "count": 7, "ratio": 0.333333333333333333, "color": "blue",
            "tags": "<a&b>"}},
        {"op": "insert", "table": "Singleton", "row": {"mode": "auto"}}]

# Types the test schema lacks: maps holding at most one pair (printed without
# braces), a map to reals, reals beyond 0..1, and a uuid that is no reference.
EDGE_SCHEMA = {"name": "Edge", "tables": {"T": {"columns": {
    "one": {"type": {"key": "string", "value": "integer", "min": 0, "max": 1}},
    "req": {"type": {"key": "string", "value": "integer"}},
    "weights": {"type": {"key": "integer", "value": "real", "min": 0, "max": "unlimited"}},
    "real": {"type": "real"},
    "id": {"type": "uuid"}}}}}
EDGE_DATA = ["Edge",
             {"op": "insert", "table": "T", "row": {
                 "one": ["map", [["a b", 1]]], "req": ["map", [["k", 2]]],
                 "weights": ["map", [[1, 0.5], [2, 3.0], [3, 1e300]]], "real": 1e15,
                 "id": ["uuid", "01234567-89ab-cdef-0123-456789abcdef"]}},
             {"op": "insert", "table": "T", "row": {"real": -2.5}}]

STYLES = [
    [], ["--format=list"], ["--format=csv"], ["--format=json"], ["--format=html"], ["--bare"],
    ["--no-headings"], ["--data=json"], ["--data=bare"], ["--format=json", "--pretty"],
    ["-f", "csv", "--no-headings", "-d", "bare"], ["-f", "list", "-d", "json"],
]
TABLE_COMMANDS = [
    ["list-tables"], ["list-columns"], ["list-columns", "Test", "Root"], ["list-columns", "Child"],
    ["list-columns", "Test", "Nope"],  # headings only, and exit status 0
    ["dump"], ["dump", "Test", "Root"], ["dump", "Root", "tags", "name", "props", "_uuid"],
    ["dump", "Child"], ["dump", "Test", "Singleton", "_version"],
]


# --- running both clients ---------------------------------------------------------

def run(argv: list[str], env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (its program name replaced by PROG)."""
    proc = subprocess.run(argv, check=False, capture_output=True, env=env, cwd=cwd,
                          timeout=timeout)
    stderr = re.sub(r"^(ovsdb|tegadb)-client:", "PROG:", proc.stderr.decode(), flags=re.MULTILINE)
    return proc.returncode, proc.stdout.decode(), stderr


def tegadb_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEGADB_REMOTE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


TEGADB_CLIENT = [sys.executable, "-m", "tegadb.cli.tegadb_client"]


def tegadb_client(*args: str, env: dict[str, str] | None = None,
                  cwd: Path | None = None, timeout: float = 60) -> tuple[int, str, str]:
    return run([*TEGADB_CLIENT, *args], env or tegadb_env(), cwd, timeout)


def ovsdb_client(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    return run(["ovsdb-client", *args], timeout=timeout)


def assert_same(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    ours, theirs = tegadb_client(*args, timeout=timeout), ovsdb_client(*args, timeout=timeout)
    assert ours == theirs, f"tegadb-client {' '.join(args)}"
    return ours


def with_server(args: list[str], remote: str) -> list[str]:
    """``args`` with SERVER placed right after the command (the first non-option)."""
    at = next((i + 1 for i, arg in enumerate(args) if not arg.startswith("-")), len(args))
    return [*args[:at], remote, *args[at:]]


# --- servers ---------------------------------------------------------------------

def _require_peers() -> None:
    missing = missing_ovs_binaries() + ([] if shutil.which("ovsdb-client") else ["ovsdb-client"])
    if missing:
        message = f"{', '.join(missing)} not installed (run `make peers`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def serving(kind: str, directory: Path, schemas: list[Path]) -> Iterator[Peer]:
    _require_peers()
    server = STARTERS[kind](directory, schemas)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=sorted(STARTERS))
def loaded(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The remote of a server holding the Test database with DATA in it."""
    with serving(request.param, tmp_path_factory.mktemp("loaded"), [TEST_SCHEMA]) as server:
        status, out, err = ovsdb_client("transact", server.remote_unix, json.dumps(DATA))
        assert status == 0 and '"error"' not in out, out + err
        yield server.remote_unix


@pytest.fixture(scope="module", params=sorted(STARTERS))
def several(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The remote of a server with Test, Open_vSwitch and OVN_Northbound (all
    empty) and Edge (EDGE_DATA in it)."""
    directory = tmp_path_factory.mktemp("several")
    edge = directory / "edge.ovsschema"
    edge.write_text(json.dumps(EDGE_SCHEMA))
    schemas = [TEST_SCHEMA, VSWITCH_SCHEMA, NB_SCHEMA, edge]
    with serving(request.param, directory / "server", schemas) as server:
        status, out, err = ovsdb_client("transact", server.remote_unix, json.dumps(EDGE_DATA))
        assert status == 0 and '"error"' not in out, out + err
        yield server.remote_unix


# --- output identical to ovsdb-client ---------------------------------------------

@pytest.mark.parametrize("style", STYLES, ids=" ".join)
@pytest.mark.parametrize("command", TABLE_COMMANDS, ids=" ".join)
def test_tables_match_ovsdb_client(loaded: str, command: list[str], style: list[str]) -> None:
    assert assert_same(*style, *with_server(command, loaded))[0] == 0


JSON_COMMANDS = {
    "list-dbs": ["list-dbs"],
    "get-schema": ["get-schema"],
    "get-schema Test": ["get-schema", "Test"],
    "get-schema pretty": ["--pretty", "get-schema"],
    "get-schema-version": ["get-schema-version"],
    "get-schema-cksum": ["get-schema-cksum"],
    "transact select": ["transact", '["Test",{"op":"select","table":"Root","where":[]}]'],
    "transact pretty": ["--pretty", "transact",
                        ('["Test",{"op":"select","table":"Child","where":[],'
                        '"columns":["number","value"]},{"op":"comment","comment":"c"}]')],
    # A failing transaction is still a successful reply: exit status 0.
    "transact constraint": ["transact", ('["Test",{"op":"update","table":"Root","where":[],'
                                        '"row":{"count":101}}]')],
    "transact bad op": ["transact", '["Test",{"op":"select","table":"Nope","where":[]}]'],
    "query select": ["query", ('["Test",{"op":"select","table":"Root",'
                              '"where":[["ratio","<",0.4]],"columns":["name","ratio"]}]')],
    "query empty": ["query", '["Test"]'],
}


@pytest.mark.parametrize("args", JSON_COMMANDS.values(), ids=JSON_COMMANDS)
def test_json_commands_match_ovsdb_client(loaded: str, args: list[str]) -> None:
    status, out, _ = assert_same(*with_server(args, loaded))
    assert status == 0 and out.endswith("\n")


@pytest.mark.parametrize("args", [
    ["transact", '["Nope"]'], ["transact", "[]"], ["query", '{"a":1}'], ["query", "[]"],
    ["get-schema", "Nope"], ["dump", "Test", "Nope"], ["dump", "Test", "Root", "nope"],
    ["dump", "Test", "Root", "name", "nope"], ["list-columns", "Test", "Root", "extra"],
    ["list-dbs", "extra"],
    ["--format=xml", "list-dbs"], ["--data=xml", "list-dbs"], ["--bogus", "list-dbs"],
    ["-x", "list-dbs"], ["frob"], ["--format"],
], ids=" ".join)
def test_errors_match_ovsdb_client(loaded: str, args: list[str]) -> None:
    assert assert_same(*with_server(args, loaded))[0] == 1


def test_no_command_and_unreachable_server() -> None:
    _require_peers()
    assert tegadb_client() == ovsdb_client() == (
        1, "", "PROG: missing command name; use --help for help\n")
    missing = "unix:/nonexistent/db.sock"
    assert tegadb_client("transact", missing, '["Test"]') == ovsdb_client(
        "transact", missing, '["Test"]')
    assert tegadb_client("dump", missing)[0] == 1


def test_reader_gone(loaded: str) -> None:
    """Output to a pipe nobody reads is an error, reported as ovsdb-client does.

    (ovsdb-client itself notices only once its output outgrows its stdio
    buffer; smaller output it loses silently, with exit status 0.)
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_client", "dump", loaded],
                          check=False, stdout=write_end, stderr=subprocess.PIPE,
                          env=tegadb_env(), timeout=60)
    os.close(write_end)
    assert (proc.returncode, proc.stderr) == (1, b"tegadb-client: write to stdout failed\n")


def test_bad_transaction_json(loaded: str) -> None:
    # Both name the argument; the parser's own message differs.
    for text in ("[bad", '"x"'):
        ours, theirs = tegadb_client("transact", loaded, text), ovsdb_client(
            "transact", loaded, text)
        assert ours[:2] == theirs[:2] == (1, "")
        assert ours[2].startswith(f'PROG: "{text}": ')


def test_query_reports_writes_but_commits_nothing(loaded: str) -> None:
    query = ('["Test",{"op":"insert","table":"Weak","row":{"name":"q"}},'
             '{"op":"select","table":"Weak","where":[["name","==","q"]],"columns":["name"]}]')
    ours, theirs = tegadb_client("query", loaded, query), ovsdb_client("query", loaded, query)
    # The insert gets a fresh uuid each time; all else is the same.
    assert UUID.sub("U", ours[1]) == UUID.sub("U", theirs[1])
    assert ours[0] == 0 and '"rows":[{"name":"q"}]' in ours[1]
    assert "q" not in tegadb_client("--bare", "dump", loaded, "Weak", "name")[1].split()


def test_transact_writes(peer: Callable[..., Peer]) -> None:
    _require_peers()
    server = peer()
    txn = '["Test",{"op":"insert","table":"Weak","row":{"name":"new"}}]'
    status, out, err = tegadb_client("transact", server.remote_tcp, txn)
    assert (status, err) == (0, "")
    assert re.fullmatch(r'\[\{"uuid":\["uuid","[0-9a-f-]{36}"\]\}\]\n', out)
    new_uuid = UUID.search(out).group()  # type: ignore[union-attr]
    assert assert_same("dump", server.remote_unix, "Weak")[1].splitlines()[3] == \
        f"{new_uuid} new"


@pytest.mark.parametrize("args", [
    ["list-tables"], ["list-columns"], ["list-columns", "Bridge"], ["dump"],
    ["list-tables", "OVN_Northbound"], ["list-columns", "OVN_Northbound"],
    ["--pretty", "get-schema", "OVN_Northbound"], ["dump", "OVN_Northbound"],
    ["list-tables", "Test"], ["dump", "Edge"], ["--bare", "dump", "Edge"],
    ["--data=json", "dump", "Edge"], ["--format=json", "dump", "Edge"],
    ["transact", '["Edge",{"op":"select","table":"T","where":[]}]'],
], ids=" ".join)
def test_default_database_and_big_schemas(several: str, args: list[str]) -> None:
    # Open_vSwitch is the default when served; its tables and columns come
    # out in OVS's hash order, which has to be reproduced exactly.
    status, out, _ = assert_same(*with_server(args, several))
    assert status == 0 and out


def test_no_default_database(peer: Callable[..., Peer], tmp_path: Path) -> None:
    _require_peers()
    other = tmp_path / "other.ovsschema"
    other.write_text(json.dumps(json.loads(TEST_SCHEMA.read_text()) | {"name": "Other"}))
    server = peer(TEST_SCHEMA, other)
    assert assert_same("list-tables", server.remote_unix) == (
        1, "", "PROG: could not find a default database, please specify a database name\n")
    assert assert_same("list-tables", server.remote_unix, "Other")[0] == 0


def test_default_remote(loaded: str, tmp_path: Path) -> None:
    expected = ovsdb_client("dump", loaded)
    assert expected[0] == 0
    assert tegadb_client("dump", env=tegadb_env(TEGADB_REMOTE=loaded)) == expected
    # Without TEGADB_REMOTE: unix:var/tegadb.sock, relative to the directory.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "tegadb.sock").symlink_to(loaded.removeprefix("unix:"))
    assert tegadb_client("dump", cwd=tmp_path) == expected
    assert tegadb_client("dump", env=tegadb_env(TEGADB_REMOTE="unix:/nonexistent/x.sock")) == (
        1, "", ('PROG: failed to connect to "unix:/nonexistent/x.sock" '
               "(No such file or directory)\n"))


def test_ssl(tmp_path: Path) -> None:
    _require_peers()
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    pki = make_pki(tmp_path)
    db = tmp_path / "Test.db"
    subprocess.run(["ovsdb-tool", "create", str(db), str(TEST_SCHEMA)], check=True)
    ssl_port = free_tcp_port()

    def command(port: int) -> list[str]:
        return ["ovsdb-server", "--no-chdir", f"--remote=punix:{tmp_path / 'db.sock'}",
                f"--remote=ptcp:{port}:127.0.0.1", f"--remote=pssl:{ssl_port}:127.0.0.1",
                f"--private-key={pki['server.key']}", f"--certificate={pki['server.pem']}",
                f"--ca-cert={pki['ca.pem']}", f"--unixctl={tmp_path / 'ctl'}",
                f"--pidfile={tmp_path / 'pid'}", f"--log-file={tmp_path / 'server.log'}",
                str(db)]

    server = Peer("ovsdb-server", tmp_path, command)
    server.start()
    try:
        remote = f"ssl:127.0.0.1:{ssl_port}"
        keys = ["-p", str(pki["client.key"]), "-c", str(pki["client.pem"])]
        assert assert_same(*keys, "-C", str(pki["ca.pem"]), "dump", remote)[0] == 0
        # A peer certificate the CA did not sign is refused.
        status, _, err = tegadb_client(*keys, "-C", str(pki["client.pem"]), "dump", remote)
        assert status == 1 and "CERTIFICATE_VERIFY_FAILED" in err
        assert tegadb_client("dump", remote) == (
            1, "", "PROG: SSL remotes need --private-key, --certificate and --ca-cert\n")
    finally:
        server.stop()


# --- monitor, lock: side by side while the data changes --------------------------

WAIT = 5.0  # seconds to wait for any one expected output


@pytest.fixture(scope="module", params=sorted(STARTERS))
def watched(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The remote of a server holding DATA, for the monitor tests (which leave
    the data as they found it)."""
    with serving(request.param, tmp_path_factory.mktemp("watched"), [TEST_SCHEMA]) as server:
        status, out, err = ovsdb_client("transact", server.remote_unix, json.dumps(DATA))
        assert status == 0 and '"error"' not in out, out + err
        yield server.remote_unix


def both_clients(watch: Callable[..., Watcher], args: list[str],
                 remote: str) -> tuple[Watcher, Watcher]:
    """ovsdb-client and tegadb-client running ``args`` against ``remote``."""
    at = next(i + 1 for i, arg in enumerate(args) if arg in COMMANDS)  # after the command
    argv = [*args[:at], remote, *args[at:]]
    return watch("ovsdb-client", *argv), watch(*TEGADB_CLIENT, *argv, env=tegadb_env())


def settle(theirs: Watcher, ours: Watcher, before: str,
           same: Callable[[str], str] = lambda text: text) -> str:
    """Wait until ovsdb-client has printed more than ``before`` (whole lines) and
    tegadb-client the same; returns what ovsdb-client printed.

    (ovsdb-client's output may arrive in pieces, so one that tegadb-client
    has not matched yet may still be growing.)  The test's final comparison
    says what differs if they never agree.
    """
    deadline = time.monotonic() + WAIT
    while True:
        text = theirs.output
        if (len(text) > len(before) and text.endswith("\n")
                and same(ours.output) == same(text)) or time.monotonic() > deadline:
            assert len(text) > len(before), f"{theirs.argv}: nothing new after\n{before}"
            return text
        time.sleep(0.01)


MARK = "m,\"k\" 1"  # a Root row added, changed and removed by each monitor test
MARK_STEPS = [
    [{"op": "insert", "table": "Root", "row": {
        "name": MARK, "count": 50, "ratio": 0.75, "color": "green",
        "tags": ["set", ["p q", "r"]], "numbers": ["set", [1, 2]],
        "props": ["map", [["a b", "c,d"], ["x", "y"]]]}}],
    [{"op": "update", "table": "Root", "where": [["name", "==", MARK]], "row": {
        "count": 60, "color": ["set", []], "tags": ["set", ["r", "s"]],
        "numbers": ["set", [2, 3, 4]], "props": ["map", [["a b", "e"], ["z", "y"]]]}}],
    [{"op": "delete", "table": "Root", "where": [["name", "==", MARK]]}],
]
ZERO = "00000000-0000-0000-0000-000000000000"


@contextlib.contextmanager
def writer(remote: str) -> Iterator[RawClient]:
    """A client to make the MARK_STEPS with; the MARK row is gone afterwards."""
    with RawClient(remote) as client:
        try:
            yield client
        finally:
            client.transact("Test", *MARK_STEPS[-1])


MONITOR_COMMANDS = [
    *([*style, "monitor", "Test", "Root"] for style in STYLES),
    ["monitor", "Test", "ALL"],
    ["--format=csv", "monitor", "Test", "ALL"],
    ["monitor", "Test", "Root", "name,tags,!delete", "props,numbers,!initial"],
    ["monitor", "Test", "Root", "_uuid,name,_version"],
    # (Not _uuid in html: ovsdb-client 3.1 reads past an empty _uuid cell ("old" rows).)
    ["--format=html", "monitor", "Test", "Root", "name,count,named"],
    ["monitor-cond", "Test", '[["count",">=",7],["flag","==",true]]', "Root",
     "name,count,flag,tags,props,numbers,color"],
    ["--format=json", "monitor-cond", "Test", "[true]", "Root"],
    ["--data=json", "monitor-cond", "Test", '[["name","!=",""]]', "Root", "name,numbers"],
    ["monitor-cond-since", "Test", "[true]", "Root", "name,count,props"],
    ["--format=list", "monitor-cond-since", "Test", ZERO, '[["count",">",0]]', "Root"],
]


@pytest.mark.parametrize("args", MONITOR_COMMANDS, ids=" ".join)
def test_monitor_matches_ovsdb_client(watched: str, watch: Callable[..., Watcher],
                                      args: list[str]) -> None:
    theirs, ours = both_clients(watch, args, watched)
    text = settle(theirs, ours, "")
    with writer(watched) as client:
        for ops in MARK_STEPS:
            client.transact("Test", *ops)
            text = settle(theirs, ours, text)
    assert ours.stop() == theirs.stop() == (-9, text, "")


def test_monitor_timestamps(watched: str, watch: Callable[..., Watcher]) -> None:
    def untimed(text: str) -> str:
        return TIMESTAMP.sub("TIME", text)

    theirs, ours = both_clients(watch, ["--timestamp", "monitor", "Test", "ALL"], watched)
    text = settle(theirs, ours, "", untimed)
    with writer(watched) as client:
        for ops in MARK_STEPS:
            client.transact("Test", *ops)
            text = settle(theirs, ours, text, untimed)
    status, out, err = ours.stop()
    assert (status, untimed(out), err) == (-9, untimed(text), "")
    assert untimed(out).startswith("TIME\nChild\nrow ")


def test_monitor_resumes_from_last_id(watched: str, watch: Callable[..., Watcher]) -> None:
    """Both print what the server answers to a LASTID; tegadb resumes from it."""
    args = ["monitor-cond-since", "Test", "[true]", "Root", "name,count"]
    theirs, ours = both_clients(watch, args, watched)
    text = settle(theirs, ours, "")
    last_id = text.split("\n", 1)[0].rsplit(" ", 1)[1]
    assert ours.stop() == theirs.stop() == (-9, text, "")
    with writer(watched) as client:
        client.transact("Test", *MARK_STEPS[0])
        theirs, ours = both_clients(watch, [*args[:2], last_id, *args[2:]], watched)
        text = settle(theirs, ours, "")
        client.transact("Test", *MARK_STEPS[2])
        text = settle(theirs, ours, text)
    assert ours.stop() == theirs.stop() == (-9, text, "")
    if last_id != ZERO:  # tegadb: only the row added since
        assert text.startswith("found: true, ") and text.count(" insert ") == 1, text


@pytest.mark.parametrize("args", [
    ["monitor", "Test", "Nope"], ["monitor", "Test", "Root", "nope"],
    ["monitor", "Test", "Root", "name,!insert,name"], ["monitor", "Test", "Root", "name", "name"],
    ["monitor", "Test", "Root", "!modify", "tags"], ["monitor", "Test", "ALL", "name,count"],
    ["monitor-cond", "Test", '[["nope","==",1]]', "Root"],
    ["monitor-cond", "Test", '[["name","==",1]]', "Root"],
    ["monitor-cond", "Test", '[["count","<","x"]]', "Root", "name"],
    ["monitor-cond", "Test", '[["tags","<",1]]', "Root"],
    ["monitor-cond", "Test", '[["name","==","a","b"]]', "Root"],
    ["monitor-cond", "Test", '["name"]', "Root"],
    ["monitor-cond", "Test", "[]", "Nope"], ["monitor-cond", "Test", "[]", "ALL"],
    ["monitor-cond", "Test", "[]", "Root", "name", "count"], ["monitor-cond", "Test", "[]"],
    ["monitor-cond-since", "Test", "[]", "Nope"],
    ["monitor-cond-since", "Test", "[]", "Root", "nope"],
    ["lock", "a", "b"], ["unlock", "a", "b"],
], ids=" ".join)
def test_monitor_errors_match_ovsdb_client(watched: str, args: list[str]) -> None:
    assert assert_same(*with_server(args, watched), timeout=WAIT)[0] == 1


def test_monitor_bad_condition_json(watched: str) -> None:
    # Both name the argument; the parser's own message differs.
    for text in ("[bad", '"x"'):
        args = ["monitor-cond", watched, "Test", text, "Root"]
        ours, theirs = tegadb_client(*args, timeout=WAIT), ovsdb_client(*args, timeout=WAIT)
        assert ours[:2] == theirs[:2] == (1, "")
        assert ours[2].startswith(f'PROG: "{text}": ')


def test_monitor_timeout(watched: str, watch: Callable[..., Watcher]) -> None:
    """-t ends a monitor after that long, by SIGALRM as ovsdb-client's ends."""
    theirs, ours = both_clients(watch, ["-t", "1", "monitor", "Test", "Singleton"], watched)
    status, out, _ = theirs.wait_exit(WAIT)
    assert (status, out.count(" initial auto ")) == (-signal.SIGALRM, 1)
    assert ours.wait_exit(WAIT) == (status, out, "")


def test_monitor_ends_like_ovsdb_client(peer: Callable[..., Peer],
                                        watch: Callable[..., Watcher]) -> None:
    """When the server goes away, both say so and exit with status 1."""
    _require_peers()
    server = peer()
    with RawClient(server.remote_unix) as writer:
        writer.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "w"}})
    theirs, ours = both_clients(watch, ["monitor", "Test", "Weak"], server.remote_unix)
    settle(theirs, ours, "")
    server.stop()
    status, out, err = theirs.wait_exit(WAIT)
    assert (status, err) == (1, f"ovsdb-client: {server.remote_unix}: receive failed (End of file)\n")
    assert ours.wait_exit(WAIT) == (status, out, "tegadb" + err.removeprefix("ovsdb"))


def test_lock_steal_unlock_match_ovsdb_client(watched: str,
                                              watch: Callable[..., Watcher]) -> None:
    """The same contention story, told by four ovsdb-clients, then four tegadb-clients."""
    theirs = lock_transcripts(watched, watch, "L")
    assert lock_transcripts(watched, watch, "L", TEGADB_CLIENT, tegadb_env()) == theirs
    # "unlock" without the lock: an error reply, which both ignore (and wait on).
    unlocks = both_clients(watch, ["unlock", "U"], watched)
    pretty = [watch(*client, "--pretty", "steal", watched, name, env=tegadb_env())
              for client, name in ((["ovsdb-client"], "P1"), (TEGADB_CLIENT, "P2"))]
    assert [w.wait_for(lambda t: t.endswith("}\n"), WAIT) for w in pretty] == [
        '{\n  "locked": true}\n'] * 2
    assert [w.output for w in unlocks] == ["", ""]
    assert [w.process.poll() for w in unlocks] == [None, None]


def test_help_and_version() -> None:
    status, out, _ = tegadb_client("--help")
    assert status == 0 and "dump [SERVER] [DATABASE]" in out
    status, out, _ = tegadb_client("-V")
    assert status == 0 and out.startswith("tegadb-client (tegadb) ")


# --- client library --------------------------------------------------------------

def test_connections_talk_to_a_real_server(loaded: str) -> None:
    with SyncConnection.open(loaded, timeout=10) as conn:
        assert sorted(conn.request("list_dbs", [])) == ["Test", "_Server"]
        assert conn.request("echo", ["x", 1]) == ["x", 1]
        with pytest.raises(RPCError) as caught:
            conn.request("get_schema", ["Nope"])
        assert caught.value.error["error"] == "unknown database"
        conn.request("monitor", ["Test", "m", {"Singleton": {"columns": ["mode"]}}])
        with SyncConnection.open(loaded, timeout=10) as other:
            mode = {"op": "update", "table": "Singleton", "where": [], "row": {"mode": "auto"}}
            other.request("transact", ["Test", mode])  # no change: no update
            other.request("transact", ["Test", mode | {"row": {"mode": "on"}}])
            other.request("transact", ["Test", mode])
        first, second = conn.wait_notification(), conn.wait_notification()
        assert [n.method for n in (first, second)] == ["update", "update"]
        changes = [row["new"] for n in (first, second) for row in n.params[1]["Singleton"].values()]
        assert changes == [{"mode": "on"}, {"mode": "auto"}]

    async def monitor() -> tuple[Any, Notification]:
        async with await Connection.open(loaded) as conn:
            initial = await conn.request("monitor", ["Test", None, {"Weak": {"columns": ["name"]}}])
            insert = {"op": "insert", "table": "Weak", "row": {"name": "mon"}}
            delete = {"op": "delete", "table": "Weak", "where": [["name", "==", "mon"]]}
            await asyncio.gather(conn.request("transact", ["Test", insert]),
                                 conn.request("transact", ["Test", delete]))
            update = await asyncio.wait_for(conn.notifications.get(), 10)
            return initial, update

    initial, update = asyncio.run(monitor())
    assert sorted(row["new"]["name"] for row in initial["Weak"].values()) == ["w", "zzz"]
    assert update.method == "update" and update.params[0] is None
    assert [row["new"] for row in update.params[1]["Weak"].values()] == [{"name": "mon"}]


def test_protocol_ids_members_and_echo() -> None:
    protocol = ClientProtocol()
    request_id, data = protocol.request("list_dbs", [])
    assert request_id == 0  # ids count from 0, as OVS clients' do
    assert json.loads(data) == {"method": "list_dbs", "params": [], "id": 0}
    assert protocol.request("get_schema", ["T"])[0] == 1
    assert json.loads(protocol.notification("cancel", [1])) == {
        "method": "cancel", "params": [1], "id": None}
    events, answer = protocol.receive(
        b'{"id":"echo","method":"echo","params":[7]}'
        b'{"id":"x","method":"lock","params":["l"]}'  # not for a client: ignored
        b'{"id":null,"method":"update","params":[null,{}]}'
        b'{"id":1,"error":{"error":"unknown database"}}{"id":0,"result":[],"error":null}')
    assert json.loads(answer) == {"id": "echo", "result": [7], "error": None}
    assert events == [Notification("update", [None, {}]),
                      Reply(1, None, {"error": "unknown database"}), Reply(0, [], None)]


def test_protocol_rejects_a_broken_stream() -> None:
    with pytest.raises(ProtocolError):
        ClientProtocol().receive(b'[{"id":0,"result":[],"error":null}]')

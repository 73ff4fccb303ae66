"""tegadb-client's database commands against ovs-vsctl, and on other schemas.

For the Open_vSwitch schema, ``tegadb-client --db=unix:S ARGS`` and
``ovs-vsctl --no-wait --db=unix:S ARGS`` run against the same server (once
ovsdb-server, once tegadb-server) with the same data, and must print the same
stdout, the same stderr once the program name (ovs-vsctl's warnings: its log
prefix) is set aside, and exit with the same status.  Commands that change
data run on two servers loaded alike, one by each program, and the tables
must then read the same (UUIDs set aside: the server picks them).

The rest runs the commands on the example schemas (records named by each
table's first index column), with the errors' suggestions, which ovs-vsctl
does not make, and ``wait-until`` waiting for another client's change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import REPO_ROOT, SCHEMA_DIR, Peer, missing_ovs_binaries, start_ovsdb_server, start_tegadb_server

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
STARTERS = {"ovsdb-server": start_ovsdb_server, "tegadb": start_tegadb_server}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OVS_LOG_PREFIX = re.compile(r"^\S+\|\d+\|\w+\|WARN\|", re.MULTILINE)

# The data both programs see: bridges, ports and interfaces with values that
# need quoting, maps, sets and integers.
SETUP = [
    ["init"],
    ["add-br", "br0", "--", "add-port", "br0", "p1", "--",
     "set", "Interface", "p1", "mtu_request=1500", "other_config:vlan=10",
     'external_ids:x="a b"', "external_ids:y=true"],
    ["add-port", "br0", "p2", "--", "set", "Port", "p2", "tag=7", "trunks=1,2,3"],
    ["add-br", "br1", "--", "set", "Bridge", "br1", "flood_vlans=[5]",
     'other_config={k="needs, quotes", e=""}'],
    ["add-port", "br1", "eth-3"],
    # Enough rows for the IDL's hash order to matter (buckets holding several).
    [*(word for n in range(12) for word in ("--", "add-port", f"br{n % 2}", f"q{n}"))][1:],
]

READS = [
    ["list", "Bridge"],
    ["list", "Interface"],
    ["list", "Port", "p1", "p2"],
    ["list", "Open_vSwitch", "."],
    ["--columns=name,mtu_request,other_config", "list", "Interface"],
    ["--columns=_uuid,name", "list", "Bridge", "br1"],
    ["get", "Interface", "p1", "mtu_request", "other_config:vlan", "external_ids", "name"],
    ["get", "Bridge", "br1", "other_config", "other_config:k", "flood_vlans"],
    ["get", "Port", "p2", "tag", "trunks", "interfaces"],
    ["--if-exists", "get", "Interface", "p1", "other_config:nope"],
    ["--if-exists", "get", "Interface", "nope", "name"],
    ["get", "Interface", "p1", "external_ids:x", "external_ids:y"],
    ["find", "Interface", "mtu_request=1500"],
    ["--columns=name", "find", "Interface", "other_config:vlan=10"],
    ["--columns=name", "find", "Port", "tag>5"],
    ["--columns=name", "find", "Port", "trunks{>=}[1,2]"],
    ["--columns=name", "find", "Port", "trunks{in}[1,2]"],
    ["--columns=name", "find", "Port", "trunks{not-in}[9]"],
    ["--columns=name", "find", "Bridge", "flood_vlans={}"],
    ["--columns=name", "find", "Bridge", "flood_vlans!=[]"],
    ["--columns=name", "find", "Interface", "name!=p1", 'type=""'],
    ["--columns=name,type", "find", "Interface", "external_ids:y{=}[true]"],
    ["list", "Bridge", "br0", "--", "get", "Bridge", "br1", "name", "--", "list", "Port", "p2"],
    ["--bare", "--columns=name", "find", "Interface"],
    ["--format=csv", "--columns=name,mtu_request", "list", "Interface"],
    ["--format=table", "--columns=name,ports", "list", "Bridge"],
    ["--format=json", "--columns=name,other_config", "list", "Bridge"],
    ["--data=json", "--columns=name,other_config", "list", "Bridge"],
    ["--no-headings", "--columns=name", "list", "Bridge"],
    ["--oneline", "get", "Bridge", "br1", "name", "other_config", "--", "list", "Bridge", "br0"],
    ["wait-until", "Bridge", "br0", "name=br0", "--", "get", "Bridge", "br0", "stp_enable"],
    ["comment", "nothing", "--", "get", "Bridge", "br0", "name"],
    ["--id=@b", "get", "Bridge", "br0"],
    ["destroy", "Bridge"],  # a warning, and nothing done
    # Several tables: the IDL's order depends on the references between them.
    ["--columns=name", "list", "Port", "--", "--columns=name", "list", "Interface"],
    ["list", "Bridge", "--", "list", "Port", "--", "list", "Interface"],
    ["--columns=name,ports", "list", "Bridge", "--", "--columns=name", "list", "Port"],
    ["--columns=name", "find", "Port", "name!=x", "--", "--columns=name", "list", "Interface"],
    ["get", "Port", "q3", "name", "--", "--columns=_uuid", "list", "Interface"],
]

ERRORS = [
    ["frob", "Bridge"],
    ["list"],
    ["--if-exists", "find", "Bridge"],
    ["list", "Bridge", "--if-exists"],
    ["--columns", "list", "Bridge"],
    ["list", "Bridge", "--", "--if-exists", "--if-exists", "list", "Bridge"],
    ["list", "--", "list", "Bridge"],
    ["list", "Brige"],
    ["list", "Bridge", "nope"],
    ["list", "Interface", "."],
    ["get", "Interface", "p1", "mut"],
    ["get", "Interface", "p1", "mt"],
    ["get", "Interface", "p1", "other_config:nope"],
    ["get", "Interface", "p1", "name:x"],
    ["get", "Interface", "p1", "name", "-", "uuid"],
    ["get", "Interface", "p1", "name=x"],
    ["--if-exists", "--id=@x", "get", "Bridge", "br0"],
    ["--id=x", "get", "Bridge", "br0"],
    ["--columns=", "list", "Bridge"],
    ["find", "Interface", "mtu_request"],
    ["find", "Interface", "mtu_request=abc"],
    ["find", "Interface", "name{in}[p1,p2]"],
    ["find", "Interface", "name:k=v"],
    ["set", "Interface", "p1", "name=x"],
    ["set", "Interface", "p1", "mtu_request="],
    ["set", "Interface", "p1", "mtu_request=9x"],
    ["set", "Interface", "p1", "ofport_request=99999"],
    ["set", "Interface", "p1", "mtu_request:k=1"],
    ["set", "Bridge", "br0", "flood_vlans=[1,x]"],
    ["set", "Bridge", "br0", "flood_vlans=[1"],
    ["set", "Bridge", "br0", "flood_vlans=[1] x"],
    ["set", "Bridge", "br0", "flood_vlans=1-5000"],
    ["set", "Bridge", "br0", "flood_vlans=5-1"],
    ["set", "Bridge", "br0", "other_config={a}"],
    ["set", "Bridge", "br0", 'other_config:"x'],
    ["set", "Bridge", "br0", "other_config:x=\"a"],
    ["set", "Bridge", "br0", "other_config:x="],
    ["set", "Bridge", "br0", "other_config={a=1,a=2}"],
    ["set", "Bridge", "br0", "fail_mode=bogus"],
    ["set", "Bridge", "br0", "stp_enable=maybe"],
    ["set", "Bridge", "br0", "datapath_type="],
    ["set", "Bridge", "br0", "ports=@p"],
    ["set", "Bridge", "br0", "controller=[]", "nope=1"],
    ["add", "Bridge", "br0", "name", "x"],
    ["remove", "Port", "p2", "interfaces", "[]"],
    ["clear", "Port", "p2", "interfaces"],
    ["clear", "Interface", "p1", "nope"],
    ["destroy", "Bridge", "nope"],
    ["--all", "--if-exists", "destroy", "Bridge"],
    ["--all", "destroy", "Bridge", "br0"],
    ["--id=@i", "create", "Interface", "name=pp", "--", "--id=@i", "create", "Interface"],
    ["wait-until", "Bridge", "br0", "name"],
]

# Each run by both programs on twin servers; then every table must read the same.
WRITES = [
    ["set", "Interface", "p1", "mtu_request=9000", "other_config:vlan=20",
     'external_ids={a="1 2", b=x}', "--", "get", "Interface", "p1", "other_config"],
    ["add", "Port", "p2", "trunks", "7", "1", "--", "add", "Bridge", "br1", "other_config",
     "k=kept", "new=v", "--", "get", "Port", "p2", "trunks"],
    ["remove", "Port", "p2", "trunks", "2", "--", "remove", "Bridge", "br1", "other_config", "e",
     "--", "remove", "Interface", "p1", "external_ids", "y=true"],
    ["clear", "Port", "p2", "trunks", "tag", "--", "clear", "Bridge", "br1", "flood_vlans"],
    ["--id=@i", "create", "Interface", "name=p3", "type=internal", "--",
     "--id=@p", "create", "Port", "name=p3", "interfaces=@i", "--",
     "add", "Bridge", "br0", "ports", "@p"],
    ["create", "Manager", 'target="ptcp:6640"', "--", "add", "Open_vSwitch", ".",
     "manager_options", "@m"],
    ["--id=@m", "create", "Manager", 'target="ptcp:6641"', "--", "add", "Open_vSwitch", ".",
     "manager_options", "@m"],
    ["--if-exists", "set", "Interface", "nope", "mtu_request=1", "--",
     "--if-exists", "destroy", "Bridge", "nope", "--", "destroy", "Bridge", "br1", "--",
     "remove", "Open_vSwitch", ".", "bridges", "br1"],
    ["--all", "destroy", "Manager"],
    ["--id=01234567-89ab-cdef-0123-456789abcdef", "create", "Bridge", "name=b9", "--",
     "add", "Open_vSwitch", ".", "bridges", "01234567-89ab-cdef-0123-456789abcdef", "--",
     "get", "Bridge", "b9", "_uuid"],
]


def tegadb_client(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "tegadb.cli.client_main", *args],
                          capture_output=True, text=True, env=environment, timeout=timeout)


def ovs_vsctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ovs-vsctl", "--no-wait", *args], capture_output=True, text=True,
                          timeout=30)


def _stderr(text: str, program: str) -> str:
    text = OVS_LOG_PREFIX.sub("", text)
    return re.sub(rf"^{program}: ", "", text, flags=re.MULTILINE)


def _same(peer: Peer, args: list[str]) -> None:
    ours = tegadb_client(f"--db={peer.remote_unix}", *args)
    theirs = ovs_vsctl(f"--db={peer.remote_unix}", *args)
    assert (ours.stdout, _stderr(ours.stderr, "tegadb-client"), ours.returncode) == \
        (theirs.stdout, _stderr(theirs.stderr, "ovs-vsctl"), theirs.returncode), args


def _load(peer: Peer) -> None:
    for args in SETUP:
        result = ovs_vsctl(f"--db={peer.remote_unix}", *args)
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module", params=sorted(STARTERS))
def vswitch(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer]]:
    """Two servers of one kind with the Open_vSwitch schema and the same data."""
    if missing_ovs_binaries() or not VSWITCH_SCHEMA.exists():
        pytest.skip("Open vSwitch is not installed (run `make peers`)")
    start = STARTERS[request.param]
    peers = []
    try:
        for name in ("a", "b"):
            peer = start(tmp_path_factory.mktemp(f"{request.param}-{name}"), [VSWITCH_SCHEMA])
            peers.append(peer)
            _load(peer)
        yield peers[0], peers[1]
    finally:
        for peer in peers:
            peer.stop()


READS.append(["--if-exists", "--if-exists", "list", "Bridge", "br0"])


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_reads_print_what_ovs_vsctl_prints(vswitch: tuple[Peer, Peer], args: list[str]) -> None:
    _same(vswitch[0], args)


@pytest.mark.parametrize("args", ERRORS, ids=" ".join)
def test_errors_are_ovs_vsctls(vswitch: tuple[Peer, Peer], args: list[str]) -> None:
    peer = vswitch[0]
    ours = tegadb_client(f"--db={peer.remote_unix}", *args)
    theirs = ovs_vsctl(f"--db={peer.remote_unix}", *args)
    assert ours.returncode == theirs.returncode == 1, (ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout == ""
    expected = _stderr(theirs.stderr, "ovs-vsctl").rstrip("\n")
    got = _stderr(ours.stderr, "tegadb-client").rstrip("\n")
    # The same message, to which tegadb-client may add the closest name.
    assert got == expected or re.fullmatch(re.escape(expected) + r'; did you mean "[^"]+"\?',
                                           got), args


def _tables(peer: Peer) -> dict[str, list[str]]:
    """Every table as ovs-vsctl lists it, UUIDs set aside, records sorted."""
    tables = {}
    for table in ("Open_vSwitch", "Bridge", "Port", "Interface", "Manager"):
        listing = ovs_vsctl(f"--db={peer.remote_unix}", "list", table).stdout
        tables[table] = sorted(UUID.sub("UUID", record.strip()) for record in listing.split("\n\n"))
    return tables


def test_writes_change_what_ovs_vsctl_changes(vswitch: tuple[Peer, Peer]) -> None:
    ours_peer, theirs_peer = vswitch
    for args in WRITES:
        ours = tegadb_client(f"--db={ours_peer.remote_unix}", *args)
        theirs = ovs_vsctl(f"--db={theirs_peer.remote_unix}", *args)
        assert (UUID.sub("UUID", ours.stdout), _stderr(ours.stderr, "tegadb-client"),
                ours.returncode) == (UUID.sub("UUID", theirs.stdout),
                                     _stderr(theirs.stderr, "ovs-vsctl"), theirs.returncode), args
        assert _tables(ours_peer) == _tables(theirs_peer), args
    assert "p3" in ovs_vsctl(f"--db={ours_peer.remote_unix}", "list-ports", "br0").stdout


def test_create_prints_the_uuid_the_server_gave(vswitch: tuple[Peer, Peer]) -> None:
    peer = vswitch[0]
    created = tegadb_client(f"--db={peer.remote_unix}", "--id=@q", "create", "QoS",
                            "type=linux-htb", "--", "set", "Port", "p1", "qos=@q")
    assert created.returncode == 0, created.stderr
    uuid = created.stdout.strip()
    assert UUID.fullmatch(uuid)
    assert ovs_vsctl(f"--db={peer.remote_unix}", "get", "Port", "p1", "qos").stdout == uuid + "\n"
    # Named by a UUID prefix as well.
    got = tegadb_client(f"--db={peer.remote_unix}", "get", "QoS", uuid[:6], "type")
    assert got.stdout == "linux-htb\n", got.stderr
    tegadb_client(f"--db={peer.remote_unix}", "clear", "Port", "p1", "qos")


# --- any schema ------------------------------------------------------------------

ROUTER = SCHEMA_DIR / "router.ovsschema"


@pytest.fixture
def router(tegadb_peer) -> Peer:  # type: ignore[no-untyped-def]
    """tegadb serving the Router and IoT examples (two databases)."""
    peer: Peer = tegadb_peer(ROUTER, SCHEMA_DIR / "iot.ovsschema")
    return peer


def test_any_schema_records_named_by_index_column(router: Peer) -> None:
    db = [f"--db={router.remote_unix}", "--database=Router"]
    created = tegadb_client(*db, "create", "Interface", "name=lan", "type=ethernet",
                            "addressing=static", "--", "create", "Interface", "name=wan",
                            "type=ethernet", "addressing=dhcp")
    assert created.returncode == 0, created.stderr
    assert len(UUID.findall(created.stdout)) == 2
    changed = tegadb_client(*db, "set", "Interface", "lan", "mtu=1500", "other_config:vlan=10",
                            "--", "add", "Interface", "lan", "addresses", "10.0.0.1/24")
    assert changed.returncode == 0, changed.stderr
    got = tegadb_client(*db, "get", "Interface", "lan", "mtu", "other_config:vlan", "addresses")
    assert got.stdout == '1500\n"10"\n["10.0.0.1/24"]\n', got.stderr
    found = tegadb_client(*db, "--columns=name", "--bare", "find", "Interface", "addressing=dhcp")
    assert found.stdout == "wan\n"
    listed = tegadb_client(*db, "--columns=name,mtu", "list", "Interface", "lan")
    assert listed.stdout == "name                : lan\nmtu                 : 1500\n"
    assert tegadb_client(*db, "destroy", "Interface", "wan").returncode == 0
    gone = tegadb_client(*db, "list", "Interface", "wan")
    assert (gone.returncode, gone.stderr) == (
        1, 'tegadb-client: no row "wan" in table Interface; did you mean "lan"?\n')


@pytest.mark.parametrize(("args", "message"), [
    (["get", "Interface", "lan", "mut"],
     'Interface does not contain a column whose name matches "mut"; did you mean "mtu"?'),
    (["list", "Interfce"], 'unknown table "Interfce"; did you mean "Interface"?'),
    (["list", "Interface", "lam"], 'no row "lam" in table Interface; did you mean "lan"?'),
    (["set", "Interface", "lan", "mtu=10"],
     "constraint violation: 10 is not in the valid range 68 to 9216 (inclusive)"),
    (["set", "Interface", "lan", "mtu=big"], '"big" is not a valid integer or range'),
    (["set", "Interface", "lan", "enabled=maybe"],
     '"maybe" is not a valid boolean (use "true" or "false")'),
    (["set", "Interface", "lan", "addressing=wifi"],
     "constraint violation: wifi is not one of the allowed values ([dhcp, dhcpv6, none, static])"),
    (["set", "Interface", "lan", "type=vlan"],
     "cannot modify read-only column type in table Interface"),
])
def test_any_schema_errors_name_what_was_wrong(router: Peer, args: list[str],
                                               message: str) -> None:
    db = [f"--db={router.remote_unix}", "--database=Router"]
    assert tegadb_client(*db, "create", "Interface", "name=lan", "type=ethernet",
                         "addressing=static").returncode == 0
    result = tegadb_client(*db, *args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"tegadb-client: {message}\n")


def test_database_is_found_by_its_tables(router: Peer, tegadb_peer,  # type: ignore[no-untyped-def]
                                         tmp_path: Path) -> None:
    # Router and IoT served: only Router has Interface.
    listed = tegadb_client(f"--db={router.remote_unix}", "--columns=name", "list", "Interface")
    assert listed.returncode == 0, listed.stderr
    missing = tegadb_client(f"--db={router.remote_unix}", "list", "Nope")
    assert (missing.returncode, missing.stderr) == (
        1, f"tegadb-client: {router.remote_unix}: no database served (IoT, Router) has table "
           "Nope\n")
    wrong = tegadb_client(f"--db={router.remote_unix}", "--database=Nope", "list", "Interface")
    assert 'no database "Nope"' in wrong.stderr and wrong.returncode == 1
    # Two databases with the table: --database says which.
    twin = tmp_path / "router2.ovsschema"
    twin.write_text(json.dumps({**json.loads(ROUTER.read_text()), "name": "Router2"}))
    both = tegadb_peer(ROUTER, twin)
    ambiguous = tegadb_client(f"--db={both.remote_unix}", "list", "Interface")
    assert (ambiguous.returncode, ambiguous.stderr) == (
        1, f"tegadb-client: {both.remote_unix} serves 2 databases (Router, Router2) with those "
           "tables: choose one with --database=NAME\n")
    chosen = tegadb_client(f"--db={both.remote_unix}", "--database=Router2", "list", "Interface")
    assert (chosen.returncode, chosen.stdout) == (0, "")
    env = dict(os.environ, TEGADB_REMOTE=both.remote_unix)  # the default server
    assert tegadb_client("--database=Router", "list", "Interface", env=env).returncode == 0


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = tegadb_client(f"--db=unix:{tmp_path}/none.sock", "list", "Bridge")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "none.sock" in result.stderr


def test_wait_until_waits_for_another_clients_change(router: Peer) -> None:
    db = [f"--db={router.remote_unix}", "--database=Router"]
    assert tegadb_client(*db, "create", "Interface", "name=lan", "type=ethernet",
                         "addressing=static").returncode == 0
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    waiter = subprocess.Popen(
        [sys.executable, "-m", "tegadb.cli.client_main", *db, "wait-until", "Interface", "lan",
         "mtu=9000", "--", "get", "Interface", "lan", "mtu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None, waiter.communicate()
        assert tegadb_client(*db, "set", "Interface", "lan", "mtu=1500").returncode == 0
        time.sleep(0.5)
        assert waiter.poll() is None  # not yet what it waits for
        assert tegadb_client(*db, "set", "Interface", "lan", "mtu=9000").returncode == 0
        out, err = waiter.communicate(timeout=20)
        assert (waiter.returncode, out) == (0, "9000\n"), err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


def test_a_row_changed_meanwhile_runs_the_commands_again(router: Peer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction waits on the _version of each row it changes: another
    client's change in between makes the commands run again on fresh data,
    so neither change is lost (in-process, to step in between)."""
    from tegadb.cli import dbcommands

    db = [f"--db={router.remote_unix}", "--database=Router"]
    assert tegadb_client(*db, "create", "Interface", "name=lan", "type=ethernet",
                         "addressing=static", "addresses=10.0.0.1/24").returncode == 0
    real_commit = dbcommands.commit
    attempts: list[list[dict[str, object]]] = []

    def commit_after_another_client(*args: object) -> list[object]:
        if not attempts:
            other = tegadb_client(*db, "add", "Interface", "lan", "addresses", "10.0.0.2/24")
            assert other.returncode == 0, other.stderr
        attempts.append(args[2])  # type: ignore[arg-type]
        return real_commit(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dbcommands, "commit", commit_after_another_client)
    assert dbcommands.run([*db, "add", "Interface", "lan", "addresses", "10.0.0.3/24"]) == ""
    assert len(attempts) == 2
    assert attempts[0][0]["op"] == "wait"
    got = tegadb_client(*db, "get", "Interface", "lan", "addresses")
    assert got.stdout == '["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24"]\n'

"""Real OVSDB clients must not tell tegadb from ovsdb-server.

Two clients drive both servers the same way and their views are compared:
- the `ovsdb-client` binary (Open vSwitch's C client): schema commands,
  `transact`, `query` and `dump` in every output format;
- the `ovs` Python library: its JSON-RPC connection (whose strict message
  checks drop a connection on any unexpected member) and its schema parser.
  (Its IDL has tests/integration/test_idl.py.)

One ovsdb-server and one tegadb serve the test schema, the example schemas
in schemas/ and the real vswitch schema for the whole module.  Each test that
writes uses a database of its own and starts by emptying it.  Inserts carry
fixed UUIDs so row order (ovsdb-client sorts rows by UUID) and the short
UUIDs of the HTML format are the same on both servers; other UUIDs are
numbered in order of appearance.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovs.jsonrpc
import ovs.stream
import pytest
from ovs.db.schema import DbSchema
from peers import (
    SCHEMA_DIR,
    TEST_SCHEMA,
    Peer,
    missing_ovs_binaries,
    schema_name,
    start_ovsdb_server,
    start_tegadb_server,
)

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
# Database name -> schema file (the vswitch file may be missing until `make peers`).
SCHEMA_FILES = {**{schema_name(path): path
                   for path in [TEST_SCHEMA, *sorted(SCHEMA_DIR.glob("*.ovsschema"))]},
                "Open_vSwitch": VSWITCH_SCHEMA}
DATABASES = list(SCHEMA_FILES)
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def number_uuids(text: str) -> str:
    """Replace each distinct UUID with `<uuid#N>`, N counting from its first appearance."""
    seen: dict[str, str] = {}
    return UUID_RE.sub(lambda m: seen.setdefault(m.group().lower(), f"<uuid#{len(seen)}>"), text)


@dataclass
class Pair:
    """The reference server and ours, on the same schemas."""
    ovsdb: Peer
    tegadb: Peer

    @property
    def both(self) -> tuple[Peer, Peer]:
        return self.ovsdb, self.tegadb


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    missing = missing_ovs_binaries() + ([] if VSWITCH_SCHEMA.exists() else [str(VSWITCH_SCHEMA)])
    if missing:
        message = f"{', '.join(missing)} not installed (run `make peers`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("interop")
    schemas = list(SCHEMA_FILES.values())
    ovsdb = start_ovsdb_server(directory / "ovsdb", schemas)
    try:
        tegadb = start_tegadb_server(directory / "tegadb", schemas)
    except BaseException:
        ovsdb.stop()
        raise
    yield Pair(ovsdb, tegadb)
    tegadb.stop()
    ovsdb.stop()


def empty_database(peer: Peer, db: str) -> None:
    """Delete every row of `db` so a test starts from the same state on both servers."""
    tables = json.loads(SCHEMA_FILES[db].read_text())["tables"]
    with peer.client() as client:
        result = client.transact(db, *({"op": "delete", "table": t, "where": []} for t in tables))
    assert all("error" not in r for r in result), result


# --- ovsdb-client --------------------------------------------------------------

def ovsdb_client(peer: Peer, *args: str) -> tuple[int, str, str]:
    """Run `ovsdb-client [options] COMMAND unix:<peer> ARGS` -> (status, stdout, stderr)."""
    options = [a for a in args if a.startswith("-")]
    command, *rest = [a for a in args if not a.startswith("-")]
    argv = ["ovsdb-client", *options, command, peer.remote_unix, *rest]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, number_uuids(done.stdout), number_uuids(done.stderr)


def assert_same_output(pair: Pair, *args: str, ordered: bool = True) -> str:
    """ovsdb-client prints the same (status, stdout, stderr) for both servers; returns stdout.

    With `ordered` false the lines of stdout may come in any order (they are sorted).
    """
    reference, ours = (ovsdb_client(peer, *args) for peer in pair.both)
    if not ordered:
        reference, ours = ((status, "".join(sorted(out.splitlines(keepends=True))), err)
                           for status, out, err in (reference, ours))
    assert ours == reference, f"ovsdb-client {' '.join(args)}"
    assert reference[0] == 0, reference
    return reference[1]


def test_ovsdb_client_list_dbs(pair: Pair) -> None:
    out = assert_same_output(pair, "list-dbs")
    assert sorted(out.split()) == sorted([*DATABASES, "_Server"])


@pytest.mark.parametrize("command", ["get-schema", "get-schema-version", "get-schema-cksum",
                                     "list-tables", "list-columns"])
@pytest.mark.parametrize("db", [*DATABASES, "_Server"])
def test_ovsdb_client_schema_commands(pair: Pair, command: str, db: str) -> None:
    # list-* print tables and columns in the order of a hash table filled from
    # the schema's JSON objects, whose member order carries no meaning.
    assert assert_same_output(pair, command, db, ordered=not command.startswith("list-"))


@pytest.mark.parametrize("db", DATABASES)
def test_ovsdb_client_needs_conversion(pair: Pair, db: str, tmp_path: Path) -> None:
    schema = json.loads(SCHEMA_FILES[db].read_text())
    assert assert_same_output(pair, "needs-conversion", str(SCHEMA_FILES[db])) == "no\n"
    # Any change of content (not of form) needs a conversion.
    schema["version"] = "99.0.0"
    changed = tmp_path / "changed.ovsschema"
    changed.write_text(json.dumps(schema))
    assert assert_same_output(pair, "needs-conversion", str(changed)) == "yes\n"


ROOT_A = "a0000000-0000-4000-8000-00000000000a"
ROOT_B = "b0000000-0000-4000-8000-00000000000b"
CHILD_1 = "c0000000-0000-4000-8000-000000000001"
WEAK_1 = "e0000000-0000-4000-8000-000000000001"
SINGLETON = "f0000000-0000-4000-8000-000000000001"

TEST_TXN = ["Test",
            {"op": "insert", "table": "Child", "uuid": CHILD_1, "uuid-name": "kid",
             "row": {"value": "v", "number": 42}},
            {"op": "insert", "table": "Root", "uuid": ROOT_A,
             "row": {"name": "alpha", "count": 7, "ratio": 0.25, "flag": True, "color": "green",
                     "note": "n\u00f6te", "tags": ["set", ["x", "y z"]], "numbers": ["set", [3, -1]],
                     "props": ["map", [["k", "v"], ["a b", "c,d"]]],
                     "children": ["named-uuid", "kid"], "named": ["map", [["one", ["named-uuid", "kid"]]]],
                     "weak": ["uuid", WEAK_1], "serial": 1}},
            {"op": "insert", "table": "Root", "uuid": ROOT_B, "row": {"name": "beta", "ratio": 1}},
            {"op": "insert", "table": "Weak", "uuid": WEAK_1, "row": {"name": "w"}},
            {"op": "insert", "table": "Singleton", "uuid": SINGLETON, "row": {"mode": "on"}},
            {"op": "mutate", "table": "Root", "where": [["name", "==", "beta"]],
             "mutations": [["count", "+=", 5], ["tags", "insert", ["set", ["t"]]]]},
            {"op": "select", "table": "Root", "where": [["count", ">", 4]], "columns": ["name", "count"],
             "sort": ["name"]},
            {"op": "comment", "comment": "interop"}]


@pytest.fixture(scope="module")
def filled_test_db(pair: Pair) -> list[tuple[int, str, str]]:
    """The Test database holding TEST_TXN's rows on both servers; the transact outputs."""
    outputs = []
    for peer in pair.both:
        empty_database(peer, "Test")
        outputs.append(ovsdb_client(peer, "transact", json.dumps(TEST_TXN)))
    return outputs


def test_ovsdb_client_transact(filled_test_db: list[tuple[int, str, str]]) -> None:
    reference, ours = filled_test_db
    assert ours == reference
    assert "error" not in reference[1]


@pytest.mark.parametrize("txn", [
    [{"op": "select", "table": "Root", "where": [["flag", "==", True]]}],
    [{"op": "select", "table": "Root", "where": [], "columns": ["name", "tags", "props"], "sort": ["name"]},
     {"op": "select", "table": "Child", "where": [["number", ">=", 42]], "columns": ["_uuid", "value"]}],
    # query appends an abort: the insert is reported, then rolled back.
    [{"op": "insert", "table": "Weak", "row": {"name": "gone"}},
     {"op": "select", "table": "Weak", "where": [], "columns": ["name"], "sort": ["name"]}],
], ids=["all-columns", "two-tables", "insert-rolled-back"])
def test_ovsdb_client_query(pair: Pair, filled_test_db: Any, txn: list[Any]) -> None:
    out = assert_same_output(pair, "query", json.dumps(["Test", *txn]))
    assert "gone" not in assert_same_output(pair, "dump", "Test", "Weak")
    assert out.startswith("[{")


@pytest.mark.parametrize("options", [
    ["--format=table"], ["--format=list"], ["--format=html"], ["--format=csv"], ["--format=json"],
    ["--format=json", "--pretty"], ["--format=table", "--data=json"], ["--bare"],
    ["--format=csv", "--no-headings", "--data=bare"],
], ids=lambda options: " ".join(options))
def test_ovsdb_client_dump(pair: Pair, filled_test_db: Any, options: list[str]) -> None:
    out = assert_same_output(pair, *options, "dump", "Test")
    assert "alpha" in out and "beta" in out


@pytest.mark.parametrize("columns", [["Root"], ["Root", "name", "tags", "named"],
                                     ["Child", "_uuid", "number"]],
                         ids=" ".join)
def test_ovsdb_client_dump_table_and_columns(pair: Pair, filled_test_db: Any, columns: list[str]) -> None:
    for fmt in ("table", "json"):
        assert assert_same_output(pair, f"--format={fmt}", "dump", "Test", *columns)


@pytest.mark.parametrize("txn", [
    # An op fails: its error, then nulls.
    [{"op": "insert", "table": "System", "row": {"hostname": "", "timezone": "UTC"}},
     {"op": "select", "table": "System", "where": []}],
    # Every op succeeds but the commit fails: the error is appended.
    [{"op": "insert", "table": "Firewall_Rule",
      "row": {"priority": 1, "action": "drop", "src_zone": ["uuid", ROOT_A]}}],
    [{"op": "frobnicate", "table": "System"}],
    [{"op": "select", "table": "Nosuch", "where": []}],
], ids=["op-error", "commit-error", "unknown-op", "unknown-table"])
def test_ovsdb_client_transact_errors(pair: Pair, txn: list[Any]) -> None:
    out = assert_same_output(pair, "transact", json.dumps(["Router", *txn]))
    assert '"error":' in out


VSWITCH_TXN = ["Open_vSwitch",
               # Rows are inserted before anything refers to them by name: a
               # forward reference to a row given an explicit "uuid" dangles.
               {"op": "insert", "table": "Interface", "uuid": "10000000-0000-4000-8000-000000000001",
                "uuid-name": "i0", "row": {"name": "br-int", "type": "internal"}},
               {"op": "insert", "table": "Interface", "uuid": "10000000-0000-4000-8000-000000000002",
                "uuid-name": "i1",
                "row": {"name": "tap0", "mtu_request": 1450,
                        "external_ids": ["map", [["iface-id", "vm1"], ["attached-mac", "52:54:00:12:34:56"]]],
                        "options": ["map", [["tx-queue", "2"]]]}},
               {"op": "insert", "table": "Port", "uuid": "a0000000-0000-4000-8000-000000000001",
                "uuid-name": "p0",
                "row": {"name": "br-int", "interfaces": ["named-uuid", "i0"]}},
               {"op": "insert", "table": "Port", "uuid": "a0000000-0000-4000-8000-000000000002",
                "uuid-name": "p1",
                "row": {"name": "tap0", "interfaces": ["named-uuid", "i1"], "tag": 10,
                        "trunks": ["set", [20, 30]], "vlan_mode": "native-untagged"}},
               {"op": "insert", "table": "Bridge", "uuid": "b0000000-0000-4000-8000-000000000001",
                "uuid-name": "br",
                "row": {"name": "br-int", "ports": ["set", [["named-uuid", "p0"], ["named-uuid", "p1"]]],
                        "fail_mode": "secure", "protocols": ["set", ["OpenFlow13", "OpenFlow15"]],
                        "other_config": ["map", [["disable-in-band", "true"]]]}},
               {"op": "insert", "table": "Open_vSwitch", "uuid": "0f000000-0000-4000-8000-000000000001",
                "row": {"bridges": ["named-uuid", "br"], "ovs_version": "3.1.0",
                        "external_ids": ["map", [["hostname", "hv1"], ["system-id", "hv1-id"]]],
                        "other_config": ["map", [["n-handler-threads", "2"]]]}},
               # What ovs-vsctl does: bump next_cfg and read it back.
               {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]},
               {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]},
               {"op": "comment", "comment": "ovs-vsctl: add-br br-int"}]


def test_ovsdb_client_vswitch(pair: Pair) -> None:
    outputs = []
    for peer in pair.both:
        empty_database(peer, "Open_vSwitch")
        outputs.append(ovsdb_client(peer, "transact", json.dumps(VSWITCH_TXN)))
    assert outputs[1] == outputs[0]
    assert '"next_cfg":1' in outputs[0][1]
    for options in (["--format=table"], ["--format=json"], ["--format=list", "--data=json"]):
        assert "tap0" in assert_same_output(pair, *options, "dump", "Open_vSwitch")
    assert_same_output(pair, "query", json.dumps(
        ["Open_vSwitch", {"op": "select", "table": "Interface", "where": [["mtu_request", "==", 1450]],
                          "columns": ["name", "external_ids", "mtu_request"]}]))


# --- the ovs Python library ----------------------------------------------------

def ovs_connection(peer: Peer) -> ovs.jsonrpc.Connection:
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(peer.remote_unix))
    assert error == 0, os.strerror(error)
    return ovs.jsonrpc.Connection(stream)


def ovs_exchange(peer: Peer, requests: list[tuple[str, list[Any]]]) -> list[tuple[str, Any]]:
    """Send requests with ovs.jsonrpc; each reply as (its type's name, result or error)."""
    conn = ovs_connection(peer)
    replies = []
    try:
        for method, params in requests:
            error, reply = conn.transact_block(ovs.jsonrpc.Message.create_request(method, params))
            # A reply that ovs.jsonrpc rejects (extra member, null result...) ends up here.
            assert error == 0, f"{method}: {os.strerror(error)}"
            assert reply.id is not None
            body = reply.result if reply.type == ovs.jsonrpc.Message.T_REPLY else reply.error
            replies.append((ovs.jsonrpc.Message.type_to_string(reply.type), body))
        assert conn.get_status() == 0
    finally:
        conn.close()
    return replies


def canonical_json(value: Any) -> Any:
    """`value` with its UUIDs numbered in order of appearance, for comparison."""
    return json.loads(number_uuids(json.dumps(value, sort_keys=True)))


SITE = "5100e000-0000-4000-8000-000000000001"
VPN_REQUESTS: list[tuple[str, list[Any]]] = [
    ("echo", []),
    ("echo", ["ping", 0, 2.5, None, {"nested": [True, False, {}]}]),
    *(("get_schema", [db]) for db in DATABASES),
    ("get_schema", ["_Server", "extra-param-the-python-idl-sends"]),
    ("transact", ["VPN",
                  {"op": "insert", "table": "Site", "uuid": SITE,
                   "row": {"name": "hq", "subnets": ["set", ["10.0.0.0/24", "10.0.1.0/24"]],
                           "gateways": ["named-uuid", "g"]}},
                  {"op": "insert", "table": "Gateway", "uuid-name": "g",
                   "row": {"name": "gw1", "public_key": "k" * 44, "key_rotated_at": 1700000000,
                           "listen_port": 51820, "tunnel_address": "10.99.0.1/32"}},
                  {"op": "insert", "table": "Rotation_Policy",
                   "row": {"key_lifetime": 86400, "overlap": 3600, "rotate_psk": True}}]),
    ("transact", ["VPN", {"op": "select", "table": "Site", "where": [], "columns": ["name", "gateways"]},
                  {"op": "select", "table": "Gateway", "where": [["listen_port", "==", 51820]],
                   "columns": ["name", "tunnel_address"]}]),
    ("transact", ["VPN", {"op": "insert", "table": "Rotation_Policy",
                          "row": {"key_lifetime": 3600, "overlap": 0}}]),
    ("transact", ["VPN", {"op": "update", "table": "Site", "where": [], "row": {"nosuch": 1}}]),
    ("transact", ["VPN"]),
    ("get_schema", ["Nosuch"]),
    ("transact", ["Nosuch", {"op": "comment", "comment": "x"}]),
    ("frobnicate", []),
]


def test_ovs_jsonrpc_replies_match(pair: Pair) -> None:
    """ovs.jsonrpc accepts every tegadb reply and sees what ovsdb-server sends."""
    list_dbs = []
    replies = []
    for peer in pair.both:
        empty_database(peer, "VPN")
        (kind, names), = ovs_exchange(peer, [("list_dbs", [])])
        list_dbs.append((kind, sorted(names)))
        replies.append(canonical_json(ovs_exchange(peer, VPN_REQUESTS)))
    assert list_dbs[1] == list_dbs[0] == ("reply", sorted([*DATABASES, "_Server"]))
    reference, ours = replies
    for request, want, got in zip(VPN_REQUESTS, reference, ours, strict=True):
        assert got == want, request
    assert [kind for kind, _ in reference[-3:]] == ["error", "error", "error"]


@pytest.mark.parametrize("db", [*DATABASES, "_Server"])
def test_ovs_schema_parser_reads_tegadb_schema(pair: Pair, db: str) -> None:
    parsed = []
    for peer in pair.both:
        (kind, result), = ovs_exchange(peer, [("get_schema", [db])])
        assert kind == "reply"
        parsed.append(DbSchema.from_json(result))
    reference, ours = parsed
    assert ours.name == db
    assert ours.to_json() == reference.to_json()
    if db in SCHEMA_FILES:
        from_file = DbSchema.from_json(json.loads(SCHEMA_FILES[db].read_text()))
        assert ours.to_json() == from_file.to_json()

"""tegadb-server ``relay:DB:REMOTE`` in front of a real ovsdb-server and of tegadb.

Every test runs real processes: the source (ovsdb-server or tegadb-server,
through the ``peer`` fixture where both must behave alike), the relay
(``tegadb-server relay:...``) and real clients: ovsdb-client, ovs-vsctl,
ovn-nbctl, the ``ovs`` Python IDL, and a raw JSON-RPC client for what the
others do not show (notification order, error objects).  What a client
prints through the relay is compared with what the same command prints
against the source directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from peers import (
    REPO_ROOT,
    TEST_SCHEMA,
    Peer,
    PeerFactory,
    RawClient,
    free_tcp_port,
    make_pki,
    not_ovsdb_remote,
    start_ovsdb_server,
    start_tegadb_server,
)
from test_ovsdb_client_monitor import (  # watch_fixture: the "watch" fixture
    SCENARIOS,
    SEED,
    Server,
    Watcher,
    lock_transcripts,
    run_scenario,
    watch_fixture,  # noqa: F401
)

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
DEADLINE = 10.0


def start_relay(directory: Path, sources: Sequence[str], db: str = "Test",
                extra: Sequence[str] = (), more: Sequence[str] = ()) -> Peer:
    """tegadb-server serving ``relay:DB:SOURCES`` (then the databases ``more``,
    files or relays) on a Unix socket and a TCP port."""
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", ""))
                                        if p)

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "tegadb.server",
                f"--remote=punix:{directory / 'db.sock'}", f"--remote=ptcp:{port}:127.0.0.1",
                f"--log-file={directory / 'server.log'}",
                f"--unixctl={directory / 'tegadb-server.ctl'}",
                *extra, f"relay:{db}:{','.join(sources)}", *more]

    peer = Peer("tegadb relay", directory, command, env)
    peer.start()
    return peer


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """Factory: ``relay(*sources, db="Test")`` -> a running relay, stopped at the end."""
    started: list[Peer] = []

    def make(*sources: str, db: str = "Test", extra: Sequence[str] = (),
             more: Sequence[str] = ()) -> Peer:
        peer = start_relay(tmp_path / f"relay{len(started)}", sources, db, extra, more)
        started.append(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """``check()``'s first true value, polling until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:g} s: {what}")
        time.sleep(0.05)


def server_row(peer: Peer, db: str = "Test") -> dict[str, Any]:
    with peer.client() as client:
        rows = client.transact("_Server", {"op": "select", "table": "Database",
                                           "where": [["name", "==", db]]})[0]["rows"]
    return rows[0] if rows else {}


def names(peer: Peer) -> list[str]:
    with peer.client() as client:
        rows = client.transact("Test", {"op": "select", "table": "Root", "where": [],
                                        "columns": ["name"]})[0]["rows"]
    return sorted(row["name"] for row in rows)


def run(*argv: str, timeout: float = DEADLINE) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.returncode}\n{result.stderr}"
    return result.stdout


def needs(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


# --- ovsdb-client through the relay, compared with the source ----------------------

FIXED = [{"op": "insert", "table": "Root", "uuid": f"0a000000-0000-4000-8000-00000000000{i}",
          "row": {"name": f"r{i}", "count": i, "tags": ["set", ["t", f"u{i}"]],
                  "props": ["map", [["k", str(i)]]]}} for i in range(3)]


def test_ovsdb_client_through_the_relay_matches_the_source(peer: PeerFactory,
                                                          relay: Callable[..., Peer]) -> None:
    needs("ovsdb-client")
    source = peer()
    through = relay(source.remote_unix)
    result = json.loads(run("ovsdb-client", "transact", through.remote_unix,
                            json.dumps(["Test", *FIXED])))
    assert [r["uuid"][1] for r in result] == [op["uuid"] for op in FIXED]
    query = json.dumps(["Test", {"op": "select", "table": "Root", "where": [["count", ">", 0]],
                                 "columns": ["name", "tags", "props"]}])
    outputs = []
    for args in (["query", query], ["dump", "Test"], ["--format=json", "dump", "Test", "Root"],
                 ["list-tables", "Test"], ["get-schema-version", "Test"]):
        outputs.append(run("ovsdb-client", *_with_remote(args, source.remote_unix)))
        assert run("ovsdb-client", *_with_remote(args, through.remote_unix)) == outputs[-1], args
    assert "u2" in outputs[1]


def _with_remote(args: list[str], remote: str) -> list[str]:
    """ovsdb-client ARGS with SERVER after the command (the first non-option)."""
    at = next(i + 1 for i, arg in enumerate(args) if not arg.startswith("-"))
    return [*args[:at], remote, *args[at:]]


class SourceSide(Server):
    """The source's side of a comparison: the writes go through the relay only."""

    def apply(self, ops: list[dict[str, Any]]) -> None:
        pass


@pytest.mark.parametrize("scenario", ["monitor", "monitor ALL", "monitor-cond",
                                      "monitor-cond-since"])
def test_ovsdb_client_monitors_through_the_relay_match_the_source(
        ovsdb_peer: PeerFactory, relay: Callable[..., Peer], watch: Callable[..., Watcher],
        scenario: str) -> None:
    """The writes go through the relay; monitors on the relay and on the source
    print the same."""
    source = ovsdb_peer()
    through = Server(relay(source.remote_unix))
    through.apply(SEED)
    direct = SourceSide(source)
    direct.names = through.names
    try:
        at_source, at_relay = run_scenario([direct, through], watch, *SCENARIOS[scenario])
    finally:
        through.close()
        direct.close()
    assert at_relay == at_source


def test_lock_steal_unlock_through_the_relay(peer: PeerFactory, relay: Callable[..., Peer],
                                             watch: Callable[..., Watcher]) -> None:
    """ovsdb-client's lock transcripts through the relay are the source's own."""
    source = peer()
    through = relay(source.remote_unix)
    assert lock_transcripts(through.remote_unix, watch) == \
        lock_transcripts(source.remote_unix, watch)


def test_ovsdb_client_wait_through_the_relay(ovsdb_peer: PeerFactory,
                                             relay: Callable[..., Peer]) -> None:
    needs("ovsdb-client")
    through = relay(ovsdb_peer().remote_unix)
    run("ovsdb-client", "wait", through.remote_unix, "Test", "connected")


# --- forwarding: own writes, waits, locks across relays, errors ----------------------

def test_a_client_reads_its_own_write_at_once(peer: PeerFactory,
                                              relay: Callable[..., Peer]) -> None:
    """The reply comes after the relay's copy holds the commit, and after the
    client's own monitor update (PROTOCOL.md 5.9)."""
    through = relay(peer().remote_unix)
    with through.client() as client:
        client.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]}]}])
        for i in range(30):
            request_id = client.next_id()
            client.send({"id": request_id, "method": "transact", "params": [
                "Test", {"op": "insert", "table": "Root", "row": {"name": f"n{i}"}}]})
            first = client.recv()
            assert first.get("method") == "update2", first
            assert client.recv()["id"] == request_id
            rows = client.transact("Test", {"op": "select", "table": "Root",
                                            "where": [["name", "==", f"n{i}"]]})[0]["rows"]
            assert len(rows) == 1


def test_a_pipelined_read_sees_the_write_before_it(peer: PeerFactory,
                                                   relay: Callable[..., Peer]) -> None:
    through = relay(peer().remote_unix)
    with through.client() as client:
        for i in range(20):
            client.send({"id": f"w{i}", "method": "transact", "params": [
                "Test", {"op": "insert", "table": "Root", "row": {"name": f"p{i}"}}]})
            client.send({"id": f"r{i}", "method": "transact", "params": [
                "Test", {"op": "select", "table": "Root", "where": [], "columns": ["name"]}]})
        for i in range(20):
            assert "uuid" in client.reply(f"w{i}")["result"][0]
            rows = client.reply(f"r{i}")["result"][0]["rows"]
            assert {"name": f"p{i}"} in rows and len(rows) == i + 1


def test_a_blocking_wait_is_forwarded(peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    source = peer()
    through = relay(source.remote_unix)
    with through.client() as waiter, source.client() as writer:
        waiter.send({"id": "w", "method": "transact", "params": [
            "Test", {"op": "wait", "table": "Root", "where": [["name", "==", "late"]],
                     "columns": ["name"], "until": "==", "rows": [{"name": "late"}],
                     "timeout": 5000}]})
        time.sleep(0.2)
        writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "late"}})
        assert waiter.reply("w")["result"] == [{}]
        timed_out = waiter.transact("Test", {"op": "wait", "table": "Root", "where": [],
                                             "until": "==", "rows": [], "timeout": 0})
        assert timed_out[0]["error"] == "timed out"


# A transaction that waits up to a minute for a "go" row, then inserts "waited".
PARKED = [{"op": "wait", "table": "Root", "where": [["name", "==", "go"]], "columns": ["name"],
           "until": "==", "rows": [{"name": "go"}], "timeout": 60000},
          {"op": "insert", "table": "Root", "row": {"name": "waited"}}]


def park(client: RawClient, request_id: Any, jsonrpc2: bool = False) -> None:
    """Send PARKED as ``request_id``; returns once the source holds it: the
    answer to a wait sent behind it, which a relay forwards behind it."""
    version = {"jsonrpc": "2.0"} if jsonrpc2 else {}
    client.send({**version, "id": request_id, "method": "transact", "params": ["Test", *PARKED]})
    assert client.transact("Test", {"op": "wait", "table": "Root", "where": [], "until": "==",
                                    "rows": [], "timeout": 0}) == [{}]


def cancel(client: RawClient, request_id: Any) -> dict[str, Any]:
    """Cancel ``request_id``: the reply, which must come at once.  (The
    notification is OVSDB's, which tegadb takes from a JSON-RPC 2.0 client too.)"""
    client.send({"id": None, "method": "cancel", "params": [request_id]})
    return client.reply(request_id, timeout=5.0)


def assert_parked_transactions_are_gone(source: Peer) -> None:
    """What was parked at the source is gone: "go" sets nothing off there."""
    with source.client() as writer:
        writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "go"}})
    time.sleep(0.3)  # a parked transaction would run right after that commit
    assert names(source) == ["go"]


@pytest.mark.parametrize("holding", [False, True], ids=["plain", "lock-holder"])
def test_a_cancel_reaches_the_source(peer: PeerFactory, relay: Callable[..., Peer],
                                     holding: bool) -> None:
    """A client's cancel of a forwarded wait is passed on: the source drops the
    transaction (it never runs), and the client gets the reply the source
    gives a change-aware client of its own (PROTOCOL.md 2.4).  A lock holder's
    transactions go over its own connection to the source: canceled there."""
    source = peer()
    through = relay(source.remote_unix)
    replies = []
    for server in (source, through):
        with server.client() as client:
            client.request("set_db_change_aware", [True])
            if holding:
                assert client.request("lock", ["L"])["result"] == {"locked": True}
            park(client, "w")
            replies.append(cancel(client, "w"))
    assert replies[1] == replies[0]
    assert replies[1]["error"] == "canceled"
    assert_parked_transactions_are_gone(source)


def test_a_cancel_goes_down_a_chain_of_relays(peer: PeerFactory,
                                             relay: Callable[..., Peer]) -> None:
    source = peer()
    second = relay(relay(source.remote_unix).remote_unix)
    with second.client() as client:
        park(client, "w")
        assert cancel(client, "w")["error"] == "canceled"
    assert_parked_transactions_are_gone(source)


def test_a_cancel_through_the_relay_is_answered_as_tegadb_answers(
        tegadb_peer: PeerFactory, ovsdb_peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """Every client gets "canceled" (tegadb's rule, PROTOCOL.md 2.4), in its
    own dialect: the relay in front of ovsdb-server answers as tegadb-server."""
    tegadb = tegadb_peer()
    through = relay(ovsdb_peer().remote_unix)
    for jsonrpc2 in (False, True):
        replies = []
        for server in (tegadb, through):
            with server.client() as client:
                park(client, 7, jsonrpc2)
                replies.append(cancel(client, 7))
        assert replies[1] == replies[0], jsonrpc2
        assert (replies[1].get("jsonrpc") == "2.0") is jsonrpc2


def test_a_client_that_leaves_takes_its_forwarded_transactions_along(
        peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """As at the source itself: a blocking wait does not outlive its client."""
    source = peer()
    through = relay(source.remote_unix)
    with through.client() as client:
        park(client, "w")
    time.sleep(0.3)  # the relay sees the client go and cancels at the source
    assert_parked_transactions_are_gone(source)


def test_a_canceled_reply_means_the_write_was_not_committed(
        peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """A cancel races its write, at every stage: still at the relay, at the
    source, answered there.  The client gets "canceled" exactly when the
    source did not commit the write, else the write's own result."""
    source = peer()
    through = relay(source.remote_unix)
    committed = set()
    with through.client() as client:
        for i in range(24):
            name = f"c{i}"
            client.send({"id": i, "method": "transact", "params": [
                "Test", {"op": "insert", "table": "Root", "row": {"name": name}}]})
            time.sleep((i % 6) * 0.0004)
            client.send({"id": None, "method": "cancel", "params": [i]})
            reply = client.reply(i)
            if reply.get("error") is None:
                assert "uuid" in reply["result"][0], reply
                committed.add(name)
            else:
                assert reply["error"] == "canceled", reply
    assert names(source) == sorted(committed)


def test_a_rejected_write_gets_the_source_error_unchanged(
        peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    source = peer()
    through = relay(source.remote_unix)
    bad = [{"op": "insert", "table": "Root", "row": {"name": "x", "count": 1000}},
           {"op": "insert", "table": "Nosuch", "row": {}},
           {"op": "mutate", "table": "Root", "where": [], "mutations": [["count", "/=", 0]]}]
    for op in bad:
        with source.client() as direct, through.client() as relayed:
            assert relayed.request("transact", ["Test", op]) == \
                direct.request("transact", ["Test", op])


def test_a_jsonrpc2_client_writes_and_locks_through_the_relay(
        ovsdb_peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """The forwarded answers come back in the client's dialect (ovsdb-server
    itself speaks only JSON-RPC 1.0)."""
    through = relay(ovsdb_peer().remote_unix)
    with through.client() as client:
        client.send({"jsonrpc": "2.0", "method": "transact", "id": 1, "params": [
            "Test", {"op": "insert", "table": "Root", "row": {"name": "rpc2"}}]})
        reply = client.recv()
        assert reply["jsonrpc"] == "2.0" and reply["result"][0]["uuid"][0] == "uuid"
        client.send({"jsonrpc": "2.0", "method": "lock", "id": 2, "params": ["L"]})
        assert client.recv() == {"jsonrpc": "2.0", "result": {"locked": True}, "id": 2}
    assert names(through) == ["rpc2"]


def test_locks_are_the_source_s_across_relays(peer: PeerFactory,
                                             relay: Callable[..., Peer]) -> None:
    """A lock taken through one relay is held at the source: a client of another
    relay waits for it, a direct client steals it, and each is told."""
    source = peer()
    one, two = relay(source.remote_unix), relay(source.remote_unix)
    with one.client() as a, two.client() as b, source.client() as c:
        assert a.request("lock", ["L"])["result"] == {"locked": True}
        assert b.request("lock", ["L"])["result"] == {"locked": False}
        owned = a.transact("Test", {"op": "assert", "lock": "L"},
                           {"op": "insert", "table": "Root", "row": {"name": "owner"}})
        assert owned[0] == {} and "uuid" in owned[1]
        refused = b.transact("Test", {"op": "assert", "lock": "L"})
        assert refused[0]["error"] == "not owner"
        assert c.request("steal", ["L"])["result"] == {"locked": True}
        assert a.wait_notification("stolen")["params"] == ["L"]
        assert c.request("unlock", ["L"])["result"] == {}
        # a asked with "lock": it is owner again, ahead of b.
        assert a.wait_notification("locked")["params"] == ["L"]
        a.close()
        assert b.wait_notification("locked")["params"] == ["L"]
        assert b.transact("Test", {"op": "assert", "lock": "L"}) == [{}]


def test_locks_of_several_relays_of_one_source(peer: PeerFactory,
                                              relay: Callable[..., Peer]) -> None:
    """Relays of one source (the same SOURCEs) keep the server's locks there,
    and a holder's asserts hold on each of them."""
    source = peer(TEST_SCHEMA, VSWITCH_SCHEMA)
    through = relay(source.remote_unix, more=[f"relay:Open_vSwitch:{source.remote_unix}"])
    writes = {"Test": {"op": "insert", "table": "Root", "row": {"name": "owner"}},
              "Open_vSwitch": {"op": "insert", "table": "Open_vSwitch", "row": {}}}
    with through.client() as holder, through.client() as other, source.client() as direct:
        assert holder.request("lock", ["L"])["result"] == {"locked": True}
        assert direct.request("lock", ["L"])["result"] == {"locked": False}
        for db, write in writes.items():
            owned = holder.transact(db, {"op": "assert", "lock": "L"}, write)
            assert owned[0] == {} and "uuid" in owned[1], db
            assert other.transact(db, {"op": "assert", "lock": "L"})[0]["error"] == "not owner"


def test_locks_are_refused_when_the_relays_sources_differ(peer: PeerFactory,
                                                          relay: Callable[..., Peer]) -> None:
    """A lock belongs to one server, and which one is ambiguous: refused, with
    why; everything else works."""
    one, two = peer(), peer(VSWITCH_SCHEMA)
    through = relay(one.remote_unix, more=[f"relay:Open_vSwitch:{two.remote_unix}"])
    with through.client() as client:
        for method in ("lock", "steal"):
            error = client.request(method, ["L"])["error"]
            assert error["error"] == "not allowed"
            for text in (f'"{method}"', "different sources", one.remote_unix, two.remote_unix):
                assert text in error["details"]
        assert 'without "lock"' in client.request("unlock", ["L"])["error"]["details"]
        client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "w"}})
        client.transact("Open_vSwitch", {"op": "insert", "table": "Open_vSwitch", "row": {}})
    assert names(one) == ["w"]
    with one.client() as direct:  # nothing was taken there
        assert direct.request("lock", ["L"])["result"] == {"locked": True}


# --- real tools: ovs-vsctl, ovn-nbctl, the Python IDL in leader-only mode ---------------

def test_ovs_vsctl_through_the_relay(tmp_path: Path, relay: Callable[..., Peer]) -> None:
    needs("ovs-vsctl", "ovsdb-server")
    source = start_ovsdb_server(tmp_path / "vswitch", [VSWITCH_SCHEMA])
    try:
        through = relay(source.remote_unix, db="Open_vSwitch")

        def vsctl(remote: str, *args: str) -> str:
            return run("ovs-vsctl", f"--db={remote}", "--no-wait", "--timeout=10", *args)

        vsctl(through.remote_unix, "init")
        vsctl(through.remote_unix, "add-br", "br0", "--", "set", "Bridge", "br0",
              "external_ids:owner=relay")
        vsctl(through.remote_unix, "add-port", "br0", "p1")
        for args in (["list-br"], ["list-ports", "br0"], ["get", "Bridge", "br0", "external_ids"],
                     ["show"]):
            assert vsctl(through.remote_unix, *args) == vsctl(source.remote_unix, *args)
        assert vsctl(source.remote_unix, "list-ports", "br0") == "p1\n"
    finally:
        source.stop()


def test_ovn_nbctl_through_the_relay(tmp_path: Path, relay: Callable[..., Peer]) -> None:
    needs("ovn-nbctl", "ovsdb-server")
    if not NB_SCHEMA.exists():
        pytest.skip(f"{NB_SCHEMA} not installed")
    source = start_ovsdb_server(tmp_path / "nb", [NB_SCHEMA])
    try:
        through = relay(source.remote_unix, db="OVN_Northbound")

        def nbctl(remote: str, *args: str) -> str:
            return run("ovn-nbctl", f"--db={remote}", "--timeout=10", *args)

        nbctl(through.remote_unix, "ls-add", "sw0")
        nbctl(through.remote_unix, "lsp-add", "sw0", "port0")
        nbctl(through.remote_unix, "lsp-set-addresses", "port0", "00:00:00:00:00:01 10.0.0.1")
        for args in (["ls-list"], ["lsp-list", "sw0"], ["show"]):
            assert nbctl(through.remote_unix, *args) == nbctl(source.remote_unix, *args)
    finally:
        source.stop()


def test_the_python_idl_in_leader_only_mode(peer: PeerFactory,
                                            relay: Callable[..., Peer]) -> None:
    ovs_idl = pytest.importorskip("ovs.db.idl")
    from test_idl import run_until

    source = peer()
    through = relay(source.remote_unix)
    helper = ovs_idl.SchemaHelper(location=str(TEST_SCHEMA))
    helper.register_all()
    idl = ovs_idl.Idl(through.remote_unix, helper, leader_only=True)
    try:
        run_until(idl, idl.has_ever_connected)
        txn = ovs_idl.Transaction(idl)
        txn.insert(idl.tables["Root"]).name = "from-idl"
        assert txn.commit_block() == ovs_idl.Transaction.SUCCESS
        assert names(source) == ["from-idl"]
        with source.client() as other:
            other.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "other"}})
        run_until(idl, lambda: {r.name for r in idl.tables["Root"].rows.values()}
                  == {"from-idl", "other"})
    finally:
        idl.close()


# --- topologies and failures --------------------------------------------------------------

def test_a_relay_of_a_relay(peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    source = peer()
    first = relay(source.remote_unix)
    second = relay(first.remote_unix)
    with second.client() as client:
        client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "deep"}})
        assert names(second) == names(first) == names(source) == ["deep"]
        assert client.request("lock", ["L"])["result"] == {"locked": True}
    assert server_row(second)["model"] == "clustered"  # see RelayService.server_state
    assert server_row(second)["leader"] is True


def test_ovsdb_server_s_relay_follows_a_tegadb_relay(tmp_path: Path, peer: PeerFactory,
                                                     relay: Callable[..., Peer]) -> None:
    """ovsdb-server's relay accepts tegadb's (its row says clustered, connected, leader)."""
    source = peer()
    ours = relay(source.remote_unix)
    directory = tmp_path / "ovsdb-relay"
    directory.mkdir()

    def command(port: int) -> list[str]:
        return ["ovsdb-server", "--no-chdir", f"--remote=punix:{directory / 'db.sock'}",
                f"--remote=ptcp:{port}:127.0.0.1", f"--unixctl={directory / 'ctl'}",
                f"--pidfile={directory / 'pid'}", f"--log-file={directory / 'server.log'}",
                f"relay:Test:{ours.remote_unix}"]

    theirs = Peer("ovsdb-server relay", directory, command)
    theirs.start()
    try:
        eventually(lambda: server_row(theirs).get("connected"), "ovsdb-server's relay follows")
        with theirs.client() as client:
            client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "chain"}})
        eventually(lambda: names(theirs) == ["chain"], "the write comes back down the chain")
        assert names(source) == names(ours) == ["chain"]
    finally:
        theirs.stop()


def updates_of(client: RawClient, timeout: float = 0.5) -> list[dict[str, Any]]:
    """The update3 notifications that come within ``timeout``."""
    got = []
    while True:
        try:
            got.append(client.wait_notification("update3", timeout=timeout))
        except TimeoutError:
            return got


def test_the_source_restarts(peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """The relay follows again (tegadb resumes; ovsdb-server resends everything,
    which the relay diffs): its clients' monitors see each change once, no reset."""
    source = peer()
    through = relay(source.remote_tcp)
    with through.client() as writer:
        writer.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "before"}})
    with through.client() as watcher:
        reply = watcher.request("monitor_cond_since", [
            "Test", "m", {"Root": [{"columns": ["name"]}]}, "00000000-0000-0000-0000-000000000000"])
        assert len(reply["result"][2]["Root"]) == 1
        source.restart()
        with source.client() as direct:  # most likely before the relay is back
            direct.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "during"}})
        eventually(lambda: server_row(through)["connected"], "the relay follows again")
        with source.client() as direct:
            direct.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "after"}})
        seen = [change for u in updates_of(watcher, timeout=1.0)
                for change in u["params"][2]["Root"].values()]
        assert sorted(seen, key=str) == [{"insert": {"name": "after"}},
                                         {"insert": {"name": "during"}}]
    assert names(through) == ["after", "before", "during"]
    if source.kind == "tegadb":  # it resumes: only what was missed came
        assert "following database Test (found=True" in through.diagnostics()


def test_a_lock_holder_is_disconnected_when_the_source_drops_its_locks(
        peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    """The source let go of the client's locks with its connection: the client
    must know, as it would if it had lost the server itself."""
    source = peer()
    through = relay(source.remote_tcp)
    with through.client() as holder, through.client() as reader:
        assert holder.request("lock", ["L"])["result"] == {"locked": True}
        source.restart()
        assert holder.wait_closed(timeout=DEADLINE)
        assert not reader.wait_closed(timeout=0.5)  # a client without locks stays


def test_the_source_is_gone_for_a_while(peer: PeerFactory, relay: Callable[..., Peer]) -> None:
    source = peer()
    through = relay(source.remote_tcp)
    waiter = through.client()
    with through.client() as client:
        client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "kept"}})
        waiter.send({"id": "w", "method": "transact", "params": [
            "Test", {"op": "wait", "table": "Root", "where": [], "until": "==", "rows": []}]})
        time.sleep(0.2)  # the wait is parked at the source
    source.stop()
    with waiter:
        error = waiter.reply("w", timeout=DEADLINE)["error"]
        assert error["error"] == "not connected"
        assert "may or may not have been committed" in error["details"]
    eventually(lambda: server_row(through)["connected"] is False, "connected false")
    assert server_row(through)["leader"] is False
    with through.client() as client:
        reply = client.request("transact", ["Test", {"op": "insert", "table": "Root",
                                                     "row": {"name": "lost"}}])
        assert reply["error"]["error"] == "not connected"
        assert "not connected to it" in reply["error"]["details"]
        assert client.request("lock", ["L"])["error"]["error"] == "not connected"
    assert names(through) == ["kept"]
    source.start(source.tcp_port)
    eventually(lambda: server_row(through)["connected"], "connected again")
    with through.client() as client:
        client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "back"}})
    assert names(through) == ["back", "kept"]


def test_the_source_converts_the_database(peer: PeerFactory,
                                          relay: Callable[..., Peer]) -> None:
    """The relay follows the new schema; its change-aware monitors are canceled."""
    source = peer()
    through = relay(source.remote_unix)
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "9.9.9"
    schema["tables"]["Weak"]["columns"]["extra"] = {"type": "integer"}
    with through.client() as aware, source.client() as admin:
        aware.request("set_db_change_aware", [True])
        aware.request("monitor_cond", ["Test", "m", {"Weak": [{}]}])
        assert admin.request("convert", ["Test", schema])["result"] == {}
        assert aware.wait_notification("monitor_canceled", timeout=DEADLINE)["params"] == ["m"]
        eventually(lambda: aware.request("get_schema", ["Test"])["result"]["version"] == "9.9.9",
                   "the relay serves the new schema")
        aware.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "w",
                                                                          "extra": 3}})
    assert json.loads(server_row(through)["schema"])["version"] == "9.9.9"


def test_the_relay_moves_to_the_next_source(peer: PeerFactory,
                                           relay: Callable[..., Peer]) -> None:
    source = peer()
    through = relay(f"tcp:127.0.0.1:{free_tcp_port()}", source.remote_unix)
    with through.client() as client:
        client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "second"}})
    assert names(source) == ["second"]


def test_a_source_over_tls(tmp_path: Path, relay: Callable[..., Peer]) -> None:
    """ssl: sources take the client end's key, certificate and CA from the same options."""
    pki = make_pki(tmp_path)
    port = free_tcp_port()
    source = start_tegadb_server(tmp_path / "source", [TEST_SCHEMA], [
        f"--remote=pssl:{port}:127.0.0.1", f"--private-key={pki['server.key']}",
        f"--certificate={pki['server.pem']}", f"--ca-cert={pki['ca.pem']}"])
    try:
        through = relay(f"ssl:127.0.0.1:{port}", extra=[
            f"--private-key={pki['client.key']}", f"--certificate={pki['client.pem']}",
            f"--ca-cert={pki['ca.pem']}"])
        with through.client() as client:
            client.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "tls"}})
        assert names(source) == ["tls"]
    finally:
        source.stop()


def test_a_source_that_is_not_ovsdb(relay: Callable[..., Peer]) -> None:
    with not_ovsdb_remote() as remote:
        through = relay(remote)
        row = server_row(through)
        assert row["connected"] is False and row["schema"] == ["set", []]
        with through.client() as client:
            reply = client.request("transact", ["Test", {"op": "delete", "table": "Root",
                                                         "where": []}])
            assert reply["error"]["error"] == "not connected"


def test_a_database_the_source_does_not_serve(peer: PeerFactory,
                                              relay: Callable[..., Peer]) -> None:
    through = relay(peer().remote_unix, db="Nosuch")
    assert server_row(through, "Nosuch")["connected"] is False
    eventually(lambda: "does not have database Nosuch" in through.diagnostics(),
               "the log says why")


def test_bad_relay_arguments() -> None:
    for argument in ("relay:Test", "relay::tcp:1.2.3.4:5", "relay:Test:bogus:x"):
        result = subprocess.run([sys.executable, "-m", "tegadb.server", argument],
                                capture_output=True, text=True, cwd=REPO_ROOT, timeout=DEADLINE,
                                check=False)
        assert result.returncode == 2, argument
        assert argument in result.stderr


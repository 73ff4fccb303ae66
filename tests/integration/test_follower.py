"""The Follower against real servers: tegadb-server and ovsdb-server.

Each test runs a `Follower` (tegadb/client/follower.py) with a sink that
records what it is given, against a real server started by the `peer`
fixture, and writes through a separate raw client.  Resume is checked by
killing and restarting the source: tegadb sends only what was missed
(found=true); standalone ovsdb-server sends everything again (found=false).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from etcdpeers import EtcdCluster
from peers import TEST_SCHEMA, Peer, PeerFactory, TegadbCluster, not_ovsdb_remote
from peers import async_eventually as eventually
from peers import run_async as run

from tegadb.client.follower import Follower
from tegadb.core.types import ZERO_UUID

DB = "Test"
WAIT = 15.0


class RecordingSink:
    """Keeps every call, in order, as (kind, ...) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        self.events.append(("start", found, updates, last_id, schema_json))

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        self.events.append(("update", updates, last_id))

    def disconnected(self) -> None:
        self.events.append(("disconnected",))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


async def following(follower: Follower, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``follower`` around ``body`` and close it afterwards, whatever happens."""
    task = asyncio.create_task(follower.run())
    try:
        await body()
    finally:
        await follower.close()
        await asyncio.wait_for(task, 10)


def insert_root(server: Peer, name: str) -> str:
    with server.client() as client:
        result = client.transact(DB, {"op": "insert", "table": "Root", "row": {"name": name}})
    uuid: str = result[0]["uuid"][1]
    return uuid


def names_in(updates: dict[str, Any]) -> set[str]:
    """Root names that an update inserts (or lists initially)."""
    return {row.get("initial", row.get("insert", {})).get("name")
            for row in updates.get("Root", {}).values()} - {None}


def test_follows_and_resumes_after_a_restart(peer: PeerFactory) -> None:
    server = peer()
    sink = RecordingSink()
    # A long back-off: the restarted source gets a write before the follower is back.
    follower = Follower([server.remote_unix], DB, sink, tables={"Root": ["name"]},
                        backoff=(4.0, 4.0))

    async def body() -> None:
        await follower.wait_connected(WAIT)
        assert sink.of("start")[0][1:4] == (False, {}, follower.last_id)
        a = insert_root(server, "a")
        await eventually(lambda: len(sink.of("update")) == 1, "the insert of a")
        assert sink.of("update")[0][1] == {"Root": {a: {"insert": {"name": "a"}}}}
        server.kill()
        await eventually(lambda: not follower.connected, "the loss of the connection")
        assert sink.events[-1] == ("disconnected",)
        server.start()
        b = insert_root(server, "b")
        await eventually(lambda: len(sink.of("start")) == 2, "the resume", timeout=30)
        _, found, updates, last_id, _ = sink.of("start")[1]
        if server.kind == "tegadb":
            # Only the missed write, as a change, and a real transaction id.
            assert found is True
            assert updates == {"Root": {b: {"insert": {"name": "b"}}}}
            assert last_id != ZERO_UUID
        else:
            assert found is False  # standalone ovsdb-server keeps no history
            assert names_in(updates) == {"a", "b"}
        c = insert_root(server, "c")
        await eventually(lambda: sink.events[-1][0] == "update", "the insert of c")
        assert names_in(sink.events[-1][1]) == {"c"}
        assert follower.last_id == sink.events[-1][2]
        assert c in sink.events[-1][1]["Root"]

    run(following(follower, body))


def test_fails_over_to_the_next_remote(peer: PeerFactory) -> None:
    first, second = peer(), peer()
    insert_root(first, "on-first")
    insert_root(second, "on-second")
    sink = RecordingSink()
    follower = Follower([first.remote_unix, second.remote_tcp], DB, sink, backoff=(0.05, 0.5))

    async def body() -> None:
        await follower.wait_connected(WAIT)
        assert follower.remote == first.remote_unix
        assert names_in(sink.of("start")[0][2]) == {"on-first"}
        first.kill()
        await eventually(lambda: len(sink.of("start")) == 2, "the fail-over")
        assert follower.remote == second.remote_tcp
        _, found, updates, _, _ = sink.of("start")[1]
        # Another server's history does not hold the first one's id: everything again.
        assert found is False
        assert names_in(updates) == {"on-second"}
        assert sink.events[-2] == ("disconnected",)
        assert follower.last_error is not None and first.remote_unix in follower.last_error

    run(following(follower, body))


def test_a_request_returns_after_its_commit_is_in_the_sink(peer: PeerFactory) -> None:
    server = peer()
    sink = RecordingSink()
    follower = Follower([server.remote_unix], DB, sink)

    async def body() -> None:
        await follower.wait_connected(WAIT)
        result = await follower.request(
            "transact", [DB, {"op": "insert", "table": "Root", "row": {"name": "mine"}}])
        uuid = result[0]["uuid"][1]
        # No waiting: the update came before the reply, and was applied on arrival.
        assert uuid in sink.of("update")[-1][1]["Root"]

    run(following(follower, body))
    with pytest.raises(ConnectionError, match="not connected"):
        asyncio.run(follower.request("echo", []))


def test_cond_change_narrows_and_widens_without_a_resync(peer: PeerFactory) -> None:
    server = peer()
    a, b = insert_root(server, "a"), insert_root(server, "b")
    sink = RecordingSink()
    follower = Follower([server.remote_unix], DB, sink, tables={"Root": ["name"]},
                        conditions={"Root": [["name", "==", "a"]]})

    async def body() -> None:
        await follower.wait_connected(WAIT)
        assert set(sink.of("start")[0][2]["Root"]) == {a}
        await follower.cond_change({"Root": [["name", "==", "b"]]})
        assert sink.events[-1][1] == {"Root": {a: {"delete": None}, b: {"insert": {"name": "b"}}}}
        await follower.cond_change({"Root": [True]})
        assert sink.events[-1][1] == {"Root": {a: {"insert": {"name": "a"}}}}
        assert len(sink.of("start")) == 1

    run(following(follower, body))


def test_follows_a_schema_change_on_the_source(peer: PeerFactory) -> None:
    server = peer()
    insert_root(server, "kept")
    sink = RecordingSink()
    follower = Follower([server.remote_unix], DB, sink, backoff=(0.05, 0.5))
    new_schema = json.loads(TEST_SCHEMA.read_text())
    new_schema["tables"]["Weak"]["columns"]["extra"] = {"type": "integer"}

    async def body() -> None:
        await follower.wait_connected(WAIT)
        assert "extra" not in sink.of("start")[0][4]["tables"]["Weak"]["columns"]
        with server.client() as client:
            reply = client.request("convert", [DB, new_schema])
            assert reply.get("error") is None, reply
        await eventually(lambda: len(sink.of("start")) == 2, "the resync after the conversion")
        _, found, updates, _, schema_json = sink.of("start")[1]
        assert found is False
        assert "extra" in schema_json["tables"]["Weak"]["columns"]
        assert names_in(updates) == {"kept"}

    run(following(follower, body))


def test_a_source_without_the_database_is_not_followed(peer: PeerFactory) -> None:
    server = peer()
    sink = RecordingSink()
    follower = Follower([server.remote_unix], "Nope", sink, backoff=(0.05, 0.1))

    async def body() -> None:
        await eventually(lambda: follower.last_error is not None, "an error")
        assert "does not have database Nope" in str(follower.last_error)
        assert not follower.connected and sink.events == []

    run(following(follower, body))


def test_a_source_that_is_not_ovsdb_is_left() -> None:
    sink = RecordingSink()
    with not_ovsdb_remote() as remote:
        follower = Follower([remote], DB, sink, backoff=(0.05, 0.1))

        async def body() -> None:
            await eventually(lambda: follower.last_error is not None, "an error")
            assert not follower.connected and sink.events == []

        run(following(follower, body))
    assert remote in str(follower.last_error)


def test_leader_only_follows_a_standalone_source(peer: PeerFactory) -> None:
    server = peer()
    sink = RecordingSink()
    follower = Follower([server.remote_unix], DB, sink, leader_only=True)

    async def body() -> None:
        await follower.wait_connected(WAIT)
        assert follower.connected

    run(following(follower, body))


def test_bad_arguments_are_refused_at_once() -> None:
    sink = RecordingSink()
    with pytest.raises(ValueError, match="at least one remote"):
        Follower([], DB, sink)
    with pytest.raises(ValueError, match="not a valid remote"):
        Follower(["tcp:"], DB, sink)
    with pytest.raises(ValueError, match="ssl: remotes need an SSL context"):
        Follower(["ssl:127.0.0.1:6640"], DB, sink)
    with pytest.raises(ValueError, match="not followed: Child"):
        Follower(["unix:x"], DB, sink, tables={"Root": []}, conditions={"Child": [True]})


def start_ovsdb_relay(directory: Path, source: Peer) -> Peer:
    """ovsdb-server 3.1 as a relay of ``source``'s Test database."""
    directory.mkdir(parents=True, exist_ok=True)

    def command(port: int) -> list[str]:
        return ["ovsdb-server", "--no-chdir",
                f"--remote=punix:{directory / 'db.sock'}", f"--remote=ptcp:{port}:127.0.0.1",
                f"--unixctl={directory / 'relay.ctl'}", f"--pidfile={directory / 'relay.pid'}",
                f"--log-file={directory / 'server.log'}", f"relay:{DB}:{source.remote_unix}"]

    relay = Peer("ovsdb-relay", directory, command)
    relay.start()
    return relay


def test_an_ovsdb_server_relay_is_followed_unless_leader_only(ovsdb_peer: PeerFactory,
                                                              tmp_path: Path) -> None:
    source = ovsdb_peer()
    relay = start_ovsdb_relay(tmp_path / "relay", source)
    try:
        sink, picky_sink = RecordingSink(), RecordingSink()
        follower = Follower([relay.remote_unix], DB, sink)
        # ovsdb-server's relay says leader: false (PEERS.md): leader-only clients refuse it.
        picky = Follower([relay.remote_unix], DB, picky_sink, leader_only=True, backoff=(0.05, 0.1))

        async def body() -> None:
            picky_task = asyncio.create_task(picky.run())
            try:
                await follower.wait_connected(WAIT)
                a = insert_root(source, "through-the-relay")
                await eventually(lambda: len(sink.of("update")) == 1, "the update through the relay")
                assert sink.of("update")[0][1]["Root"][a]["insert"]["name"] == "through-the-relay"
                await eventually(lambda: picky.last_error is not None, "the leader-only refusal")
                assert "not the leader" in str(picky.last_error)
                assert picky_sink.events == []
            finally:
                await picky.close()
                await picky_task

        run(following(follower, body))
    finally:
        relay.stop()


def test_fail_over_between_cluster_members_resumes_without_resending(
        etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    """The members of a tegadb cluster share transaction ids: the next member
    sends only what the follower missed."""
    with TegadbCluster(tmp_path, etcd_cluster.endpoints_arg, size=2) as cluster:
        sink = RecordingSink()
        follower = Follower([cluster[0].remote_unix, cluster[1].remote_unix], DB, sink,
                            tables={"Root": ["name"]}, leader_only=True, backoff=(2.0, 2.0))

        async def body() -> None:
            await follower.wait_connected(WAIT)
            a = insert_root(cluster[0], "before")
            await eventually(lambda: len(sink.of("update")) == 1, "the first insert")
            cluster[0].kill()
            await eventually(lambda: not follower.connected, "the loss of the first member")
            b = insert_root(cluster[1], "meanwhile")
            await follower.wait_connected(WAIT)
            _, found, updates, _, _ = sink.of("start")[1]
            assert follower.remote == cluster[1].remote_unix
            assert found is True
            assert updates == {"Root": {b: {"insert": {"name": "meanwhile"}}}}
            assert a not in updates["Root"]

        run(following(follower, body))

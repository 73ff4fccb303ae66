"""The Replica against real servers, each test once per server (the `peer` fixture).

Writes by "someone else" go through a raw client; the replica's own go
through its optimistic transactions.  The conflict tests make another writer
change a row between the replica's read and its commit, from inside the
function the replica runs (a blocking call: the server has committed the
other write before the replica's transaction reaches it).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from peers import TEST_SCHEMA, Peer, PeerFactory, free_tcp_port, make_pki, start_tegadb_server

from tegadb.client import ConflictError, Replica, SyncReplica, TransactionError
from tegadb.client.replica import Transaction
from tegadb.client.rows import Change
from tegadb.protocol.tls import tls_context

DB = "Test"
WAIT = 15.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def transact(server: Peer, *ops: dict[str, Any]) -> list[Any]:
    with server.client() as client:
        return client.transact(DB, *ops)


def insert_root(server: Peer, name: str, **columns: Any) -> uuid.UUID:
    result = transact(server, {"op": "insert", "table": "Root", "row": {"name": name, **columns}})
    return uuid.UUID(result[0]["uuid"][1])


def set_count(server: Peer, name: str, count: int) -> None:
    transact(server, {"op": "update", "table": "Root", "where": [["name", "==", name]],
                      "row": {"count": count}})


def test_rows_hold_typed_values_and_lookup_uses_the_index(peer: PeerFactory) -> None:
    server = peer()
    result = transact(
        server,
        {"op": "insert", "table": "Child", "row": {"value": "kid"}, "uuid-name": "kid"},
        {"op": "insert", "table": "Root", "row": {
            "name": "a", "count": 7, "ratio": 0.5, "flag": True, "color": "red",
            "tags": ["set", ["x", "y"]], "numbers": ["set", [1, 2]],
            "props": ["map", [["k", "v"]]], "children": ["named-uuid", "kid"]}})
    kid, a = (uuid.UUID(r["uuid"][1]) for r in result[:2])
    b = insert_root(server, "b")

    async def body() -> None:
        async with await Replica.open([server.remote_unix], DB) as replica:
            row = replica.rows("Root")[a]
            assert (row._uuid, row.name, row.count, row.ratio, row.flag, row.color) == (
                a, "a", 7, 0.5, True, "red")
            assert row.note is None  # an empty optional
            assert row["tags"] == frozenset({"x", "y"}) and row.numbers == frozenset({1, 2})
            assert row.props == {"k": "v"}
            assert row.children == frozenset({kid})  # references are uuid.UUID
            assert isinstance(row._version, uuid.UUID)
            assert replica.rows("Child")[kid].value == "kid"
            empty = replica.rows("Root")[b]
            assert (empty.count, empty.tags, empty.props, empty.color) == (0, frozenset(), {}, None)
            assert replica.lookup("Root", name="b") == empty
            assert replica.lookup("Root", name="nobody") is None
            with pytest.raises(ValueError, match="Root has no index on count"):
                replica.lookup("Root", count=7)
            with pytest.raises(KeyError, match="Nope is not replicated"):
                replica.rows("Nope")

    run(body())


def test_changes_reach_callbacks_and_streams_with_old_and_new(peer: PeerFactory) -> None:
    server = peer()

    async def body() -> None:
        columns = {"Root": ["name", "tags", "props"]}
        async with await Replica.open(server.remote_unix, DB, tables=columns) as replica:
            seen: list[Change] = []
            replica.on_change(seen.append)
            stream = replica.changes()
            a = insert_root(server, "a", tags=["set", ["x"]], props=["map", [["k", "1"]]])
            transact(server, {"op": "update", "table": "Root", "where": [["name", "==", "a"]],
                              "row": {"tags": ["set", ["y", "z"]],
                                      "props": ["map", [["k", "2"], ["n", "3"]]]}})
            transact(server, {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]})
            got = [await asyncio.wait_for(anext(stream), WAIT) for _ in range(3)]
            assert [(c.kind, c.uuid) for c in got] == [("insert", a), ("modify", a), ("delete", a)]
            insert, modify, delete = got
            assert insert.old is None and insert.new is not None and insert.new.tags == frozenset({"x"})
            assert modify.old == insert.new
            assert modify.new is not None
            assert modify.new.tags == frozenset({"y", "z"}) and modify.new.props == {"k": "2", "n": "3"}
            assert delete.old == modify.new and delete.new is None
            assert seen == got
            assert a not in replica.rows("Root")
            # Only the columns asked for, and _version for the transactions.
            assert set(insert.new) == {"name", "tags", "props", "_version"}
            stream.close()
            assert [c async for c in stream] == []

    run(body())


def test_transact_retries_on_the_fresh_copy_when_another_writer_was_first(peer: PeerFactory) -> None:
    server = peer()
    insert_root(server, "a", count=1)
    attempts: list[int] = []

    def add_one(txn: Transaction) -> int:
        row = txn.lookup("Root", name="a")
        assert row is not None
        attempts.append(row.count)
        if len(attempts) == 1:
            set_count(server, "a", 10)  # the other writer, between our read and our commit
        txn.set(row, "count", row.count + 1)
        return len(attempts)

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB) as replica:
            assert await replica.transact(add_one) == 2
            assert attempts == [1, 10]  # the second attempt read the other writer's value
            row = replica.lookup("Root", name="a")
            assert row is not None and row.count == 11  # our own commit is in the copy already

    run(body())
    with server.client() as client:
        rows = client.transact(DB, {"op": "select", "table": "Root", "where": [], "columns": ["count"]})
    assert rows[0]["rows"] == [{"count": 11}]


def test_a_transaction_block_is_retried_in_attempts(peer: PeerFactory) -> None:
    server = peer()
    insert_root(server, "a", count=1)

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB) as replica:
            seen = []
            async for txn in replica.attempts(retries=1):
                async with txn:
                    row = txn.lookup("Root", name="a")
                    assert row is not None
                    seen.append(row.count)
                    if len(seen) == 1:
                        set_count(server, "a", 10)
                    txn.set(row, "count", row.count + 1)
            assert seen == [1, 10]
            assert txn.conflict is None
            row = replica.lookup("Root", name="a")
            assert row is not None and row.count == 11
            with pytest.raises(ConflictError, match="gave up after 2 attempts"):
                async for txn in replica.attempts(retries=1):
                    async with txn:
                        row = txn.lookup("Root", name="a")
                        assert row is not None
                        set_count(server, "a", row.count + 1)
                        txn.set(row, "count", 0)
            with pytest.raises(ConflictError, match="changed since it was read"):
                async with replica.transaction() as txn:  # one attempt, no retry
                    row = txn.lookup("Root", name="a")
                    assert row is not None
                    set_count(server, "a", 50)
                    txn.set(row, "count", 0)

    run(body())


def test_transact_gives_up_with_a_conflict_error_after_its_retries(peer: PeerFactory) -> None:
    server = peer()
    insert_root(server, "a", count=1)
    attempts = 0

    def always_overtaken(txn: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        row = txn.lookup("Root", name="a")
        assert row is not None
        set_count(server, "a", attempts + 20)
        txn.set(row, "count", 0)

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB) as replica:
            with pytest.raises(ConflictError, match="gave up after 3 attempts"):
                await replica.transact(always_overtaken, retries=2)
            assert attempts == 3
            row = replica.lookup("Root", name="a")
            assert row is not None and row.count == 23  # none of ours went through

    run(body())


def test_a_transaction_block_inserts_references_and_deletes(peer: PeerFactory) -> None:
    server = peer()
    old = insert_root(server, "old")

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB) as replica:
            async with replica.transaction() as txn:
                kid = txn.insert("Child", value="kid")
                root = txn.insert("Root", name="new", children={kid}, tags=["t"])
                txn.set(root, "count", 3)
                txn.delete(txn.row("Root", old))
                txn.comment("from the replica test")
            assert kid.uuid is not None and root.uuid is not None
            new = replica.rows("Root")[root.uuid]
            assert (new.name, new.count, new.tags, new.children) == (
                "new", 3, frozenset({"t"}), frozenset({kid.uuid}))
            assert old not in replica.rows("Root")
            with pytest.raises(TransactionError, match="constraint violation") as refused:
                async with replica.transaction() as txn:
                    txn.set(new, "count", 1000)  # maxInteger is 100
            assert refused.value.op is not None and refused.value.op["op"] == "update"
            with pytest.raises(TypeError, match=r"Root\.count: expected integer"):
                replica.transaction().set(new, "count", "three")
            with pytest.raises(KeyError, match="no column 'bogus'"):
                replica.transaction().set(new, "bogus", 1)

    run(body())


def test_cond_change_narrows_and_widens_the_copy(peer: PeerFactory) -> None:
    server = peer()
    a, b = insert_root(server, "a"), insert_root(server, "b")

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB, tables={"Root": []},
                                      conditions={"Root": [["name", "==", "a"]]}) as replica:
            assert set(replica.rows("Root")) == {a}
            stream = replica.changes()
            await replica.cond_change({"Root": [["name", "==", "b"]]})
            assert set(replica.rows("Root")) == {b}
            assert replica.lookup("Root", name="a") is None
            assert replica.lookup("Root", name="b") is not None
            await replica.cond_change({"Root": [True]})
            assert set(replica.rows("Root")) == {a, b}
            got = [await asyncio.wait_for(anext(stream), WAIT) for _ in range(3)]
            assert sorted((c.kind, c.uuid) for c in got) == sorted(
                [("delete", a), ("insert", b), ("insert", a)])

    run(body())


def test_after_a_restart_only_real_changes_are_reported(peer: PeerFactory) -> None:
    """tegadb resumes (found=true); ovsdb-server resends everything (found=false),
    and the replica reports only the difference from its copy either way."""
    server = peer()
    a = insert_root(server, "a")

    async def body() -> None:
        async with await Replica.open(server.remote_unix, DB, backoff=(3.0, 3.0)) as replica:
            stream = replica.changes()
            server.kill()
            await eventually(lambda: not replica.connected, "the loss of the connection")
            assert a in replica.rows("Root")  # kept while stale
            server.start()
            b = insert_root(server, "b")
            set_count(server, "a", 5)
            await replica.wait_connected(30)
            got = [await asyncio.wait_for(anext(stream), WAIT) for _ in range(2)]
            assert sorted((c.kind, c.uuid) for c in got) == sorted([("insert", b), ("modify", a)])
            assert stream._queue.empty()
            row = replica.rows("Root")[a]
            assert row.count == 5

    run(body())


def test_open_fails_clearly_when_no_remote_answers(tmp_path: Any) -> None:
    async def body() -> None:
        with pytest.raises(ConnectionError, match=r"could not follow database Test within 0\.5 s"):
            await Replica.open([f"unix:{tmp_path}/none.sock"], DB, timeout=0.5, backoff=(0.05, 0.1))

    run(body())


def test_the_sync_wrapper(peer: PeerFactory) -> None:
    server = peer()
    a = insert_root(server, "a", count=1)
    with SyncReplica.open([server.remote_tcp], DB) as replica:
        assert replica.connected
        assert replica.rows("Root")[a].count == 1
        changes = replica.changes(timeout=WAIT)

        def bump(txn: Transaction) -> None:
            row = txn.row("Root", a)
            txn.set(row, "count", row.count + 1)

        replica.transact(bump)
        change = next(changes)
        assert change.kind == "modify" and change.new is not None and change.new.count == 2
        row = replica.lookup("Root", name="a")
        assert row is not None and row.count == 2
        replica.cond_change({"Root": [False]})
        assert replica.rows("Root") == {}


def test_a_replica_over_tls(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("needs openssl (make peers)")
    pki = make_pki(tmp_path)
    port = free_tcp_port()
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [
        f"--remote=pssl:{port}:127.0.0.1", f"--private-key={pki['server.key']}",
        f"--certificate={pki['server.pem']}", f"--ca-cert={pki['ca.pem']}"])
    try:
        a = insert_root(server, "a")
        context = tls_context(str(pki["client.key"]), str(pki["client.pem"]), str(pki["ca.pem"]),
                              server=False)

        async def body() -> None:
            async with await Replica.open(f"ssl:127.0.0.1:{port}", DB, ssl_context=context) as replica:
                assert replica.rows("Root")[a].name == "a"

        run(body())
    finally:
        server.stop()

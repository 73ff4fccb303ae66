"""The `ovs` Python IDL (the library neutron, ovsdbapp and others use) against both servers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

ovs_idl = pytest.importorskip("ovs.db.idl")
import ovs.poller  # noqa: E402
from peers import TEST_SCHEMA  # noqa: E402


def run_until(idl, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Drive the IDL's event loop until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        idl.run()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError("IDL did not get there in time")
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()


def connect(remote: str, probe_interval: int | None = None):
    helper = ovs_idl.SchemaHelper(location=str(TEST_SCHEMA))
    helper.register_all()
    idl = ovs_idl.Idl(remote, helper, probe_interval=probe_interval, leader_only=False)
    run_until(idl, idl.has_ever_connected)
    return idl


def commit(idl, build: Callable[[object], None]) -> int:
    txn = ovs_idl.Transaction(idl)
    build(txn)
    status = txn.commit_block()
    return status


def names(idl) -> set[str]:
    return {row.name for row in idl.tables["Root"].rows.values()}


def insert_root(name: str) -> Callable[[object], None]:
    def build(txn):
        row = txn.insert(txn.idl.tables["Root"])
        row.name = name
    return build


def test_initial_sync_and_changes_from_another_client(peer):
    server = peer()
    with server.client() as other:
        other.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "before"}})
        idl = connect(server.remote_unix)
        try:
            assert names(idl) == {"before"}
            other.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "later"}})
            run_until(idl, lambda: names(idl) == {"before", "later"})
        finally:
            idl.close()


def test_idl_transaction_commits(peer):
    server = peer()
    idl = connect(server.remote_unix)
    try:
        assert commit(idl, insert_root("from-idl")) == ovs_idl.Transaction.SUCCESS
        assert "from-idl" in names(idl)
    finally:
        idl.close()
    with server.client() as c:
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name"]})
    assert rows == [{"rows": [{"name": "from-idl"}]}]


def test_conditional_monitoring_with_cond_change(peer):
    server = peer()
    with server.client() as other:
        for name in ("a", "b", "c"):
            other.transact("Test", {"op": "insert", "table": "Root", "row": {"name": name}})
    idl = connect(server.remote_unix)
    try:
        assert names(idl) == {"a", "b", "c"}
        idl.cond_change("Root", [["name", "==", "b"]])
        run_until(idl, lambda: names(idl) == {"b"})
        idl.cond_change("Root", [["name", "!=", "b"]])
        run_until(idl, lambda: names(idl) == {"a", "c"})
    finally:
        idl.close()


def test_transactions_with_a_lock(peer):
    server = peer()
    first = connect(server.remote_unix)
    second = connect(server.remote_unix)
    try:
        first.set_lock("writer")
        run_until(first, lambda: first.has_lock)
        second.set_lock("writer")
        run_until(second, lambda: second.is_lock_contended)
        assert commit(first, insert_root("locked-write")) == ovs_idl.Transaction.SUCCESS
        # Without the lock the IDL refuses to send (Python puts assert first).
        assert commit(second, insert_root("refused")) == ovs_idl.Transaction.NOT_LOCKED
        first.close()
        run_until(second, lambda: second.has_lock)
        assert commit(second, insert_root("now-mine")) == ovs_idl.Transaction.SUCCESS
    finally:
        second.close()


def test_reconnect_after_restart_resumes(tegadb_peer):
    server = tegadb_peer()
    idl = connect(server.remote_tcp)
    try:
        assert commit(idl, insert_root("one")) == ovs_idl.Transaction.SUCCESS
        server.restart()
        with server.client() as other:
            other.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "two"}})
        run_until(idl, lambda: names(idl) == {"one", "two"}, timeout=20)
    finally:
        idl.close()
    log = server.log_path.read_text()
    # The IDL came back with its last transaction id and got only the delta.
    assert "monitor_cond_since resumed" in log

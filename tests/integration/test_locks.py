"""Locks over real sockets, against ovsdb-server and tegadb alike (PROTOCOL.md 6)."""

from __future__ import annotations

import pytest

from tegadb.core.locks import LockTable


def test_lock_queue_and_notifications(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        assert a.request("lock", ["L1"])["result"] == {"locked": True}
        assert b.request("lock", ["L1"])["result"] == {"locked": False}
        assert a.request("unlock", ["L1"])["result"] == {}
        assert b.wait_notification("locked") == {"id": None, "method": "locked",
                                                 "params": ["L1"]}


def test_steal_from_lock_owner_keeps_victim_queued(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        assert a.request("lock", ["L2"])["result"] == {"locked": True}
        assert b.request("steal", ["L2"])["result"] == {"locked": True}
        assert a.wait_notification("stolen")["params"] == ["L2"]
        # A got the lock with "lock", so it waits in line and gets it back.
        assert b.request("unlock", ["L2"])["result"] == {}
        assert a.wait_notification("locked")["params"] == ["L2"]


def test_assert_needs_the_lock_at_execution(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        a.request("lock", ["L3"])
        op = {"op": "assert", "lock": "L3"}
        assert a.transact("Test", op) == [{}]
        assert b.transact("Test", op) == [{"error": "not owner",
                                           "details": "Asserted lock L3 not held."}]


def test_disconnect_releases_locks(peer):
    server = peer()
    with server.client() as b:
        with server.client() as a:
            assert a.request("lock", ["L4"])["result"] == {"locked": True}
            assert b.request("lock", ["L4"])["result"] == {"locked": False}
        assert b.wait_notification("locked")["params"] == ["L4"]
        assert b.transact("Test", {"op": "assert", "lock": "L4"}) == [{}]


@pytest.mark.parametrize("method,params,details", [
    ("lock", [], "lock request params must be <id>"),
    ("lock", ["1bad"], "lock request params must be <id>"),
    ("steal", ["a", "b"], "steal request params must be <id>"),
    ("unlock", ["never"], 'unlock: "unlock" without "lock" or "steal"'),
])
def test_lock_errors(peer, method, params, details):
    server = peer()
    with server.client() as c:
        error = c.request(method, params)["error"]
    assert error["error"] == "syntax error"
    assert error["details"] == details


def test_relock_needs_unlock_even_after_steal(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        a.request("steal", ["L5"])
        b.request("steal", ["L5"])
        a.wait_notification("stolen")
        error = a.request("lock", ["L5"])["error"]
        assert error["details"] == 'must issue "unlock" before new "lock"'
        assert a.request("unlock", ["L5"])["result"] == {}
        assert a.request("lock", ["L5"])["result"] == {"locked": False}


def test_lock_table_redundant_locked_notice_when_a_waiter_leaves():
    # ovsdb-server tells the owner "locked" again when a waiter unlocks.
    table = LockTable()
    assert table.lock("a", "L") is True
    assert table.lock("b", "L") is False
    assert table.unlock("b", "L") == [("a", "locked", "L")]
    assert table.owner("L") == "a"

"""Monitors over real sockets, each checked against ovsdb-server (PROTOCOL.md 5)."""

from __future__ import annotations

import pytest
from peers import TEST_SCHEMA, start_tegadb_server

ZERO = "00000000-0000-0000-0000-000000000000"


def insert(client, name, **row):
    result = client.transact("Test", {"op": "insert", "table": "Root",
                                      "row": {"name": name, **row}})
    return result[0]["uuid"][1]


def test_monitor_v1_initial_insert_modify_delete(peer):
    server = peer()
    with server.client() as watcher, server.client() as writer:
        uuid = insert(writer, "a", count=1)
        reply = watcher.request("monitor", ["Test", None, {"Root": {"columns": ["name", "count"]}}])
        assert reply["result"] == {"Root": {uuid: {"new": {"name": "a", "count": 1}}}}
        writer.transact("Test", {"op": "update", "table": "Root", "where": [["name", "==", "a"]],
                                 "row": {"count": 2}})
        assert watcher.wait_notification("update")["params"] == [
            None, {"Root": {uuid: {"new": {"name": "a", "count": 2}, "old": {"count": 1}}}}]
        writer.transact("Test", {"op": "delete", "table": "Root", "where": []})
        assert watcher.wait_notification("update")["params"] == [
            None, {"Root": {uuid: {"old": {"name": "a", "count": 2}}}}]


def test_monitor_cond_conditions_enter_and_leave(peer):
    server = peer()
    with server.client() as watcher, server.client() as writer:
        reply = watcher.request("monitor_cond", ["Test", "m2", {"Root": [{
            "columns": ["name", "tags"], "where": [["name", "==", "q"]]}]}])
        assert reply["result"] == {}
        uuid = insert(writer, "q", tags=["set", ["x"]])
        assert watcher.wait_notification("update2")["params"] == [
            "m2", {"Root": {uuid: {"insert": {"name": "q", "tags": "x"}}}}]
        writer.transact("Test", {"op": "mutate", "table": "Root", "where": [],
                                 "mutations": [["tags", "insert", ["set", ["y", "z"]]]]})
        assert watcher.wait_notification("update2")["params"] == [
            "m2", {"Root": {uuid: {"modify": {"tags": ["set", ["y", "z"]]}}}}]
        writer.transact("Test", {"op": "update", "table": "Root", "where": [],
                                 "row": {"name": "qq"}})
        assert watcher.wait_notification("update2")["params"] == [
            "m2", {"Root": {uuid: {"delete": None}}}]


def test_own_update_arrives_before_transact_reply(peer):
    server = peer()
    with server.client() as c:
        c.request("monitor_cond", ["Test", "me", {"Root": [{"columns": ["name"]}]}])
        c.send({"method": "transact", "id": "t", "params": [
            "Test", {"op": "insert", "table": "Root", "row": {"name": "own"}}]})
        # Messages in the order they arrive: the update, then the reply.
        first, second = c.recv(), c.recv()
    assert first["method"] == "update2"
    assert second["id"] == "t" and second["result"][0]["uuid"]


def test_monitor_cond_change_sends_delta_before_reply(peer):
    server = peer()
    with server.client() as c, server.client() as writer:
        a = insert(writer, "a")
        b = insert(writer, "b")
        c.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"],
                                                            "where": [["name", "==", "a"]]}]}])
        request_id = c.next_id()
        c.send({"method": "monitor_cond_change", "id": request_id, "params": [
            "m", "m2", {"Root": [{"where": [["name", "==", "b"]]}]}]})
        reply = c.reply(request_id)
        assert reply["result"] == {}
        update = c.notifications.pop()
        assert update["params"] == ["m2", {"Root": {a: {"delete": None},
                                                    b: {"insert": {"name": "b"}}}}]
        # Later updates use the new id.
        writer.transact("Test", {"op": "update", "table": "Root",
                                 "where": [["name", "==", "b"]], "row": {"count": 3}})
        writer.transact("Test", {"op": "delete", "table": "Root",
                                 "where": [["name", "==", "b"]]})
        assert c.wait_notification("update2")["params"][0] == "m2"


def test_monitor_cond_since_unknown_id_gives_initial(peer):
    server = peer()
    with server.client() as c:
        uuid = insert(c, "a")
        reply = c.request("monitor_cond_since", ["Test", "m3", {"Root": [{"columns": ["name"]}]},
                                                 ZERO])
        found, _last, updates = reply["result"]
        assert found is False
        assert updates == {"Root": {uuid: {"initial": {"name": "a"}}}}


def test_monitor_cond_since_resumes_with_delta(tegadb_peer):
    # ovsdb-server (standalone) always answers found=false; tegadb resumes.
    server = tegadb_peer()
    with server.client() as c:
        insert(c, "a")
        first = c.request("monitor_cond_since", ["Test", "m", {"Root": [{"columns": ["name"]}]},
                                                 ZERO])["result"]
        last_seen = first[1]
        assert last_seen != ZERO
    with server.client() as writer:
        b = insert(writer, "b")
        writer.transact("Test", {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]})
    with server.client() as c:
        found, last, updates = c.request("monitor_cond_since", [
            "Test", "m", {"Root": [{"columns": ["name"]}]}, last_seen])["result"]
        assert found is True
        assert last != last_seen
        assert set(updates["Root"]) == {b, first[2]["Root"].popitem()[0]}
        assert updates["Root"][b] == {"insert": {"name": "b"}}


def versions(client):
    rows = client.transact("Test", {"op": "select", "table": "Root", "where": [],
                                    "columns": ["name", "_version"]})[0]["rows"]
    return {row["name"]: row["_version"] for row in rows}


# Row "a" gains a weak reference to a row that the same transaction deletes,
# so its columns end as they were; row "b" changes "count".  As in
# ovsdb-server, "a" still gets a new _version, which monitors of _version see.
@pytest.mark.parametrize(("method", "columns", "a_update", "b_update"), [
    ("monitor", ["name", "_version"],
     lambda old, new: {"new": {"name": "a", "_version": new}, "old": {"_version": old}},
     lambda old, new: {"new": {"name": "b", "_version": new}, "old": {"_version": old}}),
    ("monitor", ["count"], None, lambda old, new: {"new": {"count": 4}, "old": {"count": 3}}),
    ("monitor_cond", ["weak", "_version"],
     lambda old, new: {"modify": {"_version": new}},
     lambda old, new: {"modify": {"_version": new}}),
    ("monitor_cond", ["name", "weak", "count"], None, lambda old, new: {"modify": {"count": 4}}),
    ("monitor_cond_since", None,
     lambda old, new: {"modify": {"_version": new}},
     lambda old, new: {"modify": {"_version": new, "count": 4}}),
])
def test_change_undone_by_weak_reference_removal_sends_the_new_version(
        peer, method, columns, a_update, b_update):
    server = peer()
    with server.client() as watcher, server.client() as writer:
        w1 = writer.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "w1"}})
        w2 = writer.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "w2"}})
        a = insert(writer, "a", weak=w2[0]["uuid"])
        b = insert(writer, "b", count=3)
        before = versions(writer)
        request = {"columns": columns} if columns else {}
        if method == "monitor":
            params = ["Test", "m", {"Root": request}]
        else:
            params = ["Test", "m", {"Root": [request]}]
            if method == "monitor_cond_since":
                params.append(ZERO)
        watcher.request(method, params)
        writer.transact(
            "Test",
            {"op": "mutate", "table": "Root", "where": [["name", "==", "a"]],
             "mutations": [["weak", "insert", w1[0]["uuid"]]]},
            {"op": "delete", "table": "Weak", "where": [["name", "==", "w1"]]},
            {"op": "update", "table": "Root", "where": [["name", "==", "b"]], "row": {"count": 4}})
        after = versions(writer)
        assert after["a"] != before["a"]
        expected = {b: b_update(before["b"], after["b"])}
        if a_update is not None:
            expected[a] = a_update(before["a"], after["a"])
        update = watcher.wait_notification()["params"]
        assert update[-1] == {"Root": expected}
        rows = writer.transact("Test", {"op": "select", "table": "Root",
                                        "where": [["name", "==", "a"]], "columns": ["weak"]})
        assert rows[0]["rows"] == [{"weak": w2[0]["uuid"]}]


def test_monitor_cancel(peer):
    server = peer()
    with server.client() as c:
        c.request("monitor", ["Test", "x", {"Root": {"columns": ["name"]}}])
        assert c.request("monitor_cancel", ["x"])["result"] == {}
        assert c.request("monitor_cancel", ["x"])["error"] == "unknown monitor"
        assert c.request("monitor_cancel", [])["error"] == "invalid parameters"
        insert(c, "after")
        assert c.notifications == []


@pytest.mark.parametrize("method,params,details", [
    ("monitor_cond", ["Test", "m", {"Nope": [{}]}], "no table named Nope"),
    ("monitor_cond", ["Test", "m"], "invalid parameters"),
    ("monitor_cond", ["Test", "m", []], "monitor-requests must be object"),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["nope"]}]}],
     "nope is not a valid column name"),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name", "name"]}]}],
     "column name mentioned more than once"),
    ("monitor_cond_since", ["Test", "m", {"Root": [{}]}, "zz"],
     "last-txn-id must be UUID format."),
    ("monitor_cond_change", ["nope", "m", {}], "unknown monitor session"),
])
def test_monitor_errors(peer, method, params, details):
    server = peer()
    with server.client() as c:
        error = c.request(method, params)["error"]
    assert error["error"] == "syntax error"
    assert error["details"] == details


def test_duplicate_monitor_id(peer):
    server = peer()
    with server.client() as c:
        c.request("monitor_cond", ["Test", "dup", {"Root": [{}]}])
        assert c.request("monitor_cond", ["Test", "dup", {"Root": [{}]}])["error"] == {
            "error": "syntax error", "details": "duplicate monitor ID", "syntax": '"dup"'}


def test_disconnect_storm_leaves_no_state(tegadb_peer):
    server = tegadb_peer()
    for i in range(30):
        c = server.client()
        c.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]}]}])
        c.request("monitor", ["Test", "v1", {"Root": {"columns": ["count"]}}])
        c.request("lock", [f"L{i % 3}"])
        c.send({"method": "transact", "id": "w", "params": ["Test", {
            "op": "wait", "table": "Root", "where": [], "columns": ["name"], "until": "==",
            "rows": [{"name": "never"}]}]})
        c.send_raw(b'{"method":"transact","params":["Test",')
        c.close()
    with server.client() as c:
        insert(c, "after-storm")
        assert c.request("tegadb_stats", [])["result"] == {
            "sessions": 1, "monitors": 0, "monitor_specs": 0, "locks": 0,
            "parked_transactions": 0}
        # Every lock is free again: this session owns each at once.
        for i in range(3):
            assert c.request("lock", [f"L{i}"])["result"] == {"locked": True}
    log = server.log_path.read_text()
    assert "Traceback" not in log


def test_history_bound_gives_found_false_past_the_window(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], ["--history-transactions=3"])
    try:
        with server.client() as c:
            ids = []
            for i in range(6):
                insert(c, f"r{i}")
                ids.append(c.request("monitor_cond_since", [
                    "Test", f"m{i}", {"Root": [{"columns": ["name"]}]}, ZERO])["result"][1])
            spec = {"Root": [{"columns": ["name"]}]}
            old = c.request("monitor_cond_since", ["Test", "old", spec, ids[1]])["result"]
            recent = c.request("monitor_cond_since", ["Test", "new", spec, ids[3]])["result"]
        assert old[0] is False and len(old[2]["Root"]) == 6
        assert recent[0] is True
        assert sorted(u["insert"]["name"] for u in recent[2]["Root"].values()) == ["r4", "r5"]
    finally:
        server.stop()


def test_cond_change_of_another_sessions_monitor(peer):
    server = peer()
    with server.client() as a, server.client() as b:
        a.request("monitor_cond", ["Test", "mine", {"Root": [{"columns": ["name"]}]}])
        error = b.request("monitor_cond_change", ["mine", "mine", {"Root": [{"where": []}]}])
        assert error["error"]["details"] == "unknown monitor session"

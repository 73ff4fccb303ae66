"""Monitors: request parsing, update shapes, coalescing, conditions, history (no sockets).

Error objects, replies and per-transaction updates here were checked against
ovsdb-server 3.1.0 by running the same requests and transactions on both
(ovsdb-server flushes after every commit, so coalescing and resuming follow
PROTOCOL.md 5.6-5.7 instead).  Rows get explicit UUIDs so replies can be
spelled out.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import ujson

from tegadb.core import conditions, values
from tegadb.core.database import Database
from tegadb.core.errors import OVSDBError
from tegadb.core.history import History, merge
from tegadb.core.ids import new_uuid
from tegadb.core.monitor import Monitor, MonitorHub, parse_cond_change, parse_monitor
from tegadb.core.schema import DbSchema
from tegadb.core.types import UNLIMITED, ZERO_UUID

SCHEMA = DbSchema.from_json(json.loads(
    (Path(__file__).parent.parent / "data" / "test.ovsschema").read_text()))

R1 = "11111111-0000-0000-0000-000000000001"
R2 = "11111111-0000-0000-0000-000000000002"
R3 = "11111111-0000-0000-0000-000000000003"
C1 = "22222222-0000-0000-0000-000000000001"
C2 = "22222222-0000-0000-0000-000000000002"
W1 = "33333333-0000-0000-0000-000000000001"


def insert(table: str, uuid: str, row: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    op = {"op": "insert", "table": table, "uuid": uuid, "row": row}
    if name is not None:
        op["uuid-name"] = name
    return op


def update(table: str, where: list[Any], row: dict[str, Any]) -> dict[str, Any]:
    return {"op": "update", "table": table, "where": where, "row": row}


def delete(table: str, where: list[Any]) -> dict[str, Any]:
    return {"op": "delete", "table": table, "where": where}


def named(name: str) -> list[Any]:
    return [["name", "==", name]]


class Env:
    """A database, its monitor hub and history, and the monitors of one session."""

    def __init__(self, max_transactions: int | None = 10_000, max_lag: int = 32) -> None:
        self.db = Database(SCHEMA)
        self.history = None if max_transactions is None else History(max_transactions)
        self.hub = MonitorHub(self.db, self.history, max_lag=max_lag)
        self.monitors: dict[Any, Monitor] = {}

    def commit(self, *ops: dict[str, Any]) -> str:
        outcome = self.db.transact(list(ops))
        assert outcome.results is not None and all(
            r is not None and "error" not in r for r in outcome.results), outcome.results
        txn_id = new_uuid()
        if outcome.changes is not None:
            self.hub.commit(outcome.changes, txn_id)
        return txn_id

    def params(self, method: str, requests: Any, mid: Any = "m",
               last: str = ZERO_UUID) -> list[Any]:
        return ["Test", mid, requests] + ([last] if method == "monitor_cond_since" else [])

    def open(self, method: str, requests: Any, mid: Any = "m",
             last: str = ZERO_UUID) -> tuple[Monitor, Any]:
        request = parse_monitor(method, self.params(method, requests, mid, last), self.db,
                                lambda i: i in self.monitors)
        monitor, result = self.hub.open(request)
        self.monitors[mid] = monitor
        return monitor, result

    def cond_change(self, params: list[Any]) -> list[list[Any]]:
        monitor, new_id, requests = parse_cond_change(params, self.monitors.get)
        sent = monitor.change_conditions(new_id, requests)
        del self.monitors[params[0]]
        self.monitors[new_id] = monitor
        return sent


# --- request parsing errors (exact, as ovsdb-server sends them) -----------------------

def _error(details: str, syntax: Any = None, tag: str = "syntax error") -> dict[str, Any]:
    error = {"error": tag, "details": details}
    if syntax is not None:
        error["syntax"] = syntax
    return error


MONITOR_ERRORS = [
    ("monitor_cond", ["Test", "m", {"Root": [{}]}, 5],
     _error("invalid parameters", '["Test","m",{"Root":[{}]},5]')),
    ("monitor_cond_since", ["Test", "m", {"Root": [{}]}],
     _error("invalid parameters", '["Test","m",{"Root":[{}]}]')),
    ("monitor", ["Test", "m"], _error("invalid parameters", '["Test","m"]')),
    ("monitor_cond", ["Test", "taken", 5], _error("duplicate monitor ID", '"taken"')),
    ("monitor_cond", ["Test", "m", []], _error("monitor-requests must be object", "[]")),
    ("monitor_cond_since", ["Test", "m", 5, 5], _error("monitor-requests must be object", "5")),
    ("monitor_cond", ["Test", "m", {"Nope": [{}]}], _error("no table named Nope")),
    ("monitor_cond", ["Test", "m", {"Root": [{}], "Nope": [{}]}], _error("no table named Nope")),
    ("monitor_cond", ["Test", "m", {"Root": 5}],
     _error("Parsing table Root failed: Object expected.")),
    ("monitor_cond", ["Test", "m", {"Root": [5]}],
     _error("Parsing table Root failed: Object expected.")),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'columns'.", '{"columns":5}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": None}]}],
     _error("Parsing table Root failed: Type mismatch for member 'columns'.",
            '{"columns":null}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": [5]}]}],
     _error("array of column names expected", "[5]")),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name", 5]}]}],
     _error("array of column names expected", '["name",5]')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["zz"]}]}],
     _error("zz is not a valid column name", '["zz"]')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["zz", "name", "name"]}]}],
     _error("zz is not a valid column name", '["zz","name","name"]')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name", "name", "zz"]}]}],
     _error("column name mentioned more than once", '["name","name","zz"]')),
    ("monitor", ["Test", "m", {"Root": [{"columns": ["name"]}, {"columns": ["name"]}]}],
     _error("column name mentioned more than once", '["name"]')),
    # The duplicate comes from the default column list: no syntax member.
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]}, {}]}],
     _error("column name mentioned more than once")),
    ("monitor_cond", ["Test", "m", {"Root": [{"select": {"bogus": True}}]}],
     _error("Parsing table Root select failed: Member 'bogus' is present but not allowed here.",
            '{"bogus":true}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"select": {"a": 1, "b": 2}}]}],
     _error("Parsing table Root select failed: Member 'a' and 1 other member are present but "
            "not allowed here.", '{"a":1,"b":2}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"select": {"insert": 1, "zork": 2}}]}],
     _error("Parsing table Root select failed: Type mismatch for member 'insert'.",
            '{"insert":1,"zork":2}')),
    ("monitor", ["Test", "m", {"Root": {"select": {"initial": 1}}}],
     _error("Parsing table Root select failed: Type mismatch for member 'initial'.",
            '{"initial":1}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"select": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'select'.", '{"select":5}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'where'.", '{"where":5}')),
    # `where` is checked first, unknown members last, then select, columns and where contents.
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"], "select": {"bogus": 1},
                                              "where": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'where'.",
            '{"columns":["name"],"select":{"bogus":1},"where":5}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"bogus": 1, "select": {"bogus": 1}}]}],
     _error("Parsing table Root failed: Member 'bogus' is present but not allowed here.",
            '{"bogus":1,"select":{"bogus":1}}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"x": 1, "y": 2, "z": 3}]}],
     _error("Parsing table Root failed: Member 'x' and 2 other members are present but not "
            "allowed here.", '{"x":1,"y":2,"z":3}')),
    ("monitor", ["Test", "m", {"Root": [{"where": []}]}],
     _error("Parsing table Root failed: Member 'where' is present but not allowed here.",
            '{"where":[]}')),
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["zz"], "where": [["zz", "==", 3]]}]}],
     _error("zz is not a valid column name", '["zz"]')),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [["zz", "==", 1]]}]}],
     _error("No column zz in table Root.", '["zz","==",1]', "unknown column")),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [["name", "~=", "a"]]}]}],
     _error("No function named ~=.", tag="unknown function")),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [1]}]}],
     _error("Parse error in condition.", "1")),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [["_uuid", "==", ["named-uuid", "x"]]]}]}],
     _error('expected ["uuid", <string>]', '["named-uuid","x"]')),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [["count", "==", 101]]}]}],
     _error("101 is not in the valid range 0 to 100 (inclusive)", tag="constraint violation")),
    ("monitor_cond", ["Test", "m", {"Root": [{"where": [["name", "<", "a"]]}]}],
     _error('Type mismatch: "<" operator may not be applied to column name of type string.',
            '["name","<","a"]')),
    # Every request's `where` is parsed, though only the first one is used.
    ("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]},
                                              {"columns": ["flag"], "where": [["zz", "==", 1]]}]}],
     _error("No column zz in table Root.", '["zz","==",1]', "unknown column")),
    ("monitor_cond_since", ["Test", "m", {"Nope": [{}]}, 5], _error("no table named Nope")),
    ("monitor_cond_since", ["Test", "m", {"Root": [{}]}, 5],
     _error("last-txn-id must be string", "5")),
    ("monitor_cond_since", ["Test", "m", {"Root": [{}]}, "xyz"],
     _error("last-txn-id must be UUID format.", '"xyz"')),
]


@pytest.mark.parametrize("method,params,expected", MONITOR_ERRORS)
def test_monitor_request_errors(method, params, expected):
    env = Env()
    with pytest.raises(OVSDBError) as info:
        parse_monitor(method, params, env.db, lambda i: i == "taken")
    assert info.value.to_json() == expected


def test_v1_ignores_extra_params_and_v3_accepts_any_uuid_case():
    env = Env()
    request = parse_monitor("monitor", ["Test", "m", {"Root": {}}, "junk"], env.db,
                            lambda i: False)
    assert request.version == 1
    request = parse_monitor("monitor_cond_since",
                            ["Test", "m", {"Root": [{}]}, "00000000-0000-0000-0000-00000000000A"],
                            env.db, lambda i: False)
    assert request.last_txn_id == "00000000-0000-0000-0000-00000000000a"


# --- columns ---------------------------------------------------------------------------

def test_default_columns_include_version_not_uuid():
    env = Env()
    env.commit(insert("Weak", W1, {"name": "w"}))
    version = env.db.tables["Weak"].rows[W1]["_version"][0]
    _, v2 = env.open("monitor_cond", {"Weak": [{}]}, "a")
    _, v1 = env.open("monitor", {"Weak": {}}, "b")
    assert v2 == {"Weak": {W1: {"initial": {"name": "w", "_version": ["uuid", version]}}}}
    assert v1 == {"Weak": {W1: {"new": {"name": "w", "_version": ["uuid", version]}}}}


def test_explicit_uuid_column_and_empty_column_list():
    env = Env()
    env.commit(insert("Weak", W1, {"name": "w"}))
    _, with_uuid = env.open("monitor_cond", {"Weak": [{"columns": ["_uuid", "name"]}]}, "a")
    assert with_uuid == {"Weak": {W1: {"initial": {"_uuid": ["uuid", W1], "name": "w"}}}}
    empty, rows_only = env.open("monitor_cond", {"Weak": [{"columns": []}]}, "b")
    empty_v1, rows_only_v1 = env.open("monitor", {"Weak": [{"columns": []}]}, "c")
    assert rows_only == {"Weak": {W1: {"initial": {}}}}
    assert rows_only_v1 == {"Weak": {W1: {"new": {}}}}
    env.commit(update("Weak", [], {"name": "x"}))
    assert empty.flush() is None and empty_v1.flush() is None
    env.commit(delete("Weak", []))
    assert empty.flush() == ["b", {"Weak": {W1: {"delete": None}}}]
    assert empty_v1.flush() == ["c", {"Weak": {W1: {"old": {}}}}]


def test_table_with_no_requests_reports_nothing():
    env = Env()
    env.commit(insert("Weak", W1, {"name": "w"}))
    monitor, result = env.open("monitor_cond", {"Weak": []})
    assert result == {}
    env.commit(update("Weak", [], {"name": "x"}))
    assert monitor.flush() is None


# --- v1 and v2 shapes ----------------------------------------------------------------------

ROOT_A = {"name": "a", "props": ["map", [["k3", "v3"]]], "numbers": ["set", [-1, 1]],
          "ratio": 1}


def test_v1_update_old_has_changed_columns_new_has_all():
    # PROTOCOL.md 5.3's verified example, on the test schema (m -> props, ints -> numbers).
    env = Env()
    env.commit(insert("Root", R1, ROOT_A))
    monitor, _ = env.open("monitor", {"Root": {"columns": ["name", "props", "numbers", "ratio"]}},
                          "m1")
    env.commit(update("Root", named("a"), {"props": ["map", [["k3", "v4"], ["k9", "v9"]]],
                                           "numbers": ["set", [1, 2, 5]], "ratio": 0.5}))
    assert monitor.method == "update"
    assert monitor.flush() == ["m1", {"Root": {R1: {
        "new": {"name": "a", "props": ["map", [["k3", "v4"], ["k9", "v9"]]],
                "numbers": ["set", [1, 2, 5]], "ratio": 0.5},
        "old": {"props": ["map", [["k3", "v3"]]], "numbers": ["set", [-1, 1]], "ratio": 1}}}}]


def test_v1_insert_and_delete_carry_every_column_defaults_included():
    env = Env()
    monitor, result = env.open("monitor", {"Root": {"columns": ["name", "props", "count"]}})
    assert result == {}
    env.commit(insert("Root", R1, {"name": "a"}))
    assert monitor.flush() == ["m", {"Root": {R1: {
        "new": {"name": "a", "props": ["map", []], "count": 0}}}}]
    env.commit(delete("Root", []))
    assert monitor.flush() == ["m", {"Root": {R1: {
        "old": {"name": "a", "props": ["map", []], "count": 0}}}}]


UPDATE2_DIFFS = [
    # (column, before, after, diff sent): sets max>1 symmetric difference, maps per key,
    # scalars and optionals the new value (an emptied optional is ["set",[]]).
    ("numbers", ["set", [-1, 1]], ["set", [1, 2, 5]], ["set", [-1, 2, 5]]),
    ("tags", ["set", ["x", "y"]], "y", "x"),
    ("props", ["map", [["k3", "v3"]]], ["map", [["k3", "v4"], ["k9", "v9"]]],
     ["map", [["k3", "v4"], ["k9", "v9"]]]),
    ("props", ["map", [["k1", "v1"], ["k2", "v2"]]], ["map", [["k2", "v2"]]],
     ["map", [["k1", "v1"]]]),
    ("color", "red", ["set", []], ["set", []]),
    ("color", ["set", []], "blue", "blue"),
    ("note", "hi", "ho", "ho"),
    ("count", 1, 7, 7),
    ("flag", True, False, False),
]


@pytest.mark.parametrize("column,before,after,diff", UPDATE2_DIFFS)
def test_update2_modify_sends_diffs(column, before, after, diff):
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", column: before}))
    monitor, _ = env.open("monitor_cond", {"Root": [{"columns": [column]}]})
    env.commit(update("Root", [], {column: after}))
    assert monitor.flush() == ["m", {"Root": {R1: {"modify": {column: diff}}}}]


def test_update2_initial_and_insert_omit_defaults():
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "count": 3}))
    requests = {"Root": [{"columns": ["name", "count", "flag", "tags", "props", "color"]}]}
    monitor, result = env.open("monitor_cond", requests)
    assert result == {"Root": {R1: {"initial": {"name": "a", "count": 3}}}}
    env.commit(insert("Root", R2, {"name": "", "flag": True, "tags": "t"}))
    assert monitor.flush() == ["m", {"Root": {R2: {"insert": {"flag": True, "tags": "t"}}}}]
    env.commit(delete("Root", named("a")))
    assert monitor.flush() == ["m", {"Root": {R1: {"delete": None}}}]


def test_appendix_a_transcript():
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "props": ["map", [["k3", "v3"]]],
                                   "numbers": ["set", [-1, 1]], "count": 1}))
    m2, reply = env.open("monitor_cond", {"Root": [{
        "columns": ["name", "numbers", "props", "count", "color"],
        "where": [["name", "==", "a"], ["name", "==", "q"]]}]}, "m2")
    assert reply == {"Root": {R1: {"initial": {
        "name": "a", "props": ["map", [["k3", "v3"]]], "numbers": ["set", [-1, 1]], "count": 1}}}}
    env.commit(insert("Root", R2, {"name": "q", "numbers": ["set", [7]]}))
    assert m2.flush() == ["m2", {"Root": {R2: {"insert": {"name": "q", "numbers": 7}}}}]
    env.commit(update("Root", named("q"), {"name": "qq"}))
    assert m2.flush() == ["m2", {"Root": {R2: {"delete": None}}}]

    m3, reply = env.open("monitor_cond_since", {"Root": [{"columns": ["name", "numbers"]}]}, "m3")
    last = env.history.last_txn_id
    assert reply == [False, last, {"Root": {R1: {"initial": {"numbers": ["set", [-1, 1]],
                                                             "name": "a"}},
                                            R2: {"initial": {"name": "qq", "numbers": 7}}}}]
    txn = env.commit(update("Root", named("a"), {"numbers": ["set", [1, 2, 5]]}))
    assert m3.method == "update3"
    assert m3.flush() == ["m3", txn, {"Root": {R1: {"modify": {"numbers": ["set", [-1, 2, 5]]}}}}]

    # m2's pending change goes first, under the old condition and id.
    assert env.cond_change(["m2", "m2b", {"Root": [{"where": [["name", "!=", "a"]]}]}]) == [
        ["m2", {"Root": {R1: {"modify": {"numbers": ["set", [-1, 2, 5]]}}}}],
        ["m2b", {"Root": {R1: {"delete": None}, R2: {"insert": {"name": "qq", "numbers": 7}}}}]]


# --- per-column select flags ----------------------------------------------------------------

SPLIT_SELECT = {"Root": [{"columns": ["name"], "select": {"modify": False}},
                         {"columns": ["tags"], "select": {"insert": False}}]}


def test_select_flags_per_column_v2():
    # PROTOCOL.md 5.1's verified example (b -> tags).
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "tags": "t"}))
    monitor, result = env.open("monitor_cond", SPLIT_SELECT)
    assert result == {"Root": {R1: {"initial": {"name": "a", "tags": "t"}}}}
    env.commit(update("Root", [], {"name": "b", "tags": "u"}))
    assert monitor.flush() == ["m", {"Root": {R1: {"modify": {"tags": ["set", ["t", "u"]]}}}}]
    # Only a column without the modify flag changed: ovsdb-server sends an empty modify.
    env.commit(update("Root", [], {"name": "c"}))
    assert monitor.flush() == ["m", {"Root": {R1: {"modify": {}}}}]
    env.commit(update("Root", [], {"count": 4}))
    assert monitor.flush() is None
    env.commit(insert("Root", R2, {"name": "z", "tags": "w"}))
    assert monitor.flush() == ["m", {"Root": {R2: {"insert": {"name": "z"}}}}]


def test_select_flags_per_column_v1():
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "tags": "t"}))
    monitor, result = env.open("monitor", SPLIT_SELECT)
    assert result == {"Root": {R1: {"new": {"name": "a", "tags": "t"}}}}
    env.commit(update("Root", [], {"name": "b", "tags": "u"}))
    assert monitor.flush() == ["m", {"Root": {R1: {"old": {"tags": "t"}, "new": {"tags": "u"}}}}]
    env.commit(update("Root", [], {"name": "c"}))
    assert monitor.flush() == ["m", {"Root": {R1: {"old": {}, "new": {"tags": "u"}}}}]
    env.commit(delete("Root", []))
    assert monitor.flush() == ["m", {"Root": {R1: {"old": {"name": "c", "tags": "u"}}}}]


@pytest.mark.parametrize("flag,ops,expected", [
    ("initial", [], None),
    ("insert", [insert("Root", R2, {"name": "b"})], None),
    ("delete", [delete("Root", named("a"))], None),
    ("modify", [update("Root", named("a"), {"count": 1})], None),
    ("modify", [insert("Root", R2, {"name": "b"})], {R2: {"insert": {"name": "b"}}}),
])
def test_select_flag_off_suppresses_that_kind(flag, ops, expected):
    env = Env()
    env.commit(insert("Root", R1, {"name": "a"}))
    monitor, result = env.open("monitor_cond",
                               {"Root": [{"columns": ["name", "count"], "select": {flag: False}}]})
    assert result == ({} if flag == "initial" else {"Root": {R1: {"initial": {"name": "a"}}}})
    if ops:
        env.commit(*ops)
    assert monitor.flush() == (None if expected is None else ["m", {"Root": expected}])


# --- conditions (PROTOCOL.md 5.5) ----------------------------------------------------------

# Condition: count == 1.  (setup row, ops, expected row update of R1 or None)
CONDITION_TABLE = [
    ("insert, new matches", None, [insert("Root", R1, {"name": "a", "count": 1})],
     {"insert": {"name": "a", "count": 1}}),
    ("insert, new does not match", None, [insert("Root", R1, {"name": "a", "count": 2})], None),
    ("delete, old matches", 1, [delete("Root", [])], {"delete": None}),
    ("delete, old does not match", 2, [delete("Root", [])], None),
    ("modify, both match", 1, [update("Root", [], {"name": "b"})], {"modify": {"name": "b"}}),
    ("modify, enters", 2, [update("Root", [], {"count": 1})],
     {"insert": {"name": "a", "count": 1}}),
    ("modify, leaves", 1, [update("Root", [], {"count": 2})], {"delete": None}),
    ("modify, matches neither", 2, [update("Root", [], {"count": 3})], None),
]


@pytest.mark.parametrize("case,count,ops,expected", CONDITION_TABLE,
                         ids=[c[0] for c in CONDITION_TABLE])
def test_condition_table(case, count, ops, expected):
    env = Env()
    if count is not None:
        env.commit(insert("Root", R1, {"name": "a", "count": count}))
    monitor, _ = env.open("monitor_cond", {"Root": [{"columns": ["name", "count"],
                                                     "where": [["count", "==", 1]]}]})
    env.commit(*ops)
    assert monitor.flush() == (None if expected is None else ["m", {"Root": {R1: expected}}])


REPORTED = [c for c in CONDITION_TABLE if c[3] is not None]


@pytest.mark.parametrize("case,count,ops,expected", REPORTED, ids=[c[0] for c in REPORTED])
def test_condition_table_needs_the_select_flag(case, count, ops, expected):
    kind = next(iter(expected))
    env = Env()
    if count is not None:
        env.commit(insert("Root", R1, {"name": "a", "count": count}))
    monitor, _ = env.open("monitor_cond", {"Root": [{"columns": ["name", "count"],
                                                     "where": [["count", "==", 1]],
                                                     "select": {kind: False}}]})
    env.commit(*ops)
    assert monitor.flush() is None


@pytest.mark.parametrize("where,expected", [
    ([], {R1, R2}), ([True], {R1, R2}), ([False], set()),
    ([["count", "<", 5], ["name", "==", "b"]], {R1, R2}),   # ORed
    ([["count", ">", 5]], {R2}), ([["color", "==", ["set", []]]], {R1}),
    ([["tags", "includes", "x"]], {R1}), ([["_uuid", "==", ["uuid", R2]]], {R2}),
])
def test_initial_rows_follow_the_condition(where, expected):
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "count": 3, "tags": ["set", ["x", "y"]]}),
               insert("Root", R2, {"name": "b", "count": 50, "color": "red"}))
    _, result = env.open("monitor_cond", {"Root": [{"columns": ["name"], "where": where}]})
    assert set(result.get("Root", {})) == expected


def test_change_seen_only_by_the_condition_gives_an_empty_modify():
    # The condition reads count, which is not monitored: ovsdb-server still reports the row.
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "count": 3}))
    monitor, _ = env.open("monitor_cond", {"Root": [{"columns": ["name"],
                                                     "where": [["count", ">=", 3]]}]})
    env.commit(update("Root", [], {"count": 4}))
    assert monitor.flush() == ["m", {"Root": {R1: {"modify": {}}}}]
    env.commit(update("Root", [], {"flag": True}))
    assert monitor.flush() is None


def test_first_request_condition_wins():
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "count": 3, "flag": True}),
               insert("Root", R2, {"name": "b", "count": 50}))
    _, result = env.open("monitor_cond", {"Root": [
        {"columns": ["name"], "where": [["count", "==", 3]]},
        {"columns": ["flag"], "where": [["count", "==", 50]]}]})
    assert result == {"Root": {R1: {"initial": {"name": "a", "flag": True}}}}
    _, result = env.open("monitor_cond", {"Root": [
        {"columns": ["name"]}, {"columns": ["flag"], "where": [False]}]}, "n")
    assert set(result["Root"]) == {R1, R2}


# --- coalescing (PROTOCOL.md 5.7) -----------------------------------------------------------

COALESCING = [
    ("insert+modify -> insert", None,
     [[insert("Root", R1, {"name": "a"})], [update("Root", [], {"count": 2})]],
     {"insert": {"name": "a", "count": 2}},
     {"new": {"name": "a", "count": 2, "tags": ["set", []]}}),
    ("insert+delete -> nothing", None,
     [[insert("Root", R1, {"name": "a"})], [delete("Root", [])]], None, None),
    ("modify+modify -> one modify", {"name": "a", "count": 1, "tags": ["set", ["x"]]},
     [[update("Root", [], {"count": 2, "tags": ["set", ["x", "y"]]})],
      [update("Root", [], {"count": 3, "tags": ["set", ["y", "z"]]})]],
     {"modify": {"count": 3, "tags": ["set", ["x", "y", "z"]]}},
     {"old": {"count": 1, "tags": "x"},
      "new": {"name": "a", "count": 3, "tags": ["set", ["y", "z"]]}}),
    ("modify+modify back -> nothing", {"name": "a", "count": 1},
     [[update("Root", [], {"count": 2})], [update("Root", [], {"count": 1})]], None, None),
    ("modify+delete -> delete", {"name": "a", "count": 1},
     [[update("Root", [], {"count": 2})], [delete("Root", [])]],
     {"delete": None}, {"old": {"name": "a", "count": 1, "tags": ["set", []]}}),
    ("delete+insert same uuid -> modify", {"name": "a", "count": 1},
     [[delete("Root", [])], [insert("Root", R1, {"name": "a", "count": 5})]],
     {"modify": {"count": 5}},
     {"old": {"count": 1}, "new": {"name": "a", "count": 5, "tags": ["set", []]}}),
    ("unmonitored column only -> nothing", {"name": "a"},
     [[update("Root", [], {"flag": True})], [update("Root", [], {"note": "n"})]], None, None),
]


@pytest.mark.parametrize("case,row,commits,expected2,expected1", COALESCING,
                         ids=[c[0] for c in COALESCING])
def test_coalescing_between_flushes(case, row, commits, expected2, expected1):
    env = Env()
    if row is not None:
        env.commit(insert("Root", R1, row))
    columns = {"Root": [{"columns": ["name", "count", "tags"]}]}
    v2, _ = env.open("monitor_cond", columns, "v2")
    v1, _ = env.open("monitor", columns, "v1")
    for ops in commits:
        env.commit(*ops)
    assert v2.pending and v1.pending
    assert v2.flush() == (None if expected2 is None else ["v2", {"Root": {R1: expected2}}])
    assert v1.flush() == (None if expected1 is None else ["v1", {"Root": {R1: expected1}}])
    assert not v2.pending and v2.flush() is None


def test_coalescing_across_tables_and_garbage_collection():
    env = Env()
    env.commit(insert("Child", C1, {"value": "c1"}, "c1"), insert("Child", C2, {"value": "c2"}, "c2"),
               insert("Root", R1, {"name": "a", "children": ["set", [["named-uuid", "c1"],
                                                                      ["named-uuid", "c2"]]]}))
    monitor, _ = env.open("monitor_cond", {"Root": [{"columns": ["children"]}],
                                           "Child": [{"columns": ["value"]}]})
    env.commit({"op": "mutate", "table": "Root", "where": [],
                "mutations": [["children", "delete", ["uuid", C2]]]})
    env.commit(update("Child", [], {"value": "v"}))
    assert monitor.flush() == ["m", {
        "Root": {R1: {"modify": {"children": ["uuid", C2]}}},
        "Child": {C1: {"modify": {"value": "v"}}, C2: {"delete": None}}}]


def test_merge_keeps_first_old_and_last_new():
    a, b, c = {"x": (1,)}, {"x": (2,)}, {"x": (3,)}
    assert merge([{"T": {R1: (None, a)}}, {"T": {R1: (a, b)}}, {"T": {R1: (b, c)}}]) == {
        "T": {R1: (None, c)}}
    lone = {"T": {R1: (a, b)}}
    assert merge([lone]) is lone and merge([]) == {}


# --- monitor_cond_change (PROTOCOL.md 5.5) -------------------------------------------------

def cond_env() -> Env:
    env = Env()
    env.commit(insert("Root", R1, {"name": "a", "count": 3, "tags": ["set", ["x", "y"]]}),
               insert("Root", R2, {"name": "b", "count": 50}),
               insert("Root", R3, {"name": "c", "count": 7, "color": "red"}))
    return env


def test_cond_change_sends_the_delta_with_the_new_id():
    env = cond_env()
    m, result = env.open("monitor_cond", {"Root": [{"columns": ["name", "tags"],
                                                    "where": [["count", "<", 10]]}],
                                          "Weak": [{}]})
    assert set(result["Root"]) == {R1, R3}
    assert env.cond_change(["m", "m", {"Root": [{"where": [["count", ">", 5]]}]}]) == [
        ["m", {"Root": {R1: {"delete": None}, R2: {"insert": {"name": "b"}}}}]]
    env.commit(update("Root", named("a"), {"count": 6}))
    assert m.flush() == ["m", {"Root": {R1: {"insert": {"name": "a", "tags": ["set", ["x", "y"]]}}}}]
    assert env.cond_change(["m", "m2", {"Root": [{"where": [["name", "==", "a"]]}]}]) == [
        ["m2", {"Root": {R2: {"delete": None}, R3: {"delete": None}}}]]
    assert m.id == "m2"
    env.commit(update("Root", named("a"), {"tags": "z"}))
    assert m.flush() == ["m2", {"Root": {R1: {"modify": {"tags": ["set", ["x", "y", "z"]]}}}}]


@pytest.mark.parametrize("requests,expected", [
    ({"Root": [{"where": [True]}]}, {R2: {"insert": {"name": "b"}}}),
    ({"Root": [{"where": []}]}, {R2: {"insert": {"name": "b"}}}),
    ({"Root": [{}]}, {R2: {"insert": {"name": "b"}}}),   # no where: every row
    ({"Root": [{"where": [False]}]}, {R1: {"delete": None}, R3: {"delete": None}}),
    ({"Root": []}, None),                                  # nothing listed: unchanged
    ({}, None),
    ({"Root": [{"where": [["count", "<", 10]]}]}, None),   # the same condition
    # The last request wins.
    ({"Root": [{"where": [False]}, {"where": [["count", "==", 50]]}]},
     {R1: {"delete": None}, R2: {"insert": {"name": "b"}}, R3: {"delete": None}}),
])
def test_cond_change_deltas(requests, expected):
    env = cond_env()
    env.open("monitor_cond", {"Root": [{"columns": ["name"], "where": [["count", "<", 10]]}]})
    sent = env.cond_change(["m", "m", requests])
    assert sent == ([] if expected is None else [["m", {"Root": expected}]])


@pytest.mark.parametrize("select,expected", [
    ({"insert": False}, {R1: {"delete": None}}),
    ({"delete": False}, {R2: {"insert": {"name": "b"}}}),
    ({"insert": False, "delete": False}, None),
    ({"initial": False}, {R1: {"delete": None}, R2: {"insert": {"name": "b"}}}),
])
def test_cond_change_delta_respects_select(select, expected):
    env = cond_env()
    env.open("monitor_cond", {"Root": [{"columns": ["name"], "select": select,
                                        "where": [["count", "<", 10]]}]})
    sent = env.cond_change(["m", "m", {"Root": [{"where": [["count", ">", 5]]}]}])
    assert sent == ([] if expected is None else [["m", {"Root": expected}]])


def test_cond_change_flushes_pending_changes_first_with_the_old_id():
    env = cond_env()
    m, _ = env.open("monitor_cond", {"Root": [{"columns": ["name"],
                                               "where": [["count", "<", 10]]}]})
    env.commit(update("Root", named("a"), {"name": "a2"}))
    assert m.pending
    assert env.cond_change(["m", "n", {"Root": [{"where": [["count", ">", 5]]}]}]) == [
        ["m", {"Root": {R1: {"modify": {"name": "a2"}}}}],
        ["n", {"Root": {R1: {"delete": None}, R2: {"insert": {"name": "b"}}}}]]
    assert not m.pending


def test_cond_change_on_v3_uses_update3_with_the_last_txn_id():
    env = cond_env()
    env.open("monitor_cond_since", {"Root": [{"columns": ["name"],
                                               "where": [["count", ">", 5]]}]})
    assert env.cond_change(["m", "m", {"Root": [{"where": [["count", "<", 5]]}]}]) == [
        ["m", env.history.last_txn_id, {"Root": {R1: {"insert": {"name": "a"}},
                                                 R2: {"delete": None}, R3: {"delete": None}}}]]


def test_cond_change_on_v1_is_accepted_and_does_nothing():
    env = cond_env()
    m, _ = env.open("monitor", {"Root": {"columns": ["name"]}})
    # ovsdb-server does not even parse the condition of a v1 monitor.
    assert env.cond_change(["m", "m", {"Root": [{"where": [["zz", "==", 1]]}]}]) == []
    env.commit(update("Root", named("b"), {"name": "bb"}))
    assert m.flush() == ["m", {"Root": {R2: {"old": {"name": "b"}, "new": {"name": "bb"}}}}]


COND_CHANGE_ERRORS = [
    (["m", "m", {}, 4], _error("invalid parameters", '["m","m",{},4]')),
    (["m", "m"], _error("invalid parameters", '["m","m"]')),
    (["zz", "o", {}], _error("unknown monitor session", '"zz"')),
    (["m", "o", {}], _error("duplicate monitor ID", '"o"')),
    (["m", "m", []], _error("monitor-cond-change-requests must be object")),
    (["m", "m", {"Nope": []}], _error("no table named Nope")),
    (["m", "m", {"Child": []}], _error("no table named Child in monitor session")),
    (["m", "m", {"Root": 5}], _error("table Root no monitor-cond-change JSON array")),
    (["m", "m", {"Root": {"where": []}}], _error("table Root no monitor-cond-change JSON array")),
    (["m", "m", {"Root": [1]}], _error("Parsing table Root failed: Object expected.")),
    (["m", "m", {"Root": [{"columns": ["name"]}]}],
     _error("changing columns is unsupported", '{"columns":["name"]}')),
    (["m", "m", {"Root": [{"columns": []}]}],
     _error("changing columns is unsupported", '{"columns":[]}')),
    (["m", "m", {"Root": [{"columns": 5, "where": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'columns'.",
            '{"columns":5,"where":5}')),
    (["m", "m", {"Root": [{"where": 5}]}],
     _error("Parsing table Root failed: Type mismatch for member 'where'.", '{"where":5}')),
    (["m", "m", {"Root": [{"bogus": 5}]}],
     _error("Parsing table Root failed: Member 'bogus' is present but not allowed here.",
            '{"bogus":5}')),
    (["m", "m", {"Root": [{"where": [["zz", "==", 1]]}]}],
     _error("No column zz in table Root.", '["zz","==",1]', "unknown column")),
    (["m", "m", {"Root": [{"where": [["count", "==", 500]]}]}],
     _error("500 is not in the valid range 0 to 100 (inclusive)", tag="constraint violation")),
    # Nothing applies when a later table fails.
    (["m", "m", {"Root": [{"where": [False]}], "Weak": [{"where": [["zz", "==", 1]]}]}],
     _error("No column zz in table Weak.", '["zz","==",1]', "unknown column")),
]


@pytest.mark.parametrize("params,expected", COND_CHANGE_ERRORS)
def test_cond_change_errors(params, expected):
    env = cond_env()
    m, _ = env.open("monitor_cond", {"Root": [{"columns": ["name"]}], "Weak": [{}]})
    env.open("monitor_cond", {"Weak": [{}]}, "o")
    with pytest.raises(OVSDBError) as info:
        env.cond_change(params)
    assert info.value.to_json() == expected
    assert m.id == "m"
    env.commit(update("Root", named("b"), {"count": 51}), update("Root", named("a"), {"name": "z"}))
    assert m.flush() == ["m", {"Root": {R1: {"modify": {"name": "z"}}}}]


# --- history and monitor_cond_since ----------------------------------------------------------

def test_history_window_by_count():
    history = History(max_transactions=3)
    assert history.last_txn_id == ZERO_UUID
    ids = [new_uuid() for _ in range(6)]
    sets = [{"T": {R1: ({"x": (i,)}, {"x": (i + 1,)})}} for i in range(6)]
    for txn_id, changes in zip(ids, sets, strict=True):
        history.append(txn_id, changes)
    assert history.last_txn_id == ids[5]
    # The window is the base (ids[2], changes no longer kept) and three transactions.
    assert history.changes_since(ids[1]) is None
    assert history.changes_since(ids[2]) == {"T": {R1: ({"x": (3,)}, {"x": (6,)})}}
    assert history.changes_since(ids[4]) == sets[5]
    assert history.changes_since(ids[5]) == {}
    assert history.changes_since(ZERO_UUID) is None
    assert history.changes_since(new_uuid()) is None


def test_history_window_by_rows_keeps_the_newest_id():
    history = History(max_rows=3)
    a, b, c, d = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    history.append(a, {"T": {R1: (None, {}), R2: (None, {})}})
    history.append(b, {"T": {R3: (None, {})}})
    assert history.changes_since(a) == {"T": {R3: (None, {})}}
    history.append(c, {"T": {R1: ({}, None), R2: ({}, None)}})
    # a's changes are gone, but a is the window's base: what follows it is all there.
    assert history.changes_since(a) == {"T": {R3: (None, {}), R1: ({}, None), R2: ({}, None)}}
    assert history.changes_since(b) == {"T": {R1: ({}, None), R2: ({}, None)}}
    # A transaction bigger than the whole budget leaves only its id.
    history.append(d, {"T": {C1: (None, {}), C2: (None, {}), W1: (None, {}), R1: (None, {})}})
    assert all(history.changes_since(x) is None for x in (a, b, c))
    assert history.changes_since(d) == {}
    assert history.last_txn_id == d


def test_history_keeps_writers_only_for_the_ids_in_its_window():
    history = History(max_transactions=2, max_rows=3)
    ids = [new_uuid() for _ in range(5)]
    for n, txn_id in enumerate(ids[:3]):
        history.append(txn_id, {"T": {R1: (None, {})}})
        history.note_origin(txn_id, f"client{n}", n)
    # ids[0] left the entries but is the window's base: still answered.
    assert [history.origin(t) for t in ids[:3]] == [("client0", 0), ("client1", 1),
                                                    ("client2", 2)]
    history.append(ids[3], {"T": {R1: (None, {})}})
    history.note_origin(ids[3], None, 3)   # writer unknown: nothing kept
    assert [history.origin(t) for t in ids[:4]] == [None, ("client1", 1), ("client2", 2), None]
    # A transaction over the row budget is the base at once; what it pushed
    # out goes, and nothing stays behind once it leaves in turn.
    history.append(ids[4], {"T": {C1: (None, {}), C2: (None, {}), W1: (None, {}), R1: (None, {})}})
    history.note_origin(ids[4], "big", 4)
    assert [history.origin(t) for t in ids] == [None, None, None, None, ("big", 4)]
    for _ in range(3):
        history.append(new_uuid(), {"T": {R1: (None, {})}})
    assert history.origin(ids[4]) is None


def test_history_reset_makes_the_snapshot_id_the_base():
    history = History()
    old, snap, after = new_uuid(), new_uuid(), new_uuid()
    history.append(old, {"T": {R1: (None, {})}})
    history.reset(snap)
    assert history.last_txn_id == snap
    assert history.changes_since(old) is None
    assert history.changes_since(snap) == {}
    history.append(after, {"T": {R2: (None, {})}})
    assert history.changes_since(snap) == {"T": {R2: (None, {})}}


def test_monitor_cond_since_resumes_with_an_exact_delta():
    env = cond_env()
    since = env.history.last_txn_id
    env.commit(update("Root", named("a"), {"tags": ["set", ["y", "z"]], "count": 4}))
    env.commit(update("Root", named("b"), {"count": 8}))      # enters the condition
    env.commit(update("Root", named("c"), {"count": 70}))     # leaves it
    env.commit(insert("Weak", W1, {"name": "w"}))             # not monitored
    env.commit(insert("Root", "11111111-0000-0000-0000-000000000009", {"name": "t"}),
               delete("Root", named("t")))
    requests = {"Root": [{"columns": ["name", "tags"], "where": [["count", "<", 10]]}]}
    m, result = env.open("monitor_cond_since", requests, last=since)
    last = env.history.last_txn_id
    assert result == [True, last, {"Root": {
        R1: {"modify": {"tags": ["set", ["x", "z"]]}},
        R2: {"insert": {"name": "b"}},
        R3: {"delete": None}}}]
    _, result = env.open("monitor_cond_since", requests, "n", last=last)
    assert result == [True, last, {}]
    _, result = env.open("monitor_cond_since", requests, "o", last=new_uuid())
    assert result == [False, last, {"Root": {R1: {"initial": {"name": "a",
                                                              "tags": ["set", ["y", "z"]]}},
                                             R2: {"initial": {"name": "b"}}}}]
    txn = env.commit(update("Root", named("b"), {"name": "bb"}))
    assert m.flush() == ["m", txn, {"Root": {R2: {"modify": {"name": "bb"}}}}]


def test_without_history_v3_reports_zero_ids():
    env = Env(max_transactions=None)
    env.commit(insert("Weak", W1, {"name": "w"}))
    m, result = env.open("monitor_cond_since", {"Weak": [{"columns": ["name"]}]})
    assert result == [False, ZERO_UUID, {"Weak": {W1: {"initial": {"name": "w"}}}}]
    env.commit(update("Weak", [], {"name": "x"}))
    assert m.flush() == ["m", ZERO_UUID, {"Weak": {W1: {"modify": {"name": "x"}}}}]


# --- fan-out ---------------------------------------------------------------------------------

def test_equal_specs_share_one_rendered_update():
    env = Env()
    env.commit(insert("Weak", W1, {"name": "w"}))
    requests = {"Weak": [{"columns": ["name"]}]}
    a, _ = env.open("monitor_cond", requests, "a")
    b, _ = env.open("monitor_cond_since", requests, "b")   # v2 and v3 render alike
    c, _ = env.open("monitor_cond", {"Weak": [{"columns": ["_version"]}]}, "c")
    touched = env.hub.commit(env.db.transact([update("Weak", [], {"name": "x"})]).changes, "t")
    assert set(touched) == {a, b, c}
    first, second, other = a.take(), b.take(), c.take()
    assert first is second and first is not other and first is not None
    assert first.encoded() is first.encoded()
    assert ujson.loads(first.encoded()) == {"Weak": {W1: {"modify": {"name": "x"}}}}
    assert a.params(first) == ["a", first.body] and b.params(first) == ["b", "t", first.body]


def test_slow_monitor_keeps_merging_and_the_log_stays_short():
    env = Env(max_lag=2)
    env.commit(insert("Weak", W1, {"name": "w0"}))
    requests = {"Weak": [{"columns": ["name"]}]}
    fast, _ = env.open("monitor_cond", requests, "fast")
    slow, _ = env.open("monitor_cond", requests, "slow")
    for i in range(1, 10):
        env.commit(update("Weak", [], {"name": f"w{i}"}))
        assert fast.flush() == ["fast", {"Weak": {W1: {"modify": {"name": f"w{i}"}}}}]
        assert len(fast._group.log) <= 3
    env.commit(insert("Weak", "33333333-0000-0000-0000-000000000002", {"name": "n"}),
               delete("Weak", [["name", "==", "w9"]]))
    assert slow.flush() == ["slow", {"Weak": {W1: {"delete": None},
                                              "33333333-0000-0000-0000-000000000002": {
                                                  "insert": {"name": "n"}}}}]
    assert slow.flush() is None


def test_cancel_stops_updates_and_frees_the_group():
    env = Env()
    m, _ = env.open("monitor_cond", {"Weak": [{}]})
    m.cancel()
    assert env.hub.commit(env.db.transact([insert("Weak", W1, {"name": "w"})]).changes) == []
    assert not env.hub._groups and not env.hub._by_table


# --- randomized: client caches always equal the database (and resumes are exact) -------------

def _parse_back(type_: Any, json: Any, relaxed: bool) -> values.Datum:
    # Diffs may hold up to twice a set's max, so read them with relaxed bounds.
    return values.parse_unchecked(type_.relaxed(0, UNLIMITED) if relaxed else type_, json)


def apply_update(cache: dict[str, dict[str, dict[str, Any]]], body: dict[str, Any],
                 columns: dict[str, list[str]]) -> None:
    """What a client does with <table-updates>/<table-updates2>."""
    for table, rows in body.items():
        types, defaults = SCHEMA_TYPES[table], SCHEMA_DEFAULTS[table]
        cached = cache.setdefault(table, {})
        for uuid, change in rows.items():
            if "old" in change or "new" in change:      # v1
                if "new" not in change:
                    del cached[uuid]
                else:
                    cached[uuid] = {c: _parse_back(types[c], v, False)
                                    for c, v in change["new"].items()}
                continue
            (kind, value), = change.items()
            if kind in ("initial", "insert"):
                assert uuid not in cached
                row = {c: defaults[c] for c in columns[table]}
                row.update({c: _parse_back(types[c], v, False) for c, v in value.items()})
                cached[uuid] = row
            elif kind == "delete":
                del cached[uuid]
            else:
                row = cached[uuid]
                for c, v in value.items():
                    row[c] = values.apply_diff(types[c], row[c], _parse_back(types[c], v, True))


SCHEMA_TYPES = {n: {c: s.type for c, s in t.columns.items()} for n, t in SCHEMA.tables.items()}
SCHEMA_DEFAULTS = {n: {c: values.default(s.type) for c, s in t.columns.items()}
                   for n, t in SCHEMA.tables.items()}


def projection(db: Database, spec: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """What a monitor of ``spec`` shows of the database now (tables with rows only)."""
    out = {}
    for table, request in spec.items():
        match = conditions.match_any(conditions.parse(SCHEMA.tables[table],
                                                      request.get("where", [])))
        rows = {u: {c: row[c] for c in request["columns"]}
                for u, row in db.tables[table].rows.items() if match(row)}
        if rows:
            out[table] = rows
    return out


def nonempty(cache: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {table: rows for table, rows in cache.items() if rows}


def random_ops(rng: random.Random, db: Database, serial: list[int]) -> list[dict[str, Any]]:
    roots = list(db.tables["Root"].rows)
    weaks = list(db.tables["Weak"].rows)
    ops: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["insert", "update", "update", "mutate", "delete", "weak"])
        if kind == "insert" or not roots:
            serial[0] += 1
            ops.append({"op": "insert", "table": "Root", "row": {
                "name": f"r{serial[0]}", "count": rng.randint(0, 9),
                "tags": ["set", rng.sample("abcd", rng.randint(0, 3))],
                "props": ["map", [[k, rng.choice("xy")] for k in rng.sample("pqr", 2)]],
                "weak": ["set", [["uuid", w] for w in rng.sample(weaks, min(len(weaks), 1))]]}})
        elif kind == "update":
            row = rng.choice([{"count": rng.randint(0, 9)}, {"color": rng.choice(["red", ["set", []]])},
                              {"tags": ["set", rng.sample("abcd", rng.randint(0, 3))]},
                              {"props": ["map", [[k, rng.choice("xy")] for k in rng.sample("pqr", 2)]]},
                              {"flag": rng.random() < 0.5}])
            ops.append(update("Root", [["_uuid", "==", ["uuid", rng.choice(roots)]]], row))
        elif kind == "mutate":
            ops.append({"op": "mutate", "table": "Root",
                        "where": [["_uuid", "==", ["uuid", rng.choice(roots)]]],
                        "mutations": [["tags", "insert", rng.choice("abcd")],
                                      ["props", "delete", ["set", [rng.choice("pqr")]]]]})
        elif kind == "delete":
            ops.append(delete("Root", [["_uuid", "==", ["uuid", rng.choice(roots)]]]))
        elif weaks and rng.random() < 0.5:
            ops.append(delete("Weak", [["_uuid", "==", ["uuid", rng.choice(weaks)]]]))
        else:
            ops.append({"op": "insert", "table": "Weak", "row": {"name": "w"}})
    return ops


RANDOM_SPECS = {
    # id: (method, {table: {"columns": [...], "where": [...]?}}, flush probability)
    "all2": ("monitor_cond", {"Root": {"columns": [c for c in SCHEMA.tables["Root"].columns
                                                   if c != "_uuid"]}}, 0.9),
    "all1": ("monitor", {"Root": {"columns": ["name", "count", "tags", "props", "weak"]},
                         "Weak": {"columns": ["name"]}}, 0.5),
    "cond": ("monitor_cond", {"Root": {"columns": ["name", "tags", "props"],
                                       "where": [["count", "<", 4], ["tags", "includes", "a"]]}},
             0.7),
    "same": ("monitor_cond", {"Root": {"columns": ["name", "tags", "props"],
                                       "where": [["count", "<", 4], ["tags", "includes", "a"]]}},
             0.1),
    "since": ("monitor_cond_since", {"Root": {"columns": ["count", "color", "props"],
                                              "where": [["color", "==", "red"]]},
                                     "Weak": {"columns": ["name"]}}, 0.3),
}


def test_random_commits_keep_client_caches_exact():
    rng = random.Random(20240611)
    specs = copy.deepcopy(RANDOM_SPECS)
    env = Env(max_transactions=40, max_lag=4)
    serial = [0]
    caches: dict[str, Any] = {}
    columns: dict[str, dict[str, list[str]]] = {}
    saved: list[tuple[str, Any]] = []   # (last txn id, cache) as a v3 client would keep them
    for step in range(400):
        if step == 5:
            for mid, (method, spec, _) in specs.items():
                requests = {t: [dict(r)] for t, r in spec.items()}
                monitor, result = env.open(method, requests, mid)
                columns[mid] = {t: r["columns"] for t, r in spec.items()}
                caches[mid] = {}
                apply_update(caches[mid], result[2] if method == "monitor_cond_since" else result,
                             columns[mid])
        env.commit(*random_ops(rng, env.db, serial))
        if step == 200:
            new_where = [["count", ">", 6]]
            specs["same"][1]["Root"]["where"] = new_where
            for params in env.cond_change(["same", "same", {"Root": [{"where": new_where}]}]):
                apply_update(caches["same"], params[1], columns["same"])
        for mid, monitor in env.monitors.items():
            if rng.random() < specs[mid][2]:
                params = monitor.flush()
                if params is not None:
                    apply_update(caches[mid], params[-1], columns[mid])
                    if monitor.version == 3:
                        saved.append((params[1], copy.deepcopy(caches[mid])))
                assert nonempty(caches[mid]) == projection(env.db, specs[mid][1]), (step, mid)
    found = 0
    spec = specs["since"][1]
    for index, (last, cache) in enumerate(saved):
        _, (is_found, newest, body) = env.open(
            "monitor_cond_since", {t: [dict(r)] for t, r in spec.items()}, index, last)
        found += is_found
        assert newest == env.history.last_txn_id
        if not is_found:
            cache = {}
        apply_update(cache, body, columns["since"])
        assert nonempty(cache) == projection(env.db, spec)
    assert 0 < found < len(saved)

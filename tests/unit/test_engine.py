"""The transaction engine (PROTOCOL.md 4): ops, commit-time checks, journal forms.

`tests/data/conformance*.json` hold cases whose expectations were recorded from
ovsdb-server 3.1 (tests/integration/test_conformance.py checks them against both servers
over sockets; here they run in-process against the engine alone): each is
`{"name", "schema": NAME | <schema>, "setup": [ops],
"ops": [ops], "expect": [results], "then"?: [ops], "then_expect"?: [results]}`.
`setup` must succeed; `then` is a later transaction that shows what the one
under test committed.  Results compare loosely: every UUID is "<uuid>", rows
of a select without "sort" are unordered, and the two rows named in a unique
index error may come in either order (ovsdb-server's order depends on random
`_version`s).
"""

from __future__ import annotations

import json
import random
import re
import uuid as uuidlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tegadb.core import ids, tables, values
from tegadb.core.database import WAIT_FOREVER, Database
from tegadb.core.schema import DbSchema
from tegadb.core.tables import Table

DATA = Path(__file__).parent.parent / "data"
TEST_SCHEMA = json.loads((DATA / "test.ovsschema").read_text())
CASES = [c for path in sorted(DATA.glob("conformance*.json")) for c in json.loads(path.read_text())]
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
INDEX_ERROR_RE = re.compile(r"(.*for index on [^.]*\.  )(First row, .*)  (Second row, .*)")

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


# --- comparing results loosely ---------------------------------------------------

def _loose(value: Any) -> Any:
    if isinstance(value, str):
        value = UUID_RE.sub("<uuid>", value)
        m = INDEX_ERROR_RE.fullmatch(value)
        if m:
            # Which row is "First" is not stable in ovsdb-server.
            first, second = m.group(2)[len("First "):], m.group(3)[len("Second "):]
            value = m.group(1) + " / ".join(sorted((first, second)))
        return value
    if isinstance(value, list):
        return [_loose(v) for v in value]
    if isinstance(value, dict):
        return {k: _loose(v) for k, v in value.items()}
    return value


def loose(ops: list[Any], results: list[Any] | None) -> list[Any]:
    assert results is not None
    out = []
    for i, result in enumerate(results):
        result = _loose(result)
        op = ops[i] if i < len(ops) else None
        if isinstance(result, dict) and "rows" in result and "sort" not in op:
            result = {"rows": sorted(result["rows"], key=lambda r: json.dumps(r, sort_keys=True))}
        out.append(result)
    return out


def database(schema: Any = "test") -> Database:
    """A database for an inline schema, or for tests/data/NAME.ovsschema."""
    if isinstance(schema, str):
        schema = json.loads((DATA / f"{schema}.ovsschema").read_text())
    return Database(DbSchema.from_json(schema))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_conformance(case: dict[str, Any]) -> None:
    db = database(case["schema"])
    if case["setup"]:
        setup = db.transact(case["setup"]).results
        assert setup is not None and all("error" not in r for r in setup), setup
    assert loose(case["ops"], db.transact(case["ops"]).results) == loose(case["ops"],
                                                                          case["expect"])
    if "then" in case:
        got = db.transact(case["then"]).results
        assert loose(case["then"], got) == loose(case["then"], case["then_expect"])
    check_bookkeeping(db)


# --- invariants of the committed state ---------------------------------------------

def check_bookkeeping(db: Database) -> None:
    """Indexes, reference counts and the reverse weak index match a recount."""
    strong: dict[str, Counter[str]] = {name: Counter() for name in db.tables}
    weak: dict[str, dict[str, Counter[tuple[str, str]]]] = {name: {} for name in db.tables}
    for name, table in db.tables.items():
        for uuid, row in table.rows.items():
            assert row["_uuid"] == (uuid,)
            for ref in table.strong_columns:
                for target_table, target in tables.ref_atoms(ref, row[ref[0]]):
                    assert target in db.tables[target_table].rows, "dangling strong reference"
                    if target != uuid:
                        strong[target_table][target] += 1
            for ref in table.weak_columns:
                for target_table, target in tables.ref_atoms(ref, row[ref[0]]):
                    assert target in db.tables[target_table].rows, "dangling weak reference"
                    if (target_table, target) != (name, uuid):
                        weak[target_table].setdefault(target, Counter())[(name, uuid)] += 1
        for index in table.indexes:
            assert index.rows == {index.key(row): u for u, row in table.rows.items()}
        for column, value_index in table.value_indexes.items():
            assert value_index.rows == tables.ValueIndex(column, table.rows).rows, column
    for name, table in db.tables.items():
        assert table.refs == dict(strong[name]), name
        assert table.weak_refs == {t: dict(c) for t, c in weak[name].items()}, name
        if not table.schema.is_root:
            assert all(table.refs.get(u) for u in table.rows), "unreferenced non-root row"


# --- results, outcomes and change sets -------------------------------------------------

def test_empty_transaction() -> None:
    outcome = database().transact([])
    assert outcome.results == [] and outcome.changes is None


def test_outcome_of_a_committed_transaction() -> None:
    db = database()
    outcome = db.transact([
        {"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
        {"op": "comment", "comment": "first"},
        {"op": "commit", "durable": True},
        {"op": "comment", "comment": "second"},
    ])
    assert outcome.results == [{"uuid": ["uuid", U1]}, {}, {}, {}]
    assert outcome.durable is True
    assert outcome.comment == "first\nsecond"
    assert outcome.wait_deadline_ms is None
    assert outcome.changes is not None
    [(old, new)] = outcome.changes["Root"].values()
    assert old is None and new is db.tables["Root"].rows[U1]
    assert new["name"] == ("a",) and new["count"] == (0,) and new["_uuid"] == (U1,)


def test_changes_list_only_rows_that_changed() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Root", "row": {"name": "a", "count": 1}, "uuid": U1},
                 {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2}])
    before = db.tables["Root"].rows[U1]
    untouched = db.tables["Root"].rows[U2]
    outcome = db.transact([
        {"op": "update", "table": "Root", "where": [], "row": {"count": 1}},
        {"op": "insert", "table": "Root", "row": {"name": "tmp"}, "uuid-name": "t"},
        {"op": "delete", "table": "Root", "where": [["_uuid", "==", ["named-uuid", "t"]]]},
    ])
    assert outcome.results == [{"count": 2}, {"uuid": ["uuid", outcome.results[1]["uuid"][1]]},
                               {"count": 1}]
    assert outcome.changes is not None
    assert list(outcome.changes["Root"]) == [U2]
    old, new = outcome.changes["Root"][U2]
    assert old is untouched and new["count"] == (1,) and new["_version"] != old["_version"]
    # A row that did not change is the very same object: nothing is copied.
    assert db.tables["Root"].rows[U1] is before


def test_noop_transaction_has_no_changes() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Root", "row": {"name": "a", "count": 1}}])
    row = next(iter(db.tables["Root"].rows.values()))
    outcome = db.transact([{"op": "update", "table": "Root", "where": [], "row": {"count": 1}},
                           {"op": "mutate", "table": "Root", "where": [],
                            "mutations": [["count", "+=", 1], ["count", "-=", 1]]}])
    assert outcome.results == [{"count": 1}, {"count": 1}]
    assert outcome.changes is None
    assert next(iter(db.tables["Root"].rows.values())) is row


def test_failed_transaction_changes_nothing() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1}])
    snapshot = {n: dict(t.rows) for n, t in db.tables.items()}
    for ops in (
        [{"op": "update", "table": "Root", "where": [], "row": {"count": 5}},
         {"op": "insert", "table": "Root", "row": {"name": "a"}}],          # index
        [{"op": "update", "table": "Root", "where": [], "row": {"count": 5}},
         {"op": "abort"}],
        [{"op": "mutate", "table": "Root", "where": [],
          "mutations": [["children", "insert", ["named-uuid", "c"]]]},
         {"op": "insert", "table": "Child", "row": {}, "uuid-name": "c"},
         {"op": "delete", "table": "Child", "where": []}],                   # referential
    ):
        outcome = db.transact(ops)
        assert outcome.changes is None
        assert "error" in outcome.results[-1] or any(r and "error" in r for r in outcome.results)
        assert {n: dict(t.rows) for n, t in db.tables.items()} == snapshot
        assert all(db.tables[n].rows[u] is row for n, rows in snapshot.items()
                   for u, row in rows.items())
    check_bookkeeping(db)


def test_garbage_collected_rows_are_deletes_in_the_change_set() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Child", "row": {"value": "x"}, "uuid-name": "c",
                  "uuid": U2},
                 {"op": "insert", "table": "Root", "uuid": U1,
                  "row": {"name": "a", "children": ["named-uuid", "c"]}}])
    child = db.tables["Child"].rows[U2]
    outcome = db.transact([{"op": "delete", "table": "Root", "where": []}])
    assert outcome.changes is not None
    assert outcome.changes["Child"] == {U2: (child, None)}
    assert db.tables["Child"].rows == {}


def test_insert_of_unreferenced_non_root_row_commits_nothing() -> None:
    db = database()
    outcome = db.transact([{"op": "insert", "table": "Child", "row": {"value": "x"}}])
    assert outcome.results is not None and "uuid" in outcome.results[0]
    assert outcome.changes is None
    assert db.tables["Child"].rows == {}


def test_weak_reference_removal_is_a_modify() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Weak", "row": {"name": "w"}, "uuid": U2},
                 {"op": "insert", "table": "Root", "row": {"name": "a", "weak": ["uuid", U2]},
                  "uuid": U1}])
    old_root = db.tables["Root"].rows[U1]
    outcome = db.transact([{"op": "delete", "table": "Weak", "where": []}])
    assert outcome.changes is not None
    assert set(outcome.changes) == {"Weak", "Root"}
    old, new = outcome.changes["Root"][U1]
    assert old is old_root and old["weak"] == (U2,)
    assert new is not None and new["weak"] == () and new["_version"] != old["_version"]
    assert db.tables["Weak"].weak_refs == {}
    check_bookkeeping(db)


def test_a_change_undone_by_weak_reference_removal_still_gets_a_new_version() -> None:
    # The row gains a weak reference to a row the same transaction deletes:
    # its final value equals the committed one, but as in ovsdb-server it
    # stays modified, with a new _version (monitors send that version).
    db = database()
    db.transact([{"op": "insert", "table": "Weak", "row": {"name": "w1"}, "uuid": U2},
                 {"op": "insert", "table": "Weak", "row": {"name": "w2"}, "uuid": U3},
                 {"op": "insert", "table": "Root", "row": {"name": "a", "weak": ["uuid", U3]},
                  "uuid": U1}])
    old_root = db.tables["Root"].rows[U1]
    outcome = db.transact([
        {"op": "mutate", "table": "Root", "where": [], "mutations": [
            ["weak", "insert", ["uuid", U2]]]},
        {"op": "delete", "table": "Weak", "where": [["name", "==", "w1"]]}])
    assert outcome.changes is not None
    old, new = outcome.changes["Root"][U1]
    assert old is old_root
    assert new is not None and new["weak"] == old["weak"] == (U3,)
    assert new["_version"] != old["_version"]
    assert db.tables["Root"].rows[U1] is new
    check_bookkeeping(db)


def test_version_changes_only_for_modified_rows() -> None:
    db = database()
    db.transact([{"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
                 {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2}])
    v1 = db.tables["Root"].rows[U1]["_version"]
    v2 = db.tables["Root"].rows[U2]["_version"]
    assert v1 != v2
    db.transact([{"op": "update", "table": "Root", "where": [["name", "==", "a"]],
                  "row": {"count": 3}}])
    assert db.tables["Root"].rows[U1]["_version"] not in (v1, v2)
    assert db.tables["Root"].rows[U2]["_version"] == v2


def test_the_first_row_a_transaction_changes_has_its_id_as_version() -> None:
    db = database()
    rows = db.tables["Root"].rows
    seen = set()
    for ops in ([{"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
                 {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2},
                 {"op": "insert", "table": "Root", "row": {"name": "c"}, "uuid": U3}],
                [{"op": "update", "table": "Root", "where": [["_uuid", "==", ["uuid", U3]]],
                  "row": {"count": 3}},
                 {"op": "update", "table": "Root", "where": [["_uuid", "==", ["uuid", U2]]],
                  "row": {"count": 2}}]):
        outcome = db.transact(ops)
        changed = [rows[u]["_version"][0] for u in outcome.changes["Root"]]
        assert outcome.txn_id == changed[0]
        assert len(set(changed)) == len(changed) and not seen & set(changed)
        seen |= set(changed)
    deleted = db.transact([{"op": "delete", "table": "Root", "where": [["name", "==", "a"]]}])
    read = db.transact([{"op": "select", "table": "Root", "where": []}])
    assert deleted.txn_id is not None and deleted.txn_id not in seen and read.txn_id is None


# --- ops -----------------------------------------------------------------------------

def results(db: Database, *ops: Any, **kwargs: Any) -> list[Any]:
    outcome = db.transact(list(ops), **kwargs)
    assert outcome.results is not None
    return outcome.results


def test_duplicate_uuid() -> None:
    db = database()
    results(db, {"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1})
    detail = ("This UUID would duplicate a UUID already present within the table or deleted "
              "within the same transaction.")
    expected = {"error": "duplicate uuid", "details": detail, "syntax": f'"{U1}"'}
    assert results(db, {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U1}) == [
        expected]
    assert results(db, {"op": "delete", "table": "Root", "where": []},
                   {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U1}) == [
        {"count": 1}, expected]
    # A row inserted and deleted in the same transaction never was (as in OVS).
    assert results(db, {"op": "insert", "table": "Weak", "row": {}, "uuid": U2},
                   {"op": "delete", "table": "Weak", "where": []},
                   {"op": "insert", "table": "Weak", "row": {"name": "again"}, "uuid": U2})[2] == {
        "uuid": ["uuid", U2]}
    assert db.tables["Weak"].rows[U2]["name"] == ("again",)


def test_several_unknown_members() -> None:
    op = {"op": "select", "table": "Root", "where": [], "x": 1, "y": 2, "z": 3}
    assert results(database(), op) == [{
        "error": "syntax error",
        "details": "Parsing ovsdb operation 1 of 1 failed: Member 'x' and 2 other members are "
                   "present but not allowed here.",
        "syntax": '{"op":"select","table":"Root","where":[],"x":1,"y":2,"z":3}'}]


def test_wait_with_unknown_member_is_a_syntax_error_not_parked() -> None:
    op = {"op": "wait", "table": "Root", "where": [], "until": "!=", "rows": [], "x": 1}
    [error] = results(database(), op)
    assert error["details"] == ("Parsing ovsdb operation 1 of 1 failed: Member 'x' is present "
                                "but not allowed here.")


class LockHolder:
    def __init__(self, *locks: str) -> None:
        self.locks = set(locks)

    def owns_lock(self, name: str) -> bool:
        return name in self.locks


def test_assert() -> None:
    db = database()
    op = {"op": "assert", "lock": "L"}
    assert results(db, op) == [{"error": "not owner", "details": "Asserted lock L not held."}]
    assert db.transact([op], LockHolder("M")).results == [
        {"error": "not owner", "details": "Asserted lock L not held."}]
    assert db.transact([op, {"op": "insert", "table": "Weak", "row": {}}],
                       LockHolder("L")).results[0] == {}


def test_read_only_server() -> None:
    db = database()
    assert results(db, {"op": "select", "table": "Root", "where": []},
                   {"op": "insert", "table": "Root", "row": {"name": "a"}}, read_only=True) == [
        {"rows": []},
        {"error": "not allowed", "details": "insert operation not allowed when database server "
                                            "is in read only mode"}]
    assert results(db, {"op": "commit", "durable": False}, read_only=True) == [
        {"error": "not allowed", "details": "commit operation not allowed when database server "
                                            "is in read only mode"}]
    # The op's own error comes first.
    assert results(db, {"op": "insert", "table": "Root", "row": {"name": 1}},
                   read_only=True)[0]["details"] == "expected string"
    assert db.tables["Root"].rows == {}


def test_reserved_database() -> None:
    schema = {"name": "_Server", "tables": {"Database": {"columns": {"name": {"type": "string"}}}}}
    db = database(schema)
    assert results(db, {"op": "insert", "table": "Database", "row": {"name": "x"}},
                   {"op": "select", "table": "Database", "where": []}) == [
        {"error": "not allowed", "details": "insert operation not allowed on table in reserved "
                                            "database _Server"}, None]
    changes = db.insert_internal("Database", {"name": "Test"})
    assert changes is not None and len(changes["Database"]) == 1
    assert results(db, {"op": "select", "table": "Database", "where": [], "columns": ["name"]},
                   {"op": "comment", "comment": "ok"}) == [{"rows": [{"name": "Test"}]}, {}]
    assert results(db, {"op": "delete", "table": "Database", "where": []})[0]["error"] == (
        "not allowed")


# --- wait ------------------------------------------------------------------------------

def wait(until: str, rows: list[Any], timeout: int | None = None, **extra: Any) -> dict[str, Any]:
    op = {"op": "wait", "table": "Root", "where": [["name", "==", "a"]], "columns": ["count"],
          "until": until, "rows": rows, **extra}
    if timeout is not None:
        op["timeout"] = timeout
    return op


def test_unsatisfied_wait_parks_the_transaction() -> None:
    db = database()
    insert = {"op": "insert", "table": "Root", "row": {"name": "b"}}
    outcome = db.transact([insert, wait("==", [{"count": 1}], 1500)])
    assert outcome.results is None and outcome.changes is None
    assert outcome.wait_deadline_ms == 1500
    assert db.tables["Root"].rows == {}   # the insert before it was discarded
    # Re-run before the deadline: still parked; after it: timed out.
    again = db.transact([insert, wait("==", [{"count": 1}], 1500)], elapsed_ms=800)
    assert again.wait_deadline_ms == 1500
    late = db.transact([insert, wait("==", [{"count": 1}], 1500)], elapsed_ms=1501)
    assert late.results == [{"uuid": late.results[0]["uuid"]},
                            {"error": "timed out", "details": '"wait" timed out after 1501 ms'}]
    assert late.wait_deadline_ms is None


def test_wait_without_timeout_waits_forever_and_succeeds_after_a_commit() -> None:
    db = database()
    ops = [wait("==", [{"count": 7}])]
    assert db.transact(ops).wait_deadline_ms == WAIT_FOREVER
    db.transact([{"op": "insert", "table": "Root", "row": {"name": "a", "count": 7}}])
    assert db.transact(ops, elapsed_ms=60_000).results == [{}]


def test_wait_deadline_is_the_smallest_timeout_so_far() -> None:
    db = database()
    satisfied = wait("==", [], 50)
    outcome = db.transact([satisfied, wait("!=", [], 3000)])
    assert outcome.wait_deadline_ms == 50
    assert db.transact([satisfied, wait("!=", [], 30), wait("!=", [], 10)]).wait_deadline_ms == 30


def test_wait_timeout_zero() -> None:
    db = database()
    assert results(db, wait("!=", [], 0)) == [
        {"error": "timed out", "details": '"where" clause test failed'}]
    assert results(db, wait("!=", [], 0), elapsed_ms=12) == [
        {"error": "timed out", "details": '"wait" timed out after 12 ms'}]


# --- indexes and lookups -----------------------------------------------------------------

class CountingRows(dict):  # type: ignore[type-arg]
    """A table's rows that count full scans."""

    scans = 0

    def values(self) -> Any:
        CountingRows.scans += 1
        return super().values()

    def items(self) -> Any:
        CountingRows.scans += 1
        return super().items()


@pytest.mark.parametrize(("where", "scans", "found"), [
    ([["_uuid", "==", ["uuid", U1]]], 0, ["a"]),
    ([["name", "==", "b"]], 0, ["b"]),
    ([["name", "==", "b"], ["count", "==", 5]], 0, []),
    ([["count", "==", 5], ["name", "==", "a"]], 0, []),
    ([["name", "==", "zz"]], 0, []),
    ([["name", "!=", "b"]], 1, ["a"]),
    ([["count", "==", 0]], 1, ["a", "b"]),
    ([], 1, ["a", "b"]),
])
def test_equality_on_an_index_or_uuid_does_not_scan(where: list[Any], scans: int,
                                                    found: list[str]) -> None:
    db = database()
    results(db, {"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
            {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2})
    table = db.tables["Root"]
    table.rows = CountingRows(table.rows)
    CountingRows.scans = 0
    [result] = results(db, {"op": "select", "table": "Root", "where": where, "columns": ["name"]})
    assert sorted(r["name"] for r in result["rows"]) == found
    assert CountingRows.scans == scans


def test_index_lookup_sees_the_transactions_own_changes() -> None:
    db = database()
    results(db, {"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
            {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2})
    by_name = [{"op": "select", "table": "Root", "where": [["name", "==", n]], "columns": ["_uuid"]}
               for n in ("a", "b", "c")]
    got = results(db, {"op": "update", "table": "Root", "where": [["name", "==", "a"]],
                       "row": {"name": "c"}},
                  {"op": "update", "table": "Root", "where": [["name", "==", "b"]],
                       "row": {"name": "a"}}, *by_name, {"op": "abort"})
    assert got[2:5] == [{"rows": [{"_uuid": ["uuid", U2]}]}, {"rows": []},
                        {"rows": [{"_uuid": ["uuid", U1]}]}]
    # Aborted: the committed index still has the old names.
    assert db.tables["Root"].indexes[0].rows == {("a",): U1, ("b",): U2}


def test_index_follows_swaps_and_renames() -> None:
    db = database()
    results(db, {"op": "insert", "table": "Root", "row": {"name": "a"}, "uuid": U1},
            {"op": "insert", "table": "Root", "row": {"name": "b"}, "uuid": U2})
    assert results(db, {"op": "update", "table": "Root", "where": [["name", "==", "a"]],
                        "row": {"name": "t"}},
                   {"op": "update", "table": "Root", "where": [["name", "==", "b"]],
                    "row": {"name": "a"}},
                   {"op": "update", "table": "Root", "where": [["_uuid", "==", ["uuid", U1]]],
                    "row": {"name": "b"}}) == [{"count": 1}] * 3
    assert db.tables["Root"].indexes[0].rows == {("b",): U1, ("a",): U2}
    results(db, {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]})
    assert db.tables["Root"].indexes[0].rows == {("b",): U1}
    check_bookkeeping(db)


@pytest.fixture
def eager_value_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Value indexes from the first scan of any table (normally big tables only)."""
    monkeypatch.setattr(tables, "VALUE_INDEX_MIN_ROWS", 1)
    monkeypatch.setattr(tables, "VALUE_INDEX_AFTER_SCANS", 1)


def test_a_column_scanned_again_and_again_gets_a_value_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "VALUE_INDEX_MIN_ROWS", 20)
    db = database()
    results(db, *({"op": "insert", "table": "Root", "row": {"name": f"r{i}", "count": i % 7}}
                  for i in range(30)))
    table = db.tables["Root"]
    table.rows = CountingRows(table.rows)
    CountingRows.scans = 0
    by_count = {"op": "select", "table": "Root", "where": [["count", "==", 3]],
                "columns": ["name"]}
    expected = {"rows": [{"name": f"r{i}"} for i in (3, 10, 17, 24)]}
    for _ in range(tables.VALUE_INDEX_AFTER_SCANS + 3):
        assert results(db, by_count) == [expected]
    # Scans until the index is built (that scan builds it), lookups after.
    assert CountingRows.scans == tables.VALUE_INDEX_AFTER_SCANS
    assert list(table.value_indexes) == ["count"]
    check_bookkeeping(db)


def test_small_tables_are_only_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    db = database()
    results(db, *({"op": "insert", "table": "Root", "row": {"name": f"r{i}"}} for i in range(5)))
    for _ in range(10):
        results(db, {"op": "select", "table": "Root", "where": [["count", "==", 0]]})
    assert db.tables["Root"].value_indexes == {}


@pytest.mark.usefixtures("eager_value_indexes")
def test_value_index_answers_with_the_transactions_own_changes() -> None:
    db = database()
    results(db, {"op": "insert", "table": "Root", "row": {"name": "a", "count": 1}, "uuid": U1},
            {"op": "insert", "table": "Root", "row": {"name": "b", "count": 2}, "uuid": U2})
    count_is = [{"op": "select", "table": "Root", "where": [["count", "==", n]],
                 "columns": ["name"]} for n in (1, 2, 3)]
    results(db, *count_is)  # builds the index
    assert "count" in db.tables["Root"].value_indexes
    got = results(db, {"op": "update", "table": "Root", "where": [["count", "==", 1]],
                       "row": {"count": 3}},
                  {"op": "insert", "table": "Root", "row": {"name": "c", "count": 2}},
                  {"op": "delete", "table": "Root", "where": [["name", "==", "b"]]},
                  *count_is,
                  {"op": "select", "table": "Root", "where": [["count", "==", 2],
                                                             ["name", "!=", "c"]]},
                  {"op": "abort"})
    assert got[3:7] == [{"rows": []}, {"rows": [{"name": "c"}]}, {"rows": [{"name": "a"}]},
                        {"rows": []}]
    # Aborted: the committed value index is as it was.
    assert results(db, *count_is) == [{"rows": [{"name": "a"}]}, {"rows": [{"name": "b"}]},
                                      {"rows": []}]
    check_bookkeeping(db)


def test_select_sorts_like_ovsdb() -> None:
    db = database()
    results(db, *({"op": "insert", "table": "Root", "row": {"name": n, "tags": ["set", t]}}
                  for n, t in (("a", ["z"]), ("b", ["a", "b"]), ("c", []), ("d", ["y"]))))
    [got] = results(db, {"op": "select", "table": "Root", "where": [], "columns": ["name"],
                         "sort": ["tags"]})
    # Sets order by size first, then by elements.
    assert [r["name"] for r in got["rows"]] == ["c", "d", "a", "b"]


# --- reference bookkeeping under random transactions -------------------------------------

REFS_SCHEMA = next(c["schema"] for c in CASES if isinstance(c["schema"], dict)
                   and c["schema"]["name"] == "Refs")


def random_op(rng: random.Random, db: Database) -> dict[str, Any]:
    def some(table: str) -> list[Any]:
        rows = list(db.tables[table].rows)
        picked = rng.sample(rows, min(len(rows), rng.randint(0, 2)))
        return ["set", [["uuid", u] for u in picked]]

    kind = rng.randrange(7)
    if kind == 0:
        return {"op": "insert", "table": "Top",
                "row": {"name": f"t{rng.randrange(1000)}", "kids": some("Node"),
                        "kid": some("Node")}}
    if kind == 1:
        return {"op": "insert", "table": "Node", "uuid-name": f"n{rng.randrange(3)}",
                "row": {"n": rng.randrange(5), "peer": some("Node"), "leaf": some("Leaf")}}
    if kind == 2:
        return {"op": "insert", "table": "Leaf", "row": {"n": rng.randrange(5)}}
    if kind == 3:
        return {"op": "update", "table": rng.choice(["Top", "Node"]), "where": [],
                "row": {"kids": some("Node")} if rng.random() < 0.5 else {"n": rng.randrange(5)}}
    if kind == 4:
        return {"op": "mutate", "table": "Top", "where": [],
                "mutations": [["kids", rng.choice(["insert", "delete"]), some("Node")]]}
    if kind == 5:
        table = rng.choice(["Top", "Node", "Target"])
        return {"op": "delete", "table": table, "where": [["_uuid", "==", ["uuid", u]]
                                                          for u in list(db.tables[table].rows)[:1]]}
    return {"op": "insert", "table": "Holder", "row": {
        "name": "h", "w": ["uuid", rng.choice(list(db.tables["Target"].rows) or [U1])],
        "ws": some("Target") if db.tables["Target"].rows else ["uuid", U1],
        "wmap": ["map", [[str(i), ["uuid", u]] for i, u in enumerate(some("Target")[1])]]}}


@pytest.mark.parametrize("value_indexes", [False, True])
def test_bookkeeping_stays_exact_under_random_transactions(
        value_indexes: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if value_indexes:
        monkeypatch.setattr(tables, "VALUE_INDEX_MIN_ROWS", 1)
        monkeypatch.setattr(tables, "VALUE_INDEX_AFTER_SCANS", 1)
    rng = random.Random(7)
    db = database(REFS_SCHEMA)
    committed = 0
    for _ in range(400):
        ops: list[Any] = [{"op": "insert", "table": "Target", "row": {"name": "t"}}
                          for _ in range(rng.randrange(2))]
        ops += [random_op(rng, db) for _ in range(rng.randint(1, 4))]
        table = db.tables[rng.choice(["Top", "Node", "Leaf", "Holder"])]
        if value_indexes and table.rows:
            # An equality on a value some row has (or had): builds and uses value indexes.
            column = rng.choice([c for c in table.columns if c != "_uuid"])
            row = rng.choice(list(table.rows.values()))
            ops.append({"op": "select", "table": table.name, "where": [
                [column, "==", values.to_json(table.types[column], row[column])]]})
        # "update ... kids" on Node is an unknown column: that failure is fine too.
        outcome = db.transact(ops)
        committed += outcome.changes is not None
        check_bookkeeping(db)
    assert committed > 100
    assert sum(len(t.value_indexes) for t in db.tables.values()) >= 3 * value_indexes


def test_tables_are_created_per_schema_table() -> None:
    db = database()
    assert set(db.tables) == set(TEST_SCHEMA["tables"])
    assert all(isinstance(t, Table) for t in db.tables.values())
    assert [i.columns for i in db.tables["Root"].indexes] == [("name",)]


def test_new_uuids_are_version_4_and_txn_ids_unique() -> None:
    made = {ids.new_uuid() for _ in range(1000)}
    assert len(made) == 1000
    for text in list(made)[:50]:
        parsed = uuidlib.UUID(text)
        assert str(parsed) == text and parsed.version == 4
    txn_ids = {ids.new_txn_id() for _ in range(1000)}
    assert len(txn_ids) == 1000
    assert all(UUID_RE.fullmatch(t) for t in txn_ids)


# --- undo: what a cluster member does when another member committed first -----------

def state(db: Database) -> dict[str, Any]:
    """Everything a commit changes, as plain values."""
    return {name: {"rows": {u: dict(r) for u, r in table.rows.items()},
                   "refs": dict(table.refs),
                   "weak_refs": {t: dict(h) for t, h in table.weak_refs.items()},
                   "indexes": [dict(index.rows) for index in table.indexes],
                   "value_indexes": {c: {d: dict(b) for d, b in v.rows.items()}
                                     for c, v in table.value_indexes.items()}}
            for name, table in db.tables.items()}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_undo_takes_back_exactly_what_a_commit_did(case: dict[str, Any]) -> None:
    from tegadb.core.commit import undo

    db = database(case["schema"])
    if case["setup"]:
        db.transact(case["setup"])
    before = state(db)
    outcome = db.transact(case["ops"])
    if outcome.changes:
        undo(db, outcome.changes)
    assert state(db) == before
    check_bookkeeping(db)
    # The database works on as if the transaction never ran: running it again
    # gives the same results.
    again = db.transact(case["ops"])
    assert loose(case["ops"], again.results) == loose(case["ops"], outcome.results)


def test_undo_of_several_commits_newest_first_restores_the_first_state() -> None:
    from tegadb.core.commit import undo

    db = database()
    rng = random.Random(7)
    before = state(db)
    done = []
    for n in range(200):
        name = f"r{rng.randrange(30)}"
        op = rng.choice([
            {"op": "insert", "table": "Root", "row": {
                "name": name, "children": ["set", [["named-uuid", "c"]]],
                "weak": ["set", [["named-uuid", "w"]]]}},
            {"op": "delete", "table": "Root", "where": [["name", "==", name]]},
            {"op": "mutate", "table": "Root", "where": [["name", "==", name]],
             "mutations": [["count", "+=", 1]]},
            {"op": "delete", "table": "Weak", "where": []},
        ])
        outcome = db.transact([op,
                               {"op": "insert", "table": "Child", "uuid-name": "c",
                                "row": {"value": str(n)}},
                               {"op": "insert", "table": "Weak", "uuid-name": "w",
                                "row": {"name": str(n)}}])
        if outcome.changes:
            done.append(outcome.changes)
            check_bookkeeping(db)
    assert len(done) > 50
    for changes in reversed(done):
        undo(db, changes)
    assert state(db) == before

"""The Replica as an UpdateSink, fed update3 bodies by hand (no server), and
the conversion of Python values to OVSDB JSON (rows.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tegadb.client.replica import Replica
from tegadb.client.rows import Change, NewRow, Row, to_json
from tegadb.core.schema import DbSchema

SCHEMA = json.loads((Path(__file__).parent.parent / "data" / "test.ovsschema").read_text())
TYPES = DbSchema.from_json(SCHEMA).tables["Root"].columns
A, B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
V1, V2 = "00000000-0000-0000-0000-0000000000f1", "00000000-0000-0000-0000-0000000000f2"


def replica_with(rows: dict[str, dict[str, Any]], tables: dict[str, list[str]] | None = None
                 ) -> tuple[Replica, list[Change]]:
    """A replica started from ``rows`` of Root (initial form), and the changes it reports."""
    replica = Replica(["unix:/nonexistent"], "Test", tables=tables)
    changes: list[Change] = []
    replica.on_change(changes.append)
    replica.start(SCHEMA, False, {"Root": {u: {"initial": r} for u, r in rows.items()}}, V1)
    return replica, changes


def root(replica: Replica, uuid_text: str) -> Row:
    return replica.rows("Root")[uuid.UUID(uuid_text)]


def test_initial_rows_get_the_defaults_of_the_columns_they_omit() -> None:
    replica, changes = replica_with({A: {"name": "a", "_version": ["uuid", V1]}})
    row = root(replica, A)
    assert (row.count, row.ratio, row.flag, row.color, row.tags, row.props) == (
        0, 0.0, False, None, frozenset(), {})
    assert row._version == uuid.UUID(V1)
    assert [(c.kind, c.old, c.new) for c in changes] == [("insert", None, row)]


def test_set_and_map_diffs_apply_as_update2_defines_them() -> None:
    replica, changes = replica_with({A: {"name": "a", "numbers": ["set", [1, 2, 3]],
                                         "props": ["map", [["keep", "1"], ["change", "2"], ["drop", "3"]]]}})
    before = root(replica, A)
    # numbers {1,2,3} -> {4,5,6}: a diff of six elements in a set of at most three.
    replica.update({"Root": {A: {"modify": {
        "numbers": ["set", [1, 2, 3, 4, 5, 6]],
        "props": ["map", [["change", "two"], ["drop", "3"], ["new", "4"]]]}}}}, V2)
    after = root(replica, A)
    assert after.numbers == frozenset({4, 5, 6})
    assert after.props == {"keep": "1", "change": "two", "new": "4"}
    assert before.numbers == frozenset({1, 2, 3})  # the old Row is a snapshot
    assert changes[-1] == Change("modify", "Root", uuid.UUID(A), before, after)


def test_rows_that_swap_indexed_values_in_one_update_stay_found() -> None:
    replica, _ = replica_with({A: {"name": "a"}, B: {"name": "b"}})
    replica.update({"Root": {A: {"modify": {"name": "b"}}, B: {"modify": {"name": "a"}}}}, V2)
    assert replica.lookup("Root", name="a") == root(replica, B)
    assert replica.lookup("Root", name="b") == root(replica, A)
    replica.update({"Root": {A: {"delete": None}}}, V2)
    assert replica.lookup("Root", name="b") is None


def test_a_full_resync_reports_only_what_differs() -> None:
    replica, changes = replica_with({A: {"name": "a"}, B: {"name": "b"}})
    changes.clear()
    c = "cccccccc-0000-0000-0000-000000000003"
    replica.start(SCHEMA, False, {"Root": {A: {"initial": {"name": "a"}},
                                           B: {"initial": {"name": "b", "count": 2}},
                                           c: {"initial": {"name": "c"}}}}, V2)
    assert sorted((ch.kind, str(ch.uuid)) for ch in changes) == [("insert", c), ("modify", B)]
    changes.clear()
    replica.start(SCHEMA, False, {}, V2)
    assert sorted(str(ch.uuid) for ch in changes if ch.kind == "delete") == sorted([A, B, c])
    assert replica.rows("Root") == {}


def test_a_resume_under_another_schema_is_refused() -> None:
    replica, _ = replica_with({A: {"name": "a"}})
    other = {**SCHEMA, "version": "9.9.9"}
    with pytest.raises(ValueError, match="another schema"):
        replica.start(other, True, {}, V2)


def test_an_update_that_does_not_fit_names_table_row_and_cause() -> None:
    replica, _ = replica_with({A: {"name": "a"}})
    with pytest.raises(ValueError, match=f"table Root, row {B}: .*modify of a row the replica does not have"):
        replica.update({"Root": {B: {"modify": {"name": "x"}}}}, V2)
    with pytest.raises(ValueError, match=f"table Root, row {A}: .*bogus"):
        replica.update({"Root": {A: {"modify": {"bogus": 1}}}}, V2)


def test_only_the_columns_asked_for_and_version_are_held() -> None:
    replica, _ = replica_with({A: {"name": "a", "_version": ["uuid", V1]}}, tables={"Root": ["name"]})
    assert dict(root(replica, A)) == {"name": "a", "_version": uuid.UUID(V1)}
    with pytest.raises(AttributeError, match="Root has no column 'count' in the replica"):
        _ = root(replica, A).count
    with pytest.raises(KeyError, match="Child is not replicated"):
        replica.rows("Child")


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    replica, changes = replica_with({})

    def broken(change: Change) -> None:
        raise RuntimeError("bug in a callback")

    replica.on_change(broken)
    stop = replica.on_change(changes.append)
    replica.update({"Root": {A: {"insert": {"name": "a"}}}}, V2)
    assert len(changes) == 2 and "bug in a callback" in caplog.text  # the first, and the second callback
    stop()
    replica.update({"Root": {A: {"delete": None}}}, V2)
    assert len(changes) == 3  # only the first callback now


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("count", 3, 3),
    ("ratio", 1, 1.0),
    ("flag", True, True),
    ("color", None, ["set", []]),
    ("color", "red", ["set", ["red"]]),
    ("tags", {"x"}, ["set", ["x"]]),
    ("tags", ["x", "y"], ["set", ["x", "y"]]),
    ("props", {"k": "v"}, ["map", [["k", "v"]]]),
    ("children", uuid.UUID(A), ["set", [["uuid", A]]]),
    ("children", [A.upper()], ["set", [["uuid", A]]]),
    ("children", {NewRow("Child", "row0")}, ["set", [["named-uuid", "row0"]]]),
])
def test_python_values_become_ovsdb_json(column: str, value: Any, expected: Any) -> None:
    assert to_json(TYPES[column].type, value, f"Root.{column}") == expected


@pytest.mark.parametrize(("column", "value", "message"), [
    ("count", True, "Root.count: expected integer, not True"),
    ("count", 1.5, "Root.count: expected integer, not 1.5"),
    ("flag", 1, "Root.flag: expected boolean, not 1"),
    ("name", 7, "Root.name: expected string, not 7"),
    ("props", ["k"], r"Root.props: expected a dict, not \['k'\]"),
    ("children", ["not-a-uuid"], "Root.children: expected a uuid, a Row or a NewRow, not 'not-a-uuid'"),
])
def test_values_that_do_not_fit_are_refused_with_the_column(column: str, value: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        to_json(TYPES[column].type, value, f"Root.{column}")

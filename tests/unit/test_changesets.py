"""Change sets as JSON (tegadb.core.changesets): what a record stores of a
commit, and applying it back (replay, snapshots)."""

from __future__ import annotations

import json
import random
from typing import Any

from test_engine import REFS_SCHEMA, U1, U2, check_bookkeeping, database, random_op

from tegadb.core.changesets import apply_changes_json, changes_to_json, snapshot_json
from tegadb.core.database import Database
from tegadb.core.types import ZERO_UUID


def test_changes_to_json() -> None:
    db = database()
    outcome = db.transact([
        {"op": "insert", "table": "Child", "uuid": U2, "uuid-name": "c", "row": {}},
        {"op": "insert", "table": "Root", "uuid": U1, "row": {
            "name": "a", "count": 0, "tags": ["set", ["x"]], "status": "up",
            "children": ["named-uuid", "c"]}}])
    assert outcome.changes is not None

    def version(table: str, uuid: str) -> str:
        return db.tables[table].rows[uuid]["_version"][0]

    # _version is journaled so that monitors resume exactly after a restart,
    # unless it is the record's txn id, which replay gives a row without one.
    assert outcome.txn_id == version("Child", U2)
    assert changes_to_json(db, outcome.changes, outcome.txn_id) == {
        "Root": {U1: {"name": "a", "tags": "x", "children": ["uuid", U2],
                      "_version": version("Root", U1)}},
        "Child": {U2: {}}}
    assert changes_to_json(db, outcome.changes, ZERO_UUID)["Child"] == {
        U2: {"_version": version("Child", U2)}}
    outcome = db.transact([{"op": "update", "table": "Root", "where": [],
                            "row": {"count": 3, "props": ["map", [["k", "v"]]]}}])
    assert outcome.changes is not None and outcome.txn_id is not None
    assert changes_to_json(db, outcome.changes, outcome.txn_id) == {
        "Root": {U1: {"count": 3, "props": ["map", [["k", "v"]]]}}}
    assert changes_to_json(db, outcome.changes, ZERO_UUID)["Root"][U1]["_version"] == (
        version("Root", U1))
    # Ephemeral-only changes are not journaled.
    outcome = db.transact([{"op": "update", "table": "Root", "where": [],
                            "row": {"status": "down"}}])
    assert outcome.changes is not None and outcome.txn_id is not None
    assert changes_to_json(db, outcome.changes, outcome.txn_id) == {}
    outcome = db.transact([{"op": "delete", "table": "Root", "where": []}])
    assert outcome.changes is not None and outcome.txn_id is not None
    assert changes_to_json(db, outcome.changes, outcome.txn_id) == {
        "Root": {U1: None}, "Child": {U2: None}}


def stored(db: Database) -> dict[str, dict[str, Any]]:
    """Everything the journal keeps: rows without their ephemeral columns."""
    return {name: {u: {c: row[c] for c in [*(c for c, _ in table.stored), "_version"]}
                   for u, row in table.rows.items()}
            for name, table in db.tables.items()}


def test_journal_replay_and_snapshot_rebuild_the_database() -> None:
    rng = random.Random(3)
    db = database(REFS_SCHEMA)
    records = []
    for _ in range(150):
        outcome = db.transact([random_op(rng, db) for _ in range(rng.randint(1, 3))])
        if outcome.changes:
            assert outcome.txn_id is not None
            records.append({"txn": outcome.txn_id,
                            "changes": changes_to_json(db, outcome.changes, outcome.txn_id)})
    assert len(records) > 30
    replayed = database(REFS_SCHEMA)
    for record in records:
        record = json.loads(json.dumps(record))
        apply_changes_json(replayed, record["txn"], record["changes"])
    assert stored(replayed) == stored(db)
    check_bookkeeping(replayed)

    last = records[-1]["txn"]
    snapshot = json.loads(json.dumps(snapshot_json(db, last)))
    restored = database(REFS_SCHEMA)
    apply_changes_json(restored, ZERO_UUID, {"Leaf": {U1: {"n": 99}}})
    apply_changes_json(restored, last, snapshot, snapshot=True)
    assert stored(restored) == stored(db)
    check_bookkeeping(restored)


def test_replay_returns_the_changes() -> None:
    db = database()
    changes = apply_changes_json(db, ZERO_UUID, {"Weak": {U1: {"name": "w"}}})
    assert changes == {"Weak": {U1: (None, db.tables["Weak"].rows[U1])}}
    changes = apply_changes_json(db, ZERO_UUID, {"Weak": {U1: None}})
    assert changes["Weak"][U1][1] is None and db.tables["Weak"].rows == {}

"""The commit pipeline over each storage (the `served` fixture): records,
group commit, durability, replay, compaction, history, parked waits and
conversion hold the same on the file journal and in memory."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from harness import SCHEMA_JSON, Served

from tegadb.core.history import History
from tegadb.core.types import ZERO_UUID
from tegadb.server.records import Record
from tegadb.server.service import DatabaseService
from tegadb.server.storage import MemoryStorage, StorageError


def insert(name: str, **columns: Any) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "row": {"name": name, **columns}}


def update(name: str, **columns: Any) -> dict[str, Any]:
    return {"op": "update", "table": "Root", "where": [["name", "==", name]], "row": columns}


def delete(name: str) -> dict[str, Any]:
    return {"op": "delete", "table": "Root", "where": [["name", "==", name]]}


def test_a_commit_is_one_record_naming_who_what_and_when(served: Served) -> None:
    client = served.client("unix:alice")
    before = int(time.time() * 1000)
    result = served.transact(client, insert("a", count=3),
                             {"op": "comment", "comment": "ovs-vsctl add-br br0"})
    uuid = result[0]["uuid"][1]
    (record,) = served.records()
    assert (record.seq, record.txn, record.writer, record.comment, record.snapshot) == (
        1, served.service.last_txn, "unix:alice", "ovs-vsctl add-br br0", False)
    assert before <= record.date <= int(time.time() * 1000)
    # Only the columns not at their default; _version is the record's txn.
    assert record.changes == {"Root": {uuid: {"name": "a", "count": 3}}}
    assert served.service.database.tables["Root"].rows[uuid]["_version"] == (record.txn,)


def test_a_transaction_that_changes_nothing_writes_nothing(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("a"))
    served.transact(client, update("a", count=0), {"op": "select", "table": "Root", "where": []})
    served.transact(client, insert("b"), delete("b"))
    assert [r.seq for r in served.records()] == [1]
    assert served.service.seq == 1


def test_group_commit_writes_a_turns_commits_as_one_batch(served: Served) -> None:
    client = served.client()
    ids = [client.send("transact", "Test", insert(name)) for name in "abc"]
    # Nothing written, nor answered, before the end of the turn.
    assert (served.records(), client.received) == ([], [])
    served.turn()
    assert all("uuid" in client.reply(i)["result"][0] for i in ids)
    records = served.records()
    assert [r.seq for r in records] == [1, 2, 3]
    assert [next(iter(r.changes["Root"].values()))["name"] for r in records] == ["a", "b", "c"]
    assert served.batches() == 1


def test_a_durable_commit_syncs_its_turn(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("a"))
    assert served.syncs() == 0
    client.send("transact", "Test", insert("b"))
    client.send("transact", "Test", insert("c"), {"op": "commit", "durable": True})
    served.turn()
    assert (served.batches(), served.syncs()) == (2, 1)
    served.transact(client, insert("d"))
    assert served.syncs() == 1


def test_reopening_replays_rows_versions_and_position(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("a"), insert("b"), insert("c"))
    served.transact(client, update("b", count=1))
    served.transact(client, delete("c"))
    rows, seq, last_txn = served.rows(), served.service.seq, served.service.last_txn
    assert seq == 3 and len(rows) == 2
    served.reopen()
    assert (served.rows(), served.service.seq, served.service.last_txn) == (rows, seq, last_txn)
    served.transact(served.client(), insert("d"))
    assert [r.seq for r in served.records()] == [1, 2, 3, 4]


def cond_since(client: Any, last_txn: str) -> Any:
    request_id = client.send("monitor_cond_since", "Test", "m",
                             {"Root": [{"columns": ["name", "count"]}]}, last_txn)
    return client.reply(request_id)["result"]


def test_monitor_cond_since_resumes_after_reopening(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("a"))
    resume_from = served.service.last_txn
    served.transact(client, insert("b"))
    served.transact(client, update("a", count=5))
    served.reopen()
    found, last_txn, updates = cond_since(served.client(), resume_from)
    assert (found, last_txn) == (True, served.service.last_txn)
    assert sorted((row.get("insert") or row["modify"]).get("name", "a")
                  for row in updates["Root"].values()) == ["a", "b"]
    assert [r.get("modify") for r in updates["Root"].values() if "modify" in r] == [{"count": 5}]


def test_compaction_keeps_contents_and_resumes_only_from_its_id(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("a"), insert("b"))
    early = served.service.last_txn
    served.transact(client, update("b", count=2))
    rows, last_txn = served.rows(), served.service.last_txn
    served.service.compact()
    (snapshot,) = served.records()
    assert (snapshot.snapshot, snapshot.seq, snapshot.txn) == (True, 2, last_txn)
    assert len(snapshot.changes["Root"]) == 2
    served.reopen()
    assert served.rows() == rows
    assert cond_since(served.client(), last_txn)[:2] == [True, last_txn]
    assert cond_since(served.client(), early)[0] is False
    served.transact(served.client(), insert("c"))
    assert [(r.seq, r.snapshot) for r in served.records()] == [(2, True), (3, False)]


def test_history_after_reopening_is_bounded_as_configured(served: Served) -> None:
    client = served.client()
    ids = []
    for i in range(6):
        served.transact(client, insert(f"r{i}"))
        ids.append(served.service.last_txn)
    served.reopen(History(max_transactions=3))
    assert served.service.history.changes_since(ids[1]) is None
    merged = served.service.history.changes_since(ids[2])
    assert merged is not None and len(merged["Root"]) == 3


def test_a_parked_wait_is_released_by_a_commit(served: Served) -> None:
    waiter, writer = served.client("unix:waiter"), served.client("unix:writer")
    wait = {"op": "wait", "table": "Root", "where": [["name", "==", "x"]], "columns": ["name"],
            "until": "==", "rows": [{"name": "x"}]}
    request_id = waiter.send("transact", "Test", wait, insert("after-wait"))
    served.turn()
    assert waiter.received == [] and len(served.service.parked) == 1
    served.transact(writer, insert("x"))
    # Run again once the writer's commit is written; its own batch goes
    # out at the end of the next turn.
    assert waiter.received == [] and not served.service.parked
    served.turn()
    # Answered once, with its insert done once: its own commit does not
    # run it a second time.
    (reply,) = waiter.received
    assert reply["id"] == request_id and reply["result"][0] == {}
    assert sorted(r[0] for r in served.rows().values()) == [("after-wait",), ("x",)]
    assert [r.writer for r in served.records()] == ["unix:writer", "unix:waiter"]


def test_conversion_rewrites_the_log_under_the_new_schema(served: Served) -> None:
    client = served.client()
    served.transact(client, insert("keep", count=4))
    schema = copy.deepcopy(SCHEMA_JSON)
    schema["version"] = "9.9.9"
    schema["tables"]["Root"]["columns"]["added"] = {
        "type": {"key": "integer", "min": 0, "max": 1}}
    request_id = client.send("convert", "Test", schema)
    served.turn()
    assert client.reply(request_id)["result"] == {}
    (snapshot,) = served.records()
    assert snapshot.snapshot and snapshot.seq == 2
    assert served.storage.header.schema["version"] == "9.9.9"
    served.reopen()
    assert served.service.schema.version == "9.9.9"
    assert [r[:2] for r in served.rows().values()] == [(("keep",), (4,))]


# ---------------------------------------------------------------------------
# The in-memory storage by itself

def test_memory_storage_reads_from_a_position() -> None:
    storage = MemoryStorage(SCHEMA_JSON)
    records = [Record(seq, f"{seq:08d}-0000-4000-8000-000000000000", 0, {}) for seq in (1, 2, 3)]
    for record in records:
        storage.append(record)
    assert list(storage.read()) == []  # not flushed yet
    storage.flush(sync=False)
    assert list(storage.read()) == records
    assert list(storage.read(after=1)) == records[1:]
    snapshot = Record(3, records[2].txn, 0, {}, snapshot=True)
    storage.compact(storage.header, snapshot)
    assert list(storage.read(after=1)) == [snapshot]  # the log before it is gone
    assert list(storage.read(after=3)) == []


def test_memory_storage_refuses_what_a_file_refuses() -> None:
    storage = MemoryStorage(SCHEMA_JSON, "mem")
    storage.append(Record(2, ZERO_UUID, 0, {}))
    with pytest.raises(StorageError, match=r"^mem: record seq 2 does not follow 2$"):
        storage.append(Record(2, ZERO_UUID, 0, {}))
    with pytest.raises(StorageError, match=r"^mem: not a snapshot of the current state"):
        storage.compact(storage.header, Record(1, ZERO_UUID, 0, {}, snapshot=True))


def test_memory_storage_compacts_after_its_record_budget() -> None:
    storage = MemoryStorage(SCHEMA_JSON, compact_after=3)
    assert not storage.should_compact(overdue=True)  # nothing to compact
    for seq in (1, 2):
        storage.append(Record(seq, ZERO_UUID, 0, {}))
    storage.flush(sync=False)
    assert not storage.should_compact() and storage.should_compact(overdue=True)
    storage.append(Record(3, ZERO_UUID, 0, {}))
    storage.flush(sync=False)
    assert storage.should_compact()


def test_a_record_that_does_not_apply_names_where_it_is() -> None:
    storage = MemoryStorage(SCHEMA_JSON, "mem")
    storage.append(Record(1, ZERO_UUID, 0, {"Nope": {}}))
    storage.flush(sync=False)
    with pytest.raises(StorageError,
                       match=r"^mem: record 1: cannot replay record: .*No table named Nope"):
        DatabaseService.load(storage)

"""Journal replay: column decoders, damaged records, the rebuilt history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tegadb.core import values
from tegadb.core.changesets import apply_changes_json, changes_to_json, snapshot_json
from tegadb.core.database import Database
from tegadb.core.errors import OVSDBError
from tegadb.core.history import History
from tegadb.core.schema import DbSchema
from tegadb.core.types import Type
from tegadb.server.journal import Journal, JournalError, create
from tegadb.server.methods import Session
from tegadb.server.records import Header, Record, seal
from tegadb.server.service import DatabaseService, ServerDatabases
from tegadb.server.storage import StorageError

DATA = Path(__file__).parent.parent / "data"
SCHEMA_JSON = json.loads((DATA / "test.ovsschema").read_text())
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"

STRINGS = {"key": "string", "min": 0, "max": "unlimited"}
# Values as the journal holds them, and damaged or foreign ones.
DECODER_CASES: list[tuple[Any, Any]] = [
    ("string", "a"), ("string", ""), ("string", 1), ("string", ["set", ["a"]]),
    ("string", ["set", []]), ("string", None),
    ("integer", 5), ("integer", -(2**63)), ("integer", 2**63 - 1), ("integer", 2**63),
    ("integer", -(2**63) - 1), ("integer", 1.0), ("integer", 1.5), ("integer", True),
    ("integer", "1"), ("integer", ["set", [3]]),
    ("boolean", True), ("boolean", 0), ("real", 0.5), ("real", 2), ("real", "x"),
    ("uuid", ["uuid", U1]), ("uuid", ["uuid", U1.upper()]), ("uuid", ["uuid", "x"]),
    ({"key": "string", "min": 0, "max": 1}, ["set", []]),
    ({"key": "string", "min": 0, "max": 1}, "a"),
    ({"key": "string", "min": 0, "max": 1}, ["set", ["a", "b"]]),
    (STRINGS, ["set", ["a", "b", "c"]]), (STRINGS, ["set", ["b", "a"]]),
    (STRINGS, ["set", ["a", "a"]]), (STRINGS, ["set", ["a", 1]]), (STRINGS, ["set", "a"]),
    (STRINGS, ["set"]), (STRINGS, ["map", ["a"]]), (STRINGS, ["set", ["a"], 1]), (STRINGS, 7),
    ({"key": "string", "min": 1, "max": 3}, ["set", []]),
    ({"key": "string", "min": 0, "max": 2}, ["set", ["a", "b", "c"]]),
    ({"key": "boolean", "min": 0, "max": 2}, ["set", [False, True]]),
    ({"key": "boolean", "min": 0, "max": 2}, ["set", [True, False]]),
    ({"key": "integer", "min": 0, "max": 3}, ["set", [1, 2]]),
    ({"key": {"type": "uuid", "refTable": "T"}, "min": 0, "max": "unlimited"},
     ["set", [["uuid", U2], ["uuid", U1]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"}, ["map", []]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     ["map", [["a", "1"], ["b", "2"]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     ["map", [["b", "1"], ["a", "2"]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     ["map", [["a", "1"], ["a", "2"]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     ["map", [["a", 1]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     ["map", [["a", "1", "x"]]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"}, ["map", ["a"]]),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"}, ["set", []]),
    ({"key": "string", "value": "string", "min": 0, "max": 1},
     ["map", [["a", "1"], ["b", "2"]]]),
    ({"key": "string", "value": "integer", "min": 0, "max": "unlimited"},
     ["map", [["a", 1]]]),
]


@pytest.mark.parametrize(("type_json", "value"), DECODER_CASES)
def test_replay_parsers_agree_with_the_generic_parser(type_json: Any, value: Any) -> None:
    type_ = Type.from_json(type_json)
    parser = values.parser(type_, checked=False)

    def decode(json: Any) -> Any:
        return parser.parse(json, None)
    try:
        expected = values.parse_unchecked(type_, value)
    except OVSDBError as e:
        with pytest.raises(OVSDBError) as raised:
            decode(value)
        assert raised.value.to_json() == e.to_json()
        return
    got = decode(value)
    assert got == expected
    assert [type(a) for a in got] == [type(a) for a in expected]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "test.db"
    create(str(p), Header(SCHEMA_JSON))
    return p


def write(path: Path, records: list[dict[str, Any]]) -> None:
    journal = Journal.open(str(path))
    for _ in journal.read():
        pass
    for record in records:
        journal.append(Record.from_json(record))
    journal.close()


def txn_id(seq: int) -> str:
    return f"00000000-0000-4000-8000-{seq:012d}"


def record(seq: int, changes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "txn": txn_id(seq), "date": 0, **extra, "changes": changes}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"Nope": {U1: {}}}, "No table named Nope."),
    ({"Root": {U1: {"nope": 1}}}, "No column nope in table Root."),
    ({"Root": {U1: {"count": "x"}}}, "expected integer"),
    ({"Root": {U1: {"tags": ["set", ["b", "a", "a"]]}}}, "set contains duplicate"),
    ({"Root": {U1: 5}}, f"Row {U1} of table Root is neither a JSON object nor null."),
    ({"Root": []}, "Table Root: rows are not a JSON object."),
    ({"Root": {U1: {"_version": ["uuid", U2]}}}, "_version is not a string"),
])
def test_a_record_that_does_not_apply_names_file_and_line(path: Path, changes: Any,
                                                          problem: str) -> None:
    write(path, [record(1, {"Root": {U2: {"name": "ok"}}}), record(2, changes),
                 record(3, {})])
    where = re.escape(f"{path}:3: cannot replay record: ")
    with pytest.raises(StorageError, match=f"^{where}.*{re.escape(problem)}"):
        DatabaseService.open(path)


@pytest.mark.parametrize(("txn", "problem"), [(None, 'record has no "txn"'),
                                              (7, 'record "txn" is not a string: 7')])
def test_a_record_without_a_txn_id_names_file_and_line(path: Path, txn: Any,
                                                       problem: str) -> None:
    write(path, [record(1, {})])
    bad = {"seq": 2, "date": 0, "changes": {}} if txn is None else record(2, {}, txn=txn)
    offset = path.stat().st_size
    with path.open("ab") as f:
        f.write(seal(json.dumps(bad).encode()) + seal(json.dumps(record(3, {})).encode()))
    with pytest.raises(JournalError,
                       match=f"^{re.escape(f'{path}:3 (offset {offset}): {problem}')}$"):
        DatabaseService.open(path)


def test_a_row_without_a_stored_version_gets_its_records_txn_id(path: Path) -> None:
    # Older journals stored every row's _version; newer ones only those that
    # differ from the record's txn.  Both forms open, into the same versions.
    write(path, [record(1, {"Root": {U1: {"name": "a", "_version": txn_id(1)},
                                     U2: {"name": "b"}}}),
                 record(2, {"Root": {U1: {"count": 1}}}),
                 record(3, {"Root": {U2: {"count": 2, "_version": U1}}})])
    rows = DatabaseService.open(path).database.tables["Root"].rows
    assert rows[U1]["_version"] == (txn_id(2),)
    assert rows[U2]["_version"] == (U1,)


def transactions(db: Database, start: int, stop: int) -> list[dict[str, Any]]:
    """Change sets of transactions of one to three rows each, as journaled."""
    out = []
    for i in range(start, stop):
        rows = db.tables["Root"].rows
        if i % 4 == 3 and rows:
            ops = [{"op": "delete", "table": "Root",
                    "where": [["_uuid", "==", ["uuid", next(iter(rows))]]]}]
        else:
            ops = [{"op": "insert", "table": "Root",
                    "row": {"name": f"r{i}-{k}", "tags": ["set", [str(i), "x"]],
                            "props": ["map", [["k", str(k)]]]}}
                   for k in range(i % 3 + 1)]
            if rows:
                ops.append({"op": "mutate", "table": "Root", "where": [],
                            "mutations": [["count", "+=", 1]]})
        outcome = db.transact(ops)
        assert outcome.changes, outcome.results
        assert outcome.txn_id is not None
        out.append(changes_to_json(db, outcome.changes, outcome.txn_id))
    return out


@pytest.mark.parametrize("bounds", [(5, 1000), (1000, 12), (3, 7), (0, 100), (1000, 1000)])
@pytest.mark.parametrize("compacted", [False, True])
def test_history_after_replay_is_as_if_every_transaction_was_appended(
        path: Path, bounds: tuple[int, int], compacted: bool) -> None:
    source = Database(DbSchema.from_json(SCHEMA_JSON))
    records = [record(1, transactions(source, 0, 1)[0])]
    if compacted:
        records = [record(1, snapshot_json(source, txn_id(1)), snapshot=True)]
    records += [record(seq, changes)
                for seq, changes in enumerate(transactions(source, 1, 31), start=2)]
    write(path, records)

    service = DatabaseService.open(path, History(*bounds))
    expected = History(*bounds)
    replayed = Database(DbSchema.from_json(SCHEMA_JSON))
    for r in records:
        r = json.loads(json.dumps(r))
        changes = apply_changes_json(replayed, r["txn"], r["changes"], r.get("snapshot", False))
        if r.get("snapshot"):
            expected.reset(r["txn"])
        else:
            expected.append(r["txn"], changes)
    history = service.history
    assert history.last_txn_id == expected.last_txn_id == records[-1]["txn"]
    for r in records:
        assert history.changes_since(r["txn"]) == expected.changes_since(r["txn"]), r["seq"]
    assert (service.seq, service.last_txn) == (31, records[-1]["txn"])
    service.close()


def test_row_versions_survive_a_restart_and_a_compaction(path: Path) -> None:
    def versions(service: DatabaseService) -> dict[str, Any]:
        return {u: row["_version"] for u, row in service.database.tables["Root"].rows.items()}

    service = DatabaseService.open(path)
    replies: list[bytes] = []
    session = Session(ServerDatabases([service]), "test", replies.append, lambda: None)
    for ops in ([{"op": "insert", "table": "Root", "row": {"name": "a"}},
                 {"op": "insert", "table": "Root", "row": {"name": "b"}},
                 {"op": "insert", "table": "Root", "row": {"name": "c"}}],
                [{"op": "update", "table": "Root", "where": [["name", "==", "b"]],
                  "row": {"count": 1}}]):
        service.transact(session, 1, 1, ops)
        service.flush()  # the end of the loop turn: the batch is written and answered
    assert json.loads(replies[-1])["result"] == [{"count": 1}]
    (b,) = (u for u, row in service.database.tables["Root"].rows.items() if row["name"] == ("b",))
    before = versions(service)
    assert len(set(before.values())) == 3
    service.close()
    # Only the versions of rows after the first a transaction changes are stored.
    inserted, updated = journal_records(path)
    assert len(stored_versions(inserted)) == 2 and stored_versions(updated) == {}
    service = DatabaseService.open(path)
    assert versions(service) == before
    service.compact()
    service.close()
    # The snapshot has the id of the last transaction, which changed only b.
    (snapshot,) = journal_records(path)
    assert stored_versions(snapshot) == {u: v[0] for u, v in before.items() if v != before[b]}
    service = DatabaseService.open(path)
    assert versions(service) == before
    service.close()


def journal_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def stored_versions(record: dict[str, Any]) -> dict[str, str]:
    return {uuid: row["_version"] for rows in record["changes"].values()
            for uuid, row in rows.items() if "_version" in row}


def test_a_new_version_alone_survives_a_restart(path: Path) -> None:
    # A row that gains a weak reference to a row the same transaction
    # deletes keeps its columns but gets a new _version (as in
    # ovsdb-server); the record must hold that version, or a restart
    # would bring the old one back and a monitor's resume would differ.
    service = DatabaseService.open(path)
    session = Session(ServerDatabases([service]), "test", lambda data: None, lambda: None)
    service.transact(session, 1, 1, [
        {"op": "insert", "table": "Weak", "row": {"name": "w"}, "uuid-name": "w"},
        {"op": "insert", "table": "Root", "row": {"name": "a"}}])
    (weak,) = service.database.tables["Weak"].rows
    service.transact(session, 2, 1, [
        {"op": "mutate", "table": "Root", "where": [],
         "mutations": [["weak", "insert", ["uuid", weak]]]},
        {"op": "delete", "table": "Weak", "where": []}])
    service.flush()
    (row,) = service.database.tables["Root"].rows.values()
    version = row["_version"]
    assert row["weak"] == () and version[0] == service.last_txn
    service.close()
    assert journal_records(path)[-1]["changes"]["Root"] == {row["_uuid"][0]: {}}
    service = DatabaseService.open(path)
    (row,) = service.database.tables["Root"].rows.values()
    assert row["_version"] == version
    service.close()

"""The standalone file codec (cli/ovsdb_file.py) and the restore transaction
(cli/restore.py), in process.  test_cli_verbs.py runs both against real servers."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from peers import TEST_SCHEMA

from tegadb.cli import ovsdb_file, restore
from tegadb.core.schema import DbSchema

SCHEMA_JSON = json.loads(TEST_SCHEMA.read_text())
SCHEMA = DbSchema.from_json(SCHEMA_JSON)
U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"
C1 = "33333333-3333-3333-3333-333333333333"


def file_of(*records: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(ovsdb_file.compose_record(r) for r in records))


def test_record_header_names_length_and_sha1() -> None:
    data = ovsdb_file.compose_record({"b": 1, "a": [1.5, "x"]})
    header, body = data.split(b"\n", 1)
    magic, json_word, length, sha1 = header.split()
    assert (magic, json_word, int(length)) == (b"OVSDB", b"JSON", len(body))
    assert body == b'{"a":[1.5,"x"],"b":1}\n'
    assert len(sha1) == 40
    assert list(ovsdb_file.read_records(io.BytesIO(data), "f")) == [{"a": [1.5, "x"], "b": 1}]


def test_transactions_and_diffs_replay_to_the_last_rows() -> None:
    stream = file_of(
        SCHEMA_JSON,
        {"Root": {U1: {"name": "a", "tags": ["set", ["x", "y"]], "props": ["map", [["k", "v"]]]},
                  U2: {"name": "b"}},
         "_date": 1, "_is_diff": True},
        # A diff: "x" goes, "z" comes; key k changes, key n comes.
        {"Root": {U1: {"tags": ["set", ["x", "z"]], "props": ["map", [["k", "w"], ["n", "1"]]],
                       "count": 3},
                  U2: None},
         "_comment": "c", "_date": 2, "_is_diff": True},
        # Not a diff: the values replace.
        {"Root": {U1: {"tags": "only"}}, "_date": 3})
    schema, rows = ovsdb_file.read_database(stream, "f")
    assert schema.name == "Test" and set(rows) == set(SCHEMA.tables)
    assert rows["Root"] == {U1: {"name": "a", "tags": "only", "count": 3,
                                 "props": ["map", [["k", "w"], ["n", "1"]]]}}


@pytest.mark.parametrize("data, message", [
    (b"", "f: empty file, not an OVSDB database"),
    (b"OVSDB CLUSTER 2 0123\n{}", "f: a clustered database file"),
    (b"garbage\n", "f: record at offset 0: not an OVSDB file record header"),
    (b"OVSDB JSON 10 " + b"0" * 40 + b"\n{}\n", "f: record at offset 0: the file ends 7 byte(s) short"),
    (b"OVSDB JSON 3 " + b"0" * 40 + b"\n{}\n", "f: record at offset 0: SHA-1 does not match"),
])
def test_damaged_files_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ovsdb_file.FileError) as error:
        ovsdb_file.read_database(io.BytesIO(data), "f")
    assert str(error.value).startswith(message)


def test_a_record_for_an_unknown_table_is_an_error() -> None:
    with pytest.raises(ovsdb_file.FileError, match="f: record 1: no table Nope in the schema"):
        ovsdb_file.read_database(file_of(SCHEMA_JSON, {"Nope": {}}), "f")


def backup_rows(**tables: dict[str, dict[str, Any]]) -> ovsdb_file.Rows:
    return {name: tables.get(name, {}) for name in SCHEMA.tables}


def test_keep_uuid_ops_update_delete_insert() -> None:
    backup = backup_rows(Root={U1: {"name": "a", "serial": 7, "children": ["uuid", C1]}},
                         Child={C1: {"value": "v"}})
    current = {name: {} for name in SCHEMA.tables} | {
        "Root": {U1: {"serial": 7}, U2: {"serial": 0}}}
    assert restore.immutable_conflict(SCHEMA, backup, current) is None
    ops = restore.keep_uuid_ops(SCHEMA, backup, current)
    waits = ops[:len(SCHEMA.tables)]
    assert [w["op"] for w in waits] == ["wait"] * len(SCHEMA.tables)
    root_wait = next(w for w in waits if w["table"] == "Root")
    assert root_wait["rows"] == [{"_uuid": ["uuid", U1]}, {"_uuid": ["uuid", U2]}]
    assert root_wait["timeout"] == 0
    rest = ops[len(SCHEMA.tables):]
    assert {"op": "delete", "table": "Root", "where": [["_uuid", "==", ["uuid", U2]]]} in rest
    update = next(op for op in rest if op["op"] == "update")
    # Every mutable persistent column: the backup's value or the default;
    # not the immutable "serial", not the ephemeral "status".
    assert update["row"]["name"] == "a" and update["row"]["count"] == 0
    assert update["row"]["children"] == ["uuid", C1] and update["row"]["tags"] == ["set", []]
    assert "serial" not in update["row"] and "status" not in update["row"]
    assert {"op": "insert", "table": "Child", "uuid": C1, "row": {"value": "v"}} in rest


def test_an_immutable_difference_blocks_keeping_uuids() -> None:
    backup = backup_rows(Root={U1: {"name": "a", "serial": 7}})
    current = {name: {} for name in SCHEMA.tables} | {"Root": {U1: {"serial": 8}}}
    assert restore.immutable_conflict(SCHEMA, backup, current) == (
        f"row {U1} of table Root has another value in its immutable column serial")
    # The default counts as a value: serial absent from the backup is 0.
    current["Root"][U1] = {"serial": 0}
    assert restore.immutable_conflict(SCHEMA, backup_rows(Root={U1: {"name": "a"}}),
                                      current) is None


def test_new_uuid_ops_name_rows_and_their_references() -> None:
    other = "44444444-4444-4444-4444-444444444444"  # not a row of the backup: kept as it is
    backup = backup_rows(Root={U1: {"name": "a", "children": ["set", [["uuid", C1]]],
                                    "named": ["map", [["x", ["uuid", C1]]]],
                                    "weak": ["uuid", other]}},
                         Child={C1: {"value": "v"}})
    ops = restore.new_uuid_ops(backup)
    assert {"op": "delete", "table": "Root", "where": []} in ops
    root = next(op for op in ops if op["op"] == "insert" and op["table"] == "Root")
    child = restore.row_name(C1)
    assert root["uuid-name"] == "row11111111_1111_1111_1111_111111111111"
    assert root["row"]["children"] == ["set", [["named-uuid", child]]]
    assert root["row"]["named"] == ["map", [["x", ["named-uuid", child]]]]
    assert root["row"]["weak"] == ["uuid", other]


def test_a_server_without_insert_uuid_is_recognized() -> None:
    ops = [{"op": "wait"}, {"op": "insert", "uuid": U1}]
    refused = [{}, {"error": "syntax error", "details": "Parsing ovsdb operation 2 of 2 failed:"
                    " Member 'uuid' is present but not allowed here."}]
    assert restore.rejects_uuid_member(ops, refused) is not None
    other = [{}, {"error": "constraint violation", "details": "uuid"}]
    assert restore.rejects_uuid_member(ops, other) is None

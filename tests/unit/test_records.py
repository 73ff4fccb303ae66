"""The records codec: round trips, the exact JSON, and every malformed record
rejected with a message that names what is wrong; the checksum that seals
a journal line."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from tegadb.server.records import Header, Record, RecordError, seal, unseal

TXN = "6f1c1f4e-59a5-4c8c-9a55-0a1b2c3d4e5f"
SCHEMA = {"name": "Test", "version": "1.0.0", "tables": {"T": {"columns": {"n": {"type": "integer"}}}}}
COMMIT = {"seq": 7, "txn": TXN, "date": 1700000000123, "comment": "ovs-vsctl add-br br0",
          "writer": "unix:/run/tegadb.sock", "changes": {"T": {TXN: {"n": 1}, TXN[:-1] + "0": None}}}
SNAPSHOT = {"seq": 7, "txn": TXN, "date": 1700000000124, "snapshot": True,
            "changes": {"T": {TXN: {"n": 1}}}}


@pytest.mark.parametrize("obj", [
    COMMIT,
    {"seq": 1, "txn": TXN, "date": 0, "changes": {}},
    {"seq": 0, "txn": TXN, "date": 5, "writer": "", "changes": {}},
    SNAPSHOT,
    {"seq": 8, "txn": TXN, "date": 1, "snapshot": True, "schema": SCHEMA, "changes": {}},
])
def test_round_trip_keeps_every_member_in_order(obj: dict[str, Any]) -> None:
    record = Record.from_json(obj)
    assert list(record.to_json().items()) == list(obj.items())
    assert Record.from_json(record.to_json()) == record


def test_members_as_attributes() -> None:
    record = Record.from_json(COMMIT)
    assert (record.seq, record.txn, record.date, record.comment, record.writer,
            record.snapshot, record.changes) == (
        7, TXN, 1700000000123, "ovs-vsctl add-br br0", "unix:/run/tegadb.sock", False,
        COMMIT["changes"])
    snapshot = Record.from_json(SNAPSHOT)
    assert (snapshot.snapshot, snapshot.comment, snapshot.writer) == (True, None, None)


def test_written_as_the_journal_always_wrote_it() -> None:
    # The order of the members is the file format: a commit as service.py
    # wrote it before the codec existed, and a snapshot.
    commit = Record(3, TXN, 10, {"T": {}}, "hi", "tcp:1.2.3.4:5")
    assert list(commit.to_json()) == ["seq", "txn", "date", "comment", "writer", "changes"]
    assert list(Record(3, TXN, 10, {}, writer="w").to_json()) == [
        "seq", "txn", "date", "writer", "changes"]
    assert list(Record(3, TXN, 10, {}, snapshot=True).to_json()) == [
        "seq", "txn", "date", "snapshot", "changes"]


def test_snapshot_false_is_read_and_left_out() -> None:
    record = Record.from_json({**SNAPSHOT, "snapshot": False})
    assert record.snapshot is False and "snapshot" not in record.to_json()


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in COMMIT.items() if k != name}


@pytest.mark.parametrize(("obj", "message"), [
    ([1, 2], "record is not a JSON object"),
    (None, "record is not a JSON object"),
    (without("seq"), 'record has no "seq"'),
    (without("txn"), 'record has no "txn"'),
    (without("date"), 'record has no "date"'),
    (without("changes"), 'record has no "changes"'),
    ({**COMMIT, "seq": "7"}, "record \"seq\" is not a non-negative integer: '7'"),
    ({**COMMIT, "seq": True}, 'record "seq" is not a non-negative integer: True'),
    ({**COMMIT, "seq": 7.0}, 'record "seq" is not a non-negative integer: 7.0'),
    ({**COMMIT, "seq": -1}, 'record "seq" is not a non-negative integer: -1'),
    ({**COMMIT, "txn": ["uuid", TXN]}, 'record "txn" is not a string: [\'uuid\', '),
    ({**COMMIT, "txn": None}, 'record "txn" is not a string: None'),
    ({**COMMIT, "date": 1.5}, 'record "date" is not an integer: 1.5'),
    ({**COMMIT, "date": False}, 'record "date" is not an integer: False'),
    ({**COMMIT, "comment": None}, 'record "comment" is not a string: None'),
    ({**COMMIT, "comment": ["a"]}, "record \"comment\" is not a string: ['a']"),
    ({**COMMIT, "writer": 5}, 'record "writer" is not a string: 5'),
    ({**SNAPSHOT, "snapshot": 1}, 'record "snapshot" is not a boolean: 1'),
    ({**SNAPSHOT, "snapshot": None}, 'record "snapshot" is not a boolean: None'),
    ({**COMMIT, "changes": []}, 'record "changes" is not an object: []'),
    ({**COMMIT, "changes": None}, 'record "changes" is not an object: None'),
    ({**COMMIT, "changes": "x" * 100}, "record \"changes\" is not an object: 'xxxxxxxx"),
    ({**COMMIT, "_comment": "x"}, 'record has unknown member "_comment"'),
    ({**COMMIT, "schema": SCHEMA}, 'record has a "schema" but is not a snapshot'),
    ({**SNAPSHOT, "schema": "Test"}, "record \"schema\" is not an object (in a snapshot): 'Test'"),
    ({**COMMIT, "txn_id": TXN, "who": 1}, 'record has unknown member "txn_id", "who"'),
])
def test_malformed_record_names_the_member(obj: Any, message: str) -> None:
    with pytest.raises(RecordError) as info:
        Record.from_json(obj)
    assert str(info.value).startswith(message)
    assert len(str(info.value)) < 100  # a long value is cut short


def test_header_round_trip() -> None:
    obj = {"format": "tegadb-journal", "version": 1, "schema": SCHEMA}
    header = Header.from_json(obj)
    assert (header.schema, header.name) == (SCHEMA, "Test")
    assert list(header.to_json().items()) == list(obj.items())


@pytest.mark.parametrize(("obj", "message"), [
    ("x", "header is not a JSON object"),
    ({"format": "ovsdb", "version": 1, "schema": SCHEMA}, "not a tegadb-journal file"),
    ({"version": 1, "schema": SCHEMA}, "not a tegadb-journal file"),
    ({"format": "tegadb-journal", "version": 2, "schema": SCHEMA},
     "unsupported tegadb-journal version 2"),
    ({"format": "tegadb-journal", "schema": SCHEMA}, "unsupported tegadb-journal version None"),
    ({"format": "tegadb-journal", "version": 1}, 'header has no "schema" object'),
    ({"format": "tegadb-journal", "version": 1, "schema": []}, 'header has no "schema" object'),
    ({"format": "tegadb-journal", "version": 1, "schema": SCHEMA, "extra": 1},
     'header has unknown member "extra"'),
])
def test_malformed_header_says_what_is_wrong(obj: Any, message: str) -> None:
    with pytest.raises(RecordError, match=f"^{message}$"):
        Header.from_json(obj)


# ---------------------------------------------------------------------------
# The seal: a journal line's checksum

LINE = json.dumps(COMMIT, separators=(",", ":"), ensure_ascii=False).encode()


def test_seal_is_a_last_member_over_the_bytes_before_it() -> None:
    line = seal(LINE)
    assert line == LINE[:-1] + b',"crc32":"%08x"}\n' % zlib.crc32(LINE[:-1])
    assert unseal(line) == LINE
    assert json.loads(line) == {**COMMIT, "crc32": f"{zlib.crc32(LINE[:-1]):08x}"}  # for jq


def test_a_line_without_seal_is_not_sealed() -> None:
    assert unseal(LINE + b"\n") is None
    assert unseal(b"{}\n") is None


def test_every_flipped_bit_is_found() -> None:
    # Each flip either breaks the checksum or the seal's shape (which the
    # journal rejects in a sealed file); none leaves a line that passes.
    line = seal(LINE)
    for offset in range(len(line) - 1):
        for bit in (0x01, 0x20, 0x80):
            damaged = bytearray(line)
            damaged[offset] ^= bit
            try:
                assert unseal(bytes(damaged)) is None, (offset, bit)
            except RecordError as e:
                assert "bytes have CRC-32" in str(e)

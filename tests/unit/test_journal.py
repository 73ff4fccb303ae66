"""Unit tests for tegadb.server.journal: format, replay, group commit, compaction."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tegadb.server import journal as jmod
from tegadb.server.journal import Journal, JournalError, check, create, repair
from tegadb.server.records import Header, Record
from tegadb.server.service import DatabaseService

SCHEMA = {"name": "Test", "version": "1.0.0", "tables": {"T": {"columns": {"n": {"type": "integer"}}}}}
UUID = "2f5b6c70-8d4e-4b7b-9a55-2f3a3c4d5e6f"


def txn_json(seq: int, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "txn": f"00000000-0000-0000-0000-{seq:012d}", "date": 1700000000000 + seq,
            **extra, "changes": {"T": {UUID: {"n": seq}}}}


def txn(seq: int, **extra: Any) -> Record:
    return Record.from_json(txn_json(seq, **extra))


def snapshot(seq: int, rows: int = 1) -> Record:
    changes = {"T": {f"{UUID[:-6]}{i:06d}": {"n": seq} for i in range(rows)}}
    return Record(seq, f"00000000-0000-0000-0000-{seq:012d}", 1700000009999, changes,
                  snapshot=True)


@pytest.fixture
def path(tmp_path: Path) -> str:
    p = str(tmp_path / "test.db")
    create(p, Header(SCHEMA))
    return p


def open_all(path: str) -> tuple[Journal, Header, list[Record]]:
    journal = Journal.open(path)
    return journal, journal.header, list(journal.read())


def lines(path: str) -> list[bytes]:
    return Path(path).read_bytes().splitlines(keepends=True)


def seal_text(text: bytes) -> bytes:
    """The format of a sealed line, written out here on its own: the CRC-32
    of the JSON before its last member, which holds it in hex."""
    body = text[:-1]
    return body + b',"crc32":"%08x"}\n' % zlib.crc32(body)


def sealed(obj: dict[str, Any]) -> bytes:
    return seal_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def flip(path: str, offset: int, new: bytes) -> None:
    """Overwrites the byte at `offset`, as a failing disk or memory might."""
    with open(path, "r+b") as f:
        f.seek(offset)
        assert f.read(1) != new
        f.seek(offset)
        f.write(new)


def write_journal(path: str, records: list[Record]) -> None:
    journal, _, _ = open_all(path)
    for record in records:
        journal.append(record)
    journal.close()


class Calls:
    """Counts calls to an os function while still calling it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.count = 0
        real = getattr(os, name)

        def counted(*args: Any) -> Any:
            self.count += 1
            return real(*args)

        monkeypatch.setattr(os, name, counted)


# ---------------------------------------------------------------------------
# Format and round trip

def test_create_writes_just_the_header(path: str) -> None:
    header_json = {"format": "tegadb-journal", "version": 1, "schema": SCHEMA}
    assert lines(path) == [sealed(header_json)]
    journal, header, records = open_all(path)
    assert header.to_json() == header_json
    assert records == []
    assert journal.size == os.path.getsize(path)
    journal.close()


def test_create_refuses_an_existing_file(path: str) -> None:
    before = Path(path).read_bytes()
    with pytest.raises(JournalError, match="exists"):
        create(path, Header({"other": 1}))
    assert Path(path).read_bytes() == before


def test_round_trip_and_every_line_is_plain_json(path: str) -> None:
    written = [txn_json(1, comment="first\nsecond", writer="tcp:1.2.3.4:5"), txn_json(2),
               {**txn_json(3), "changes": {"T": {UUID: None}}, "comment": "é/ü"}]
    write_journal(path, [Record.from_json(r) for r in written])
    assert lines(path)[1:] == [sealed(Record.from_json(r).to_json()) for r in written]
    assert [json.loads(line) for line in lines(path)][1]["changes"] == written[0]["changes"]  # jq too
    journal, header, records = open_all(path)
    assert (header.schema, [r.to_json() for r in records], journal.last_seq) == (SCHEMA, written, 3)
    assert journal.size == os.path.getsize(path)
    assert journal.records_since_compaction == 3
    journal.close()


def test_append_needs_growing_seq_and_serializable_records(path: str) -> None:
    journal, _, _ = open_all(path)
    journal.append(txn(5))
    for bad in (txn(5), txn(4)):
        with pytest.raises(JournalError, match=r"record seq [45] does not follow 5"):
            journal.append(bad)
    with pytest.raises(JournalError, match="cannot serialize record 6"):
        journal.append(Record(6, "x", 0, {"T": object()}))
    journal.append(txn(6))
    journal.close()
    assert [r.seq for r in open_all(path)[2]] == [5, 6]


def test_nothing_is_appended_before_replay_is_done(path: str) -> None:
    journal = Journal.open(path)
    with pytest.raises(JournalError, match="not replayed"):
        journal.append(txn(1))
    assert list(journal.read()) == []
    journal.append(txn(1))
    journal.close()


def test_read_from_a_position_reads_the_written_records_again(path: str) -> None:
    write_journal(path, [txn(1), txn(2)])
    journal = Journal.open(path)
    assert [r.seq for r in journal.read(after=1)] == [2]  # the replay, from a position
    journal.append(txn(3))
    journal.flush(sync=False)
    journal.append(txn(4))  # pending: not in the file yet
    again = journal.read(after=1)
    assert next(again).seq == 2 and journal.where(txn(2)) == f"{path}:3"
    assert [r.seq for r in again] == [3]
    journal.compact(journal.header, snapshot(4))
    assert [(r.seq, r.snapshot) for r in journal.read(after=2)] == [(4, True)]
    assert list(journal.read(after=4)) == []
    journal.close()


def test_close_writes_what_is_pending(path: str) -> None:
    journal, _, _ = open_all(path)
    journal.append(txn(1))
    journal.close()
    journal.close()  # twice is harmless
    assert [r.seq for r in open_all(path)[2]] == [1]


def test_a_journal_is_locked_while_open(path: str) -> None:
    journal, _, _ = open_all(path)
    with pytest.raises(JournalError, match="in use by another process"):
        Journal.open(path)
    with pytest.raises(JournalError, match="in use by another process"):
        repair(path)
    journal.close()
    open_all(path)[0].close()


# ---------------------------------------------------------------------------
# Group commit and durability

def test_group_commit_is_one_write(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, _, _ = open_all(path)
    writes = Calls(monkeypatch, "write")
    for seq in range(1, 51):
        journal.append(txn(seq))
    assert writes.count == 0  # appending makes no system call
    journal.flush(sync=False)
    assert writes.count == 1
    journal.flush(sync=False)  # nothing pending: nothing written
    assert writes.count == 1
    journal.close()
    assert len(open_all(path)[2]) == 50


def test_fsync_only_when_asked(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, _, _ = open_all(path)
    # fdatasync, as ovsdb-server: an append needs its data and the new file
    # size on disk, not the timestamps.
    fsyncs = Calls(monkeypatch, "fdatasync")
    journal.append(txn(1))
    journal.flush(sync=False)
    assert fsyncs.count == 0
    journal.append(txn(2))
    journal.flush(sync=True)
    assert fsyncs.count == 1
    journal.append(txn(3))
    journal.flush(sync=False)
    journal.flush(sync=True)  # syncs the earlier unsynced write
    journal.flush(sync=True)  # already synced
    assert fsyncs.count == 2
    journal.close()


@pytest.mark.parametrize("failing", ["write", "fdatasync"])
def test_failed_write_is_undone(path: str, monkeypatch: pytest.MonkeyPatch,
                                failing: str) -> None:
    journal, _, _ = open_all(path)
    journal.append(txn(1))
    journal.flush(sync=False)
    good = Path(path).read_bytes()
    real_write = os.write

    def half_then_fail(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:len(data) // 2]))  # part of it reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    if failing == "write":
        monkeypatch.setattr(os, "write", half_then_fail)
    else:
        monkeypatch.setattr(os, "fdatasync", fail)
    journal.append(txn(2))
    journal.append(txn(3))
    with pytest.raises(JournalError, match=r"No space left on device|Input/output error"):
        journal.flush(sync=True)
    monkeypatch.undo()
    assert Path(path).read_bytes() == good
    assert (journal.last_seq, journal.size) == (1, len(good))
    journal.append(txn(2))  # the failed records are gone, their seqs free again
    journal.flush(sync=True)
    journal.close()
    assert [r.seq for r in open_all(path)[2]] == [1, 2]


def test_short_writes_are_continued(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, _, _ = open_all(path)
    real_write = os.write
    calls = []

    def ten_bytes_at_most(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:10]))

    monkeypatch.setattr(os, "write", ten_bytes_at_most)
    journal.append(txn(1))
    journal.append(txn(2))
    journal.flush(sync=False)
    monkeypatch.undo()
    journal.close()
    assert len(calls) > 2
    assert [r.seq for r in open_all(path)[2]] == [1, 2]


# ---------------------------------------------------------------------------
# Damage

@pytest.mark.parametrize("tail", [
    b'{"seq":3,"txn":"x","chan',        # cut inside the record
    json.dumps(txn_json(3)).encode(),     # complete but for its newline
    sealed(txn_json(3))[:-1],             # sealed, but for its newline
    b"\0" * 100,                          # a block never written
])
def test_torn_last_line_is_dropped_and_cut_off(path: str, caplog: pytest.LogCaptureFixture,
                                                 tail: bytes) -> None:
    write_journal(path, [txn(1), txn(2)])
    good = Path(path).read_bytes()
    with open(path, "ab") as f:
        f.write(tail)
    with caplog.at_level(logging.WARNING, logger="tegadb.server.journal"):
        journal, _, records = open_all(path)
    assert [r.seq for r in records] == [1, 2]
    assert f"{path}:4 (offset {len(good)}): dropping torn last record ({len(tail)} bytes)" in caplog.text
    assert Path(path).read_bytes() == good
    assert journal.size == len(good)
    journal.append(txn(3))  # lands on a clean line
    journal.close()
    assert [r.seq for r in open_all(path)[2]] == [1, 2, 3]


@pytest.mark.parametrize("bad_line,reason", [
    (seal_text(b'{"seq":2,,"txn":"x"}'), "not valid JSON"),
    (sealed({"txn": "x", "changes": {}}), 'record has no "seq"'),
    (sealed({"seq": 1, "txn": "x", "date": 0, "changes": {}}), '"seq" 1 does not follow 1'),
    (sealed({"seq": 2, "txn": "x", "date": 0}), 'record has no "changes"'),
    (sealed({"seq": 2, "txn": "x", "date": 0, "changes": {}, "who": 1}),
     'record has unknown member "who"'),
    (sealed({"seq": 2, "txn": "x", "date": 0, "snapshot": True, "changes": {}}),
     "snapshot record after the first"),
    (json.dumps(txn_json(2), separators=(",", ":")).encode() + b"\n",
     "line has no checksum, but the lines before it have"),
    (sealed(txn_json(2)).replace(b'"n":2', b'"n":3'),
     r"\d+ bytes have CRC-32 [0-9a-f]{8} but the line says [0-9a-f]{8}"),
])
@pytest.mark.parametrize("last", [True, False])
def test_damage_names_file_line_and_offset(path: str, bad_line: bytes, reason: str,
                                           last: bool) -> None:
    # Only a last line cut short is taken for a torn write: a complete line
    # is damaged, even the last one (a compacted file's only record).
    write_journal(path, [txn(1)])
    offset = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(bad_line if last else bad_line + sealed(txn_json(3)))
    before = Path(path).read_bytes()
    journal = Journal.open(path)
    with pytest.raises(JournalError, match=f"^{path}:3 \\(offset {offset}\\): {reason}") as info:
        list(journal.read())
    journal.close()
    assert Path(path).read_bytes() == before  # nothing cut or appended
    assert check(path).problems == [str(info.value)]


def test_a_flipped_byte_in_the_middle_stops_the_start(path: str) -> None:
    # A real database file: a value flipped in place keeps the line valid
    # JSON, with a valid record; only the checksum can tell.
    write_journal(path, [txn(1), txn(2), txn(3)])
    line3 = sum(map(len, lines(path)[:2]))
    value = Path(path).read_bytes().index(b'"n":2', line3) + 4
    flip(path, value, b"9")
    with pytest.raises(JournalError, match=f"^{path}:3 \\(offset {line3}\\): .* CRC-32"):
        DatabaseService.open(Path(path))
    [problem] = check(path).problems
    assert problem.startswith(f"{path}:3 (offset {line3}): ")
    damaged = Path(path).read_bytes()
    cut = repair(path)
    assert cut is not None and (cut.line, cut.offset, cut.removed) == (3, line3, len(damaged) - line3)
    assert Path(cut.backup).read_bytes() == damaged
    assert [r.seq for r in open_all(path)[2]] == [1]  # the prefix before the damage
    assert check(path).problems == []


def test_a_flipped_byte_in_a_compacted_files_snapshot_stops_the_start(path: str) -> None:
    # The snapshot is the file's last line: dropping it as torn would start
    # an empty database.
    write_journal(path, [txn(1)])
    journal, _, _ = open_all(path)
    journal.compact(Header(SCHEMA), snapshot(1, rows=3))
    journal.close()
    start = len(lines(path)[0])
    flip(path, Path(path).read_bytes().index(b'"n":1', start) + 4, b"2")
    with pytest.raises(JournalError, match=f"^{path}:2 \\(offset {start}\\): .* CRC-32"):
        open_all(path)
    assert os.path.getsize(path) == start + len(lines(path)[1])  # nothing cut


@pytest.mark.parametrize("content,reason", [
    (b"", "line does not end with a newline"),
    (b"OVSDB JSON 12 abc\n", "not valid JSON"),
    (b'{"format":"other","version":1,"schema":{}}\n', "not a tegadb-journal file"),
    (b'{"format":"tegadb-journal","version":2,"schema":{}}\n', "unsupported tegadb-journal version 2"),
    (b'{"format":"tegadb-journal","version":1}\n', 'header has no "schema" object'),
    (sealed({"format": "tegadb-journal", "version": 1, "schema": {}}).replace(b"1", b"2", 1),
     "[0-9]+ bytes have CRC-32"),
])
def test_bad_header_is_fatal(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "bad.db"
    p.write_bytes(content)
    with pytest.raises(JournalError, match=f"^{p}:1 \\(offset 0\\): {reason}"):
        Journal.open(str(p))
    assert re.match(f"{p}:1 \\(offset 0\\): {reason}", check(str(p)).problems[0])
    with pytest.raises(JournalError, match=f"^{p}:1 \\(offset 0\\): {reason}"):
        repair(str(p))


def test_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    with pytest.raises(JournalError, match="No such file"):
        Journal.open(missing)
    assert check(missing).problems == [f"{missing}: No such file or directory"]


def test_check_and_repair(path: str) -> None:
    write_journal(path, [txn(1), txn(2)])
    assert check(path) == ([], 0)
    assert repair(path) is None and not os.path.exists(path + ".bak")
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"tx')
    torn = Path(path).read_bytes()
    [problem] = check(path).problems
    assert problem.startswith(f"{path}:4 (offset {size}): torn last record (12 bytes, repair removes it)")
    assert repair(path) == (4, size, 12, path + ".bak")
    assert os.path.getsize(path) == size and check(path) == ([], 0)
    assert Path(path + ".bak").read_bytes() == torn
    with open(path, "ab") as f:
        f.write(b"again")
    assert repair(path) == (4, size, 5, path + ".bak.2")  # the first backup is kept
    assert Path(path + ".bak").read_bytes() == torn


def test_repair_cuts_at_the_first_damaged_line(path: str) -> None:
    write_journal(path, [txn(1)])
    size = os.path.getsize(path)
    tail = b"garbage\n" + sealed(txn_json(2)) + b"more garbage\n"
    with open(path, "ab") as f:
        f.write(tail)
    assert [p.split(" ")[0] for p in check(path).problems] == [f"{path}:3", f"{path}:5"]
    assert repair(path) == (3, size, len(tail), path + ".bak")
    assert os.path.getsize(path) == size
    assert [r.seq for r in open_all(path)[2]] == [1]


# ---------------------------------------------------------------------------
# Compaction

def test_compaction_replaces_the_file_atomically(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(path, [txn(1), txn(2)])
    journal, header, _ = open_all(path)
    journal.append(txn(3))  # pending: written to the old file first
    old_inode = os.stat(path).st_ino
    renames: list[tuple[Any, ...]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        renames.append((src, dst, Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    journal.compact(header, snapshot(3))
    new_content = jmod._line(header.to_json()) + jmod._line(snapshot(3).to_json())
    assert renames == [(path + ".tmp", path, new_content)]  # complete before the rename
    assert not os.path.exists(path + ".tmp")
    assert os.stat(path).st_ino != old_inode
    assert Path(path).read_bytes() == new_content
    assert (journal.size, journal.records_since_compaction, journal.last_seq) == (len(new_content), 0, 3)
    journal.append(txn(4))  # lands in the new file
    journal.close()
    assert open_all(path)[2] == [snapshot(3), txn(4)]


def test_compaction_keeps_the_new_file_locked(path: str) -> None:
    journal, header, _ = open_all(path)
    journal.compact(header, snapshot(0))
    with pytest.raises(JournalError, match="in use"):
        Journal.open(path)
    journal.close()


def test_failed_compaction_keeps_the_old_file(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(path, [txn(1)])
    journal, header, _ = open_all(path)
    before = Path(path).read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(JournalError, match="Invalid cross-device link"):
        journal.compact(header, snapshot(1))
    monkeypatch.undo()
    assert Path(path).read_bytes() == before
    assert not os.path.exists(path + ".tmp")
    journal.append(txn(2))  # still appends to the old file
    journal.close()
    assert [r.seq for r in open_all(path)[2]] == [1, 2]


@pytest.mark.parametrize("record", [txn(5), snapshot(0)])
def test_compaction_needs_a_current_snapshot(path: str, record: Record) -> None:
    write_journal(path, [txn(1)])
    journal, header, _ = open_all(path)
    with pytest.raises(JournalError, match="not a snapshot of the current state"):
        journal.compact(header, record)
    journal.close()


def grow(journal: Journal, records: int, start: int = 1) -> None:
    for seq in range(start, start + records):
        journal.append(txn(seq))
    journal.flush(sync=False)


def test_should_compact(path: str) -> None:
    journal, header, _ = open_all(path)
    base = journal.size
    rule: dict[str, Any] = {"min_size": 1000, "min_records": 10}
    assert not journal.should_compact(**rule)
    assert not journal.should_compact(overdue=True, **rule)  # nothing to compact
    grow(journal, 9)
    assert journal.size > max(2 * base, 1000)
    assert not journal.should_compact(**rule)  # too few records
    assert journal.should_compact(overdue=True, **rule)
    grow(journal, 1, start=10)
    assert journal.should_compact(**rule)
    assert not journal.should_compact(min_size=journal.size, min_records=10)  # floor
    journal.compact(header, snapshot(10, rows=50))
    compacted = journal.size
    assert not journal.should_compact(**rule)
    grow(journal, 10, start=11)  # enough records, but not twice the compacted size
    assert max(1000, compacted) < journal.size < 2 * compacted
    assert not journal.should_compact(**rule)
    grow(journal, 20, start=21)
    assert journal.should_compact(**rule)
    journal.close()


def test_records_read_at_load_count_toward_compaction(path: str) -> None:
    write_journal(path, [txn(seq) for seq in range(1, 6)])
    journal, _, _ = open_all(path)
    assert journal.records_since_compaction == 5
    grow(journal, 2, start=6)
    assert journal.records_since_compaction == 7
    journal.close()


def test_abandoned_replay_leaves_the_journal_unwritable(path: str) -> None:
    write_journal(path, [txn(1), txn(2)])
    journal = Journal.open(path)
    records: Iterator[Record] = journal.read()
    next(records)
    with pytest.raises(JournalError, match="not replayed"):
        journal.flush(sync=False)
    journal.close()


def test_read_only_journal_reads_a_locked_file_without_changing_it(path: str) -> None:
    write_journal(path, [txn(1), txn(2)])
    writer, _, _ = open_all(path)  # holds the lock
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"tx')  # as if a record were being written right now
    before = Path(path).read_bytes()
    reader = Journal.open(path, read_only=True)
    assert (reader.header.schema, [r.seq for r in reader.read()]) == (SCHEMA, [1, 2])
    assert Path(path).read_bytes() == before
    for action in (lambda: reader.append(txn(4)), lambda: reader.flush(sync=True),
                   lambda: reader.compact(reader.header, snapshot(2))):
        with pytest.raises(JournalError, match="opened read-only"):
            action()
    reader.close()
    writer.close()


def test_read_only_journal_reads_the_file_as_it_was_when_opened(path: str) -> None:
    write_journal(path, [txn(1), txn(2)])
    writer, _, _ = open_all(path)
    reader = Journal.open(path, read_only=True)
    writer.append(txn(3))
    writer.flush(sync=False)  # written after the reader opened the file
    assert [r.seq for r in reader.read()] == [1, 2]
    assert [r.seq for r in reader.read(after=1)] == [2, 3]  # a later read sees it
    assert reader.where(txn(3)) == f"{path}:4"
    reader.close()
    writer.close()


# ---------------------------------------------------------------------------
# Files written before the records codec existed

DATA = Path(__file__).parent.parent / "data"


@pytest.mark.parametrize("sample", ["sample.db", "sample-compacted.db"])
def test_files_written_before_checksums_are_read_and_written_sealed(
        tmp_path: Path, sample: str) -> None:
    # Written by the server before records.py and checksums existed (commits
    # with comments and writers, a durable one, weak references, deletions; a
    # compacted file with its snapshot): the codec keeps each line's JSON
    # exactly, and the journal now adds its seal.
    original = (DATA / sample).read_bytes()
    reader = Journal.open(str(DATA / sample), read_only=True)
    records = list(reader.read())
    reader.close()
    assert len(records) >= 2 and records[0].snapshot == (sample == "sample-compacted.db")
    copy = str(tmp_path / sample)
    create(copy, reader.header)
    write_journal(copy, records)
    assert lines(copy) == [seal_text(line[:-1]) for line in original.splitlines(keepends=True)]


def test_a_file_written_before_checksums_opens_with_its_contents(tmp_path: Path) -> None:
    copy = tmp_path / "sample.db"
    copy.write_bytes((DATA / "sample.db").read_bytes())
    service = DatabaseService.open(copy)
    rows = service.database.tables["Root"].rows
    assert [(r["name"], r["count"], r["weak"]) for r in rows.values()] == [(("alpha",), (8,), ())]
    assert (service.seq, len(service.database.tables["Child"].rows)) == (7, 1)
    service.close()


def empty_txn(seq: int) -> Record:
    return Record(seq, f"00000000-0000-0000-0000-{seq:012d}", 1800000000000, {})


def test_a_file_written_before_checksums_upgrades_in_place(tmp_path: Path) -> None:
    original = (DATA / "sample.db").read_bytes()
    copy = str(tmp_path / "sample.db")
    Path(copy).write_bytes(original)
    assert check(copy) == ([], 7)
    journal, _, records = open_all(copy)
    journal.append(empty_txn(8))
    journal.close()
    # The old lines stay as they were, the new one is sealed ...
    assert Path(copy).read_bytes() == original + sealed(empty_txn(8).to_json())
    journal, _, reread = open_all(copy)
    journal.close()
    assert [r.seq for r in reread] == [*(r.seq for r in records), 8]
    assert check(copy) == ([], 7)
    # ... and from the first sealed line on, an unsealed one is damage.
    end = os.path.getsize(copy)
    with open(copy, "ab") as f:
        f.write(json.dumps(empty_txn(9).to_json(), separators=(",", ":")).encode() + b"\n"
                + sealed(empty_txn(10).to_json()))
    assert check(copy).problems == [f"{copy}:10 (offset {end}): line has no checksum,"
                                    " but the lines before it have"]
    size = os.path.getsize(copy)
    assert repair(copy) == (10, end, size - end, copy + ".bak")
    # Compaction writes the whole file sealed.
    service = DatabaseService.open(Path(copy))
    service.compact()
    service.close()
    assert check(copy) == ([], 0)
    assert all(line.endswith(b'"}\n') and b',"crc32":"' in line for line in lines(copy))


@pytest.mark.parametrize("umask", [0o000, 0o077])
@pytest.mark.parametrize("mode", [None, 0o600, 0o664])
def test_new_files_get_their_mode_whatever_the_umask(tmp_path: Path, umask: int,
                                                     mode: int | None) -> None:
    """create() gives 0640 or the mode asked for, compaction keeps the file's
    mode (an operator's chmod too), under a permissive and a strict umask."""
    p = str(tmp_path / "modes.db")
    old = os.umask(umask)
    try:
        if mode is None:
            create(p, Header(SCHEMA))
            mode = 0o640
        else:
            create(p, Header(SCHEMA), mode)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode
        journal, header, _ = open_all(p)
        journal.append(txn(1))
        journal.compact(header, snapshot(1))
        assert stat.S_IMODE(os.stat(p).st_mode) == mode
        os.chmod(p, 0o400)
        journal.append(txn(2))
        journal.compact(header, snapshot(2))
        journal.close()
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o400
    finally:
        os.umask(old)


def test_file_mode_option_values() -> None:
    assert jmod.file_mode("0640") == jmod.file_mode("640") == 0o640
    for bad in ("999", "1777", "rw"):
        with pytest.raises(ValueError):
            jmod.file_mode(bad)


# --- compaction in the background -------------------------------------------------

def chunked(record: Record, size: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """A snapshot's rows as Journal.begin_compaction reads them."""
    for table, rows in record.changes.items():
        items = list(rows.items())
        for start in range(0, len(items), size):
            yield table, dict(items[start:start + size])


def without_rows(record: Record) -> Record:
    return Record(record.seq, record.txn, record.date, {}, snapshot=True)


@pytest.mark.parametrize(("rows", "chunk"), [(0, 1), (1, 1), (7, 3), (5000, 256)])
def test_a_background_compaction_writes_what_compact_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, chunk: int) -> None:
    # Small writes: the snapshot goes out (and is sealed) in many pieces.
    monkeypatch.setattr(jmod, "SNAPSHOT_WRITE", 100)
    files = []
    for how in ("at once", "in the background"):
        p = str(tmp_path / f"{how}.db")
        create(p, Header(SCHEMA))
        journal, _, _ = open_all(p)
        grow(journal, 3)
        record = snapshot(3, rows) if rows else Record(3, "t", 1, {}, snapshot=True)
        if how == "at once":
            journal.compact(Header(SCHEMA), record)
        else:
            compaction = journal.begin_compaction(Header(SCHEMA), without_rows(record),
                                                  chunked(record, chunk))
            compaction.write()
            assert compaction.finish()
        files.append(Path(p).read_bytes())
        assert (journal.size, journal.records_since_compaction) == (len(files[-1]), 0)
        journal.close()
    assert files[0] == files[1]
    assert check(str(tmp_path / "in the background.db")).problems == []


@pytest.mark.parametrize("tail", [10, 2000])
def test_records_appended_during_a_compaction_follow_its_snapshot(path: str, tail: int) -> None:
    """Few are copied at the switch, many mostly by the worker; either way
    the new file holds every one of them, and appending goes on into it."""
    journal, _, _ = open_all(path)
    grow(journal, 5)
    compaction = journal.begin_compaction(Header(SCHEMA), without_rows(snapshot(5)),
                                          chunked(snapshot(5), 1))
    grow(journal, tail, start=6)  # written while the worker runs
    compaction.write()
    grow(journal, 2, start=6 + tail)  # after the worker, before the switch
    assert compaction.finish()
    assert journal.records_since_compaction == tail + 2
    grow(journal, 1, start=8 + tail)
    journal.close()
    assert not os.path.exists(path + ".tmp")
    records = open_all(path)[2]
    assert records[0].snapshot and [r.seq for r in records] == list(range(5, 9 + tail))


def test_a_failed_background_compaction_keeps_the_old_file(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, _, _ = open_all(path)
    grow(journal, 5)
    good = Path(path).read_bytes()
    compaction = journal.begin_compaction(Header(SCHEMA), without_rows(snapshot(5)),
                                          chunked(snapshot(5, 100), 10))
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(JournalError, match=r"test\.db\.tmp: No space left on device"):
        compaction.write()
    compaction.discard()
    monkeypatch.undo()
    assert not os.path.exists(path + ".tmp") and Path(path).read_bytes() == good
    grow(journal, 1, start=6)  # the old file goes on
    journal.close()
    assert [r.seq for r in open_all(path)[2]] == [1, 2, 3, 4, 5, 6]


def test_a_compaction_at_once_cancels_one_in_the_background(path: str) -> None:
    journal, _, _ = open_all(path)
    grow(journal, 5)
    compaction = journal.begin_compaction(Header(SCHEMA), without_rows(snapshot(5)),
                                          chunked(snapshot(5), 1))
    journal.compact(Header(SCHEMA), snapshot(5))  # a conversion, say
    compacted = Path(path).read_bytes()
    compaction.write()
    assert not compaction.finish()
    assert Path(path).read_bytes() == compacted and not os.path.exists(path + ".tmp")
    journal.close()


def test_a_background_compaction_needs_everything_written(path: str) -> None:
    journal, _, _ = open_all(path)
    grow(journal, 5)
    journal.append(txn(6))
    with pytest.raises(JournalError, match="not a snapshot of the current state"):
        journal.begin_compaction(Header(SCHEMA), without_rows(snapshot(6)), iter([]))
    journal.close()

"""tegadb-tool: offline create, show-log, check, repair, compact."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from peers import REPO_ROOT, TEST_SCHEMA, start_tegadb_server

from tegadb.server.records import seal

SAMPLE_DB = REPO_ROOT / "tests" / "data" / "sample.db"


def tool(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_tool", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO_ROOT, timeout=60)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_create_refuses_existing_file_and_bad_schema(tmp_path):
    db = tmp_path / "t.db"
    assert tool("create", db, TEST_SCHEMA).returncode == 0
    header = lines(db)[0]
    assert header["format"] == "tegadb-journal" and header["schema"]["name"] == "Test"
    again = tool("create", db, TEST_SCHEMA)
    assert again.returncode == 1 and "exists" in again.stderr
    bad = tmp_path / "bad.ovsschema"
    bad.write_text('{"name": "B", "tables": {"T": {"columns": {}}}}')
    failed = tool("create", tmp_path / "b.db", bad)
    assert failed.returncode == 1 and "table must have at least one column" in failed.stderr
    assert not (tmp_path / "b.db").exists()


def test_journal_records_who_what_when_and_compaction_keeps_data(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    db = server.directory / "Test.db"
    with server.client() as c:
        for i in range(5):
            c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": f"r{i}"}},
                       {"op": "comment", "comment": f"step {i}"})
        c.transact("Test", {"op": "delete", "table": "Root", "where": [["name", "==", "r0"]]})
        before = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                     "columns": ["_uuid", "name", "_version"]})
    server.stop()
    records = lines(db)[1:]
    assert [r["seq"] for r in records] == list(range(1, 7))
    assert records[0]["comment"] == "step 0" and records[0]["writer"].startswith("unix:")
    assert list(records[-1]["changes"]["Root"].values()) == [None]
    shown = tool("show-log", db)
    assert shown.returncode == 0 and "comment=\"step 3\"" in shown.stdout

    assert tool("compact", db).returncode == 0
    compacted = lines(db)
    assert len(compacted) == 2 and compacted[1]["snapshot"] is True
    assert tool("check", db).returncode == 0
    server.start()
    with server.client() as c:
        after = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                    "columns": ["_uuid", "name", "_version"]})
    server.stop()
    assert sorted(after[0]["rows"], key=repr) == sorted(before[0]["rows"], key=repr)


def test_torn_last_line_is_dropped_and_damage_is_reported(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    db = server.directory / "Test.db"
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "kept"}})
    server.stop()
    good = db.read_bytes()
    db.write_bytes(good + b'{"seq":2,"txn":"x","changes":{"Ro')   # crash mid-write
    server.start()
    with server.client() as c:
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name"]})
        assert rows == [{"rows": [{"name": "kept"}]}]
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "after"}})
    server.stop()
    assert "dropping torn last record" in server.log_path.read_text()
    assert db.read_bytes().startswith(good)
    assert len(lines(db)) == 3
    assert tool("check", db).returncode == 0

    # Damage before the last line is reported with its line; repair cuts
    # there and keeps the good records before it.
    server.start()
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "last"}})
    server.stop()
    text = db.read_text().splitlines()
    text[2] = text[2][:20]
    db.write_text("\n".join(text) + "\n")
    where = f"{db}:3 (offset {len(text[0]) + len(text[1]) + 2}): not valid JSON"
    checked = tool("check", db)
    assert checked.returncode == 1 and where in checked.stdout
    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert where in str(refused.value)
    repaired = tool("repair", db)
    assert repaired.returncode == 0 and f"saved in {db}.bak" in repaired.stdout
    assert tool("check", db).returncode == 0
    assert db.read_text().splitlines() == text[:2]
    server.start()
    with server.client() as c:
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name"]})
    server.stop()
    assert rows == [{"rows": [{"name": "kept"}]}]


def test_show_log_and_db_name_read_records_through_the_codec(tmp_path):
    db = tmp_path / "t.db"
    assert tool("create", db, TEST_SCHEMA).returncode == 0
    named = tool("db-name", db)
    assert (named.returncode, named.stdout) == (0, "Test\n")
    record = {"seq": 1, "txn": "6f1c1f4e-59a5-4c8c-9a55-0a1b2c3d4e5f", "date": 5,
              "comment": "hi", "writer": "unix:x", "changes": {"Root": {}}}
    with db.open("ab") as f:
        f.write(seal(json.dumps(record).encode()))
    shown = tool("show-log", db)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[1] == (
        '#1 txn 6f1c1f4e-59a5-4c8c-9a55-0a1b2c3d4e5f  date=5  writer=unix:x  comment="hi"'
        "  Root: 0 row(s) written, 0 deleted")
    # A record with a badly typed member, before the last line: named by
    # check, with its line; repair cuts it off.
    offset = db.stat().st_size
    with db.open("ab") as f:
        f.write(seal(json.dumps({**record, "seq": 2, "date": "today"}).encode()))
        f.write(seal(json.dumps({**record, "seq": 3}).encode()))
    checked = tool("check", db)
    assert checked.returncode == 1
    assert f"{db}:3 (offset {offset}): record \"date\" is not an integer: 'today'" in checked.stdout
    assert tool("repair", db).returncode == 0
    assert [r["seq"] for r in lines(db)[1:]] == [1]


def names(server):
    with server.client() as c:
        result = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                     "columns": ["name"]})
    return sorted(row["name"] for row in result[0]["rows"])


def test_a_flipped_byte_is_never_served(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    db = server.directory / "Test.db"
    with server.client() as c:
        for name in ("alpha", "bravo", "charlie", "delta"):
            c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": name}})
    server.stop()
    data = db.read_bytes()
    # "bravo" -> "brbvo": the line stays valid JSON and a valid record.
    at = data.index(b'"bravo"') + 3
    line_start = data.rindex(b"\n", 0, at) + 1
    line = data[:line_start].count(b"\n") + 1
    db.write_bytes(data[:at] + b"b" + data[at + 1:])
    where = f"{db}:{line} (offset {line_start}): "

    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert where in str(refused.value) and "CRC-32" in str(refused.value)
    checked = tool("check", db)
    assert checked.returncode == 1 and checked.stdout.startswith(where)

    damaged = db.read_bytes()
    repaired = tool("repair", db)
    assert repaired.returncode == 0, repaired.stderr
    assert f"from line {line} (offset {line_start}) on" in repaired.stdout
    assert (server.directory / "Test.db.bak").read_bytes() == damaged
    assert db.read_bytes() == data[:line_start]
    assert tool("check", db).returncode == 0
    server.start()
    assert names(server) == ["alpha"]  # the prefix, without the damaged record
    server.stop()


def test_a_file_written_before_checksums_is_served_and_upgraded(tmp_path):
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    server.stop()
    db = server.directory / "Test.db"
    db.write_bytes(SAMPLE_DB.read_bytes())
    checked = tool("check", db)
    assert checked.returncode == 0 and "7 record(s) written before checksums" in checked.stdout
    server.start()
    assert names(server) == ["alpha"]
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "new"}})
    server.stop()
    assert db.read_bytes().startswith(SAMPLE_DB.read_bytes())
    assert db.read_bytes().endswith(b'"}\n') and tool("check", db).returncode == 0
    assert tool("compact", db).returncode == 0
    checked = tool("check", db)
    assert checked.returncode == 0 and "before checksums" not in checked.stdout
    server.start()
    assert names(server) == ["alpha", "new"]
    server.stop()

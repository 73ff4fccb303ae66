"""tegadb-tool's query, transact, versions and checksums, needs-conversion,
convert and show-log -m, against ovsdb-tool on files made from the same schemas.

Each test makes a tegadb file and an ovsdb-server file (``ovsdb-tool create``)
and runs the same command on both; outputs must be the same, once UUIDs
(new at each insert) are set aside.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from peers import REPO_ROOT, TEST_SCHEMA, missing_ovs_binaries, start_tegadb_server
from test_cli_verbs import on_a_terminal

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TOOL = [sys.executable, "-m", "tegadb.cli.tegadb_tool"]

TRANSACTIONS = [
    ["Test", {"op": "insert", "table": "Child", "uuid-name": "c", "row": {"value": "v"}},
     {"op": "insert", "table": "Root", "row": {
         "name": "a", "count": 3, "tags": ["set", ["x", "y"]], "props": ["map", [["k", "v"]]],
         "children": ["named-uuid", "c"], "serial": 1}},
     {"op": "insert", "table": "Weak", "row": {"name": "w"}}],
    ["Test", {"op": "update", "table": "Root", "where": [["name", "==", "a"]],
              "row": {"count": 5, "flag": True}},
     {"op": "comment", "comment": "five"}],
    ["Test", {"op": "update", "table": "Root", "where": [], "row": {"count": 101}}],
    ["Test", {"op": "select", "table": "Nope", "where": []}],
    ["Test", {"op": "delete", "table": "Weak", "where": []}],
]
QUERIES = [
    ["Test", {"op": "select", "table": "Root", "where": [],
              "columns": ["name", "count", "flag", "tags", "props", "serial"]},
     {"op": "select", "table": "Child", "where": [], "columns": ["value", "number"]},
     {"op": "select", "table": "Weak", "where": []}],
    ["Test", {"op": "select", "table": "Root", "where": [["count", ">", 4]],
              "columns": ["name"]}],
]


def tool(*args: Any, cwd: Path | None = None) -> tuple[int, str, str]:
    """tegadb-tool's status, stdout and stderr (its name replaced by PROG)."""
    proc = subprocess.run([*TOOL, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO_ROOT, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr.replace("tegadb-tool:", "PROG:")


def ovsdb_tool(*args: Any) -> tuple[int, str, str]:
    proc = subprocess.run(["ovsdb-tool", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr.replace("ovsdb-tool:", "PROG:")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """(a tegadb file, an ovsdb-server file), both new, of the test schema."""
    if missing_ovs_binaries():
        pytest.skip("ovsdb-tool not installed (run `make peers`)")
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    assert tool("create", ours, TEST_SCHEMA)[0] == 0
    assert ovsdb_tool("create", theirs, TEST_SCHEMA)[0] == 0
    return ours, theirs


def both(command: str, ours: Path, theirs: Path, *args: Any) -> tuple[int, str, str]:
    """The command on each file: the same output, UUIDs aside."""
    mine, other = tool(command, ours, *args), ovsdb_tool(command, theirs, *args)
    assert (mine[0], UUID.sub("U", mine[1]), mine[2]) == \
        (other[0], UUID.sub("U", other[1]), other[2]), command
    return mine


def test_versions_and_checksums_match_ovsdb_tool(tmp_path: Path) -> None:
    if missing_ovs_binaries():
        pytest.skip("ovsdb-tool not installed (run `make peers`)")
    for schema in (TEST_SCHEMA, VSWITCH_SCHEMA):  # the second one has a checksum
        ours, theirs = tmp_path / f"ours-{schema.stem}.db", tmp_path / f"theirs-{schema.stem}.db"
        assert tool("create", ours, schema)[0] == ovsdb_tool("create", theirs, schema)[0] == 0
        for command in ("db-name", "db-version", "db-cksum"):
            assert tool(command, ours) == ovsdb_tool(command, theirs)
        for command in ("schema-name", "schema-version", "schema-cksum"):
            assert tool(command, schema) == ovsdb_tool(command, schema)
    assert tool("db-cksum", tmp_path / "ours-vswitch.db")[1] == \
        json.loads(VSWITCH_SCHEMA.read_text())["cksum"] + "\n"
    missing = tmp_path / "missing.ovsschema"
    assert tool("schema-version", missing) == ovsdb_tool("schema-version", missing)


def test_needs_conversion_matches_ovsdb_tool(files: tuple[Path, Path], tmp_path: Path) -> None:
    newer = tmp_path / "newer.ovsschema"
    newer.write_text(json.dumps(json.loads(TEST_SCHEMA.read_text()) | {"version": "1.3.0"}))
    assert both("needs-conversion", *files, TEST_SCHEMA) == (0, "no\n", "")
    assert both("needs-conversion", *files, newer) == (0, "yes\n", "")


def test_transact_and_query_match_ovsdb_tool(files: tuple[Path, Path]) -> None:
    ours, _ = files
    for transaction in TRANSACTIONS:
        status, out, _ = both("transact", *files, json.dumps(transaction))
        assert status == 0 and out.endswith("\n")
    for query in QUERIES:
        assert both("query", *files, json.dumps(query))[0] == 0
    # query runs writes but keeps nothing (ovsdb-tool 3.1 reports an I/O error then).
    before = ours.read_bytes()
    write = ["Test", {"op": "delete", "table": "Root", "where": []}]
    assert tool("query", ours, json.dumps(write)) == (0, '[{"count":1}]\n', "")
    assert ours.read_bytes() == before
    # Every transaction that changed something is a journal record, its writer tegadb-tool.
    log = tool("show-log", ours)[1].splitlines()
    assert len(log) == 1 + 3 and all("writer=tegadb-tool" in line for line in log[1:])
    assert tool("check", ours) == (0, f"{ours}: ok\n", "")


def test_transactions_reach_the_server(files: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _ = files
    for transaction in TRANSACTIONS[:2]:
        assert tool("transact", ours, json.dumps(transaction))[0] == 0
    server = start_tegadb_server(tmp_path / "server", [TEST_SCHEMA])
    server.stop()
    (server.directory / "Test.db").write_bytes(ours.read_bytes())
    server.start()
    try:
        with server.client() as client:
            rows = client.transact("Test", {"op": "select", "table": "Root", "where": [],
                                            "columns": ["name", "count", "flag"]})
        assert rows == [{"rows": [{"name": "a", "count": 5, "flag": True}]}]
    finally:
        server.stop()


def test_a_file_a_server_holds_is_refused(tmp_path: Path) -> None:
    server = start_tegadb_server(tmp_path / "server", [TEST_SCHEMA])
    db = server.directory / "Test.db"
    try:
        before = db.read_bytes()
        for args, instead in (
                (["query", db, '["Test"]'], "query"), (["transact", db, '["Test"]'], "transact"),
                (["compact", db], "appctl ovsdb-server/compact"),
                (["convert", db, TEST_SCHEMA], "convert")):
            assert tool(*args) == (1, "", f"PROG: {db}: in use by a server (or another"
                                   f" tegadb-tool); stop it first, or run `tegadb-client"
                                   f" {instead}` against the server\n")
        assert db.read_bytes() == before
        # What reads only the header still works.
        assert tool("db-version", db) == (0, "1.2.3\n", "")
    finally:
        server.stop()
    assert tool("query", db, '["Test"]') == (0, "[]\n", "")


def test_transaction_errors(files: tuple[Path, Path]) -> None:
    ours, _ = files
    assert tool("transact", ours, '["Other"]') == (
        1, "", f'PROG: {ours} holds database "Test", not "Other"\n')
    assert tool("transact", ours, '{"a": 1}') == (
        1, "", 'PROG: "{"a": 1}": not a valid OVSDB transaction (a JSON array, the database'
        " name first)\n")
    wait = ["Test", {"op": "wait", "table": "Root", "where": [], "columns": ["name"],
                     "until": "==", "rows": [{"name": "x"}]}]
    assert tool("query", ours, json.dumps(wait)) == (
        1, "", "PROG: the transaction waits for a change, which cannot happen in a file no"
        " server holds: give its wait ops a timeout\n")
    wait[1]["timeout"] = 0
    assert both("query", *files, json.dumps(wait))[0] == 0


def test_convert_matches_ovsdb_tool(files: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = files
    for transaction in TRANSACTIONS[:2]:
        both("transact", ours, theirs, json.dumps(transaction))
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "2.0.0"
    del schema["tables"]["Root"]["columns"]["note"]
    schema["tables"]["Root"]["columns"]["added"] = {"type": {"key": "integer", "min": 0,
                                                             "max": 1}}
    newer = tmp_path / "newer.ovsschema"
    newer.write_text(json.dumps(schema))
    select = json.dumps(["Test", {"op": "select", "table": "Root", "where": [],
                                  "columns": ["_uuid", "name", "count"]}])
    uuids = UUID.findall(tool("query", ours, select)[1])
    # Into a new file: the original stays as it was.
    target = tmp_path / "converted.db"
    original = ours.read_bytes()
    assert tool("convert", ours, newer, target) == (0, "", "")
    assert ours.read_bytes() == original
    assert tool("convert", ours, newer, target) == (1, "", f"PROG: {target}: file already exists\n")
    assert tool("db-version", target) == (0, "2.0.0\n", "")
    assert UUID.findall(tool("query", target, select)[1]) == uuids
    # In place, as ovsdb-tool does it.
    assert both("convert", ours, theirs, newer) == (0, "", "")
    assert both("db-version", ours, theirs) == (0, "2.0.0\n", "")
    assert both("query", ours, theirs, select)[0] == 0
    assert UUID.findall(tool("query", ours, select)[1]) == uuids
    added = json.dumps(["Test", {"op": "select", "table": "Root", "where": [],
                                 "columns": ["added"]}])
    assert both("query", ours, theirs, added) == (0, '[{"rows":[{"added":["set",[]]}]}]\n', "")
    assert tool("check", ours)[0] == 0


def _row_lines(log: str) -> list[str]:
    """show-log -m's row lines, UUIDs and OVS's " diff" mark set aside, sorted per record."""
    records, current = [], []
    for line in log.splitlines():
        if line.startswith("  "):
            line = UUID.sub("U", line.removesuffix(":").removesuffix(" diff"))
            current.append(re.sub(r"\b[0-9a-f]{8}\b", "U", line))
        elif current:
            records.append(sorted(current))
            current = []
    records.append(sorted(current))
    return [line for record in records for line in record]


def test_show_log_rows_match_ovsdb_tool(files: tuple[Path, Path]) -> None:
    ours, theirs = files
    for transaction in TRANSACTIONS:
        both("transact", ours, theirs, json.dumps(transaction))
    mine, other = tool("show-log", "-m", ours), ovsdb_tool("show-log", "-m", theirs)
    assert mine[0] == other[0] == 0
    assert _row_lines(mine[1]) == _row_lines(other[1])
    assert '  table Root insert row "a" (' in mine[1] and "    delete row" in mine[1]
    # -mm: the values too.  (ovsdb-tool shows a set's or map's change as a diff,
    # tegadb-tool the new value, so this history changes only scalars.)
    mine, other = tool("show-log", "-mm", ours), ovsdb_tool("show-log", "-mm", theirs)
    assert _row_lines(mine[1]) == _row_lines(other[1])
    assert "    count=5" in mine[1] and "    tags=[x, y]" in mine[1]


def test_help_and_bad_usage() -> None:
    status, out, _ = tool("--help")
    for command in ("create", "query", "transact", "show-log", "check", "repair", "compact",
                    "convert", "needs-conversion", "db-name", "db-version", "db-cksum",
                    "schema-name", "schema-version", "schema-cksum"):
        assert re.search(rf"^    {command}\s", out, re.MULTILINE), command
    assert status == 0 and "Exit status" in out
    assert tool("frob") == (1, "", "PROG: unknown command 'frob'; use --help for help\n")
    assert tool("frob") == ovsdb_tool("frob")
    status, out, err = tool("query")
    assert (status, out) == (1, "") and len(err.splitlines()) == 1


def test_reader_gone(files: tuple[Path, Path]) -> None:
    """`show-log -mm | head -1`: one line of complaint and status 1, no traceback."""
    ours, _ = files
    many = ["Test", *({"op": "insert", "table": "Weak", "row": {"name": f"w{i}"}}
                      for i in range(1500))]
    for _ in range(2):  # output well beyond what a pipe holds
        assert tool("transact", ours, json.dumps(many))[0] == 0
    shell = subprocess.run(["bash", "-c", f"{' '.join(TOOL)} show-log -mm {ours} | head -1;"
                            " echo ${PIPESTATUS[0]}"], capture_output=True, text=True,
                           cwd=REPO_ROOT, timeout=60, check=False)
    assert shell.stdout.splitlines()[1] == "1"
    assert shell.stderr == "tegadb-tool: write to stdout failed\n"


def test_compact_shows_progress_only_on_a_terminal(files: tuple[Path, Path]) -> None:
    ours, _ = files
    assert tool("transact", ours, json.dumps(TRANSACTIONS[0]))[0] == 0
    status, drawn = on_a_terminal([*TOOL, "compact", str(ours)])
    assert status == 0 and b"compact /" in drawn  # (a long path may be cut to fit)
    assert on_a_terminal([*TOOL, "compact", "--quiet", str(ours)]) == (0, b"")
    assert tool("compact", ours) == (0, "", "")  # not a terminal: silent
    assert len(ours.read_text().splitlines()) == 2  # header and snapshot

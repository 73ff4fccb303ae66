"""Data-driven conformance: every transaction case runs against ovsdb-server and tegadb.

The cases live in tests/data/conformance*.json, each a list of objects:
- `name`: unique across all files (the test id).
- `schema`: `"NAME"` for tests/data/NAME.ovsschema, or an inline schema object.
- `setup`: ops committed first (every one must succeed).
- `ops`, `expect`: the transaction under test and its normalized result array.
- `then`, `then_expect` (optional): a second transaction that reads the outcome.
- `skip` (optional): `{"ovsdb-server": reason}` where ovsdb-server 3.1 has a
  known fault (PEERS.md); every other case is checked against it on each run,
  which is what makes its expectation right.

Results are compared after normalization: every UUID inside a string becomes
`"<uuid>"`, the rows of a `select` without `sort` are put in a canonical
order, and so are the two rows a unique-index error describes (ovsdb-server
orders them by comparing all columns, `_version` included, in hash order, so
its order is random).  Of several unknown members of an op, ovsdb-server
names the first in its hash order; the name is not compared then, the count is.
One server of each kind serves every schema for the whole module; each case
starts by deleting all rows of its database.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import (
    Peer,
    RawClient,
    missing_ovs_binaries,
    start_ovsdb_server,
    start_tegadb_server,
)

DATA_DIR = Path(__file__).parent.parent / "data"
CASE_FILES = sorted(DATA_DIR.glob("conformance*.json"))
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
INDEX_ROWS_RE = re.compile(r"(.*)  First row, (with UUID .*?\.)  Second row, (with UUID .*)", re.DOTALL)
MEMBERS_RE = re.compile(r"Member '[^']*' and (\d+ other members?) are present")
STARTERS = {"ovsdb-server": start_ovsdb_server, "tegadb": start_tegadb_server}


def schema_json(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A case's schema: inline, or the name of a file in tests/data."""
    if isinstance(schema, dict):
        return schema
    loaded: dict[str, Any] = json.loads((DATA_DIR / f"{schema}.ovsschema").read_text())
    return loaded


def load_cases() -> list[dict[str, Any]]:
    cases = [case for path in CASE_FILES for case in json.loads(path.read_text())]
    names = [case["name"] for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"duplicate case names: {duplicates}"
    return cases


def distinct_schemas(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every schema the cases use, by database name (one name, one schema)."""
    schemas: dict[str, dict[str, Any]] = {}
    for case in cases:
        schema = schema_json(case["schema"])
        known = schemas.setdefault(schema["name"], schema)
        assert known == schema, f"{case['name']}: two different schemas named {schema['name']}"
    return schemas


CASES = load_cases()
SCHEMAS = distinct_schemas(CASES)


def normalize(x: Any) -> Any:
    """UUIDs in strings become "<uuid>"; hash-ordered parts of two error messages get a fixed form."""
    if isinstance(x, str):
        text = MEMBERS_RE.sub(r"Member '<name>' and \1 are present", UUID_RE.sub("<uuid>", x))
        match = INDEX_ROWS_RE.fullmatch(text)
        if match:
            first, second = sorted(match.group(2, 3))
            text = f"{match.group(1)}  First row, {first}  Second row, {second}"
        return text
    if isinstance(x, list):
        return [normalize(e) for e in x]
    if isinstance(x, dict):
        return {k: normalize(v) for k, v in x.items()}
    return x


def canonical(ops: list[Any], results: list[Any]) -> list[Any]:
    """Normalized results; unsorted `select` rows in a canonical order (row order is unspecified)."""
    out = []
    for i, result in enumerate(normalize(results)):
        op = ops[i] if i < len(ops) else None  # a commit error is the extra last entry
        if (isinstance(result, dict) and "rows" in result and isinstance(op, dict)
                and "sort" not in op):
            result = {"rows": sorted(result["rows"], key=lambda r: json.dumps(r, sort_keys=True))}
        out.append(result)
    return out


class CaseServer:
    """One running server holding a database per schema, and a client that reconnects."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.kind = peer.kind
        self._client: RawClient | None = None

    def transact(self, db: str, ops: list[Any]) -> list[Any]:
        if self._client is None:
            self._client = self.peer.client(timeout=10.0)
        try:
            return self._client.transact(db, *ops)
        except (ConnectionError, TimeoutError):
            # The next case gets a fresh connection (and a fresh server if it died).
            self.close_client()
            if self.peer.process is None or self.peer.process.poll() is not None:
                self.peer.restart()
            raise

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@pytest.fixture(scope="module", params=sorted(STARTERS))
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaseServer]:
    """ovsdb-server or tegadb, serving every schema the cases use, for the whole module."""
    kind = request.param
    if kind == "ovsdb-server" and missing_ovs_binaries():
        message = f"{', '.join(missing_ovs_binaries())} not installed (run `make peers`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp(f"conformance-{kind}")
    paths = []
    for name, schema in SCHEMAS.items():
        path = directory / f"{name}.ovsschema"
        path.write_text(json.dumps(schema))
        paths.append(path)
    peer = STARTERS[kind](directory / "server", paths)
    case_server = CaseServer(peer)
    yield case_server
    case_server.close_client()
    peer.stop()


def run_case(server: CaseServer, case: dict[str, Any]) -> None:
    schema = schema_json(case["schema"])
    db = schema["name"]
    wipe = [{"op": "delete", "table": table, "where": []} for table in schema["tables"]]
    wiped = server.transact(db, wipe)
    assert all("error" not in r for r in wiped), f"wiping {db} failed: {wiped}"
    if case["setup"]:
        done = server.transact(db, case["setup"])
        assert len(done) == len(case["setup"]) and all(r and "error" not in r for r in done), (
            f"setup failed: {done}")
    steps = [(case["ops"], case["expect"])]
    if "then" in case:
        steps.append((case["then"], case["then_expect"]))
    for ops, expected in steps:
        got = canonical(ops, server.transact(db, ops))
        assert got == canonical(ops, expected), (
            f"\nops:  {json.dumps(ops)}\nwant: {json.dumps(expected)}\ngot:  {json.dumps(got)}")


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in CASES])
def test_conformance(server: CaseServer, case: dict[str, Any]) -> None:
    reason = case.get("skip", {}).get(server.kind)
    if reason:
        pytest.skip(f"{server.kind}: {reason}")
    run_case(server, case)

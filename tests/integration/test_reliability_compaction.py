"""Compaction without a pause (issue 14, item 8): while a running server
compacts on demand, it goes on committing; what it committed meanwhile is
in the new file, after a restart too.  The benchmark's W9 measures the
worst delay (tests/bench)."""

from __future__ import annotations

import threading
from typing import Any

from peers import RawClient

DB = "Test"
ROWS = 20_000


def test_commits_go_on_during_a_compaction_and_are_kept(tegadb_peer) -> None:
    server = tegadb_peer()
    db_file = server.directory / f"{DB}.db"
    control = f"unix:{server.directory / 'var' / 'tegadb-server.ctl'}"
    with server.client(timeout=60) as client:
        for start in range(0, ROWS, 5000):
            client.transact(DB, *[{"op": "insert", "table": "Root",
                                   "row": {"name": f"r{i}", "tags": ["set", ["a", str(i)]]}}
                                  for i in range(start, start + 5000)])
        for k in range(5):
            client.transact(DB, {"op": "update", "table": "Root", "where": [],
                                 "row": {"count": k}})
    size_before = db_file.stat().st_size
    reply: list[dict[str, Any]] = []
    during: list[str] = []
    with server.client(timeout=30) as client:
        asker = threading.Thread(target=lambda: reply.append(
            RawClient(control, timeout=60).request("ovsdb-server/compact", [DB])))
        asker.start()
        n = 0
        while asker.is_alive():
            client.transact(DB, {"op": "insert", "table": "Root", "row": {"name": f"during{n}"}})
            if asker.is_alive():
                during.append(f"during{n}")  # committed while the compaction ran
            n += 1
        asker.join()
    assert reply[0]["error"] is None, reply
    # The server answered while it compacted (a compaction in the loop, as
    # ovsdb-server's, lets none through).
    assert len(during) >= 5, len(during)
    assert db_file.stat().st_size < size_before / 2
    server.restart()
    with server.client(timeout=30) as client:
        rows = client.transact(DB, {"op": "select", "table": "Root", "where": [],
                                    "columns": ["name", "count"]})[0]["rows"]
    names = {row["name"] for row in rows}
    assert set(during) <= names
    assert len(rows) == ROWS + n
    assert all(row["count"] == 4 for row in rows if row["name"].startswith("r"))

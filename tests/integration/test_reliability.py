"""Nothing acknowledged is lost (issue 14): SIGKILL at random moments under
pipelined load, during compactions and group commits too, and a power cut
that loses whatever was written after the last fsync."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from peers import RawClient, assert_whole_pairs, pipelined_pairs

from tegadb.server.service import DatabaseService

DB = "Test"
# SIGKILLs of the kill test: 50 in CI time, more in `make soak`.
KILLS = int(os.environ.get("TEGADB_KILLS", "50"))


def insert(name: str) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "row": {"name": name}}


def stored_names(client: RawClient) -> list[str]:
    rows = client.transact(DB, {"op": "select", "table": "Root", "where": [],
                                "columns": ["name"]})[0]["rows"]
    return [r["name"] for r in rows]


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tegadb_peer):
    server = tegadb_peer()
    control = f"unix:{server.directory / 'var' / 'tegadb-server.ctl'}"
    rng = random.Random(14)
    acked: set[str] = set()
    compactions = 0
    for kill in range(KILLS):
        results: list[set[str]] = []
        client = server.client(timeout=10)
        writer = threading.Thread(target=lambda c=client, k=kill, r=results: r.append(
            pipelined_pairs(c, f"k{k}", 80)))
        writer.start()
        time.sleep(rng.uniform(0.0, 0.04))
        if kill % 3 == 0:
            # Ask for a compaction and kill the server while it may be at it.
            with RawClient(control, timeout=10) as ctl:
                ctl.send({"method": "ovsdb-server/compact", "params": [], "id": 1})
                compactions += 1
                if kill % 6 == 0:
                    # Right after one finished (the switch to the new file),
                    # which a loaded machine may otherwise never let happen.
                    assert ctl.recv()["error"] is None
                else:
                    time.sleep(rng.uniform(0.0, 0.01))
                server.kill()
        else:
            server.kill()
        writer.join(30)
        client.close()
        acked |= results[0]
        server.start(server.tcp_port)
    assert compactions >= KILLS // 3
    # Some were under way or just done when the kill came (the others were cut short).
    assert "compacted" in server.log_path.read_text()
    assert len(acked) > 200  # the kills came while writes were being acknowledged
    with server.client() as client:
        assert_whole_pairs(stored_names(client), acked)


def test_a_power_cut_keeps_every_durable_transaction(tegadb_peer, tmp_path: Path):
    server = tegadb_peer()
    db = server.directory / "Test.db"
    durable: list[tuple[str, int]] = []  # name, file size when it was acknowledged
    with server.client() as client:
        for n in range(60):
            ops = [insert(f"t{n}")]
            if n % 3 == 0:
                ops.append({"op": "commit", "durable": True})
            assert "uuid" in client.transact(DB, *ops)[0]
            if n % 3 == 0:
                # Acknowledged after fdatasync: the file up to here survives a power cut.
                durable.append((f"t{n}", db.stat().st_size))
    server.kill()
    data = db.read_bytes()
    rng = random.Random(7)
    for index, (_name, synced) in enumerate(durable):
        # A power cut loses any part of what was written after the last sync.
        for cut in {synced, len(data), *rng.sample(range(synced, len(data) + 1), 3)}:
            copy = tmp_path / f"cut-{index}-{cut}.db"
            copy.write_bytes(data[:cut])
            service = DatabaseService.open(copy)
            try:
                names = {row["name"][0] for row in service.database.tables["Root"].rows.values()}
            finally:
                service.close()
            expected = {name for name, size in durable if size <= synced}
            assert expected <= names, (cut, sorted(expected - names))
            # What replay gives is a prefix: no row without all those before it.
            numbers = sorted(int(name[1:]) for name in names)
            assert numbers == list(range(len(numbers))), (cut, numbers)

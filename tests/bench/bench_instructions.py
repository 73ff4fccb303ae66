"""Instructions per transaction of tegadb's request path, counted by callgrind.

Times swing on a shared machine; instruction counts do not.  This drives the
whole request path in-process, as `make bench`'s W2 mix does over sockets:
W2's requests (alternating single-row inserts and updates by `_uuid`), 32 per
chunk, through the framer, `handle_message`, the engine, the journal record
and the reply, with one group-commit flush per chunk.  Per transaction is
(count(N2) - count(N1)) / (N2 - N1), which cancels start-up and set-up.

    .venv/bin/python tests/bench/bench_instructions.py [--interpreted]

`--interpreted` also counts the interpreted core (TEGADB_PURE=1).  Needs
valgrind.  `drive N` (used by the counting) runs N transactions once.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "bench.ovsschema"
PRELOAD = 64
CHUNK = 32
COUNTS = (512, 2560)
sys.path.insert(0, str(REPO))


def drive(transactions: int) -> None:
    """Run `transactions` W2 requests through the request path, in chunks."""
    from tegadb.protocol.framer import Framer
    from tegadb.server import methods
    from tegadb.server.service import DatabaseService, ServerDatabases, create_database_file

    with tempfile.TemporaryDirectory() as work:
        db_file = Path(work, "bench.db")
        create_database_file(db_file, SCHEMA)
        databases = ServerDatabases([DatabaseService.open(db_file)])
        databases.attach(lambda: None, lambda *args: None)
        replies: list[bytes] = []
        session = methods.Session(databases, "bench", replies.append, lambda: None)
        framer = Framer()

        def run(chunk: bytes) -> None:
            for message in framer.feed(chunk):
                methods.handle_message(session, message)
            databases.flush()
            databases.flush_sessions()

        run(b"".join(_insert(i, b"preloaded") for i in range(PRELOAD)))
        uuids = re.findall(rb'\["uuid","([0-9a-f-]{36})"\]', b"".join(replies))
        assert len(uuids) == PRELOAD, replies[:2]
        for start in range(0, transactions, CHUNK):
            replies.clear()
            run(b"".join(_update(i, uuids[i % PRELOAD].decode()) if i % 2 else _insert(i)
                         for i in range(start, start + CHUNK)))
            # Every reply a success, with no failed operation in its result.
            assert len(replies) == CHUNK and all(
                r.endswith(b'"error":null}') and b'"error":"' not in r for r in replies), replies


def _insert(i: int, name: bytes = b"row") -> bytes:
    return (b'{"id":%d,"method":"transact","params":["Bench",{"op":"insert","table":"Item",'
            b'"row":{"name":"%s%d","note":"x","n":%d,"tags":["set",["a","b"]]}}]}'
            % (i, name, i, i))


def _update(i: int, uuid: str) -> bytes:
    return (b'{"id":%d,"method":"transact","params":["Bench",{"op":"update","table":"Item",'
            b'"where":[["_uuid","==",["uuid","%s"]]],"row":{"n":%d}}]}' % (i, uuid.encode(), i))


def count_instructions(transactions: int, interpreted: bool) -> int:
    env = dict(os.environ)
    env.pop("TEGADB_PURE", None)
    if interpreted:
        env["TEGADB_PURE"] = "1"
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "drive", str(transactions)],
        env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1))


def per_transaction(interpreted: bool) -> float:
    low, high = (count_instructions(n, interpreted) for n in COUNTS)
    return (high - low) / (COUNTS[1] - COUNTS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpreted", action="store_true",
                        help="also count the interpreted core")
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.command:
        drive(int(args.command[1]))
        return
    from tegadb import native
    cores = [("compiled" if native.is_compiled() else "interpreted", False)]
    if args.interpreted and cores[0][0] == "compiled":
        cores.append(("interpreted", True))
    for name, interpreted in cores:
        print(f"{name} core: {per_transaction(interpreted) / 1000:.1f}k instructions per transaction")


if __name__ == "__main__":
    main()

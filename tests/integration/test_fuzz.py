"""Property-based fuzzing of a real tegadb-server (issue 14): random and
mutated requests, raw byte garbage and interleaved connections.

Whatever arrives, the server stays up, every well-formed request gets a
well-formed reply (its id, and a result or an error), and its journal stays
valid (`tegadb-tool check`, and a restart serves what was acknowledged).
Bounded for CI: TEGADB_FUZZ_EXAMPLES examples per test (default 300, about
half a minute in all); `make soak` runs many more, freshly drawn
(TEGADB_FUZZ_RANDOM=1).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import REPO_ROOT, TEST_SCHEMA, ConnectionClosed, Peer, start_tegadb_server

DB = "Test"
EXAMPLES = int(os.environ.get("TEGADB_FUZZ_EXAMPLES", "300"))
# Derandomized in CI (the same examples each run); `make soak` draws new ones.
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize=not os.environ.get("TEGADB_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """One server for all examples (a start per example would bound them to a few);
    each test checks that it is still the same process."""
    peer = start_tegadb_server(tmp_path_factory.mktemp("fuzz"), [TEST_SCHEMA])
    yield peer
    peer.stop()


def assert_alive(server: Peer) -> None:
    """The server process has not exited, and answers a new client."""
    assert server.process is not None and server.process.poll() is None, server.diagnostics()
    with server.client() as client:
        assert client.request("echo", ["alive"])["result"] == ["alive"]


# --- well-formed requests ------------------------------------------------------------

# Well-formed: strict JSON that OVSDB takes, so strings hold no NUL (a
# protocol error, for which ovsdb-server closes the connection too).
texts = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(texts, children, max_size=4),
    max_leaves=20)

conditions = st.lists(st.tuples(st.sampled_from(["name", "count", "flag", "_uuid", "nope"]),
                                st.sampled_from(["==", "!=", "<", "includes", "excludes", "?"]),
                                json_values).map(list), max_size=2)
rows = st.fixed_dictionaries({}, optional={
    "name": texts, "count": st.integers(-5, 120), "flag": st.booleans(),
    "tags": st.lists(texts, max_size=3).map(lambda tags: ["set", tags]),
    "color": st.sampled_from(["blue", "red", "mauve"]), "note": texts,
    "props": st.dictionaries(texts, texts, max_size=2).map(
        lambda pairs: ["map", [list(pair) for pair in pairs.items()]]),
    "bogus": json_values})
ops = st.one_of(
    st.builds(lambda row: {"op": "insert", "table": "Root", "row": row}, rows),
    st.builds(lambda where, row: {"op": "update", "table": "Root", "where": where, "row": row},
              conditions, rows),
    st.builds(lambda where: {"op": "delete", "table": "Root", "where": where}, conditions),
    st.builds(lambda where: {"op": "select", "table": "Root", "where": where}, conditions),
    st.builds(lambda where, delta: {"op": "mutate", "table": "Root", "where": where,
                                    "mutations": [["count", "+=", delta]]},
              conditions, st.integers(-3, 3)),
    st.builds(lambda where: {"op": "wait", "table": "Root", "where": where, "timeout": 0,
                             "columns": ["name"], "until": "==", "rows": []}, conditions),
    st.builds(lambda text: {"op": "comment", "comment": text}, texts),
    st.builds(lambda durable: {"op": "commit", "durable": durable}, st.booleans()),
    st.builds(lambda name: {"op": "assert", "lock": name}, texts),
    st.dictionaries(st.sampled_from(["op", "table", "where", "row", "columns"]), json_values,
                    max_size=4))
requests = st.one_of(
    st.builds(lambda o: ("transact", [DB, *o]), st.lists(ops, max_size=5)),
    st.builds(lambda p: ("transact", p), st.lists(json_values, max_size=3)),
    st.builds(lambda m, p: (m, p),
              st.sampled_from(["echo", "list_dbs", "get_schema", "lock", "steal", "unlock",
                               "monitor_cancel", "get_server_id", "set_db_change_aware",
                               "monitor", "monitor_cond", "monitor_cond_since", "cancel",
                               "no_such_method"]),
              st.lists(st.sampled_from([DB, "_Server", "x", None, 1, True, {}]) | json_values,
                       max_size=3)))
dialects = st.sampled_from([1, 2])


def encode(method: str, params: Any, request_id: int, dialect: int) -> dict[str, Any]:
    message = {"method": method, "params": params, "id": request_id}
    return {"jsonrpc": "2.0", **message} if dialect == 2 else message


def assert_well_formed(reply: dict[str, Any], request_id: int, dialect: int) -> None:
    assert reply["id"] == request_id
    if dialect == 2:
        assert reply.get("jsonrpc") == "2.0" and ("result" in reply) != ("error" in reply), reply
    else:
        # A result, or an error without "result" as ovsdb-server writes it (PROTOCOL.md 1.3).
        assert set(reply) <= {"id", "result", "error"}, reply
        assert (reply.get("result") is None) != (reply.get("error") is None), reply


@FUZZ
@given(batch=st.lists(st.tuples(requests, dialects), min_size=1, max_size=8))
def test_every_well_formed_request_gets_a_well_formed_reply(server: Peer, batch: list[Any]) -> None:
    with server.client() as client:
        sent = []
        for (method, params), dialect in batch:  # pipelined, as real clients do
            request_id = client.next_id()
            client.send(encode(method, params, request_id, dialect))
            sent.append((request_id, dialect))
        for request_id, dialect in sent:
            assert_well_formed(client.reply(request_id), request_id, dialect)
    assert server.process is not None and server.process.poll() is None


# --- mutated requests and garbage -------------------------------------------------------

@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A well-formed request with a few bytes flipped, dropped, doubled or inserted."""
    (method, params), dialect = draw(st.tuples(requests, dialects))
    data = bytearray(json.dumps(encode(method, params, 1, dialect)).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "drop", "double", "insert"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "drop":
            del data[at]
        elif kind == "double":
            data[at:at] = data[at:at + 1]
        else:
            data[at:at] = draw(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":",
                                                b"\xff", b"\xed\xa0\x80", b"NaN", b"1e400"]))
    return bytes(data)


def send_and_drain(server: Peer, data: bytes) -> None:
    """Send `data` and an echo, then end the stream: the server answers what
    it can (or drops the connection: a fine answer to garbage) and closes."""
    with server.client(timeout=10) as client:
        try:
            client.send_raw(data + b'{"method":"echo","params":["end"],"id":"end"}')
            client.sock.shutdown(socket.SHUT_WR)
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            return
        assert client.wait_closed(), "the server kept the connection after its end"


@FUZZ
@given(data=mutated())
def test_mutated_requests_never_bring_the_server_down(server: Peer, data: bytes) -> None:
    send_and_drain(server, data)
    assert server.process is not None and server.process.poll() is None


@FUZZ
@given(data=st.binary(max_size=2000))
def test_raw_garbage_never_brings_the_server_down(server: Peer, data: bytes) -> None:
    send_and_drain(server, data)
    assert server.process is not None and server.process.poll() is None


# --- interleaved connections -------------------------------------------------------------

@FUZZ
@given(streams=st.lists(st.lists(st.tuples(requests, dialects), min_size=1, max_size=4),
                        min_size=2, max_size=4),
       cuts=st.lists(st.integers(1, 60), min_size=1, max_size=20), order=st.randoms())
def test_interleaved_connections_each_get_their_replies(server: Peer, streams: list[Any],
                                                        cuts: list[int], order: Any) -> None:
    """Several clients' requests, each stream cut in pieces, the pieces of
    all of them sent in a random order (each stream's own in order)."""
    clients = [server.client() for _ in streams]
    try:
        expected: list[list[tuple[int, int]]] = []
        pieces: list[list[bytes]] = []
        for client, stream in zip(clients, streams, strict=True):
            data = b""
            sent = []
            for (method, params), dialect in stream:
                request_id = client.next_id()
                data += json.dumps(encode(method, params, request_id, dialect)).encode()
                sent.append((request_id, dialect))
            expected.append(sent)
            chunks, at = [], 0
            for cut in cuts * (len(data) // sum(cuts) + 1):
                if at >= len(data):
                    break
                chunks.append(data[at:at + cut])
                at += cut
            pieces.append(chunks)
        turns = [i for i, chunks in enumerate(pieces) for _ in chunks]
        order.shuffle(turns)
        for i in turns:
            clients[i].send_raw(pieces[i].pop(0))
        for client, sent in zip(clients, expected, strict=True):
            for request_id, dialect in sent:
                assert_well_formed(client.reply(request_id), request_id, dialect)
    finally:
        for client in clients:
            client.close()


# --- the journal afterwards -----------------------------------------------------------------

def test_zz_the_journal_is_valid_and_replays_after_the_fuzzing(server: Peer) -> None:
    """Runs last in this module (pytest keeps the file's order)."""
    assert_alive(server)
    with server.client() as client:
        before = client.transact(DB, {"op": "select", "table": "Root", "where": []})
    server.stop()
    db_file = server.directory / f"{DB}.db"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    checked = subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_tool", "check",
                              str(db_file)], capture_output=True, text=True, env=env, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    server.start()
    with server.client() as client:
        after = client.transact(DB, {"op": "select", "table": "Root", "where": []})
    key = lambda row: row["_uuid"][1]  # noqa: E731
    assert sorted(after[0]["rows"], key=key) == sorted(before[0]["rows"], key=key)
    assert "Traceback" not in server.log_path.read_text()

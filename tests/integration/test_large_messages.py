"""Large messages over real sockets (issue 14, item 3): parsed without
holding up the other clients, answered right and in order, and refused
with the same error as a small message when they are not valid JSON."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import TEST_SCHEMA, Peer, start_tegadb_server

MiB = 1024 * 1024
# A small object, many times over: the shape that costs ujson the most per byte.
ITEM = b'{"x":[1,2.5,null],"s":"abcdefgh","u":"caf\\u00e9","n":12345}'


def big_array(size: int, fault: bytes | None = None) -> bytes:
    items = [ITEM] * (size // (len(ITEM) + 1))
    if fault is not None:
        items.insert(len(items) // 2, fault)
    return b"[" + b",".join(items) + b"]"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Peer]:
    peer = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA])
    yield peer
    peer.stop()


def send_in_background(server: Peer, data: bytes) -> tuple[threading.Event, list[bytes]]:
    """Send `data` on a new connection and read until the server closes it
    or answers the echo with id "after"; the event is set then, and the
    list holds what came back."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(server.unix_path)
    done, received = threading.Event(), [b""]

    def run() -> None:
        try:
            sock.sendall(data)
            while b'"id":"after"' not in received[0][-100:]:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received[0] += chunk
        finally:
            sock.close()
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, received


def round_trips_until(server: Peer, done: threading.Event) -> list[float]:
    """Another client's echo round trips while the large message is sent and served."""
    round_trips = []
    with server.client(timeout=30) as other:
        other.request("echo", [])
        while not done.wait(0.0005):
            start = time.monotonic()
            assert other.request("echo", ["mine"], timeout=30)["result"] == ["mine"]
            round_trips.append(time.monotonic() - start)
    return round_trips


def test_a_large_message_does_not_hold_up_other_clients(server: Peer) -> None:
    """A 16 MiB array is decoded a step per turn, so another client's round
    trips stay short meanwhile (decoded at once: 420 ms)."""
    done, _ = send_in_background(server, big_array(16 * MiB))
    round_trips = round_trips_until(server, done)
    assert done.wait(60)
    assert len(round_trips) >= 50, len(round_trips)
    assert max(round_trips) < 0.1, sorted(round_trips)[-5:]
    # Decoded whole: an array is no JSON-RPC message, so the connection closes.
    assert "message is not a JSON object, closing connection" in server.log_path.read_text()


def test_a_large_transaction_is_answered_right_and_in_order(server: Peer) -> None:
    tags = [f"{i:08d}" + "t" * 1016 for i in range(4 * 1024)]   # 4 MiB of strings
    row = {"name": "big", "tags": ["set", tags]}
    transact = json.dumps({"method": "transact", "id": "big",
                           "params": ["Test", {"op": "insert", "table": "Root", "row": row}]},
                          separators=(",", ":")).encode()
    stream = (b'{"method":"echo","id":"before","params":["before"]}' + transact
              + b'{"method":"echo","id":"after","params":["after"]}')
    done, received = send_in_background(server, stream)
    round_trips = round_trips_until(server, done)
    assert done.wait(60)
    assert max(round_trips) < 0.1, sorted(round_trips)[-5:]
    replies = received[0]
    ids = re.findall(rb'"id":"(before|big|after)"', replies)
    assert ids == [b"before", b"big", b"after"], replies[:300]
    assert b'"error":null' in replies and b'"uuid"' in replies, replies[:300]
    with server.client(timeout=30) as reader:
        [result] = reader.transact("Test", {"op": "select", "table": "Root",
                                            "where": [["name", "==", "big"]],
                                            "columns": ["tags"]}, timeout=30)
    assert sorted(result["rows"][0]["tags"][1]) == tags


def close_reason(server: Peer, data: bytes) -> str:
    """Why the server closed a connection that sent `data`, as it logs it."""
    with server.client(timeout=30) as client:
        client.send_raw(data)
        assert client.wait_closed(timeout=30)
    lines = [line for line in server.log_path.read_text().splitlines()
             if line.endswith(", closing connection")]
    return re.sub(r"^.*db\.sock: ", "", lines[-1])


LARGE_ITEM = big_array(100 * 1024)


@pytest.mark.parametrize("small, large", [
    (b"[1,NaN]", big_array(2 * MiB, b"NaN")),
    (b"[1,1e400]", big_array(2 * MiB, b"1e400")),
    (b'["\\u0000"]', big_array(2 * MiB, b'"\\u0000"')),
    (b"[1,tru]", big_array(2 * MiB, b"tru")),
    (b"[[1] [2]]", b"[" + LARGE_ITEM + b" " + LARGE_ITEM + b"]"),   # no comma between
    (b'{"a":[1] "b":1}', b'{"a":' + LARGE_ITEM + b' "b":1}'),
])
def test_bad_large_json_closes_the_connection_as_small_json_does(
        server: Peer, small: bytes, large: bytes) -> None:
    reason = close_reason(server, small)
    assert reason.startswith("syntax error") or "null bytes" in reason, reason
    assert close_reason(server, large) == reason
    with server.client() as client:   # the server is fine
        assert client.request("echo", ["ok"])["result"] == ["ok"]

"""A connection's share of an event-loop turn (issue 14, item 4), driven
through `Connection` with a transport that records what it is asked to do:
the replies of the messages served together go out in one write; while
other connections share the loop, a turn ends after about TIME_PER_TURN of
work, except for transactions joining a batch, and a large read is framed a
slice at a time; what is left is served on later turns, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ujson

from tegadb.protocol.framer import Framer
from tegadb.protocol.remotes import parse_passive
from tegadb.server import connections, methods
from tegadb.server.connections import Connection, Server
from tegadb.server.service import DatabaseService, ServerDatabases, create_database_file

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "test.ovsschema"


class RecordingTransport(asyncio.Transport):
    """Keeps every write; reading is paused and resumed on request."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def replies(self) -> list[dict[str, Any]]:
        """Every message written so far, in order."""
        return Framer().feed(b"".join(self.writes))


@pytest.fixture
def slow_method() -> Iterator[str]:
    """A method that takes 2 ms, far past a turn's time budget."""
    def slow(session: methods.Session, *params: Any) -> Any:
        time.sleep(0.002)
        return list(params)

    methods.METHODS["test_slow"] = slow
    yield "test_slow"
    del methods.METHODS["test_slow"]


def _connected(tmp_path: Path, others: int = 1,
               ) -> tuple[Server, Connection, RecordingTransport]:
    """A server with a connection to drive and ``others`` idle ones (the
    time budget and the slices apply only while others share the loop)."""
    db_file = tmp_path / "test.db"
    create_database_file(db_file, SCHEMA)
    server = Server(ServerDatabases([DatabaseService.open(db_file)]))
    remote = parse_passive(f"punix:{tmp_path / 'db.sock'}")
    connection = Connection(server, remote)
    transport = RecordingTransport()
    connection.connection_made(transport)
    for _ in range(others):
        Connection(server, remote).connection_made(RecordingTransport())
    return server, connection, transport


def _requests(method: str, count: int, params: Any = None) -> bytes:
    return b"".join(ujson.dumps({"method": method, "params": [i] if params is None else params,
                                 "id": i}).encode() for i in range(count))


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_the_replies_of_one_turn_go_out_in_one_write(tmp_path, monkeypatch):
    # Time enough for all of them in one turn, however busy the machine is.
    monkeypatch.setattr(connections, "TIME_PER_TURN", 1.0)

    async def run() -> None:
        server, connection, transport = _connected(tmp_path)
        connection.data_received(_requests("echo", 20))
        # One write per reply woke the peer once per reply (W8's flood).
        assert len(transport.writes) == 1
        assert [r["id"] for r in transport.replies()] == list(range(20))
        server.databases.close()

    asyncio.run(run())


def test_a_turn_ends_once_its_time_is_used_and_the_rest_follows_in_order(tmp_path, slow_method):
    async def run() -> None:
        server, connection, transport = _connected(tmp_path)
        count = 10
        # Fewer than MESSAGES_PER_TURN: only the time budget stops the turn.
        assert count < connections.MESSAGES_PER_TURN
        connection.data_received(_requests(slow_method, count))
        assert [r["id"] for r in transport.replies()] == [0]
        assert not transport.reading
        await _turns(count + 2)
        assert [r["result"] for r in transport.replies()] == [[i] for i in range(count)]
        assert transport.reading
        server.databases.close()

    asyncio.run(run())


def test_a_connection_alone_keeps_whole_turns(tmp_path, slow_method):
    async def run() -> None:
        server, connection, transport = _connected(tmp_path, others=0)
        count = 10
        # Nobody waits for the loop: no time budget, and reads are framed
        # a turn's worth at a time.
        connection.data_received(_requests(slow_method, count))
        assert [r["id"] for r in transport.replies()] == list(range(count))
        transport.writes.clear()
        connection.data_received(_requests("echo", 2000))
        assert len(transport.replies()) == connections.MESSAGES_PER_TURN
        server.databases.close()

    asyncio.run(run())


def test_transactions_joining_a_batch_are_not_cut_off_by_time(tmp_path):
    async def run() -> None:
        server, connection, transport = _connected(tmp_path)
        count = 40
        insert = {"op": "insert", "table": "Root", "row": {"name": "x"}}
        started = time.perf_counter()
        connection.data_received(_requests("transact", count, ["Test", insert]))
        # Many times the time budget: a budget applied to them would cut the batch.
        assert time.perf_counter() - started > 4 * connections.TIME_PER_TURN
        service = server.databases.get("Test")
        assert service is not None and len(service.batch) == count
        assert transport.writes == []   # held until the batch is written
        await _turns(3)
        replies = transport.replies()
        assert [r["id"] for r in replies] == list(range(count))
        assert all(r["error"] is None and "uuid" in r["result"][0] for r in replies)
        server.databases.close()

    asyncio.run(run())


def test_a_large_read_is_framed_a_slice_at_a_time(tmp_path, monkeypatch):
    # Only the slice bounds the first turn then (50 of 2000 could be served).
    monkeypatch.setattr(connections, "TIME_PER_TURN", 1.0)

    async def run() -> None:
        server, connection, transport = _connected(tmp_path)
        data = _requests("echo", 2000)
        assert len(data) > connections.INPUT_PER_TURN
        connection.data_received(data)
        first = transport.replies()
        # One slice framed: the requests it completed, not a turn's 50.
        shortest = len(b'{"method":"echo","params":[0],"id":0}')
        assert 0 < len(first) <= connections.INPUT_SLICE // shortest
        assert not transport.reading
        while len(transport.replies()) < 2000:
            await asyncio.sleep(0)
        assert [r["id"] for r in transport.replies()] == list(range(2000))
        assert transport.reading
        server.databases.close()

    asyncio.run(run())


def test_a_large_message_is_framed_in_larger_slices(tmp_path, monkeypatch):
    # One slice a turn: the number of turns counts the slices.
    monkeypatch.setattr(connections, "TIME_PER_TURN", 0.0)

    async def run() -> None:
        server, connection, transport = _connected(tmp_path)
        message = ujson.dumps({"method": "echo", "params": ["x" * 50_000], "id": 1}).encode()
        connection.data_received(message)
        turns = 0
        while not transport.writes:
            await asyncio.sleep(0)
            turns += 1
        # In INPUT_SLICE pieces it would take ~200 turns; past
        # LARGE_MESSAGE_SLICE bytes of it, the slices grow to that size.
        small_slices = connections.LARGE_MESSAGE_SLICE // connections.INPUT_SLICE + 1
        large_slices = len(message) // connections.LARGE_MESSAGE_SLICE + 1
        assert turns <= small_slices + large_slices + 2, turns
        assert transport.replies() == [{"id": 1, "result": ["x" * 50_000], "error": None}]
        server.databases.close()

    asyncio.run(run())

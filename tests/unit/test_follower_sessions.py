"""The Follower's session logic against a scripted in-process source.

What real servers cannot be made to do on cue is scripted here: an update
in the same packet as the monitor reply, a ``monitor_canceled``, a
``_Server`` row that loses its leader or changes its schema, a source that
stops answering.  (tests/integration/test_follower.py runs the rest against
tegadb-server and ovsdb-server.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tegadb.client.follower import DATA_MONITOR, SERVER_MONITOR, Follower
from tegadb.core.types import ZERO_UUID
from tegadb.protocol.framer import Framer

SCHEMA = {"name": "Test", "tables": {"T": {"columns": {"x": {"type": "integer"}}}}}
TXN = "11111111-1111-1111-1111-111111111111"
ROW = "22222222-2222-2222-2222-222222222222"


class FakeSource:
    """An OVSDB server that answers the follower's requests from a script.

    Every request (and notification) is kept in ``requests`` as (connection
    number, method, params), its id in ``ids``.  ``after_monitor`` bytes go
    out in the same write as the ``monitor_cond_since`` reply.
    """

    def __init__(self, *, leader: bool = True, found: bool = True) -> None:
        self.leader = leader
        self.found = found
        self.silent = False
        self.after_monitor: list[Any] = []
        self.requests: list[tuple[int, str, Any]] = []
        self.ids: list[Any] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.remote = ""

    async def __aenter__(self) -> FakeSource:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.remote = f"tcp:127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()

    def methods(self, connection: int | None = None) -> list[str]:
        return [m for n, m, _ in self.requests if connection is None or n == connection]

    def notify(self, method: str, params: list[Any]) -> None:
        self.writers[-1].write(_message({"id": None, "method": method, "params": params}))

    def change_server_row(self, **columns: Any) -> None:
        """An update2 of the _Server monitor that modifies the database's row."""
        self.notify("update2", [SERVER_MONITOR, {"Database": {ROW: {"modify": columns}}}])

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method == "monitor_cond":
            row = {"name": "Test", "model": "standalone", "connected": True,
                   "leader": self.leader, "schema": json.dumps(SCHEMA)}
            return {"Database": {ROW: {"initial": row}}}
        if method == "get_schema":
            return SCHEMA
        if method == "monitor_cond_since":
            return [self.found, TXN, {}]
        if method == "echo":
            return params
        return {}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        number = len(self.writers)
        framer = Framer()
        while data := await reader.read(65536):
            for request in framer.feed(data):
                self.requests.append((number, request["method"], request["params"]))
                self.ids.append(request["id"])
                if self.silent or request["id"] is None:
                    continue
                out = _message({"id": request["id"], "result": self._answer(request["method"],
                                                                           request["params"]),
                                "error": None})
                if request["method"] == "monitor_cond_since":
                    out += b"".join(map(_message, self.after_monitor))
                writer.write(out)


def _message(value: Any) -> bytes:
    return json.dumps(value).encode()


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.fail_updates = 0
        self.fail_starts = False

    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        if self.fail_starts:
            raise ValueError("cannot start from that")
        self.events.append(("start", found, last_id))

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        if self.fail_updates:
            self.fail_updates -= 1
            raise ValueError("cannot apply that")
        self.events.append(("update", updates, last_id))

    def disconnected(self) -> None:
        self.events.append(("disconnected",))


def update3(last_id: str, x: int) -> dict[str, Any]:
    return {"id": None, "method": "update3",
            "params": [DATA_MONITOR, last_id, {"T": {ROW: {"modify": {"x": x}}}}]}


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def following(follower: Follower, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    task = asyncio.create_task(follower.run())
    try:
        await body()
    finally:
        await follower.close()
        await task


def monitor_since_ids(source: FakeSource) -> list[str]:
    """The last-txn-id of each monitor_cond_since the source was sent."""
    return [params[3] for _, method, params in source.requests if method == "monitor_cond_since"]


Body = Callable[[FakeSource, Sink, Follower], Coroutine[Any, Any, None]]


def follow_fake_source(body: Body, *, prepare: Callable[[FakeSource, Sink], None] | None = None,
                       **follower_options: Any) -> None:
    """Run ``body(source, sink, follower)`` with a Follower of one FakeSource.

    ``prepare(source, sink)``, if given, runs before the Follower is made, so
    before its first connection: what the source scripts or the sink refuses
    is set when the first session begins.  The Follower is closed when the
    body ends.
    """
    async def test() -> None:
        async with FakeSource() as source:
            sink = Sink()
            if prepare is not None:
                prepare(source, sink)
            follower = Follower([source.remote], "Test", sink, **follower_options)
            await following(follower, lambda: body(source, sink, follower))

    run(test)


def test_updates_in_the_same_packet_as_the_monitor_reply_follow_start() -> None:
    def prepare(source: FakeSource, sink: Sink) -> None:
        source.after_monitor = [update3("a" * 8 + TXN[8:], 1), update3("b" * 8 + TXN[8:], 2)]

    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        await eventually(lambda: len(sink.events) == 3, "the two updates")
        assert [e[0] for e in sink.events] == ["start", "update", "update"]
        assert sink.events[0] == ("start", True, TXN)
        assert sink.events[2][1] == {"T": {ROW: {"modify": {"x": 2}}}}
        assert follower.last_id == "b" * 8 + TXN[8:]
        assert source.methods() == ["monitor_cond", "set_db_change_aware", "get_schema",
                                    "monitor_cond_since"]
        assert monitor_since_ids(source) == [ZERO_UUID]

    follow_fake_source(body, prepare=prepare)


def test_a_sink_that_fails_gets_everything_again_at_once() -> None:
    def prepare(source: FakeSource, sink: Sink) -> None:
        sink.fail_updates = 1

    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        source.notify(**_notification(update3(TXN, 1)))
        await eventually(lambda: len(monitor_since_ids(source)) == 2, "the resync")
        # The first session resumed from nothing; so does the second,
        # though the follower held TXN: its copy may be damaged.
        assert monitor_since_ids(source) == [ZERO_UUID, ZERO_UUID]
        await eventually(lambda: follower.connected, "the second session")
        assert [e[0] for e in sink.events] == ["start", "disconnected", "start"]
        assert "could not apply" in str(follower.last_error)

    # A long back-off: the resync must not wait for it.
    follow_fake_source(body, prepare=prepare, backoff=(30, 30))


def test_a_sink_that_always_fails_is_retried_with_back_off() -> None:
    def prepare(source: FakeSource, sink: Sink) -> None:
        sink.fail_starts = True

    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await asyncio.sleep(1.0)
        # At once once, then after 0.2 s, 0.4 s, 0.4 s...: not a hundred sessions.
        assert 2 <= len(monitor_since_ids(source)) <= 5
        assert not follower.connected and sink.events == []

    follow_fake_source(body, prepare=prepare, backoff=(0.2, 0.4))


def _notification(message: dict[str, Any]) -> dict[str, Any]:
    return {"method": message["method"], "params": message["params"]}


def test_monitor_canceled_refetches_the_schema_and_resyncs() -> None:
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        source.notify("monitor_canceled", [DATA_MONITOR])
        await eventually(lambda: len(monitor_since_ids(source)) == 2, "the resync")
        assert source.methods(2) == ["monitor_cond", "set_db_change_aware", "get_schema",
                                     "monitor_cond_since"]
        assert monitor_since_ids(source)[1] == ZERO_UUID

    follow_fake_source(body, backoff=(30, 30))


def test_a_schema_change_in_the_server_row_resyncs() -> None:
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        # The same schema in other words (spacing, key order): nothing to do.
        same = json.dumps(SCHEMA, indent=1, sort_keys=True)
        source.change_server_row(schema=same)
        source.notify("echo", [])  # a request after it, to know it was read
        await asyncio.sleep(0.2)
        assert len(monitor_since_ids(source)) == 1
        changed = json.dumps({**SCHEMA, "version": "2.0.0"})
        source.change_server_row(schema=changed)
        await eventually(lambda: len(monitor_since_ids(source)) == 2, "the resync")
        assert monitor_since_ids(source)[1] == ZERO_UUID

    follow_fake_source(body, backoff=(30, 30))


def test_leader_only_moves_on_from_a_source_that_is_not_the_leader() -> None:
    async def test() -> None:
        async with FakeSource(leader=False) as follower_source, FakeSource() as leader_source:
            sink = Sink()
            follower = Follower([follower_source.remote, leader_source.remote], "Test", sink,
                                leader_only=True, backoff=(0.01, 0.05))

            async def body() -> None:
                await follower.wait_connected(5)
                assert follower.remote == leader_source.remote
                assert follower_source.methods() == ["monitor_cond"]  # left at the _Server check
                assert sink.events == [("start", True, TXN)]
                assert follower.server_row["leader"] is True
                # The leader loses its leadership: on to the next remote.
                leader_source.change_server_row(leader=False)
                await eventually(lambda: not follower.connected, "leaving the old leader")
                assert "not the leader" in str(follower.last_error)

            await following(follower, body)

    run(test)


def test_without_leader_only_a_follower_source_is_fine() -> None:
    def prepare(source: FakeSource, sink: Sink) -> None:
        source.leader = False

    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        assert follower.server_row["leader"] is False
        assert follower.server_row["model"] == "standalone"

    follow_fake_source(body, prepare=prepare)


def test_a_silent_source_is_left_after_a_probe() -> None:
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        source.silent = True
        await eventually(lambda: not follower.connected, "the probe to fail")
        assert "no answer to an echo probe" in str(follower.last_error)
        assert sink.events[-1] == ("disconnected",)

    follow_fake_source(body, probe_interval=0.1, backoff=(30, 30))


def test_notifications_not_for_the_monitors_go_to_the_callback() -> None:
    got: list[tuple[str, list[Any]]] = []

    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        source.notify("locked", ["my-lock"])
        await eventually(lambda: got == [("locked", ["my-lock"])], "the locked notification")

    follow_fake_source(body, on_notification=lambda method, params: got.append((method, params)))


def test_a_request_says_where_it_went_for_a_cancel_of_it() -> None:
    """``sent`` gets the connection and the request's id there: a ``cancel``
    naming them reaches the source on the request's connection, for it."""
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        sent: list[tuple[Any, int]] = []
        reply = await follower.request("echo", ["x"],
                                       lambda connection, id_: sent.append((connection, id_)))
        assert reply == ["x"]
        [(connection, request_id)] = sent
        await connection.notify("cancel", [request_id])
        await eventually(lambda: source.methods()[-1] == "cancel", "the cancel")
        echo = source.methods().index("echo")
        assert source.requests[-1] == (source.requests[echo][0], "cancel", [source.ids[echo]])

    follow_fake_source(body, probe_interval=None)


def test_a_condition_changed_while_disconnected_asks_for_everything() -> None:
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        await follower.wait_connected(5)
        source.writers[-1].close()
        await eventually(lambda: not follower.connected, "the loss")
        await follower.cond_change({"T": [["x", "==", 2]]})
        await eventually(lambda: follower.connected, "the reconnection")
        requests = [p for _, m, p in source.requests if m == "monitor_cond_since"]
        assert requests[1][2] == {"T": [{"where": [["x", "==", 2]]}]}
        assert requests[1][3] == ZERO_UUID  # a delta since TXN would miss rows that now match

    follow_fake_source(body, backoff=(0.2, 0.2), conditions={"T": [["x", "==", 1]]})


def test_close_cuts_a_set_up_short() -> None:
    async def test() -> None:
        async with FakeSource() as source:
            source.silent = True  # accepts, never answers: set-up would wait setup_timeout
            follower = Follower([source.remote], "Test", Sink(), setup_timeout=30)
            task = asyncio.create_task(follower.run())
            await eventually(lambda: source.methods() == ["monitor_cond"], "the first request")
            started = time.monotonic()
            await follower.close()
            await asyncio.wait_for(task, 2)
            assert time.monotonic() - started < 2

    run(test)


def test_unreadable_notifications_end_the_session_not_the_follower() -> None:
    async def body(source: FakeSource, sink: Sink, follower: Follower) -> None:
        for bad in ({"method": "update2", "params": [SERVER_MONITOR, {"Database": {ROW: [1]}}]},
                    {"method": "update3", "params": [DATA_MONITOR, "id-without-updates"]}):
            await follower.wait_connected(5)
            sessions = len(source.writers)
            source.notify(**bad)
            await eventually(lambda n=sessions: len(source.writers) > n and follower.connected,
                             f"a new session after {bad['method']}")
            assert f"{bad['method']} notification" in str(follower.last_error)
        assert [e[0] for e in sink.events] == ["start", "disconnected"] * 2 + ["start"]

    follow_fake_source(body, backoff=(0.05, 0.1))

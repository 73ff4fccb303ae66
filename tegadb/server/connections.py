"""The connections and listeners: the asyncio side of serving.

Each client is a `Connection` (an asyncio protocol) that feeds received bytes
to the framer, hands the messages to the methods layer and writes the
replies; `Server` owns the listeners and the group-commit gate that flushes
every journal once per event-loop turn before any reply of that turn goes out.
Compiled with the core (tegadb/native.py): every request passes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..protocol.framer import Framer, Leftovers, ProtocolError
from ..protocol.messages import encode_request
from ..protocol.remotes import Remote
from . import methods, unix_sockets
from .service import DatabaseService, ServerDatabases

T = TypeVar("T")

log = logging.getLogger("tegadb.server")

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_MAX_BACKLOG = 64 * 1024 * 1024
# Input read but not yet served (incomplete messages, bytes waiting for a
# later turn), all connections together: past it, the connection holding
# the most is dropped.  Eight clients each sending an unfinished 60 MiB
# message took the server from 33 to 513 MiB before this cap.
DEFAULT_MAX_INPUT = 256 * 1024 * 1024
# A connection that held this much input hands freed memory back to the
# system when it goes (glibc keeps it otherwise; see malloc_trim).
TRIM_AFTER_INPUT = 1024 * 1024
# OVS probes TCP and TLS peers after 5 s of silence and drops them after 5 s
# more.  It leaves Unix-socket peers alone; tegadb probes them too unless told
# not to (Server.probe_unix), since a stuck local client holds memory as well.
PROBE_INTERVAL = 5.0
# How long a started message may take to arrive whole (a client sending one
# byte a second would otherwise hold its buffer forever).
MESSAGE_TIMEOUT = 30.0
# A connection's share of an event-loop turn: at most this many messages,
# and, while other connections share the loop and no batch is being built,
# about TIME_PER_TURN of work; the rest waits for later turns with reading
# paused, so a client pipelining thousands of requests delays the others by
# one such share, not by all of its requests.  ovsdb-server's
# ovsdb_jsonrpc_session_run (ovsdb/jsonrpc-server.c) takes one message per
# session per main-loop run, and none while the session's replies are not
# all written.  50 messages keep a pipelining client's batch (and its group
# commit) whole: W2's 32 in flight per connection fit in one turn.
# Transactions joining a batch are not cut off by time: every reply waits
# for that batch's write anyway, and a batch cut in two costs a second write.
MESSAGES_PER_TURN = 50
# Before the time budget, a flood of small requests took 200-450 us a turn
# (50 served, 8 KiB framed: ~2 us a message each), and another client's
# round trip waited for that.  A turn costs the loop ~5 us.  W8's p99 round
# trip: 143 us with 30 us turns and 512-byte slices, 117 us with these
# (ovsdb-server: ~105 us), for 30% more CPU per flood request.
TIME_PER_TURN = 15e-6
# A read up to this size is framed at once: a pipelining client's batch
# (W2's 32 requests are 5.6 KiB).  A larger read (a flood, a large message)
# is framed a turn's worth at a time: INPUT_PER_TURN for a connection alone
# on the server (nobody waits for the loop), else INPUT_SLICE at a time, as
# many slices a turn as TIME_PER_TURN allows (256 bytes of small requests
# take ~10 us to frame).  Inside a message already larger than
# LARGE_MESSAGE_SLICE, framing costs by the byte (~17 us a KiB), not by the
# message, and each slice costs ~3 us more: such a message is framed
# LARGE_MESSAGE_SLICE at a time (a 1000-row transaction, 147 KB, with
# another connection open: 170 turns and 14% more CPU per row in 256-byte
# slices, 79 turns and 3% more so, against 20 turns unsliced).
INPUT_PER_TURN = 8192
INPUT_SLICE = 256
LARGE_MESSAGE_SLICE = 2048
# A message longer than this is decoded a step (two 32 KiB pieces) per turn:
# at once, a 60 MiB one held every other client up for ~350 ms.
DECODE_AT_ONCE = 64 * 1024
# How long the loop keeps polling, instead of sleeping, for a client that
# answers quickly (see Server.input_arrived).  A sequential client's next
# request came 40-80 us after the reply in `make bench`'s W1.
BUSY_POLL = 100e-6


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, which hands freed heap memory back to the system,
    or None.  A dropped peer's backlog is many megabytes freed at once, which
    glibc otherwise keeps (RSS stayed 8 MB up after a 10 MB backlog was
    freed).  Looked up on first use: ctypes would be ~1 ms of every start."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc


class Connection(asyncio.Protocol):
    """One client connection: bytes in through the framer, bytes out to the transport."""

    def __init__(self, server: Server, remote: Remote) -> None:
        self.server = server
        self.remote = remote
        self.framer = Framer(server.max_message_size, large=DECODE_AT_ONCE)
        self.transport: asyncio.Transport | None = None
        self.session: methods.Session | None = None
        self.held: list[bytes] = []
        self.held_size = 0
        # Output of the messages being served together (serve_pending), sent
        # in one write when they are done; None: each send writes at once.
        self.collected: list[bytes] | None = None
        self.aborted = False
        self.probe_interval = (
            0.0 if remote.is_unix and not server.probe_unix else server.probe_interval)
        self.last_received = 0.0
        self.probe_sent = False
        self.probe_timer: asyncio.TimerHandle | None = None
        # Messages received and not served yet (beyond this turn's
        # MESSAGES_PER_TURN, or held back: see serve_pending), in order.
        self.pending: deque[object] = deque()
        self.pending_error: ProtocolError | None = None   # after them: close
        self.waiting = False   # in the server's backlog
        self.unparsed = memoryview(b"")   # bytes read but not framed yet
        self.deferred_scheduled = False
        self.input_paused = False   # reading paused until the above are served
        self.input_held = 0   # bytes of it counted in the server's total
        self.holds_collector = False   # paused it while decoding a large message
        self.input_peak = 0
        # loop.time() when the message now in the framer began; 0: none.
        self.message_started = 0.0
        self.deadline_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"unix:{self.remote.path}"
        self.session = methods.Session(self.server.databases, name, self.send, self.close)
        self.server.connections.add(self)
        log.debug("%s: connected", name)
        if self.probe_interval:
            self.last_received = self.server.loop.time()
            self.probe_timer = self.server.loop.call_later(self.probe_interval, self.probe)

    def probe(self) -> None:
        """Echo an idle peer; drop it if it stays silent one more interval."""
        loop = self.server.loop
        session = self.session
        if self.input_paused and session is not None and not session.backlogged:
            # Not reading its input (our doing: serving what came before, a
            # turn at a time), so its answer may be waiting behind.  A peer
            # that does not read our output gets no such pass.
            self.last_received = loop.time()
        idle = loop.time() - self.last_received
        if idle >= self.probe_interval:
            if self.probe_sent:
                self.abort(f"no response to inactivity probe after {idle:.3g} seconds")
                return
            self.probe_sent = True
            self.last_received = loop.time()
            self.send(encode_request("echo", "echo", []))
        delay = self.probe_interval - (loop.time() - self.last_received)
        self.probe_timer = loop.call_later(max(delay, 0.01), self.probe)

    def data_received(self, data: bytes) -> None:
        server = self.server
        server.bytes_received += len(data)
        if server.busy_poll:
            server.input_arrived()
        if self.probe_interval:
            self.last_received = server.loop.time()
            self.probe_sent = False
        if self.input_paused:
            # Read before the pause took effect (TLS may): after the rest.
            self.unparsed = memoryview(bytes(self.unparsed) + data)
        else:
            if len(data) > INPUT_PER_TURN:
                cut = self.input_slice()
                self.unparsed = memoryview(data)[cut:]
                data = data[:cut]
                self.pause_input()
            self.take(data)
        if self.input_held or self.framer.buffered or self.unparsed:
            self.account_input()

    def account_input(self) -> None:
        """Bring the server's count of input held (read, not yet served)
        up to date with this connection's; past the server's cap, shed."""
        held = self.framer.buffered + len(self.unparsed)
        server = self.server
        server.input_held += held - self.input_held
        self.input_held = held
        if held > self.input_peak:
            self.input_peak = held
        if server.input_held > server.max_input:
            server.shed_input()

    def take(self, data: bytes) -> None:
        """Frame ``data`` and serve (or queue) the messages it completes."""
        if self.pending_error is not None:
            return  # the connection closes once what came before is served
        try:
            messages = self.framer.feed(data)
        except ProtocolError as e:
            # Messages completed before the bad bytes are served first, as OVS does.
            messages, self.pending_error = e.messages, e
            self.unparsed = memoryview(b"")
        if self.framer.buffered:
            if self.server.message_timeout:
                self.message_in_progress(bool(messages))
        elif self.message_started:
            self.message_started = 0.0
        if self.framer.decoding and not self.holds_collector:
            self.hold_collector(True)
        self.pending.extend(messages)
        self.serve_pending()
        if self.framer.leftovers:
            self.hand_over_leftovers()
        if self.holds_collector and not self.framer.decoding:
            self.hold_collector(False)

    def hand_over_leftovers(self) -> None:
        """Large messages decoded and served go to the server to be freed."""
        self.server.discard(self.framer.leftovers)
        self.framer.leftovers.clear()

    def hold_collector(self, hold: bool) -> None:
        """Pause the cyclic GC while a large message is decoded, until it has
        been served (and freed) if it could be at once.  Its young objects
        grow by the million: at 60 MiB, one collection of them took 160 ms,
        while freed before any collection, they cost none."""
        self.holds_collector = hold
        if hold:
            self.server.pause_collector()
        else:
            self.server.resume_collector()

    def serve_pending(self, resumed: bool = False) -> None:
        """Serve this turn's share (MESSAGES_PER_TURN, TIME_PER_TURN) of the
        messages received, in order, and the rest on later turns.

        A message the server must hold (Server.must_hold) stops the queue:
        the connection then waits in the server's backlog, and so does any
        connection with input while others wait, until the backlog is served
        (``resumed``).  One queue per connection keeps its messages in order
        whichever way they are served.
        """
        server = self.server
        session = self.session
        assert session is not None
        pending = self.pending
        if pending and (self.waiting or (server.backlog and not resumed)):
            self.wait()
            return
        if len(pending) > 1:
            # One write for the replies of all of them, not one each: the
            # peer (and the system) then handles one wake-up per turn.
            self.collected = []
        shared = len(server.connections) > 1
        deadline = time.perf_counter() + TIME_PER_TURN
        try:
            for served in range(MESSAGES_PER_TURN):
                if not pending:
                    break
                if (served and shared and not server.gate_closed
                        and time.perf_counter() >= deadline):
                    break
                if server.gate_closed and server.must_hold(pending[0]):
                    self.wait()
                    return
                try:
                    methods.handle_message(session, pending.popleft())
                except ProtocolError as e:
                    log.warning("%s: %s, closing connection", session.peer, e)
                    self.close()
                    return
                if session.closed:
                    return
        finally:
            self.send_collected()
        if pending or self.unparsed or self.framer.decoding:
            self.pause_input()
        elif self.pending_error is not None:
            log.warning("%s: %s, closing connection", session.peer, self.pending_error)
            if server.observer is not None:
                server.observer.error("protocol error")
            self.close()
        elif self.input_paused:
            self.input_paused = False
            if self.transport is not None and not session.backlogged:
                self.transport.resume_reading()

    def wait(self) -> None:
        """Queue behind the server's backlog (see serve_pending)."""
        if not self.waiting:
            self.waiting = True
            self.server.backlog.append(self)

    def pause_input(self) -> None:
        """Stop reading until the input already received has been served."""
        if not self.input_paused and self.transport is not None:
            self.input_paused = True
            self.transport.pause_reading()
        self.schedule_deferred()

    def schedule_deferred(self) -> None:
        assert self.session is not None
        if not self.deferred_scheduled and not self.session.backlogged:
            self.deferred_scheduled = True
            self.server.loop.call_soon(self.serve_deferred)

    def serve_deferred(self) -> None:
        """This turn's share of the input left from earlier turns: messages
        already framed, else a step of a large message's decoding, else the
        input that follows, framed input_slice() at a time until some message
        is waiting or TIME_PER_TURN has passed (nothing while the peer does
        not read: resume_writing schedules this again)."""
        self.deferred_scheduled = False
        session = self.session
        if self.transport is None or session is None or session.closed or session.backlogged:
            return
        if self.pending:
            self.serve_pending()
        elif self.framer.decoding:
            self.take(b"")
            self.account_input()
        elif self.unparsed:
            self.frame_unparsed()
        else:
            self.serve_pending()  # only resumes reading

    def frame_unparsed(self) -> None:
        """Frame the input left from earlier turns, input_slice() at a time,
        until some message is waiting or TIME_PER_TURN has passed."""
        session = self.session
        assert session is not None
        deadline = time.perf_counter() + TIME_PER_TURN
        while True:
            cut = self.input_slice()
            data = bytes(self.unparsed[:cut])
            self.unparsed = self.unparsed[cut:]
            self.take(data)
            # Closing or aborting drops the input: nothing is left then.  A
            # large message's decoding goes a step a turn (serve_deferred).
            if (self.pending or not self.unparsed or self.framer.decoding
                    or session.backlogged or time.perf_counter() >= deadline):
                break
        self.account_input()

    def input_slice(self) -> int:
        """How much of a large read to frame at a time (see INPUT_SLICE)."""
        if len(self.server.connections) < 2:
            return INPUT_PER_TURN
        return LARGE_MESSAGE_SLICE if self.framer.buffered > LARGE_MESSAGE_SLICE else INPUT_SLICE

    def message_in_progress(self, completed_some: bool) -> None:
        """Start the deadline of a message that began in the last read."""
        loop = self.server.loop
        if completed_some or not self.message_started:
            self.message_started = loop.time()
        if self.deadline_timer is None:
            self.deadline_timer = loop.call_at(
                self.message_started + self.server.message_timeout, self.check_deadline)

    def check_deadline(self) -> None:
        self.deadline_timer = None
        session = self.session
        if not self.message_started or self.transport is None or session is None:
            return
        loop = self.server.loop
        if self.input_paused or session.backlogged:
            # Not reading (our doing): the peer cannot finish meanwhile.
            self.message_started = loop.time()
        elapsed = loop.time() - self.message_started
        if elapsed >= self.server.message_timeout:
            self.abort(f"message incomplete after {elapsed:.3g} seconds "
                       f"({self.framer.buffered} bytes received)")
            return
        self.deadline_timer = loop.call_at(
            self.message_started + self.server.message_timeout, self.check_deadline)

    def send(self, data: bytes) -> None:
        """Write now, or hold while the group-commit gate is closed; either
        way, drop the peer instead if this takes its backlog past the limit."""
        transport = self.transport
        if transport is None:
            return
        if self.collected is not None:
            self.collected.append(data)
            return
        session = self.session
        assert session is not None
        limit = self.server.max_backlog
        if self.server.gate_closed:
            if ((session.backlogged or self.held_size + len(data) > limit)
                    and not self.check_backlog(len(data))):
                return
            if not self.held:
                self.server.held_connections.append(self)
            self.held.append(data)
            self.held_size += len(data)
        # Until the peer stops keeping up (pause_writing), the transport's
        # backlog is below its high-water mark: only a message past the
        # limit by itself needs a look.
        elif (not session.backlogged and len(data) <= limit) or self.check_backlog(len(data)):
            self.server.bytes_sent += len(data)
            transport.write(data)

    def check_backlog(self, more: int) -> bool:
        """Whether ``more`` bytes fit in the output backlog; if not, the
        peer is dropped.  Its monitor updates merge while it is backed up
        (memory bounded by the rows that changed); what is already encoded
        is bounded here, before it is queued."""
        assert self.transport is not None
        limit = self.server.max_backlog
        backlog = self.transport.get_write_buffer_size() + self.held_size
        if backlog + more <= limit:
            return True
        self.abort(f"output backlog of {backlog} bytes plus {more} to send "
                   f"would exceed the limit of {limit}")
        return False

    def abort(self, reason: str) -> None:
        """Drop the peer at once: its queued output is discarded and the
        socket closed now, not after a flush it would never read; its
        session (monitors, locks) closes in connection_lost, next turn."""
        transport = self.transport
        if transport is None:
            return
        log.warning("%s: %s, disconnecting", self.session.peer if self.session else "?", reason)
        self.transport = None   # whatever is sent meanwhile goes nowhere
        self.aborted = True
        self.held.clear()
        self.held_size = 0
        self.drop_input()
        transport.abort()

    def release(self) -> None:
        if self.held and self.transport is not None:
            data = b"".join(self.held)
            self.server.bytes_sent += len(data)
            self.transport.write(data)
        self.held.clear()
        self.held_size = 0

    def drop_input(self) -> None:
        """Forget input not served yet: the connection is going away."""
        self.pending.clear()
        self.unparsed = memoryview(b"")
        if self.framer.leftovers:
            self.hand_over_leftovers()
        self.framer = Framer(self.server.max_message_size, large=DECODE_AT_ONCE)
        if self.holds_collector:
            self.hold_collector(False)
        if self.input_held:
            self.account_input()

    def send_collected(self) -> None:
        """Write what serve_pending collected (see Connection.collected)."""
        collected, self.collected = self.collected, None
        if collected:
            self.send(b"".join(collected))

    def close(self) -> None:
        self.send_collected()
        self.drop_input()
        if self.transport is not None:
            self.release()
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.probe_timer is not None:
            self.probe_timer.cancel()
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        self.drop_input()
        if self.session is not None:
            log.debug("%s: disconnected", self.session.peer)
            self.session.close()
        self.transport = None
        if self.aborted or self.input_peak >= TRIM_AFTER_INPUT:
            trim = malloc_trim()
            if trim is not None:
                trim(0)

    def pause_writing(self) -> None:
        # A client that stops reading gets no more input processed and no
        # monitor updates composed (they merge meanwhile), as in OVS.
        if self.transport is not None:
            self.transport.pause_reading()
        if self.session is not None:
            self.session.backlogged = True

    def resume_writing(self) -> None:
        if self.transport is not None and not self.input_paused:
            self.transport.resume_reading()
        if self.session is not None:
            self.session.backlogged = False
            self.session.flush_monitors()
            if self.pending or self.unparsed or self.framer.decoding:
                self.schedule_deferred()


# What may join a batch being built: transactions, also those another
# cluster member forwarded (methods.forward_transact).
_JOINS_BATCH = frozenset(("transact", "tegadb_forward"))


def _log_compaction_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("compaction failed: %s", task.exception())


class Server:
    """The listeners, the open databases and the group-commit gate."""

    def __init__(self, databases: ServerDatabases, max_message_size: int = DEFAULT_MAX_MESSAGE,
                 ssl_context: ssl.SSLContext | None = None,
                 probe_interval: float = PROBE_INTERVAL,
                 max_backlog: int = DEFAULT_MAX_BACKLOG,
                 busy_poll: float = BUSY_POLL,
                 message_timeout: float = MESSAGE_TIMEOUT,
                 probe_unix: bool = True, max_input: int = DEFAULT_MAX_INPUT) -> None:
        self.databases = databases
        self.max_input = max_input
        self.input_held = 0   # every connection's input read and not yet served
        self.message_timeout = message_timeout   # 0: no deadline
        self.probe_unix = probe_unix
        self.busy_poll = busy_poll
        self.last_active = 0.0   # time.monotonic() of the last input or group commit
        self.polling = False
        self.max_backlog = max_backlog
        self.probe_interval = probe_interval
        self.max_message_size = max_message_size
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.socket_paths: list[str] = []
        self.gate_closed = False
        self.held_connections: list[Connection] = []
        # Input held back while a batch may not commit (must_hold), served
        # in order once it is written (or settled, for a shared log).
        self.settling = False
        self.backlog: list[Connection] = []
        self.stopped = asyncio.Event()
        self.failed = False
        self.bytes_received = 0
        self.bytes_sent = 0
        # Times each group commit and counts errors when --metrics is on (metrics.Metrics).
        self.observer: Any = None
        self.loop = asyncio.get_running_loop()
        # Run once no batch is being built or written: freezing the rows
        # for a compaction, which must not see what may yet be undone.
        self.between_batches: list[Callable[[], None]] = []
        self.compactions: dict[str, asyncio.Task[None]] = {}
        # Compactions writing and large messages being decoded: the cyclic
        # GC is off meanwhile.
        self.collector_paused = 0
        self.leftovers: list[Leftovers] = []   # large messages being freed
        databases.attach(self.request_flush, self.loop.call_later, self.start_compaction)

    def shed_input(self) -> None:
        """All connections hold more input than the cap: drop the ones
        holding the most until they are within it."""
        while self.input_held > self.max_input:
            connection = max(self.connections, key=lambda c: c.input_held, default=None)
            if connection is None or not connection.input_held:
                return
            connection.abort(f"input held by all connections ({self.input_held} bytes) exceeds "
                             f"the limit of {self.max_input}; this one holds "
                             f"{connection.input_held}")
            connection.drop_input()

    def input_arrived(self) -> None:
        """Busy-poll while clients answer within ``busy_poll`` seconds.

        A sequential client's next request often comes some tens of
        microseconds after the reply.  Sleeping in epoll for that long costs
        more than the request: the wake-up and the caches it finds cold took
        about half of each round trip (measured: 14 us of work when hot, 25-45
        us after a 50 us sleep).  So while input follows our last activity
        within the window, the loop polls without sleeping (a callback that
        re-arms itself) until the window passes with no input.  A client that
        pauses longer never starts it, so the polling costs at most one window
        after each burst of quick exchanges.
        """
        now = time.monotonic()
        if now - self.last_active < self.busy_poll and not self.polling:
            self.polling = True
            self.loop.call_soon(self.poll)
        self.last_active = now

    def poll(self) -> None:
        if time.monotonic() - self.last_active < self.busy_poll:
            self.loop.call_soon(self.poll)
        else:
            self.polling = False

    def request_flush(self) -> None:
        """Called by a service when a commit is waiting to be written."""
        if not self.gate_closed:
            self.gate_closed = True
            self.loop.call_soon(self.flush)

    def must_hold(self, message: object) -> bool:
        """Whether ``message`` must wait for the batch being committed.

        While a batch is in flight nothing is served: it would read what may
        not commit.  While one is being built, only transactions join it
        (reads among them run again if it fails); anything else (a monitor's
        initial contents, say) would see it.  Asked only while the gate is
        closed: a batch exists only then.
        """
        if self.settling:
            return True
        databases = self.databases
        return databases.tentative and not (
            type(message) is dict and message.get("method") in _JOINS_BATCH
            and databases.accepts_transactions)

    def flush(self) -> None:
        """Group commit: write (and fsync) every journal once, then release replies."""
        observer = self.observer
        started = time.perf_counter() if observer is not None else 0.0
        # A batch that cannot be written fails on its own (its transactions
        # get "I/O error"): the service undoes it and the server goes on.
        settling = self.databases.flush()
        if observer is not None:
            observer.committed(time.perf_counter() - started)
        if settling:
            self.settling = True
            self.loop.create_task(self.settle(settling))
            return
        self.open_gate()
        self.resume()

    def open_gate(self) -> None:
        held, self.held_connections = self.held_connections, []
        self.gate_closed = False
        for connection in held:
            connection.release()
        self.databases.flush_sessions()
        if self.busy_poll:
            self.last_active = time.monotonic()
        if self.between_batches and not self.databases.tentative:
            waiting, self.between_batches = self.between_batches, []
            for callback in waiting:
                callback()

    async def settle(self, settling: list[Awaitable[None]]) -> None:
        """Wait until the shared logs took or refused this turn's batches,
        then release the replies and serve the input held meanwhile."""
        try:
            if len(settling) == 1:
                await settling[0]  # no task for gather to wrap it in
            else:
                await asyncio.gather(*settling)
        except Exception:
            log.exception("settling a batch failed; stopping")
            self.failed = True
            self.stopped.set()
            return
        finally:
            self.settling = False
        self.open_gate()
        self.resume()

    def resume(self) -> None:
        """After a batch: start the next one if answering this one began it
        (a parked transaction ran, or one that did not fit), and serve the
        input held meanwhile."""
        if self.databases.tentative:
            self.request_flush()
        if self.backlog:
            self.serve_backlog()

    def serve_backlog(self) -> None:
        while self.backlog and not self.settling:
            connection = self.backlog.pop(0)
            connection.waiting = False
            if connection.transport is None or connection.session is None \
                    or connection.session.closed:
                continue
            connection.serve_pending(resumed=True)
            if connection.waiting:
                # Held again, at the back: move it to the front to keep the order.
                self.backlog.insert(0, self.backlog.pop())
                return

    # --- compaction ------------------------------------------------------------
    def start_compaction(self, service: DatabaseService) -> None:
        """Compact ``service`` in the background; failures are logged."""
        self.loop.create_task(self.compact(service)).add_done_callback(_log_compaction_failure)

    async def compact(self, service: DatabaseService) -> None:
        """Compact ``service`` without stopping the server: freeze its rows
        between two batches, write the snapshot in a worker thread, then
        switch files.  A compaction already under way is waited for, not
        started again.  Raises StorageError when it fails (the old file
        stays in use)."""
        running = self.compactions.get(service.name)
        if running is None:
            running = self.compactions[service.name] = self.loop.create_task(
                self._compact(service))
            running.add_done_callback(lambda _: self.compactions.pop(service.name, None))
        await asyncio.shield(running)

    async def _compact(self, service: DatabaseService) -> None:
        compaction = await self._between_batches(service.begin_compaction)
        if compaction is None:
            return
        # The worker allocates a dict per row; left on, the cyclic collector
        # would run full collections of the whole heap meanwhile (20-30 ms
        # each at 100k rows, holding the interpreter: the loop stalls).  What
        # it allocates is acyclic and freed as it goes.
        self.pause_collector()
        try:
            await self.loop.run_in_executor(None, compaction.write)
        except BaseException:
            compaction.discard()
            raise
        finally:
            self.resume_collector()
        service.finish_compaction(compaction)

    def discard(self, leftovers: list[Leftovers]) -> None:
        """Free large messages a step per turn, the cyclic GC paused until
        they are gone (it would scan their millions of objects)."""
        if not self.leftovers:
            self.pause_collector()
            self.loop.call_soon(self.free_leftovers)
        self.leftovers += leftovers

    def free_leftovers(self) -> None:
        if self.leftovers[0].step():
            self.leftovers.pop(0)
        if self.leftovers:
            self.loop.call_soon(self.free_leftovers)
        else:
            self.resume_collector()

    def pause_collector(self) -> None:
        """Turn the cyclic GC off until as many resume_collector calls."""
        self.collector_paused += 1
        gc.disable()

    def resume_collector(self) -> None:
        self.collector_paused -= 1
        if not self.collector_paused:
            gc.enable()

    async def _between_batches(self, callback: Callable[[], T]) -> T:
        """``callback()``, run now if no batch is under way, else once the
        batches of this turn are written and answered."""
        if not self.gate_closed and not self.databases.tentative:
            return callback()
        future: asyncio.Future[T] = self.loop.create_future()

        def run() -> None:
            try:
                future.set_result(callback())
            except Exception as e:
                future.set_exception(e)

        self.between_batches.append(run)
        return await future

    async def listen(self, remote: Remote, socket_mode: int = unix_sockets.DEFAULT_SOCKET_MODE,
                     allow_world_writable_dir: bool = False) -> None:
        """Listen on `remote`; a Unix socket gets permissions `socket_mode`
        and, unless allowed, must not sit in a world-writable directory
        (unix_sockets)."""
        def factory() -> Connection:
            return Connection(self, remote)

        if remote.is_unix:
            path = remote.path
            if not allow_world_writable_dir:
                unix_sockets.check_directory(path)
            sock = unix_sockets.bind(path, socket_mode)
            try:
                listener = await self.loop.create_unix_server(factory, sock=sock)
            except BaseException:
                sock.close()
                raise
            self.socket_paths.append(path)
        else:
            context = self.ssl_context if remote.uses_tls else None
            if remote.uses_tls and context is None:
                raise ValueError(f"{remote}: pssl needs --private-key and --certificate")
            listener = await self.loop.create_server(
                factory, remote.host, remote.port, ssl=context, reuse_address=True)
        self.listeners.append(listener)
        log.info("listening on %s", remote)

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        for path in self.socket_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for connection in list(self.connections):
            connection.close()
        self.databases.close()

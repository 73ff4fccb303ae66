"""The connections and listeners: the asyncio side of serving.

Each client is a `Connection` (an asyncio protocol) that feeds received bytes
to the framer, hands the messages to the methods layer and writes the
replies; `Server` owns the listeners and the group-commit gate that flushes
every journal once per event-loop turn before any reply of that turn goes out.
Compiled with the core (tegadb/native.py): every request passes through here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable
from pathlib import Path

from ..protocol.framer import Framer, ProtocolError
from ..protocol.messages import encode_request
from ..protocol.remotes import Remote
from . import methods, unix_sockets
from .service import ServerDatabases
from .storage import StorageError

log = logging.getLogger("tegadb.server")

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_MAX_BACKLOG = 64 * 1024 * 1024
# OVS probes TCP and TLS peers after 5 s of silence and drops them after 5 s
# more; Unix-socket peers are not probed.
PROBE_INTERVAL = 5.0
# How long the loop keeps polling, instead of sleeping, for a client that
# answers quickly (see Server.input_arrived).  A sequential client's next
# request came 40-80 us after the reply in `make bench`'s W1.
BUSY_POLL = 100e-6


class Connection(asyncio.Protocol):
    """One client connection: bytes in through the framer, bytes out to the transport."""

    def __init__(self, server: Server, remote: Remote) -> None:
        self.server = server
        self.remote = remote
        self.framer = Framer(server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.session: methods.Session | None = None
        self.held: list[bytes] = []
        self.probe_interval = 0.0 if remote.is_unix else server.probe_interval
        self.last_received = 0.0
        self.probe_sent = False
        self.probe_timer: asyncio.TimerHandle | None = None

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
        idle = loop.time() - self.last_received
        if idle >= self.probe_interval:
            if self.probe_sent:
                assert self.session is not None
                log.warning("%s: no response to inactivity probe after %.3g seconds, "
                            "disconnecting", self.session.peer, idle)
                self.close()
                return
            self.probe_sent = True
            self.last_received = loop.time()
            self.send(encode_request("echo", "echo", []))
        delay = self.probe_interval - (loop.time() - self.last_received)
        self.probe_timer = loop.call_later(max(delay, 0.01), self.probe)

    def data_received(self, data: bytes) -> None:
        session = self.session
        assert session is not None
        server = self.server
        if server.busy_poll:
            server.input_arrived()
        if self.probe_interval:
            self.last_received = self.server.loop.time()
            self.probe_sent = False
        error = None
        try:
            messages = self.framer.feed(data)
        except ProtocolError as e:
            # Messages completed before the bad bytes are served first, as OVS does.
            messages, error = e.messages, e
        if server.backlog:
            server.backlog.append((self, messages, error))
            return
        self.serve(messages, error)

    def serve(self, messages: list[object], error: ProtocolError | None) -> bool:
        """Handle ``messages``; False if the server held them back (see Server.hold)."""
        session = self.session
        assert session is not None
        server = self.server
        for index, message in enumerate(messages):
            if server.shared and server.must_hold(message):
                server.backlog.append((self, messages[index:], error))
                return False
            try:
                methods.handle_message(session, message)
            except ProtocolError as e:
                log.warning("%s: %s, closing connection", session.peer, e)
                self.close()
                return True
            if session.closed:
                return True
        if error is not None:
            log.warning("%s: %s, closing connection", session.peer, error)
            self.close()
        return True

    def send(self, data: bytes) -> None:
        """Write now, or hold while the group-commit gate is closed."""
        if self.server.gate_closed:
            if not self.held:
                self.server.held_connections.append(self)
            self.held.append(data)
        elif self.transport is not None:
            self.transport.write(data)
            if self.session is not None and self.session.backlogged:
                self.check_backlog()

    def check_backlog(self) -> None:
        """Drop a peer that does not read while its output keeps growing.

        Its monitor updates merge while it is backed up (memory bounded by the
        rows that changed); what is already encoded is bounded here.
        """
        assert self.transport is not None and self.session is not None
        size = self.transport.get_write_buffer_size()
        if size > self.server.max_backlog:
            log.warning("%s: %d bytes of output backlog exceed the limit of %d, disconnecting",
                        self.session.peer, size, self.server.max_backlog)
            self.transport.abort()

    def release(self) -> None:
        if self.held and self.transport is not None:
            self.transport.write(b"".join(self.held))
        self.held.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.release()
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.probe_timer is not None:
            self.probe_timer.cancel()
        if self.session is not None:
            log.debug("%s: disconnected", self.session.peer)
            self.session.close()
        self.transport = None

    def pause_writing(self) -> None:
        # A client that stops reading gets no more input processed and no
        # monitor updates composed (they merge meanwhile), as in OVS.
        if self.transport is not None:
            self.transport.pause_reading()
        if self.session is not None:
            self.session.backlogged = True

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()
        if self.session is not None:
            self.session.backlogged = False
            self.session.flush_monitors()


class Server:
    """The listeners, the open databases and the group-commit gate."""

    def __init__(self, databases: ServerDatabases, max_message_size: int = DEFAULT_MAX_MESSAGE,
                 ssl_context: ssl.SSLContext | None = None,
                 probe_interval: float = PROBE_INTERVAL,
                 max_backlog: int = DEFAULT_MAX_BACKLOG,
                 busy_poll: float = BUSY_POLL) -> None:
        self.databases = databases
        self.busy_poll = busy_poll
        self.last_active = 0.0   # time.monotonic() of the last input or group commit
        self.polling = False
        self.max_backlog = max_backlog
        self.probe_interval = probe_interval
        self.max_message_size = max_message_size
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.socket_paths: list[Path] = []
        self.gate_closed = False
        self.held_connections: list[Connection] = []
        # With databases in a cluster: input held back while a batch may not
        # commit (must_hold), served in order once it settled.
        self.shared = bool(databases.shared)
        self.settling = False
        self.backlog: list[tuple[Connection, list[object], ProtocolError | None]] = []
        self.stopped = asyncio.Event()
        self.failed = False
        self.loop = asyncio.get_running_loop()
        databases.attach(self.request_flush, self.loop.call_later)

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
        (they are run again if it fails); anything else would see it.
        """
        if self.settling:
            return True
        databases = self.databases
        return databases.tentative and not (
            type(message) is dict and message.get("method") == "transact"
            and databases.accepts_transactions)

    def flush(self) -> None:
        """Group commit: write (and fsync) every journal once, then release replies."""
        try:
            settling = self.databases.flush()
        except StorageError as e:
            held, self.held_connections = self.held_connections, []
            # Memory now holds commits the file lacks: acknowledge none of
            # them and stop, so that a restart serves exactly what is on disk.
            log.error("%s; stopping without acknowledging this turn's commits", e)
            for connection in held:
                connection.held.clear()
            self.failed = True
            self.stopped.set()
            self.gate_closed = False
            return
        if settling:
            self.settling = True
            self.loop.create_task(self.settle(settling))
            return
        self.open_gate()

    def open_gate(self) -> None:
        held, self.held_connections = self.held_connections, []
        self.gate_closed = False
        for connection in held:
            connection.release()
        self.databases.flush_sessions()
        if self.busy_poll:
            self.last_active = time.monotonic()

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
        if self.databases.tentative:
            # Settling started a batch (a parked transaction ran, or one that
            # did not fit): it goes out like any other.
            self.request_flush()
        self.serve_backlog()

    def serve_backlog(self) -> None:
        while self.backlog and not self.settling:
            connection, messages, error = self.backlog.pop(0)
            if connection.session is None or connection.session.closed:
                continue
            if not connection.serve(messages, error):
                # Held again, at the back: move it to the front to keep the order.
                self.backlog.insert(0, self.backlog.pop())
                return

    async def listen(self, remote: Remote, socket_mode: int = unix_sockets.DEFAULT_SOCKET_MODE,
                     allow_world_writable_dir: bool = False) -> None:
        """Listen on `remote`; a Unix socket gets permissions `socket_mode`
        and, unless allowed, must not sit in a world-writable directory
        (unix_sockets)."""
        def factory() -> Connection:
            return Connection(self, remote)

        if remote.is_unix:
            path = Path(remote.path)
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
            path.unlink(missing_ok=True)
        for connection in list(self.connections):
            connection.close()
        self.databases.close()

"""An OVSDB JSON-RPC 1.0 client: a sans-IO core and two thin shells.

`ClientProtocol` knows the protocol and no I/O: it numbers requests (from 0,
as OVS's clients do), splits the byte stream into messages (`protocol.framer`),
answers the server's ``echo`` probes and hands back replies and
notifications.
`Connection` drives it with asyncio streams; `SyncConnection` with a
blocking socket, for scripts and the command line.

Only the members ``method``, ``params`` and ``id`` (requests) or ``id``,
``result`` and ``error`` (replies) are ever sent: OVS peers drop a
connection on any other member.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from ..protocol.framer import Framer, ProtocolError
from ..protocol.messages import classify, encode_notification, encode_reply, encode_request
from ..protocol.remotes import parse_active

# asyncio and ssl are imported where used: together they are almost half the
# start-up time of the blocking command-line client, which needs neither.
if TYPE_CHECKING:
    import asyncio
    import ssl

RECV_SIZE = 65536


class RPCError(Exception):
    """The server answered a request with an error (``error`` is its JSON value)."""

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error


# --- sans-IO core --------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    id: Any
    result: Any = None
    error: Any = None


@dataclass(frozen=True)
class Notification:
    method: str
    params: Any


class ClientProtocol:
    """The client side of an OVSDB session, without I/O.

    Framing, message shapes and encoding are the protocol layer's; this adds what a
    client does with them.
    """

    def __init__(self) -> None:
        self._framer = Framer()
        self._next_id = 0

    def request(self, method: str, params: list[Any]) -> tuple[int, bytes]:
        """A new request: its id and the bytes to send."""
        request_id = self._next_id
        self._next_id += 1
        return request_id, encode_request(request_id, method, params)

    @staticmethod
    def notification(method: str, params: list[Any]) -> bytes:
        return encode_notification(method, params)

    def receive(self, data: bytes) -> tuple[list[Reply | Notification], bytes]:
        """Events from received bytes, and bytes to send back (echo answers).

        Raises `ProtocolError` when the server breaks the protocol.
        """
        events: list[Reply | Notification] = []
        answers = []
        for value in self._framer.feed(data):
            msg = classify(value)
            if msg.kind in ("reply", "error"):
                events.append(Reply(msg.id, msg.result, msg.error))
            elif msg.kind == "notification":
                assert msg.method is not None
                events.append(Notification(msg.method, msg.params))
            elif msg.method == "echo":
                answers.append(encode_reply(msg.id, msg.params))
            # Other server requests are not part of OVSDB; like OVS clients, ignore them.
        return events, b"".join(answers)


def _result(reply: Reply) -> Any:
    if reply.error is not None:
        raise RPCError(reply.error)
    return reply.result


NotificationHandler = Callable[[Notification], None]


# --- asyncio shell -------------------------------------------------------------

class Connection:
    """An asyncio OVSDB connection.

    Notifications go to ``on_notification`` if given, else to the
    ``notifications`` queue.  ``closed`` resolves, with the reason, when the
    connection ends.  Use ``async with await Connection.open(...)``.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_notification: NotificationHandler | None = None) -> None:
        import asyncio

        self._reader = reader
        self._writer = writer
        self._protocol = ClientProtocol()
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._on_notification = on_notification
        self._loop = asyncio.get_running_loop()
        self.notifications: asyncio.Queue[Notification] = asyncio.Queue()
        self._closed: BaseException | None = None
        self.closed: asyncio.Future[BaseException] = self._loop.create_future()
        self._reading = self._loop.create_task(self._read_loop())

    @classmethod
    async def open(cls, remote: str, ssl_context: ssl.SSLContext | None = None,
                   on_notification: NotificationHandler | None = None) -> Connection:
        import asyncio

        where = parse_active(remote)
        if where.is_unix:
            reader, writer = await asyncio.open_unix_connection(where.path)
        else:
            if where.uses_tls and ssl_context is None:
                raise ValueError("ssl: remotes need an SSL context (key, certificate, CA)")
            reader, writer = await asyncio.open_connection(
                where.host, where.port, ssl=ssl_context if where.uses_tls else None)
        return cls(reader, writer, on_notification)

    async def request(self, method: str, params: list[Any],
                      sent: Callable[[int], None] | None = None) -> Any:
        """Send a request and wait for its result; RPCError on an error reply.

        ``sent`` is called with the request's id once it is written: the id
        a ``cancel`` notification names.
        """
        if self._closed is not None:
            raise ConnectionError("connection closed") from self._closed
        request_id, data = self._protocol.request(method, params)
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(data)
            if sent is not None:
                sent(request_id)
            await self._writer.drain()
            return _result(await future)
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: list[Any]) -> None:
        """Send a notification (``cancel`` is the only one OVSDB servers act on)."""
        self._writer.write(self._protocol.notification(method, params))
        await self._writer.drain()

    async def close(self) -> None:
        self._reading.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass  # the peer may already have gone

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionError("connection closed by the server")
        try:
            while data := await self._reader.read(RECV_SIZE):
                events, answers = self._protocol.receive(data)
                if answers:
                    self._writer.write(answers)
                for event in events:
                    self._dispatch(event)
        except (OSError, ProtocolError) as e:
            error = e
        finally:
            self._closed = error
            if not self.closed.done():
                self.closed.set_result(error)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)

    def _dispatch(self, event: Reply | Notification) -> None:
        if isinstance(event, Notification):
            if self._on_notification is not None:
                self._on_notification(event)
            else:
                self.notifications.put_nowait(event)
            return
        future = self._pending.get(event.id) if isinstance(event.id, int) else None
        if future is not None and not future.done():
            future.set_result(event)


# --- blocking shell ------------------------------------------------------------

def open_socket(remote: str, ssl_context: ssl.SSLContext | None = None,
                timeout: float | None = None) -> socket.socket:
    """A connected blocking socket for ``remote``."""
    where = parse_active(remote)
    if where.is_unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(where.path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((where.host, where.port), timeout)
    if where.uses_tls:
        if ssl_context is None:
            sock.close()
            raise ValueError("ssl: remotes need an SSL context (key, certificate, CA)")
        return ssl_context.wrap_socket(sock)
    return sock


class SyncConnection:
    """A blocking OVSDB connection (one request at a time).

    Notifications that arrive while waiting for a reply go to
    ``on_notification`` if given, else to the ``notifications`` list.
    """

    def __init__(self, sock: socket.socket,
                 on_notification: NotificationHandler | None = None) -> None:
        self._sock = sock
        self._protocol = ClientProtocol()
        self._replies: dict[Any, Reply] = {}
        self._on_notification = on_notification
        self.notifications: list[Notification] = []

    @classmethod
    def open(cls, remote: str, ssl_context: ssl.SSLContext | None = None,
             timeout: float | None = None,
             on_notification: NotificationHandler | None = None) -> SyncConnection:
        return cls(open_socket(remote, ssl_context, timeout), on_notification)

    def request(self, method: str, params: list[Any]) -> Any:
        """Send a request and block for its result; RPCError on an error reply."""
        request_id, data = self._protocol.request(method, params)
        self._sock.sendall(data)
        while request_id not in self._replies:
            self._receive()
        return _result(self._replies.pop(request_id))

    def notify(self, method: str, params: list[Any]) -> None:
        self._sock.sendall(self._protocol.notification(method, params))

    def wait_notification(self) -> Notification:
        """The oldest collected notification, blocking until there is one."""
        while not self.notifications:
            self._receive()
        return self.notifications.pop(0)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self) -> None:
        data = self._sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("connection closed by the server")
        events, answers = self._protocol.receive(data)
        if answers:
            self._sock.sendall(answers)
        for event in events:
            if isinstance(event, Reply):
                self._replies[event.id] = event
            elif self._on_notification is not None:
                self._on_notification(event)
            else:
                self.notifications.append(event)

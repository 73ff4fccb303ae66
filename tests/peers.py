"""Test infrastructure: a raw OVSDB client and real servers to talk to.

`RawClient` speaks JSON-RPC over a socket with no protocol knowledge beyond
framing, so tests see exactly what a server sends.  `start_ovsdb_server` and
`start_tegadb_server` run the reference server and ours the same way (Unix
socket plus a TCP port on 127.0.0.1, everything under one directory), so a
test can run unchanged against either.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "schemas"
TEST_SCHEMA = REPO_ROOT / "tests" / "data" / "test.ovsschema"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
OVS_BINARIES = ("ovsdb-server", "ovsdb-tool")


class ConnectionClosed(ConnectionError):
    """The server closed the connection."""


class RawClient:
    """A small synchronous JSON-RPC client for tests.

    `request()` waits for the reply to its own id.  Notifications (messages
    with a method and a null id) that arrive meanwhile are appended to
    `notifications`; anything else (replies to other ids, requests from the
    server such as echo probes) is kept for `recv()`.
    """

    def __init__(self, remote: str | socket.socket, timeout: float = 5.0) -> None:
        """Connect to `remote` (`unix:PATH` or `tcp:IP:PORT`) or wrap a connected socket."""
        self.timeout = timeout
        self.sock = connect(remote, timeout) if isinstance(remote, str) else remote
        self.notifications: list[dict[str, Any]] = []
        self._backlog: deque[dict[str, Any]] = deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._next_id = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self) -> int:
        """Allocate a request id; ids count up from 0 as real clients' do."""
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def request(self, method: str, params: Any, timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the full reply message for its id."""
        request_id = self.next_id()
        self.send({"method": method, "params": params, "id": request_id})
        return self.reply(request_id, timeout)

    def transact(self, db: str, *ops: dict[str, Any], timeout: float | None = None) -> list[Any]:
        """Run a transaction and return its result array (fails on an RPC error)."""
        reply = self.request("transact", [db, *ops], timeout)
        assert reply.get("error") is None, reply
        result: list[Any] = reply["result"]
        return result

    def reply(self, request_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the reply to `request_id`, sorting other messages aside."""
        for i, msg in enumerate(self._backlog):
            if _is_reply_to(msg, request_id):
                del self._backlog[i]
                return msg
        deadline = self._deadline(timeout)
        while True:
            msg = self._read(deadline)
            if _is_reply_to(msg, request_id):
                return msg
            self._set_aside(msg)

    def send(self, obj: Any) -> None:
        """Send one JSON value as compact text."""
        self.send_raw(json.dumps(obj, separators=(",", ":")).encode())

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (partial or concatenated messages, bad JSON)."""
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """Next message not yet handed out by `request()` (notifications excluded)."""
        if self._backlog:
            return self._backlog.popleft()
        return self._read(self._deadline(timeout))

    def wait_notification(self, method: str | None = None,
                          timeout: float | None = None) -> dict[str, Any]:
        """Pop the first collected notification (of `method`), reading if needed."""
        deadline = self._deadline(timeout)
        while True:
            for i, msg in enumerate(self.notifications):
                if method is None or msg.get("method") == method:
                    del self.notifications[i]
                    return msg
            self._set_aside(self._read(deadline))

    def wait_closed(self, timeout: float | None = None) -> bool:
        """True if the server closes the connection within the timeout.

        Messages received meanwhile are set aside as usual.
        """
        deadline = self._deadline(timeout)
        try:
            while True:
                self._set_aside(self._read(deadline))
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _set_aside(self, msg: dict[str, Any]) -> None:
        if msg.get("id") is None and msg.get("method") is not None:
            self.notifications.append(msg)
        else:
            self._backlog.append(msg)

    def _read(self, deadline: float) -> dict[str, Any]:
        """Return the next complete message from the buffer or the socket."""
        msg = self._decode_one()
        while msg is None:
            data = self._recv_some(deadline)
            self._buffer += self._decoder.decode(data)
            # Every message ends with "}": without one nothing new can be complete,
            # so a large message is not re-parsed for each of its chunks.
            if b"}" in data:
                msg = self._decode_one()
        return msg

    def _recv_some(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete message; buffered {self._buffer[:200]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError(f"no complete message; buffered {self._buffer[:200]!r}") from exc
        except ConnectionResetError as exc:
            raise ConnectionClosed("connection reset") from exc
        if not data:
            raise ConnectionClosed(
                f"server closed the connection; buffered {self._buffer[:200]!r}")
        return data

    def _decode_one(self) -> dict[str, Any] | None:
        """Take one JSON value off the front of the buffer, if it is complete."""
        text = self._buffer.lstrip()
        if not text:
            self._buffer = ""
            return None
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return None  # incomplete so far; a real syntax error shows up as a timeout
        self._buffer = text[end:]
        msg: dict[str, Any] = value
        return msg


def _is_reply_to(msg: dict[str, Any], request_id: Any) -> bool:
    # Compare types too: a reply to id 0 must not match a request with id false.
    reply_id = msg.get("id")
    return (msg.get("method") is None and reply_id == request_id
            and type(reply_id) is type(request_id))


def connect(remote: str, timeout: float = 5.0) -> socket.socket:
    """Connect to an active OVSDB remote: `unix:PATH` or `tcp:IP:PORT`."""
    kind, _, rest = remote.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Any = rest
    elif kind == "tcp":
        host, _, port = rest.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET)
        address = (host.strip("[]"), int(port))
    else:
        raise ValueError(f"unsupported remote {remote!r}")
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def not_ovsdb_remote() -> Iterator[str]:
    """A remote (`tcp:127.0.0.1:PORT`) that is not an OVSDB server: it answers
    every connection with an HTTP 400 and closes it.  Nothing of it is left
    listening or running after the block."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def answer_like_a_web_server() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_like_a_web_server, daemon=True)
    thread.start()
    try:
        yield f"tcp:127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process by its pid: SIGTERM, then SIGKILL if it lingers past
    `timeout`.  It has been reaped when this returns."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def schema_name(schema_path: str | os.PathLike[str]) -> str:
    """The database name a schema file declares."""
    name: str = json.loads(Path(schema_path).read_text())["name"]
    return name


class Peer:
    """A server process listening on `unix:<dir>/db.sock` and a TCP port.

    `command(port)` builds the server's argv for a TCP port; the database
    files are created before the first start and survive `restart()`.
    """

    def __init__(self, kind: str, directory: Path, command: Callable[[int], list[str]],
                 env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.directory = directory
        self.unix_path = str(directory / "db.sock")
        self.log_path = directory / "server.log"
        self.tcp_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._command = command
        self._env = env

    @property
    def remote_unix(self) -> str:
        return f"unix:{self.unix_path}"

    @property
    def remote_tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.tcp_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "server is not running"
        return self.process.pid

    def client(self, tcp: bool = False, timeout: float = 5.0) -> RawClient:
        """A new RawClient connected over the Unix socket (or TCP)."""
        return RawClient(self.remote_tcp if tcp else self.remote_unix, timeout)

    def start(self, port: int | None = None) -> None:
        """Start the server and wait until both sockets accept.

        Without `port` a free one is chosen (and another tried if it was taken
        meanwhile); `restart()` passes the old one so clients can reconnect.
        """
        for _attempt in range(3):
            self.tcp_port = port or free_tcp_port()
            argv = self._command(self.tcp_port)
            with open(self.directory / "console.txt", "ab") as console:
                self.process = subprocess.Popen(
                    argv, cwd=self.directory, env=self._env, stdin=subprocess.DEVNULL,
                    stdout=console, stderr=subprocess.STDOUT)
            try:
                ready = self._wait_ready()
            except BaseException:  # Ctrl-C or an exit while waiting: no server left behind
                self.stop()
                raise
            if ready:
                return
            self.stop()
        raise RuntimeError(f"{self.kind} did not start: {' '.join(argv)}\n{self.diagnostics()}")

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL if it lingers."""
        if self.process is None:
            return
        process, self.process = self.process, None
        stop_process(process)

    def kill(self) -> None:
        """SIGKILL the server (a crash): nothing of it runs after this returns."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop and start again on the same database files and TCP port."""
        self.stop()
        self.start(self.tcp_port)

    def diagnostics(self) -> str:
        """The tail of the server's log and console output, for failure messages."""
        parts = []
        for path in (self.log_path, self.directory / "console.txt"):
            if path.exists():
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def _wait_ready(self) -> bool:
        """True once both sockets accept; False if the server exits or times out."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            if _accepts(self.remote_unix) and _accepts(self.remote_tcp):
                return True
            time.sleep(0.02)
        return False


PeerFactory = Callable[..., Peer]
"""What the `ovsdb_peer`, `tegadb_peer` and `peer` fixtures are: schema paths in, Peer out."""


def _accepts(remote: str) -> bool:
    try:
        connect(remote, timeout=1.0).close()
    except OSError:
        return False
    return True


def _run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")


def missing_ovs_binaries() -> list[str]:
    """The reference binaries that are not on PATH (`make peers` installs them)."""
    return [name for name in OVS_BINARIES if shutil.which(name) is None]


def start_ovsdb_server(directory: Path, schema_paths: Sequence[str | os.PathLike[str]]) -> Peer:
    """Create one database per schema and run the real ovsdb-server on them."""
    directory.mkdir(parents=True, exist_ok=True)
    db_files = []
    for schema in schema_paths:
        db_file = directory / f"{schema_name(schema)}.db"
        _run(["ovsdb-tool", "create", str(db_file), str(schema)], directory)
        db_files.append(str(db_file))
    peer = Peer("ovsdb-server", directory, ovsdb_server_command(directory, db_files))
    peer.start()
    return peer


def ovsdb_server_command(directory: Path, db_files: Sequence[str]) -> Callable[[int], list[str]]:
    """The argv of ovsdb-server serving `db_files`, everything of it under
    `directory` (its socket, control socket, pidfile and log), for a TCP port:
    what a `Peer` of kind ovsdb-server runs."""
    def command(port: int) -> list[str]:
        # --unixctl and --pidfile keep it out of /var/run/openvswitch (PEERS.md).
        return ["ovsdb-server", "--no-chdir",
                f"--remote=punix:{directory / 'db.sock'}",
                f"--remote=ptcp:{port}:127.0.0.1",
                f"--unixctl={directory / 'ovsdb-server.ctl'}",
                f"--pidfile={directory / 'ovsdb-server.pid'}",
                f"--log-file={directory / 'server.log'}",
                *db_files]
    return command


def start_tegadb_server(directory: Path, schema_paths: Sequence[str | os.PathLike[str]],
                        extra_args: Sequence[str] = (), bin_dir: Path | None = None) -> Peer:
    """Create one database per schema with tegadb-tool and run tegadb-server on them:
    the checkout's, or the commands installed in `bin_dir` (the bench's pip-installed tegadb)."""
    directory.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] | None = None
    if bin_dir is None:
        # Run from the checkout even where tegadb is not installed in this interpreter.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        tool = [sys.executable, "-m", "tegadb.cli.tegadb_tool"]
        server = [sys.executable, "-m", "tegadb.server"]
    else:
        tool, server = [str(bin_dir / "tegadb-tool")], [str(bin_dir / "tegadb-server")]
    db_files = []
    for schema in schema_paths:
        db_file = directory / f"{schema_name(schema)}.db"
        _run([*tool, "create", str(db_file), str(schema)], directory, env)
        db_files.append(str(db_file))

    def command(port: int) -> list[str]:
        return [*server,
                f"--remote=punix:{directory / 'db.sock'}",
                f"--remote=ptcp:{port}:127.0.0.1",
                f"--log-file={directory / 'server.log'}",
                *extra_args, *db_files]

    peer = Peer("tegadb", directory, command, env)
    peer.start()
    return peer


def start_tls_tegadb(directory: Path) -> tuple[Peer, dict[str, Path], int]:
    """tegadb-server on the test schema with a ``pssl:`` remote too: the
    server, its PKI (make_pki) and the TLS port."""
    pki = make_pki(directory)
    port = free_tcp_port()
    server = start_tegadb_server(directory / "s", [TEST_SCHEMA], [
        f"--remote=pssl:{port}:127.0.0.1", f"--private-key={pki['server.key']}",
        f"--certificate={pki['server.pem']}", f"--ca-cert={pki['ca.pem']}"])
    return server, pki, port


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA and two certificates it signed, "server" and "client" (openssl)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=tegadb test CA")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2")
    return {name: directory / name for name in
            ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}


class TegadbCluster:
    """`size` tegadb-server members serving one database (the test schema by
    default) as a cluster whose log is in the etcd cluster at `endpoints`,
    under a prefix of its own (so clusters of several tests share one etcd)."""

    def __init__(self, directory: Path, endpoints: str, size: int = 3,
                 schema: str | os.PathLike[str] = TEST_SCHEMA,
                 extra_args: Sequence[str] = ()) -> None:
        self.prefix = f"/test-{os.urandom(4).hex()}"
        self.endpoints = endpoints
        self.args = [f"--etcd-endpoints={endpoints}", f"--etcd-prefix={self.prefix}",
                     *extra_args]
        self.members: list[Peer] = []
        try:
            for index in range(size):
                self.members.append(start_tegadb_server(directory / f"m{index}", [schema],
                                                        extra_args=self.args))
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getitem__(self, index: int) -> Peer:
        return self.members[index]

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def pipelined_pairs(client: RawClient, prefix: str, count: int, db: str = "Test") -> set[str]:
    """Send ``count`` transactions of two Root rows each (``PREFIX-N-a`` and
    ``-b``), all at once; the ``PREFIX-N`` acknowledged before the connection
    dropped (the kill tests' load)."""
    acked: set[str] = set()
    try:
        for n in range(count):
            client.send({"method": "transact", "id": n, "params": [db, *(
                {"op": "insert", "table": "Root", "row": {"name": f"{prefix}-{n}-{half}"}}
                for half in "ab")]})
        for n in range(count):
            result = client.reply(n, timeout=10)["result"]
            assert len(result) == 2 and all("uuid" in r for r in result), result
            acked.add(f"{prefix}-{n}")
    except (OSError, ConnectionError):
        pass
    return acked


def assert_whole_pairs(held: list[str], acked: set[str]) -> None:
    """Every acknowledged pair of ``pipelined_pairs`` is held, and no pair in part."""
    pairs = {name.rsplit("-", 1)[0] for name in held}
    for pair in pairs:
        assert f"{pair}-a" in held and f"{pair}-b" in held, f"{pair} is there in part"
    assert acked <= pairs, sorted(acked - pairs)[:5]


def run_async(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    """Run an async test body on a fresh loop, bounded by ``timeout``."""
    asyncio.run(asyncio.wait_for(coro, timeout))


async def async_eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``check()`` on the loop until true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)

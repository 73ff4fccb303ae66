"""The load generator's transport: raw JSON-RPC 1.0 over Unix sockets.

The same code drives ovsdb-server and tegadb.  It runs on asyncio + uvloop
with plain `asyncio.Protocol`s (no streams, no per-request tasks): replies are
parsed by an incremental reader built on the C scanner of the `json` module,
and a pipeline sends the replacement requests of a whole read in one write.

Every reply is checked; a reply that is an error (or a transaction whose
result array holds an error) stops the run with `ReplyError`, so errors are
never counted as operations.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from json import JSONDecodeError
from typing import Any, Protocol

_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")
CLK_TCK = os.sysconf("SC_CLK_TCK")

Message = dict[str, Any]


class BenchError(Exception):
    """A workload could not be completed against a server."""

    status = "failed"


class ReplyError(BenchError):
    """The server answered with an error (or a malformed reply)."""


class NotSupported(BenchError):
    """The server does not implement a method the workload needs."""

    status = "not supported"


class ServerGone(BenchError):
    """The server closed the connection or exited."""


class BenchTimeout(BenchError):
    """The workload did not finish within its time limit."""

    status = "timeout"


# --- /proc ----------------------------------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent busy since boot (user, system, irq, steal...), in seconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` figure (VmHWM, VmRSS, ...) from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


# --- reply checks -----------------------------------------------------------

def error_text(msg: Message) -> str:
    return json.dumps(msg, separators=(",", ":"))[:300]


def rpc_failure(msg: Message) -> str | None:
    """Why a reply is an RPC error, or None."""
    error = msg.get("error")
    if error is None and "result" in msg:
        return None
    if error == "unknown method":
        raise NotSupported(f"unknown method: {error_text(msg)}")
    return f"error reply: {error_text(msg)}"


def txn_failure(msg: Message, n_ops: int) -> str | None:
    """Why a `transact` reply is not a success of all `n_ops` operations, or None."""
    why = rpc_failure(msg)
    if why:
        return why
    result = msg["result"]
    if type(result) is not list or len(result) != n_ops:
        return f"expected {n_ops} results: {error_text(msg)}"
    for r in result:
        if type(r) is not dict or "error" in r:
            return f"transaction failed: {error_text(msg)}"
    return None


def raise_if_failed(why: str | None) -> None:
    if why:
        raise ReplyError(why)


# --- the connection -----------------------------------------------------------

class Conn(asyncio.Protocol):
    """One client connection with an incremental reader.

    `on_messages(list)` gets the complete messages of each read; by default
    replies resolve the futures of `call()`.  Echo requests from the server
    (inactivity probes) are answered here.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pending: dict[Any, asyncio.Future[Message]] = {}
        self._next_id = 1_000_000_000  # call() ids, apart from a pipeline's 0, 1, ...
        self.on_messages: Callable[[list[Message]], None] = self._resolve
        self.on_lost: Callable[[str], None] | None = None
        self.lost: str | None = None
        self.notifications: list[Message] = []

    # protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        buf = self._buf + text if self._buf else text
        msgs = []
        pos = 0
        end = len(buf)
        scan = _scan_once
        while pos < end:
            try:
                obj, pos = scan(buf, pos)
            except StopIteration:
                skip = _WHITESPACE.match(buf, pos).end()  # type: ignore[union-attr]
                if skip == pos:
                    self._fail(f"not JSON at {buf[pos:pos + 80]!r}")
                    return
                pos = skip
                continue
            except JSONDecodeError:
                break  # incomplete: wait for more
            if type(obj) is dict and obj.get("method") == "echo" and obj.get("id") is not None:
                self.send_obj({"id": obj["id"], "result": obj.get("params", []), "error": None})
                continue
            msgs.append(obj)
        self._buf = buf[pos:] if pos < end else ""
        if msgs:
            self.on_messages(msgs)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"server closed the connection ({exc or 'EOF'})")

    def _fail(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ServerGone(why))
        self._pending.clear()
        if self.on_lost is not None:
            self.on_lost(why)
        if self.transport is not None:
            self.transport.abort()

    # sending
    def write(self, data: bytes) -> None:
        if self.lost is not None:
            raise ServerGone(self.lost)
        assert self.transport is not None
        self.transport.write(data)

    def send_obj(self, obj: Any) -> None:
        self.write(json.dumps(obj, separators=(",", ":")).encode())

    # simple request/response, for setup
    def _resolve(self, msgs: list[Message]) -> None:
        for msg in msgs:
            fut = self._pending.pop(msg.get("id"), None) if msg.get("method") is None else None
            if fut is None:
                self.notifications.append(msg)
            elif not fut.done():
                fut.set_result(msg)

    async def call(self, method: str, params: Any, timeout: float = 60.0) -> Message:
        request_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        self.send_obj({"method": method, "params": params, "id": request_id})
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BenchTimeout(f"no reply to {method} within {timeout}s") from None

    async def transact(self, db: str, ops: list[Any], timeout: float = 60.0) -> list[Any]:
        msg = await self.call("transact", [db, *ops], timeout)
        raise_if_failed(txn_failure(msg, len(ops)))
        result: list[Any] = msg["result"]
        return result

    def close(self) -> None:
        if self.transport is not None:
            self.on_lost = None
            self.lost = self.lost or "closed by the client"
            self.transport.close()


async def connect(path: str, factory: Callable[[], Conn] = Conn) -> Conn:
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_unix_connection(factory, path)
    except OSError as exc:
        raise ServerGone(f"cannot connect to {path}: {exc}") from None
    return conn


async def connect_many(path: str, n: int, factory: Callable[[], Conn] = Conn) -> list[Conn]:
    return [await connect(path, factory) for _ in range(n)]


# --- the pipeline -------------------------------------------------------------

class PipelineResult:
    def __init__(self, ok: int, elapsed: float, latencies: list[float] | None) -> None:
        self.ok = ok
        self.elapsed = elapsed
        self.latencies = latencies

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


class Pipeline:
    """Keep `inflight` requests outstanding on each connection.

    `make_request(i)` encodes request number i (its JSON-RPC id must be i);
    `check(i, msg)` returns why reply i is not a success, or None.  The run
    ends after `total` requests, or once `duration` seconds have passed (the
    requests in flight are then drained and counted).  With inflight=1 on one
    connection it is a sequential client whose latencies can be recorded.

    Answered requests are replaced in batches of `refill` (default a quarter
    of `inflight`), so a connection has between inflight-refill+1 and
    inflight requests outstanding: one write per batch keeps the generator's
    syscalls per operation low when a server answers one reply per write.
    """

    def __init__(self, conns: Sequence[Conn], make_request: Callable[[int], bytes],
                 check: Callable[[int, Message], str | None], inflight: int,
                 total: int | None = None, duration: float | None = None,
                 record_latency: bool = False, first_id: int = 0,
                 refill: int | None = None) -> None:
        assert total is not None or duration is not None
        self.refill = refill if refill is not None else max(1, inflight // 4)
        self.conns = list(conns)
        self.make_request = make_request
        self.check = check
        self.inflight = inflight
        self.total = total if total is not None else math.inf
        self.duration = duration
        self.record_latency = record_latency
        self.next_id = first_id
        self.first_id = first_id

    async def run(self, timeout: float) -> PipelineResult:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.outstanding: dict[int, float] = {}
        self.ok = 0
        self.failure: BaseException | None = None
        self.stopping = False
        self.latencies: list[float] | None = [] if self.record_latency else None
        self.total_end = self.first_id + self.total
        saved = [(c.on_messages, c.on_lost) for c in self.conns]
        self.t0 = time.perf_counter()
        self.t_last = self.t0
        self.deadline = self.t0 + self.duration if self.duration else math.inf
        try:
            for conn in self.conns:
                conn.on_messages = self._handler(conn)
                conn.on_lost = self._lost
                self._send(conn, self.inflight)
            try:
                await asyncio.wait_for(asyncio.shield(self.done), timeout)
            except TimeoutError:
                raise BenchTimeout(f"{self.ok} replies in {timeout:.0f}s, "
                                   f"{len(self.outstanding)} still outstanding") from None
        finally:
            for conn, (on_messages, on_lost) in zip(self.conns, saved):
                conn.on_messages, conn.on_lost = on_messages, on_lost
        if self.failure is not None:
            raise self.failure
        return PipelineResult(self.ok, self.t_last - self.t0, self.latencies)

    def _send(self, conn: Conn, n: int) -> None:
        if self.next_id + n > self.total_end:
            n = int(self.total_end - self.next_id)
        if n <= 0:
            return
        now = time.perf_counter()
        outstanding = self.outstanding
        make = self.make_request
        parts = []
        i = self.next_id
        for i in range(self.next_id, self.next_id + n):
            parts.append(make(i))
            outstanding[i] = now
        self.next_id = i + 1
        conn.write(b"".join(parts))

    def _finish(self, failure: BaseException | None = None) -> None:
        if failure is not None and self.failure is None:
            self.failure = failure
        self.stopping = True
        if not self.done.done():
            self.done.set_result(None)

    def _lost(self, why: str) -> None:
        self._finish(ServerGone(why))

    def _handler(self, conn: Conn) -> Callable[[list[Message]], None]:
        outstanding = self.outstanding
        check = self.check
        owed = 0  # answered requests of this connection not yet replaced
        refill = self.refill
        inflight = self.inflight

        def on_messages(msgs: list[Message]) -> None:
            nonlocal owed
            now = time.perf_counter()
            replies = 0
            latencies = self.latencies
            for msg in msgs:
                i = msg.get("id")
                sent = outstanding.pop(i, None) if type(i) is int else None
                if sent is None:
                    if msg.get("method") is not None and msg.get("id") is None:
                        continue  # a notification: not ours to judge here
                    self._finish(ReplyError(f"reply to no request: {error_text(msg)}"))
                    return
                assert type(i) is int
                try:
                    why = check(i, msg)
                except BenchError as exc:
                    self._finish(exc)
                    return
                if why:
                    self._finish(ReplyError(why))
                    return
                self.ok += 1
                replies += 1
                if latencies is not None:
                    latencies.append(now - sent)
            self.t_last = now
            if now >= self.deadline:
                self.stopping = True
            owed += replies
            if not self.stopping and (owed >= refill or owed >= inflight):
                self._send(conn, owed)
                owed = 0
            if not outstanding and (self.stopping or self.next_id >= self.total_end):
                self._finish()

        return on_messages


class Metering(Protocol):
    """What measures a phase (bench_workloads.Meter, once started; ClusterMeter)."""

    def stop(self, ops: int) -> dict[str, float]: ...


async def pipelined_throughput(conns: Sequence[Conn], make_request: Callable[[int], bytes],
                               check: Callable[[int, Message], str | None], inflight: int,
                               duration: float, timeout: float,
                               start_meter: Callable[[], Metering]) -> dict[str, Any]:
    """A Pipeline's throughput: a warm-up of a fifth of `duration`, then
    `duration` seconds measured by the meter `start_meter()` starts.  Ids keep
    counting from the warm-up, so no request repeats one (an insert names a new
    row).  The connections are closed after.  Returns `txn_per_s` and the
    meter's figures over the answered requests."""
    warm = Pipeline(conns, make_request, check, inflight, duration=duration / 5)
    await warm.run(timeout)
    meter = start_meter()
    res = await Pipeline(conns, make_request, check, inflight, duration=duration,
                         first_id=warm.next_id).run(timeout)
    metrics = meter.stop(res.ok)
    for conn in conns:
        conn.close()
    return {"txn_per_s": res.rate, **metrics}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]

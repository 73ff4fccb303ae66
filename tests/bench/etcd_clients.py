"""Which etcd client for tegadb's cluster mode: each candidate measured under uvloop.

    .venv/bin/python tests/bench/etcd_clients.py [--clients aetcd,etcd3aio,...]

Starts a 3-member etcd cluster (tests/etcdpeers.py), then runs each client in
a child process of its own (clean imports, its own protobuf settings) that
measures, on uvloop: sequential put latency, a txn (compare the value of a
head key, then two puts: the log append tegadb makes), txns with 64 in
flight, watch delivery (put through one client, event on another client's
watch, on another member), and fail-over: puts go on through a client given
every endpoint while the member it talks to is SIGKILLed.  etcdctl's own put
is measured as the floor.  Only aetcd is a dependency of tegadb: install the
others into the venv first (`.venv/bin/pip install etcd3aio etcd-client-py
aiohttp etcd3`); a candidate that does not import is reported as such.
docs/etcd-clients.md has the results and the choice.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from etcdpeers import EtcdCluster

SEQUENTIAL = 500
PIPELINED = 3000
IN_FLIGHT = 64
WATCHED = 200
REQUEST_TIMEOUT = 1.0
FAILOVER_DEADLINE = 15.0
VALUE = b"x" * 200  # about a small transaction's log record

# name -> (module imported, pip package, adapter class name below)
CANDIDATES = {
    "aetcd": ("aetcd", "aetcd", "AetcdClient"),
    "etcd3aio": ("etcd3aio", "etcd3aio", "Etcd3aioClient"),
    "etcd-client-py": ("etcd_client", "etcd-client-py", "RustClient"),
    "gateway-aiohttp": ("aiohttp", "aiohttp", "GatewayClient"),
    "etcd3": ("etcd3", "etcd3", "Etcd3ThreadClient"),
}
# python-etcd3's generated code predates protobuf 4: it imports only with the
# pure-Python protobuf runtime.
CHILD_ENV = {"etcd3": {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}}

WatchCallback = Callable[[bytes, bytes], None]


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Client:
    """What every candidate is driven through; `multi_endpoint` says whether
    it takes every endpoint and moves to another by itself."""

    multi_endpoint = False

    async def open(self, endpoints: list[str]) -> None: ...
    async def close(self) -> None: ...
    async def put(self, key: bytes, value: bytes) -> None: ...

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        """If head == expected: head = new and key = value; True if it applied."""
        raise NotImplementedError

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        """Call `callback(key, value)` for each put under `prefix`; return a canceller."""
        raise NotImplementedError


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


class AetcdClient(Client):
    async def open(self, endpoints: list[str]) -> None:
        import aetcd
        host, port = _host_port(endpoints[0])
        self.client = aetcd.Client(host=host, port=port, timeout=REQUEST_TIMEOUT)  # type: ignore[arg-type]
        await self.client.connect()

    async def close(self) -> None:
        await self.client.close()

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        tx = self.client.transactions
        succeeded, _ = await self.client.transaction(
            compare=[tx.value(head) == expected],
            success=[tx.put(head, new), tx.put(key, value)], failure=[])
        return bool(succeeded)

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        watch = await self.client.watch(prefix, range_end=_prefix_end(prefix))

        async def follow() -> None:
            async for event in watch:
                callback(event.kv.key, event.kv.value)

        task = asyncio.ensure_future(follow())

        async def cancel() -> None:
            await watch.cancel()
            task.cancel()
        return cancel


class Etcd3aioClient(Client):
    multi_endpoint = True

    async def open(self, endpoints: list[str]) -> None:
        import etcd3aio
        self.client = etcd3aio.Etcd3Client([url.removeprefix("http://") for url in endpoints])
        await self.client.connect()
        self.kv = self.client.kv

    async def close(self) -> None:
        await self.client.close()

    async def put(self, key: bytes, value: bytes) -> None:
        await self.kv.put(key, value, timeout=REQUEST_TIMEOUT)

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        kv = self.kv
        response = await kv.txn([kv.txn_compare_value(head, expected)],
                                [kv.txn_op_put(head, new), kv.txn_op_put(key, value)],
                                timeout=REQUEST_TIMEOUT)
        return bool(response.succeeded)

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        stream = self.client.watch.watch(prefix, _prefix_end(prefix))
        await anext(stream)  # the "created" response: registered from here on

        async def follow() -> None:
            async for response in stream:
                for event in response.events:
                    callback(event.kv.key, event.kv.value)

        task = asyncio.ensure_future(follow())

        async def cancel() -> None:
            task.cancel()
        return cancel


class RustClient(Client):
    multi_endpoint = True

    async def open(self, endpoints: list[str]) -> None:
        import etcd_client
        self.module = etcd_client
        options = etcd_client.ConnectOptions().with_timeout(REQUEST_TIMEOUT)
        self.context = etcd_client.Client(endpoints).connect(options)
        self.client = await self.context.__aenter__()

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        e = self.module
        txn = e.Txn().when([e.Compare.value(head, e.CompareOp.EQUAL, expected)]).and_then(
            [e.TxnOp.put(head, new), e.TxnOp.put(key, value)])
        return bool((await self.client.txn(txn)).succeeded)

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        stream = self.client.watch_prefix(prefix)

        async def follow() -> None:
            async for event in stream:
                callback(bytes(event.key), bytes(event.value))

        task = asyncio.ensure_future(follow())
        await asyncio.sleep(0.3)  # no simple way to learn that the watch is registered

        async def cancel() -> None:
            task.cancel()
        return cancel


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class GatewayClient(Client):
    """etcd's gRPC gateway (JSON over HTTP/1.1) with aiohttp."""

    async def open(self, endpoints: list[str]) -> None:
        import aiohttp
        self.url = endpoints[0]
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=IN_FLIGHT + 8),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))

    async def close(self) -> None:
        await self.session.close()

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.url + path, json=body) as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        body = {
            "compare": [{"key": _b64(head), "target": "VALUE", "result": "EQUAL",
                         "value": _b64(expected)}],
            "success": [{"request_put": {"key": _b64(head), "value": _b64(new)}},
                        {"request_put": {"key": _b64(key), "value": _b64(value)}}],
        }
        return bool((await self._call("/v3/kv/txn", body)).get("succeeded"))

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        import aiohttp
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}}
        response = await self.session.post(self.url + "/v3/watch", json=body,
                                           timeout=aiohttp.ClientTimeout(total=None))
        created = json.loads(await response.content.readline())
        assert created["result"].get("created"), created

        async def follow() -> None:
            async for line in response.content:
                for event in json.loads(line)["result"].get("events", ()):
                    kv = event["kv"]
                    callback(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")))

        task = asyncio.ensure_future(follow())

        async def cancel() -> None:
            task.cancel()
            response.close()
        return cancel


class Etcd3ThreadClient(Client):
    """python-etcd3 (synchronous gRPC), its calls run in a thread pool."""

    async def open(self, endpoints: list[str]) -> None:
        import etcd3
        host, port = _host_port(endpoints[0])
        self.client = etcd3.client(host=host, port=port, timeout=REQUEST_TIMEOUT)
        self.pool = ThreadPoolExecutor(IN_FLIGHT)

    async def _run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: function(*args, **kwargs))

    async def close(self) -> None:
        self.client.close()
        self.pool.shutdown()

    async def put(self, key: bytes, value: bytes) -> None:
        await self._run(self.client.put, key, value)

    async def append(self, head: bytes, expected: bytes, new: bytes, key: bytes,
                     value: bytes) -> bool:
        tx = self.client.transactions
        succeeded, _ = await self._run(
            self.client.transaction, compare=[tx.value(head) == expected],
            success=[tx.put(head, new), tx.put(key, value)], failure=[])
        return bool(succeeded)

    async def watch(self, prefix: bytes, callback: WatchCallback) -> Callable[[], Awaitable[None]]:
        loop = asyncio.get_running_loop()

        def on_response(response: Any) -> None:
            for event in getattr(response, "events", ()):
                loop.call_soon_threadsafe(callback, event.key, event.value)

        watch_id = await self._run(self.client.add_watch_prefix_callback, prefix, on_response)

        async def cancel() -> None:
            await self._run(self.client.cancel_watch, watch_id)
        return cancel


# --- measurements, in the child process ---------------------------------------

def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


async def _sequential_puts(client: Client) -> float:
    times = []
    for i in range(SEQUENTIAL):
        start = time.perf_counter()
        await client.put(b"/bench/put/%d" % (i % 16), VALUE)
        times.append(time.perf_counter() - start)
    return _ms(times)


async def _sequential_appends(client: Client) -> float:
    head, position, times = b"/bench/seq/head", b"0", []
    await client.put(head, position)
    for i in range(1, SEQUENTIAL + 1):
        new = b"%d" % i
        start = time.perf_counter()
        applied = await client.append(head, position, new, b"/bench/seq/log/%08d" % i, VALUE)
        times.append(time.perf_counter() - start)
        if not applied:
            raise RuntimeError(f"append {i} did not apply: the compare failed")
        position = new
    return _ms(times)


async def _pipelined_appends(client: Client) -> tuple[int, int]:
    """IN_FLIGHT writers, each appending to a log of its own (no conflicts):
    txns per second, and the client process's CPU time per txn in µs (all
    its threads: what the client takes from the server it runs in)."""
    per_writer = PIPELINED // IN_FLIGHT

    async def writer(w: int) -> None:
        head, position = b"/bench/pipe/%d/head" % w, b"0"
        await client.put(head, position)
        await ready.wait()
        for i in range(1, per_writer + 1):
            new = b"%d" % i
            if not await client.append(head, position, new, b"/bench/pipe/%d/%06d" % (w, i),
                                       VALUE):
                raise RuntimeError(f"writer {w}: append {i} did not apply")
            position = new

    ready = asyncio.Event()
    tasks = [asyncio.ensure_future(writer(w)) for w in range(IN_FLIGHT)]
    await asyncio.sleep(0.5)
    start, cpu_start = time.perf_counter(), time.process_time()
    ready.set()
    await asyncio.gather(*tasks)
    txns = per_writer * IN_FLIGHT
    return (round(txns / (time.perf_counter() - start)),
            round((time.process_time() - cpu_start) / txns * 1e6))


async def _watch_delivery(writer: Client, watcher: Client) -> float:
    arrived: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
    cancel = await watcher.watch(b"/bench/watch/",
                                 lambda key, _value: arrived.put_nowait((key, time.perf_counter())))
    times = []
    try:
        for i in range(WATCHED):
            key = b"/bench/watch/%d" % i
            start = time.perf_counter()
            await writer.put(key, VALUE)
            got, when = await asyncio.wait_for(arrived.get(), 5.0)
            if got != key:
                raise RuntimeError(f"watch delivered {got!r}, expected {key!r}")
            times.append(when - start)
    finally:
        await cancel()
    return _ms(times)


async def _failover(client_class: type[Client], endpoints: list[str]) -> dict[str, Any]:
    """Puts, one after the other, while the parent kills the member of
    endpoints[0]: the longest time with no put acknowledged."""
    client = client_class()
    await client.open(endpoints)
    rotations = 0
    for i in range(20):
        await client.put(b"/bench/failover", b"%d" % i)
    print("KILL", flush=True)
    sys.stdin.readline()  # the parent killed the member
    killed = time.perf_counter()
    errors = []
    while time.perf_counter() - killed < FAILOVER_DEADLINE:
        try:
            await asyncio.wait_for(client.put(b"/bench/failover", b"after"), REQUEST_TIMEOUT)
            break
        except Exception as error:  # whatever the client raises for a lost member
            errors.append(type(error).__name__)
            if not client.multi_endpoint:
                # The caller's fail-over: a new client on the next endpoint.
                rotations += 1
                await client.close()
                client = client_class()
                await client.open(endpoints[rotations % len(endpoints):])
    else:
        return {"recovered": False, "errors": sorted(set(errors))}
    gap = time.perf_counter() - killed
    await client.close()
    return {"recovered": True, "gap_ms": round(gap * 1000), "failed_calls": len(errors),
            "errors": sorted(set(errors)), "by_caller": rotations > 0}


async def _measure(name: str, endpoints: list[str]) -> dict[str, Any]:
    client_class: type[Client] = globals()[CANDIDATES[name][2]]
    writer, watcher = client_class(), client_class()
    await writer.open(endpoints)
    await watcher.open(endpoints[2:] + endpoints[:2])  # another member
    try:
        results: dict[str, Any] = {
            "put_ms": await _sequential_puts(writer),
            "txn_ms": await _sequential_appends(writer),
        }
        results["pipelined_txn_per_s"], results["cpu_us_per_txn"] = (
            await _pipelined_appends(writer))
        results["watch_ms"] = await _watch_delivery(writer, watcher)
    finally:
        await writer.close()
        await watcher.close()
    return results


def child_main(name: str, endpoints: list[str], phase: str) -> None:
    import uvloop
    coroutine = (_measure(name, endpoints) if phase == "measure"
                 else _failover(globals()[CANDIDATES[name][2]], endpoints))
    result = uvloop.run(coroutine)
    print("RESULT", json.dumps(result), flush=True)


# --- the parent: cluster, children, table --------------------------------------

def _import_ms(module: str, env: dict[str, str]) -> float | None:
    """Cumulative import time of `module` (python -X importtime), median of 3."""
    runs = []
    for _ in range(3):
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                                env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return None
        for line in result.stderr.splitlines():
            fields = [field.strip() for field in line.removeprefix("import time:").split("|")]
            if len(fields) == 3 and fields[2] == module:
                runs.append(int(fields[1]) / 1000)
    return round(statistics.median(runs), 1)


def _child(name: str, endpoints: list[str], phase: str,
           on_kill: Callable[[], None] | None = None) -> dict[str, Any]:
    env = dict(os.environ, **CHILD_ENV.get(name, {}))
    argv = [sys.executable, __file__, "--child", name, "--phase", phase,
            "--endpoints", ",".join(endpoints)]
    with subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stdin is not None
        for line in process.stdout:
            if line.startswith("KILL") and on_kill is not None:
                on_kill()
                process.stdin.write("killed\n")
                process.stdin.flush()
            elif line.startswith("RESULT "):
                process.wait(30)
                result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
                return result
        error = process.stderr.read() if process.stderr else ""
        process.wait()
    return {"error": error.strip().splitlines()[-1] if error.strip() else "no result"}


def _etcdctl_put_ms(cluster: EtcdCluster) -> tuple[float, float]:
    """etcdctl's put through the leader: the median wall time of `etcdctl put`
    (a process start, a connection, one put), and that less the median
    serializable `get` (the same but for consensus and fsync): the floor."""
    leader = cluster.leader()

    def timed(*args: str) -> float:
        start = time.perf_counter()
        cluster.etcdctl(*args, member=leader)
        return time.perf_counter() - start
    puts, gets = [], []
    for _ in range(100):  # interleaved, so that the machine's load drifts over both
        puts.append(timed("put", "/bench/etcdctl", "v"))
        gets.append(timed("get", "/bench/etcdctl", "--consistency=s"))
    put, get = statistics.median(puts), statistics.median(gets)
    return round(put * 1000, 1), round((put - get) * 1000, 2)


def parent_main(names: list[str]) -> None:
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="etcd-clients-") as tmp:
        with EtcdCluster(Path(tmp) / "etcd") as cluster:
            print(f"etcd cluster {cluster.endpoints_arg}; leader m{cluster.leader()}")
            wall, floor = _etcdctl_put_ms(cluster)
            print(f"etcdctl put: {wall} ms per command, {floor} ms without the process start")
            for name in names:
                rows[name] = _row(cluster, name)
                print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print(_table(rows, floor))


def _row(cluster: EtcdCluster, name: str) -> dict[str, Any]:
    module = CANDIDATES[name][0]
    env = dict(os.environ, **CHILD_ENV.get(name, {}))
    row: dict[str, Any] = {"import_ms": _import_ms(module, env)}
    if row["import_ms"] is None:
        row["error"] = f"`import {module}` fails (pip install {CANDIDATES[name][1]}?)"
        return row
    row.update(_child(name, cluster.endpoints, "measure"))
    for victim in ("follower", "leader"):
        row[f"failover_{victim}"] = _failover_row(cluster, name, victim)
    return row


def _failover_row(cluster: EtcdCluster, name: str, role: str) -> dict[str, Any]:
    """Kill the member the client talks to first, the leader or a follower
    (no election then), and bring it back."""
    leader = cluster.leader()
    victim = leader if role == "leader" else (leader + 1) % cluster.size
    order = [victim] + [i for i in range(cluster.size) if i != victim]
    endpoints = [cluster.endpoints[i] for i in order]
    killed: list[int] = []

    def kill() -> None:
        cluster.kill(victim)
        killed.append(victim)
    try:
        return _child(name, endpoints, "failover", kill)
    finally:
        if killed:
            cluster.restart(victim)


def _failover_cell(result: dict[str, Any]) -> str:
    if not result.get("recovered"):
        return f"no ({', '.join(result.get('errors', [])) or result.get('error', '?')})"
    return f"{result['gap_ms']} ms{' (caller)' if result['by_caller'] else ''}"


def _table(rows: dict[str, dict[str, Any]], floor: float) -> str:
    lines = [f"etcdctl put less process start (the floor): {floor} ms",
             "| client | import ms | put ms | txn ms | txn/s, 64 in flight | CPU µs/txn "
             "| watch ms | fail-over, follower killed | leader killed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        if "put_ms" not in row:
            lines.append(f"| {name} | {row['import_ms']} | {row.get('error')} ||||||")
            continue
        lines.append(
            f"| {name} | {row['import_ms']} | {row['put_ms']} | {row['txn_ms']} "
            f"| {row['pipelined_txn_per_s']} | {row['cpu_us_per_txn']} | {row['watch_ms']} "
            f"| {_failover_cell(row['failover_follower'])} "
            f"| {_failover_cell(row['failover_leader'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default=",".join(CANDIDATES),
                        help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.endpoints.split(","), args.phase)
    else:
        parent_main(args.clients.split(","))


if __name__ == "__main__":
    main()

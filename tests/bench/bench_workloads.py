"""Workloads W1-W7 and the dispatch-overhead figure (issue 4).

Each workload is an async function `(server, cfg) -> metrics` that runs
against one freshly started server; it raises a `BenchError` when the server
fails it.  W6 also has a setup step that builds the journal once per server.
The servers are started with the test harness (tests/peers.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import peers
from bench_client import (
    BenchTimeout,
    Conn,
    Message,
    Pipeline,
    ReplyError,
    ServerGone,
    connect,
    connect_many,
    error_text,
    machine_busy_seconds,
    percentile,
    pipelined_throughput,
    proc_cpu_seconds,
    proc_status_kib,
    rpc_failure,
    txn_failure,
)

SCHEMA = Path(__file__).resolve().with_name("bench.ovsschema")
DB = "Bench"
TABLE = "Item"
COLUMNS = ["name", "note", "n", "tags", "props"]


@dataclass
class Config:
    reps: int
    timeout: float            # per workload run
    w1_warmup: int
    w1_n: int
    w2_rows: int
    w2_conns: int
    w2_inflight: int
    w2_duration: float
    w3_rows: int
    w3_batch: int
    w4_clients: int
    w4_txns: int
    w4_inflight: int
    w4_method: str
    w4_read_pause: float
    w5_rows: int
    w5_conns: int
    w5_inflight: int
    w5_duration: float
    w6_txns: int
    w7_duration: float
    w7_conns: int
    w7_inflight: int
    tegadb_bin: str | None = None   # an installed tegadb's bin/ (make bench); None: the checkout
    server_cpu: int | None = None   # the CPU both servers are pinned to; None: not pinned
    w8_flood: int = 100_000         # requests the flooding connection pipelines
    w9_rows: int = 100_000          # rows of the database compacted
    w9_updates: int = 8             # transactions updating every row, after loading them
    w10_mib: int = 16               # size of the large message


FULL = Config(reps=5, timeout=60.0,
              w1_warmup=300, w1_n=3000,
              w2_rows=1000, w2_conns=4, w2_inflight=32, w2_duration=2.0,
              w3_rows=100_000, w3_batch=1000,
              w4_clients=50, w4_txns=2000, w4_inflight=32, w4_method="monitor", w4_read_pause=0.002,
              w5_rows=10_000, w5_conns=4, w5_inflight=8, w5_duration=1.5,
              w6_txns=100_000,
              w7_duration=1.0, w7_conns=4, w7_inflight=8)

# The quick run: fewer repetitions, smaller loads, shorter phases.
QUICK = replace(FULL, reps=3, timeout=30.0, w1_warmup=100, w1_n=1000, w2_duration=0.5,
                w3_rows=20_000, w4_txns=1000, w5_duration=0.5, w6_txns=20_000,
                w7_duration=0.4, w9_rows=20_000, w9_updates=4)


# --- servers ----------------------------------------------------------------

class Server:
    """A freshly started server (ovsdb-server or tegadb) on the bench schema."""

    def __init__(self, kind: str, directory: Path, cfg: Config) -> None:
        self.kind = kind
        self.directory = directory
        if directory.exists():
            shutil.rmtree(directory)
        if kind == "ovsdb-server":
            self.peer = peers.start_ovsdb_server(directory, [SCHEMA])
        else:
            self.peer = peers.start_tegadb_server(
                directory, [SCHEMA], bin_dir=Path(cfg.tegadb_bin) if cfg.tegadb_bin else None)
        self.cpus = None if cfg.server_cpu is None else {cfg.server_cpu}
        self.pin(self.pid)

    def pin(self, pid: int) -> None:
        """Keep the server process `pid` on the configured CPU, if any."""
        if self.cpus is not None:
            os.sched_setaffinity(pid, self.cpus)

    @property
    def sock(self) -> str:
        return self.peer.unix_path

    @property
    def pid(self) -> int:
        return self.peer.pid

    @property
    def db_file(self) -> Path:
        return self.directory / f"{DB}.db"

    def alive(self) -> bool:
        return self.peer.process is not None and self.peer.process.poll() is None

    def stop(self) -> None:
        self.peer.stop()

    def log_tail(self, chars: int = 1500) -> str:
        return self.peer.diagnostics()[-chars:]


class Meter:
    """Server CPU (from /proc, summed over `pids`), generator CPU and wall time over a phase."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids

    def server_cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids)

    def start(self) -> Meter:
        self.m0 = machine_busy_seconds()
        self.s0 = self.server_cpu_seconds()
        self.g0 = time.process_time()
        self.w0 = time.perf_counter()
        return self

    def stop(self, ops: int, prefix: str = "") -> dict[str, float]:
        wall = time.perf_counter() - self.w0
        server = self.server_cpu_seconds() - self.s0
        gen = time.process_time() - self.g0
        # What neither the server nor the generator used: other processes on a
        # shared machine (and steal).  A figure measured while others were busy
        # is noisier; the server's CPU per operation is the steadier one.
        other = max(0.0, machine_busy_seconds() - self.m0 - server - gen)
        ops = max(ops, 1)
        return {
            f"{prefix}ops": ops,
            f"{prefix}wall_s": wall,
            f"{prefix}server_cpu_s": server,
            f"{prefix}server_cpu_us_per_op": server / ops * 1e6,
            f"{prefix}server_util": server / wall if wall else 0.0,
            f"{prefix}gen_cpu_us_per_op": gen / ops * 1e6,
            f"{prefix}gen_util": gen / wall if wall else 0.0,
            f"{prefix}other_util": other / wall if wall else 0.0,
        }


# --- requests -----------------------------------------------------------------

SMALL_ROW = ('{"name":"%s-%d","note":"note-%d","n":%d,"tags":["set",["a","b"]],'
             '"props":["map",[["k","v"]]]}')


def _row_json(prefix: str, i: int) -> str:
    return SMALL_ROW % (prefix, i, i, i)


def insert_request(prefix: str, extra_ops: str = "") -> Any:
    """i -> a transact request inserting one small row (plus `extra_ops`, JSON text)."""
    head = '{"method":"transact","params":["Bench",{"op":"insert","table":"Item","row":'
    tail = extra_ops + '],"id":%d}'

    def make(i: int) -> bytes:
        return (head + _row_json(prefix, i) + "}" + tail % i).encode()

    return make


def check_ops(n_ops: int) -> Any:
    def check(i: int, msg: Message) -> str | None:
        return txn_failure(msg, n_ops)
    return check


def bulk_rows(prefix: str, start: int, count: int) -> list[dict[str, Any]]:
    ops = []
    for i in range(start, start + count):
        ops.append({"op": "insert", "table": TABLE, "row": {
            "name": f"{prefix}-{i}", "note": f"note-{i}", "n": i,
            "tags": ["set", [f"t{i % 7}", "x"]],
            "props": ["map", [[f"k{i % 5}", "v"], ["z", str(i)]]]}})
    return ops


async def bulk_load(conn: Conn, prefix: str, rows: int, batch: int, timeout: float) -> None:
    for start in range(0, rows, batch):
        await conn.transact(DB, bulk_rows(prefix, start, min(batch, rows - start)), timeout)


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]],
              failures: dict[str, dict[str, dict[str, Any]]],
              metrics: list[tuple[Any, ...]], kinds: list[str]) -> list[dict[str, Any]]:
    """One row per metric of each workload run: every kind's median over its
    runs, its CPU per op, status and count of runs, the ratio tegadb vs
    ovsdb-server (higher is better for tegadb) and whether it meets its target."""
    def median(reps: list[dict[str, Any]], key: str | None) -> float | None:
        values = [m[key] for m in reps if key is not None and m.get(key) is not None]
        return statistics.median(values) if values else None

    rows = []
    for wl, key, label, unit, better, target, cpu_key, cpu_unit in metrics:
        if wl not in runs:
            continue
        row: dict[str, Any] = {"workload": wl, "metric": key, "label": label, "unit": unit,
                               "better": better, "target": target, "cpu_unit": cpu_unit}
        for kind in kinds:
            reps = runs[wl].get(kind, [])
            failure = failures.get(wl, {}).get(kind)
            row[kind] = median(reps, key)
            row[f"{kind}_cpu"] = median(reps, cpu_key)
            row[f"{kind}_status"] = failure["status"] if failure else (
                "ok" if reps else "not run")
            row[f"{kind}_reps"] = len(reps)
        o, t = row["ovsdb-server"], row["tegadb"]
        ratio = None
        if o is not None and t is not None and o > 0 and t > 0:
            ratio = t / o if better == "higher" else o / t
        row["ratio"] = ratio
        oc, tc = row["ovsdb-server_cpu"], row["tegadb_cpu"]
        row["cpu_ratio"] = oc / tc if oc and tc else None
        row["met"] = None if target is None or ratio is None else ratio >= target
        rows.append(row)
    return rows


# --- W1: latency ------------------------------------------------------------------

async def w1_latency(srv: Server, cfg: Config) -> dict[str, Any]:
    conn = await connect(srv.sock)
    make, check = insert_request("w1"), check_ops(1)
    await Pipeline([conn], make, check, 1, total=cfg.w1_warmup).run(cfg.timeout)
    meter = Meter(srv.pid).start()
    res = await Pipeline([conn], make, check, 1, total=cfg.w1_n, record_latency=True,
                         first_id=cfg.w1_warmup).run(cfg.timeout)
    metrics = meter.stop(res.ok)
    lat = res.latencies or []
    conn.close()
    return {"latency_median_us": statistics.median(lat) * 1e6,
            "latency_p99_us": percentile(lat, 0.99) * 1e6,
            "txn_per_s": res.rate, **metrics}


# --- W2: throughput ---------------------------------------------------------------

async def w2_throughput(srv: Server, cfg: Config) -> dict[str, Any]:
    setup = await connect(srv.sock)
    result = await setup.transact(DB, bulk_rows("w2base", 0, cfg.w2_rows), cfg.timeout)
    uuids = [r["uuid"][1] for r in result]
    setup.close()
    conns = await connect_many(srv.sock, cfg.w2_conns)
    insert = insert_request("w2")
    update = ('{"method":"transact","params":["Bench",{"op":"update","table":"Item",'
              '"where":[["_uuid","==",["uuid","%s"]]],"row":{"n":%d,"note":"upd-%d"}}],"id":%d}')
    n_uuids = len(uuids)

    def make(i: int) -> bytes:
        if i & 1:
            return (update % (uuids[(i >> 1) % n_uuids], i, i, i)).encode()
        return insert(i)

    def check(i: int, msg: Message) -> str | None:
        why = txn_failure(msg, 1)
        if why is None and i & 1 and msg["result"][0].get("count") != 1:
            why = f"update matched {msg['result'][0].get('count')} rows, not 1"
        return why

    # Warm up, then measure; ids keep counting so every insert has a new name.
    return await pipelined_throughput(conns, make, check, cfg.w2_inflight, cfg.w2_duration,
                                      cfg.timeout, lambda: Meter(srv.pid).start())


# --- W3: bulk load -----------------------------------------------------------------

async def w3_bulk(srv: Server, cfg: Config) -> dict[str, Any]:
    conn = await connect(srv.sock)
    batches = []
    for k, start in enumerate(range(0, cfg.w3_rows, cfg.w3_batch)):
        ops = bulk_rows("b", start, min(cfg.w3_batch, cfg.w3_rows - start))
        batches.append((len(ops), json.dumps(
            {"method": "transact", "params": [DB, *ops], "id": k},
            separators=(",", ":")).encode()))

    def check(i: int, msg: Message) -> str | None:
        return txn_failure(msg, batches[i][0])

    meter = Meter(srv.pid).start()
    res = await Pipeline([conn], lambda i: batches[i][1], check, 1,
                         total=len(batches)).run(cfg.timeout)
    metrics = meter.stop(cfg.w3_rows)
    conn.close()
    return {"load_s": res.elapsed, "rows_per_s": cfg.w3_rows / res.elapsed,
            "vmhwm_mib": proc_status_kib(srv.pid, "VmHWM") / 1024,
            "vmrss_mib": proc_status_kib(srv.pid, "VmRSS") / 1024, **metrics}


# --- W4: monitor fan-out ----------------------------------------------------------

class MonitorConn(Conn):
    """A monitoring client.

    Once `start_counting()` is called it counts row updates in the raw bytes
    (a regex over the stream, carried across reads) so that 50 clients do not
    make the load generator the bottleneck.  With `verify` it also parses
    every message and counts the rows structurally, as a cross-check.
    """

    def __init__(self, pattern: Any, update_method: str, row_key: str, verify: bool) -> None:
        super().__init__()
        self.pattern = pattern
        self.update_method = update_method
        self.row_key = row_key
        self.verify = verify
        self.counting = False
        self.tail = b""
        self.rows = 0
        self.parsed_rows = 0
        self.uuids: set[str] = set()
        self.target = 0
        self.t_done: float | None = None
        self.done: asyncio.Future[None] | None = None
        self.problem: str | None = None
        self.read_pause = 0.0

    def start_counting(self, target: int, done: asyncio.Future[None], read_pause: float) -> None:
        self.counting = True
        self.read_pause = read_pause
        self.target = target
        self.done = done
        if self.verify:
            self.on_messages = self._verify_messages
        if self.notifications:
            self.problem = f"message before any update: {error_text(self.notifications[0])}"

    def data_received(self, data: bytes) -> None:
        if not self.counting:
            super().data_received(data)
            return
        if self.verify:
            super().data_received(data)
        pattern = self.pattern
        chunk = self.tail + data
        found = len(pattern.findall(chunk))
        if self.tail:
            found -= len(pattern.findall(self.tail))  # already counted last time
        self.tail = chunk[-24:]
        self.rows += found
        if self.rows >= self.target:
            if self.t_done is None:
                self.t_done = time.perf_counter()
                if self.done is not None and not self.done.done():
                    self.done.set_result(None)
        elif self.read_pause and self.transport is not None:
            # Let updates gather for a moment: one read then takes many of them
            # (a server may write each update separately), which keeps 50
            # clients from making the generator the bottleneck.  It adds at
            # most `read_pause` to the measured time, for either server.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.read_pause, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and self.lost is None:
            self.transport.resume_reading()

    def _verify_messages(self, msgs: list[Message]) -> None:
        for msg in msgs:
            params = msg.get("params")
            if (msg.get("method") != self.update_method or msg.get("id") is not None
                    or type(params) is not list or len(params) != 2 or params[0] != "m"):
                self.problem = self.problem or f"unexpected message: {error_text(msg)}"
                continue
            for table, rows in params[1].items():
                for uuid, update in rows.items():
                    if table != TABLE or self.row_key not in update:
                        self.problem = self.problem or f"unexpected row update: {error_text(msg)}"
                    self.parsed_rows += 1
                    self.uuids.add(uuid)


async def w4_fanout(srv: Server, cfg: Config) -> dict[str, Any]:
    import re
    loop = asyncio.get_running_loop()
    if cfg.w4_method == "monitor":
        request: dict[str, Any] = {TABLE: {"columns": COLUMNS}}
        update_method, row_key = "update", "new"
    else:  # monitor_cond
        request = {TABLE: [{"columns": COLUMNS}]}
        update_method, row_key = "update2", "insert"
    pattern = re.compile(rb'"%s"\s*:' % row_key.encode())
    clients: list[MonitorConn] = []
    for k in range(cfg.w4_clients):
        def factory(verify: bool = k == 0) -> MonitorConn:
            return MonitorConn(pattern, update_method, row_key, verify)
        conn = await connect(srv.sock, factory)
        assert isinstance(conn, MonitorConn)
        clients.append(conn)
    replies = await asyncio.gather(*(c.call(cfg.w4_method, [DB, "m", request], cfg.timeout)
                                     for c in clients))
    for msg in replies:
        why = rpc_failure(msg)  # raises NotSupported for "unknown method"
        if why:
            raise ReplyError(f"{cfg.w4_method}: {why}")
        if msg["result"] not in ({}, {TABLE: {}}):
            raise ReplyError(f"{cfg.w4_method}: unexpected initial contents {error_text(msg)}")
    dones = []
    for c in clients:
        fut: asyncio.Future[None] = loop.create_future()
        c.start_counting(cfg.w4_txns, fut, cfg.w4_read_pause)
        dones.append(fut)
    writer = await connect(srv.sock)
    meter = Meter(srv.pid).start()
    t0 = time.perf_counter()
    res = await Pipeline([writer], insert_request("w4"), check_ops(1), cfg.w4_inflight,
                         total=cfg.w4_txns).run(cfg.timeout)
    if res.ok != cfg.w4_txns:
        raise ReplyError(f"writer committed {res.ok} of {cfg.w4_txns} transactions")
    remaining = cfg.timeout - (time.perf_counter() - t0)
    try:
        await asyncio.wait_for(asyncio.gather(*dones), max(remaining, 1.0))
    except TimeoutError:
        seen = sorted(c.rows for c in clients)
        lost = [c.lost for c in clients if c.lost]
        raise BenchTimeout(f"clients saw {seen[0]}..{seen[-1]} of {cfg.w4_txns} row updates"
                           + (f"; {len(lost)} connections lost: {lost[0]}" if lost else "")
                           ) from None
    t_end = max(c.t_done or 0.0 for c in clients)
    delivered = cfg.w4_clients * cfg.w4_txns
    metrics = meter.stop(delivered)
    await asyncio.sleep(0.05)  # anything extra arriving now is an error too
    for c in clients:
        if c.problem:
            raise ReplyError(c.problem)
        if c.rows != cfg.w4_txns:
            raise ReplyError(f"a client saw {c.rows} row updates for {cfg.w4_txns} inserts")
    v = clients[0]
    if v.parsed_rows != v.rows or len(v.uuids) != cfg.w4_txns:
        raise ReplyError(f"verifying client: {v.parsed_rows} parsed row updates, {v.rows} "
                         f"counted, {len(v.uuids)} distinct rows, for {cfg.w4_txns} inserts")
    writer.close()
    for c in clients:
        c.close()
    fanout = t_end - t0
    return {"fanout_s": fanout, "writer_s": res.elapsed,
            "row_updates_per_s": delivered / fanout,
            "server_cpu_us_per_txn": metrics["server_cpu_s"] / cfg.w4_txns * 1e6, **metrics}


# --- W5: queries ---------------------------------------------------------------------

async def w5_queries(srv: Server, cfg: Config) -> dict[str, Any]:
    setup = await connect(srv.sock)
    await bulk_load(setup, "q", cfg.w5_rows, 1000, cfg.timeout)
    setup.close()
    conns = await connect_many(srv.sock, cfg.w5_conns)
    rng = random.Random(5)
    picks = [rng.randrange(cfg.w5_rows) for _ in range(1 << 16)]
    mask = (1 << 16) - 1
    out: dict[str, Any] = {}
    for label, column, prefix in (("indexed", "name", "q-"), ("plain", "note", "note-")):
        template = ('{"method":"transact","params":["Bench",{"op":"select","table":"Item",'
                    '"where":[["' + column + '","==","' + prefix + '%d"]]}],"id":%d}')

        def make(i: int, template: str = template) -> bytes:
            return (template % (picks[i & mask], i)).encode()

        def check(i: int, msg: Message, column: str = column, prefix: str = prefix) -> str | None:
            why = txn_failure(msg, 1)
            if why:
                return why
            rows = msg["result"][0].get("rows")
            if type(rows) is not list or len(rows) != 1 \
                    or rows[0].get(column) != f"{prefix}{picks[i & mask]}":
                return f"select by {column} did not return exactly the row: {error_text(msg)}"
            return None

        warm = Pipeline(conns, make, check, cfg.w5_inflight, duration=cfg.w5_duration / 5)
        await warm.run(cfg.timeout)
        meter = Meter(srv.pid).start()
        res = await Pipeline(conns, make, check, cfg.w5_inflight, duration=cfg.w5_duration,
                             first_id=warm.next_id).run(cfg.timeout)
        out[f"{label}_per_s"] = res.rate
        out.update(meter.stop(res.ok, prefix=f"{label}_"))
    for c in conns:
        c.close()
    return out


# --- W6: cold start --------------------------------------------------------------------

def w6_setup(kind: str, directory: Path, cfg: Config) -> dict[str, Any]:
    """Build a journal of `w6_txns` single-row transactions by driving the server."""
    srv = Server(kind, directory, cfg)
    try:
        async def load() -> dict[str, Any]:
            conns = await connect_many(srv.sock, 4)
            meter = Meter(srv.pid).start()
            res = await Pipeline(conns, insert_request("w6"), check_ops(1), 64,
                                 total=cfg.w6_txns).run(max(cfg.timeout, 120.0))
            metrics = meter.stop(res.ok)
            for c in conns:
                c.close()
            return {"load_txn_per_s": res.rate, "load_server_cpu_us_per_op":
                    metrics["server_cpu_us_per_op"], "load_gen_util": metrics["gen_util"]}
        info = run_async(load())
    except BaseException:
        srv.stop()
        raise
    srv.stop()
    pristine = directory / "pristine.db"
    shutil.copyfile(srv.db_file, pristine)
    with open(pristine, "rb") as f:
        lines = sum(1 for _ in f)
    info.update(file_mib=pristine.stat().st_size / 2**20, file_lines=lines)
    return {"server": srv, "pristine": pristine, "info": info}


def w6_restart(state: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Start on the pristine journal; time until a select of the last row is answered."""
    srv: Server = state["server"]
    peer = srv.peer
    shutil.copyfile(state["pristine"], srv.db_file)
    peer.tcp_port = peers.free_tcp_port()
    argv = peer._command(peer.tcp_port)  # the harness's own command line for this server
    if os.path.exists(peer.unix_path):
        os.unlink(peer.unix_path)
    last = f"w6-{cfg.w6_txns - 1}"
    request = ["Bench", {"op": "select", "table": "Item", "where": [["name", "==", last]],
                         "columns": ["name"]}]
    with open(srv.directory / "console.txt", "ab") as console:
        busy0 = machine_busy_seconds()
        gen0 = time.process_time()
        t0 = time.perf_counter()
        peer.process = subprocess.Popen(argv, cwd=peer.directory, env=peer._env,
                                        stdin=subprocess.DEVNULL, stdout=console,
                                        stderr=subprocess.STDOUT)
        srv.pin(peer.process.pid)
    try:
        deadline = t0 + cfg.timeout
        while True:
            if peer.process.poll() is not None:
                raise ServerGone(f"server exited with {peer.process.returncode} while starting")
            if time.perf_counter() > deadline:
                raise BenchTimeout(f"not answering after {cfg.timeout:.0f}s")
            try:
                sock = peers.connect(peer.remote_unix, timeout=cfg.timeout)
            except OSError:
                time.sleep(0.002)
                continue
            break
        with peers.RawClient(sock, timeout=cfg.timeout) as client:
            try:
                reply = client.request("transact", request)
            except (TimeoutError, peers.ConnectionClosed) as exc:
                raise ServerGone(f"first request not answered: {exc}") from None
            elapsed = time.perf_counter() - t0
            why = txn_failure(reply, 1)
            if why is None and len(reply["result"][0].get("rows", [])) != 1:
                why = f"the last row is missing after restart: {error_text(reply)}"
            if why:
                raise ReplyError(why)
        cpu = proc_cpu_seconds(peer.pid)
        other = machine_busy_seconds() - busy0 - cpu - (time.process_time() - gen0)
        hwm = proc_status_kib(peer.pid, "VmHWM") / 1024
    finally:
        peer.stop()
    return {"start_s": elapsed, "start_server_cpu_s": cpu, "start_vmhwm_mib": hwm,
            "start_other_util": max(0.0, other) / elapsed,
            **state["info"]}


# --- W7: durable commits ------------------------------------------------------------------

async def w7_durable(srv: Server, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    next_id = 0
    for durable in (True, False):
        label = "durable" if durable else "nondurable"
        commit = ',{"op":"commit","durable":%s}' % ("true" if durable else "false")
        make, check = insert_request(f"w7{label[0]}", commit), check_ops(2)
        conn = await connect(srv.sock)
        await Pipeline([conn], make, check, 1, total=20, first_id=next_id).run(cfg.timeout)
        next_id += 20
        meter = Meter(srv.pid).start()
        lat = await Pipeline([conn], make, check, 1, duration=cfg.w7_duration,
                             record_latency=True, first_id=next_id).run(cfg.timeout)
        out.update(meter.stop(lat.ok, prefix=f"{label}_seq_"))
        next_id += lat.ok
        conn.close()
        out[f"{label}_latency_us"] = statistics.median(lat.latencies or [0.0]) * 1e6
        conns = await connect_many(srv.sock, cfg.w7_conns)
        meter = Meter(srv.pid).start()
        thr = Pipeline(conns, make, check, cfg.w7_inflight, duration=cfg.w7_duration,
                       first_id=next_id)
        res = await thr.run(cfg.timeout)
        out.update(meter.stop(res.ok, prefix=f"{label}_"))
        next_id = thr.next_id
        for c in conns:
            c.close()
        out[f"{label}_txn_per_s"] = res.rate
    return out


# --- W8: fairness ------------------------------------------------------------------------

# The flooding client runs in its own process, so that parsing its replies
# does not delay the measuring client's loop: it writes `count` requests to an
# unknown method (each answered with an error) followed by an echo, while a
# thread drains the replies until the echo's comes back.
FLOOD_CLIENT = r"""
import socket, sys, threading
path, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
data = b"".join(b'{"method":"no_such_method","params":[],"id":%d}' % i for i in range(count))
data += b'{"method":"echo","params":["flood done"],"id":"done"}'
sender = threading.Thread(target=sock.sendall, args=(data,))
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
sender.start()
tail = b""
while b"flood done" not in tail:
    chunk = sock.recv(1 << 20)
    if not chunk:
        sys.exit("server closed the flooding connection")
    tail = tail[-16:] + chunk
sender.join()
"""


async def probe_during(srv: Server, cfg: Config, script: str, args: list[str],
                       operations: int, who: str) -> tuple[list[float], dict[str, Any]]:
    """Echo round trips of one client while another, a process running
    ``script`` (it prints a line once ready, then waits for "go"), does its
    part; and the server's meter over that time."""
    conn = await connect(srv.sock)
    for _ in range(50):   # warm up
        await conn.call("echo", [], cfg.timeout)
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, srv.sock, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert other.stdin is not None and other.stdout is not None
    await other.stdout.readline()   # connected, its input built
    meter = Meter(srv.pid).start()
    other.stdin.write(b"go\n")
    waiting = asyncio.ensure_future(other.wait())
    round_trips = []
    while not waiting.done():
        start = time.perf_counter()
        await conn.call("echo", [], cfg.timeout)
        round_trips.append(time.perf_counter() - start)
    metrics = meter.stop(operations)
    conn.close()
    if waiting.result() != 0:
        raise BenchTimeout(f"the {who} client failed (exit status {waiting.result()})")
    return round_trips, metrics


async def w8_fairness(srv: Server, cfg: Config) -> dict[str, Any]:
    """Round trips of one client while another pipelines cfg.w8_flood invalid requests."""
    round_trips, metrics = await probe_during(srv, cfg, FLOOD_CLIENT, [str(cfg.w8_flood)],
                                              cfg.w8_flood, "flooding")
    return {"probe_p50_us": percentile(round_trips, 0.5) * 1e6,
            "probe_p99_us": percentile(round_trips, 0.99) * 1e6,
            "probe_max_us": max(round_trips) * 1e6,
            "probe_round_trips": len(round_trips),
            "flood_s": metrics["wall_s"], **metrics}


# --- W10: a large message -----------------------------------------------------------------

# Sends one JSON array of `mib` MiB of small objects (no JSON-RPC message:
# both servers parse it whole, then close the connection) and waits for the
# close.  In a process of its own, like W8's flooding client.
LARGE_CLIENT = r"""
import socket, sys
path, mib, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
item = b'{"x":[1,2.5,null],"s":"abcdefgh","u":"caf\\u00e9","n":12345}'
data = b"[" + b",".join([item] * (mib * 1024 * 1024 // (len(item) + 1))) + b"]"
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
sock.settimeout(timeout)
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
sock.sendall(data)
while sock.recv(1 << 16):
    pass
"""


async def w10_large_message(srv: Server, cfg: Config) -> dict[str, Any]:
    """Round trips of one client while another sends a cfg.w10_mib MiB message."""
    round_trips, metrics = await probe_during(
        srv, cfg, LARGE_CLIENT, [str(cfg.w10_mib), str(cfg.timeout)], 1, "sending")
    return {"probe_p99_us": percentile(round_trips, 0.99) * 1e6,
            "probe_max_us": max(round_trips) * 1e6,
            "probe_round_trips": len(round_trips),
            "message_s": metrics["wall_s"], **metrics}


# --- W9: compaction stall ------------------------------------------------------------------

def control_socket(srv: Server) -> Path:
    """The server's unixctl socket, as the harness starts each one."""
    if srv.kind == "ovsdb-server":
        return srv.directory / "ovsdb-server.ctl"
    return srv.directory / "var" / "tegadb-server.ctl"


async def w9_compaction(srv: Server, cfg: Config) -> dict[str, Any]:
    """Worst reply delay of a client committing one small transaction after
    another while `ovs-appctl ovsdb-server/compact` compacts a journal of
    cfg.w9_rows rows each updated cfg.w9_updates times (~100 MB for tegadb)."""
    conn = await connect(srv.sock)
    await bulk_load(conn, "w9", cfg.w9_rows, 5000, max(cfg.timeout, 300.0))
    for k in range(cfg.w9_updates):
        await conn.transact(DB, [{"op": "update", "table": TABLE, "where": [],
                                  "row": {"note": f"update {k}"}}], max(cfg.timeout, 300.0))
    file_mib = srv.db_file.stat().st_size / 2**20
    def probe(i: int) -> list[Any]:
        return [{"op": "insert", "table": TABLE, "row": {"name": f"w9probe-{i}"}}]

    for i in range(20):   # warm up
        await conn.transact(DB, probe(i), cfg.timeout)
    meter = Meter(srv.pid).start()
    appctl = await asyncio.create_subprocess_exec(
        "ovs-appctl", "-t", str(control_socket(srv)), "ovsdb-server/compact", DB,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    started = time.perf_counter()
    done = asyncio.ensure_future(appctl.communicate())
    round_trips = []
    i = 20
    while not done.done():
        t0 = time.perf_counter()
        await conn.transact(DB, probe(i), cfg.timeout)
        round_trips.append(time.perf_counter() - t0)
        i += 1
    compact_s = time.perf_counter() - started
    output, _ = done.result()
    metrics = meter.stop(len(round_trips))
    conn.close()
    if appctl.returncode != 0:
        raise ReplyError(f"ovsdb-server/compact failed: {output.decode(errors='replace')}")
    return {"stall_max_ms": max(round_trips) * 1e3,
            "stall_p99_ms": percentile(round_trips, 0.99) * 1e3,
            "compact_s": compact_s, "probe_round_trips": len(round_trips),
            "file_mib": file_mib, "compacted_mib": srv.db_file.stat().st_size / 2**20,
            "vmhwm_mib": proc_status_kib(srv.pid, "VmHWM") / 1024, **metrics}


# --- dispatch overhead ------------------------------------------------------------------

def dispatch_overhead() -> dict[str, Any]:
    """Per-request cost of jsonrpcserver's dispatch vs tegadb's direct path (in-process)."""
    import ujson

    import tegadb.server.methods as tm
    from tegadb.server import jsonrpc2

    methods = tm.METHODS
    sink: list[bytes] = []
    try:  # echo needs no database: a server with none, or a stand-in
        from tegadb.server.service import ServerDatabases
        databases: Any = ServerDatabases([])
    except Exception:
        import types
        databases = types.SimpleNamespace(sessions=set(), services={})
    try:
        session = tm.Session(databases, "bench", sink.append, lambda: None)
    except Exception as exc:
        return {"errors": {"session": f"cannot build a tegadb.server.methods.Session: {exc!r}"}}
    raw2 = '{"jsonrpc":"2.0","method":"echo","params":["hello"],"id":1}'
    raw1 = '{"method":"echo","params":["hello"],"id":1}'

    def full() -> Any:
        return jsonrpc2.dispatch(ujson.loads(raw2), methods, session)

    def direct_call() -> Any:
        return methods["echo"](session, "hello")

    def ujson_only() -> bytes:
        msg = ujson.loads(raw1)
        return ujson.dumps({"id": msg["id"], "result": msg["params"], "error": None}).encode()

    def decode_call_encode() -> bytes:
        msg = ujson.loads(raw1)
        result = methods[msg["method"]](session, *msg["params"])
        return ujson.dumps({"id": msg["id"], "result": result, "error": None}).encode()

    def tegadb_hot_path() -> None:
        tm.handle_message(session, ujson.loads(raw1))
        sink.clear()

    cases = {
        "jsonrpcserver_dispatch_us": full,
        "registered_method_direct_call_us": direct_call,
        "ujson_decode_encode_us": ujson_only,
        "ujson_decode_direct_call_encode_us": decode_call_encode,
        "tegadb_handle_message_us": tegadb_hot_path,
    }
    out: dict[str, Any] = {}
    for name, fn in cases.items():
        try:
            fn()
            if name.startswith("jsonrpcserver"):
                response = fn()
                if "result" not in response:
                    raise RuntimeError(f"dispatch answered {response!r}")
            timer = timeit.Timer(fn)
            estimate = timer.timeit(20) / 20
            number = max(1, int(0.1 / max(estimate, 1e-9)))
            best = min(timer.repeat(5, number)) / number
            out[name] = best * 1e6
        except Exception as exc:
            out[name] = None
            out.setdefault("errors", {})[name] = repr(exc)[:300]
    return out


def fmt(value: Any) -> str:
    """A figure for the tables, with a precision that suits its size."""
    if not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    a = abs(value)
    if a >= 10000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# --- running ------------------------------------------------------------------------------

def run_async(coro: Any) -> Any:
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


WORKLOADS = {
    "W1": ("latency: 1 client, sequential single-row inserts", w1_latency),
    "W2": ("throughput: 4 conns x 32 in flight, inserts/updates", w2_throughput),
    "W3": ("bulk load: rows in transactions of 1000", w3_bulk),
    "W4": ("monitor fan-out: monitoring clients + 1 writer", w4_fanout),
    "W5": ("queries: selects on 10k rows", w5_queries),
    "W6": ("cold start on a journal of single-row transactions", None),
    "W7": ("durable commits vs not", w7_durable),
    "W8": ("fairness: 1 client's round trips while another floods 100k requests", w8_fairness),
    "W9": ("compaction: reply delay while a ~100 MB journal is compacted", w9_compaction),
    "W10": ("large message: 1 client's round trips while another sends a 16 MiB array",
            w10_large_message),
}

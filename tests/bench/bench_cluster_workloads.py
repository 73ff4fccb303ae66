"""The cluster workloads C1-C4 and etcd's floor figures (bench_cluster.py runs them).

Each workload is an async function `(cluster, cfg) -> metrics` run against a
freshly started cluster; it raises a `BenchError` when the cluster fails it.
A floor is an async function `(etcd, key prefix, cfg) -> metrics`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from bench_client import (
    BenchError,
    BenchTimeout,
    Pipeline,
    ReplyError,
    ServerGone,
    error_text,
    percentile,
    pipelined_throughput,
    rpc_failure,
)
from bench_cluster_peers import SIZE, Cluster, ClusterMeter, connect_member, etcd_pids, spread
from bench_workloads import (
    COLUMNS,
    DB,
    TABLE,
    Meter,
    MonitorConn,
    bulk_rows,
    check_ops,
    insert_request,
)
from etcdpeers import EtcdCluster


@dataclass
class ClusterConfig:
    """The sizes of the cluster workloads (full and --quick)."""

    reps: int
    timeout: float          # per workload run
    c1_warmup: int          # per member
    c1_n: int               # per member
    c2_conns: int
    c2_inflight: int
    c2_duration: float
    c3_kills: int           # fail-overs per run
    c3_lead_in: float       # seconds of writing through the victim before the kill
    c4_monitors: int
    c4_seq: int             # sequential commits, each timed to its last monitor
    c4_txns: int            # pipelined commits, timed until every monitor has all
    c4_inflight: int
    c4_read_pause: float


CLUSTER_FULL = ClusterConfig(reps=3, timeout=60.0, c1_warmup=100, c1_n=1000,
                             c2_conns=4, c2_inflight=32, c2_duration=2.0,
                             c3_kills=3, c3_lead_in=0.2,
                             c4_monitors=50, c4_seq=300, c4_txns=2000, c4_inflight=32,
                             c4_read_pause=0.002)
CLUSTER_QUICK = replace(CLUSTER_FULL, reps=1, timeout=30.0, c1_warmup=50, c1_n=200,
                        c2_duration=0.5, c3_kills=1, c4_seq=100, c4_txns=500)


# --- C1: sequential commit latency through each member --------------------------

async def sequential_latencies(ports: list[int], prefix: str,
                               cfg: ClusterConfig) -> tuple[list[float], list[float]]:
    """One sequential client of single-row inserts through each port in turn
    (c1_warmup, then c1_n timed): the median and p99 per port, in us."""
    make, check = insert_request(prefix), check_ops(1)
    medians, p99s = [], []
    next_id = 0
    for port in ports:
        conn = await connect_member(port)
        await Pipeline([conn], make, check, 1, total=cfg.c1_warmup,
                       first_id=next_id).run(cfg.timeout)
        next_id += cfg.c1_warmup
        res = await Pipeline([conn], make, check, 1, total=cfg.c1_n, record_latency=True,
                             first_id=next_id).run(cfg.timeout)
        next_id += cfg.c1_n
        conn.close()
        lat = res.latencies or [0.0]
        medians.append(statistics.median(lat) * 1e6)
        p99s.append(percentile(lat, 0.99) * 1e6)
    return medians, p99s


async def c1_latency(cluster: Cluster, cfg: ClusterConfig) -> dict[str, Any]:
    leader = cluster.leader()
    meter = ClusterMeter(cluster)
    medians, p99s = await sequential_latencies(cluster.ports, "c1", cfg)
    out: dict[str, Any] = {"latency_us": statistics.fmean(medians),
                           "p99_us": statistics.fmean(p99s), "member_latency_us": medians,
                           **meter.stop(SIZE * (cfg.c1_warmup + cfg.c1_n))}
    if leader is not None:
        if cluster.leader() != leader:
            raise BenchError("the Raft leader changed during C1: leader/follower mixed up")
        out["leader"] = leader
        out["leader_latency_us"] = medians[leader]
        out["follower_latency_us"] = statistics.fmean(
            m for i, m in enumerate(medians) if i != leader)
    return out


# --- C2: pipelined throughput, connections spread over the members -----------------

async def c2_throughput(cluster: Cluster, cfg: ClusterConfig) -> dict[str, Any]:
    conns = [await connect_member(port) for port in spread(cluster, cfg.c2_conns)]
    return await pipelined_throughput(conns, insert_request("c2"), check_ops(1), cfg.c2_inflight,
                                      cfg.c2_duration, cfg.timeout, lambda: ClusterMeter(cluster))


# --- C3: fail-over ------------------------------------------------------------------

async def c3_failover(cluster: Cluster, cfg: ClusterConfig) -> dict[str, Any]:
    """`kill -9` the member a client writes through (ovsdb-server: the leader), then
    time until that client, moved to another member, has a commit acknowledged."""
    times, victims = [], []
    for k in range(cfg.c3_kills):
        leader = cluster.leader()
        victim = leader if leader is not None else k % SIZE
        times.append(await one_failover(cluster, victim, f"c3r{k}", cfg))
        victims.append(victim)
        cluster.restart(victim)
    return {"failover_s": statistics.median(times), "failover_each_s": times,
            "victims": victims}


async def one_failover(cluster: Cluster, victim: int, prefix: str,
                       cfg: ClusterConfig) -> float:
    conn = await connect_member(cluster.ports[victim])
    written = 0

    async def write_until_lost() -> None:
        nonlocal written
        while True:
            await conn.transact(DB, bulk_rows(prefix, written, 1), cfg.timeout)
            written += 1

    writer = asyncio.ensure_future(write_until_lost())
    await asyncio.sleep(cfg.c3_lead_in)
    if writer.done() or written == 0:
        why = writer.exception() if writer.done() else "no reply yet"
        writer.cancel()
        raise BenchError(f"the client wrote {written} rows through member {victim} "
                         f"before the kill: {why}")
    t_kill = time.perf_counter()
    cluster.members[victim].kill()
    try:
        await asyncio.wait_for(writer, cfg.timeout)
    except BenchError:
        pass  # ServerGone: what the kill should do
    except TimeoutError:
        raise BenchTimeout(f"the client did not notice member {victim} die "
                           f"within {cfg.timeout:.0f}s") from None
    conn.close()
    deadline = t_kill + cfg.timeout
    others = [(victim + d) % SIZE for d in range(1, SIZE)]
    attempt = 0
    problems: list[str] = []
    while time.perf_counter() < deadline:
        port = cluster.ports[others[attempt % len(others)]]
        attempt += 1
        try:
            conn = await connect_member(port)
            try:
                await conn.transact(DB, bulk_rows(prefix, written + attempt, 1),
                                    max(0.1, deadline - time.perf_counter()))
            finally:
                conn.close()
            return time.perf_counter() - t_kill
        except (ServerGone, ReplyError) as exc:
            problems.append(str(exc)[:200])
            await asyncio.sleep(0.01)
    raise BenchTimeout(f"no commit acknowledged within {cfg.timeout:.0f}s of killing member "
                       f"{victim}; {attempt} attempts, last: {problems[-1:] or 'none'}")


# --- C4: monitor fan-out across the members ------------------------------------------

class FanoutMonitor(MonitorConn):
    """W4's monitoring client, which also notes when each row update arrived."""

    def __init__(self, verify: bool) -> None:
        super().__init__(re.compile(rb'"new"\s*:'), "update", "new", verify)
        self.arrivals: list[float] = []

    def data_received(self, data: bytes) -> None:
        before = self.rows
        super().data_received(data)
        if self.rows > before:
            self.arrivals.extend([time.perf_counter()] * (self.rows - before))

    def expect(self, target: int, read_pause: float) -> asyncio.Future[None]:
        """A future set once `target` row updates have arrived in all."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.t_done = None
        self.start_counting(target, done, read_pause)
        if self.rows >= target:
            done.set_result(None)
        return done


async def c4_fanout(cluster: Cluster, cfg: ClusterConfig) -> dict[str, Any]:
    """50 `monitor`s spread over the members, one writer (through the leader, if any).

    First `c4_seq` sequential commits, each timed from the writer's send to
    the arrival of its row at the last monitor; then `c4_txns` commits with
    `c4_inflight` in flight, timed until every monitor has every row."""
    monitors: list[FanoutMonitor] = []
    for k, port in enumerate(spread(cluster, cfg.c4_monitors)):
        conn = await connect_member(port, functools.partial(FanoutMonitor, k == 0))
        assert isinstance(conn, FanoutMonitor)
        monitors.append(conn)
    replies = await asyncio.gather(*(m.call("monitor", [DB, "m", {TABLE: {"columns": COLUMNS}}],
                                            cfg.timeout) for m in monitors))
    for msg in replies:
        why = rpc_failure(msg)
        if why:
            raise ReplyError(f"monitor: {why}")
        if msg["result"] not in ({}, {TABLE: {}}):
            raise ReplyError(f"monitor: unexpected initial contents {error_text(msg)}")
    leader = cluster.leader()
    writer = await connect_member(cluster.ports[leader or 0])
    meter = ClusterMeter(cluster)

    async def all_delivered(dones: list[asyncio.Future[None]], target: int,
                            t_start: float) -> None:
        remaining = cfg.timeout - (time.perf_counter() - t_start)
        try:
            await asyncio.wait_for(asyncio.gather(*dones), max(remaining, 1.0))
        except TimeoutError:
            seen = sorted(m.rows for m in monitors)
            raise BenchTimeout(f"monitors saw {seen[0]}..{seen[-1]} of {target} row "
                               "updates") from None

    dones = [m.expect(cfg.c4_seq, 0.0) for m in monitors]
    t0 = time.perf_counter()
    sent, acked = [], []
    for i in range(cfg.c4_seq):
        sent.append(time.perf_counter())
        await writer.transact(DB, bulk_rows("c4", i, 1), cfg.timeout)
        acked.append(time.perf_counter())
    await all_delivered(dones, cfg.c4_seq, t0)
    last = [max(m.arrivals[i] for m in monitors) for i in range(cfg.c4_seq)]
    delays = [t - t_sent for t, t_sent in zip(last, sent)]

    total = cfg.c4_seq + cfg.c4_txns
    dones = [m.expect(total, cfg.c4_read_pause) for m in monitors]
    t1 = time.perf_counter()
    res = await Pipeline([writer], insert_request("c4p"), check_ops(1), cfg.c4_inflight,
                         total=cfg.c4_txns).run(cfg.timeout)
    if res.ok != cfg.c4_txns:
        raise ReplyError(f"the writer committed {res.ok} of {cfg.c4_txns} transactions")
    await all_delivered(dones, total, t1)
    t_end = max(m.arrivals[total - 1] for m in monitors)
    metrics = meter.stop(total)
    await asyncio.sleep(0.05)  # anything extra arriving now is an error too
    for m in monitors:
        if m.problem:
            raise ReplyError(m.problem)
        if m.rows != total:
            raise ReplyError(f"a monitor saw {m.rows} row updates for {total} inserts")
    check = monitors[0]
    if check.parsed_rows != total or len(check.uuids) != total:
        raise ReplyError(f"verifying monitor: {check.parsed_rows} parsed row updates, "
                         f"{len(check.uuids)} distinct rows, for {total} inserts")
    writer.close()
    for m in monitors:
        m.close()
    return {"fanout_latency_us": statistics.median(delays) * 1e6,
            "fanout_p99_us": percentile(delays, 0.99) * 1e6,
            "ack_to_last_us": statistics.median(t - t_ack for t, t_ack in zip(last, acked)) * 1e6,
            "commits_per_s": cfg.c4_txns / (t_end - t1),
            "writer_txn_per_s": res.rate, **metrics}


# --- the floor: etcd's own put through aetcd ----------------------------------------

def endpoint_addresses(endpoints: str) -> list[tuple[str, int]]:
    """(host, port) of each URL in an etcd endpoint list."""
    out = []
    for url in endpoints.split(","):
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"etcd endpoint {url!r} has no host:port")
        out.append((parts.hostname, parts.port))
    return out


FLOOR_VALUE = b"x" * 200  # about one small transaction's log record


async def floor_c1(etcd: EtcdCluster, prefix: str, cfg: ClusterConfig) -> dict[str, Any]:
    """Sequential puts through each etcd member: median per member, averaged;
    then the same while three watchers follow the keys, one per etcd member,
    as tegadb's members follow the log (`etcdctl watch`, a light Go client)."""
    meter = Meter(*etcd_pids(etcd)).start()
    medians = await _sequential_puts(etcd, f"{prefix}/c1", cfg)
    out = {"latency_us": statistics.fmean(medians), "member_latency_us": medians,
           **meter.stop(SIZE * (cfg.c1_warmup + cfg.c1_n))}
    watchers = [subprocess.Popen(
        ["etcdctl", f"--endpoints={url}", "watch", "--prefix", f"{prefix}/c1w/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for url in etcd.endpoints]
    try:
        await asyncio.sleep(0.5)  # the watches are set up
        out["watched_latency_us"] = statistics.fmean(
            await _sequential_puts(etcd, f"{prefix}/c1w", cfg))
    finally:
        for watcher in watchers:
            watcher.kill()
            watcher.wait()
    return out


async def _sequential_puts(etcd: EtcdCluster, prefix: str, cfg: ClusterConfig) -> list[float]:
    """The median put latency (us) through each etcd member in turn."""
    import aetcd
    medians = []
    for m, (host, port) in enumerate(endpoint_addresses(etcd.endpoints_arg)):
        async with aetcd.Client(host, port) as client:
            lat = []
            for i in range(cfg.c1_warmup + cfg.c1_n):
                t = time.perf_counter()
                await client.put(f"{prefix}/{m}/{i}".encode(), FLOOR_VALUE)
                lat.append(time.perf_counter() - t)
        medians.append(statistics.median(lat[cfg.c1_warmup:]) * 1e6)
    return medians


async def floor_c2(etcd: EtcdCluster, prefix: str, cfg: ClusterConfig) -> dict[str, Any]:
    """C2's shape on etcd: c2_conns clients spread over the members, each with
    c2_inflight puts outstanding, over c2_duration (after a fifth of it to warm up)."""
    import aetcd
    addresses = endpoint_addresses(etcd.endpoints_arg)
    clients = [aetcd.Client(*addresses[k % len(addresses)]) for k in range(cfg.c2_conns)]
    try:
        for client in clients:
            await client.connect()
        count = 0

        async def slot(client: Any, name: str, until: float, counting: bool) -> None:
            nonlocal count
            i = 0
            while time.perf_counter() < until:
                await client.put(f"{name}/{i}".encode(), FLOOR_VALUE)
                i += 1
                count += counting

        async def phase(seconds: float, counting: bool, label: str) -> float:
            t = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(
                slot(client, f"{prefix}/c2/{label}/{k}/{j}", t + seconds, counting)
                for k, client in enumerate(clients) for j in range(cfg.c2_inflight))),
                cfg.timeout)
            return time.perf_counter() - t

        await phase(cfg.c2_duration / 5, False, "warm")
        meter = Meter(*etcd_pids(etcd)).start()
        elapsed = await phase(cfg.c2_duration, True, "run")
        metrics = meter.stop(count)
    finally:
        for client in clients:
            await client.close()
    return {"txn_per_s": count / elapsed, **metrics}


FLOORS: dict[str, Callable[[EtcdCluster, str, ClusterConfig],
                           Coroutine[Any, Any, dict[str, Any]]]] = {
    "C1": floor_c1, "C2": floor_c2}


Workload = Callable[[Cluster, ClusterConfig], Coroutine[Any, Any, dict[str, Any]]]

CLUSTER_WORKLOADS: dict[str, tuple[str, Workload]] = {
    "C1": ("cluster: sequential commit latency through each member", c1_latency),
    "C2": ("cluster: 4 conns x 32 in flight over the members, inserts", c2_throughput),
    "C3": ("cluster: fail-over after kill -9 of the member written through", c3_failover),
    "C4": ("cluster: 50 monitors over the members, 1 writer", c4_fanout),
}

"""Cluster workloads C1-C4 (issue 13): tegadb's 3 members on a 3-member etcd
cluster against ovsdb-server's 3-member Raft cluster, with etcd's own figures
as the floor.  Run by bench_run.py (`make bench-cluster`, part of `make bench`).

Each run of a workload gets a fresh cluster of each kind (one directory per
member under the bench's work directory, everything on 127.0.0.1); which kind
goes first alternates between repetitions.  The etcd cluster is started once
for the whole run; each tegadb cluster gets its own key prefix in it.  Every
process is stopped by its pid at the end, also when a run fails.

A kind whose cluster cannot start (tegadb-server without cluster mode, etcd
missing) is reported as NOT AVAILABLE and never counted; so is the floor
without etcd or aetcd.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import peers
from bench_client import (
    BenchError,
    BenchTimeout,
    Conn,
    Pipeline,
    ReplyError,
    ServerGone,
    error_text,
    percentile,
    rpc_failure,
)
from bench_workloads import (
    COLUMNS,
    DB,
    SCHEMA,
    TABLE,
    Meter,
    MonitorConn,
    bulk_rows,
    check_ops,
    fmt,
    insert_request,
    run_async,
)
from etcdpeers import EtcdCluster, missing_etcd_binaries

KINDS = ["ovsdb-server", "tegadb"]
FLOOR = "etcd"             # the third column: etcd's own put, through aetcd
SIZE = 3                   # members per cluster
READY_TIMEOUT = 30.0       # a cluster (or a restarted member) answering and connected
GEN_BUSY = 0.8             # as in bench_run: generator cores above which a figure is suspect


@dataclass
class ClusterConfig:
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


class NotAvailable(BenchError):
    """A kind of cluster that cannot be started here at all."""

    status = "not available"


# --- clusters ---------------------------------------------------------------------

class Cluster:
    """SIZE members of one kind on the bench schema, each a `peers.Peer` with its
    own directory, Unix socket and TCP port on 127.0.0.1."""

    kind = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.members: list[peers.Peer] = []

    @property
    def ports(self) -> list[int]:
        return [m.tcp_port for m in self.members]

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members if m.process is not None]

    @property
    def store_pids(self) -> list[int]:
        """Processes outside the members that the cluster's writes cost (etcd's)."""
        return []

    def leader(self) -> int | None:
        """The one member that orders writes, or None where every member does."""
        return None

    def alive(self) -> bool:
        return all(m.process is not None and m.process.poll() is None for m in self.members)

    def kill(self, i: int) -> None:
        """SIGKILL member i by its pid and reap it."""
        process = self.members[i].process
        assert process is not None, f"member {i} is not running"
        process.kill()
        process.wait()

    def restart(self, i: int) -> None:
        """Start member i again on its files and TCP port; wait until the cluster is whole."""
        member = self.members[i]
        member.stop()  # reaps it if it was killed
        if os.path.exists(member.unix_path):
            os.unlink(member.unix_path)  # left behind by SIGKILL
        member.start(member.tcp_port)
        self.wait_ready()

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def wait_ready(self) -> None:
        """Until every member's `_Server` row for the database says connected."""
        deadline = time.monotonic() + READY_TIMEOUT
        why = "no member asked yet"
        while time.monotonic() < deadline:
            why = self._not_ready()
            if why is None:
                return
            time.sleep(0.05)
        raise BenchTimeout(f"{self.kind} cluster not ready after {READY_TIMEOUT:.0f}s: {why}")

    def _not_ready(self) -> str | None:
        for i, member in enumerate(self.members):
            if member.process is None or member.process.poll() is not None:
                raise ServerGone(f"member {i} exited:\n{member.diagnostics()[-1500:]}")
            try:
                with peers.RawClient(member.remote_tcp, timeout=2.0) as client:
                    rows = client.transact("_Server", {
                        "op": "select", "table": "Database", "where": [["name", "==", DB]],
                        "columns": ["connected"]})[0].get("rows")
            except (OSError, AssertionError) as exc:
                return f"member {i}: {exc}"
            if not rows or rows[0].get("connected") is not True:
                return f"member {i}: _Server says {rows}"
        return None

    def log_tail(self, chars: int = 1500) -> str:
        return "\n".join(f"member {i}: {m.diagnostics()[-chars:]}"
                         for i, m in enumerate(self.members))


class RaftCluster(Cluster):
    """ovsdb-server's Raft cluster: `create-cluster`, then `join-cluster` for the others."""

    kind = "ovsdb-server"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        raft_ports = [peers.free_tcp_port() for _ in range(SIZE)]
        try:
            for i, raft_port in enumerate(raft_ports):
                member_dir = directory / f"m{i}"
                member_dir.mkdir(parents=True)
                db_file = member_dir / f"{DB}.db"
                address = f"tcp:127.0.0.1:{raft_port}"
                if i == 0:
                    argv = ["ovsdb-tool", "create-cluster", str(db_file), str(SCHEMA), address]
                else:
                    argv = ["ovsdb-tool", "join-cluster", str(db_file), DB, address,
                            f"tcp:127.0.0.1:{raft_ports[0]}"]
                subprocess.run(argv, check=True, capture_output=True, text=True)
                member = peers.Peer(self.kind, member_dir, self._command(member_dir, db_file))
                self.members.append(member)
                member.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _command(member_dir: Path, db_file: Path) -> Callable[[int], list[str]]:
        def command(port: int) -> list[str]:
            # --unixctl and --pidfile keep it out of /var/run/openvswitch (PEERS.md).
            return ["ovsdb-server", "--no-chdir",
                    f"--remote=punix:{member_dir / 'db.sock'}",
                    f"--remote=ptcp:{port}:127.0.0.1",
                    f"--unixctl={member_dir / 'ovsdb-server.ctl'}",
                    f"--pidfile={member_dir / 'ovsdb-server.pid'}",
                    f"--log-file={member_dir / 'server.log'}",
                    str(db_file)]
        return command

    def leader(self) -> int | None:
        """The member whose `cluster/status` says `Role: leader`."""
        for i, member in enumerate(self.members):
            if member.process is None or member.process.poll() is not None:
                continue
            status = subprocess.run(
                ["ovs-appctl", "-t", str(member.directory / "ovsdb-server.ctl"),
                 "cluster/status", DB], capture_output=True, text=True, timeout=5, check=False)
            if "Role: leader" in status.stdout.splitlines():
                return i
        raise BenchError("no member of the Raft cluster says it is the leader")

    def wait_ready(self) -> None:
        super().wait_ready()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # connected members can still be between two leaders
            try:
                self.leader()
                return
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class TegadbCluster(Cluster):
    """tegadb-server members on one etcd cluster, under their own key prefix."""

    kind = "tegadb"

    def __init__(self, directory: Path, etcd: EtcdCluster, prefix: str,
                 bin_dir: Path | None) -> None:
        super().__init__(directory)
        self.etcd = etcd
        args = [f"--etcd-endpoints={etcd.endpoints_arg}", f"--etcd-prefix={prefix}"]
        try:
            for i in range(SIZE):
                try:
                    self.members.append(peers.start_tegadb_server(
                        directory / f"m{i}", [SCHEMA], extra_args=args, bin_dir=bin_dir))
                except RuntimeError as exc:  # the harness's "did not start"
                    raise NotAvailable(f"tegadb-server did not start as a cluster member: "
                                       f"{last_words(str(exc))[:200]}") from None
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def store_pids(self) -> list[int]:
        return [self.etcd.pid(i) for i in range(self.etcd.size)]


class ClusterMeter:
    """`Meter` over the members and the store they write to (etcd, for tegadb: its
    CPU is part of what a tegadb cluster's commit costs), and over the store apart."""

    def __init__(self, cluster: Cluster) -> None:
        self.all = Meter(*cluster.pids, *cluster.store_pids).start()
        self.store = Meter(*cluster.store_pids).start() if cluster.store_pids else None

    def stop(self, ops: int) -> dict[str, float]:
        out = self.all.stop(ops)
        if self.store is not None:
            out["store_cpu_us_per_op"] = self.store.stop(ops)["server_cpu_us_per_op"]
        return out


def last_words(text: str) -> str:
    """The last non-empty line of a server's diagnostics: usually why it stopped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# --- the client side -------------------------------------------------------------

async def connect_member(port: int, factory: Callable[[], Conn] = Conn) -> Conn:
    """A client connection to a member's TCP remote."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(factory, "127.0.0.1", port)
    except OSError as exc:
        raise ServerGone(f"cannot connect to 127.0.0.1:{port}: {exc}") from None
    return conn


def spread(cluster: Cluster, n: int) -> list[int]:
    """The TCP ports of n connections spread round-robin over the members."""
    return [cluster.ports[k % len(cluster.ports)] for k in range(n)]


# --- C1: sequential commit latency through each member --------------------------

async def c1_latency(cluster: Cluster, cfg: ClusterConfig) -> dict[str, Any]:
    leader = cluster.leader()
    make, check = insert_request("c1"), check_ops(1)
    medians, p99s = [], []
    next_id = 0
    meter = ClusterMeter(cluster)
    for port in cluster.ports:
        conn = await connect_member(port)
        await Pipeline([conn], make, check, 1, total=cfg.c1_warmup,
                       first_id=next_id).run(cfg.timeout)
        next_id += cfg.c1_warmup
        res = await Pipeline([conn], make, check, 1, total=cfg.c1_n, record_latency=True,
                             first_id=next_id).run(cfg.timeout)
        next_id += cfg.c1_n
        conn.close()
        lat = res.latencies or []
        medians.append(statistics.median(lat) * 1e6)
        p99s.append(percentile(lat, 0.99) * 1e6)
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
    make, check = insert_request("c2"), check_ops(1)
    warm = Pipeline(conns, make, check, cfg.c2_inflight, duration=cfg.c2_duration / 5)
    await warm.run(cfg.timeout)
    meter = ClusterMeter(cluster)
    res = await Pipeline(conns, make, check, cfg.c2_inflight, duration=cfg.c2_duration,
                         first_id=warm.next_id).run(cfg.timeout)
    metrics = meter.stop(res.ok)
    for conn in conns:
        conn.close()
    return {"txn_per_s": res.rate, **metrics}


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
    cluster.kill(victim)
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
        import re
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
        conn = await connect_member(port, lambda verify=k == 0: FanoutMonitor(verify))
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


async def floor_c1(endpoints: str, prefix: str, cfg: ClusterConfig) -> dict[str, Any]:
    """Sequential puts through each etcd member: median per member, averaged."""
    import aetcd
    medians = []
    for m, (host, port) in enumerate(endpoint_addresses(endpoints)):
        async with aetcd.Client(host, port) as client:
            lat = []
            for i in range(cfg.c1_warmup + cfg.c1_n):
                t = time.perf_counter()
                await client.put(f"{prefix}/c1/{m}/{i}".encode(), FLOOR_VALUE)
                lat.append(time.perf_counter() - t)
        medians.append(statistics.median(lat[cfg.c1_warmup:]) * 1e6)
    return {"latency_us": statistics.fmean(medians), "member_latency_us": medians}


async def floor_c2(endpoints: str, prefix: str, cfg: ClusterConfig) -> dict[str, Any]:
    """C2's shape on etcd: c2_conns clients spread over the members, each with
    c2_inflight puts outstanding, over c2_duration (after a fifth of it to warm up)."""
    import aetcd
    addresses = endpoint_addresses(endpoints)
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
        g0 = time.process_time()
        elapsed = await phase(cfg.c2_duration, True, "run")
        gen = time.process_time() - g0
    finally:
        for client in clients:
            await client.close()
    return {"txn_per_s": count / elapsed, "gen_util": gen / elapsed}


FLOORS: dict[str, Callable[[str, str, ClusterConfig], Coroutine[Any, Any, dict[str, Any]]]] = {
    "C1": floor_c1, "C2": floor_c2}


# --- the run -------------------------------------------------------------------------

Workload = Callable[[Cluster, ClusterConfig], Coroutine[Any, Any, dict[str, Any]]]

CLUSTER_WORKLOADS: dict[str, tuple[str, Workload]] = {
    "C1": ("cluster: sequential commit latency through each member", c1_latency),
    "C2": ("cluster: 4 conns x 32 in flight over the members, inserts", c2_throughput),
    "C3": ("cluster: fail-over after kill -9 of the member written through", c3_failover),
    "C4": ("cluster: 50 monitors over the members, 1 writer", c4_fanout),
}

# (workload, metric key, label, unit, better, target ratio, server-CPU key, CPU unit)
CLUSTER_METRICS: list[tuple[str, str, str, str, str, float | None, str | None, str]] = [
    ("C1", "latency_us", "commit latency, members avg", "us", "lower", 0.5,
     "server_cpu_us_per_op", "us/txn"),
    ("C1", "leader_latency_us", "  through the leader", "us", "lower", None, None, ""),
    ("C1", "follower_latency_us", "  through a follower", "us", "lower", None, None, ""),
    ("C2", "txn_per_s", "throughput, 4x32 in flight", "txn/s", "higher", 10.0,
     "server_cpu_us_per_op", "us/txn"),
    ("C3", "failover_s", "fail-over after kill -9", "s", "lower", None, None, ""),
    ("C4", "fanout_latency_us", "write to last of 50 mon.", "us", "lower", None, None, ""),
    ("C4", "commits_per_s", "commits/s, all delivered", "txn/s", "higher", None,
     "server_cpu_us_per_op", "us/txn"),
]


class ClusterBench:
    """Runs the wanted C workloads for each kind, `reps` times, alternating."""

    def __init__(self, cfg: ClusterConfig, workdir: Path, kinds: Sequence[str],
                 tegadb_bin: str | None, keep: bool) -> None:
        self.cfg = cfg
        self.kinds = [k for k in KINDS if k in kinds]
        self.tegadb_bin = Path(tegadb_bin) if tegadb_bin else None
        self.keep = keep
        self.directory = Path(tempfile.mkdtemp(prefix="cluster-", dir=workdir))
        self.run_id = self.directory.name.removeprefix("cluster-")
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.failures: dict[str, dict[str, dict[str, str]]] = {}
        self.unavailable: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.etcd: EtcdCluster | None = None

    def run(self, wanted: Sequence[str]) -> None:
        try:
            with ExitStack() as stack:
                if "tegadb" in self.kinds or any(wl in FLOORS for wl in wanted):
                    self.start_etcd(stack)
                for wl in wanted:
                    self.run_workload(wl)
        finally:
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)

    def start_etcd(self, stack: ExitStack) -> None:
        missing = missing_etcd_binaries()
        if missing:
            why = f"{', '.join(missing)} not installed (make peers)"
        else:
            etcd = EtcdCluster(self.directory / "etcd", size=SIZE)
            stack.callback(etcd.stop)  # whatever start() got running, even if it fails
            try:
                etcd.start()
                self.etcd = etcd
                print(f"etcd: {SIZE} members at {etcd.endpoints_arg}", flush=True)
                return
            except Exception as exc:
                why = f"the etcd cluster did not start: {last_words(str(exc))}"
        print(f"etcd: NOT AVAILABLE: {why}", flush=True)
        self.unavailable[FLOOR] = why
        self.unavailable.setdefault("tegadb", why)

    def start_cluster(self, kind: str, directory: Path) -> Cluster:
        if kind == "ovsdb-server":
            return RaftCluster(directory)
        assert self.etcd is not None
        return TegadbCluster(directory, self.etcd, f"/bench-{self.run_id}-{directory.name}",
                             self.tegadb_bin)

    def fail(self, wl: str, kind: str, exc: BaseException, cluster: Cluster | None) -> None:
        status = exc.status if isinstance(exc, BenchError) else "crashed"
        text = f"{type(exc).__name__}: {exc}"
        entry = {"status": status, "error": text[:600]}
        if not isinstance(exc, BenchError):
            entry["traceback"] = traceback.format_exc()[-2000:]
        if cluster is not None:
            entry["log_tail"] = cluster.log_tail()
        self.failures.setdefault(wl, {})[kind] = entry
        if isinstance(exc, NotAvailable):
            self.unavailable[kind] = str(exc)
        print(f"    {kind}: {status.upper()}: {text[:300]}", flush=True)

    def run_workload(self, wl: str) -> None:
        title, _ = CLUSTER_WORKLOADS[wl]
        print(f"{wl} {title}", flush=True)
        t_start = time.perf_counter()
        self.runs[wl] = {}
        kinds = [*self.kinds, FLOOR] if wl in FLOORS else self.kinds
        for rep in range(self.cfg.reps):
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                if kind in self.unavailable:
                    self.failures.setdefault(wl, {}).setdefault(kind, {
                        "status": "not available", "error": self.unavailable[kind]})
                elif kind not in self.failures.get(wl, {}):
                    self.measure(wl, kind, rep)
        self.seconds[wl] = time.perf_counter() - t_start

    def measure(self, wl: str, kind: str, rep: int) -> None:
        """One run of workload `wl` on a fresh cluster of `kind` (or on etcd, for the floor)."""
        directory = self.directory / f"{wl}-{kind}-{rep}"
        cluster = None
        try:
            if kind == FLOOR:
                assert self.etcd is not None
                try:
                    metrics = run_async(FLOORS[wl](self.etcd.endpoints_arg, f"/bench-{self.run_id}-"
                                                   f"{directory.name}", self.cfg))
                except ImportError as exc:
                    raise NotAvailable(f"aetcd is not installed: {exc}") from None
            else:
                cluster = self.start_cluster(kind, directory)
                try:
                    metrics = run_async(CLUSTER_WORKLOADS[wl][1](cluster, self.cfg))
                finally:
                    alive = cluster.alive()
                    cluster.stop()
                if not alive:
                    raise ServerGone("a member exited during the run")
        except Exception as exc:
            self.fail(wl, kind, exc, cluster)
            return
        finally:
            if not self.keep:
                shutil.rmtree(directory, ignore_errors=True)
        self.record(wl, kind, rep, metrics)

    def record(self, wl: str, kind: str, rep: int, metrics: dict[str, Any]) -> None:
        self.runs[wl].setdefault(kind, []).append(metrics)
        parts = [f"{label.strip()} {fmt(metrics[key])} {unit}"
                 for w, key, label, unit, *_ in CLUSTER_METRICS if w == wl and key in metrics]
        if "gen_util" in metrics:
            parts.append(f"[generator {metrics['gen_util']:.2f} cores"
                         + (f", others {metrics['other_util']:.2f}]"
                            if "other_util" in metrics else "]"))
        print(f"    rep {rep + 1} {kind:12s} " + "; ".join(parts), flush=True)

    def median(self, wl: str, kind: str, key: str | None) -> float | None:
        values = [m[key] for m in self.runs.get(wl, {}).get(kind, [])
                  if key is not None and m.get(key) is not None]
        return statistics.median(values) if values else None

    def status(self, wl: str, kind: str) -> str:
        failure = self.failures.get(wl, {}).get(kind)
        if failure:
            return failure["status"]
        return "ok" if self.runs.get(wl, {}).get(kind) else "not run"

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for wl, key, label, unit, better, target, cpu_key, cpu_unit in CLUSTER_METRICS:
            if wl not in self.runs:
                continue
            row: dict[str, Any] = {"workload": wl, "metric": key, "label": label, "unit": unit,
                                   "better": better, "target": target, "cpu_unit": cpu_unit}
            for kind in [*KINDS, FLOOR]:
                row[kind] = self.median(wl, kind, key)
                row[f"{kind}_cpu"] = self.median(wl, kind, cpu_key)
                row[f"{kind}_status"] = self.status(wl, kind)
                row[f"{kind}_reps"] = len(self.runs[wl].get(kind, []))
            o, t = row["ovsdb-server"], row["tegadb"]
            ratio = None
            if o is not None and t is not None and o > 0 and t > 0:
                ratio = t / o if better == "higher" else o / t
            row["ratio"] = ratio
            row["met"] = None if target is None or ratio is None else ratio >= target
            rows.append(row)
        return rows

    def warnings(self) -> list[str]:
        out = []
        for wl, by_kind in self.runs.items():
            for kind, runs in by_kind.items():
                peak = max((m.get("gen_util", 0.0) for m in runs), default=0.0)
                if peak >= GEN_BUSY:
                    out.append(f"{wl} vs {kind}: the load generator used up to {peak:.2f} "
                               "cores; it may be the bottleneck for that figure")
        return out

    def results(self) -> dict[str, Any]:
        rows = self.summary()
        return {"config": vars(self.cfg),
                "etcd_endpoints": self.etcd.endpoints_arg if self.etcd else None,
                "seconds_per_workload": self.seconds, "summary": rows,
                "table": table_text(rows, self.cfg.reps), "unavailable": self.unavailable,
                "warnings": self.warnings(), "failures": self.failures, "runs": self.runs}


def table_text(rows: list[dict[str, Any]], reps: int) -> str:
    def cell(row: dict[str, Any], kind: str) -> str:
        if row[kind] is not None:
            return fmt(row[kind])
        status = row[f"{kind}_status"]
        return "-" if status == "ok" else status.upper()

    head = (f"{'':3} {'metric':34} {'ovsdb-server':>13} {'tegadb':>13} {'ratio':>6} "
            f"{'target':>7} {'':4} {'etcd floor':>13}  server CPU per op: ovsdb / tegadb (with etcd)")
    lines = [f"Cluster workloads, 3 members each (tegadb on a 3-member etcd); medians of "
             f"{reps} runs; ratio = tegadb vs ovsdb-server, higher is better for "
             "tegadb (times: ovsdb/tegadb; rates: tegadb/ovsdb).", head, "-" * len(head)]
    for r in rows:
        ratio = fmt(r["ratio"]) if r["ratio"] is not None else "-"
        target = f">={r['target']:g}" if r["target"] is not None else ""
        met = {True: "MET", False: "miss", None: ""}[r["met"]]
        floor = cell(r, FLOOR) if r["workload"] in FLOORS and r["metric"] in (
            "latency_us", "txn_per_s") else ""
        cpu = ""
        if r["cpu_unit"]:
            cpu = f"{fmt(r['ovsdb-server_cpu'])} / {fmt(r['tegadb_cpu'])} {r['cpu_unit']}"
        lines.append(f"{r['workload']:3} {r['label'] + ' (' + r['unit'] + ')':34} "
                     f"{cell(r, 'ovsdb-server'):>13} {cell(r, 'tegadb'):>13} {ratio:>6} "
                     f"{target:>7} {met:4} {floor:>13}  {cpu}")
    return "\n".join(lines)


def run_cluster_bench(wanted: Sequence[str], quick: bool, reps: int | None, workdir: Path,
                      kinds: Sequence[str], tegadb_bin: str | None,
                      keep: bool) -> dict[str, Any]:
    """Run the C workloads in `wanted`, print their progress; the results for the JSON."""
    cfg = replace(CLUSTER_QUICK if quick else CLUSTER_FULL)
    if reps:
        cfg.reps = reps
    bench = ClusterBench(cfg, workdir, kinds, tegadb_bin, keep)
    bench.run(wanted)
    return bench.results()


def print_results(results: dict[str, Any]) -> None:
    print(results["table"])
    for kind, why in results["unavailable"].items():
        print(f"{kind}: NOT AVAILABLE: {why}")
    for wl, by_kind in results["failures"].items():
        for kind, f in by_kind.items():
            if f["status"] != "not available":
                print(f"\n{wl} {kind}: {f['status'].upper()}: {f['error']}")
    for w in results["warnings"]:
        print(f"WARNING: {w}")


if __name__ == "__main__":
    sys.exit("run it through bench_run.py: --only C1,C2,C3,C4 (or make bench-cluster)")

"""The clusters of the cluster benchmark (bench_cluster.py): ovsdb-server's
3-member Raft cluster and tegadb's 3 members on an etcd cluster, each member a
`peers.Peer` on 127.0.0.1 with its own directory, stopped by its pid."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import peers
from bench_client import BenchError, BenchTimeout, Conn, ServerGone
from bench_workloads import DB, SCHEMA, Meter, run_async
from etcdpeers import EtcdCluster

SIZE = 3                   # members per cluster
READY_TIMEOUT = 30.0       # a cluster (or a restarted member) answering and connected


class NotAvailable(BenchError):
    """A kind of cluster that cannot be started here at all."""

    status = "not available"


# --- clusters ---------------------------------------------------------------------

class Cluster:
    """SIZE members of one kind on the bench schema, each a `peers.Peer` with its
    own directory, Unix socket and TCP port on 127.0.0.1."""

    kind = ""
    # What run_then_stop's failure calls one of the processes alive() checks.
    process_noun = "member"

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

    def run_then_stop(self, workload: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run `workload` (a workload's coroutine on this cluster) to its end, then
        stop the cluster, also when the workload fails.  Its metrics, or
        ServerGone if a process had exited meanwhile."""
        try:
            metrics: dict[str, Any] = run_async(workload)
        finally:
            alive = self.alive()
            self.stop()
        if not alive:
            raise ServerGone(f"a {self.process_noun} exited during the run")
        return metrics

    def restart(self, i: int) -> None:
        """Start member i again on its files and TCP port; wait until the cluster is whole."""
        member = self.members[i]
        member.stop()
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
        why: str | None = "no member asked yet"
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
                made = subprocess.run(argv, capture_output=True, text=True, check=False)
                if made.returncode != 0:
                    raise BenchError(f"{' '.join(argv)} failed ({made.returncode}): "
                                     f"{made.stdout}{made.stderr}")
                member = peers.Peer(self.kind, member_dir,
                                    peers.ovsdb_server_command(member_dir, [str(db_file)]))
                self.members.append(member)
                member.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

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
                    why = last_words(str(exc))[:200]
                    if i == 0:  # no cluster mode at all (or no etcd it can use)
                        raise NotAvailable("tegadb-server did not start as a cluster "
                                           f"member: {why}") from None
                    raise ServerGone(f"member {i} did not start: {why}") from None
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def store_pids(self) -> list[int]:
        return etcd_pids(self.etcd)


def etcd_pids(etcd: EtcdCluster) -> list[int]:
    return [etcd.pid(i) for i in range(etcd.size)]


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

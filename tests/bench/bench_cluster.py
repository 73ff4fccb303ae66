"""Cluster workloads C1-C4 (issue 13): tegadb's 3 members on a 3-member etcd
cluster against ovsdb-server's 3-member Raft cluster, with etcd's own figures
as the floor.  Run by bench_run.py (`make bench-cluster`, part of `make bench`).

Each run of a workload gets a fresh cluster of each kind (one directory per
member under the bench's work directory, everything on 127.0.0.1); which kind
goes first alternates between repetitions.  The etcd cluster is started once
for the whole run; each tegadb cluster gets its own key prefix in it.  Every
process is stopped by its pid at the end, also when a run fails.

The clusters are in bench_cluster_peers.py, the workloads and etcd's floor
figures in bench_cluster_workloads.py; this module runs them and makes the table.

A kind whose cluster cannot start (tegadb-server without cluster mode, etcd
missing) is reported as NOT AVAILABLE and never counted; so is the floor
without etcd or aetcd.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_client import BenchError
from bench_cluster_peers import SIZE, Cluster, NotAvailable, RaftCluster, TegadbCluster, last_words
from bench_cluster_workloads import (
    CLUSTER_FULL,
    CLUSTER_QUICK,
    CLUSTER_WORKLOADS,
    FLOORS,
    ClusterConfig,
)
from bench_workloads import fmt, run_async, summarize
from etcdpeers import EtcdCluster, missing_etcd_binaries

KINDS = ["ovsdb-server", "tegadb"]
FLOOR = "etcd"             # the third column: etcd's own put, through aetcd
GEN_BUSY = 0.8             # as in bench_run: generator cores above which a figure is suspect

# (workload, metric key, label, unit, better, target ratio, server-CPU key, CPU unit)
CLUSTER_METRICS: list[tuple[str, str, str, str, str, float | None, str | None, str]] = [
    ("C1", "latency_us", "commit latency, members avg", "us", "lower", 0.5,
     "server_cpu_us_per_op", "us/txn"),
    ("C1", "leader_latency_us", "  through the leader", "us", "lower", None, None, ""),
    ("C1", "follower_latency_us", "  through a follower", "us", "lower", None, None, ""),
    ("C1", "watched_latency_us", "  etcd put, 3 watchers", "us", "lower", None, None, ""),
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
        self.directory = Path(tempfile.mkdtemp(prefix="cluster-", dir=workdir)).absolute()
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
                    metrics = run_async(FLOORS[wl](self.etcd, f"/bench-{self.run_id}-"
                                                   f"{directory.name}", self.cfg))
                except ImportError as exc:
                    raise NotAvailable(f"aetcd is not installed: {exc}") from None
            else:
                cluster = self.start_cluster(kind, directory)
                metrics = cluster.run_then_stop(CLUSTER_WORKLOADS[wl][1](cluster, self.cfg))
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

    def summary(self) -> list[dict[str, Any]]:
        return summarize(self.runs, self.failures, CLUSTER_METRICS, [*KINDS, FLOOR])

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
            f"{'target':>7} {'':4} {'etcd floor':>13}  "
            "server CPU per op: ovsdb / tegadb with etcd / etcd floor")
    lines = [f"Cluster workloads, 3 members each (tegadb on a 3-member etcd); medians of "
             f"{reps} runs; ratio = tegadb vs ovsdb-server, higher is better for "
             "tegadb (times: ovsdb/tegadb; rates: tegadb/ovsdb).", head, "-" * len(head)]
    for r in rows:
        ratio = fmt(r["ratio"]) if r["ratio"] is not None else "-"
        target = f">={r['target']:g}" if r["target"] is not None else ""
        met = {True: "MET", False: "miss", None: ""}[r["met"]]
        floor = cell(r, FLOOR) if r["workload"] in FLOORS and r["metric"] in (
            "latency_us", "txn_per_s", "watched_latency_us") else ""
        cpu = ""
        if r["cpu_unit"]:
            cpu = f"{fmt(r['ovsdb-server_cpu'])} / {fmt(r['tegadb_cpu'])}" + (
                f" / {fmt(r[FLOOR + '_cpu'])}" if r[FLOOR + "_cpu"] is not None else "") \
                + f" {r['cpu_unit']}"
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

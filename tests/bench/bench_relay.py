"""Relay workloads R1-R2 (issue 15): tegadb relays in front of ovsdb-server,
against ovsdb-server's own relays and against the source served directly.

    python tests/bench/bench_relay.py [--quick] [--reps N] [--only R1,R2]
        [--tegadb-bin DIR] [--out FILE] [--keep]

- R1 fan-out: 1 source (standalone ovsdb-server) + 2 relays, 200 monitoring
  clients spread over the relays, one writer through the first relay: C4's
  measurement (bench_cluster_workloads.c4_fanout): sequential commits timed
  to the last monitor, then pipelined commits timed until every monitor has
  every row; and the source's CPU per commit.  "direct" puts the 200
  clients and the writer on the source itself.
- R2 the hop: sequential single-row inserts through each relay (direct: on
  the source), median latency.

Each run gets a fresh topology (one directory per server, everything on
127.0.0.1, stopped by pid); which kind goes first alternates between runs.
The tegadb relays run the checkout's tegadb-server (compiled core if
`make native` built it) unless --tegadb-bin names an installed one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import peers  # noqa: E402
from bench_client import BenchError  # noqa: E402
from bench_cluster_peers import Cluster, last_words  # noqa: E402
from bench_cluster_workloads import (  # noqa: E402
    CLUSTER_FULL,
    CLUSTER_QUICK,
    ClusterConfig,
    c4_fanout,
    sequential_latencies,
)
from bench_run import exit_on_sigterm  # noqa: E402
from bench_workloads import DB, SCHEMA, Meter, fmt, summarize  # noqa: E402

KINDS = ["ovsdb-server", "tegadb", "direct"]   # relays of each, and no relay at all
RELAYS = 2
R1_MONITORS = 200

# (workload, metric key, label, unit, better, target ratio, CPU key, CPU unit)
RELAY_METRICS: list[tuple[str, str, str, str, str, float | None, str | None, str]] = [
    ("R1", "commits_per_s", "commits/s, all 200 delivered", "txn/s", "higher", 3.0,
     "source_cpu_us_per_op", "us/txn at the source"),
    ("R1", "fanout_latency_us", "write to last of 200 mon.", "us", "lower", None,
     "server_cpu_us_per_op", "us/txn, all servers"),
    ("R2", "latency_us", "write latency", "us", "lower", None, "source_cpu_us_per_op",
     "us/txn at the source"),
]


class Topology(Cluster):
    """A standalone ovsdb-server source on the bench schema and the servers its
    clients use (`members`): its relays, or the source itself."""

    process_noun = "server"  # alive() checks the source too

    def __init__(self, kind: str, directory: Path, tegadb_bin: Path | None) -> None:
        super().__init__(directory)
        self.kind = kind
        self.source = peers.start_ovsdb_server(directory / "source", [SCHEMA])
        try:
            if kind == "direct":
                self.members.append(self.source)
            for i in range(RELAYS if kind != "direct" else 0):
                relay = peers.Peer(kind, directory / f"relay{i}",
                                   self._relay_command(directory / f"relay{i}", tegadb_bin))
                relay.directory.mkdir(parents=True)
                self.members.append(relay)
                relay.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _relay_command(self, directory: Path, tegadb_bin: Path | None,
                       ) -> Callable[[int], list[str]]:
        source = f"relay:{DB}:{self.source.remote_tcp}"
        if self.kind == "ovsdb-server":
            return peers.ovsdb_server_command(directory, [source])
        server = ([str(tegadb_bin / "tegadb-server")] if tegadb_bin
                  else [sys.executable, "-m", "tegadb.server"])

        def tegadb_command(port: int) -> list[str]:
            return [*server, f"--remote=punix:{directory / 'db.sock'}",
                    f"--remote=ptcp:{port}:127.0.0.1", f"--log-file={directory / 'server.log'}",
                    f"--unixctl={directory / 'tegadb-server.ctl'}", source]
        return tegadb_command

    @property
    def store_pids(self) -> list[int]:
        """The source, when the clients' servers are relays (ClusterMeter's "store")."""
        return [] if self.kind == "direct" else [self.source.pid]

    def stop(self) -> None:
        super().stop()
        self.source.stop()

    def alive(self) -> bool:
        return super().alive() and self.source.process is not None \
            and self.source.process.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        return f"source: {self.source.diagnostics()[-chars:]}\n{super().log_tail(chars)}"


def source_cpu(metrics: dict[str, Any]) -> dict[str, Any]:
    """The source's CPU per op: the store's for relays, the only server's when direct."""
    return {**metrics, "source_cpu_us_per_op": metrics.get(
        "store_cpu_us_per_op", metrics["server_cpu_us_per_op"])}


async def r1_fanout(topology: Topology, cfg: ClusterConfig) -> dict[str, Any]:
    return source_cpu(await c4_fanout(topology, replace(cfg, c4_monitors=R1_MONITORS)))


async def r2_latency(topology: Topology, cfg: ClusterConfig) -> dict[str, Any]:
    """Sequential single-row inserts through each member, C1's way."""
    meter = Meter(*topology.pids, *topology.store_pids).start()
    source_meter = Meter(topology.source.pid).start()
    medians, p99s = await sequential_latencies(topology.ports, "r2", cfg)
    ops = len(topology.ports) * (cfg.c1_warmup + cfg.c1_n)
    return {"latency_us": statistics.fmean(medians), "p99_us": statistics.fmean(p99s),
            "member_latency_us": medians, **meter.stop(ops),
            "source_cpu_us_per_op": source_meter.stop(ops)["server_cpu_us_per_op"]}


RELAY_WORKLOADS: dict[str, tuple[str, Callable[[Topology, ClusterConfig],
                                              Coroutine[Any, Any, dict[str, Any]]]]] = {
    "R1": (f"fan-out: {R1_MONITORS} monitors over {RELAYS} relays, 1 writer through a relay",
           r1_fanout),
    "R2": ("write latency through a relay (direct: on the source)", r2_latency),
}


class RelayBench:
    """Runs the wanted R workloads for each kind, `reps` times, alternating."""

    def __init__(self, cfg: ClusterConfig, workdir: Path, tegadb_bin: str | None,
                 keep: bool) -> None:
        self.cfg = cfg
        # Absolute: each server runs in its own directory.
        self.tegadb_bin = Path(tegadb_bin).absolute() if tegadb_bin else None
        self.keep = keep
        self.directory = Path(tempfile.mkdtemp(prefix="relay-", dir=workdir)).absolute()
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.failures: dict[str, dict[str, dict[str, str]]] = {}

    def run(self, wanted: Sequence[str]) -> None:
        try:
            for wl in wanted:
                print(f"{wl} {RELAY_WORKLOADS[wl][0]}", flush=True)
                self.runs[wl] = {}
                for rep in range(self.cfg.reps):
                    for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                        if kind not in self.failures.get(wl, {}):
                            self.measure(wl, kind, rep)
        finally:
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)

    def measure(self, wl: str, kind: str, rep: int) -> None:
        directory = self.directory / f"{wl}-{kind}-{rep}"
        topology = None
        try:
            topology = Topology(kind, directory, self.tegadb_bin)
            metrics = topology.run_then_stop(RELAY_WORKLOADS[wl][1](topology, self.cfg))
        except Exception as exc:
            status = exc.status if isinstance(exc, BenchError) else "crashed"
            entry = {"status": status, "error": f"{type(exc).__name__}: {exc}"[:600],
                     "traceback": traceback.format_exc()[-2000:]}
            if topology is not None:
                entry["log_tail"] = topology.log_tail()
            self.failures.setdefault(wl, {})[kind] = entry
            print(f"    {kind}: {status.upper()}: {last_words(entry['error'])[:300]}",
                  flush=True)
            return
        self.runs[wl].setdefault(kind, []).append(metrics)
        parts = [f"{label} {fmt(metrics[key])} {unit}"
                 for w, key, label, unit, *_ in RELAY_METRICS if w == wl and key in metrics]
        parts.append(f"source CPU {fmt(metrics['source_cpu_us_per_op'])} us/txn")
        print(f"    rep {rep + 1} {kind:12s} " + "; ".join(parts), flush=True)

    def results(self) -> dict[str, Any]:
        rows = summarize(self.runs, self.failures, RELAY_METRICS, KINDS)
        return {"config": vars(self.cfg), "summary": rows, "table": table_text(rows, self.cfg.reps),
                "failures": self.failures, "runs": self.runs}


def table_text(rows: list[dict[str, Any]], reps: int) -> str:
    def cell(row: dict[str, Any], kind: str) -> str:
        if row[kind] is not None:
            return fmt(row[kind])
        return "-" if row[f"{kind}_status"] == "ok" else row[f"{kind}_status"].upper()

    head = (f"{'':3} {'metric':36} {'ovsdb relays':>13} {'tegadb relays':>13} {'ratio':>6} "
            f"{'target':>7} {'':4} {'direct':>10}  CPU: ovsdb relays / tegadb relays / direct")
    lines = [f"Relays in front of a standalone ovsdb-server ({RELAYS} relays; direct: no "
             f"relay); medians of {reps} runs; ratio = tegadb relays vs ovsdb-server's "
             "relays, higher is better for tegadb.", head, "-" * len(head)]
    for r in rows:
        ratio = fmt(r["ratio"]) if r["ratio"] is not None else "-"
        target = f">={r['target']:g}" if r["target"] is not None else ""
        met = {True: "MET", False: "miss", None: ""}[r["met"]]
        cpu = " / ".join(fmt(r[f"{k}_cpu"]) for k in KINDS) + f" {r['cpu_unit']}"
        lines.append(f"{r['workload']:3} {r['label'] + ' (' + r['unit'] + ')':36} "
                     f"{cell(r, 'ovsdb-server'):>13} {cell(r, 'tegadb'):>13} {ratio:>6} "
                     f"{target:>7} {met:4} {cell(r, 'direct'):>10}  {cpu}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # every server is stopped on the way out
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions per kind")
    parser.add_argument("--only", default="R1,R2", help="comma-separated workloads")
    parser.add_argument("--tegadb-bin", help="directory of an installed tegadb-server")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    args = parser.parse_args(argv)
    missing = peers.missing_ovs_binaries()
    if missing:
        print(f"bench_relay: {', '.join(missing)} not installed (make peers)", file=sys.stderr)
        return 2
    cfg = replace(CLUSTER_QUICK if args.quick else CLUSTER_FULL)
    if args.reps:
        cfg.reps = args.reps
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in RELAY_WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)} (R1, R2)")
    started = time.perf_counter()
    bench = RelayBench(cfg, Path(tempfile.gettempdir()), args.tegadb_bin, args.keep)
    bench.run(wanted)
    results = bench.results()
    print(results["table"])
    for wl, by_kind in results["failures"].items():
        for kind, failure in by_kind.items():
            print(f"\n{wl} {kind}: {failure['status'].upper()}: {failure['error']}")
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""tegadb vs ovsdb-server, side by side (issue 4).  Run: `make bench` / `make bench-quick`.

    python tests/bench/bench_run.py [--quick] [--reps N] [--only W1,W5] [--out FILE]
        [--tegadb-bin DIR] [--server-cpu CPU]

Starts ovsdb-server and tegadb on the same schema (tests/bench/bench.ovsschema),
runs each workload N times alternating which server goes first, and prints the
medians with the ratio tegadb / ovsdb-server oriented so that higher is better
for tegadb (for times and latencies: ovsdb-server's figure / tegadb's), beside
each server's CPU seconds per operation from /proc/PID/stat.  tegadb is the
checkout's, or with --tegadb-bin the tegadb-server installed there (`make
bench` passes its `pip install .` of the checkout, what users run).  The load
generator's own CPU use is measured too: a run where it is near one core is
flagged, since then it, not the server, may be the limit.

A workload a server fails (error reply, unknown method, crash, timeout) is
reported as such for that server and never counted.  Results go to
bench-results/latest.json.

The cluster workloads C1-C4 (issue 13, tests/bench/bench_cluster.py) run
last, in their own table: 3-member clusters of each server, etcd's own
figures as the floor.  --quick leaves them out unless --only names them
(`make bench-cluster` runs only them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for p in (str(REPO), str(REPO / "tests"), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import peers  # noqa: E402
from bench_client import BenchError  # noqa: E402
from bench_cluster import CLUSTER_WORKLOADS, print_results, run_cluster_bench  # noqa: E402
from bench_workloads import (  # noqa: E402
    FULL,
    QUICK,
    WORKLOADS,
    Config,
    Server,
    dispatch_overhead,
    fmt,
    run_async,
    summarize,
    w6_restart,
    w6_setup,
)

from tegadb import native  # noqa: E402

SERVERS = ["ovsdb-server", "tegadb"]
GEN_BUSY = 0.8  # generator CPU (cores) above which a figure may measure the generator
OTHERS_BUSY = 0.3  # CPU (cores) of other processes above which a run counts as disturbed

# (workload, metric key, label, unit, better, target ratio, server-CPU key, CPU unit label)
METRICS: list[tuple[str, str, str, str, str, float | None, str | None, str]] = [
    ("W1", "latency_median_us", "median latency", "us", "lower", 0.9,
     "server_cpu_us_per_op", "us/txn"),
    ("W1", "latency_p99_us", "p99 latency", "us", "lower", None, None, ""),
    ("W2", "txn_per_s", "throughput", "txn/s", "higher", 1.0, "server_cpu_us_per_op", "us/txn"),
    ("W3", "load_s", "bulk load time", "s", "lower", 0.8, "server_cpu_us_per_op", "us/row"),
    ("W3", "vmhwm_mib", "memory VmHWM", "MiB", "lower", 0.5, None, ""),
    ("W4", "fanout_s", "fan-out time", "s", "lower", 1.5, "server_cpu_us_per_op",
     "us/row update"),
    ("W5", "indexed_per_s", "select, indexed col", "sel/s", "higher", 10.0,
     "indexed_server_cpu_us_per_op", "us/select"),
    ("W5", "plain_per_s", "select, plain col", "sel/s", "higher", 1.0,
     "plain_server_cpu_us_per_op", "us/select"),
    ("W6", "start_s", "restart to 1st answer", "s", "lower", 1.0, "start_server_cpu_s", "s total"),
    ("W6", "file_mib", "journal file size", "MiB", "lower", None, None, ""),
    ("W6", "load_txn_per_s", "(building it: txn/s)", "txn/s", "higher", None,
     "load_server_cpu_us_per_op", "us/txn"),
    ("W7", "durable_latency_us", "durable latency", "us", "lower", 0.9,
     "durable_seq_server_cpu_us_per_op", "us/txn"),
    ("W7", "durable_txn_per_s", "durable, 32 in flight", "txn/s", "higher", 2.0,
     "durable_server_cpu_us_per_op", "us/txn"),
    ("W7", "nondurable_latency_us", "non-durable latency", "us", "lower", None,
     "nondurable_seq_server_cpu_us_per_op", "us/txn"),
    ("W7", "nondurable_txn_per_s", "non-durable, 32 in flight", "txn/s", "higher", None,
     "nondurable_server_cpu_us_per_op", "us/txn"),
    ("W8", "probe_p99_us", "p99 round trip, flood", "us", "lower", 1.0, None, ""),
    ("W8", "probe_max_us", "max round trip, flood", "us", "lower", 1.0,
     "server_cpu_us_per_op", "us/flood req"),
    # Issue 14's target is absolute: tegadb's worst delay under 50 ms.
    ("W9", "stall_max_ms", "max reply delay, compaction", "ms", "lower", 1.0, None, ""),
    ("W9", "stall_p99_ms", "p99 reply delay, compaction", "ms", "lower", None, None, ""),
    ("W9", "compact_s", "compaction time", "s", "lower", None, None, ""),
    ("W9", "file_mib", "journal before compaction", "MiB", "lower", None, None, ""),
    ("W9", "compacted_mib", "journal after compaction", "MiB", "lower", None, None, ""),
    ("W10", "probe_max_us", "max round trip, large message", "us", "lower", 1.0, None, ""),
    ("W10", "probe_p99_us", "p99 round trip, large message", "us", "lower", None, None, ""),
    ("W10", "message_s", "large message read and refused", "s", "lower", None,
     "server_cpu_s", "s CPU"),
]


def tegadb_core(tegadb_bin: str | None) -> str:
    """Which core the tegadb servers started here run."""
    if tegadb_bin is None:  # the checkout, imported as this process imports it
        compiled, where = native.is_compiled(), "checkout"
    else:
        python = Path(tegadb_bin, "python")
        compiled = subprocess.run(
            [python, "-c", "import tegadb.native as n; print(n.is_compiled())"],
            capture_output=True, text=True, check=True, cwd="/").stdout.strip() == "True"
        where = f"pip-installed in {Path(tegadb_bin).parent}"
    return f"{'compiled core (mypyc)' if compiled else 'interpreted core'}, {where}"


def machine_info(cfg: Config) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ovs = subprocess.run(["ovsdb-server", "--version"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        ovs = "?"
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "ovsdb_server": ovs, "tegadb_core": tegadb_core(cfg.tegadb_bin),
            "server_cpu": cfg.server_cpu, "loadavg_at_start": os.getloadavg()}


class Bench:
    def __init__(self, cfg: Config, workdir: Path, servers: list[str], keep: bool) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.servers = servers
        self.keep = keep
        # runs[workload][server] = list of metric dicts; failures[workload][server] = text
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.failures: dict[str, dict[str, dict[str, str]]] = {}
        self.seconds: dict[str, float] = {}
        self.warnings: list[str] = []

    def fail(self, wl: str, kind: str, exc: BaseException, srv: Server | None) -> None:
        status = getattr(exc, "status", "failed") if isinstance(exc, BenchError) else "crashed"
        text = f"{type(exc).__name__}: {exc}"
        entry = {"status": status, "error": text[:600]}
        if not isinstance(exc, BenchError):
            entry["traceback"] = traceback.format_exc()[-2000:]
        if srv is not None:
            entry["server_alive"] = str(srv.alive())
            entry["log_tail"] = srv.log_tail()
        self.failures.setdefault(wl, {})[kind] = entry
        print(f"    {kind}: {status.upper()}: {text[:300]}", flush=True)

    def run_workload(self, wl: str) -> None:
        title, fn = WORKLOADS[wl]
        print(f"{wl} {title}", flush=True)
        t_start = time.perf_counter()
        self.runs[wl] = {k: [] for k in self.servers}
        states: dict[str, Any] = {}
        if wl == "W6":
            for kind in self.servers:
                try:
                    states[kind] = w6_setup(kind, self.workdir / f"W6-{kind}", self.cfg)
                    print(f"    {kind}: journal of {self.cfg.w6_txns} txns built "
                          f"({states[kind]['info']['load_txn_per_s']:,.0f} txn/s)", flush=True)
                except Exception as exc:
                    self.fail(wl, kind, exc, None)
        for rep in range(self.cfg.reps):
            order = self.servers if rep % 2 == 0 else self.servers[::-1]
            for kind in order:
                if kind in self.failures.get(wl, {}):
                    continue
                srv = None
                try:
                    if wl == "W6":
                        srv = states[kind]["server"]
                        metrics = w6_restart(states[kind], self.cfg)
                    else:
                        assert fn is not None
                        srv = Server(kind, self.workdir / f"{wl}-{kind}-{rep}", self.cfg)
                        try:
                            metrics = run_async(fn(srv, self.cfg))
                        finally:
                            alive = srv.alive()
                            srv.stop()
                        if not alive:
                            raise BenchError("the server exited during the run")
                        if not self.keep:
                            shutil.rmtree(srv.directory, ignore_errors=True)
                except Exception as exc:
                    self.fail(wl, kind, exc, srv)
                    continue
                self.runs[wl][kind].append(metrics)
                print(f"    rep {rep + 1} {kind:12s} " + self.brief(wl, metrics), flush=True)
        if not self.keep:
            for kind in states:
                shutil.rmtree(states[kind]["server"].directory, ignore_errors=True)
        self.seconds[wl] = time.perf_counter() - t_start

    @staticmethod
    def brief(wl: str, m: dict[str, Any]) -> str:
        parts = [f"{label} {fmt(m[key])} {unit}" for w, key, label, unit, *_ in METRICS
                 if w == wl and key in m and not label.startswith("(")]
        utils = [v for k, v in m.items() if k.endswith("gen_util")]
        others = [v for k, v in m.items() if k.endswith("other_util")]
        if utils:
            parts.append(f"[generator {max(utils):.2f} cores"
                         + (f", others {max(others):.2f}]" if others else "]"))
        return "; ".join(parts)

    def summary(self) -> list[dict[str, Any]]:
        return summarize(self.runs, self.failures, METRICS, SERVERS)

    def generator_check(self) -> list[dict[str, Any]]:
        out = []
        disturbed: list[str] = []
        for wl, by_kind in self.runs.items():
            for kind, runs in by_kind.items():
                utils = [v for m in runs for k, v in m.items() if k.endswith("gen_util")]
                others = [v for m in runs for k, v in m.items() if k.endswith("other_util")]
                gen_per_op = [v for m in runs for k, v in m.items()
                              if k.endswith("gen_cpu_us_per_op")]
                if not utils:
                    continue
                peak = max(utils)
                busy = max(others) if others else 0.0
                if busy >= OTHERS_BUSY:
                    disturbed.append(f"{wl} vs {kind} ({busy:.2f})")
                out.append({"workload": wl, "server": kind, "gen_util_max": peak,
                            "others_util_max": busy,
                            "gen_cpu_us_per_op_median":
                                statistics.median(gen_per_op) if gen_per_op else None})
                if peak >= GEN_BUSY:
                    self.warnings.append(
                        f"{wl} vs {kind}: the load generator used up to {peak:.2f} cores; "
                        "it may be the bottleneck for that figure")
        if disturbed:
            self.warnings.append(
                "other processes (or the kernel) kept up to the given number of cores busy "
                f"during: {', '.join(disturbed)}; timings there are noisy, "
                "the server CPU per operation is the steadier figure")
        return out


def print_table(rows: list[dict[str, Any]], bench: Bench) -> str:
    lines = []
    head = (f"{'':3} {'metric':26} {'ovsdb-server':>13} {'tegadb':>13} {'ratio':>6} "
            f"{'target':>7} {'':4}  {'server CPU per op: ovsdb / tegadb (ratio)'}")
    lines.append(head)
    lines.append("-" * len(head))
    for r in rows:
        cells = []
        for kind in SERVERS:
            if r[kind] is None:
                cells.append(r[f"{kind}_status"].upper())
            else:
                cells.append(fmt(r[kind]))
        ratio = fmt(r["ratio"]) if r["ratio"] is not None else "-"
        target = f">={r['target']:g}" if r["target"] is not None else ""
        met = {True: "MET", False: "miss", None: ""}[r["met"]]
        cpu = ""
        if r["cpu_unit"]:
            cpu = (f"{fmt(r['ovsdb-server_cpu'])} / {fmt(r['tegadb_cpu'])} {r['cpu_unit']}"
                   + (f" ({fmt(r['cpu_ratio'])})" if r["cpu_ratio"] else ""))
        lines.append(f"{r['workload']:3} {r['label'] + ' (' + r['unit'] + ')':26} "
                     f"{cells[0]:>13} {cells[1]:>13} {ratio:>6} {target:>7} {met:4}  {cpu}")
    text = "\n".join(lines)
    print(text)
    return text


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a `timeout`, a stopped session) unwinds as Ctrl-C does, so every
    server and etcd member started is stopped by its pid on the way out."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller runs (~2 min)")
    parser.add_argument("--reps", type=int, help="repetitions of each workload per server")
    parser.add_argument("--only", help="comma-separated workloads (W1..W10, D for dispatch, "
                                       "C1..C4 for the clusters; default: all, no C in --quick)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--monitor", choices=["monitor", "monitor_cond"],
                        help="W4's monitor method (default: monitor, for both servers)")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "latest.json"))
    parser.add_argument("--workdir", default=str(REPO / "bench-results" / "work"),
                        help="server directories (on a real disk: W7 measures fsync)")
    parser.add_argument("--keep", action="store_true", help="keep the server directories")
    parser.add_argument("--tegadb-bin", metavar="DIR",
                        help="run the tegadb-server and tegadb-tool installed in DIR "
                             "(default: the checkout's)")
    parser.add_argument("--server-cpu", type=int, metavar="CPU",
                        help="pin each server to this CPU as soon as it is started (the "
                             "load generator stays free to use the others); default: not pinned")
    args = parser.parse_args(argv)

    cfg = Config(**vars(QUICK if args.quick else FULL))
    if args.reps:
        cfg.reps = args.reps
    if args.monitor:
        cfg.w4_method = args.monitor
    cfg.tegadb_bin = str(Path(args.tegadb_bin).absolute()) if args.tegadb_bin else None
    cfg.server_cpu = args.server_cpu
    servers = [s for s in args.servers.split(",") if s]
    wanted = [w.strip().upper() for w in args.only.split(",")] if args.only \
        else [*WORKLOADS, "D", *([] if args.quick else CLUSTER_WORKLOADS)]
    missing = peers.missing_ovs_binaries()
    if "ovsdb-server" in servers and missing:
        print(f"{', '.join(missing)} not installed (run `make peers`)", file=sys.stderr)
        return 2

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info(cfg)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    print(f"tegadb bench ({'quick' if args.quick else 'full'}), {cfg.reps} reps; "
          f"{info['nproc']} CPUs, {info['cpu_model']}; {info['ovsdb_server']}; "
          f"tegadb on Python {info['python']}, {info['tegadb_core']}"
          + (f"; servers pinned to CPU {cfg.server_cpu}" if cfg.server_cpu is not None else ""),
          flush=True)

    bench = Bench(cfg, workdir, servers, args.keep)
    dispatch = None
    for wl in wanted:
        if wl == "D":
            print("D  dispatch overhead (in-process, echo request)", flush=True)
            dispatch = dispatch_overhead()
        elif wl in WORKLOADS:
            bench.run_workload(wl)
        elif wl not in CLUSTER_WORKLOADS:
            parser.error(f"unknown workload {wl}")
    cluster_wanted = [wl for wl in wanted if wl in CLUSTER_WORKLOADS]
    cluster = run_cluster_bench(cluster_wanted, args.quick, args.reps, workdir, servers,
                                cfg.tegadb_bin, args.keep) if cluster_wanted else None

    rows = bench.summary()
    gen = bench.generator_check()
    elapsed = time.perf_counter() - t0
    table = ""
    if rows:
        print()
        print(f"Medians of {cfg.reps} runs each; ratio = tegadb vs ovsdb-server, higher is "
              f"better for tegadb (times: ovsdb/tegadb; rates: tegadb/ovsdb).")
        table = print_table(rows, bench)
    if dispatch:
        print("\nDispatch overhead per echo request (in-process, best of 5):")
        for k, v in dispatch.items():
            if k != "errors":
                print(f"    {k:42s} {fmt(v)} us")
        for k, v in dispatch.get("errors", {}).items():
            print(f"    {k}: ERROR {v}")
    if gen:
        print("\nLoad generator CPU (most it used in any measured phase; 1.0 = a whole core):")
    for g in gen:
        print(f"    {g['workload']} vs {g['server']:12s} up to {g['gen_util_max']:.2f} cores"
              f" (other processes: up to {g['others_util_max']:.2f})")
    for wl, by_kind in bench.failures.items():
        for kind, f in by_kind.items():
            print(f"\n{wl} {kind}: {f['status'].upper()}: {f['error']}")
    for w in bench.warnings:
        print(f"WARNING: {w}")
    if cluster:
        print()
        print_results(cluster)
    seconds = {**bench.seconds, **(cluster["seconds_per_workload"] if cluster else {})}
    print(f"\ntotal {elapsed:.0f} s (" + ", ".join(f"{k} {v:.0f}s" for k, v in
                                                  seconds.items()) + ")")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "config": vars(cfg),
        "elapsed_s": elapsed,
        "seconds_per_workload": seconds,
        "summary": rows,
        "table": table,
        "dispatch_overhead_us": dispatch,
        "generator": gen,
        "warnings": bench.warnings,
        "failures": bench.failures,
        "runs": bench.runs,
        "cluster": cluster,
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

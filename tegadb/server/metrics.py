"""--metrics: a Prometheus text endpoint, written with prometheus_client.

Imported only when --metrics is given (prometheus_client's import would
add to every start).  Two kinds of figures:

- events, counted as they happen by `Metrics`, which the server shell and
  the services call only while it is attached (their ``observer``): each
  finished transaction by outcome, errors by kind, and each group commit's
  duration;
- state, read when scraped by `ServerCollector` from what the server keeps
  anyway: sessions, monitors, locks, bytes in and out, output backlog,
  commits and compactions per database, and the process's memory
  (prometheus_client's ProcessCollector).

So with --metrics off the request path pays one ``is not None`` test per
transaction and per group commit, and two integer additions per read and
write for the byte counts.

The endpoint is served on the event loop, not from prometheus_client's
thread: a scrape reads the loop's sets and dicts, which a thread would see
changing under it.  `generate_latest` takes well under a millisecond here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..core.database import TxnOutcome
    from .connections import Server

log = logging.getLogger("tegadb.server.metrics")

# Group commits take ~50 us (memory), ~1 ms (a write) to tens of ms (fsync).
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 2.5)


class Metrics(Collector):
    """The event counters; the server's and every service's ``observer``.

    Plain integers, not prometheus_client's Counter, whose ``inc()`` (a lock
    and a value object) cost 4% of a transaction's instructions; they are
    turned into metrics when scraped.  The histogram is observed once per
    group commit, not per transaction: prometheus_client's is cheap enough.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.committed_transactions = 0
        self.unchanged_transactions = 0
        self.failed_transactions = 0
        self.errors: dict[str, int] = {}
        self.commit_seconds = Histogram(
            "tegadb_commit_duration_seconds", "Time to write (and fsync, if asked) one group "
            "commit: every database's batch of one event-loop turn",
            buckets=COMMIT_BUCKETS, registry=registry)
        registry.register(self)

    def transaction_finished(self, outcome: TxnOutcome) -> None:
        if outcome.changes:
            return  # counted once its batch is written, or refused (below)
        for result in outcome.results or ():
            if type(result) is dict and "error" in result:
                self.failed_transactions += 1
                self.error(str(result["error"]))
                return
        self.unchanged_transactions += 1

    def commits_written(self, count: int) -> None:
        self.committed_transactions += count

    def commit_refused(self, kind: str) -> None:
        """A transaction that changed something, undone: its batch was not stored."""
        self.failed_transactions += 1
        self.error(kind)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def committed(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        transactions = CounterMetricFamily(
            "tegadb_transactions", "Transactions finished, by outcome: committed (changed "
            "the database), unchanged (succeeded, changed nothing) or failed",
            labels=["outcome"])
        transactions.add_metric(["committed"], self.committed_transactions)
        transactions.add_metric(["unchanged"], self.unchanged_transactions)
        transactions.add_metric(["failed"], self.failed_transactions)
        yield transactions
        errors = CounterMetricFamily(
            "tegadb_errors", "Errors, by kind: the OVSDB error of a failed transaction or "
            "request, \"protocol error\" (connection closed) or \"I/O error\"",
            labels=["kind"])
        for kind, count in sorted(self.errors.items()):
            errors.add_metric([kind], count)
        yield errors


class ServerCollector(Collector):
    """What the server holds, read at each scrape."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # Counted from the start of this process: a database's commits are
        # its log position less the one it was opened at.
        self.first_seq = {name: s.seq for name, s in server.databases.services.items()}

    def collect(self) -> Iterator[Metric]:
        server = self.server
        databases = server.databases
        stats = databases.stats()
        yield GaugeMetricFamily("tegadb_sessions", "Client sessions open",
                                value=stats["sessions"])
        yield GaugeMetricFamily("tegadb_monitors", "Monitors open across all sessions",
                                value=stats["monitors"])
        yield GaugeMetricFamily("tegadb_locks", "Lock names with a holder or waiter",
                                value=stats["locks"])
        yield GaugeMetricFamily("tegadb_parked_transactions",
                                "Transactions waiting for a \"wait\" to be satisfied",
                                value=stats["parked_transactions"])
        yield CounterMetricFamily("tegadb_received_bytes", "Bytes received from clients",
                                  value=server.bytes_received)
        yield CounterMetricFamily("tegadb_sent_bytes", "Bytes sent to clients",
                                  value=server.bytes_sent)
        yield GaugeMetricFamily("tegadb_output_backlog_bytes",
                                "Output queued for clients that have not read it yet",
                                value=output_backlog(server))
        commits = CounterMetricFamily("tegadb_commits", "Transactions written to the log "
                                      "since start, per database", labels=["db"])
        compactions = CounterMetricFamily("tegadb_compactions", "Compactions since start, "
                                          "per database", labels=["db"])
        for name, service in databases.services.items():
            commits.add_metric([name], max(service.seq - self.first_seq.get(name, 0), 0))
            compactions.add_metric([name], service.compactions)
        yield commits
        yield compactions


def output_backlog(server: Server) -> int:
    """Bytes written to transports but not yet sent, plus replies held for the group commit."""
    total = 0
    for connection in server.connections:
        if connection.transport is not None:
            total += connection.transport.get_write_buffer_size()
        total += sum(len(data) for data in connection.held)
    return total


def parse_address(text: str) -> tuple[str, int]:
    """``[IP:]PORT`` (IPv6 as ``[::1]:PORT``); the IP defaults to 127.0.0.1."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--metrics={text}: expected [IP:]PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--metrics={text}: port {port} is out of range")
    return host, port


class MetricsEndpoint:
    """``GET /metrics`` (or ``/``) over HTTP/1.0 on the event loop."""

    def __init__(self, server: Server) -> None:
        disable_created_metrics()  # no *_created series: they double what is scraped
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = Metrics(self.registry)
        self.registry.register(ServerCollector(server))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and more
        server.observer = self.metrics
        server.databases.observe(self.metrics)
        self.listener: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> None:
        self.listener = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    @property
    def port(self) -> int:
        assert self.listener is not None
        port: int = self.listener.sockets[0].getsockname()[1]
        return port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            status, body, content_type = self.respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body, content_type = "400 Bad Request", b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def respond(self, head: bytes) -> tuple[str, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] != b"GET":
            return "405 Method Not Allowed", b"only GET\n", "text/plain"
        if parts[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
            return "404 Not Found", b"try /metrics\n", "text/plain"
        return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


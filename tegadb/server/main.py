"""tegadb-server: the command that opens the databases and serves them.

It parses the options, sets up logging, replays the database files, starts
the listeners (tegadb/connections.py) on uvloop and stops cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import uvloop

from ..core.errors import OVSDBError
from ..core.history import History
from ..protocol.remotes import parse_passive
from ..protocol.tls import tls_context
from . import journal, unix_sockets
from .connections import (
    BUSY_POLL,
    DEFAULT_MAX_BACKLOG,
    DEFAULT_MAX_INPUT,
    DEFAULT_MAX_MESSAGE,
    MESSAGE_TIMEOUT,
    PROBE_INTERVAL,
    Server,
)
from .control import ControlServer
from .service import DatabaseService, ServerDatabases, create_database_file
from .storage import StorageError

if TYPE_CHECKING:
    from .relay import RelayService

log = logging.getLogger("tegadb.server")

DEFAULT_REMOTES = ["ptcp:6640:127.0.0.1", "punix:var/tegadb.sock"]
# var/ when the server makes it: not writable by others whatever the umask,
# as the default sockets live there (unix_sockets.check_directory).
VAR_DIR_MODE = 0o750


def build_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The context for pssl: remotes, if a key and certificate were given."""
    if not (args.private_key and args.certificate):
        return None
    return tls_context(args.private_key, args.certificate, args.ca_cert, server=True)


def default_database_files(var_dir: str, schema_dirs: list[str], mode: int) -> list[str]:
    """The built-in default: one database under var/ per shipped schema,
    created with permissions `mode` if missing."""
    schema_dir = next((d for d in schema_dirs if os.path.isdir(d)), None)
    if schema_dir is None:
        raise SystemExit("tegadb-server: no schemas/ directory found for the default databases")
    os.makedirs(var_dir, mode=VAR_DIR_MODE, exist_ok=True)
    files = []
    for name in sorted(n for n in os.listdir(schema_dir) if n.endswith(".ovsschema")):
        schema = os.path.join(schema_dir, name)
        db_file = os.path.join(var_dir, name.removesuffix(".ovsschema") + ".db")
        if not os.path.exists(db_file):
            create_database_file(db_file, schema, mode)
            log.info("created %s from %s", db_file, schema)
        files.append(db_file)
    return files


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, sized as shutil.get_terminal_size would, without importing
    shutil (and bz2 and lzma with it): argparse makes one formatter for every
    add_argument, so its default cost ~1 ms of every start."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
    except (ValueError, OSError):
        return 80


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tegadb-server", description="Serve OVSDB databases (RFC 7047) from JSON-lines files.",
        formatter_class=_HelpFormatter)
    parser.add_argument("databases", nargs="*", metavar="DBFILE",
                        help="a database file, or relay:DBNAME:REMOTE[,REMOTE...] to relay "
                        "database DBNAME of another OVSDB server (docs/relay.md)")
    parser.add_argument("--remote", action="append", default=[], metavar="REMOTE",
                        help="ptcp:PORT[:IP], punix:PATH or pssl:PORT[:IP] (repeatable)")
    parser.add_argument("--pidfile", nargs="?", const="var/tegadb-server.pid", metavar="FILE")
    parser.add_argument("--log-file", nargs="?", const="var/tegadb-server.log", metavar="FILE")
    parser.add_argument("--detach", action="store_true", help="run in the background")
    parser.add_argument("--private-key", metavar="FILE")
    parser.add_argument("--certificate", metavar="FILE")
    parser.add_argument("--ca-cert", metavar="FILE")
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE,
                        metavar="BYTES", help="largest accepted message (default 64 MiB)")
    parser.add_argument("--max-backlog", type=int, default=DEFAULT_MAX_BACKLOG,
                        metavar="BYTES", help="drop a client whose unread output exceeds "
                        "this (default 64 MiB)")
    parser.add_argument("--max-input", type=int, default=DEFAULT_MAX_INPUT, metavar="BYTES",
                        help="input read but not yet served, all clients together (incomplete "
                        "messages): past it, drop the client holding the most (default 256 MiB)")
    parser.add_argument("--history-transactions", type=int, default=10_000, metavar="N",
                        help="transactions kept per database for monitor_cond_since resumes "
                        "(default 10000)")
    parser.add_argument("--history-rows", type=int, default=20_000, metavar="N",
                        help="row changes kept per database for resumes (default 20000)")
    parser.add_argument("--inactivity-probe", type=float, default=PROBE_INTERVAL * 1000,
                        metavar="MS", help="probe idle peers after MS ms "
                        "(0 disables; at least 1000; default 5000)")
    parser.add_argument("--no-unix-probes", action="store_true",
                        help="do not probe Unix-socket peers (as ovsdb-server)")
    parser.add_argument("--message-timeout", type=float, default=MESSAGE_TIMEOUT,
                        metavar="SECS", help="drop a client whose message is not complete "
                        "SECS after it began (0 disables; default %(default)g)")
    parser.add_argument("--busy-poll", type=_microseconds, default=BUSY_POLL * 1e6, metavar="USEC",
                        help="keep polling for USEC us after activity while clients answer "
                        "that quickly, instead of sleeping (0 disables; always off with "
                        "one CPU; default %(default).0f)")
    parser.add_argument("--etcd-endpoints", metavar="URLS",
                        help="serve each DBFILE as a member of a cluster whose log is in this "
                        "etcd cluster (e.g. http://127.0.0.1:2379,http://127.0.0.1:22379)")
    parser.add_argument("--etcd-prefix", default="/tegadb", metavar="PREFIX",
                        help="where in etcd the logs live: PREFIX/DBNAME/ (default /tegadb)")
    parser.add_argument("--etcd-timeout", type=float, default=5.0, metavar="SECS",
                        help="longest wait for etcd per request; a write fails after it "
                        "(default 5)")
    parser.add_argument("--etcd-start-timeout", type=float, default=30.0, metavar="SECS",
                        help="how long to wait for etcd at start before giving up (default 30)")
    parser.add_argument("--cluster-remote", metavar="REMOTE",
                        help="where the other members reach this one (tcp:IP:PORT or "
                        "unix:PATH) when they forward writes to it; default: its first "
                        "--remote with an address others can use")
    parser.add_argument("--no-forward-writes", action="store_true",
                        help="never forward writes to the member holding the writer lease: "
                        "every member appends its own (docs/cluster.md)")
    parser.add_argument("--etcd-snapshot-every", type=int, default=5000, metavar="N",
                        help="store a snapshot in etcd and trim the log after N records "
                        "(default 5000), and not before the log since the last one holds "
                        "half as many records as the database has rows")
    parser.add_argument("--db-file-mode", type=journal.file_mode,
                        default=journal.DEFAULT_FILE_MODE, metavar="MODE",
                        help="permissions, in octal, of the database files the server creates,"
                        " whatever the umask (default: 0640); compaction keeps a file's mode")
    parser.add_argument("--socket-mode", type=journal.file_mode,
                        default=unix_sockets.DEFAULT_SOCKET_MODE, metavar="MODE",
                        help="permissions, in octal, of punix: sockets, whatever the umask"
                        " (default: 0770)")
    parser.add_argument("--allow-unsafe-socket-dir", action="store_true",
                        help="listen on punix: sockets even in a directory everyone may write"
                        " to without the sticky bit (where anyone could replace the socket)")
    parser.add_argument("--unixctl", metavar="PATH",
                        help="the control socket, for ovs-appctl -t PATH or tegadb-client "
                        "appctl (default var/tegadb-server.ctl, or beside the --pidfile)")
    parser.add_argument("--metrics", metavar="[IP:]PORT",
                        help="serve Prometheus metrics at http://IP:PORT/metrics "
                        "(IP defaults to 127.0.0.1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def _microseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of microseconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more microseconds")
    return value


def setup_logging(log_file: str | None, verbose: bool) -> None:
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ|%(name)s|%(levelname)s|%(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def detach() -> Callable[[], None]:
    """Double fork; the parent exits once the daemon says it is serving.

    Returns the function the daemon calls when its sockets are open.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        ready = os.read(read_end, 1)
        os._exit(0 if ready else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)

    def notify_ready() -> None:
        os.write(write_end, b"1")
        os.close(write_end)

    return notify_ready


def open_databases(files: list[str], args: argparse.Namespace) -> list[DatabaseService]:
    """Replay every database file, with the cyclic garbage collector paused.

    Replay allocates millions of acyclic objects (rows are dicts of tuples);
    letting the collector rescan the growing heap made start-up about twice
    as slow.  What was loaded is then frozen out of later collections.
    """
    gc.disable()
    try:
        return [DatabaseService.open(f, History(args.history_transactions, args.history_rows))
                for f in files]
    finally:
        gc.freeze()
        gc.enable()
        # Transactions allocate many short-lived acyclic objects: collecting
        # the young generation every 50000 allocations instead of every 700
        # made a 100k-row bulk load about a quarter faster.
        gc.set_threshold(50_000, 20, 100)


async def join_cluster(files: list[str], args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """Join each database's cluster (its log in etcd), waiting for etcd at most
    ``--etcd-start-timeout`` seconds."""
    # The etcd client (gRPC) is loaded only in cluster mode.
    from .cluster import join
    from .etcd_log import Etcd, EtcdUnavailable, parse_endpoints

    etcd = Etcd(parse_endpoints(args.etcd_endpoints), args.etcd_timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.etcd_start_timeout
    services = []
    for path in files:
        while True:
            try:
                services.append(await join(
                    str(path), etcd, args.etcd_prefix,
                    History(args.history_transactions, args.history_rows),
                    args.etcd_snapshot_every))
                break
            except EtcdUnavailable as e:
                if loop.time() >= deadline:
                    raise StorageError(f"{e}; gave up after --etcd-start-timeout="
                                       f"{args.etcd_start_timeout:g} s") from None
                log.warning("%s; retrying", e)
                await asyncio.sleep(1.0)
    return etcd, services


async def share_locks(databases: ServerDatabases, etcd: Any,
                      prefix: str) -> Callable[[], Awaitable[None]]:
    """Make the server's locks the cluster's: kept in etcd under PREFIX/_locks/,
    held through this member's lease.  Returns what gives them up at exit."""
    from .cluster_locks import ClusterLocks, MemberLease
    from .methods import send_cluster_notice

    lease = MemberLease(etcd)
    locks = ClusterLocks(etcd, f"{prefix.rstrip('/')}/_locks/", databases.server_id,
                         await lease.grant(), send_cluster_notice)
    await locks.start()
    databases.cluster_locks = locks
    keeper = asyncio.get_running_loop().create_task(lease.keep_alive(locks.use_lease))

    async def release() -> None:
        keeper.cancel()
        await locks.close()
        await lease.revoke()  # the next waiters on other members get their locks now

    return release


def follow_cluster(server: Server, service: Any) -> None:
    """Keep a member's copy current, its ``_Server`` row true, and stop the
    server if the copy can no longer follow the log."""
    def stop(why: str) -> None:
        log.error("stopping: %s", why)
        server.failed = True
        server.stopped.set()

    # _Server's row follows once per loop turn, after the turn's replies.
    scheduled: list[bool] = []

    def update_row() -> None:
        scheduled.clear()
        server.databases.state_changed(service)

    def state_changed() -> None:
        if not scheduled:
            scheduled.append(True)
            server.loop.call_soon(update_row)

    service.on_state_change = state_changed
    service.on_schema_change = (lambda schema, database, seq, txn:
                                server.databases.switch_schema(service, schema, database, seq,
                                                               txn))
    service.on_fatal = stop
    service.follower = server.loop.create_task(service.follow())

    def check(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            stop(f"{service.name}: following the log failed: {task.exception()!r}")

    service.follower.add_done_callback(check)


def control_socket_path(args: argparse.Namespace) -> str:
    """--unixctl, else beside the pidfile, else var/tegadb-server.ctl."""
    if args.unixctl:
        return str(args.unixctl)
    if args.pidfile:
        return os.path.join(os.path.dirname(args.pidfile), "tegadb-server.ctl")
    os.makedirs("var", mode=VAR_DIR_MODE, exist_ok=True)
    return os.path.join("var", "tegadb-server.ctl")


async def start_observability(server: Server, args: argparse.Namespace) -> list[Any]:
    """The control socket, and the metrics endpoint if --metrics was given;
    each has an async close()."""
    control = ControlServer(server, log_to_file=bool(args.log_file))
    await control.listen(control_socket_path(args))
    if not args.metrics:
        return [control]
    # prometheus_client is imported only now: its import would add to every start.
    from .metrics import MetricsEndpoint, parse_address

    try:
        endpoint = MetricsEndpoint(server)
        await endpoint.listen(*parse_address(args.metrics))
    except BaseException:
        await control.close()  # leave no socket behind when the start fails
        raise
    return [control, endpoint]


def cluster_remote(args: argparse.Namespace, remotes: list[str]) -> str | None:
    """The remote other members forward writes to: --cluster-remote, else the
    first listening remote with an address (a TCP port on a named address,
    or a Unix socket, which serves members on the same machine)."""
    if args.cluster_remote:
        return str(args.cluster_remote)
    for text in remotes:
        remote = parse_passive(text)
        if remote.is_unix:
            return f"unix:{os.path.abspath(remote.path)}"
        if remote.kind == "ptcp" and remote.port and remote.host not in ("0.0.0.0", "::"):
            return f"tcp:{remote.host}:{remote.port}"
    return None


def busy_poll_seconds(usec: float) -> float:
    """The busy-poll window; none with one CPU, where polling would hold
    back the very client it waits for."""
    if usec <= 0 or len(os.sched_getaffinity(0)) < 2:
        return 0.0
    return usec / 1e6


def split_databases(arguments: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The DBFILE arguments: database files, and relays as (DBNAME, remotes);
    ValueError for a relay argument that is malformed."""
    files = [text for text in arguments if not text.startswith("relay:")]
    if len(files) == len(arguments):
        return files, []
    # The relay's code (and the client's under it) is loaded only for relays.
    from .relay import parse_relay

    return files, [parse_relay(text) for text in arguments if text.startswith("relay:")]


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The context for a relay's ssl: sources, if a key and certificate were given."""
    if not (args.private_key and args.certificate):
        return None
    return tls_context(args.private_key, args.certificate, args.ca_cert, server=False)


async def serve(args: argparse.Namespace, ready: Callable[[], Any] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit status (1 after a journal failure)."""
    relays: list[RelayService] = []
    if args.databases:
        files, relay_args = split_databases(args.databases)
        if relay_args:
            if args.etcd_endpoints:
                raise ValueError("relay: databases cannot be served in a cluster "
                                 "(--etcd-endpoints)")
            from .relay import RelayService

            relays = [RelayService.create(name, sources, History(args.history_transactions,
                                                                  args.history_rows))
                      for name, sources in relay_args]
        remotes = args.remote
    else:
        package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        files = default_database_files(
            "var", ["schemas", os.path.join(package, "schemas"),
                    os.path.join(sys.prefix, "share", "tegadb", "schemas")], args.db_file_mode)
        remotes = args.remote or DEFAULT_REMOTES
    members: list[Any] = []  # ClusterService, imported only in cluster mode
    if args.etcd_endpoints:
        etcd, members = await join_cluster(files, args)
        services: list[DatabaseService] = list(members)
    else:
        services = [*open_databases(files, args), *relays]
    databases = ServerDatabases(services)
    release_locks = None
    if args.etcd_endpoints:
        release_locks = await share_locks(databases, etcd, args.etcd_prefix)
    probe_ms = args.inactivity_probe
    server = Server(databases, args.max_message_size, build_ssl_context(args),
                    max(probe_ms, 1000.0) / 1000.0 if probe_ms else 0.0, args.max_backlog,
                    busy_poll_seconds(args.busy_poll), args.message_timeout,
                    not args.no_unix_probes, args.max_input)
    log.info("busy polling: %s",
             f"{server.busy_poll * 1e6:.0f} us" if server.busy_poll else "off")
    if relays:
        from .methods import send_cluster_notice
        from .relay import start_relays

        await start_relays(databases, relays, client_ssl_context(args), send_cluster_notice)
    # Before the remotes: once clients can connect, they can be observed.
    observability = await start_observability(server, args)
    for text in remotes:
        await server.listen(parse_passive(text), args.socket_mode,
                            args.allow_unsafe_socket_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        server.loop.add_signal_handler(sig, server.stopped.set)
    if args.pidfile:
        with open(args.pidfile, "w") as pidfile:
            pidfile.write(f"{os.getpid()}\n")
    if not args.no_forward_writes:
        for member in members:
            member.forward_writes(cluster_remote(args, remotes))
    for service in services:
        if service.shares_log():
            follow_cluster(server, service)
    log.info("serving %s", ", ".join(s.name for s in services))
    if ready is not None:
        ready()
    try:
        await server.stopped.wait()
    finally:
        log.info("shutting down")
        for part in observability:
            await part.close()
        for relay in relays:
            await relay.stop()
        await server.close()
        for member in members:
            await member.stop_forwarding()
        if release_locks is not None:
            await release_locks()
            await etcd.close()
        if args.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.pidfile)
    return 1 if server.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_file, args.verbose)
    try:
        for text in args.remote:
            parse_passive(text)
        split_databases(args.databases)
    except ValueError as e:
        print(f"tegadb-server: {e}", file=sys.stderr)
        return 2
    ready = detach() if args.detach else None
    try:
        return uvloop.run(serve(args, ready))
    except (OSError, ValueError, StorageError, OVSDBError) as e:
        log.error("%s", e)
        print(f"tegadb-server: {e}", file=sys.stderr)
        return 1


"""The control socket (--unixctl): what `ovs-appctl -t PATH COMMAND` drives.

The protocol is ovsdb-server's (PEERS.md): one JSON-RPC request per
command, ``{"method": COMMAND, "params": [ARG...], "id": N}``, answered by
``{"id": N, "result": TEXT, "error": null}`` (TEXT is printed) or
``{"id": N, "error": TEXT}`` (printed to stderr, ovs-appctl exits 2).  The
commands shared with ovsdb-server have its names, argument counts, output
shapes and error texts; tegadb's own are under ``tegadb/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import ujson

from .. import __version__
from ..protocol.framer import Framer, ProtocolError
from . import unix_sockets
from .server_db import SERVER_DB_NAME

if TYPE_CHECKING:
    from .connections import Server

log = logging.getLogger("tegadb.server.control")

MAX_REQUEST = 1024 * 1024
SOCKET_MODE = 0o770
UNBOUNDED = 1 << 31

# OVS's level names, most to least severe, and the logging level of each.
LEVELS = {"off": logging.CRITICAL + 10, "emer": logging.CRITICAL, "err": logging.ERROR,
          "warn": logging.WARNING, "info": logging.INFO, "dbg": logging.DEBUG}
DESTINATIONS = ("console", "syslog", "file", "any")


class CommandError(Exception):
    """A command's failure: its text is the error reply."""


class Command:
    """A command's usage text, its argument counts and what runs it."""

    # A plain class: a dataclass costs ~0.5 ms of every start to create.
    __slots__ = ("max_args", "min_args", "run", "usage")

    def __init__(self, usage: str, min_args: int, max_args: int,
                 run: Callable[[list[str]], str | Awaitable[str]]) -> None:
        self.usage = usage
        self.min_args = min_args
        self.max_args = max_args
        self.run = run


class ControlServer:
    """The commands and the Unix socket they are served on."""

    def __init__(self, server: Server, log_to_file: bool) -> None:
        self.server = server
        self.log_to_file = log_to_file
        self.listener: asyncio.AbstractServer | None = None
        self.path: str | None = None
        self.commands: dict[str, Command] = {
            "list-commands": Command("", 0, 0, self.list_commands),
            "version": Command("", 0, 0, lambda args: f"tegadb-server (tegadb) {__version__}\n"),
            "exit": Command("", 0, 0, self.exit),
            "memory/show": Command("", 0, 0, self.memory_show),
            "ovsdb-server/list-dbs": Command("", 0, 0, self.list_dbs),
            "ovsdb-server/compact": Command("", 0, 1, self.compact),
            "vlog/list": Command("", 0, 0, self.vlog_list),
            "vlog/set": Command("{spec}", 0, UNBOUNDED, self.vlog_set),
            "tegadb/sessions": Command("", 0, 0, self.sessions),
            "tegadb/monitors": Command("", 0, 0, self.monitors),
            "tegadb/locks": Command("", 0, 0, self.locks),
        }

    # --- the socket -------------------------------------------------------
    async def listen(self, path: str) -> None:
        """Serve on ``path``, replacing a stale socket but not a live one
        (another server started in the same directory)."""
        if unix_sockets.is_socket(path):
            if in_use(path):
                raise OSError(f"{path} is in use by a running server: give another --unixctl")
            os.unlink(path)
        self.listener = await asyncio.start_unix_server(self.serve_client, path)
        self.path = path
        # Whoever can connect can stop the server: owner and group only,
        # whatever the umask (ovsdb-server's sockets are 0770 too).
        os.chmod(path, SOCKET_MODE)
        log.info("control socket %s", path)

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        framer = Framer(MAX_REQUEST)
        try:
            while data := await reader.read(65536):
                for request in framer.feed(data):
                    writer.write(await self.answer(request))
                await writer.drain()
        except ProtocolError as e:
            log.warning("control socket: %s, closing connection", e)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def answer(self, request: Any) -> bytes:
        """The encoded reply to one request (with a newline, as OVS ends them)."""
        if not isinstance(request, dict) or "method" not in request:
            return ujson.dumps({"id": None, "error": "not a JSON-RPC request\n"}).encode()
        request_id = request.get("id")
        try:
            result = self.execute(request["method"], request.get("params", []))
            if not isinstance(result, str):
                result = await result  # a command that takes a while (compaction)
        except CommandError as e:
            return ujson.dumps({"id": request_id, "error": f"{e}\n"}).encode()
        return ujson.dumps({"id": request_id, "result": result, "error": None}).encode()

    def execute(self, method: Any, params: Any) -> str | Awaitable[str]:
        """Run one command: unixctl.c's checks, in its order, with its texts."""
        command = self.commands.get(method) if isinstance(method, str) else None
        if command is None:
            raise CommandError(f'"{method}" is not a valid command (use "list-commands" to see '
                               "a list of valid commands)")
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise CommandError(f'"{method}" command has non-string argument')
        if len(params) < command.min_args:
            raise CommandError(f'"{method}" command requires at least {command.min_args} '
                               "arguments")
        if len(params) > command.max_args:
            raise CommandError(f'"{method}" command takes at most {command.max_args} arguments')
        return command.run(params)

    # --- the commands -----------------------------------------------------
    def list_commands(self, args: list[str]) -> str:
        lines = [f"  {name:<23} {self.commands[name].usage}\n" for name in sorted(self.commands)]
        return "The available commands are:\n" + "".join(lines)

    def exit(self, args: list[str]) -> str:
        log.info("exiting: asked on the control socket")
        # After this turn, so that the reply goes out first.
        asyncio.get_running_loop().call_soon(self.server.stopped.set)
        return ""

    def memory_show(self, args: list[str]) -> str:
        stats = self.server.databases.stats()
        return " ".join(f"{key.replace('_', '-')}:{value}" for key, value in stats.items()) + "\n"

    def list_dbs(self, args: list[str]) -> str:
        return "".join(f"{name}\n" for name in sorted(self.server.databases.names()))

    async def compact(self, args: list[str]) -> str:
        """Compact the named database, or every one that is stored, without
        stopping the server (Server.compact); the reply comes when it is done."""
        services = self.server.databases.services
        if args:
            service = services.get(args[0])
            if service is None:
                raise CommandError("no database by that name")
            if service.name == SERVER_DB_NAME:
                raise CommandError("cannot compact built-in databases")
            targets = [service]
        else:
            targets = [s for name, s in services.items() if name != SERVER_DB_NAME]
        for service in targets:
            try:
                await self.server.compact(service)
            except Exception as e:
                raise CommandError(f"{service.name}: compaction failed: {e}") from None
            log.info("%s: compacted (asked on the control socket)", service.name)
        return ""

    def vlog_list(self, args: list[str]) -> str:
        """vlog.c's table: each module's level per destination (this server
        logs to one: the file with --log-file, else the console)."""
        lines = ["                 console    syslog    file\n",
                 "                 -------    ------    ------\n"]
        for name in log_modules():
            level = level_name(logging.getLogger(name).getEffectiveLevel())
            console, file = ("OFF", level) if self.log_to_file else (level, "OFF")
            lines.append(f"{module_name(name):<16}  {console:>4}       {'OFF':>4}       "
                         f"{file:>4}\n")
        return "".join(lines)

    def vlog_set(self, args: list[str]) -> str:
        """Each argument a ``module:destination:level`` spec, any part left
        out (as in OVS: no module means all, no level means dbg).  The
        destination is accepted, but all destinations share one level."""
        for spec in args:
            level, modules = parse_vlog_spec(spec)
            for name in modules:
                logging.getLogger(name).setLevel(level)
        return ""

    def sessions(self, args: list[str]) -> str:
        """One line per session: peer, monitors, locks held or wanted."""
        lines = []
        for session in sorted(self.server.databases.sessions, key=lambda s: s.peer):
            locks = ",".join(sorted(getattr(session, "lock_names", ()))) or "-"
            lines.append(f"{session.peer} monitors:{len(session.monitors)} locks:{locks}"
                         f"{'' if session.change_aware else ' not-change-aware'}\n")
        return "".join(lines)

    def monitors(self, args: list[str]) -> str:
        """One line per monitor: peer, database, method, id."""
        lines = []
        for session in sorted(self.server.databases.sessions, key=lambda s: s.peer):
            for monitor in session.monitors.values():
                lines.append(f"{session.peer} {monitor.spec.db} notifies:{monitor.method} "
                             f"{ujson.dumps(monitor.id)}\n")
        return "".join(lines)

    def locks(self, args: list[str]) -> str:
        """One line per lock name: its owner, then the waiters in order."""
        databases = self.server.databases
        if databases.cluster_locks is not None:
            raise CommandError("locks are not kept here: a cluster member keeps them in etcd, "
                               "a relay at its source")
        table = databases.locks
        lines = []
        for name in sorted(table.records):
            queue = table.queues.get(name, [])
            owner = peer_of(queue[0]) if queue else "-"
            waiters = " ".join(peer_of(holder) for holder in queue[1:])
            lines.append(f"{name} owner:{owner}{' waiting:' + waiters if waiters else ''}\n")
        return "".join(lines)


def in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def peer_of(holder: object) -> str:
    """A lock holder's peer (a session; the lock table holds any hashable)."""
    return str(getattr(holder, "peer", holder))


def module_name(logger_name: str) -> str:
    """How vlog/list shows a logger, and vlog/set accepts it: without "tegadb."."""
    return logger_name.removeprefix("tegadb.")


def log_modules() -> list[str]:
    """tegadb's loggers (created as its modules are imported)."""
    return sorted(name for name in logging.Logger.manager.loggerDict
                  if name == "tegadb" or name.startswith("tegadb."))


def level_name(level: int) -> str:
    for name, value in LEVELS.items():
        if level >= value:
            return name.upper()
    return "DBG"


def parse_vlog_spec(spec: str) -> tuple[int, list[str]]:
    """The level and the loggers of one vlog/set spec."""
    level = logging.DEBUG
    modules = []
    known = log_modules()
    for word in filter(None, spec.split(":")):
        lowered = word.lower()
        if lowered in LEVELS:
            level = LEVELS[lowered]
        elif lowered in DESTINATIONS:
            continue
        elif word in known or f"tegadb.{word}" in known:
            modules.append(word if word in known else f"tegadb.{word}")
        else:
            raise CommandError(f'no destination, level, or module "{word}"')
    return level, modules or known

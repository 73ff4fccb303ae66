"""``tegadb-client watch``: one line per row change, as it happens.

``tegadb-client watch [SERVER] [DATABASE] TABLE [COLUMN...] [--where COND]...
[--since ID] [--format=json]``

Each line: the time (UTC), the transaction id (for ``--since``; ``-`` from
a server that gives none, as a standalone ovsdb-server), the writer (the
address of the client that committed it, which tegadb-server tells through
its ``tegadb_writers`` method; ``-`` where unknown, as from ovsdb-server), the
table, the row (its name, from the table's first index column, else its
UUID's first 8 digits), and what changed: ``+`` and the columns of an
inserted row, ``-`` for a deleted one, ``mtu: 1500 -> 9000`` for a change.
On a terminal, inserts are green and deletes red (rich); elsewhere the text
is plain.  ``--format=json`` prints one JSON object per change instead.

COND is ``COLUMN OP VALUE`` (OP one of ``= != < > <= >=``, the value in the
database commands' syntax; ``COLUMN:KEY=VALUE`` for a map's key) or an
OVSDB condition in JSON (``["mtu", ">", 1500]``); several ``--where`` must
all hold.  ``--since ID`` first shows what changed after transaction ID, when
the server still has it.

The watch follows the server with the client library's `Follower`
(``monitor_cond_since``): when the connection drops it says why on stderr,
reconnects (with back-off) and resumes after the last transaction shown, so
nothing is shown twice; a server that cannot resume (ovsdb-server, or
history gone) sends the whole table, and only its differences from what was
shown are printed.  Changes shown at once for a span of transactions (after
``--since``, or a reconnection) name no writer.

Exit status: 130 after Ctrl-C, 1 after an error (a bad argument, a server
that cannot be reached at the start), 0 if stdout closes (``| head``).
"""

from __future__ import annotations

import asyncio
import getopt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..client.connection import RPCError, SyncConnection
from ..client.follower import Follower
from ..core import conditions, values
from ..core.atoms import UUID_RE
from ..core.errors import OVSDBError
from ..core.schema import DbSchema, TableSchema
from ..core.types import UNLIMITED, ZERO_UUID
from ..protocol.framer import ProtocolError
from . import formats
from .dbcommands import choose_database
from .dbrecords import NotFound, get_column, get_table, name_column
from .tegadb_client import (
    PROGRAM,
    Fatal,
    Options,
    call,
    connect,
    default_remote,
    fetch_schema,
    getopt_message,
    list_dbs,
    looks_like_remote,
    write_out,
)
from .valuesyntax import ValueSyntaxError, parse_atom, parse_datum, parse_token

USAGE = f"""\
usage: {PROGRAM} watch [SERVER] [DATABASE] TABLE [COLUMN...] [OPTIONS]
Print one line per change to TABLE's rows (COLUMNs only, if given), as it happens.

  --where=COND      only rows where COND holds: COLUMN OP VALUE (OP: = != < > <= >=,
                    COLUMN:KEY=VALUE for a map) or a JSON condition; repeatable
  --since=TXN       first, what changed after transaction TXN
  -f, --format=json one JSON object per change (default: text)
  --db=SERVER, --database=NAME   as for the database commands
Ctrl-C stops it (status 130).
"""
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
FOLLOWER_LOGGER = Follower.__module__
CONDITION_OPERATORS = {"=": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


@dataclass
class WatchSettings:
    remote: str = ""
    database: str | None = None
    arguments: list[str] = field(default_factory=list)  # [DATABASE] TABLE [COLUMN...]
    where: list[str] = field(default_factory=list)
    since: str = ZERO_UUID
    json: bool = False


def parse_arguments(argv: list[str]) -> WatchSettings:
    try:
        pairs, args = getopt.gnu_getopt(argv, "f:h", ["where=", "since=", "format=", "db=",
                                                      "database=", "help"])
    except getopt.GetoptError as e:
        raise Fatal(getopt_message(e)) from None
    settings = WatchSettings(remote=default_remote())
    for option, value in pairs:
        if option == "--where":
            settings.where.append(value)
        elif option == "--since":
            if not UUID_RE.match(value):
                raise Fatal(f'--since "{value}" is not a transaction id (a UUID)')
            settings.since = value.lower()
        elif option in ("-f", "--format"):
            if value not in ("text", "json"):
                raise Fatal(f'unknown watch format "{value}" (use "text" or "json")')
            settings.json = value == "json"
        elif option == "--db":
            settings.remote = value
        elif option == "--database":
            settings.database = value
        else:
            raise SystemExit(write_out(USAGE))
    if args and looks_like_remote(args[0]) and len(args) > 1:
        settings.remote, args = args[0], args[1:]
    if not args:
        raise Fatal("watch needs a TABLE (use --help for help)")
    settings.arguments = args
    return settings


def condition(table: TableSchema, text: str) -> list[Any]:
    """One ``--where``: an OVSDB condition (a JSON array) or ``COLUMN OP VALUE``."""
    if text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError as e:
            raise Fatal(f'--where "{text}": {e}') from None
        return [parsed]
    column_name, i = parse_token(text)
    column = get_column(table, column_name)
    key = None
    if text[i:i + 1] == ":":
        key, i = parse_token(text, i + 1)
    operator = max((op for op in CONDITION_OPERATORS if text.startswith(op, i)), key=len,
                   default=None)
    if operator is None:
        raise Fatal(f'--where "{text}": expected COLUMN OP VALUE with OP one of '
                    + " ".join(CONDITION_OPERATORS))
    value = text[i + len(operator):]
    if key is None:
        datum = parse_datum(column.type, value, None)
        return [[column.name, CONDITION_OPERATORS[operator], values.to_json(column.type, datum)]]
    if column.type.value is None or operator not in ("=", "!="):
        raise Fatal(f'--where "{text}": a key needs a map column and "=" or "!="')
    pair = (parse_atom(column.type.key, key, None), parse_atom(column.type.value, value, None))
    json_pair = values.to_json(column.type.relaxed(0, UNLIMITED), (pair,))
    return [[column.name, "includes" if operator == "=" else "excludes", json_pair]]


# --- what changed --------------------------------------------------------------

UNKNOWN = ("?",)  # a value --since cannot know (shown as "?", null in JSON)


@dataclass
class Change:
    table: str
    uuid: str
    label: str
    op: str  # insert, modify, delete
    columns: dict[str, tuple[Any, Any]]  # column -> (old datum or None, new datum or None)


class RowCache:
    """The watched rows as last shown, to word each change."""

    def __init__(self, table: TableSchema, columns: list[str]) -> None:
        self.table = table
        self.columns = columns  # shown
        self.rows: dict[str, dict[str, values.Datum]] = {}
        self.names = name_column(table)
        self.labels: dict[str, str] = {}  # uuid -> name, also of rows no longer kept
        # Kept: the shown columns and the one that names a row.
        self.kept = sorted({*columns, *([self.names.name] if self.names else [])})

    def label(self, uuid: str, row: dict[str, values.Datum]) -> str:
        if self.names is not None and row.get(self.names.name):
            atom = row[self.names.name][0]
            self.labels[uuid] = values.atom_to_string(self.names.type.key.type, atom)
        return self.labels.get(uuid, uuid[:8])

    def _row(self, json_row: dict[str, Any]) -> dict[str, values.Datum]:
        return {c: values.parse_unchecked(self.table.columns[c].type, json_row[c])
                if c in json_row else values.default(self.table.columns[c].type)
                for c in self.kept}

    def update(self, updates: dict[str, Any]) -> Iterator[Change]:
        """Changes from a <table-updates2> (insert, modify, delete)."""
        for uuid, update in updates.get(self.table.name, {}).items():
            old = self.rows.get(uuid)
            if "delete" in update:
                if old is not None:
                    del self.rows[uuid]
                    yield self._change(uuid, old, None)
            elif "modify" in update and old is None:
                yield self._replayed(uuid, update["modify"])
            elif "modify" in update and old is not None:
                new = dict(old)
                for c, diff in update["modify"].items():
                    if c in new:
                        type_ = self.table.columns[c].type
                        change = values.parse_unchecked(type_.relaxed(0, UNLIMITED), diff)
                        new[c] = values.apply_diff(type_, old[c], change)
                self.rows[uuid] = new
                yield self._change(uuid, old, new)
            else:
                new = self._row(update.get("insert") or update.get("initial") or {})
                self.rows[uuid] = new
                yield self._change(uuid, old, new)

    def _replayed(self, uuid: str, diffs: dict[str, Any]) -> Change:
        """A change replayed by ``--since`` to a row this watch has not seen: its
        old values are unknown, and so are the new ones of sets and maps (the
        server sends what changed in them)."""
        columns: dict[str, tuple[Any, Any]] = {}
        for c in self.columns:
            if c in diffs:
                type_ = self.table.columns[c].type
                new = (None if type_.is_composite
                       else values.parse_unchecked(type_.relaxed(0, UNLIMITED), diffs[c]))
                columns[c] = (UNKNOWN, UNKNOWN if new is None else new)
        label = self.labels.get(uuid, uuid[:8])
        return Change(self.table.name, uuid, label, "modify", columns)

    def replace_all(self, updates: dict[str, Any]) -> Iterator[Change]:
        """A full copy (initial rows): the differences from what was shown."""
        fresh = {uuid: self._row(u.get("initial") or {})
                 for uuid, u in updates.get(self.table.name, {}).items()}
        for uuid in [u for u in self.rows if u not in fresh]:
            yield self._change(uuid, self.rows.pop(uuid), None)
        for uuid, new in fresh.items():
            old = self.rows.get(uuid)
            self.rows[uuid] = new
            if old != new:
                yield self._change(uuid, old, new)

    def _change(self, uuid: str, old: dict[str, values.Datum] | None,
                new: dict[str, values.Datum] | None) -> Change:
        row = new if new is not None else old
        assert row is not None
        op = "insert" if old is None else "delete" if new is None else "modify"
        columns = {}
        for c in self.columns:
            before = None if old is None else old[c]
            after = None if new is None else new[c]
            default = values.default(self.table.columns[c].type)
            if before != after and not (op == "insert" and after == default):
                columns[c] = (before, after)
        return Change(self.table.name, uuid, self.label(uuid, row), op, columns)


# --- printing ------------------------------------------------------------------

class ReaderGone(Exception):
    """Stdout was closed (``| head`` has all it wanted)."""


class Printer:
    """Lines on stdout: coloured through rich on a terminal, plain elsewhere."""

    def __init__(self, table: TableSchema, as_json: bool, out: TextIO) -> None:
        self.table = table
        self.as_json = as_json
        self.out = out
        self.console = None
        if not as_json and out.isatty():
            from rich.console import Console  # only on a terminal: it costs start-up time

            self.console = Console(file=out, highlight=False, soft_wrap=True)

    def show(self, change: Change, txn: str, writer: str | None) -> None:
        try:
            self._show(change, txn, writer)
        except BrokenPipeError:  # not the server's socket: stdout
            raise ReaderGone from None

    def _show(self, change: Change, txn: str, writer: str | None) -> None:
        now = time.time()
        if self.as_json:
            self.write_out(json.dumps(self._json(change, txn, writer, now),
                                      ensure_ascii=False) + "\n")
            return
        # A standalone ovsdb-server gives no transaction ids (all zeros).
        shown_txn = "-" if txn == ZERO_UUID else txn
        line = (f"{formats.timestamp(now)} {shown_txn} {writer or '-'} "
                f"{change.table} {change.label} ")
        line += {"insert": "+ ", "delete": "- ", "modify": ""}[change.op] + self._diff(change)
        if self.console is None:
            self.write_out(line.rstrip() + "\n")
        else:
            from rich.text import Text

            style = {"insert": "green", "delete": "red", "modify": ""}[change.op]
            self.console.print(Text(line.rstrip(), style=style))

    def write_out(self, text: str) -> None:
        # Bytes, not the locale's encoding: data may hold any Unicode text.
        self.out.buffer.write(text.encode())
        self.out.flush()

    def _text(self, column: str, datum: values.Datum | None) -> str:
        if datum is UNKNOWN:
            return "?"
        return formats.datum_to_string(self.table.columns[column].type, datum or ())

    def _diff(self, change: Change) -> str:
        if change.op == "insert":
            return ", ".join(f"{c}={self._text(c, new)}" for c, (_, new) in change.columns.items())
        if change.op == "delete":
            return ""
        return ", ".join(f"{c}: {self._text(c, old)} -> {self._text(c, new)}"
                         for c, (old, new) in change.columns.items())

    def _json(self, change: Change, txn: str, writer: str | None,
              now: float) -> dict[str, Any]:
        def value(column: str, datum: values.Datum | None) -> Any:
            if datum is None or datum is UNKNOWN:
                return None
            return values.to_json(self.table.columns[column].type, datum)
        return {"time": formats.timestamp(now), "txn": None if txn == ZERO_UUID else txn,
                "writer": writer, "table": change.table,
                "uuid": change.uuid, "row": change.label, "op": change.op,
                "changes": {c: {"old": value(c, old), "new": value(c, new)}
                            for c, (old, new) in change.columns.items()}}


# --- following the server ------------------------------------------------------------

class Watch:
    """One watch: the names checked on a first connection, then a `Follower`
    (tegadb/client/follower.py) that keeps following across reconnections,
    with this as its sink."""

    def __init__(self, settings: WatchSettings, options: Options) -> None:
        self.settings = settings
        self.options = options
        self.shown_before = False  # a connection has already shown the rows
        self.reader_gone = False
        self.cache: RowCache | None = None
        self.printer: Printer | None = None
        self.where: list[Any] = []
        self.follower: Follower | None = None
        # Changes waiting for their writers' names: (changes, txn, ask the server).
        self.queue: list[tuple[list[Change], str, bool]] = []
        self.printing: asyncio.Task[None] | None = None
        self.server_names_writers = True   # until it answers tegadb_writers with an error

    def check(self) -> None:
        """Connect once: the database, table, columns and condition must be
        right (else the command ends), and ``--since`` rows get their names."""
        with connect(self.settings.remote, self.options) as conn:
            self.options.server = self.settings.remote
            args = self.settings.arguments
            if self.settings.database is None and len(args) > 1 \
                    and args[0] in list_dbs(conn, self.options):
                self.settings.database, args = args[0], args[1:]
            database = choose_database(conn, self.settings.database, self.options, args[:1])
            self.settings.database = database
            schema = fetch_schema(conn, database, self.options).schema
            self._prepare(schema, args[0], args[1:])
            if self.settings.since != ZERO_UUID:
                self._learn_names(conn)

    def _prepare(self, schema: DbSchema, table_name: str, column_names: list[str]) -> None:
        try:
            table = get_table(schema, table_name)
            columns = [get_column(table, c).name for c in column_names]
            self.where = [part for text in self.settings.where for part in condition(table, text)]
            conditions.parse(table, self.where)
        except (NotFound, ValueSyntaxError) as e:
            raise Fatal(str(e)) from None
        except OVSDBError as e:
            raise Fatal(f"--where: {e}") from None
        self.cache = RowCache(table, columns or sorted(table.user_columns))
        self.printer = Printer(table, self.settings.json, sys.stdout)

    def _learn_names(self, conn: SyncConnection) -> None:
        """The rows' names now, for the changes ``--since`` replays."""
        assert self.cache is not None
        names = self.cache.names
        if names is None:
            return
        select = {"op": "select", "table": self.cache.table.name, "where": [],
                  "columns": ["_uuid", names.name]}
        result = call(conn, "transact", [self.settings.database, select], self.options)
        for row in result[0].get("rows", []):
            self.cache.label(row["_uuid"][1], {names.name: values.parse_unchecked(
                names.type, row[names.name])})

    async def follow(self) -> None:
        """Follow the server until Ctrl-C or stdout closes."""
        assert self.cache is not None and self.settings.database is not None
        table = self.cache.table.name
        self.follower = Follower(
            [self.settings.remote], self.settings.database, self,
            tables={table: self.cache.kept},
            conditions={table: self.where} if self.where else None)
        self.follower.last_id = self.settings.since
        await self.follower.run()

    # --- the follower's sink ---

    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        assert self.cache is not None
        if found:
            changes = list(self.cache.update(updates))
        else:
            if not self.shown_before and self.settings.since != ZERO_UUID:
                say(f"transaction {self.settings.since} is not in the server's history; "
                    "watching from now")
            changes = list(self.cache.replace_all(updates))
        if self.shown_before:
            say(f"{self.settings.remote}: reconnected")
        else:
            say(f"watching {self.cache.table.name} in {self.settings.database} on "
                f"{self.settings.remote} (Ctrl-C to stop)")
        # The first copy of the rows is the starting point, not a change.
        if found or self.shown_before:
            self._show(changes, last_id, one_transaction=False)
        self.shown_before = True

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        assert self.cache is not None
        self._show(list(self.cache.update(updates)), last_id, one_transaction=True)

    def disconnected(self) -> None:
        """The follower says why (a warning on stderr) and reconnects."""

    def _show(self, changes: list[Change], txn: str, one_transaction: bool) -> None:
        """Print ``changes`` once their writer is known (in order: a queue)."""
        if not changes or self.reader_gone:
            return
        ask = one_transaction and txn != ZERO_UUID and self.server_names_writers
        self.queue.append((changes, txn, ask))
        if self.printing is None or self.printing.done():
            self.printing = asyncio.get_running_loop().create_task(self._print_queued())

    async def _print_queued(self) -> None:
        assert self.printer is not None and self.follower is not None
        while self.queue and not self.reader_gone:
            batch, self.queue = self.queue, []
            writers = await self._writers([txn for _, txn, ask in batch if ask])
            try:
                for changes, txn, _ in batch:
                    for change in changes:
                        self.printer.show(change, txn, writers.get(txn))
            except ReaderGone:
                self.reader_gone = True
                await self.follower.close()

    async def _writers(self, txns: list[str]) -> dict[str, str]:
        """Who committed ``txns``, as far as the server knows (tegadb_writers)."""
        assert self.follower is not None
        if not txns or not self.server_names_writers:
            return {}
        try:
            known = await self.follower.request("tegadb_writers",
                                                [self.settings.database, txns])
        except RPCError:
            self.server_names_writers = False   # ovsdb-server: unknown method
            return {}
        except (OSError, ProtocolError):
            return {}   # shown without; the follower reconnects
        return {txn: origin["writer"] for txn, origin in known.items()}


def say(message: str) -> None:
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)


def run(argv: list[str]) -> int:
    # Ctrl-C ends the watch even where the shell started it with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = parse_arguments(argv)
    watch = Watch(settings, Options())
    watch.check()
    # The follower's warnings (a lost connection and why) are the watch's.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROGRAM}: %(message)s"))
    follower_log = logging.getLogger(FOLLOWER_LOGGER)
    follower_log.addHandler(handler)
    follower_log.setLevel(logging.WARNING)
    follower_log.propagate = False
    asyncio.run(watch.follow())
    if watch.reader_gone:
        raise ReaderGone
    return 0


def main(argv: list[str]) -> int:
    """Run a watch until Ctrl-C (status 130) or stdout closes (status 0)."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ReaderGone:
        # That is how a watch in a pipe ends.  Stdout goes to /dev/null so
        # that Python does not fail again flushing it at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

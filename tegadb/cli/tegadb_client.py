"""tegadb-client: ovsdb-client's commands, arguments, options and output.

``tegadb-client [OPTIONS] COMMAND [SERVER] [DATABASE] [ARGS]``.  SERVER is
recognized as ovsdb-client does (it starts with a letter and contains a
colon) and defaults to ``$TEGADB_REMOTE``, else ``unix:var/tegadb.sock``.
DATABASE, where a command needs one, is taken from the arguments if the
server has a database of that name, else it is ``Open_vSwitch`` if served,
else the only database whose name does not start with ``_``.

Most commands print their output once, at the end.  ``monitor``,
``monitor-cond``, ``monitor-cond-since``, ``lock``, ``steal`` and ``unlock``
print as replies and notifications arrive, until the connection ends or the
program is killed.  ``backup`` writes a database file on stdout and
``restore`` reads one on stdin (``ovsdb_file``, ``restore``); long commands
draw a progress bar on a terminal (``progress``).  docs/cli.md describes
every command and the exit statuses (``exits``).
"""

from __future__ import annotations

import getopt
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..client.connection import Notification, ProtocolError, RPCError, SyncConnection
from ..core import conditions
from ..core.atoms import UUID_RE
from ..core.errors import OVSDBError, syntax_error
from ..core.hashorder import ovs_member_order
from ..core.jsonfmt import ovs_json, ovs_parsed
from ..core.schema import IMPLICIT_COLUMNS, DbSchema, TableSchema
from ..core.types import ZERO_UUID
from . import backups, exits, formats, ovsdb_file, progress, restore, schema_files
from .formats import JsonCell, Monitored, Style, Table
from .schema_files import error_text

PROGRAM = "tegadb-client"
DEFAULT_REMOTE = "unix:var/tegadb.sock"


class Fatal(Exception):
    """An error that ends the command: printed as ``tegadb-client: MESSAGE``, exit 1."""


@dataclass
class Options:
    style: Style = field(default_factory=Style)
    timestamp: bool = False
    timeout: float | None = None
    private_key: str | None = None
    certificate: str | None = None
    ca_cert: str | None = None
    force: bool = False  # restore: even when the backup's schema differs
    quiet: bool = False  # no progress bar, even on a terminal
    server: str = ""  # the SERVER connected to, as messages name it (set by open_rpc)


# --- connecting ----------------------------------------------------------------

def default_remote() -> str:
    return os.environ.get("TEGADB_REMOTE") or DEFAULT_REMOTE


def looks_like_remote(arg: str) -> bool:
    """ovsdb-client's test: a letter first, and a colon somewhere."""
    return arg[:1].isascii() and arg[:1].isalpha() and ":" in arg


def connect(remote: str, options: Options) -> SyncConnection:
    try:
        return open_connection(remote, options)
    except OSError as e:  # before ValueError: ssl's verification error is both
        raise Fatal(f'failed to connect to "{remote}" ({e.strerror or e})') from None
    except ValueError as e:
        raise Fatal(str(e)) from None


def open_connection(remote: str, options: Options) -> SyncConnection:
    """A connection to ``remote``; OSError when it cannot be made (worth retrying)."""
    context = None
    if remote.startswith("ssl:"):
        if not (options.private_key and options.certificate and options.ca_cert):
            raise Fatal("SSL remotes need --private-key, --certificate and --ca-cert")
        from ..protocol.tls import tls_context  # ssl costs start-up time: only for ssl:

        context = tls_context(options.private_key, options.certificate, options.ca_cert,
                              server=False)
    return SyncConnection.open(remote, context, options.timeout)


def call(conn: SyncConnection, method: str, params: list[Any], options: Options) -> Any:
    """One request; an error reply or a lost connection ends the command."""
    try:
        return conn.request(method, params)
    except RPCError as e:
        raise Fatal("transaction returned error: "
                    + ovs_json(e.error, options.style.pretty)) from None
    except (OSError, ProtocolError) as e:
        raise Fatal(f"transaction failed ({e})") from None


def list_dbs(conn: SyncConnection, options: Options) -> list[str]:
    dbs = call(conn, "list_dbs", [], options)
    if not isinstance(dbs, list):
        raise Fatal("list_dbs response is not array")
    for i, name in enumerate(dbs):
        if not isinstance(name, str):
            raise Fatal(f"list_dbs response {i} is not string")
    return sorted(dbs)


def open_rpc(args: list[str], min_args: int, need_db: bool, options: Options,
             database: str | None = None) -> tuple[SyncConnection, str | None, list[str]]:
    """Connect, settle SERVER and DATABASE; returns the remaining arguments."""
    remote = default_remote()
    if len(args) > min_args and looks_like_remote(args[0]):
        remote, args = args[0], args[1:]
    conn = connect(remote, options)
    options.server = remote
    if need_db and database is None:
        dbs = list_dbs(conn, options)
        if len(args) > min_args and args[0] in dbs:
            database, args = args[0], args[1:]
        elif "Open_vSwitch" in dbs:
            database = "Open_vSwitch"
        else:
            candidates = [db for db in dbs if not db.startswith("_")]
            if len(candidates) != 1:
                raise Fatal("could not find a default database, please specify a database name")
            database = candidates[0]
    return conn, database, args


@dataclass
class SchemaReply:
    """A schema as get_schema returned it: parsed, plus the wire's member order."""

    schema: DbSchema
    wire: dict[str, Any]

    def table_order(self) -> list[str]:
        """Tables in the order ovsdb-client lists them.

        It parses the reply into a JSON object (one shash), then adds the
        tables, in that object's order, to the schema's own shash.
        """
        return ovs_member_order(ovs_member_order(self.wire["tables"]))

    def column_order(self, table: str) -> list[str]:
        """Columns likewise, but ``_uuid`` and ``_version`` go in first."""
        parsed = ovs_member_order(self.wire["tables"][table]["columns"])
        return ovs_member_order([*IMPLICIT_COLUMNS, *parsed])


def fetch_schema(conn: SyncConnection, database: str, options: Options) -> SchemaReply:
    wire = call(conn, "get_schema", [database], options)
    try:
        return SchemaReply(DbSchema.from_json(wire), wire)
    except OVSDBError as e:
        raise Fatal(str(e)) from None


# --- commands --------------------------------------------------------------------

Output = str  # what a command prints on stdout
Handler = Callable[[SyncConnection, str, list[str], Options], Output]


def do_list_dbs(conn: SyncConnection, database: str, args: list[str], options: Options) -> Output:
    return "".join(db + "\n" for db in list_dbs(conn, options))


def do_get_schema(conn: SyncConnection, database: str, args: list[str],
                  options: Options) -> Output:
    schema = fetch_schema(conn, database, options).schema
    return ovs_json(schema.to_json(), options.style.pretty) + "\n"


def do_get_schema_version(conn: SyncConnection, database: str, args: list[str],
                          options: Options) -> Output:
    return fetch_schema(conn, database, options).schema.version + "\n"


def do_get_schema_cksum(conn: SyncConnection, database: str, args: list[str],
                        options: Options) -> Output:
    return fetch_schema(conn, database, options).schema.cksum + "\n"


def do_list_tables(conn: SyncConnection, database: str, args: list[str],
                   options: Options) -> Output:
    reply = fetch_schema(conn, database, options)
    table = Table(["Table"], [[name] for name in reply.table_order()])
    return formats.render([table], options.style)


def do_list_columns(conn: SyncConnection, database: str, args: list[str],
                    options: Options) -> Output:
    reply = fetch_schema(conn, database, options)
    only = args[0] if args else None
    table = Table(["Column", "Type"] if only else ["Table", "Column", "Type"])
    for name in reply.table_order():
        if only not in (None, name):
            continue
        columns = reply.schema.tables[name].columns
        for column in reply.column_order(name):
            cells: list[formats.Cell] = [column, JsonCell(columns[column].type.to_json())]
            table.rows.append(cells if only else [name, *cells])
    return formats.render([table], options.style)


def do_dump(conn: SyncConnection, database: str, args: list[str], options: Options) -> Output:
    schema = fetch_schema(conn, database, options).schema
    if args:
        table = schema.tables.get(args[0])
        if table is None:
            raise Fatal(f'No table "{args[0]}" found.')
        for column in args[1:]:
            if column not in table.columns:
                raise Fatal(f'Table "{args[0]}" has no column {column}.')
        selected = {args[0]: args[1:] or list(table.columns)}
    else:
        selected = {name: list(schema.tables[name].columns) for name in sorted(schema.tables)}
    ops = [{"op": "select", "table": name, "where": [],
            "columns": [c for c in columns if c != "_version"]}
           for name, columns in selected.items()]
    results = call(conn, "transact", [database, *ops], options)
    if not isinstance(results, list) or len(results) != len(ops):
        raise Fatal(f"reply is not array of {len(ops)} elements: {ovs_json(results)}")
    tables = []
    for (name, columns), result in zip(selected.items(), results):
        rows = result.get("rows") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise Fatal(f'{name} table reply is not an object with a "rows" member array: '
                        f"{ovs_json(result)}")
        types = {c: schema.tables[name].columns[c].type for c in columns}
        try:
            tables.append(formats.dump_table(name, types, rows))
        except (TypeError, ValueError, OVSDBError) as e:
            raise Fatal(str(e)) from None
    return formats.render(tables, options.style)


def parse_json_arg(text: str) -> Any:
    """A JSON argument (TRANSACTION, CONDITION), with numbers as OVS's parser reads them."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Fatal(f'"{text}": {e}') from None
    if not isinstance(value, (list, dict)):
        raise Fatal(f'"{text}": syntax error at beginning of input')
    return ovs_parsed(value)


def transact(args: list[str], transaction: Any, options: Options) -> Any:
    """Send TRANSACTION (params of "transact") to the SERVER in ``args``."""
    if not (isinstance(transaction, list) and transaction and isinstance(transaction[0], str)):
        raise Fatal("not a valid OVSDB query")
    conn, _, _ = open_rpc(args, 1, True, options, database=transaction[0])
    with conn:
        return call(conn, "transact", transaction, options)


def json_output(result: Any, options: Options) -> Output:
    """A result as ovsdb-client prints the JSON it received."""
    return ovs_json(ovs_parsed(result), options.style.pretty) + "\n"


def do_transact(args: list[str], options: Options) -> Output:
    if args[-1].startswith("@"):
        return transact_file(args, args[-1][1:], options)
    return json_output(transact(args, parse_json_arg(args[-1]), options), options)


def do_query(args: list[str], options: Options) -> Output:
    """transact, made read-only as ovsdb-client does: an "abort" op at the end."""
    transaction = parse_json_arg(args[-1])
    if not isinstance(transaction, list):
        raise Fatal("not a valid OVSDB query")
    abort_index = len(transaction) - 1  # its place in the result array
    result = transact(args, [*transaction, {"op": "abort"}], options)
    # Hide the abort's own error when the transaction got as far as it.
    if (isinstance(result, list) and len(result) == abort_index + 1
            and isinstance(result[abort_index], dict)
            and result[abort_index].get("error") == "aborted"):
        result = result[:abort_index]
    return json_output(result, options)


# --- monitor, lock: printing as things happen ---------------------------------

def emit(text: str, errors: Iterable[str] = ()) -> None:
    """Print now: ``errors`` on stderr (as ovsdb-client's complaints), then ``text``."""
    for error in errors:
        print(f"{PROGRAM}: {error}", file=sys.stderr, flush=True)
    if text:
        write_out(text)


def _receive_failed(options: Options, error: Exception) -> Fatal:
    if isinstance(error, ConnectionError) and error.errno is None:
        reason = "End of file"  # the server closed the connection
    else:
        reason = getattr(error, "strerror", None) or str(error)
    return Fatal(f"{options.server}: receive failed ({reason})")


def request_quietly(conn: SyncConnection, method: str, params: list[Any],
                    options: Options) -> tuple[bool, Any]:
    """(True, result), or (False, None) for an error reply: ovsdb-client's
    monitor and lock commands print nothing for one, and keep listening."""
    try:
        return True, conn.request(method, params)
    except RPCError:
        return False, None
    except (OSError, ProtocolError) as e:
        raise _receive_failed(options, e) from None


def notifications(conn: SyncConnection, options: Options) -> Iterator[Notification]:
    """Notifications in the order they arrive, until the connection ends (Fatal)."""
    while True:
        try:
            notification = conn.wait_notification()
        except (OSError, ProtocolError) as e:
            raise _receive_failed(options, e) from None
        yield notification


def _monitor_request(arg: str, table: TableSchema, shown: dict[str, Any],
                     database: str, options: Options) -> dict[str, Any]:
    """One ``COLUMN,...`` argument as a <monitor-request>; adds its columns to ``shown``.

    ``!initial``, ``!insert``, ``!delete`` and ``!modify`` turn off a kind of
    update; no column at all means every column, sorted, then ``_version``.
    """
    select = {"initial": True, "insert": True, "delete": True, "modify": True}
    columns: list[str] = []

    def add(name: str) -> None:
        if name in shown:
            raise Fatal(f'{options.server}: column "{name}" mentioned multiple times')
        shown[name] = table.columns[name].type
        columns.append(name)

    for token in filter(None, arg.split(",")):
        if token.startswith("!") and token[1:] in select:
            select[token[1:]] = False
        elif token in table.columns:
            add(token)
        else:
            raise Fatal(f'{options.server}: table "{table.name}" in {database} '
                        f'does not have a column named "{token}"')
    if not columns:
        for name in sorted(table.user_columns):
            add(name)
        add("_version")
    request: dict[str, Any] = {"columns": columns}
    if not all(select.values()):
        request["select"] = select
    return request


def monitor_requests(schema: DbSchema, database: str, args: list[str], condition: Any,
                     options: Options) -> tuple[list[Monitored], dict[str, Any]]:
    """``TABLE [COLUMN,...]...`` or ``ALL [COLUMN,...]...``: what to show, what to ask for.

    The condition, if any, goes in each table's first monitor-request.
    """
    name, column_args = args[0], args[1:] or [""]
    if name == "ALL":
        if condition is not None:
            raise Fatal("ALL tables are not allowed with condition")
        tables = [schema.tables[n] for n in sorted(schema.tables)]
    elif name in schema.tables:
        tables = [schema.tables[name]]
    else:
        raise Fatal(f'{options.server}: {database} does not have a table named "{name}"')
    monitored = []
    requests = {}
    for table in tables:
        shown: dict[str, Any] = {}
        table_requests = [_monitor_request(arg, table, shown, database, options)
                          for arg in column_args]
        if condition is not None:
            table_requests[0]["where"] = condition
        requests[table.name] = table_requests
        monitored.append(Monitored(table.name, tuple(shown.items())))
    return monitored, requests


METHODS = {1: "monitor", 2: "monitor_cond", 3: "monitor_cond_since"}


def monitor(conn: SyncConnection, database: str, args: list[str], options: Options,
            version: int, condition: Any = None, last_id: str = ZERO_UUID) -> Output:
    """Print the monitor's initial contents, then every update, until the connection ends."""
    schema = fetch_schema(conn, database, options).schema
    monitored, requests = monitor_requests(schema, database, args, condition, options)
    try:
        conn.request("set_db_change_aware", [True])
    except RPCError:
        pass  # an old server: carry on without
    except (OSError, ProtocolError) as e:
        raise Fatal(f"{options.server}: error setting db_change_aware ({e})") from None
    params = [database, None, requests, *([last_id] if version == 3 else [])]
    printer = formats.Printer(options.style)

    def show(updates: Any, update_version: int, initial: bool = False, prefix: str = "") -> None:
        time = formats.timestamp() if options.timestamp else None
        tables, errors = formats.monitor_tables(updates, monitored, update_version, initial, time)
        emit(prefix + "".join(printer.render(table) for table in tables), errors)

    replied, result = request_quietly(conn, METHODS[version], params, options)
    if replied and version == 3:
        if not isinstance(result, list) or len(result) != 3:
            raise Fatal("<result> should be an array of 3 elements")
        found, newest, updates = result
        show(updates, 3, prefix=f"found: {'true' if found is True else 'false'}, "
                                f"last_id: {newest}\n")
    elif replied:
        show(result, version, initial=True)
    for note in notifications(conn, options):
        if note.method == "monitor_canceled":
            raise Fatal(f"{options.server}: {database} database was removed")
        got = note.params if isinstance(note.params, list) else []
        if len(got) != (3 if note.method == "update3" else 2) or got[0] is not None:
            continue  # not for the one monitor this program made (its id is null)
        if note.method == "update":
            show(got[1], 1)
        elif note.method == "update2" and version == 2:
            show(got[1], 2)
        elif note.method == "update3" and version == 3:
            show(got[2], 3, prefix=f"\nlast_id: {got[1]}")
    return ""


def monitor_cond(conn: SyncConnection, database: str, args: list[str], options: Options,
                 version: int, last_id: str = ZERO_UUID) -> Output:
    """``CONDITION TABLE [COLUMN,...]``: the condition is checked here first."""
    if len(args) < 2:
        raise Fatal(f"invalid syntax for '{METHODS[version].replace('_', '-')}' "
                    "(use --help for help)")
    schema = fetch_schema(conn, database, options).schema
    table = schema.tables.get(args[1])
    if table is None:
        raise Fatal(f'{database} does not have a table named "{args[1]}"')
    condition = parse_json_arg(args[0])
    try:
        if not isinstance(condition, list):
            raise syntax_error("Parse error in condition.", condition)
        conditions.parse(table, condition)
    except OVSDBError as e:
        raise Fatal(error_text(e)) from None
    return monitor(conn, database, args[1:], options, version, condition, last_id)


def do_monitor(conn: SyncConnection, database: str, args: list[str], options: Options) -> Output:
    return monitor(conn, database, args, options, 1)


def do_monitor_cond(conn: SyncConnection, database: str, args: list[str],
                    options: Options) -> Output:
    return monitor_cond(conn, database, args, options, 2)


def do_monitor_cond_since(conn: SyncConnection, database: str, args: list[str],
                          options: Options) -> Output:
    last_id = ZERO_UUID
    if UUID_RE.match(args[0]):
        last_id, args = args[0].lower(), args[1:]
    return monitor_cond(conn, database, args, options, 3, last_id)


def lock_command(method: str) -> Handler:
    """``lock``, ``steal`` or ``unlock`` LOCK: print the reply, then every notification."""
    def handler(conn: SyncConnection, database: str, args: list[str], options: Options) -> Output:
        replied, result = request_quietly(conn, method, [args[0]], options)
        if replied:
            emit(json_output(result, options))
        for note in notifications(conn, options):
            emit(note.method + "\n" + json_output(note.params, options))
        return ""
    return handler


# --- schema files: needs-conversion, convert -------------------------------------

def read_schema(path: str) -> DbSchema:
    try:
        return schema_files.read_schema(path)
    except schema_files.SchemaFileError as e:
        raise Fatal(str(e)) from None


def is_clustered(conn: SyncConnection, database: str, options: Options) -> bool:
    """Whether the server's _Server says ``database`` is clustered."""
    result = call(conn, "transact", ["_Server", {"op": "select", "table": "Database",
                                                "where": [["name", "==", database]]}], options)
    rows = result[0].get("rows") if isinstance(result, list) and result and isinstance(
        result[0], dict) else None
    return isinstance(rows, list) and any(
        isinstance(row, dict) and row.get("model") == "clustered" for row in rows)


def persist_ephemeral_columns(schema: DbSchema, path: str) -> DbSchema:
    """SCHEMA as a cluster keeps it: no ephemeral columns (with ovsdb-client's warning)."""
    ephemeral = [(table.name, column.name) for table in schema.tables.values()
                 for column in table.user_columns.values() if column.ephemeral]
    if not ephemeral:
        return schema
    table, column = ephemeral[-1]
    emit("", [f"{path}: changed {len(ephemeral)} columns in '{schema.name}' database from"
              f" ephemeral to persistent, including '{column}' column in '{table}' table,"
              " because clusters do not support ephemeral columns"])
    schema_json = schema.to_json()
    for table_json in schema_json["tables"].values():
        for column_json in table_json["columns"].values():
            column_json.pop("ephemeral", None)
    return DbSchema.from_json(schema_json)


def schema_for_server(conn: SyncConnection, path: str, schema: DbSchema,
                      options: Options) -> DbSchema:
    """SCHEMA as the server will hold it (a cluster persists ephemeral columns)."""
    if is_clustered(conn, schema.name, options):
        return persist_ephemeral_columns(schema, path)
    return schema


def do_needs_conversion(args: list[str], options: Options) -> Output:
    """``[SERVER] SCHEMA``: "yes" if the database SCHEMA names differs from it."""
    schema = read_schema(args[-1])
    conn, _, _ = open_rpc(args, 1, True, options, database=schema.name)
    with conn:
        schema = schema_for_server(conn, args[-1], schema, options)
        online = fetch_schema(conn, schema.name, options).schema
    return ("no" if online.to_json() == schema.to_json() else "yes") + "\n"


def set_change_aware(conn: SyncConnection, options: Options) -> None:
    """set_db_change_aware: a server too old for it is no error."""
    try:
        conn.request("set_db_change_aware", [True])
    except RPCError:
        pass
    except (OSError, ProtocolError) as e:
        raise Fatal(f"{options.server}: error setting db_change_aware ({e})") from None


def do_convert(args: list[str], options: Options) -> Output:
    """``[SERVER] SCHEMA``: convert the database SCHEMA names, on the server."""
    schema = read_schema(args[-1])
    conn, _, _ = open_rpc(args, 1, True, options, database=schema.name)
    with conn:
        schema = schema_for_server(conn, args[-1], schema, options)
        set_change_aware(conn, options)
        with progress.bar(f"converting {schema.name}", None, options.quiet):
            call(conn, "convert", [schema.name, schema.to_json()], options)
    return ""


# --- wait -------------------------------------------------------------------------

WAIT_STATES = ("added", "connected", "removed")
RECONNECT_BACKOFF = (0.25, 8.0)  # seconds: first retry, longest pause


def wait_transaction(database: str, state: str) -> list[Any]:
    """A transaction on _Server that completes once DATABASE is in STATE."""
    op: dict[str, Any] = {"op": "wait", "table": "Database",
                          "where": [["name", "==", database]], "until": "=="}
    if state == "connected":
        op.update(columns=["connected"], rows=[{"connected": True}])
    else:
        op.update(columns=[], rows=[{}] if state == "added" else [])
    return ["_Server", op]


def check_transaction_reply(result: Any) -> None:
    """Every op succeeded, or Fatal as ovsdb-client words it."""
    if not isinstance(result, list):
        raise Fatal("result is not array")
    for op_result in result:
        if not isinstance(op_result, dict):
            raise Fatal("result array element is not object")
        if "error" in op_result:
            raise Fatal(f"server returned error reply: {ovs_json(op_result)}")


def do_wait(args: list[str], options: Options) -> Output:
    """``[SERVER] DATABASE STATE``: return once it holds, reconnecting as needed.

    Like ovsdb-client, it waits for a server that is not up yet, and starts
    over when the connection drops; -t/--timeout bounds the whole wait.
    """
    database, state = args[-2], args[-1]
    if state not in WAIT_STATES:
        raise Fatal(f"{state}: unknown state")
    remote = args[0] if len(args) > 2 else default_remote()
    options = _follow_signals(options)
    pause = RECONNECT_BACKOFF[0]
    while True:
        try:
            with open_connection(remote, options) as conn:
                try:
                    conn.request("set_db_change_aware", [True])
                except RPCError as e:
                    raise Fatal(f"{remote}: set_db_change_aware failed "
                                f"({ovs_json(e.error)})") from None
                try:
                    result = conn.request("transact", wait_transaction(database, state))
                except RPCError as e:
                    raise Fatal("transaction returned error: " + ovs_json(e.error)) from None
                check_transaction_reply(result)
                return ""
        except (OSError, ProtocolError):
            time.sleep(pause)  # the server is not up, or went away: try again
            pause = min(pause * 2, RECONNECT_BACKOFF[1])
        except ValueError as e:  # a SERVER that is not a remote: no use trying again
            raise Fatal(str(e)) from None


# --- backup, restore ----------------------------------------------------------------

BACKUP_COMMENT = f'produced by "{PROGRAM} backup"'


def do_backup(conn: SyncConnection, database: str, args: list[str],
              options: Options) -> Output:
    """The database as a standalone database file (ovsdb-server's format) on stdout."""
    if os.isatty(sys.stdout.fileno()):
        raise Fatal("not writing backup to a terminal; please redirect stdout to a file")
    schema = fetch_schema(conn, database, options).schema
    names = list(schema.tables)
    ops = [{"op": "select", "table": name, "where": [],
            "columns": [c for c, column in schema.tables[name].columns.items()
                        if column.persistent and c != "_version"]} for name in names]
    with progress.bar(f"backup of {database}: reading", None, options.quiet) as bar:
        results = call(conn, "transact", [database, *ops], options)
        if not isinstance(results, list) or len(results) != len(names):
            raise Fatal(f"reply is not array of {len(names)} elements: {ovs_json(results)}")
        tables: ovsdb_file.Rows = {}
        for name, result in zip(names, results):
            rows = result.get("rows") if isinstance(result, dict) else None
            if not isinstance(rows, list):
                raise Fatal(f'{name} table reply is not an object with a "rows" member array: '
                            f"{ovs_json(result)}")
            tables[name] = dict(_backup_row(name, row) for row in rows)
        bar.next_phase(f"backup of {database}: writing", len(names))
        out = sys.stdout.buffer
        out.write(ovsdb_file.compose_record(schema.to_json()))
        out.write(ovsdb_file.compose_record(ovsdb_file.transaction_record(
            tables, BACKUP_COMMENT, int(time.time() * 1000))))
        out.flush()
        bar.advance(len(names))
    return ""


def _backup_row(table: str, row: Any) -> tuple[str, dict[str, Any]]:
    """(uuid, the other columns) of one selected row."""
    if not isinstance(row, dict):
        raise Fatal(f"{table} table reply row is not an object: {ovs_json(row)}")
    columns = dict(row)
    uuid = columns.pop("_uuid", None)
    if uuid is None:
        raise Fatal(f"{table} table reply row lacks _uuid member: {ovs_json(row)}")
    if not (isinstance(uuid, list) and len(uuid) == 2 and uuid[0] == "uuid"
            and isinstance(uuid[1], str) and UUID_RE.match(uuid[1])):
        raise Fatal(f"{table} table reply row has a bad _uuid: {ovs_json(uuid)}")
    return uuid[1].lower(), columns


class _CountingReader:
    """stdin, advancing a progress bar by the bytes read."""

    def __init__(self, stream: Any, bar: progress.Bar) -> None:
        self._stream = stream
        self._bar = bar

    def readline(self) -> bytes:
        data: bytes = self._stream.readline()
        self._bar.advance(len(data))
        return data

    def read(self, size: int) -> bytes:
        data: bytes = self._stream.read(size)
        self._bar.advance(len(data))
        return data


RESTORE_ATTEMPTS = 5  # times the database may change under a restore before giving up


def do_restore(conn: SyncConnection, database: str, args: list[str],
               options: Options) -> Output:
    """Replace the database's contents by a backup on stdin, in one transaction."""
    if os.isatty(sys.stdin.fileno()):
        raise Fatal("not reading backup from a terminal; please redirect stdin from a file")
    info = os.fstat(sys.stdin.fileno())
    size = info.st_size if stat.S_ISREG(info.st_mode) else None
    with progress.bar("restore: reading the backup", size, options.quiet) as bar:
        try:
            backup_schema, rows = backups.read_backup(
                _CountingReader(sys.stdin.buffer, bar), "/dev/stdin")
        except ovsdb_file.FileError as e:
            raise Fatal(str(e)) from None
        schema = fetch_schema(conn, database, options).schema
        _check_backup_schema(backup_schema, schema, options)
        missing = [name for name in rows if name not in schema.tables]
        if missing:
            raise Fatal(f'{database} has no table "{missing[0]}", which the backup has')
        bar.next_phase(f"restore of {database}: writing")
        _restore(conn, database, schema, rows, options)
    return ""


def _check_backup_schema(backup: DbSchema, online: DbSchema, options: Options) -> None:
    if backup.to_json() == online.to_json():
        return
    if backup.version != online.version:
        problem = (f'backup schema has version "{backup.version}" but database schema has '
                   f'version "{online.version}"')
    else:
        problem = (f"backup schema and database schema are both version {backup.version} "
                   "but still differ")
    if not options.force:
        raise Fatal(f'{problem} (use --force to override differences, or "{PROGRAM} convert" '
                    "to change the schema)")


def _restore(conn: SyncConnection, database: str, schema: DbSchema, rows: ovsdb_file.Rows,
             options: Options) -> None:
    """Keep the backup's UUIDs if the server allows it (``restore``), else as ovsdb-client."""
    tables = list(rows)
    for _attempt in range(RESTORE_ATTEMPTS):
        selected = call(conn, "transact", [database, *restore.current_rows_query(schema, tables)],
                        options)
        check_transaction_reply(selected)
        try:
            current = restore.parse_current(tables, selected)
        except ValueError as e:
            raise Fatal(str(e)) from None
        why_not = restore.immutable_conflict(schema, rows, current)
        if why_not is not None:
            break
        ops = restore.keep_uuid_ops(schema, rows, current)
        result = call(conn, "transact", [database, *ops], options)
        if isinstance(result, list) and any(
                isinstance(r, dict) and r.get("error") == "timed out" for r in result[:len(tables)]):
            continue  # another client changed the rows since they were read: again
        why_not = restore.rejects_uuid_member(ops, result if isinstance(result, list) else [])
        if why_not is None:
            check_transaction_reply(result)
            return
        break
    else:
        raise Fatal(f"{database} kept changing during the restore ({RESTORE_ATTEMPTS} attempts);"
                    " nothing was restored")
    emit("", [f"row UUIDs not kept: {why_not}; the restored rows have new UUIDs"])
    check_transaction_reply(call(conn, "transact", [database, *restore.new_uuid_ops(rows)],
                                 options))


# --- echo, bulk transact ------------------------------------------------------------

def do_echo(conn: SyncConnection, database: str, args: list[str], options: Options) -> Output:
    """``echo [SERVER] [ARG...]``: the server's answer to an echo request, as JSON."""
    return json_output(call(conn, "echo", list(args), options), options)


def read_transactions(path: str) -> list[Any]:
    """The transactions in FILE ("-": stdin): JSON arrays one after another."""
    from ..protocol.framer import Framer

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise Fatal(f"{path}: {e.strerror or e}") from None
    framer = Framer(max_size=len(data) + 1)
    try:
        transactions = framer.feed(data)
    except ProtocolError as e:
        raise Fatal(f"{path}: {e}") from None
    if framer.buffered:
        raise Fatal(f"{path}: the last transaction is incomplete")
    return [ovs_parsed(t) for t in transactions]


def transact_file(args: list[str], path: str, options: Options) -> Output:
    """``transact [SERVER] @FILE``: every transaction in FILE, in order, one result line each."""
    transactions = read_transactions(path)
    for i, transaction in enumerate(transactions, 1):
        if not (isinstance(transaction, list) and transaction
                and isinstance(transaction[0], str)):
            raise Fatal(f"{path}: transaction {i} is not a valid OVSDB query")
    if not transactions:
        return ""
    conn, _, _ = open_rpc(args, 1, False, options)
    with conn, progress.bar(f"transact {path}", len(transactions), options.quiet) as bar:
        for transaction in transactions:
            emit(json_output(call(conn, "transact", transaction, options), options))
            bar.advance()
    return ""


# --- the command table -------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    min_args: int
    max_args: int
    handler: Handler | None = None  # run after connecting (and finding the database)
    need_db: bool = True
    standalone: Callable[[list[str], Options], Output] | None = None  # connects itself
    follows: bool = False  # prints as it goes and never ends by itself


UNLIMITED_ARGS = sys.maxsize
COMMANDS = {
    "list-dbs": Command(0, 0, do_list_dbs, need_db=False),
    "get-schema": Command(0, 0, do_get_schema),
    "get-schema-version": Command(0, 0, do_get_schema_version),
    "get-schema-cksum": Command(0, 0, do_get_schema_cksum),
    "list-tables": Command(0, 0, do_list_tables),
    "list-columns": Command(0, 1, do_list_columns),
    "transact": Command(1, 2, standalone=do_transact),
    "query": Command(1, 2, standalone=do_query),
    "dump": Command(0, UNLIMITED_ARGS, do_dump),
    "wait": Command(2, 3, standalone=do_wait),
    "convert": Command(1, 2, standalone=do_convert),
    "needs-conversion": Command(1, 2, standalone=do_needs_conversion),
    "backup": Command(0, 0, do_backup),
    "restore": Command(0, 0, do_restore),
    "echo": Command(0, UNLIMITED_ARGS, do_echo, need_db=False),
    "monitor": Command(1, UNLIMITED_ARGS, do_monitor, follows=True),
    "monitor-cond": Command(2, 3, do_monitor_cond, follows=True),
    "monitor-cond-since": Command(2, 4, do_monitor_cond_since, follows=True),
    "lock": Command(1, 1, lock_command("lock"), need_db=False, follows=True),
    "steal": Command(1, 1, lock_command("steal"), need_db=False, follows=True),
    "unlock": Command(1, 1, lock_command("unlock"), need_db=False, follows=True),
}


# --- appctl: a server's control socket, as ovs-appctl drives it --------------------

DEFAULT_CONTROL_SOCKET = "var/tegadb-server.ctl"
APPCTL_EXIT_SERVER_ERROR = 2  # ovs-appctl's status when the command failed


def appctl(argv: list[str]) -> int:
    """``appctl [-t PATH] [-T SECS] COMMAND [ARG...]``: run one command on a
    control socket, print its text; the exit status is ovs-appctl's."""
    try:
        # Options only before COMMAND: its arguments may begin with "-".
        pairs, args = getopt.getopt(argv, "t:T:", ["target=", "timeout="])
    except getopt.GetoptError as e:
        raise Fatal(getopt_message(e)) from None
    target, timeout = DEFAULT_CONTROL_SOCKET, None
    for option, value in pairs:
        if option in ("-t", "--target"):
            target = value
        else:
            timeout = parse_timeout(value)
    if not args:
        raise Fatal("at least one non-option argument is required (use --help for help)")
    ok, text = control_request(target, args[0], args[1:], timeout)
    if ok:
        write_out(text)
        return 0
    sys.stdout.flush()
    sys.stderr.write(text)
    print(f"{PROGRAM}: {target}: server returned an error", file=sys.stderr)
    return APPCTL_EXIT_SERVER_ERROR


def control_request(path: str, command: str, args: list[str],
                    timeout: float | None) -> tuple[bool, str]:
    """Send one command to the control socket at ``path``: (succeeded, text)."""
    import socket

    from ..protocol.framer import Framer

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps({"method": command, "params": args, "id": 0}).encode())
            framer = Framer()
            while True:
                data = sock.recv(65536)
                if not data:
                    raise Fatal(f"{path}: connection closed before the reply")
                replies = framer.feed(data)
                if replies:
                    break
        except TimeoutError:
            raise Fatal(f"{path}: no reply within {timeout:g} s") from None
        except OSError as e:
            raise Fatal(f'cannot connect to "{path}" ({e.strerror or e})') from None
    reply = replies[0]
    if not isinstance(reply, dict):
        raise Fatal(f"{path}: the reply is not a JSON-RPC reply: {reply!r}")
    if reply.get("error") is not None:
        return False, str(reply["error"])
    return True, str(reply.get("result") or "")


# --- options -------------------------------------------------------------------

USAGE = f"""\
{PROGRAM}: tegadb (OVSDB) command-line client
usage: {PROGRAM} [OPTIONS] COMMAND [ARG...]

Valid commands are:

  list-dbs [SERVER]
    list databases available on SERVER

  get-schema [SERVER] [DATABASE]
    retrieve schema for DATABASE from SERVER

  get-schema-version [SERVER] [DATABASE]
    retrieve schema for DATABASE from SERVER and report only its
    version number on stdout

  get-schema-cksum [SERVER] [DATABASE]
    retrieve schema for DATABASE from SERVER and report only its
    checksum on stdout

  list-tables [SERVER] [DATABASE]
    list tables for DATABASE on SERVER

  list-columns [SERVER] [DATABASE] [TABLE]
    list columns in TABLE (or all tables) in DATABASE on SERVER

  transact [SERVER] TRANSACTION
    run TRANSACTION (params for "transact" request) on SERVER
    and print the results as JSON on stdout

  transact [SERVER] @FILE
    run each transaction in FILE ("-": stdin; JSON arrays one after
    another) on SERVER in order, printing one result line for each

  query [SERVER] TRANSACTION
    run TRANSACTION (params for "transact" request) on SERVER,
    as read-only, and print the results as JSON on stdout

  monitor [SERVER] [DATABASE] TABLE [COLUMN,...]...
    monitor contents of COLUMNs in TABLE in DATABASE on SERVER.
    COLUMNs may include !initial, !insert, !delete, !modify
    to avoid seeing the specified kinds of changes.

  monitor-cond [SERVER] [DATABASE] CONDITION TABLE [COLUMN,...]...
    monitor contents that match CONDITION of COLUMNs in TABLE in
    DATABASE on SERVER.
    COLUMNs may include !initial, !insert, !delete, !modify
    to avoid seeing the specified kinds of changes.

  monitor-cond-since [SERVER] [DATABASE] [LASTID] CONDITION TABLE [COLUMN,...]...
    monitor contents that match CONDITION of COLUMNs in TABLE in
    DATABASE on SERVER, since change after LASTID (a transaction id
    printed as "last_id" by an earlier run; tegadb-server resumes from
    it when it still has that transaction).  If omitted, it defaults
    to an all-zero uuid: everything, as "initial" rows.
    Other arguments are the same as in monitor-cond.

  convert [SERVER] SCHEMA
    convert database on SERVER named in SCHEMA to SCHEMA.

  needs-conversion [SERVER] SCHEMA
    tests whether SCHEMA's db on SERVER needs conversion.

  monitor [SERVER] [DATABASE] ALL
    monitor all changes to all columns in all tables

  wait [SERVER] DATABASE STATE
    wait until DATABASE reaches STATE ("added" or "connected" or "removed")
    on SERVER, connecting again as long as it takes.

  dump [SERVER] [DATABASE] [TABLE [COLUMN]...]
    dump contents of DATABASE on SERVER to stdout

  backup [SERVER] [DATABASE] > SNAPSHOT
    dump database contents in the form of a database file
    (ovsdb-server's standalone format, which ovsdb-tool reads)

  [--force] restore [SERVER] [DATABASE] < SNAPSHOT
    restore database contents from a database file, in one transaction,
    keeping the rows' UUIDs where the server allows it

  echo [SERVER] [ARG...]
    send an "echo" request with ARGs and print the reply as JSON

  lock [SERVER] LOCK
    create or wait for LOCK in SERVER

  steal [SERVER] LOCK
    steal LOCK from SERVER

  unlock [SERVER] LOCK
    unlock LOCK from SERVER

  appctl [-t PATH] [-T SECS] COMMAND [ARG...]
    run COMMAND on the control socket PATH of a tegadb-server (default
    {DEFAULT_CONTROL_SOCKET}), as ovs-appctl -t PATH does; its options
    come right after "appctl".  "appctl list-commands" lists them.

The default SERVER is $TEGADB_REMOTE, else {DEFAULT_REMOTE}.
The default DATABASE is Open_vSwitch, or the only one served.

Active SERVER connection methods:
  tcp:IP:PORT             PORT at remote IP
  ssl:IP:PORT             SSL PORT at remote IP
  unix:FILE               Unix domain socket named FILE
PKI configuration (required to use SSL):
  -p, --private-key=FILE  file with private key
  -c, --certificate=FILE  file with certificate for private key
  -C, --ca-cert=FILE      file with peer CA certificate

Output formatting options:
  -f, --format=FORMAT         set output formatting to FORMAT
                              ("table", "list", "html", "csv", or "json")
  -d, --data=FORMAT           set table cell output formatting to
                              FORMAT ("string", "bare", or "json")
  --no-headings               omit table heading row
  --pretty                    pretty-print JSON in output
  --bare                      equivalent to "--format=list --data=bare --no-headings"
  --timestamp                 timestamp "monitor" output
  --quiet                     no progress bar (there is one only on a terminal)

Other options:
  --force                     with "restore", restore even if the schemas differ
  -t, --timeout=SECS          give up after SECS seconds without an answer
                              (for monitor, lock and wait: after SECS seconds)
  -h, --help                  display this help message
  -V, --version               display version information

Exit status: 0 done, 1 error (one line on stderr), 2 appctl: the command
failed; Ctrl-C ends it by SIGINT (130 in a shell).  See docs/cli.md.
"""

LONG_OPTIONS = ["format=", "data=", "no-headings", "pretty", "bare", "timestamp", "timeout=",
                "private-key=", "certificate=", "ca-cert=", "help", "version", "force", "quiet"]


def parse_options(argv: list[str]) -> tuple[Options, list[str]]:
    """GNU-style options, allowed anywhere on the line (as ovsdb-client's getopt)."""
    try:
        pairs, args = getopt.gnu_getopt(argv, "f:d:t:p:c:C:hV", LONG_OPTIONS)
    except getopt.GetoptError as e:
        raise Fatal(getopt_message(e)) from None
    options = Options()
    style = options.style
    for option, value in pairs:
        if option in ("-f", "--format"):
            if value not in formats.FORMATS:
                raise Fatal(f'unknown output format "{value}"')
            style = replace(style, format=value)
        elif option in ("-d", "--data"):
            if value not in formats.DATA_FORMATS:
                raise Fatal(f'unknown data format "{value}"')
            style = replace(style, data=value)
        elif option == "--no-headings":
            style = replace(style, headings=False)
        elif option == "--pretty":
            style = replace(style, pretty=True)
        elif option == "--bare":
            style = replace(style, format="list", data="bare", headings=False)
        elif option == "--timestamp":
            options.timestamp = True
        elif option == "--force":
            options.force = True
        elif option == "--quiet":
            options.quiet = True
        elif option in ("-t", "--timeout"):
            options.timeout = parse_timeout(value)
        elif option in ("-p", "--private-key"):
            options.private_key = value
        elif option in ("-c", "--certificate"):
            options.certificate = value
        elif option in ("-C", "--ca-cert"):
            options.ca_cert = value
        elif option in ("-h", "--help"):
            raise SystemExit(write_out(USAGE))
        elif option in ("-V", "--version"):
            from .. import __version__
            raise SystemExit(write_out(f"{PROGRAM} (tegadb) {__version__}\n"))
    options.style = style
    return options, args


def getopt_message(error: getopt.GetoptError) -> str:
    """GNU getopt's wording, as ovsdb-client prints it."""
    name, msg = error.opt, error.msg
    long = len(name) > 1
    if msg.endswith("not recognized"):
        return f"unrecognized option '--{name}'" if long else f"invalid option -- '{name}'"
    if msg.endswith("requires argument"):
        return (f"option '--{name}' requires an argument" if long
                else f"option requires an argument -- '{name}'")
    if msg.endswith("must not have an argument"):
        return f"option '--{name}' doesn't allow an argument"
    return msg


def parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise Fatal(f"value {value} on -t or --timeout is invalid")
    return seconds


def write_out(text: str) -> int:
    # Bytes, not the locale's encoding: data may hold any Unicode text.
    sys.stdout.buffer.write(text.encode())
    sys.stdout.flush()
    return 0


def run(argv: list[str]) -> Output:
    options, args = parse_options(argv)
    if not args:
        raise Fatal("missing command name; use --help for help")
    name, args = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise Fatal(f"unknown command '{name}'; use --help for help")
    if command.standalone is not None:
        _check_arg_count(name, command, args)
        return command.standalone(args, options)
    assert command.handler is not None
    if command.follows:
        options = _follow_signals(options)
    conn, database, args = open_rpc(args, command.min_args, command.need_db, options)
    with conn:
        _check_arg_count(name, command, args)
        return command.handler(conn, database or "", args, options)


def _follow_signals(options: Options) -> Options:
    """For a command that runs until stopped: die of SIGINT (Ctrl-C) quietly, as
    ovsdb-client does, and let -t/--timeout bound the whole run (it ends by
    SIGALRM, as ovsdb-client's does) rather than each wait for the server."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if options.timeout is None:
        return options
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, options.timeout)
    return replace(options, timeout=None)


def _check_arg_count(name: str, command: Command, args: list[str]) -> None:
    if not command.min_args <= len(args) <= command.max_args:
        raise Fatal(f"invalid syntax for '{name}' (use --help for help)")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (``exits`` says which)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["appctl"]:
        return reporting_errors(lambda: appctl(argv[1:]))
    return reporting_errors(lambda: write_out(run(argv)))


def reporting_errors(command: Callable[[], int]) -> int:
    """Run ``command``; a Fatal error or a closed stdout ends it with status 1
    (also for the commands of client_main.py)."""
    try:
        return command()
    except Fatal as e:
        sys.stdout.flush()
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return exits.stdout_gone(PROGRAM)
    except KeyboardInterrupt:
        exits.die_of_interrupt()


if __name__ == "__main__":
    sys.exit(main())

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
program is killed.
"""

from __future__ import annotations

import getopt
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..client.connection import Notification, ProtocolError, RPCError, SyncConnection
from ..core import conditions
from ..core.atoms import UUID_RE
from ..core.errors import OVSDBError, syntax_error, syntax_text
from ..core.hashorder import ovs_member_order
from ..core.jsonfmt import ovs_json, ovs_parsed
from ..core.schema import IMPLICIT_COLUMNS, DbSchema, TableSchema
from ..core.types import ZERO_UUID
from . import formats
from .formats import JsonCell, Monitored, Style, Table

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
    server: str = ""  # the SERVER connected to, as messages name it (set by open_rpc)


# --- connecting ----------------------------------------------------------------

def default_remote() -> str:
    return os.environ.get("TEGADB_REMOTE") or DEFAULT_REMOTE


def looks_like_remote(arg: str) -> bool:
    """ovsdb-client's test: a letter first, and a colon somewhere."""
    return arg[:1].isascii() and arg[:1].isalpha() and ":" in arg


def connect(remote: str, options: Options) -> SyncConnection:
    try:
        context = None
        if remote.startswith("ssl:"):
            if not (options.private_key and options.certificate and options.ca_cert):
                raise Fatal("SSL remotes need --private-key, --certificate and --ca-cert")
            from ..protocol.tls import tls_context  # ssl costs start-up time: only for ssl:

            context = tls_context(options.private_key, options.certificate, options.ca_cert,
                                  server=False)
        return SyncConnection.open(remote, context, options.timeout)
    except OSError as e:  # before ValueError: ssl's verification error is both
        raise Fatal(f'failed to connect to "{remote}" ({e.strerror or e})') from None
    except ValueError as e:
        raise Fatal(str(e)) from None


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
        _write(text)


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


def condition_error(error: OVSDBError) -> str:
    """An error as OVS's ``ovsdb_error_to_string`` words it."""
    syntax = error.quoted_syntax
    if syntax is None and error.has_syntax:
        syntax = syntax_text(error.syntax)
    return ("" if syntax is None else f'syntax "{syntax}": ') + str(error)


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
        raise Fatal(condition_error(e)) from None
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
        raise Fatal(_getopt_message(e)) from None
    target, timeout = DEFAULT_CONTROL_SOCKET, None
    for option, value in pairs:
        if option in ("-t", "--target"):
            target = value
        else:
            timeout = _timeout(value)
    if not args:
        raise Fatal("at least one non-option argument is required (use --help for help)")
    ok, text = control_request(target, args[0], args[1:], timeout)
    if ok:
        _write(text)
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

  monitor [SERVER] [DATABASE] ALL
    monitor all changes to all columns in all tables

  dump [SERVER] [DATABASE] [TABLE [COLUMN]...]
    dump contents of DATABASE on SERVER to stdout

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

Other options:
  -t, --timeout=SECS          give up after SECS seconds without an answer
  -h, --help                  display this help message
  -V, --version               display version information
"""

LONG_OPTIONS = ["format=", "data=", "no-headings", "pretty", "bare", "timestamp", "timeout=",
                "private-key=", "certificate=", "ca-cert=", "help", "version"]


def parse_options(argv: list[str]) -> tuple[Options, list[str]]:
    """GNU-style options, allowed anywhere on the line (as ovsdb-client's getopt)."""
    try:
        pairs, args = getopt.gnu_getopt(argv, "f:d:t:p:c:C:hV", LONG_OPTIONS)
    except getopt.GetoptError as e:
        raise Fatal(_getopt_message(e)) from None
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
        elif option in ("-t", "--timeout"):
            options.timeout = _timeout(value)
        elif option in ("-p", "--private-key"):
            options.private_key = value
        elif option in ("-c", "--certificate"):
            options.certificate = value
        elif option in ("-C", "--ca-cert"):
            options.ca_cert = value
        elif option in ("-h", "--help"):
            raise SystemExit(_write(USAGE))
        elif option in ("-V", "--version"):
            from .. import __version__
            raise SystemExit(_write(f"{PROGRAM} (tegadb) {__version__}\n"))
    options.style = style
    return options, args


def _getopt_message(error: getopt.GetoptError) -> str:
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


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise Fatal(f"value {value} on -t or --timeout is invalid")
    return seconds


def _write(text: str) -> int:
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
    """Run one command; returns the exit status (0, or 1 after an error)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["appctl"]:
        return reporting_errors(lambda: appctl(argv[1:]))
    return reporting_errors(lambda: _write(run(argv)))


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
        # The reader has gone (`| head`).  Point stdout at /dev/null so that
        # Python does not fail again flushing it at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"{PROGRAM}: write to stdout failed", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

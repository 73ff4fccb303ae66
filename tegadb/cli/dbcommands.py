"""ovs-vsctl's database commands, for any schema: list, find, get, set, add,
remove, clear, create, destroy, wait-until (and comment).

``tegadb-client [OPTIONS] [CMD-OPTIONS] COMMAND ARG... [-- [CMD-OPTIONS] COMMAND ARG...]...``

The conventions are those of "Database Commands" in ovs-vsctl(8), and the
output and error messages are ovs-vsctl's (lib/db-ctl-base.c), so that for
the Open_vSwitch schema ``tegadb-client --db=unix:S list Bridge`` prints what
``ovs-vsctl --no-wait --db=unix:S list Bridge`` prints
(tests/integration/test_cli_dbcommands.py compares them).  Differences:
the server is ``--db`` (default ``$TEGADB_REMOTE``, then tegadb-client's
local socket); the database is the one served that has the tables named
(else ``--database=NAME`` says which); records are named by the first
column of the table's first index, as the schema says (ovs-vsctl has its
own list for the Open_vSwitch tables, and names a few of them through
another table, a Controller by its bridge's name, which here takes the
UUID); errors suggest the closest name; and there is no ovs-vswitchd to
wait for (``--no-wait`` is accepted and changes nothing).

How a run goes, as ovs-vsctl's: the commands run in order on a local copy
of the tables they name (one ``monitor_cond_since`` of all their columns);
reads see the writes of earlier commands; then one transaction carries
every change, with a ``wait`` on the ``_version`` of each existing row
changed, so that a row changed meanwhile by someone else makes the whole
run start again on fresh data.  ``wait-until`` also starts the run again,
at each change, until it holds.  Nothing is printed before the
transaction commits.

Exit status: 0 success; 1 any error (message on stderr, nothing on stdout);
Ctrl-C (say in ``wait-until``) kills it quietly, as ovs-vsctl (130 in a shell).
"""

from __future__ import annotations

import contextlib
import getopt
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..client.connection import ProtocolError, RPCError, SyncConnection
from ..core import values
from ..core.atoms import UUID_RE
from ..core.hashorder import ovs_member_order
from ..core.ids import new_uuid
from ..core.jsonfmt import ovs_json
from ..core.schema import ColumnSchema, DbSchema, TableSchema
from ..core.types import UNLIMITED, UUID_TYPE, ZERO_UUID, BaseType, Type
from . import formats
from .dbrecords import (
    NotFound,
    Row,
    Snapshot,
    best_match,
    get_column,
    get_table,
    name_column,
)
from .formats import JsonCell, Style, Table
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
    parse_timeout,
    write_out,
)
from .valuesyntax import Symbols, ValueSyntaxError, parse_atom, parse_datum, parse_token

RELATIONAL_OPERATORS = ("=", "!=", "<", ">", "<=", ">=",
                        "{=}", "{!=}", "{<}", "{>}", "{<=}", "{>=}", "{in}", "{not-in}")


class CommandError(Exception):
    """A command that cannot run as written: ovs-vsctl's ``ctl_fatal`` message."""


# --- the command line ----------------------------------------------------------

@dataclass(frozen=True)
class Syntax:
    """One command's arguments and options, as OVS's ``ctl_command_syntax``."""

    min_args: int
    max_args: int
    arguments: str  # for --help
    options: str  # "--a,--b=": the options it takes ("=": with a value)
    run: Callable[[Context, Invocation], None]


@dataclass
class Invocation:
    """One command of the line: its name, arguments (after the name) and options."""

    name: str
    args: list[str]
    options: dict[str, str | None]
    table: TableSchema | None = None  # the table it names (args[0]), once resolved


@dataclass
class Settings:
    """The global options."""

    remote: str = ""
    database: str | None = None
    style: Style = field(default_factory=lambda: Style(format="list"))
    oneline: bool = False
    client: Options = field(default_factory=Options)


SHORT_OPTIONS = "f:d:t:p:c:C:hV"
GLOBAL_OPTIONS = ["db=", "database=", "timeout=", "format=", "data=", "no-headings", "pretty",
                  "bare", "oneline", "no-wait", "private-key=", "certificate=", "ca-cert=",
                  "help", "version"]
# Options of the first command may come among the global ones, as in ovs-vsctl.
COMMAND_OPTIONS = ["if-exists", "columns=", "id=", "all"]


# Options no ovsdb-client command takes: a line with one is for this module.
OWN_OPTIONS = {"--db", "--database", "--oneline", "--no-wait", "--if-exists", "--columns",
               "--id", "--all"}


def command_word(argv: list[str]) -> tuple[int | None, bool]:
    """Where the first word after the global options is (None if there is
    none, or the options do not parse here), and whether the options include
    one only the database commands take."""
    try:
        pairs, args = getopt.getopt(argv, SHORT_OPTIONS, GLOBAL_OPTIONS + COMMAND_OPTIONS)
    except getopt.GetoptError:
        return None, False
    own_options = any(o in OWN_OPTIONS for o, _ in pairs)
    return (len(argv) - len(args) if args else None), own_options


def owns(argv: list[str]) -> bool:
    """Whether ``argv`` is a line of database commands: its first word after
    the global options names one, or it has an option only they take."""
    index, own_options = command_word(argv)
    return (index is not None and argv[index] in COMMANDS) or own_options


def parse_command_line(argv: list[str]) -> tuple[Settings, list[Invocation]]:
    try:
        pairs, args = getopt.getopt(argv, SHORT_OPTIONS, GLOBAL_OPTIONS + COMMAND_OPTIONS)
    except getopt.GetoptError as e:
        raise Fatal(getopt_message(e)) from None
    if "--help" in args:  # also after the command name: "list --help"
        raise SystemExit(write_out(USAGE))
    settings = Settings(remote=default_remote())
    first_options: dict[str, str | None] = {}
    for option, value in pairs:
        if option[2:] + "=" in COMMAND_OPTIONS:
            first_options[option] = value
        elif option[2:] in COMMAND_OPTIONS:
            first_options[option] = None
        else:
            _global_option(settings, option, value)
    invocations = []
    words: list[str] = []
    for word in [*args, "--"]:
        if word != "--":
            words.append(word)
        elif words:
            invocations.append(_parse_invocation(words, first_options))
            first_options, words = {}, []
        elif first_options:
            raise Fatal("missing command name (use --help for help)")
    if not invocations:
        raise Fatal("missing command name (use --help for help)")
    return settings, invocations


def _global_option(settings: Settings, option: str, value: str) -> None:
    style = settings.style
    if option == "--db":
        settings.remote = value
    elif option == "--database":
        settings.database = value
    elif option in ("-f", "--format"):
        if value not in formats.FORMATS:
            raise Fatal(f'unknown output format "{value}"')
        settings.style = replace(style, format=value)
    elif option in ("-d", "--data"):
        if value not in formats.DATA_FORMATS:
            raise Fatal(f'unknown data format "{value}"')
        settings.style = replace(style, data=value)
    elif option == "--no-headings":
        settings.style = replace(style, headings=False)
    elif option == "--pretty":
        settings.style = replace(style, pretty=True)
    elif option == "--bare":
        settings.style = replace(style, format="list", data="bare", headings=False)
    elif option == "--oneline":
        settings.oneline = True
    elif option in ("-t", "--timeout"):
        settings.client.timeout = parse_timeout(value)
    elif option in ("-p", "--private-key"):
        settings.client.private_key = value
    elif option in ("-c", "--certificate"):
        settings.client.certificate = value
    elif option in ("-C", "--ca-cert"):
        settings.client.ca_cert = value
    elif option in ("-h", "--help"):
        raise SystemExit(write_out(USAGE))
    elif option in ("-V", "--version"):
        from .. import __version__
        raise SystemExit(write_out(f"{PROGRAM} (tegadb) {__version__}\n"))
    # --no-wait: there is no ovs-vswitchd to wait for.


def _parse_invocation(words: list[str], options: dict[str, str | None]) -> Invocation:
    """OVS's ``parse_command``: ``[--OPTION[=VALUE]]... NAME ARG...``."""
    options = dict(options)
    i = 0
    while i < len(words) and words[i].startswith("-"):
        key, equals, value = words[i].partition("=")
        if key in options:
            raise Fatal(f"'{words[i]}' option specified multiple times")
        options[key] = value if equals else None
        i += 1
    if i == len(words):
        raise Fatal("missing command name (use --help for help)")
    name, args = words[i], words[i + 1:]
    syntax = COMMANDS.get(name)
    if syntax is None:
        raise Fatal(f"unknown command '{name}'; use --help for help")
    allowed = {o.rstrip("="): o.endswith("=") for o in syntax.options.split(",") if o}
    for option, argument in options.items():
        if option not in allowed:
            raise Fatal(f"'{name}' command has no '{option}' option")
        if allowed[option] and argument is None:
            raise Fatal(f"missing argument to '{option}' option on '{name}' command")
        if not allowed[option] and argument is not None:
            raise Fatal(f"'{option}' option on '{name}' does not accept an argument")
    if len(args) < syntax.min_args:
        raise Fatal(f"'{name}' command requires at least {syntax.min_args} arguments")
    if len(args) > syntax.max_args:
        note = (" (note that options must precede command names and follow a \"--\" argument)"
                if any(a.startswith("-") for a in args) else "")
        raise Fatal(f"'{name}' command takes at most {syntax.max_args} arguments{note}")
    return Invocation(name, args, options)


# --- running the commands --------------------------------------------------------

@dataclass
class Context:
    """One run of all the commands on a working copy of the snapshot."""

    db: Snapshot  # a copy: the commands change it as they go
    symbols: Symbols = field(default_factory=Symbols)
    outputs: list[str | Table] = field(default_factory=list)
    created: dict[int, str] = field(default_factory=dict)  # command index -> new row's uuid
    try_again: bool = False

    def get_row(self, table: TableSchema, record: str, must_exist: bool) -> Row | None:
        return self.db.get_row(table, record, must_exist)

    def table_rows(self, table: TableSchema) -> list[Row]:
        return list(self.db.table_rows(table.name))

    def datum(self, type_: Type, text: str) -> values.Datum:
        try:
            return parse_datum(type_, text, self.symbols)
        except ValueSyntaxError as e:
            raise CommandError(str(e)) from None

    def atom(self, base: BaseType, text: str) -> Any:
        try:
            return parse_atom(base, text, self.symbols)
        except ValueSyntaxError as e:
            raise CommandError(str(e)) from None


def warn(message: str) -> None:
    """A doubtful command: said on stderr at once (ovs-vsctl logs a warning)."""
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)


def _must_exist(invocation: Invocation) -> bool:
    return "--if-exists" not in invocation.options


def _table(invocation: Invocation) -> TableSchema:
    assert invocation.table is not None
    return invocation.table


def parse_column_key_value(arg: str, table: TableSchema, operators: tuple[str, ...] | None
                           ) -> tuple[ColumnSchema, str | None, str | None, str | None]:
    """OVS's ``parse_column_key_value``: ``COLUMN[:KEY]`` then, if ``operators``
    is given, one of them and a value.  Returns (column, key, operator, value)."""
    try:
        column_name, i = parse_token(arg)
        if not column_name:
            raise CommandError(f"{arg}: missing column name")
        column = get_column(table, column_name)
        key = None
        if arg[i:i + 1] == ":":
            key, i = parse_token(arg, i + 1)
    except ValueSyntaxError as e:
        raise CommandError(str(e)) from None
    if operators is None:
        if i < len(arg):
            raise CommandError(f'{arg}: trailing garbage "{arg[i:]}" in argument')
        return column, key, None, None
    best = max((op for op in operators if arg.startswith(op, i) and len(arg) > i + len(op)),
               key=len, default=None)
    if best is None:
        raise CommandError(_missing_operator(arg, operators))
    return column, key, best, arg[i + len(best):]


def _missing_operator(arg: str, operators: tuple[str, ...]) -> str:
    quoted = [f'"{op}"' for op in operators]
    if len(quoted) == 1:
        listed = quoted[0]
    elif len(quoted) == 2:
        listed = " or ".join(quoted)
    else:
        listed = ", ".join(quoted[:-1]) + ", or " + quoted[-1]
    return f"{arg}: argument does not end in {listed} followed by a value."


def _check_mutable(row: Row, column: ColumnSchema, table: TableSchema) -> None:
    if not column.mutable and row.version is not None:
        raise CommandError(f"cannot modify read-only column {column.name} in table {table.name}")


def _write_column(row: Row, column: ColumnSchema, datum: values.Datum) -> None:
    row.data[column.name] = datum
    row.written.add(column.name)


def set_column(ctx: Context, table: TableSchema, row: Row, arg: str) -> None:
    """``COLUMN[:KEY]=VALUE``, as set and create take it."""
    column, key, _, value = parse_column_key_value(arg, table, ("=",))
    assert value is not None
    _check_mutable(row, column, table)
    type_ = column.type
    if key is None:
        _write_column(row, column, ctx.datum(type_, value))
        return
    if type_.value is None:
        raise CommandError(f"cannot specify key to set for non-map column {column.name}")
    pair = (ctx.atom(type_.key, key), ctx.atom(type_.value, value))
    kept = [p for p in row.data[column.name] if p[0] != pair[0]]
    _write_column(row, column, tuple(sorted([*kept, pair])))


def _compare(type_: Type, a: values.Datum, b: values.Datum) -> int:
    """OVS's ``ovsdb_datum_compare_3way``: size first, then keys, then values."""
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    if type_.is_map:
        a_parts = ([k for k, _ in a], [v for _, v in a])
        b_parts = ([k for k, _ in b], [v for _, v in b])
        return (a_parts > b_parts) - (a_parts < b_parts)
    return (a > b) - (a < b)


def _holds(type_: Type, have: values.Datum, operator: str, want: values.Datum) -> bool:
    if operator in ("=", "{=}"):
        return _compare(type_, have, want) == 0
    if operator in ("!=", "{!=}"):
        return _compare(type_, have, want) != 0
    if operator in ("<", ">", "<=", ">="):
        order = _compare(type_, have, want)
        return {"<": order < 0, ">": order > 0, "<=": order <= 0, ">=": order >= 0}[operator]
    if operator == "{<}":
        return len(want) > len(have) and set(have) <= set(want)
    if operator == "{>}":
        return len(have) > len(want) and set(want) <= set(have)
    if operator in ("{<=}", "{in}"):
        return set(have) <= set(want)
    if operator == "{>=}":
        return set(want) <= set(have)
    return set(have).isdisjoint(want)  # {not-in}


def check_condition(ctx: Context, table: TableSchema, row: Row, arg: str) -> bool:
    """``COLUMN[:KEY]OP VALUE`` (find, wait-until) on ``row``."""
    column, key, operator, text = parse_column_key_value(arg, table, RELATIONAL_OPERATORS)
    assert operator is not None and text is not None
    have = row.data[column.name]
    if key is None:
        want = ctx.datum(column.type, text)
        return _holds(Type(column.type.key, column.type.value, column.type.n_min, UNLIMITED),
                      have, operator, want)
    if column.type.value is None:
        raise CommandError(f"cannot specify key to check for non-map column {column.name}")
    key_atom = ctx.atom(column.type.key, key)
    value_type = Type(column.type.value, None, column.type.n_min, UNLIMITED)
    want = ctx.datum(value_type, text)
    found = [v for k, v in have if k == key_atom]
    if not found and not operator.startswith("{"):
        return False
    return _holds(value_type, tuple(found), operator, want)


def cmd_get(ctx: Context, inv: Invocation) -> None:
    table, must_exist = _table(inv), _must_exist(inv)
    symbol_name = inv.options.get("--id")
    if symbol_name is not None and not must_exist:
        raise CommandError("--if-exists and --id may not be specified together")
    row = ctx.get_row(table, inv.args[1], must_exist)
    if row is None:
        return
    if symbol_name is not None:
        new = symbol_name not in ctx.symbols
        symbol = _create_symbol(ctx, symbol_name)
        if not new:
            raise CommandError(f'row id "{symbol_name}" specified on "get" command was used '
                               "before it was defined")
        # The row exists: no reference is needed to keep it.
        symbol.uuid, symbol.strong_ref = row.uuid, True
    out = []
    for arg in inv.args[2:]:
        if arg.lower() in ("_uuid", "-uuid"):
            out.append(row.uuid + "\n")
            continue
        column, key, _, _ = parse_column_key_value(arg, table, None)
        datum = row.data[column.name]
        if key is None:
            out.append(formats.datum_to_string(column.type, datum) + "\n")
            continue
        if column.type.value is None:
            raise CommandError(f"cannot specify key to get for non-map column {column.name}")
        key_atom = ctx.atom(column.type.key, key)
        found = [v for k, v in datum if k == key_atom]
        if found:
            out.append(values.atom_to_string(column.type.value.type, found[0]))
        elif must_exist:
            raise CommandError(f'no key "{key}" in {table.name} record "{inv.args[1]}" '
                               f"column {column.name}")
        out.append("\n")
    ctx.outputs.append("".join(out))


def _create_symbol(ctx: Context, name: str) -> Any:
    try:
        return ctx.symbols.create(name)
    except ValueSyntaxError as e:
        raise CommandError(str(e)) from None


def _list_columns(inv: Invocation, table: TableSchema) -> list[ColumnSchema | None]:
    """``--columns=A,B``: None stands for ``_uuid``; default: _uuid, then all, sorted."""
    given = inv.options.get("--columns")
    if given is None:
        return [None, *(table.columns[name] for name in sorted(table.user_columns))]
    names = given.replace(",", " ").split()
    if not names:
        raise CommandError("must specify at least one column name")
    return [None if name.lower() == "_uuid" else get_column(table, name) for name in names]


def _list_table(columns: list[ColumnSchema | None], rows: list[Row]) -> Table:
    table = Table(["_uuid" if c is None else c.name for c in columns])
    for row in rows:
        table.rows.append([JsonCell(["uuid", row.uuid], UUID_TYPE) if c is None
                           else JsonCell(values.to_json(c.type, row.data[c.name]), c.type)
                           for c in columns])
    return table


def cmd_list(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    columns = _list_columns(inv, table)
    if len(inv.args) > 1:
        found = [ctx.get_row(table, record, _must_exist(inv)) for record in inv.args[1:]]
        rows = [row for row in found if row is not None]
    else:
        rows = ctx.table_rows(table)
    ctx.outputs.append(_list_table(columns, rows))


def cmd_find(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    columns = _list_columns(inv, table)
    rows = [row for row in ctx.table_rows(table)
            if all(check_condition(ctx, table, row, arg) for arg in inv.args[1:])]
    ctx.outputs.append(_list_table(columns, rows))


def cmd_set(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    row = ctx.get_row(table, inv.args[1], _must_exist(inv))
    if row is not None:
        for arg in inv.args[2:]:
            set_column(ctx, table, row, arg)


def _size_error(verb: str, n: int, type_: Type, column: str, table: str) -> CommandError:
    what = "values" if type_.value is None else "pairs"
    bound = "maximum" if verb == "add" else "minimum"
    limit = type_.n_max if verb == "add" else type_.n_min
    return CommandError(f'"{verb}" operation would put {n} {what} in column {column} of table '
                        f"{table} but the {bound} number is {limit}")


def _row_and_column(ctx: Context, inv: Invocation) -> tuple[TableSchema, Row | None, ColumnSchema]:
    table = _table(inv)
    column = get_column(table, inv.args[2])
    row = ctx.get_row(table, inv.args[1], _must_exist(inv))
    if row is not None:
        _check_mutable(row, column, table)
    return table, row, column


def cmd_add(ctx: Context, inv: Invocation) -> None:
    table, row, column = _row_and_column(ctx, inv)
    if row is None:
        return
    type_ = column.type
    elements = dict.fromkeys(row.data[column.name])
    keys = {e[0] for e in elements} if type_.is_map else set(elements)
    for arg in inv.args[3:]:
        for element in ctx.datum(type_.relaxed(1, UNLIMITED), arg):
            key = element[0] if type_.is_map else element
            if key not in keys:  # a map keeps the value it has
                keys.add(key)
                elements[element] = None
    if len(elements) > type_.n_max:
        raise _size_error("add", len(elements), type_, column.name, table.name)
    _write_column(row, column, tuple(sorted(elements)))


def cmd_remove(ctx: Context, inv: Invocation) -> None:
    table, row, column = _row_and_column(ctx, inv)
    if row is None:
        return
    type_ = column.type
    remaining = list(row.data[column.name])
    for arg in inv.args[3:]:
        removal_type = type_.relaxed(1, UNLIMITED)
        try:
            removed = set(parse_datum(removal_type, arg, ctx.symbols))
            remaining = [e for e in remaining if e not in removed]
        except ValueSyntaxError:
            if not type_.is_map:
                raise
            assert removal_type.value is not None
            keys = set(ctx.datum(Type(removal_type.key, None, 1, UNLIMITED), arg))
            remaining = [e for e in remaining if e[0] not in keys]
    if len(remaining) < type_.n_min:
        raise _size_error("remove", len(remaining), type_, column.name, table.name)
    _write_column(row, column, tuple(remaining))


def cmd_clear(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    row = ctx.get_row(table, inv.args[1], _must_exist(inv))
    if row is None:
        return
    for name in inv.args[2:]:
        column = get_column(table, name)
        _check_mutable(row, column, table)
        if column.type.n_min > 0:
            raise CommandError(f'"clear" operation cannot be applied to column {column.name} '
                               f"of table {table.name}, which is not allowed to be empty")
        _write_column(row, column, ())


def cmd_create(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    row_id = inv.options.get("--id")
    uuid, chosen = new_uuid(), False
    if row_id is not None and UUID_RE.match(row_id):
        uuid, chosen = row_id.lower(), True  # --id=UUID: the new row's own UUID
    elif row_id is not None:
        symbol = _create_symbol(ctx, row_id)
        symbol.strong_ref |= table.is_root  # a root row stays without references
        uuid = symbol.uuid
    row = Row(uuid, {name: values.default(c.type) for name, c in table.user_columns.items()},
              uuid_chosen=chosen)
    ctx.db.rows[table.name][row.uuid] = row
    for arg in inv.args[1:]:
        set_column(ctx, table, row, arg)
    ctx.created[len(ctx.outputs)] = row.uuid
    ctx.outputs.append("")  # the row's uuid, once the server has given it


def cmd_destroy(ctx: Context, inv: Invocation) -> None:
    table, must_exist = _table(inv), _must_exist(inv)
    delete_all = "--all" in inv.options
    if delete_all and len(inv.args) > 1:
        raise CommandError("--all and records argument should not be specified together")
    if delete_all and not must_exist:
        raise CommandError("--all and --if-exists should not be specified together")
    if not delete_all and len(inv.args) == 1:
        warn("either --all or records argument should be specified")
        return
    if delete_all:
        rows = ctx.table_rows(table)
    else:
        found = [ctx.get_row(table, record, must_exist) for record in inv.args[1:]]
        rows = [row for row in found if row is not None]
    for row in rows:
        row.deleted = True


def cmd_wait_until(ctx: Context, inv: Invocation) -> None:
    table = _table(inv)
    row = ctx.get_row(table, inv.args[1], False)
    if row is None or not all(check_condition(ctx, table, row, arg) for arg in inv.args[2:]):
        ctx.try_again = True


def cmd_comment(ctx: Context, inv: Invocation) -> None:
    """Its words go into the transaction's comment, with the rest of the line."""


COMMANDS: dict[str, Syntax] = {
    "comment": Syntax(0, UNLIMITED, "[ARG]...", "", cmd_comment),
    "get": Syntax(2, UNLIMITED, "TABLE RECORD [COLUMN[:KEY]]...", "--if-exists,--id=", cmd_get),
    "list": Syntax(1, UNLIMITED, "TABLE [RECORD]...", "--if-exists,--columns=", cmd_list),
    "find": Syntax(1, UNLIMITED, "TABLE [COLUMN[:KEY]=VALUE]...", "--columns=", cmd_find),
    "set": Syntax(3, UNLIMITED, "TABLE RECORD COLUMN[:KEY]=VALUE...", "--if-exists", cmd_set),
    "add": Syntax(4, UNLIMITED, "TABLE RECORD COLUMN [KEY=]VALUE...", "--if-exists", cmd_add),
    "remove": Syntax(4, UNLIMITED, "TABLE RECORD COLUMN KEY|VALUE|KEY=VALUE...", "--if-exists",
                     cmd_remove),
    "clear": Syntax(3, UNLIMITED, "TABLE RECORD COLUMN...", "--if-exists", cmd_clear),
    "create": Syntax(2, UNLIMITED, "TABLE COLUMN[:KEY]=VALUE...", "--id=", cmd_create),
    "destroy": Syntax(1, UNLIMITED, "TABLE [RECORD]...", "--if-exists,--all", cmd_destroy),
    "wait-until": Syntax(2, UNLIMITED, "TABLE RECORD [COLUMN[:KEY]=VALUE]...", "",
                         cmd_wait_until),
}


# --- the transaction ----------------------------------------------------------------

def _named(json: Any, names: dict[str, str]) -> Any:
    """``json`` with each ``["uuid", U]`` of a row inserted here as ``["named-uuid", N]``."""
    if isinstance(json, list):
        if len(json) == 2 and json[0] == "uuid" and json[1] in names:
            return ["named-uuid", names[json[1]]]
        return [_named(item, names) for item in json]
    return json


def transaction_ops(ctx: Context, snapshot: Snapshot, comment: str
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The ops that make the changes; also where each inserted row's result is.

    Inserts come first: a row inserted with its own UUID (``--id=UUID``)
    must be declared before the ops that refer to it by name.
    """
    new_rows = {row.uuid: row for rows in ctx.db.rows.values() for row in rows.values()
                if row.version is None}
    names = {uuid: f"row{i}" for i, uuid in enumerate(new_rows)}
    inserts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    insert_index: dict[str, int] = {}  # (the inserts come first in the ops)
    for table_name, rows in ctx.db.rows.items():
        table = ctx.db.schema.tables[table_name]
        for row in rows.values():
            where = [["_uuid", "==", ["uuid", row.uuid]]]
            if row.version is None:
                if row.deleted:
                    continue
                insert = {"op": "insert", "table": table_name, "uuid-name": names[row.uuid],
                          "row": _row_json(table, row, row.written, names)}
                if row.uuid_chosen:
                    insert["uuid"] = row.uuid
                insert_index[row.uuid] = len(inserts)
                inserts.append(insert)
            elif row.deleted:
                # As OVS's IDL: a row of a non-root table goes when nothing refers
                # to it, which the server sees to; deleting it would fail while
                # references remain.
                if table.is_root:
                    changes.append({"op": "delete", "table": table_name, "where": where})
            else:
                before = snapshot.rows[table_name][row.uuid].data
                changed = {c for c in row.written if row.data[c] != before[c]}
                if not changed:
                    continue
                changes.append({"op": "wait", "timeout": 0, "table": table_name, "where": where,
                                "columns": ["_version"], "until": "==",
                                "rows": [{"_version": ["uuid", row.version]}]})
                changes.append({"op": "update", "table": table_name, "where": where,
                                "row": _row_json(table, row, changed, names)})
    ops = inserts + changes
    if ops:
        ops.append({"op": "comment", "comment": comment})
    return ops, insert_index


def _row_json(table: TableSchema, row: Row, columns: set[str], names: dict[str, str]
              ) -> dict[str, Any]:
    return {c: _named(values.to_json(table.columns[c].type, row.data[c]), names)
            for c in sorted(columns)}


class TryAgain(Exception):
    """The rows changed under the transaction: run the commands again on fresh data."""


def commit(conn: SyncConnection, database: str, ops: list[dict[str, Any]],
           options: Options) -> list[Any]:
    results = call(conn, "transact", [database, *ops], options)
    if not isinstance(results, list):
        raise Fatal(f"transaction error: {ovs_json(results)}")
    for i, result in enumerate(results):
        if isinstance(result, dict) and "error" in result:
            if i < len(ops) and ops[i]["op"] == "wait" and result["error"] == "timed out":
                raise TryAgain
            raise Fatal(f"transaction error: {ovs_json(result)}")
    return results


# --- the whole run ---------------------------------------------------------------------

def choose_database(conn: SyncConnection, wanted: str | None, options: Options,
                    tables: Iterable[str] = ()) -> str:
    """``--database``; else the only database served that has ``tables``;
    else Open_vSwitch if served."""
    dbs = list_dbs(conn, options)
    if wanted is not None:
        if wanted not in dbs:
            raise Fatal(f'{options.server}: no database "{wanted}" (served: {", ".join(dbs)})')
        return wanted
    candidates = [db for db in dbs if not db.startswith("_")]
    named = set(tables)
    if len(candidates) > 1 and named:
        having = [db for db in candidates
                  if all(best_match(fetch_schema(conn, db, options).schema.tables, table)
                         for table in named)]
        if not having:
            raise Fatal(f"{options.server}: no database served ({', '.join(candidates)}) has "
                        + ("table " if len(named) == 1 else "tables ")
                        + ", ".join(sorted(named)))
        candidates = having
    if len(candidates) > 1 and "Open_vSwitch" in candidates:
        return "Open_vSwitch"
    if len(candidates) != 1:
        raise Fatal(f"{options.server} serves {len(candidates)} databases "
                    f"({', '.join(candidates)}) with "
                    + ("those tables" if named else "tables")
                    + ": choose one with --database=NAME")
    return candidates[0]


def run(argv: list[str]) -> str:
    """Run a line of database commands; returns what it prints."""
    settings, invocations = parse_command_line(argv)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C (in wait-until): die quietly, as ovs-vsctl
    options = settings.client
    if options.timeout is not None:  # bounds the whole run, as ovs-vsctl's --timeout
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, options.timeout)
        options.timeout = None
    conn = connect(settings.remote, options)
    options.server = settings.remote
    with conn:
        named = [inv.args[0] for inv in invocations if inv.args and inv.name != "comment"]
        database = choose_database(conn, settings.database, options, named)
        schema = fetch_schema(conn, database, options).schema
        for inv in invocations:
            if inv.args and inv.name != "comment":
                with errors_are_fatal():
                    inv.table = get_table(schema, inv.args[0])
                if inv.name == "create" and "--id" not in inv.options and not inv.table.is_root:
                    warn(f'applying "create" command to table {inv.table.name} without --id '
                         "option will have no effect")
        snapshot = Snapshot(schema, idl_columns(schema, invocations))
        reply = call(conn, "monitor_cond_since",
                     [database, None, snapshot.monitor_requests(), ZERO_UUID], options)
        if not (isinstance(reply, list) and len(reply) == 3):
            raise Fatal(f"{settings.remote}: monitor_cond_since reply is not an array of 3 "
                        f"elements: {ovs_json(reply)}")
        snapshot.apply(reply[2])
        comment = f"{PROGRAM}: {shlex.join(argv)}"
        while True:
            ctx = Context(snapshot.copy())
            for inv in invocations:
                with errors_are_fatal():
                    COMMANDS[inv.name].run(ctx, inv)
                if ctx.try_again:
                    break
            if not ctx.try_again:
                _check_symbols(ctx)
                ops, inserted = transaction_ops(ctx, snapshot, comment)
                try:
                    results = commit(conn, database, ops, options) if ops else []
                except TryAgain:
                    ctx.try_again = True
                else:
                    return _output(ctx, settings, results, inserted)
            _catch_up(conn, snapshot, options)


def idl_columns(schema: DbSchema, invocations: list[Invocation]) -> dict[str, set[str]]:
    """The tables the commands name, each with the columns ovs-vsctl's IDL
    would read for them (its commands' "prerequisites"): the name column,
    and the columns the arguments name (all of them for list and find)."""
    read: dict[str, set[str]] = {}
    if schema.name == "Open_vSwitch":
        # ovs-vsctl always reads this table (no columns): its place among the
        # tables of an update changes the order the IDL reads the others in.
        read["Open_vSwitch"] = set()
    for inv in invocations:
        table = inv.table
        if table is None:
            continue
        columns = read.setdefault(table.name, set())
        names = name_column(table)
        if names is not None:
            columns.add(names.name)
        if inv.name in ("list", "find"):
            given = inv.options.get("--columns")
            words = table.user_columns if given is None else given.replace(",", " ").split()
            columns |= _columns_named(table, words)
        first = {"get": 2, "find": 1, "set": 2, "wait-until": 2, "add": 2, "remove": 2,
                 "clear": 2}.get(inv.name)
        if first is not None:
            last = first + 1 if inv.name in ("add", "remove") else len(inv.args)
            columns |= _columns_named(table, inv.args[first:last])
    return read


def _columns_named(table: TableSchema, words: Iterable[str]) -> set[str]:
    """The columns ``COLUMN[:KEY][OP VALUE]`` words name (errors are left for later)."""
    found = set()
    for word in words:
        try:
            found.add(get_column(table, parse_token(word)[0]).name)
        except (NotFound, ValueSyntaxError):
            continue
    return found


@contextlib.contextmanager
def errors_are_fatal() -> Iterator[None]:
    """A name not found or a command that cannot run ends the run (exit 1)."""
    try:
        yield
    except (NotFound, CommandError, ValueSyntaxError) as e:
        raise Fatal(str(e)) from None


def _check_symbols(ctx: Context) -> None:
    for name in ovs_member_order(ctx.symbols):
        symbol = ctx.symbols[name]
        if not symbol.created:
            raise Fatal(f'row id "{name}" is referenced but never created (e.g. with '
                        f'"-- --id={name} create ...")')
        if not symbol.strong_ref:
            warn(f'row id "{name}" was created but '
                + ("only a weak reference" if symbol.weak_ref else "no reference")
                + " to it was inserted, so it will not actually appear in the database")


def _catch_up(conn: SyncConnection, snapshot: Snapshot, options: Options) -> None:
    """Wait for the monitor's next update (taking any already here) and apply them."""
    try:
        pending = [conn.wait_notification()]
        pending += conn.notifications
        conn.notifications.clear()
    except (OSError, ProtocolError, RPCError) as e:
        raise Fatal(f"{options.server}: receive failed ({e})") from None
    for note in pending:
        if note.method == "update3" and isinstance(note.params, list) and len(note.params) == 3:
            snapshot.apply(note.params[2])


def _output(ctx: Context, settings: Settings, results: list[Any], inserted: dict[str, int]
            ) -> str:
    printer = formats.Printer(settings.style)
    out = []
    for i, output in enumerate(ctx.outputs):
        if i in ctx.created:
            uuid = ctx.created[i]
            if uuid in inserted:
                uuid = results[inserted[uuid]]["uuid"][1]
            output = uuid + "\n"
        if isinstance(output, Table):
            out.append(printer.render(output))
        elif settings.oneline:
            out.append(output.removesuffix("\n").replace("\\", "\\\\").replace("\n", "\\n") + "\n")
        else:
            out.append(output)
    return "".join(out)


USAGE_HINT = f"{PROGRAM} list --help"
COMMAND_LIST = ", ".join(name for name in COMMANDS if name != "comment")
USAGE = f"""\
{PROGRAM}: database commands, as in ovs-vsctl(8), for any schema
usage: {PROGRAM} [OPTIONS] [CMD-OPTIONS] COMMAND ARG... [-- [CMD-OPTIONS] COMMAND ARG...]...

Database commands:
""" + "".join(f"  {name} {syntax.arguments}\n" for name, syntax in COMMANDS.items()) + """
Records are named by UUID (or a prefix of 4 or more digits), by "." when the
table has one row, or by the value of the table's first index column.
Command options: --if-exists, --columns=COLUMN,..., --id=@NAME, --all.

Options:
  --db=SERVER          the server (default $TEGADB_REMOTE, else the local socket)
  --database=NAME      the database, when the server serves more than one
  -f, -d, --no-headings, --pretty, --bare: output, as for ovsdb-client
  --oneline            each command's output on one line
  -t, --timeout=SECS   give up after SECS seconds
Exit status: 0 success, 1 error.
"""

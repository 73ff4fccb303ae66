"""Shell completion for tegadb-client: commands, options, and the table,
column and record names of the server in use.

``tegadb-client completion bash|zsh`` prints a script to source (from
~/.bashrc: ``source <(tegadb-client completion bash)``; from ~/.zshrc the
same with zsh).  The script calls back ``tegadb-client --complete SHELL LINE``
with the line up to the cursor; that prints one candidate per line.  Names
from the schema come from the server the line names (``--db=``, a SERVER
argument, else ``$TEGADB_REMOTE`` or the local socket), asked with a short
timeout: a server that does not answer gives commands and options only.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from ..client.connection import ProtocolError, RPCError
from ..core.schema import DbSchema, TableSchema
from . import dbcommands
from .dbrecords import name_column
from .tegadb_client import (
    COMMANDS,
    LONG_OPTIONS,
    Fatal,
    Options,
    connect,
    default_remote,
    fetch_schema,
    list_dbs,
    looks_like_remote,
    write_out,
)

SCHEMA_TIMEOUT = 1.0  # seconds: completion must not hang on a silent server
SHORT_WITH_VALUE = {"-f", "-d", "-t", "-p", "-c", "-C"}
WATCH_OPTIONS = ["--where=", "--since=", "--format=", "--db=", "--database="]
# ovsdb-client commands whose arguments are [SERVER] [DATABASE] TABLE [COLUMN...]
TABLE_VERBS = {"list-columns", "dump", "monitor"}
# The database commands' arguments, by position after the name:
# "table", "record", "column" (a name) or "column=" (a name then a value).
ARGUMENTS = {
    "get": ["table", "record", "column"], "list": ["table", "record"],
    "find": ["table", "column="], "set": ["table", "record", "column="],
    "add": ["table", "record", "column", ""], "remove": ["table", "record", "column", ""],
    "clear": ["table", "record", "column"], "create": ["table", "column="],
    "destroy": ["table", "record"], "wait-until": ["table", "record", "column="],
}

BASH_SCRIPT = """\
# bash completion for tegadb-client: source <(tegadb-client completion bash)
_tegadb_client() {
    local IFS=$'\\n'
    COMPREPLY=($(tegadb-client --complete bash "${COMP_LINE:0:COMP_POINT}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then
        compopt -o nospace 2>/dev/null
    fi
}
complete -F _tegadb_client tegadb-client
"""

ZSH_SCRIPT = """\
# zsh completion for tegadb-client: source <(tegadb-client completion zsh)
_tegadb_client() {
    local -a reply
    reply=("${(@f)$(tegadb-client --complete zsh "$LBUFFER" 2>/dev/null)}")
    compadd -S '' -- ${(M)reply:#*=}
    compadd -- ${reply:#*=}
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit; }
compdef _tegadb_client tegadb-client
"""

SCRIPTS = {"bash": BASH_SCRIPT, "zsh": ZSH_SCRIPT}


def script(args: list[str]) -> int:
    """``completion bash|zsh``: the script to source."""
    if len(args) != 1 or args[0] not in SCRIPTS:
        raise Fatal("usage: tegadb-client completion bash|zsh")
    return write_out(SCRIPTS[args[0]])


def complete(args: list[str]) -> int:
    """``--complete SHELL LINE``: the candidates for the last word of LINE."""
    if len(args) != 2 or args[0] not in SCRIPTS:
        raise Fatal("usage: tegadb-client --complete bash|zsh LINE")
    shell, line = args
    words, current = split_line(line)
    found = [c for c in candidates(words[1:], current) if c.startswith(current)]
    if shell == "bash":
        # bash replaces only what follows the last "=" or ":" of the word.
        cut = max(current.rfind("="), current.rfind(":")) + 1
        found = [c[cut:] for c in found]
    return write_out("".join(c + "\n" for c in found))


def split_line(line: str) -> tuple[list[str], str]:
    """The words before the cursor's word, and that word (empty after a space)."""
    try:
        words = shlex.split(line)
    except ValueError:  # an unclosed quote: the word being typed
        words = line.split()
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], words[-1] if words else ""


class Server:
    """The schema names of the server a line names, fetched once if at all."""

    def __init__(self, remote: str, database: str | None) -> None:
        self.remote = remote
        self.database = database
        self._schemas: list[DbSchema] | None = None

    def schemas(self) -> list[DbSchema]:
        if self._schemas is None:
            self._schemas = self._fetch()
        return self._schemas

    def _fetch(self) -> list[DbSchema]:
        options = Options(timeout=SCHEMA_TIMEOUT)
        try:
            with connect(self.remote, options) as conn:
                names = [self.database] if self.database else [
                    db for db in list_dbs(conn, options) if not db.startswith("_")]
                return [fetch_schema(conn, name, options).schema for name in names]
        except (Fatal, OSError, RPCError, ProtocolError):
            return []

    def tables(self) -> list[str]:
        return sorted({name for schema in self.schemas() for name in schema.tables})

    def table(self, name: str) -> TableSchema | None:
        for schema in self.schemas():
            if name in schema.tables:
                return schema.tables[name]
        return None

    def columns(self, table_name: str) -> list[str]:
        table = self.table(table_name)
        return [] if table is None else sorted(table.user_columns)

    def records(self, table_name: str) -> list[str]:
        """The names of the table's rows (its first index column), if it has one."""
        table = self.table(table_name)
        column = None if table is None else name_column(table)
        if table is None or column is None or column.type.key.type != "string":
            return []
        options = Options(timeout=SCHEMA_TIMEOUT)
        select = {"op": "select", "table": table.name, "where": [], "columns": [column.name]}
        for schema in self.schemas():
            if schema.tables.get(table.name) is table:
                try:
                    with connect(self.remote, options) as conn:
                        result = conn.request("transact", [schema.name, select])
                except (Fatal, OSError, RPCError, ProtocolError):
                    return []
                return sorted(row[column.name] for row in result[0].get("rows", [])
                              if isinstance(row.get(column.name), str))
        return []


def candidates(words: list[str], current: str) -> Iterable[str]:
    """What may come as the next word after ``words`` (the program name left out)."""
    remote, database = default_remote(), None
    i = 0
    while i < len(words) and words[i].startswith("-"):
        option, _, value = words[i].partition("=")
        if option == "--db":
            remote = value
        elif option == "--database":
            database = value
        i += 2 if words[i] in SHORT_WITH_VALUE else 1
    if i >= len(words):
        if current.startswith("-"):
            return global_options()
        return sorted([*COMMANDS, *ARGUMENTS, "watch", "completion", "appctl"])
    command, args = words[i], words[i + 1:]
    if command in ARGUMENTS:
        return database_command(words[i:], current, Server(remote, database))
    if command == "watch":
        return watch_arguments(args, current, remote, database)
    if command in TABLE_VERBS:
        return verb_arguments(args, current, remote, database)
    if command == "completion" and not args:
        return list(SCRIPTS)
    return []


def global_options() -> list[str]:
    ovsdb_client = [f"--{o}" for o in LONG_OPTIONS]
    own = ["--db=", "--database=", "--oneline", "--if-exists", "--columns=", "--id=", "--all"]
    return sorted(set(ovsdb_client + own))


def database_command(words: list[str], current: str, server: Server) -> list[str]:
    """After ``--``, a new command; else the argument at the cursor's position."""
    start = max((n for n, w in enumerate(words) if w == "--"), default=-1) + 1
    segment = [w for w in words[start:] if not w.startswith("-")]
    if not segment:
        if current.startswith("-"):
            return ["--if-exists", "--columns=", "--id=", "--all"]
        return sorted(dbcommands.COMMANDS)
    command, args = segment[0], segment[1:]
    kinds = ARGUMENTS.get(command, [])
    if not kinds:
        return []
    kind = kinds[min(len(args), len(kinds) - 1)]
    if kind == "table":
        return server.tables()
    if kind == "record":
        return server.records(args[0])
    if kind == "column":
        return server.columns(args[0])
    if kind == "column=":
        return [c + "=" for c in server.columns(args[0])]
    return []


def watch_arguments(args: list[str], current: str, remote: str,
                    database: str | None) -> list[str]:
    if current.startswith("-"):
        return WATCH_OPTIONS
    positional = []
    for word in args:
        option, _, value = word.partition("=")
        if option == "--db":
            remote = value
        elif option == "--database":
            database = value
        elif not word.startswith("-"):
            positional.append(word)
    return _table_then_columns(positional, remote, database)


def verb_arguments(args: list[str], current: str, remote: str,
                   database: str | None) -> list[str]:
    positional = [w for w in args if not w.startswith("-")]
    return _table_then_columns(positional, remote, database)


def _table_then_columns(positional: list[str], remote: str, database: str | None) -> list[str]:
    """``[SERVER] [DATABASE] TABLE [COLUMN...]``: tables, then that table's columns."""
    if positional and looks_like_remote(positional[0]):
        remote, positional = positional[0], positional[1:]
    server = Server(remote, database)
    if positional and any(s.name == positional[0] for s in server.schemas()):
        server = Server(remote, positional[0])
        positional = positional[1:]
    if not positional:
        return server.tables()
    return server.columns(positional[0])

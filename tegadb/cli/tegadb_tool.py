"""tegadb-tool: offline work on database files: create, inspect, query, change,
check, repair, compact and convert them.

Where ovsdb-tool has a command of the same name it has the same arguments,
meaning and output (query, transact, db-name, db-version, db-cksum,
schema-name, schema-version, schema-cksum, needs-conversion, convert,
compact, show-log -m).  A command that reads or writes a file's data
refuses a file that a server holds (the server's lock on it): run it through
the server with tegadb-client instead.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import ujson

from ..core.errors import OVSDBError
from ..core.jsonfmt import ovs_json, ovs_parsed
from ..core.monitor import Monitor
from ..core.schema import DbSchema
from ..server import journal
from ..server.records import Header, Record
from ..server.service import DatabaseService, create_database_file
from ..server.storage import StorageError
from . import exits, formats, progress
from .schema_files import read_schema

PROGRAM = "tegadb-tool"
WRITER = PROGRAM  # the writer that `transact` records in the journal


class Fatal(Exception):
    """An error that ends the command: ``tegadb-tool: MESSAGE`` on stderr, exit 1."""


# --- files and schemas ----------------------------------------------------------

def refuse_if_served(path: str, instead: str) -> None:
    """Fatal if a server (or another writer) holds ``path``: its lock says so.

    A shared lock is enough to tell: the holder's lock is exclusive.  It is
    dropped at once; ``instead`` says what to run through the server.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise Fatal(f"{path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Fatal(f"{path}: in use by a server (or another tegadb-tool); stop it first,"
                    f" or run `tegadb-client {instead}` against the server") from None
    finally:
        os.close(fd)


def file_schema(path: str) -> DbSchema:
    """The schema in a database file's header."""
    journal_file = journal.Journal.open(path, read_only=True)
    journal_file.close()
    return DbSchema.from_json(journal_file.header.schema)


def schema_file(path: str) -> DbSchema:
    return read_schema(path)


def parse_transaction(text: str) -> list[Any]:
    """TXN as ovsdb-tool takes it: a JSON array, the database name first."""
    try:
        transaction = ujson.loads(text)
    except ValueError as e:
        raise Fatal(f'"{text}": {e}') from None
    if not (isinstance(transaction, list) and transaction and isinstance(transaction[0], str)):
        raise Fatal(f'"{text}": not a valid OVSDB transaction (a JSON array, the database'
                    " name first)")
    return list(ovs_parsed(transaction))


def _check_database(service: DatabaseService, transaction: list[Any]) -> list[Any]:
    if transaction[0] != service.name:
        raise Fatal(f'{service.storage.name} holds database "{service.name}",'
                    f' not "{transaction[0]}"')
    return transaction[1:]


# --- commands -------------------------------------------------------------------

def cmd_create(args: argparse.Namespace) -> None:
    if Path(args.dbfile).exists():
        raise Fatal(f"{args.dbfile}: file already exists")
    create_database_file(Path(args.dbfile), Path(args.schema), args.db_file_mode)


def cmd_db_name(args: argparse.Namespace) -> None:
    print(file_schema(args.dbfile).name)


def cmd_db_version(args: argparse.Namespace) -> None:
    print(file_schema(args.dbfile).version)


def cmd_db_cksum(args: argparse.Namespace) -> None:
    print(file_schema(args.dbfile).cksum)


def cmd_schema_name(args: argparse.Namespace) -> None:
    print(schema_file(args.schema).name)


def cmd_schema_version(args: argparse.Namespace) -> None:
    print(schema_file(args.schema).version)


def cmd_schema_cksum(args: argparse.Namespace) -> None:
    print(schema_file(args.schema).cksum)


def cmd_needs_conversion(args: argparse.Namespace) -> None:
    same = file_schema(args.dbfile).to_json() == schema_file(args.schema).to_json()
    print("no" if same else "yes")


class OfflineSession:
    """The client a transaction run by tegadb-tool has: no connection, no
    locks, no monitors; its commits record ``WRITER`` as their writer."""

    peer = WRITER
    closed = False
    dirty = False
    change_aware = False

    def __init__(self) -> None:
        self.monitors: dict[str, Monitor] = {}
        self.cleanups: list[Any] = []
        self.result: Any = None  # a write's results, given once its record is written

    def owns_lock(self, name: str) -> bool:
        return False

    def reply(self, request_id: Any, result: Any, dialect: int = 1) -> None:
        self.result = result

    def reply_error(self, request_id: Any, error: Any, dialect: int = 1) -> None:
        pass

    def notify(self, method_name: str, params: list[Any]) -> None:
        pass

    def flush_monitors(self, force: bool = False) -> None:
        pass

    def disconnect(self) -> None:
        pass


def cmd_query(args: argparse.Namespace) -> None:
    """Run TXN on the file's data in memory; nothing is written."""
    transaction = parse_transaction(args.txn)
    refuse_if_served(args.dbfile, "query")
    journal_file = journal.Journal.open(args.dbfile, read_only=True)
    try:
        service = DatabaseService.load(journal_file)
        outcome = service.database.transact(_check_database(service, transaction),
                                            OfflineSession())
        if outcome.results is None:
            raise Fatal(_WAITS_FOREVER)
        print(ovs_json(outcome.results))
    finally:
        journal_file.close()


_WAITS_FOREVER = ("the transaction waits for a change, which cannot happen in a file"
                  " no server holds: give its wait ops a timeout")


def cmd_transact(args: argparse.Namespace) -> None:
    """Run TXN and commit it to the file, as a server would (journal record included)."""
    transaction = parse_transaction(args.txn)
    refuse_if_served(args.dbfile, "transact")
    service = DatabaseService.open(Path(args.dbfile))
    try:
        ops = _check_database(service, transaction)
        session = OfflineSession()
        results = service.transact(session, 0, 1, ops)
        if results is None:
            service.flush()  # a write is answered once its record is written
            results = session.result
        if results is None:
            raise Fatal(_WAITS_FOREVER)
        print(ovs_json(results))
    finally:
        service.close()


def cmd_compact(args: argparse.Namespace) -> None:
    refuse_if_served(args.dbfile, "appctl ovsdb-server/compact")
    with progress.bar(f"compact {args.dbfile}: reading", None, args.quiet) as bar:
        service = DatabaseService.open(Path(args.dbfile))
        try:
            bar.next_phase(f"compact {args.dbfile}: writing")
            service.compact()
        finally:
            service.close()


def cmd_convert(args: argparse.Namespace) -> None:
    """Convert DBFILE to SCHEMA, in place or into a new file TARGET."""
    schema = schema_file(args.schema)
    if args.target is not None and os.path.lexists(args.target):
        raise Fatal(f"{args.target}: file already exists")
    refuse_if_served(args.dbfile, "convert")
    with progress.bar(f"convert {args.dbfile}: reading", None, args.quiet) as bar:
        service = DatabaseService.open(Path(args.dbfile))
        try:
            bar.next_phase(f"convert {args.dbfile}: converting")
            database = service.converted(schema)
            bar.next_phase(f"convert {args.dbfile}: writing")
            if args.target is None:
                service.replace_schema(schema, database)
                return
            # The new file gets the old one's permissions, as an in-place conversion keeps them.
            journal.create(args.target, Header(schema.to_json()),
                           os.stat(args.dbfile).st_mode & 0o777)
            target = DatabaseService.load(journal.Journal.open(args.target))
            target.replace_schema(schema, database, service.seq, service.last_txn)
            target.close()
        finally:
            service.close()


def cmd_show_log(args: argparse.Namespace) -> None:
    journal_file = journal.Journal.open(args.dbfile, read_only=True)
    try:
        schema = journal_file.header.schema
        print(f'header: database "{journal_file.header.name}", schema version'
              f' "{schema.get("version", "")}"')
        changes = RowChanges(DbSchema.from_json(schema), args.more)
        for record in journal_file.read():
            print(describe(record))
            if args.more:
                sys.stdout.write(changes.lines(record))
    finally:
        journal_file.close()


def describe(record: Record) -> str:
    """One line per record: sequence, id, date, who, comment, and what changed."""
    kind = "snapshot" if record.snapshot else "txn"
    parts = [f"#{record.seq} {kind} {record.txn}", f"date={record.date}"]
    if record.writer:
        parts.append(f"writer={record.writer}")
    if record.comment:
        parts.append(f"comment={ujson.dumps(record.comment, ensure_ascii=False)}")
    for table, rows in sorted(record.changes.items()):
        inserted = sum(1 for r in rows.values() if r is not None)
        deleted = len(rows) - inserted
        parts.append(f"{table}: {inserted} row(s) written, {deleted} deleted")
    return "  ".join(parts)


class RowChanges:
    """``show-log -m``: the rows each record changes, as ovsdb-tool shows them.

    A row is named by its ``name`` column where it has one (else by the
    first 8 digits of its UUID); ``-mm`` adds the columns' values.  A
    snapshot lists every row as inserted; one that converts the database
    changes the schema the values are read with.
    """

    def __init__(self, schema: DbSchema, verbosity: int) -> None:
        self.schema = schema
        self.verbosity = verbosity
        self.names: dict[str, str] = {}

    def lines(self, record: Record) -> str:
        if record.schema is not None:
            self.schema = DbSchema.from_json(record.schema)
        if record.snapshot:
            self.names.clear()
        out = []
        for table, rows in sorted(record.changes.items()):
            for uuid, row in sorted(rows.items()):
                out.append(self._row(table, uuid, row))
        return "".join(out)

    def _row(self, table: str, uuid: str, row: dict[str, Any] | None) -> str:
        old_name = self.names.get(uuid)
        new_name = ovs_json(row["name"]) if row is not None and "name" in row else None
        if old_name is None:
            head = (f"  table {table} insert row {new_name} ({uuid[:8]}):\n" if new_name
                    else f"  table {table} insert row {uuid[:8]}:\n")
        else:
            head = f"  table {table} row {old_name} ({uuid[:8]}):\n"
        if row is None:
            self.names.pop(uuid, None)
            return head + "    delete row\n"
        self.names[uuid] = new_name or old_name or uuid[:8]
        if self.verbosity < 2:
            return head
        # _version is the journal's own (ovsdb-server's files have none).
        return head + "".join(f"    {column}={self._value(table, column, value)}\n"
                              for column, value in row.items() if column != "_version")

    def _value(self, table: str, column: str, value: Any) -> str:
        table_schema = self.schema.tables.get(table)
        column_schema = table_schema.columns.get(column) if table_schema else None
        if column_schema is None:
            return ovs_json(value)
        return formats.cell_text(formats.JsonCell(value, column_schema.type), formats.Style())


def cmd_check(args: argparse.Namespace) -> int:
    report = journal.check(args.dbfile)
    for problem in report.problems:
        print(problem)
    if report.problems:
        return exits.EXIT_FAILURE
    # Replaying into memory checks every value against the schema too.
    DatabaseService.open(Path(args.dbfile)).close()
    if report.unsealed:
        print(f"{args.dbfile}: {report.unsealed} record(s) written before checksums;"
              " `tegadb-tool compact` rewrites them with checksums")
    print(f"{args.dbfile}: ok")
    return 0


def cmd_repair(args: argparse.Namespace) -> None:
    cut = journal.repair(args.dbfile)
    if cut is None:
        print(f"{args.dbfile}: no damaged record, nothing to repair")
    else:
        print(f"{args.dbfile}: removed {cut.removed} byte(s) from line {cut.line}"
              f" (offset {cut.offset}) on, the first damaged record and all after it;"
              f" the file as it was is saved in {cut.backup}")


# --- the command line -------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Bad usage is one line and status 1, as in ovsdb-tool (not argparse's 2)."""

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"argument COMMAND: invalid choice: '(.*?)'", message)
        if unknown:
            message = f"unknown command '{unknown.group(1)}'; use --help for help"
        else:
            message += " (use --help for help)"
        print(f"{PROGRAM}: {message}", file=sys.stderr)
        raise SystemExit(exits.EXIT_FAILURE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROGRAM, description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Exit status: 0 done, 1 error (one line on stderr);"
                     " Ctrl-C ends it by SIGINT (130 in the shell).  See docs/cli.md.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str,
                *arguments: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for argument in arguments:
            sub.add_argument(argument.lower(), metavar=argument)
        sub.set_defaults(handler=handler)
        return sub

    def quiet(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--quiet", action="store_true",
                         help="no progress bar (there is one only on a terminal)")

    create = command("create", cmd_create, "create DBFILE from SCHEMA", "DBFILE", "SCHEMA")
    create.add_argument("--db-file-mode", type=journal.file_mode,
                        default=journal.DEFAULT_FILE_MODE, metavar="MODE",
                        help="DBFILE's permissions, in octal, whatever the umask"
                        " (default: 0640); compaction keeps them")
    command("query", cmd_query, "run TXN (a transaction's params, as JSON) on DBFILE's data"
            " and print the results; nothing is written", "DBFILE", "TXN")
    command("transact", cmd_transact, "run TXN on DBFILE, commit it to the file and print"
            " the results", "DBFILE", "TXN")
    show_log = command("show-log", cmd_show_log, "print DBFILE's journal, one record per line",
                       "DBFILE")
    show_log.add_argument("-m", "--more", action="count", default=0,
                          help="also the rows each record changes; twice (-mm): their values")
    command("check", cmd_check, "check DBFILE's journal and contents", "DBFILE")
    command("repair", cmd_repair, "back up DBFILE, then cut it before its first damaged record",
            "DBFILE")
    quiet(command("compact", cmd_compact, "rewrite DBFILE as one snapshot", "DBFILE"))
    convert = command("convert", cmd_convert, "convert DBFILE to SCHEMA, in place or into a"
                      " new file TARGET", "DBFILE", "SCHEMA")
    convert.add_argument("target", metavar="TARGET", nargs="?")
    quiet(convert)
    command("needs-conversion", cmd_needs_conversion, "print \"yes\" if DBFILE's schema"
            " differs from SCHEMA, else \"no\"", "DBFILE", "SCHEMA")
    command("db-name", cmd_db_name, "print the database name in DBFILE", "DBFILE")
    command("db-version", cmd_db_version, "print the schema version in DBFILE", "DBFILE")
    command("db-cksum", cmd_db_cksum, "print the schema checksum in DBFILE", "DBFILE")
    command("schema-name", cmd_schema_name, "print the database name in SCHEMA", "SCHEMA")
    command("schema-version", cmd_schema_version, "print the version in SCHEMA", "SCHEMA")
    command("schema-cksum", cmd_schema_cksum, "print the checksum in SCHEMA", "SCHEMA")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is as ``exits`` says."""
    args = build_parser().parse_args(argv)
    try:
        status: int | None = args.handler(args)
        sys.stdout.flush()
        return status or 0
    except BrokenPipeError:  # before OSError, which it is
        return exits.stdout_gone(PROGRAM)
    except (Fatal, OSError, OVSDBError, StorageError, ValueError) as e:
        sys.stdout.flush()
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return exits.EXIT_FAILURE
    except KeyboardInterrupt:
        exits.die_of_interrupt()


if __name__ == "__main__":
    sys.exit(main())

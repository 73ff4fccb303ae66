"""tegadb-tool: offline work on database files (create, inspect, check, repair, compact)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import ujson

from ..core.errors import OVSDBError
from ..server import journal
from ..server.records import Record
from ..server.service import DatabaseService, create_database_file, read_schema_file
from ..server.storage import StorageError


def cmd_create(args: argparse.Namespace) -> int:
    if Path(args.dbfile).exists():
        return fail(f"{args.dbfile}: file already exists")
    create_database_file(Path(args.dbfile), Path(args.schema), args.db_file_mode)
    return 0


def cmd_show_log(args: argparse.Namespace) -> int:
    journal_file = journal.Journal.open(args.dbfile, read_only=True)
    try:
        schema = journal_file.header.schema
        print(f'header: database "{journal_file.header.name}", schema version'
              f' "{schema.get("version", "")}"')
        for record in journal_file.read():
            print(describe(record))
    finally:
        journal_file.close()
    return 0


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


def cmd_check(args: argparse.Namespace) -> int:
    report = journal.check(args.dbfile)
    for problem in report.problems:
        print(problem)
    if report.problems:
        return 1
    # Replaying into memory checks every value against the schema too.
    DatabaseService.open(Path(args.dbfile)).close()
    if report.unsealed:
        print(f"{args.dbfile}: {report.unsealed} record(s) written before checksums;"
              " `tegadb-tool compact` rewrites them with checksums")
    print(f"{args.dbfile}: ok")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    cut = journal.repair(args.dbfile)
    if cut is None:
        print(f"{args.dbfile}: no damaged record, nothing to repair")
    else:
        print(f"{args.dbfile}: removed {cut.removed} byte(s) from line {cut.line}"
              f" (offset {cut.offset}) on, the first damaged record and all after it;"
              f" the file as it was is saved in {cut.backup}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    service = DatabaseService.open(Path(args.dbfile))
    try:
        service.compact()
    finally:
        service.close()
    return 0


def cmd_db_name(args: argparse.Namespace) -> int:
    journal_file = journal.Journal.open(args.dbfile, read_only=True)
    journal_file.close()
    print(journal_file.header.name)
    return 0


def cmd_schema_name(args: argparse.Namespace) -> int:
    print(read_schema_file(Path(args.schema)).name)
    return 0


def fail(message: str) -> int:
    print(f"tegadb-tool: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tegadb-tool", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str,
                *arguments: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        for argument in arguments:
            sub.add_argument(argument)
        sub.set_defaults(handler=handler)
        return sub

    create = command("create", cmd_create, "create DBFILE from SCHEMA", "dbfile", "schema")
    create.add_argument("--db-file-mode", type=journal.file_mode, default=journal.DEFAULT_FILE_MODE,
                        metavar="MODE", help="DBFILE's permissions, in octal, whatever the"
                        " umask (default: 0640); compaction keeps them")
    command("show-log", cmd_show_log, "print DBFILE's journal, one record per line", "dbfile")
    command("check", cmd_check, "check DBFILE's journal and contents", "dbfile")
    command("repair", cmd_repair, "back up DBFILE, then cut it before its first damaged record", "dbfile")
    command("compact", cmd_compact, "rewrite DBFILE as one snapshot", "dbfile")
    command("db-name", cmd_db_name, "print the database name in DBFILE", "dbfile")
    command("schema-name", cmd_schema_name, "print the database name in SCHEMA", "schema")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except (OSError, OVSDBError, StorageError, ValueError) as e:
        return fail(str(e))


if __name__ == "__main__":
    sys.exit(main())

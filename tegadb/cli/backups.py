"""The files ``tegadb-client restore`` reads: ovsdb-server's standalone database
format (what ``backup`` writes, ``ovsdb_file``) or a tegadb database file (a
copy of a server's journal, ``server/records``), told apart by the first line.

A tegadb file's records replay as the server replays them: a snapshot
replaces every row, a transaction inserts, changes (whole column values)
and deletes rows, and a conversion's snapshot brings its schema.  A last
line cut short (a crash while writing it) is dropped, as the server drops
it; any other damage is an error naming the line.
"""

from __future__ import annotations

from typing import Any

import ujson

from ..core.errors import OVSDBError
from ..core.schema import DbSchema
from ..server.records import Header, Record, RecordError, unseal
from .ovsdb_file import ByteSource, FileError, Rows, read_database


def read_backup(stream: ByteSource, name: str) -> tuple[DbSchema, Rows]:
    """The schema and the rows of a database file of either kind."""
    first = stream.readline()
    if not first.startswith(b"{"):
        return read_database(stream, name, first)
    header = Header.from_json(_line_json(first, name, 1))
    schema_json = header.schema
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    number = 1
    for line in iter(stream.readline, b""):
        number += 1
        if not line.endswith(b"\n"):
            break  # cut short by a crash: the server drops it too
        try:
            record = Record.from_json(_line_json(line, name, number))
        except RecordError as e:
            raise FileError(f"{name}: line {number}: {e}") from None
        if record.schema is not None:
            schema_json = record.schema
        if record.snapshot:
            rows = {}
        for table, changes in record.changes.items():
            table_rows = rows.setdefault(table, {})
            for uuid, row in changes.items():
                if row is None:
                    table_rows.pop(uuid, None)
                else:
                    table_rows.setdefault(uuid, {}).update(
                        (column, value) for column, value in row.items() if column != "_version")
    try:
        schema = DbSchema.from_json(schema_json)
    except OVSDBError as e:
        raise FileError(f"{name}: the schema is not valid: {e}") from None
    unknown = [table for table in rows if table not in schema.tables]
    if unknown:
        raise FileError(f"{name}: rows of table {unknown[0]}, which the schema does not have")
    return schema, {table: rows.get(table, {}) for table in schema.tables}


def _line_json(line: bytes, name: str, number: int) -> Any:
    """A journal line's JSON, its checksum (if it has one) verified."""
    try:
        text = unseal(line)
        return ujson.loads(line if text is None else text)
    except (RecordError, ValueError) as e:
        raise FileError(f"{name}: line {number}: {e}") from None

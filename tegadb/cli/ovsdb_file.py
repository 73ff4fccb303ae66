"""ovsdb-server's standalone database file: what ``backup`` writes and ``restore`` reads.

The format (OVS ``ovsdb/log.c`` and ``ovsdb/file.c``): a sequence of records,
each a header line ``OVSDB JSON <length> <sha1>`` followed by ``length``
bytes of JSON text ending in a newline, whose SHA-1 is ``sha1`` (hex).  The
first record is the schema; every later one is a transaction
``{table: {uuid: row | null}, "_date": ms, "_comment": text, "_is_diff": true}``
where null deletes a row, a new uuid inserts one, and a known uuid changes the
columns given.  With ``_is_diff`` a changed set or map column holds the
difference (elements to add or remove), as ``values.apply_diff`` reads it.

A clustered database file (magic ``OVSDB CLUSTER``) is not this format:
reading one fails with a message saying so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, Protocol

from ..core import values
from ..core.errors import OVSDBError
from ..core.jsonfmt import ovs_json
from ..core.schema import DbSchema
from ..core.types import UNLIMITED

MAGIC = b"OVSDB JSON"
CLUSTER_MAGIC = b"OVSDB CLUSTER"
# Members of a transaction record that are not tables.
ANNOTATIONS = ("_date", "_comment", "_is_diff")

Rows = dict[str, dict[str, dict[str, Any]]]  # {table: {uuid: {column: OVSDB JSON}}}


class ByteSource(Protocol):
    """What the reader needs of a file: a binary stream's readline and read."""

    def readline(self) -> bytes: ...

    def read(self, size: int) -> bytes: ...


class FileError(ValueError):
    """A file that is not a readable standalone OVSDB database."""


def compose_record(record: dict[str, Any]) -> bytes:
    """One record as ovsdb-server and ovsdb-client write it: header line, JSON, newline."""
    data = (ovs_json(record) + "\n").encode()
    sha1 = hashlib.sha1(data).hexdigest()
    return MAGIC + f" {len(data)} {sha1}\n".encode() + data


def transaction_record(tables: Rows, comment: str, date_ms: int) -> dict[str, Any]:
    """A transaction record inserting ``tables``' rows (none is a diff: all are new)."""
    record: dict[str, Any] = {name: rows for name, rows in tables.items() if rows}
    record.update({"_comment": comment, "_is_diff": True, "_date": date_ms})
    return record


def read_records(stream: ByteSource, name: str, first: bytes = b"") -> Iterator[Any]:
    """The records of a standalone database file, each checked against its SHA-1.

    ``name`` says which file in error messages; ``first`` is the first
    record's header line if the caller has read it already.
    """
    offset = 0
    header = first
    while True:
        header = header or stream.readline()
        if not header:
            return
        where = f"{name}: record at offset {offset}"
        if header.startswith(CLUSTER_MAGIC):
            raise FileError(f"{name}: a clustered database file; only standalone files"
                            " (as `ovsdb-client backup` writes them) can be read")
        fields = header.split()
        if len(fields) != 4 or header[:len(MAGIC)] != MAGIC or not fields[2].isdigit():
            raise FileError(f"{where}: not an OVSDB file record header:"
                            f" {header[:60].decode(errors='replace')!r}")
        length = int(fields[2])
        data = stream.read(length)
        if len(data) != length:
            raise FileError(f"{where}: the file ends {length - len(data)} byte(s) short")
        if hashlib.sha1(data).hexdigest() != fields[3].decode(errors="replace"):
            raise FileError(f"{where}: SHA-1 does not match the record's contents")
        try:
            yield json.loads(data)
        except ValueError as e:
            raise FileError(f"{where}: not valid JSON ({e})") from None
        offset += len(header) + length
        header = b""


def read_database(stream: ByteSource, name: str, first: bytes = b"") -> tuple[DbSchema, Rows]:
    """The schema of a standalone database file and its rows after every transaction.

    Rows hold the columns the file gives (others have their default values).
    ``first`` is as for ``read_records``.
    """
    records = read_records(stream, name, first)
    schema_json = next(records, None)
    if schema_json is None:
        raise FileError(f"{name}: empty file, not an OVSDB database")
    try:
        schema = DbSchema.from_json(schema_json)
    except OVSDBError as e:
        raise FileError(f"{name}: the first record is not a valid schema: {e}") from None
    rows: Rows = {table: {} for table in schema.tables}
    for number, record in enumerate(records, 1):
        try:
            _apply(schema, rows, record)
        except (OVSDBError, TypeError, ValueError, AttributeError) as e:
            raise FileError(f"{name}: record {number}: {e}") from None
    return schema, rows


def _apply(schema: DbSchema, rows: Rows, record: Any) -> None:
    if not isinstance(record, dict):
        raise ValueError("a transaction record must be a JSON object")
    is_diff = record.get("_is_diff") is True
    for table_name, changes in record.items():
        if table_name in ANNOTATIONS:
            continue
        table = schema.tables.get(table_name)
        if table is None:
            raise ValueError(f"no table {table_name} in the schema")
        if not isinstance(changes, dict):
            raise ValueError(f"table {table_name}: changes must be a JSON object")
        table_rows = rows[table_name]
        for uuid, change in changes.items():
            if change is None:
                table_rows.pop(uuid, None)
                continue
            if not isinstance(change, dict):
                raise ValueError(f"row {uuid} in table {table_name} must be a JSON object")
            row = table_rows.get(uuid)
            if row is None:
                table_rows[uuid] = dict(change)
                continue
            for column_name, value in change.items():
                column = table.columns.get(column_name)
                if column is None:
                    raise ValueError(f"no column {column_name} in table {table_name}")
                if is_diff and column_name in row:
                    old = values.parse_unchecked(column.type, row[column_name])
                    # A diff may hold more elements than the column (adds and removes).
                    diff_type = (column.type.relaxed(0, UNLIMITED) if column.type.is_composite
                                 else column.type)
                    change_datum = values.parse_unchecked(diff_type, value)
                    value = values.to_json(column.type,
                                           values.apply_diff(column.type, old, change_datum))
                row[column_name] = value

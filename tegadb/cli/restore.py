"""The transaction ``tegadb-client restore`` sends: a database replaced by a backup.

ovsdb-client deletes every row and inserts the backup's rows with new
UUIDs.  tegadb-client keeps the backup's UUIDs where the server allows it,
so references held outside the database (other databases, controllers'
caches) stay valid:

- a row in both the database and the backup is updated in place (its
  mutable columns set to the backup's values or their defaults);
- a row only in the database is deleted;
- a row only in the backup is inserted with its own UUID (insert's "uuid"
  member, which ovsdb-server and tegadb both accept).

This needs the database's current UUIDs, read first (``current_rows_query``).
So that nothing changes between that read and the restore, the restore opens
with a ``wait`` per table (timeout 0) requiring the same set of UUIDs; if
another client changed them meanwhile the wait fails with "timed out" and
the caller reads again.

Two cases fall back to ovsdb-client's way (``new_uuid_ops``): a row whose
immutable columns differ between the database and the backup (it cannot be
updated, and a UUID cannot be deleted and inserted again in one
transaction), and a server that rejects insert's "uuid" member.
"""

from __future__ import annotations

from typing import Any

from ..core import values
from ..core.errors import OVSDBError
from ..core.schema import DbSchema, TableSchema
from .ovsdb_file import Rows

# {table: {uuid: {immutable column: OVSDB JSON}}}
Current = dict[str, dict[str, dict[str, Any]]]


def _immutable(table: TableSchema) -> list[str]:
    return [name for name, column in table.user_columns.items()
            if not column.mutable and column.persistent]


def current_rows_query(schema: DbSchema, tables: list[str]) -> list[dict[str, Any]]:
    """Select ops reading each table's UUIDs and immutable columns."""
    return [{"op": "select", "table": name, "where": [],
             "columns": ["_uuid", *_immutable(schema.tables[name])]} for name in tables]


def parse_current(tables: list[str], results: list[Any]) -> Current:
    """The replies of ``current_rows_query``; ValueError on a malformed one."""
    current: Current = {}
    for name, result in zip(tables, results):
        rows = result.get("rows") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"{name} table reply is not an object with a \"rows\" member array")
        current[name] = {}
        for row in rows:
            uuid = row.get("_uuid") if isinstance(row, dict) else None
            if not (isinstance(uuid, list) and len(uuid) == 2 and isinstance(uuid[1], str)):
                raise ValueError(f"{name} table reply row lacks a _uuid: {row!r}")
            current[name][uuid[1]] = {c: v for c, v in row.items() if c != "_uuid"}
    return current


def immutable_conflict(schema: DbSchema, backup: Rows, current: Current) -> str | None:
    """Why UUIDs cannot be kept (a row whose immutable columns differ), or None."""
    for name, rows in backup.items():
        table = schema.tables[name]
        for uuid, row in rows.items():
            now = current[name].get(uuid)
            if now is None:
                continue
            for column in _immutable(table):
                type_ = table.columns[column].type
                wanted = (values.parse_unchecked(type_, row[column]) if column in row
                          else values.default(type_))
                if values.parse_unchecked(type_, now[column]) != wanted:
                    return (f"row {uuid} of table {name} has another value in its"
                            f" immutable column {column}")
    return None


def keep_uuid_ops(schema: DbSchema, backup: Rows, current: Current) -> list[dict[str, Any]]:
    """The restore as updates, deletes and inserts that keep every UUID.

    Its first ``len(backup)`` ops are the waits that fail if the database's
    UUIDs are no longer ``current``.
    """
    ops: list[dict[str, Any]] = [
        {"op": "wait", "table": name, "timeout": 0, "where": [], "columns": ["_uuid"],
         "until": "==", "rows": [{"_uuid": ["uuid", uuid]} for uuid in current[name]]}
        for name in backup]
    for name, rows in backup.items():
        table = schema.tables[name]
        mutable = [c for c, column in table.user_columns.items()
                   if column.mutable and column.persistent]
        for uuid in current[name]:
            if uuid not in rows:
                ops.append({"op": "delete", "table": name,
                            "where": [["_uuid", "==", ["uuid", uuid]]]})
        for uuid, row in rows.items():
            if uuid not in current[name]:
                ops.append({"op": "insert", "table": name, "uuid": uuid, "row": row})
            elif mutable:
                ops.append({"op": "update", "table": name,
                            "where": [["_uuid", "==", ["uuid", uuid]]],
                            "row": {c: row[c] if c in row else _default_json(table, c)
                                    for c in mutable}})
    return ops


def _default_json(table: TableSchema, column: str) -> Any:
    type_ = table.columns[column].type
    return values.to_json(type_, values.default(type_))


def row_name(uuid: str) -> str:
    """The uuid-name a restored row gets (ovsdb-client's ``ovsdb_data_row_name``)."""
    return "row" + uuid.replace("-", "_")


def new_uuid_ops(backup: Rows) -> list[dict[str, Any]]:
    """ovsdb-client's restore: delete every row, insert the backup's with new UUIDs.

    A reference to a row of the backup becomes a reference to its new row.
    """
    restored = {uuid for rows in backup.values() for uuid in rows}
    ops: list[dict[str, Any]] = []
    for name, rows in backup.items():
        ops.append({"op": "delete", "table": name, "where": []})
        for uuid, row in rows.items():
            ops.append({"op": "insert", "table": name, "uuid-name": row_name(uuid),
                        "row": {c: _renamed(v, restored) for c, v in row.items()}})
    return ops


def _renamed(value: Any, restored: set[str]) -> Any:
    if isinstance(value, list):
        if len(value) == 2 and value[0] == "uuid" and value[1] in restored:
            return ["named-uuid", row_name(value[1])]
        return [_renamed(item, restored) for item in value]
    return value


def rejects_uuid_member(ops: list[dict[str, Any]], results: list[Any]) -> str | None:
    """The server's error when it does not accept insert's "uuid" member, else None."""
    for op, result in zip(ops, results):
        if (isinstance(result, dict) and "error" in result and op["op"] == "insert"
                and result.get("error") == "syntax error" and "uuid" in str(result)):
            return str(OVSDBError.from_json(result))
    return None

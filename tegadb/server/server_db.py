"""The read-only ``_Server`` database: one row per served database (PROTOCOL.md 2.11)."""

from __future__ import annotations

from typing import Any

import ujson

from ..core.database import Database
from ..core.schema import DbSchema
from ..core.tables import Changes

SERVER_DB_NAME = "_Server"

SERVER_SCHEMA_JSON: dict[str, Any] = {
    "name": SERVER_DB_NAME, "version": "1.2.0", "cksum": "3009684573 744",
    "tables": {"Database": {"isRoot": True, "columns": {
        "name": {"type": "string"},
        "model": {"type": {"key": {"type": "string",
                                   "enum": ["set", ["standalone", "clustered", "relay"]]}}},
        "connected": {"type": "boolean"},
        "leader": {"type": "boolean"},
        "schema": {"type": {"key": {"type": "string"}, "min": 0, "max": 1}},
        "cid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
        "sid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
        "index": {"type": {"key": {"type": "integer"}, "min": 0, "max": 1}},
    }}},
}


# The state columns of a database that is not in a cluster.
STANDALONE: dict[str, Any] = {"model": "standalone", "connected": True, "leader": True}


def schema_text(schema_json: dict[str, Any]) -> str:
    """The schema as ovsdb-server stores it in ``_Server``: sorted keys, no spaces."""
    return ujson.dumps(schema_json, sort_keys=True, ensure_ascii=False,
                       escape_forward_slashes=False)


class ServerDatabase:
    """The ``_Server`` database's schema and in-memory contents."""

    def __init__(self) -> None:
        self.schema = DbSchema.from_json(SERVER_SCHEMA_JSON)
        self.database = Database(self.schema)
        self.add(SERVER_DB_NAME, self.schema.to_json(), STANDALONE)

    def add(self, name: str, schema_json: dict[str, Any], state: dict[str, Any]) -> None:
        """A served database's row; ``state`` holds its model and how it is connected."""
        row = {"name": name, "schema": schema_text(schema_json), **state}
        self.database.insert_internal("Database", row)

    def set_state(self, name: str, state: dict[str, Any]) -> Changes | None:
        """A database's new connection state (a cluster member's ``connected``, ``index``)."""
        outcome = self.database.transact([{
            "op": "update", "table": "Database", "where": [["name", "==", name]],
            "row": state}], privileged=True)
        return outcome.changes

    def set_schema(self, name: str, schema_json: dict[str, Any]) -> Changes | None:
        """A converted database's new schema (ovsdb-server forgets this; clients need it)."""
        outcome = self.database.transact([{
            "op": "update", "table": "Database", "where": [["name", "==", name]],
            "row": {"schema": schema_text(schema_json)}}], privileged=True)
        return outcome.changes

"""Online schema conversion (PROTOCOL.md 2.10), against ovsdb-server and tegadb."""

from __future__ import annotations

import copy
import json

from peers import TEST_SCHEMA


def new_schema(change):
    schema = json.loads(TEST_SCHEMA.read_text())
    schema = copy.deepcopy(schema)
    change(schema)
    return schema


def add_column_drop_note(schema):
    root = schema["tables"]["Root"]["columns"]
    root["added"] = {"type": {"key": "integer", "min": 0, "max": 1}}
    del root["note"]
    schema["version"] = "9.9.9"


def test_convert_carries_data_and_disconnects_unaware_sessions(peer):
    server = peer()
    with server.client() as aware, server.client() as c:
        uuid = c.transact("Test", {"op": "insert", "table": "Root",
                                   "row": {"name": "keep", "count": 3, "note": "bye"}})[0]["uuid"]
        aware.request("set_db_change_aware", [True])
        aware.request("monitor_cond", ["Test", "m", {"Root": [{"columns": ["name"]}]}])
        reply = c.request("convert", ["Test", new_schema(add_column_drop_note)])
        assert reply["result"] == {}
        assert c.wait_closed(timeout=5)
        assert aware.wait_notification("monitor_canceled")["params"] == ["m"]
        rows = aware.transact("Test", {"op": "select", "table": "Root", "where": [],
                                       "columns": ["_uuid", "name", "count", "added"]})
        assert rows == [{"rows": [{"_uuid": uuid, "name": "keep", "count": 3,
                                   "added": ["set", []]}]}]
        schema = aware.request("get_schema", ["Test"])["result"]
        assert schema["version"] == "9.9.9" and "note" not in schema["tables"]["Root"]["columns"]


def test_convert_survives_restart(tegadb_peer):
    server = tegadb_peer()
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "x"}})
        assert c.request("convert", ["Test", new_schema(add_column_drop_note)])["result"] == {}
    server.restart()
    with server.client() as c:
        assert c.request("get_schema", ["Test"])["result"]["version"] == "9.9.9"
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name"]})
        assert rows == [{"rows": [{"name": "x"}]}]
        server_rows = c.transact("_Server", {"op": "select", "table": "Database",
                                             "where": [["name", "==", "Test"]],
                                             "columns": ["schema"]})
        assert '"version":"9.9.9"' in server_rows[0]["rows"][0]["schema"]


def test_convert_updates_server_database_schema(tegadb_peer):
    # ovsdb-server 3.1 leaves _Server.Database.schema stale (PROTOCOL.md 2.10);
    # the C IDL reads the schema from there, so tegadb updates it.
    server = tegadb_peer()
    with server.client() as c:
        c.request("convert", ["Test", new_schema(add_column_drop_note)])
    with server.client() as c:
        rows = c.transact("_Server", {"op": "select", "table": "Database",
                                      "where": [["name", "==", "Test"]], "columns": ["schema"]})
        assert json.loads(rows[0]["rows"][0]["schema"])["version"] == "9.9.9"


def test_convert_errors(peer):
    server = peer()
    with server.client() as c:
        c.transact("Test", {"op": "insert", "table": "Root", "row": {"name": "zz"}})

        def make_name_integer(schema):
            schema["tables"]["Root"]["columns"]["name"] = {"type": "integer"}

        assert c.request("convert", ["Test", new_schema(make_name_integer)])["error"] == {
            "error": "syntax error", "details": "expected integer", "syntax": '"zz"'}

        def rename(schema):
            schema["name"] = "Other"

        assert c.request("convert", ["Test", new_schema(rename)])["error"] == {
            "error": "invalid parameters",
            "details": "new schema name (Other) does not match database name (Test)"}
        error = c.request("convert", ["Test", {"name": "Test"}])["error"]
        assert error["error"] == "syntax error"
        assert error["details"] == ("Parsing database schema failed: Required 'tables' member "
                                    "is missing.")
        assert c.request("convert", ["Test"])["error"]["details"] == "array expected"
        # Nothing changed.
        rows = c.transact("Test", {"op": "select", "table": "Root", "where": [],
                                   "columns": ["name"]})
        assert rows == [{"rows": [{"name": "zz"}]}]

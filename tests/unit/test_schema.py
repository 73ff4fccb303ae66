"""Schemas: real schemas round-trip as ovsdb-server prints them; errors as OVS words them."""

import json
import os

import pytest

from tegadb.core.errors import OVSDBError
from tegadb.core.schema import DbSchema

REAL_SCHEMAS = [
    "/usr/share/openvswitch/vswitch.ovsschema",
    "/usr/share/ovn/ovn-nb.ovsschema",
    "/usr/share/ovn/ovn-sb.ovsschema",
]


@pytest.mark.parametrize("path", REAL_SCHEMAS)
def test_real_schemas_load(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not installed (make peers)")
    with open(path) as f:
        raw = json.load(f)
    schema = DbSchema.from_json(raw)
    assert set(schema.tables) == set(raw["tables"])
    # Serializing and parsing again is stable.
    assert DbSchema.from_json(schema.to_json()).to_json() == schema.to_json()


def test_all_root_when_no_table_says_isroot():
    schema = DbSchema.from_json({"name": "T", "tables": {
        "A": {"columns": {"c": {"type": "integer"}}},
        "B": {"columns": {"c": {"type": "integer"}}}}})
    assert all(t.is_root for t in schema.tables.values())
    assert "isRoot" not in schema.to_json()["tables"]["A"]


def test_implicit_columns_present():
    schema = DbSchema.from_json({"name": "T", "tables": {"A": {"columns": {"c": {"type": "integer"}}}}})
    table = schema.tables["A"]
    assert list(table.columns) == ["_uuid", "_version", "c"]
    assert list(table.user_columns) == ["c"]
    assert not table.columns["_uuid"].mutable


def col(type_json, **extra):
    return {"name": "T", "tables": {"A": {"columns": {"c": {"type": type_json, **extra}}}}}


# Expected details as ovsdb-tool 3.1 prints them (checked by running it),
# with tegadb's "(table, column)" location appended where the error is in a column.
SCHEMA_ERRORS = [
    (col("frob"), '"frob" is not an atomic-type (table A, column c)'),
    (col({"key": {"type": "integer", "minInteger": 5, "maxInteger": 1}}),
     "minInteger exceeds maxInteger (table A, column c)"),
    (col({"key": {"type": "uuid", "refTable": "B"}}), "column c key refers to undefined table B"),
    (col({"key": "integer", "min": 2}), "ovsdb type fails constraint checks (table A, column c)"),
    (col("integer", x=1),
     "Parsing schema for column c failed: Member 'x' is present but not allowed here. "
     "(table A, column c)"),
    ({"name": "T", "tables": {"A": {"columns": {}}}}, "table must have at least one column"),
    ({"name": "T", "version": "1.2", "tables": {}}, 'schema version "1.2" not in format x.y.z'),
    (col({"key": {"type": "string", "enum": "x", "minLength": 1}}),
     "Parsing ovsdb type failed: Member 'minLength' is present but not allowed here. "
     "(table A, column c)"),
    ({"name": "T", "tables": {"A": {"columns": {"c": {"type": "integer"}}, "indexes": [["d"]]}}},
     "d is not a valid column name"),
    ({"name": "T", "tables": {"A": {"columns": {"c": {"type": "integer"}}, "maxRows": 0}}},
     "maxRows must be at least 1"),
    ({"name": "T", "tables": {"A": {"columns": {"_c": {"type": "integer"}}}}},
     'names beginning with "_" are reserved'),
    (col({"key": "integer", "max": "lots"}), "bad min or max value (table A, column c)"),
    (col({"key": {"type": "uuid", "refTable": "A", "refType": "x"}}),
     'refType must be "strong" or "weak" (not "x") (table A, column c)'),
    (col({"key": {"type": "integer", "enum": ["set", [1, "a"]]}}),
     "expected integer (table A, column c)"),
    (col({"key": {"type": "string", "minLength": -1}}),
     "minLength out of valid range 0 to 4294967295 (table A, column c)"),
    ({"tables": {}}, "Parsing database schema failed: Required 'name' member is missing."),
    ({"name": "T", "tables": {"A": {"columns": {"c": {"type": "integer", "ephemeral": True}},
                                    "indexes": [["c"]]}}},
     "ephemeral columns (such as c) may not be indexed"),
    ({"name": "T", "x": 1, "tables": {}},
     "Parsing database schema failed: Member 'x' is present but not allowed here."),
]


@pytest.mark.parametrize("schema_json,details", SCHEMA_ERRORS)
def test_schema_errors(schema_json, details):
    with pytest.raises(OVSDBError) as info:
        DbSchema.from_json(schema_json)
    assert info.value.tag == "syntax error"
    assert info.value.details == details


def test_weak_reference_columns_are_forced_mutable():
    schema = DbSchema.from_json({"name": "T", "tables": {
        "A": {"columns": {"w": {"type": {"key": {"type": "uuid", "refTable": "A",
                                                  "refType": "weak"}}, "mutable": False}}}}})
    assert schema.tables["A"].columns["w"].mutable

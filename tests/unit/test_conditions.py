"""Conditions: parsing with OVS's type rules, and evaluation (PROTOCOL.md 4.5).

The expectations follow ovsdb-server 3.1 (checked live; the same cases against
a whole database are in tests/data/conformance.json).
"""

from __future__ import annotations

from typing import Any

import pytest

from tegadb.core import conditions
from tegadb.core.atoms import NamedUUIDs
from tegadb.core.errors import OVSDBError
from tegadb.core.schema import DbSchema

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"

SCHEMA = DbSchema.from_json({"name": "C", "tables": {"T": {"columns": {
    "s": {"type": "string"},
    "i": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 100}}},
    "r": {"type": "real"},
    "b": {"type": "boolean"},
    "oi": {"type": {"key": "integer", "min": 0, "max": 1}},
    "color": {"type": {"key": {"type": "string", "enum": ["set", ["blue", "red"]]},
                       "min": 0, "max": 1}},
    "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
    "small": {"type": {"key": "integer", "min": 0, "max": 2}},
    "some": {"type": {"key": "integer", "min": 1, "max": 2}},
    "many": {"type": {"key": "integer", "min": 1, "max": "unlimited"}},
    "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
    "refs": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
}}}})
TABLE = SCHEMA.tables["T"]

ROW: dict[str, tuple[Any, ...]] = {
    "_uuid": (U1,), "_version": (U2,),
    "s": ("abc",), "i": (5,), "r": (2.5,), "b": (True,), "oi": (), "color": ("red",),
    "tags": ("x", "y"), "small": (1,), "some": (1, 2), "many": (7,),
    "m": (("k1", "v1"), ("k2", "v2")), "refs": (U2,),
}


def matches(clause: Any, row: dict[str, Any] | None = None, **changes: Any) -> bool:
    row = dict(ROW if row is None else row, **changes)
    return conditions.match_all(conditions.parse(TABLE, [clause], NamedUUIDs()))(row)


EVALUATION = [
    # scalars
    (["s", "==", "abc"], {}, True),
    (["s", "!=", "abc"], {}, False),
    (["s", "includes", "abc"], {}, True),
    (["s", "excludes", "abc"], {}, False),
    (["i", "==", 5.0], {}, True),
    (["i", "<", 5], {}, False),
    (["i", "<=", 5], {}, True),
    (["i", ">", 4], {}, True),
    (["i", ">=", 6], {}, False),
    (["r", "<", 3], {}, True),
    (["r", "==", 2.5], {}, True),
    (["r", ">", 2.5], {}, False),
    (["b", "==", True], {}, True),
    (["b", "!=", False], {}, True),
    (["_uuid", "==", ["uuid", U1]], {}, True),
    (["_uuid", "==", ["uuid", U1.upper()]], {}, True),
    (["_version", "!=", ["uuid", U1]], {}, True),
    # optional scalars: an empty one equals only the empty set, and compares false
    (["oi", "==", ["set", []]], {}, True),
    (["oi", "!=", ["set", []]], {}, False),
    (["oi", "==", 3], {}, False),
    (["oi", "!=", 3], {}, True),
    (["oi", "includes", 3], {}, False),
    (["oi", "excludes", 3], {}, True),
    (["oi", "includes", ["set", []]], {}, True),
    (["oi", "excludes", ["set", []]], {}, True),
    (["oi", "<", 3], {}, False),
    (["oi", ">=", 3], {}, False),
    (["oi", "<", 3], {"oi": (2,)}, True),
    (["oi", "<", ["set", [3]]], {"oi": (2,)}, True),
    (["oi", ">", 3], {"oi": (2,)}, False),
    (["oi", "==", ["set", []]], {"oi": (2,)}, False),
    (["oi", "!=", ["set", []]], {"oi": (2,)}, True),
    (["oi", "includes", ["set", []]], {"oi": (2,)}, True),
    (["oi", "excludes", 2], {"oi": (2,)}, False),
    (["color", "==", "red"], {}, True),
    (["color", "excludes", "blue"], {}, True),
    # sets
    (["tags", "==", ["set", ["y", "x"]]], {}, True),
    (["tags", "==", "x"], {}, False),
    (["tags", "!=", "x"], {}, True),
    (["tags", "includes", "x"], {}, True),
    (["tags", "includes", ["set", ["x", "y"]]], {}, True),
    (["tags", "includes", ["set", ["x", "z"]]], {}, False),
    (["tags", "includes", ["set", []]], {}, True),
    (["tags", "excludes", "z"], {}, True),
    (["tags", "excludes", ["set", ["z", "y"]]], {}, False),
    (["tags", "excludes", ["set", ["z", "w"]]], {}, True),
    (["tags", "excludes", ["set", []]], {}, True),
    (["tags", "includes", "x"], {"tags": ()}, False),
    (["tags", "==", ["set", []]], {"tags": ()}, True),
    (["small", "excludes", ["set", [5, 6, 7]]], {}, True),  # excludes may exceed max
    (["small", "includes", 1], {}, True),
    (["some", "includes", ["set", []]], {}, True),
    (["some", "excludes", ["set", [3, 4, 5]]], {}, True),
    (["many", "includes", ["set", []]], {}, True),
    (["refs", "includes", ["uuid", U2]], {}, True),
    # maps: includes/excludes work on (key, value) pairs
    (["m", "==", ["map", [["k2", "v2"], ["k1", "v1"]]]], {}, True),
    (["m", "!=", ["map", [["k1", "v1"]]]], {}, True),
    (["m", "includes", ["map", [["k1", "v1"]]]], {}, True),
    (["m", "includes", ["map", [["k1", "v2"]]]], {}, False),
    (["m", "includes", ["map", [["k1", "v1"], ["k2", "v2"]]]], {}, True),
    (["m", "includes", ["map", []]], {}, True),
    (["m", "excludes", ["map", [["k1", "zz"]]]], {}, True),
    (["m", "excludes", ["map", [["k1", "v1"], ["k9", "v9"]]]], {}, False),
    # boolean clauses
    (True, {}, True),
    (False, {}, False),
]


@pytest.mark.parametrize(("clause", "changes", "expected"), EVALUATION,
                         ids=[str(c) for c, _, _ in EVALUATION])
def test_clause_evaluation(clause: Any, changes: dict[str, Any], expected: bool) -> None:
    assert matches(clause, **changes) is expected


def error(tag: str, details: str, syntax: str | None = None) -> dict[str, str]:
    obj = {"error": tag, "details": details}
    if syntax is not None:
        obj["syntax"] = syntax
    return obj


ERRORS = [
    ("s", error("syntax error", "Parse error in condition.", '"s"')),
    ([True], error("syntax error", "Parse error in condition.", "[true]")),
    (None, error("syntax error", "Parse error in condition.", "null")),
    (["s", "=="], error("syntax error", "Parse error in condition.", '["s","=="]')),
    (["s", "==", "a", "b"], error("syntax error", "Parse error in condition.",
                                  '["s","==","a","b"]')),
    ([1, "==", 1], error("syntax error", "Parse error in condition.", '[1,"==",1]')),
    (["s", 1, 1], error("syntax error", "Parse error in condition.", '["s",1,1]')),
    (["x", "==", 1], error("unknown column", "No column x in table T.", '["x","==",1]')),
    (["x", "~=", 1], error("unknown column", "No column x in table T.", '["x","~=",1]')),
    (["s", "~=", 1], error("unknown function", "No function named ~=.")),
    # "true" and "false" are reserved function names (ovsdb-server 3.1 crashes on them)
    (["s", "true", 1], error("unknown function", "No function named true.")),
    (["s", "false", 1], error("unknown function", "No function named false.")),
    (["i", "==", 500], error("constraint violation",
                             "500 is not in the valid range 0 to 100 (inclusive)")),
    (["i", "<", 101], error("constraint violation",
                            "101 is not in the valid range 0 to 100 (inclusive)")),
    (["i", "excludes", -1], error("constraint violation",
                                  "-1 is not in the valid range 0 to 100 (inclusive)")),
    (["color", "==", "pink"], error("constraint violation",
                                    "pink is not one of the allowed values ([blue, red])")),
    (["color", "excludes", "pink"], error("constraint violation",
                                          "pink is not one of the allowed values ([blue, red])")),
    (["i", "==", "x"], error("syntax error", "expected integer", '"x"')),
    (["i", "==", 1.5], error("syntax error", "expected integer", "1.5")),
    (["r", "==", "x"], error("syntax error", "expected real", '"x"')),
    (["s", "==", ["set", []]], error("syntax error",
                                     "set must have exactly one member but 0 are present",
                                     '["set",[]]')),
    (["s", "includes", ["set", ["a", "b"]]],
     error("syntax error", "set must have exactly one member but 2 are present",
           '["set",["a","b"]]')),
    (["oi", "<", ["set", []]], error("syntax error",
                                     "set must have exactly one member but 0 are present",
                                     '["set",[]]')),
    (["small", "==", ["set", [1, 2, 3]]], error("syntax error",
                                               "set must have 0 to 2 members but 3 are present",
                                               '["set",[1,2,3]]')),
    (["small", "includes", ["set", [1, 2, 3]]],
     error("syntax error", "set must have 0 to 2 members but 3 are present", '["set",[1,2,3]]')),
    (["some", "==", ["set", []]], error("syntax error",
                                        "set must have 1 to 2 members but 0 are present",
                                        '["set",[]]')),
    (["tags", "==", ["set", ["a", "a"]]], error("ovsdb error", "set contains duplicate")),
    (["m", "includes", ["map", [["a", "1"], ["a", "2"]]]],
     error("ovsdb error", "map contains duplicate key")),
    (["m", "includes", "a"], error("syntax error", 'expected ["map", <array>]', '"a"')),
    (["_uuid", "==", U1], error("syntax error", 'expected ["uuid", <string>]', f'"{U1}"')),
    (["_uuid", "==", ["uuid", "xyz"]], error("syntax error", '"xyz" is not a valid UUID',
                                             '["uuid","xyz"]')),
    (["s", "<", "a"], error("syntax error", 'Type mismatch: "<" operator may not be applied to '
                            "column s of type string.", '["s","<","a"]')),
    (["b", ">", True], error("syntax error", 'Type mismatch: ">" operator may not be applied to '
                             "column b of type boolean.", '["b",">",true]')),
    (["color", "<=", "red"], error("syntax error", 'Type mismatch: "<=" operator may not be '
                                   "applied to column color of type set of up to 1 strings.",
                                   '["color","<=","red"]')),
    (["tags", ">=", "a"], error("syntax error", 'Type mismatch: ">=" operator may not be applied '
                                "to column tags of type set of strings.", '["tags",">=","a"]')),
    (["small", "<", 1], error("syntax error", 'Type mismatch: "<" operator may not be applied to '
                              "column small of type set of up to 2 integers.",
                              '["small","<",1]')),
    (["some", "<", 1], error("syntax error", 'Type mismatch: "<" operator may not be applied to '
                             "column some of type set of 1 to 2 integers.", '["some","<",1]')),
    (["many", "<", 1], error("syntax error", 'Type mismatch: "<" operator may not be applied to '
                             "column many of type set of 1 or more integers.", '["many","<",1]')),
    (["m", "<", 1], error("syntax error", 'Type mismatch: "<" operator may not be applied to '
                          "column m of type map of (string, string) pairs.", '["m","<",1]')),
]


@pytest.mark.parametrize(("clause", "expected"), ERRORS, ids=[str(c) for c, _ in ERRORS])
def test_clause_errors(clause: Any, expected: dict[str, str]) -> None:
    with pytest.raises(OVSDBError) as info:
        conditions.parse(TABLE, [clause], NamedUUIDs())
    assert info.value.to_json() == expected


def test_named_uuid_needs_a_symbol_table() -> None:
    symtab = NamedUUIDs()
    clause = ["refs", "includes", ["named-uuid", "x"]]
    [parsed] = conditions.parse(TABLE, [clause], symtab)
    assert parsed.arg == (symtab.resolve("x"),)
    # Monitors have no named UUIDs.
    with pytest.raises(OVSDBError) as info:
        conditions.parse(TABLE, [clause])
    assert info.value.tag == "syntax error"


def test_clauses_are_anded_in_transact_and_ored_in_monitors() -> None:
    clauses = conditions.parse(TABLE, [["s", "==", "abc"], ["i", "==", 6]])
    assert conditions.match_all(clauses)(ROW) is False
    assert conditions.match_any(clauses)(ROW) is True
    assert conditions.match_all(clauses[:1])(ROW) is True
    assert conditions.match_any(clauses[1:])(ROW) is False


@pytest.mark.parametrize(("where", "all_", "any_"), [
    ([], True, True),
    ([True], True, True),
    ([False], False, False),
    ([True, False], False, True),
    ([False, ["s", "==", "abc"]], False, True),
    ([True, ["s", "==", "zzz"]], False, True),
    ([["s", "==", "zzz"], ["i", "==", 1], ["b", "==", False]], False, False),
    ([["s", "==", "abc"], ["i", "==", 5], ["b", "==", True]], True, True),
])
def test_boolean_clauses_and_empty_conditions(where: list[Any], all_: bool, any_: bool) -> None:
    clauses = conditions.parse(TABLE, where)
    assert conditions.match_all(clauses)(ROW) is all_
    assert conditions.match_any(clauses)(ROW) is any_


def test_equalities_name_the_equality_clauses() -> None:
    clauses = conditions.parse(TABLE, [["_uuid", "==", ["uuid", U1]], ["i", ">", 1],
                                       ["s", "==", "a"], ["s", "==", "b"], True])
    assert conditions.equalities(clauses) == {"_uuid": (U1,), "s": ("a",)}
    assert conditions.equalities(conditions.parse(TABLE, [["s", "!=", "a"]])) == {}


def test_parser_is_shared_per_table() -> None:
    assert conditions.parser_for(TABLE) is conditions.parser_for(TABLE)
    parser = conditions.parser_for(TABLE)
    parser.parse([["tags", "includes", "a"]])
    # The relaxed argument type is worked out once and reused.
    assert ("tags", "includes") in parser._arg_parsers

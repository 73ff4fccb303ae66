"""Mutations: parsing, C arithmetic, set and map mutators (PROTOCOL.md 4.6).

The expectations follow ovsdb-server 3.1 (checked live; the same cases against
a whole database are in tests/data/conformance.json).
"""

from __future__ import annotations

from typing import Any

import pytest

from tegadb.core import mutations
from tegadb.core.atoms import INT64_MAX, INT64_MIN, NamedUUIDs
from tegadb.core.errors import OVSDBError
from tegadb.core.schema import DbSchema

U1 = "11111111-1111-4111-8111-111111111111"

SCHEMA = DbSchema.from_json({"name": "M", "tables": {"T": {"columns": {
    "s": {"type": "string"},
    "i": {"type": "integer"},
    "r": {"type": "real"},
    "b": {"type": "boolean"},
    "pct": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 100}}},
    "oi": {"type": {"key": "integer", "min": 0, "max": 1}},
    "ints": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
    "reals": {"type": {"key": "real", "min": 0, "max": "unlimited"}},
    "small": {"type": {"key": "integer", "min": 0, "max": 2}},
    "some": {"type": {"key": "integer", "min": 1, "max": 2}},
    "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
    "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
    "im": {"type": {"key": "integer", "value": {"type": "string", "enum": ["set", ["a", "b"]]},
                    "min": 0, "max": "unlimited"}},
    "fixed": {"type": "integer", "mutable": False},
}}}})
TABLE = SCHEMA.tables["T"]


def mutate(column: str, mutator: str, arg: Any, datum: tuple[Any, ...]) -> tuple[Any, ...]:
    [m] = mutations.MutationParser(TABLE).parse([[column, mutator, arg]], NamedUUIDs())
    row = {column: datum}
    mutations.apply([m], row)
    return row[column]


ARITHMETIC = [
    # C semantics: truncating division, remainder with the dividend's sign
    ("i", "/=", 2, (-7,), (-3,)),
    ("i", "/=", -2, (-7,), (3,)),
    ("i", "/=", -2, (7,), (-3,)),
    ("i", "/=", 2, (7,), (3,)),
    ("i", "%=", 3, (-7,), (-1,)),
    ("i", "%=", -3, (7,), (1,)),
    ("i", "%=", -3, (-7,), (-1,)),
    ("i", "%=", 3, (7,), (1,)),
    ("i", "+=", 5, (-7,), (-2,)),
    ("i", "-=", 5, (-7,), (-12,)),
    ("i", "*=", -3, (-7,), (21,)),
    ("i", "*=", INT64_MAX // 3, (2,), (6148914691236517204,)),  # within ovsdb-server's limit
    ("i", "*=", -3037000499, (-3,), (9111001497,)),
    ("i", "*=", INT64_MAX, (-1,), (-INT64_MAX,)),
    ("i", "*=", 0, (5,), (0,)),
    ("i", "+=", 2.0, (1,), (3,)),  # an integral real is an integer
    ("i", "+=", 1, (INT64_MAX - 1,), (INT64_MAX,)),
    ("i", "-=", 1, (INT64_MIN + 1,), (INT64_MIN,)),
    ("i", "/=", 1, (INT64_MIN,), (INT64_MIN,)),
    ("i", "%=", 1, (INT64_MIN,), (0,)),
    ("r", "+=", 1, (1.5,), (2.5,)),
    ("r", "/=", 4, (-2.5,), (-0.625,)),
    ("r", "*=", -1.5, (2.0,), (-3.0,)),
    # element-wise on sets, re-sorted afterwards
    ("ints", "*=", -1, (-7, 7), (-7, 7)),
    ("ints", "-=", 10, (1, 2, 3), (-9, -8, -7)),
    ("ints", "*=", -2, (1, 2, 3), (-6, -4, -2)),
    ("ints", "%=", -3, (-7, 7), (-1, 1)),
    ("reals", "/=", 2, (1.0, 3.0), (0.5, 1.5)),
    ("oi", "+=", 4, (3,), (7,)),
    # empty sets and optionals stay empty, even when dividing by zero
    ("ints", "+=", 1, (), ()),
    ("ints", "/=", 0, (), ()),
    ("oi", "%=", 0, (), ()),
    # the argument's constraints do not apply, only the result's
    ("pct", "-=", 200, (250,), (50,)),
]


@pytest.mark.parametrize(("column", "mutator", "arg", "before", "after"), ARITHMETIC)
def test_arithmetic(column: str, mutator: str, arg: Any, before: tuple[Any, ...],
                    after: tuple[Any, ...]) -> None:
    assert mutate(column, mutator, arg, before) == after


SETS_AND_MAPS = [
    ("tags", "insert", ["set", ["z", "a"]], ("m", "x"), ("a", "m", "x", "z")),
    ("tags", "insert", "x", ("x",), ("x",)),
    ("tags", "insert", ["set", []], ("x",), ("x",)),
    ("tags", "delete", "x", ("x", "y"), ("y",)),
    ("tags", "delete", ["set", ["q", "y"]], ("x", "y"), ("x",)),
    ("small", "delete", ["set", [1, 2, 3, 4, 5]], (1, 2), ()),  # delete may exceed max
    ("small", "insert", 2, (1, 2), (1, 2)),
    ("oi", "insert", 4, (), (4,)),
    ("oi", "delete", 4, (4,), ()),
    ("some", "delete", 1, (1, 2), (2,)),
    # map insert never overwrites an existing key
    ("m", "insert", ["map", [["k1", "new"], ["k3", "v3"]]], (("k1", "v1"),),
     (("k1", "v1"), ("k3", "v3"))),
    # map delete: pairs (key and value must match) or keys
    ("m", "delete", ["map", [["k1", "v1"]]], (("k1", "v1"), ("k2", "v2")), (("k2", "v2"),)),
    ("m", "delete", ["map", [["k1", "other"]]], (("k1", "v1"),), (("k1", "v1"),)),
    ("m", "delete", ["set", ["k1", "k9"]], (("k1", "v1"), ("k2", "v2")), (("k2", "v2"),)),
    ("m", "delete", "k2", (("k1", "v1"), ("k2", "v2")), (("k1", "v1"),)),
    ("im", "insert", ["map", [[3, "a"], [1, "b"]]], ((1, "a"), (2, "b")),
     ((1, "a"), (2, "b"), (3, "a"))),
    ("im", "delete", ["set", [1, 5]], ((1, "a"), (2, "b")), ((2, "b"),)),
]


@pytest.mark.parametrize(("column", "mutator", "arg", "before", "after"), SETS_AND_MAPS)
def test_insert_and_delete(column: str, mutator: str, arg: Any, before: tuple[Any, ...],
                           after: tuple[Any, ...]) -> None:
    assert mutate(column, mutator, arg, before) == after


def error(tag: str, details: str, syntax: str | None = None) -> dict[str, str]:
    obj = {"error": tag, "details": details}
    if syntax is not None:
        obj["syntax"] = syntax
    return obj


def out_of_range(mutator: str) -> dict[str, str]:
    return error("range error", f'Result of "{mutator}" operation is out of range.')


RUN_ERRORS = [
    ("i", "+=", 1, (INT64_MAX,), out_of_range("+=")),
    ("i", "-=", 2, (INT64_MIN + 1,),
     out_of_range("-=")),
    ("i", "*=", INT64_MAX, (-7,), out_of_range("*=")),
    ("i", "*=", 2, (2**62,), out_of_range("*=")),
    # ovsdb-server's overflow test for *= also refuses these products, which fit:
    ("i", "*=", INT64_MAX, (1,), out_of_range("*=")),  # x >= INT64_MAX / y
    ("i", "*=", INT64_MAX // 3, (3,), out_of_range("*=")),
    ("i", "*=", -3037000500, (-1,), out_of_range("*=")),  # both negative, |y| > sqrt
    ("pct", "*=", -3037000500, (-1,), out_of_range("*=")),  # before the column's range
    # ... and misses this overflow (it stores the wrapped product): still refused
    ("i", "*=", -4, (-2**62,), out_of_range("*=")),
    ("i", "/=", -1, (INT64_MIN,), out_of_range("/=")),
    ("i", "%=", -1, (INT64_MIN,), out_of_range("%=")),
    ("i", "/=", 0, (5,), error("domain error", "Division by zero.")),
    ("i", "%=", 0, (5,), error("domain error", "Division by zero.")),
    ("r", "/=", 0, (5.0,), error("domain error", "Division by zero.")),
    ("r", "/=", 0.0, (0.0,), error("domain error", "Division by zero.")),
    ("r", "*=", 10, (1e308,), out_of_range("*=")),
    ("r", "-=", 1e308, (-1e308,), out_of_range("-=")),
    ("pct", "+=", 200, (1,), error("constraint violation",
                                   "201 is not in the valid range 0 to 100 (inclusive)")),
    ("ints", "*=", 0, (1, 2), error("constraint violation",
                                    'Result of "*=" operation contains duplicates.')),
    ("ints", "/=", 5, (1, 2, 3), error("constraint violation",
                                       'Result of "/=" operation contains duplicates.')),
    ("ints", "%=", 2, (1, 3), error("constraint violation",
                                    'Result of "%=" operation contains duplicates.')),
    ("small", "insert", 3, (1, 2), error("constraint violation",
                                         "Attempted to store 3 elements in set of up to 2 "
                                         "integers.")),
    ("some", "delete", ["set", [1, 2]], (1, 2),
     error("constraint violation", "Attempted to store 0 elements in set of 1 to 2 integers.")),
    ("oi", "insert", 5, (4,), error("constraint violation",
                                    "Attempted to store 2 elements in set of up to 1 integers.")),
]


@pytest.mark.parametrize(("column", "mutator", "arg", "before", "expected"), RUN_ERRORS)
def test_mutation_errors(column: str, mutator: str, arg: Any, before: tuple[Any, ...],
                         expected: dict[str, str]) -> None:
    with pytest.raises(OVSDBError) as info:
        mutate(column, mutator, arg, before)
    assert info.value.to_json() == expected


PARSE_ERRORS = [
    ("i", error("syntax error", "Parse error in mutation.", '"i"')),
    (["i", "+="], error("syntax error", "Parse error in mutation.", '["i","+="]')),
    (["i", "+=", 1, 2], error("syntax error", "Parse error in mutation.", '["i","+=",1,2]')),
    ([1, "+=", 1], error("syntax error", "Parse error in mutation.", '[1,"+=",1]')),
    (["x", "+=", 1], error("unknown column", "No column x in table T.", '["x","+=",1]')),
    (["x", "frob", 1], error("unknown column", "No column x in table T.", '["x","frob",1]')),
    (["fixed", "+=", 1], error("constraint violation",
                               "Cannot mutate immutable column fixed in table T.",
                               '["fixed","+=",1]')),
    (["fixed", "frob", 1], error("constraint violation",
                                 "Cannot mutate immutable column fixed in table T.",
                                 '["fixed","frob",1]')),
    (["_uuid", "insert", ["uuid", U1]],
     error("constraint violation", "Cannot mutate immutable column _uuid in table T.",
           f'["_uuid","insert",["uuid","{U1}"]]')),
    (["i", "frob", 1], error("unknown mutator", "No mutator named frob.")),
    (["s", "+=", 1], error("syntax error", 'Type mismatch: "+=" operator may not be applied to '
                           "column s of type string.", '["s","+=",1]')),
    (["b", "*=", 1], error("syntax error", 'Type mismatch: "*=" operator may not be applied to '
                           "column b of type boolean.", '["b","*=",1]')),
    (["r", "%=", 1], error("syntax error", 'Type mismatch: "%=" operator may not be applied to '
                           "column r of type real.", '["r","%=",1]')),
    (["reals", "%=", 1], error("syntax error", 'Type mismatch: "%=" operator may not be applied '
                               "to column reals of type set of reals.", '["reals","%=",1]')),
    (["m", "+=", 1], error("syntax error", 'Type mismatch: "+=" operator may not be applied to '
                           "column m of type map of (string, string) pairs.", '["m","+=",1]')),
    (["b", "insert", True], error("syntax error", 'Type mismatch: "insert" operator may not be '
                                  "applied to column b of type boolean.", '["b","insert",true]')),
    (["i", "delete", 1], error("syntax error", 'Type mismatch: "delete" operator may not be '
                               "applied to column i of type integer.", '["i","delete",1]')),
    (["i", "+=", "x"], error("syntax error", "expected integer", '"x"')),
    (["i", "+=", 1.5], error("syntax error", "expected integer", "1.5")),
    (["i", "+=", ["set", [1, 2]]], error("syntax error",
                                         "set must have exactly one member but 2 are present",
                                         '["set",[1,2]]')),
    (["small", "insert", ["set", [1, 2, 3]]],
     error("syntax error", "set must have 0 to 2 members but 3 are present", '["set",[1,2,3]]')),
    (["tags", "insert", ["set", ["a", "a"]]], error("ovsdb error", "set contains duplicate")),
    (["m", "insert", ["set", ["k"]]], error("syntax error", 'expected ["map", <array>]',
                                           '["set",["k"]]')),
    # a map delete argument that is neither pairs nor keys reports the keys error
    (["m", "delete", 5], error("syntax error", "expected string", "5")),
    (["pct", "insert", 1], error("syntax error", 'Type mismatch: "insert" operator may not be '
                                 "applied to column pct of type integer.", '["pct","insert",1]')),
    (["im", "insert", ["map", [[1, "c"]]]],
     error("constraint violation", "c is not one of the allowed values ([a, b])")),
    # not a valid map to delete, so it is tried as a set of keys (checked live)
    (["im", "delete", ["map", [[1, "c"]]]],
     error("syntax error", "expected integer", '["map",[[1,"c"]]]')),
]


@pytest.mark.parametrize(("mutation", "expected"), PARSE_ERRORS,
                         ids=[str(m) for m, _ in PARSE_ERRORS])
def test_parse_errors(mutation: Any, expected: dict[str, str]) -> None:
    with pytest.raises(OVSDBError) as info:
        mutations.MutationParser(TABLE).parse([mutation], NamedUUIDs())
    assert info.value.to_json() == expected


def test_arithmetic_argument_ignores_column_constraints() -> None:
    # ovsdb-server clears the constraints for the argument; the result is checked.
    [m] = mutations.MutationParser(TABLE).parse([["pct", "-=", 500]])
    assert m.arg == (500,)
    with pytest.raises(OVSDBError) as info:
        mutations.apply([m], {"pct": (5,)})
    assert info.value.details == "-495 is not in the valid range 0 to 100 (inclusive)"


def test_mutations_apply_in_order_and_see_each_other() -> None:
    parsed = mutations.MutationParser(TABLE).parse(
        [["ints", "delete", 3], ["ints", "insert", 9], ["ints", "*=", 2]])
    row = {"ints": (1, 2, 3)}
    mutations.apply(parsed, row)
    assert row == {"ints": (2, 4, 18)}


def test_named_uuid_argument() -> None:
    schema = DbSchema.from_json({"name": "N", "tables": {"T": {"columns": {
        "refs": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}}}}}})
    symtab = NamedUUIDs()
    [m] = mutations.MutationParser(schema.tables["T"]).parse(
        [["refs", "insert", ["named-uuid", "x"]]], symtab)
    assert m.arg == (symtab.resolve("x"),)

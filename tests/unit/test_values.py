"""Values: JSON notation <-> datums, constraint checks, diffs (data-driven)."""

import pytest

from tegadb.core import values
from tegadb.core.atoms import NamedUUIDs
from tegadb.core.errors import OVSDBError
from tegadb.core.types import Type

U1 = "11111111-2222-3333-4444-555555555555"
U2 = "aaaaaaaa-2222-3333-4444-555555555555"

INT = Type.from_json("integer")
RANGE = Type.from_json({"key": {"type": "integer", "minInteger": 0, "maxInteger": 100}})
MIN_ONLY = Type.from_json({"key": {"type": "integer", "minInteger": 1}})
MAX_ONLY = Type.from_json({"key": {"type": "real", "maxReal": 2.5}})
COLOR = Type.from_json({"key": {"type": "string", "enum": ["set", ["red", "green", "blue"]]}})
NAME = Type.from_json({"key": {"type": "string", "minLength": 2, "maxLength": 4}})
INTS = Type.from_json({"key": "integer", "min": 0, "max": "unlimited"})
SMALLSET = Type.from_json({"key": "integer", "min": 1, "max": 2})
OPT_UUID = Type.from_json({"key": "uuid", "min": 0, "max": 1})
SMAP = Type.from_json({"key": "string", "value": "string", "min": 0, "max": "unlimited"})
REAL = Type.from_json("real")
BOOL = Type.from_json("boolean")
STR = Type.from_json("string")
STRS = Type.from_json({"key": "string", "min": 0, "max": "unlimited"})

PARSE_OK = [
    (INT, 5, (5,)),
    (INT, 1.0, (1,)),
    (INT, ["set", [7]], (7,)),
    (REAL, 2, (2.0,)),
    (BOOL, True, (True,)),
    (INTS, ["set", [3, 1, 2]], (1, 2, 3)),
    (INTS, 4, (4,)),
    (INTS, ["set", []], ()),
    (OPT_UUID, ["uuid", U1.upper()], (U1,)),
    (OPT_UUID, ["set", []], ()),
    (SMAP, ["map", [["b", "2"], ["a", "1"]]], (("a", "1"), ("b", "2"))),
    (COLOR, "red", ("red",)),
    (NAME, "abcd", ("abcd",)),
    (NAME, "日本", ("日本",)),
    (STR, "x", ("x",)),
    (STR, ["set", ["x"]], ("x",)),
    (BOOL, ["set", [False]], (False,)),
    (INT, -(2**63), (-(2**63),)),
    (STRS, ["set", ["b", "a"]], ("a", "b")),
    (STRS, "a", ("a",)),
    (STRS, ["set", []], ()),
    (Type.from_json({"key": "boolean", "min": 0, "max": 2}), ["set", [True, False]],
     (False, True)),
    (SMAP, ["map", []], ()),
    (Type.from_json({"key": "boolean", "value": "string", "max": 2}),
     ["map", [[True, "y"], [False, "n"]]], ((False, "n"), (True, "y"))),
]

# The general parser, and the one compiled for the column type: the same in all.
PARSERS = {"general": values.parse, "compiled": lambda t, j: values.parser(t).parse(j, None)}


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS)
@pytest.mark.parametrize("type_,json,expected", PARSE_OK)
def test_parse_accepts(type_, json, expected, parse):
    assert parse(type_, json) == expected


PARSE_ERRORS = [
    (INT, 1.5, "syntax error", "expected integer"),
    (INT, True, "syntax error", "expected integer"),
    (INT, 2**64, "syntax error", "expected integer"),
    (INT, 2**63, "syntax error", "expected integer"),
    (INT, "1", "syntax error", "expected integer"),
    (STR, 1, "syntax error", "expected string"),
    (STR, ["set", ["a", "b"]], "syntax error",
     "set must have exactly one member but 2 are present"),
    (STRS, ["set", [1]], "syntax error", "expected string"),
    (SMAP, ["map", [["a", 1]]], "syntax error", "expected string"),
    (SMAP, ["map", [[1, "a"]]], "syntax error", "expected string"),
    (SMAP, ["map", [[["a"], "b"]]], "syntax error", "expected string"),
    (SMAP, ["map", [["a", "b", "c"]]], "syntax error", "expected 2-element array"),
    (SMAP, ["map", ["ab"]], "syntax error", "expected 2-element array"),
    (SMAP, ["map", {}], "syntax error", 'expected ["map", <array>]'),
    (STRS, ["set", ["a", "a"]], "ovsdb error", "set contains duplicate"),
    (STRS, ["set", [["a"]]], "syntax error", "expected string"),
    (STRS, ["set", [True, "a"]], "syntax error", "expected string"),
    (STRS, ["set", "ab"], "syntax error", 'expected ["set", <array>]'),
    (Type.from_json({"key": "string", "min": 0, "max": 2}), ["set", ["a", "b", "c"]],
     "syntax error", "set must have 0 to 2 members but 3 are present"),
    (Type.from_json({"key": "string", "value": "string", "min": 1, "max": 2}), ["map", []],
     "syntax error", "map must have 1 to 2 members but 0 are present"),
    (REAL, "x", "syntax error", "expected real"),
    (BOOL, 1, "syntax error", "expected boolean"),
    (NAME, 3, "syntax error", "expected string"),
    (OPT_UUID, ["uuid", "xyz"], "syntax error", '"xyz" is not a valid UUID'),
    (OPT_UUID, "xyz", "syntax error", 'expected ["uuid", <string>]'),
    (OPT_UUID, ["named-uuid", "x"], "syntax error", 'expected ["uuid", <string>]'),
    (INT, ["set", []], "syntax error", "set must have exactly one member but 0 are present"),
    (SMALLSET, ["set", [1, 2, 3]], "syntax error",
     "set must have 1 to 2 members but 3 are present"),
    (SMAP, ["set", []], "syntax error", 'expected ["map", <array>]'),
    (SMAP, ["map", [["a"]]], "syntax error", "expected 2-element array"),
    (INTS, ["set", [1, 1]], "ovsdb error", "set contains duplicate"),
    (SMAP, ["map", [["a", "1"], ["a", "2"]]], "ovsdb error", "map contains duplicate key"),
    (RANGE, 101, "constraint violation", "101 is not in the valid range 0 to 100 (inclusive)"),
    (MIN_ONLY, 0, "constraint violation", "0 is less than minimum allowed value 1"),
    (MAX_ONLY, 3.75, "constraint violation", "3.75 is greater than maximum allowed value 2.5"),
    (COLOR, "pink", "constraint violation",
     "pink is not one of the allowed values ([blue, green, red])"),
    (COLOR, "", "constraint violation",
     '"" is not one of the allowed values ([blue, green, red])'),
    (NAME, "a", "constraint violation", '"a" length 1 is less than minimum allowed length 2'),
    (NAME, "abcde", "constraint violation",
     '"abcde" length 5 is greater than maximum allowed length 4'),
]


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS)
@pytest.mark.parametrize("type_,json,tag,details", PARSE_ERRORS)
def test_parse_rejects(type_, json, tag, details, parse):
    with pytest.raises(OVSDBError) as info:
        parse(type_, json)
    assert (info.value.tag, info.value.details) == (tag, details)


def test_named_uuid_forward_reference_binds_same_uuid():
    symtab = NamedUUIDs()
    used = values.parse(OPT_UUID, ["named-uuid", "row1"], symtab)
    assert symtab.declare("row1") == used[0]
    with pytest.raises(OVSDBError) as info:
        symtab.declare("row1")
    assert info.value.tag == "duplicate uuid-name"


def test_named_uuid_must_be_an_id():
    with pytest.raises(OVSDBError) as info:
        values.parse(OPT_UUID, ["named-uuid", "1x"], NamedUUIDs())
    assert info.value.details == "named-uuid string is not a valid <id>"


TO_JSON = [
    (INTS, (5,), 5),
    (INTS, (), ["set", []]),
    (INTS, (1, 2), ["set", [1, 2]]),
    (OPT_UUID, (U1,), ["uuid", U1]),
    (SMAP, (), ["map", []]),
    (SMAP, (("a", "1"),), ["map", [["a", "1"]]]),
    (SMAP, (("a", "1"), ("b", "2")), ["map", [["a", "1"], ["b", "2"]]]),
    (STR, ("x",), "x"),
    (STRS, ("x",), "x"),
    (STRS, ("x", "y"), ["set", ["x", "y"]]),
    (REAL, (1.0,), 1.0),
    (Type.from_json({"key": "uuid", "value": "integer", "min": 0, "max": "unlimited"}),
     ((U1, 1),), ["map", [[["uuid", U1], 1]]]),
]


@pytest.mark.parametrize("type_,datum,expected", TO_JSON)
def test_to_json(type_, datum, expected):
    assert values.to_json(type_, datum) == expected
    assert values.encoder(type_)(datum) == expected
    assert values.parse(type_, expected) == datum


def test_defaults():
    assert values.default(INT) == (0,)
    assert values.default(INTS) == ()
    assert values.default(Type.from_json("uuid")) == ("00000000-0000-0000-0000-000000000000",)
    assert values.default(Type.from_json({"key": "string", "value": "integer"})) == (("", 0),)


DIFFS = [
    (INTS, (-1, 1), (1, 2, 5), (-1, 2, 5)),
    (SMAP, (("k3", "v3"),), (("k3", "v4"), ("k9", "v9")), (("k3", "v4"), ("k9", "v9"))),
    (SMAP, (("k1", "v1"), ("k2", "v2")), (("k2", "v2"),), (("k1", "v1"),)),
    (OPT_UUID, (U1,), (), ()),
    (OPT_UUID, (U1,), (U2,), (U2,)),
]


@pytest.mark.parametrize("type_,old,new,expected", DIFFS)
def test_diff_and_apply(type_, old, new, expected):
    assert values.diff(type_, old, new) == expected
    assert values.apply_diff(type_, old, expected) == new


def test_check_size_message():
    with pytest.raises(OVSDBError) as info:
        values.check_size(SMALLSET, (1, 2, 3))
    assert info.value.details == "Attempted to store 3 elements in set of 1 to 2 integers."


@pytest.mark.parametrize("type_json,english", [
    ("string", "string"),
    ({"key": "integer", "min": 0, "max": "unlimited"}, "set of integers"),
    ({"key": "integer", "min": 0, "max": 2}, "set of up to 2 integers"),
    ({"key": "integer", "min": 1, "max": 2}, "set of 1 to 2 integers"),
    ({"key": "integer", "min": 1, "max": "unlimited"}, "set of 1 or more integers"),
    ({"key": "string", "value": "string", "min": 0, "max": "unlimited"},
     "map of (string, string) pairs"),
])
def test_english_type_names(type_json, english):
    assert Type.from_json(type_json).english() == english

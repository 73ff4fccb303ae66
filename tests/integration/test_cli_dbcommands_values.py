"""The database commands' value syntax (tegadb/cli/valuesyntax.py), in process.

Each row: a column type, the text typed, and the datum it means or OVS's
error message.  The messages are those ovs-vsctl prints (its
lib/ovsdb-data.c); test_cli_dbcommands.py checks a share of them against
ovs-vsctl itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from tegadb.cli.valuesyntax import Symbols, ValueSyntaxError, parse_datum, parse_token
from tegadb.core.types import Type

INTEGER = {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}}
INTEGERS = {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095},
            "min": 0, "max": "unlimited"}
STRINGS = {"key": "string", "min": 0, "max": 2}
MAP = {"key": "string", "value": "string", "min": 0, "max": "unlimited"}
REAL = "real"
BOOLEAN = "boolean"
OPTIONAL = {"key": "string", "min": 0, "max": 1}
UUIDS = {"key": {"type": "uuid", "refTable": "T"}, "min": 0, "max": "unlimited"}
UUID = "01234567-89ab-cdef-0123-456789abcdef"

CASES: list[tuple[Any, str, Any]] = [
    (INTEGER, "42", (42,)),
    (INTEGER, " 7", (7,)),
    (INTEGER, "-1", "constraint violation: -1 is not in the valid range 0 to 4095 (inclusive)"),
    (INTEGER, "4x", '"4x" is not a valid integer or range'),
    (INTEGER, "", 'use "[]" to specify the empty set'),
    (INTEGER, "[1,2]", "[1,2]: 2 value(s) specified but the maximum number is 1"),
    (INTEGERS, "1-4,9", (1, 2, 3, 4, 9)),
    (INTEGERS, "[3 2 1]", (1, 2, 3)),
    (INTEGERS, "[]", ()),
    (INTEGERS, "4-1", '"4-1" is not a valid range. Range end cannot be before start.'),
    (INTEGERS, "1,1", "1,1: set contains duplicate value"),
    (INTEGERS, "[1", '[1: missing "]" at end of data'),
    (INTEGERS, "[1] 2", '[1] 2: trailing garbage after "]"'),
    (INTEGERS, "[1,=]", '[1,=]: unexpected "=" parsing set of integers'),
    (REAL, "2.5", (2.5,)),
    (REAL, "-0", (0.0,)),
    (REAL, "1e999", '"1e999" is not a valid real number'),
    (REAL, "nan", '"nan" is not a valid real number'),
    (BOOLEAN, "yes", (True,)),
    (BOOLEAN, "off", (False,)),
    (BOOLEAN, "maybe", '"maybe" is not a valid boolean (use "true" or "false")'),
    (STRINGS, 'a,"b c"', ("a", "b c")),
    (STRINGS, r"a\,b", ("a,b",)),
    (STRINGS, '"say \\"hi\\""', ('say "hi"',)),
    (STRINGS, '"\\u00e9t\\u00e9"', ("été",)),
    (STRINGS, '"open', '"open: quoted string extends past end of argument'),
    (STRINGS, "a\\", "a\\: backslash at end of argument"),
    (STRINGS, '""', ("",)),
    (OPTIONAL, "[]", ()),
    (MAP, "{a=1, b=\"x y\"}", (("a", "1"), ("b", "x y"))),
    (MAP, "a=1 b=2", (("a", "1"), ("b", "2"))),
    (MAP, "{}", ()),
    (MAP, "", 'use "{}" to specify the empty map'),
    (MAP, "{a}", 'a}: syntax error at "}" expecting "="'),  # OVS quotes from the pair on
    (MAP, "a=1,a=2", "a=1,a=2: map contains duplicate key"),
    (UUIDS, UUID.upper(), (UUID,)),
    (UUIDS, "0123", '"0123" is not a valid UUID'),
]


@pytest.mark.parametrize(("type_json", "text", "expected"), CASES,
                         ids=[f"{i}:{text}" for i, (_, text, _) in enumerate(CASES)])
def test_value_syntax(type_json: Any, text: str, expected: Any) -> None:
    type_ = Type.from_json(type_json)
    if isinstance(expected, tuple):
        assert parse_datum(type_, text, None) == expected
    else:
        with pytest.raises(ValueSyntaxError) as caught:
            parse_datum(type_, text, None)
        assert str(caught.value) == expected


def test_row_ids_stand_for_new_rows_and_count_strong_references() -> None:
    symbols = Symbols()
    type_ = Type.from_json(UUIDS)
    (first,) = parse_datum(type_, "@new", symbols)
    assert symbols["@new"].uuid == first and symbols["@new"].strong_ref
    assert not symbols["@new"].created
    assert symbols.create("@new").uuid == first
    with pytest.raises(ValueSyntaxError, match='may only be specified on one --id option'):
        symbols.create("@new")
    with pytest.raises(ValueSyntaxError, match='does not begin with "@"'):
        symbols.create("new")


@pytest.mark.parametrize(("text", "start", "token", "end"), [
    ("mtu=1500", 0, "mtu", 3),
    ("other_config:vlan=10", 13, "vlan", 17),
    ('external_ids:"a:b"=c', 13, '"a:b"', 18),
    (r"a\:b=c", 0, "a:b", 4),
])
def test_tokens_end_at_delimiters(text: str, start: int, token: str, end: int) -> None:
    assert parse_token(text, start) == (token, end)

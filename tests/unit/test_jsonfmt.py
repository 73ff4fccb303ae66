"""Unit tests for tegadb.core.jsonfmt: numbers and JSON text as OVS writes them.

The expected texts are what ovsdb-server 3.1 quoted in an error's "syntax"
for each number, and what ovsdb-client 3.1 printed for JSON it received
(tests/integration/test_server.py checks the server side live).
"""

from __future__ import annotations

from typing import Any

import pytest

from tegadb.core.jsonfmt import ovs_json, ovs_parsed, real_json, syntax_text


@pytest.mark.parametrize("value,expected", [
    (3.0, "3"),
    (-0.0, "0"),
    (1e15, "1000000000000000"),
    (1.5e15, "1500000000000000"),
    (1e16, "10000000000000000"),
    (123456789012345678.0, "123456789012345680"),
    (-9.2e18, "-9200000000000000000"),
    (-(2**63), "-9223372036854775808"),
    (2**63 - 1, "9223372036854775807"),
    (2**63, "9.22337203685478e+18"),      # past int64: a real, as OVS parses it
    (10**20, "1e+20"),
    (9.3e18, "9.3e+18"),
    (1e20, "1e+20"),
    (1.5e-7, "1.5e-07"),
    (1e-5, "1e-05"),
    (0.0001, "0.0001"),
    (0.30000000000000004, "0.3"),
    (1e300, "1e+300"),
    (True, "true"),
    (None, "null"),
])
def test_syntax_text_numbers_as_ovsdb_server_quotes_them(value: Any, expected: str) -> None:
    assert syntax_text({"x": [value]}) == f'{{"x":[{expected}]}}'


def test_syntax_text_sorts_members_and_keeps_strings() -> None:
    assert syntax_text({"b": "é/\n", "a": {"d": [], "c": {}}}) == \
        '{"a":{"c":{},"d":[]},"b":"é/\\n"}'


def test_ovs_parsed_leaves_types_alone_but_numbers() -> None:
    value = {"a": [1.0, 2.5, "1.0", True, None, {"b": 7.0}]}
    parsed = ovs_parsed(value)
    assert parsed == {"a": [1, 2.5, "1.0", True, None, {"b": 7}]}
    assert [type(v) for v in parsed["a"][:2]] == [int, float]
    assert parsed["a"][3] is True


def test_ovs_json_text() -> None:
    # What ovsdb-client prints for values it parsed from the wire (checked
    # against 3.1): integral numbers are integers, reals %.15g, keys sorted.
    value = ovs_parsed({"b": [1.0, 1e15, 0.1, 1e300, 2.5], "a": {}, "c": []})
    assert ovs_json(value) == '{"a":{},"b":[1,1000000000000000,0.1,1e+300,2.5],"c":[]}'
    assert ovs_json(value, pretty=True) == (
        '{\n  "a": {\n    },\n  "b": [\n    1,\n    1000000000000000,\n    0.1,\n'
        '    1e+300,\n    2.5],\n  "c": []}')


@pytest.mark.parametrize("value,expected", [
    (2.0, 2), (-15.0, -15), (0.30000000000000004, 0.3), (1e15, 1e15), (1e300, 1e300),
])
def test_real_atoms_print_with_15_digits(value: float, expected: float) -> None:
    # A real atom keeps "%.15g": 1e15 stays a real, unlike a parsed number.
    result = real_json(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_ovs_json_never_writes_nan_or_infinity(value: float) -> None:
    with pytest.raises(ValueError, match="is not a JSON number"):
        ovs_json({"x": [value]})

"""JSON numbers and text as Open vSwitch reads and writes them.

Two rules for numbers, for two different things (both checked against
ovsdb-server and ovsdb-client 3.1):
- OVS's JSON parser (lib/json.c) reads a number as an integer whenever its
  value is integral and fits in 64 bits, however it is written (``3.0``,
  ``1e15``, ``-0.0``), and as a real otherwise (``2.5``, ``1e20``,
  ``9223372036854775808``).  `ovs_parsed` applies that rule to JSON that
  Python parsed.  It is how ovsdb-server quotes a request's JSON in an
  error's "syntax" (`syntax_text`), and how ovsdb-client prints the JSON it
  received from a server.
- OVS writes a real with ``%.15g``: `real_json` is the JSON number a real
  atom is sent as, and `ovs_json` writes reals that way.
`ovs_json` writes JSON text as OVS's ``json_to_string`` does: members
sorted, no spaces, or its "pretty" layout; never NaN or Infinity, which JSON
lacks (it raises ValueError instead).
"""

from __future__ import annotations

import math
from typing import Any

import ujson

# Integral reals print as integers below this, as "%.15g" does.
_INTEGRAL_LIMIT = 1e15
# OVS's parser reads integers into a C long long.
_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1


def format_real(value: float) -> str:
    """A real's text as OVS prints it (``%.15g``)."""
    return format(value, ".15g")


def real_json(value: float) -> int | float:
    """A real as OVS prints it (``%.15g``): 2.0 -> 2, 0.30000000000000004 -> 0.3."""
    if value.is_integer() and -_INTEGRAL_LIMIT < value < _INTEGRAL_LIMIT:
        return int(value)
    return float(format_real(value))


def ovs_parsed(value: Any) -> Any:
    """`value` (parsed JSON) with its numbers as OVS's JSON parser reads them."""
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() and _LONG_MIN <= value <= _LONG_MAX else value
    if kind is int:
        return value if _LONG_MIN <= value <= _LONG_MAX else float(value)
    if kind is list:
        return [ovs_parsed(v) for v in value]
    if kind is dict:
        return {k: ovs_parsed(v) for k, v in value.items()}
    return value


def syntax_text(value: Any) -> str:
    """The offending JSON as ovsdb-server quotes it in errors: numbers as it
    parsed them, sorted members, no spaces."""
    return ovs_json(ovs_parsed(value))


def ovs_json(value: Any, pretty: bool = False) -> str:
    """JSON as OVS's ``json_to_string(value, JSSF_SORT [| JSSF_PRETTY])`` writes it."""
    out: list[str] = []
    _serialize(value, pretty, 0, out)
    return "".join(out)


def _quote(text: str) -> str:
    # Same escapes as OVS: \" \\ \b \f \n \r \t, other controls as \u00xx.
    return ujson.dumps(text, ensure_ascii=False, escape_forward_slashes=False)


def _newline(pretty: bool, depth: int, out: list[str]) -> None:
    if pretty:
        out.append("\n" + "  " * depth)


def _serialize(value: Any, pretty: bool, depth: int, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        out.append(format_real(value))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, dict):
        # OVS breaks the line after "{" even for an empty object.
        out.append("{")
        _newline(pretty, depth + 1, out)
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(",")
                _newline(pretty, depth + 1, out)
            out.append(_quote(key) + (": " if pretty else ":"))
            _serialize(value[key], pretty, depth + 1, out)
        out.append("}")
    else:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _newline(pretty, depth + 1, out)
            _serialize(item, pretty, depth + 1, out)
        out.append("]")

"""JSON text as ovsdb-server writes it: compact, sorted where asked, reals to 15 digits."""

from __future__ import annotations

from typing import Any

import ujson

# Integral reals print as integers up to here, as "%.15g" does.
_INTEGRAL_LIMIT = 1e15


def real_json(value: float) -> int | float:
    """A real as OVS prints it (``%.15g``): 2.0 -> 2, 0.30000000000000004 -> 0.3."""
    if value.is_integer() and -_INTEGRAL_LIMIT < value < _INTEGRAL_LIMIT:
        return int(value)
    return float(format(value, ".15g"))


def _with_ovs_reals(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return real_json(value)
    if kind is list:
        return [_with_ovs_reals(v) for v in value]
    if kind is dict:
        return {k: _with_ovs_reals(v) for k, v in value.items()}
    return value


def syntax_text(value: Any) -> str:
    """The offending JSON as OVS quotes it in errors: sorted keys, no spaces."""
    return ujson.dumps(_with_ovs_reals(value), sort_keys=True, ensure_ascii=False,
                       escape_forward_slashes=False)

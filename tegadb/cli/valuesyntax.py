"""The value syntax of ovs-vsctl's database commands: text <-> datums.

``mtu=1500``, ``other_config:vlan=10``, ``tags=[a, "b c"]``,
``options={k=v, k2=v2}``, ``trunks=1-4``: OVS's ``ovsdb_token_parse``,
``ovsdb_atom_from_string`` and ``ovsdb_datum_from_string`` (lib/ovsdb-data.c),
with their error messages, on tegadb's datums (sorted tuples of atoms, or of
``(key, value)`` pairs; see core/values.py).  Parsing yields a datum or
raises `ValueSyntaxError`; ``@name`` in a uuid position is looked up in (or
added to) a `Symbols` table.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core import values
from ..core.atoms import INT64_MAX, INT64_MIN, UUID_RE
from ..core.errors import OVSDBError
from ..core.ids import new_uuid
from ..core.types import BaseType, Type

DELIMITERS = ":=, []{}!<>"
MAX_RANGE_SIZE = 4096  # OVS's MAX_OVSDB_ATOM_RANGE_SIZE
_INTEGER_RE = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+\Z")
_RANGE_RE = re.compile(r"([+-]?[0-9]+)-([+-]?[0-9]+)\Z")
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}


class ValueSyntaxError(Exception):
    """Text that is not a value of the wanted type; the message is OVS's."""


@dataclass
class Symbol:
    """An ``@name`` row id: a placeholder uuid until the transaction commits."""

    name: str
    uuid: str = field(default_factory=new_uuid)
    created: bool = False  # by ``--id=@name create`` (or ``get``): defined
    strong_ref: bool = False  # something holds a strong reference to it (or it needs none)
    weak_ref: bool = False


class Symbols(dict[str, Symbol]):
    """The ``@name`` symbol table of one run of the commands."""

    def reference(self, name: str, base: BaseType) -> Symbol:
        """``name`` used where ``base`` (a uuid type) is wanted."""
        symbol = self.get(name)
        if symbol is None:
            symbol = self[name] = Symbol(name)
        symbol.strong_ref |= base.is_strong_ref
        symbol.weak_ref |= base.is_weak_ref
        return symbol

    def create(self, name: str) -> Symbol:
        """OVS's ``create_symbol``: ``name`` defined by a ``--id`` option."""
        if not name.startswith("@"):
            raise ValueSyntaxError(f'row id "{name}" does not begin with "@"')
        symbol = self.get(name)
        if symbol is None:
            symbol = self[name] = Symbol(name)
        if symbol.created:
            raise ValueSyntaxError(f'row id "{name}" may only be specified on one --id option')
        symbol.created = True
        return symbol


def is_delimiter(c: str) -> bool:
    return c in DELIMITERS


def parse_token(text: str, start: int = 0) -> tuple[str, int]:
    """``ovsdb_token_parse``: the token at ``start`` and the index just after it.

    A backslash escapes a delimiter (and is dropped); double quotes make
    delimiters ordinary (and are kept, as is a backslash inside them).
    """
    out = []
    in_quotes = False
    i = start
    while i < len(text):
        c = text[i]
        i += 1
        if c == "\\":
            if in_quotes:
                out.append("\\")
            if i >= len(text):
                raise ValueSyntaxError(f"{text[start:]}: backslash at end of argument")
            out.append(text[i])
            i += 1
        elif not in_quotes and is_delimiter(c):
            i -= 1
            break
        else:
            out.append(c)
            if c == '"':
                in_quotes = not in_quotes
    if in_quotes:
        raise ValueSyntaxError(f"{text[start:]}: quoted string extends past end of argument")
    return "".join(out), i


def parse_atom(base: BaseType, text: str, symbols: Symbols | None) -> Any:
    """``ovsdb_atom_from_string`` without ranges: one atom, constraints checked."""
    atom = _atom(base, text, symbols)
    _check(base, atom)
    return atom


def _check(base: BaseType, atom: Any) -> None:
    try:
        values.check_atom(base, atom)
    except OVSDBError as e:
        raise ValueSyntaxError(str(e)) from None


def _atom(base: BaseType, text: str, symbols: Symbols | None) -> Any:
    kind = base.type
    if kind == "integer":
        if not _INTEGER_RE.match(text) or not INT64_MIN <= int(text) <= INT64_MAX:
            raise ValueSyntaxError(f'"{text}" is not a valid integer or range')
        return int(text)
    if kind == "real":
        return _real(text)
    if kind == "boolean":
        if text not in _BOOLEANS:
            raise ValueSyntaxError(f'"{text}" is not a valid boolean (use "true" or "false")')
        return _BOOLEANS[text]
    if kind == "string":
        return _string(text)
    if text.startswith("@") and symbols is not None:
        return symbols.reference(text, base).uuid
    if not UUID_RE.match(text):
        raise ValueSyntaxError(f'"{text}" is not a valid UUID')
    return text.lower()


def _real(text: str) -> float:
    stripped = text.lstrip(" \t\n\v\f\r")
    try:
        # strtod's syntax, less the hex and inf/nan forms Python spells differently.
        if "_" in stripped or not stripped:
            raise ValueError
        number = float(stripped)
    except ValueError:
        raise ValueSyntaxError(f'"{text}" is not a valid real number') from None
    if not math.isfinite(number):
        raise ValueSyntaxError(f'"{text}" is not a valid real number')
    return number + 0.0  # OVS reads -0 as 0


def _string(text: str) -> str:
    if not text:
        raise ValueSyntaxError('An empty string is not valid as input; '
                               'use "" to represent the empty string')
    if not text.startswith('"'):
        return text
    if len(text) < 2 or not text.endswith('"'):
        raise ValueSyntaxError(f"{text}: missing quote at end of quoted string")
    body = text[1:-1]
    if re.search(r'(?<!\\)(?:\\\\)*"', body):
        raise ValueSyntaxError(f'{text}: quoted string may not include unescaped "')
    try:
        unquoted: str = json.loads(text)
    except ValueError:
        raise ValueSyntaxError(f"{text}: bad escape in quoted string") from None
    return unquoted


def _atoms_or_range(base: BaseType, token: str, symbols: Symbols | None) -> list[Any]:
    """An atom, or for an integer key ``A-B``: every integer from A to B."""
    found = _RANGE_RE.match(token) if base.type == "integer" else None
    if found is None:
        return [parse_atom(base, token, symbols)]
    start, end = int(found.group(1)), int(found.group(2))
    if end < start:
        raise ValueSyntaxError(f'"{token}" is not a valid range. '
                               "Range end cannot be before start.")
    for atom in range(start, end + 1) if base.enum is not None else (start, end):
        _check(base, atom)
    if end - start >= MAX_RANGE_SIZE:
        raise ValueSyntaxError(f'constraint violation: Range "{start}-{end}" is too big. '
                               f"Maximum allowed size is {MAX_RANGE_SIZE}.")
    return list(range(start, end + 1))


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def parse_datum(type_: Type, text: str, symbols: Symbols | None) -> values.Datum:
    """``ovsdb_datum_from_string``: space- or comma-separated atoms (``k=v``
    pairs for a map), optionally in ``[]`` (a set) or ``{}`` (a map)."""
    is_map = type_.is_map
    i = _skip_spaces(text, 0)
    end_delim = ""
    if text[i:i + 1] == ("{" if is_map else "["):
        end_delim = "}" if is_map else "]"
        i = _skip_spaces(text, i + 1)
    elif i == len(text):
        raise ValueSyntaxError('use "{}" to specify the empty map' if is_map
                               else 'use "[]" to specify the empty set')
    elements: list[Any] = []
    while i < len(text) and text[i] != end_delim:
        if is_delimiter(text[i]):
            raise ValueSyntaxError(f'{text}: unexpected "{text[i]}" parsing {type_.english()}')
        start = i
        token, i = parse_token(text, i)
        keys = _atoms_or_range(type_.key, token, symbols)
        if type_.value is not None:
            i = _skip_spaces(text, i)
            if text[i:i + 1] != "=":
                raise ValueSyntaxError(f'{text[start:]}: syntax error at "{text[i:i + 1]}" '
                                       'expecting "="')
            token, i = parse_token(text, _skip_spaces(text, i + 1))
            value = parse_atom(type_.value, token, symbols)
            elements.extend((key, value) for key in keys)
        else:
            elements.extend(keys)
        i = _skip_spaces(text, i)
        if text[i:i + 1] == ",":
            i = _skip_spaces(text, i + 1)
    if text[i:i + 1] != end_delim:
        raise ValueSyntaxError(f'{text}: missing "{end_delim}" at end of data')
    if end_delim and _skip_spaces(text, i + 1) < len(text):
        raise ValueSyntaxError(f'{text}: trailing garbage after "{end_delim}"')
    what = "pair(s)" if is_map else "value(s)"
    if len(elements) < type_.n_min:
        raise ValueSyntaxError(f"{text}: {len(elements)} {what} specified but the minimum "
                               f"number is {type_.n_min}")
    if len(elements) > type_.n_max:
        raise ValueSyntaxError(f"{text}: {len(elements)} {what} specified but the maximum "
                               f"number is {type_.n_max}")
    keys_seen = {e[0] for e in elements} if is_map else set(elements)
    if len(keys_seen) != len(elements):
        raise ValueSyntaxError(f"{text}: map contains duplicate key" if is_map
                               else f"{text}: set contains duplicate value")
    return tuple(sorted(elements))


__all__ = ["Symbol", "Symbols", "ValueSyntaxError", "parse_atom", "parse_datum", "parse_token"]

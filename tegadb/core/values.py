"""OVSDB values: JSON notation <-> Python datums, and constraint checks.

Representation (relied on everywhere):
- atoms are ``int``, ``float``, ``bool``, ``str``; a uuid is its canonical
  lowercase text;
- a datum is always a tuple: sorted distinct atoms for scalars, optionals and
  sets; sorted ``(key, value)`` pairs with distinct keys for maps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from .atoms import (
    ATOM_PARSERS,
    INT64_MAX,
    INT64_MIN,
    UUID_RE,
    NamedUUIDs,
    atoms_to_json,
    json_wrapper,
    parse_atoms,
    size_message,
    unwrap,
)
from .errors import OVSDBError, constraint_violation, syntax_error, syntax_text
from .jsonfmt import format_real
from .types import BaseType, Type

Datum = tuple


# --- atoms ---------------------------------------------------------------

def atom_to_json(base: BaseType, atom: Any) -> Any:
    wrap = json_wrapper(base.type)
    return atom if wrap is None else wrap(atom)


def _string_needs_quotes(s: str) -> bool:
    if not s or not (s[0].isascii() and (s[0].isalpha() or s[0] == "_")):
        return True
    for c in s[1:]:
        if not (c.isascii() and (c.isalnum() or c in "_-.")):
            return True
    return s in ("true", "false") or UUID_RE.match(s) is not None


def atom_to_string(base_type: str, atom: Any) -> str:
    """An atom as OVS writes it in messages and in ovsdb-client's tables."""
    if base_type == "real":
        return format_real(atom)
    if base_type == "boolean":
        return "true" if atom else "false"
    if base_type == "string":
        return syntax_text(atom) if _string_needs_quotes(atom) else atom
    return str(atom)


def check_atom(base: BaseType, atom: Any) -> None:
    """Raise ``constraint violation`` if ``atom`` breaks ``base``'s constraints."""
    if base.enum is not None:
        if atom not in base.enum:
            allowed = ", ".join(atom_to_string(base.type, a) for a in base.enum)
            raise constraint_violation(
                f"{atom_to_string(base.type, atom)} is not one of the allowed values ([{allowed}])")
        return
    kind = base.type
    if kind == "integer":
        _check_range(atom, base.min_integer, base.max_integer, str)
    elif kind == "real":
        _check_range(atom, base.min_real, base.max_real, format_real)
    elif kind == "string" and (base.min_length is not None or base.max_length is not None):
        length = len(atom)
        if base.min_length is not None and length < base.min_length:
            raise constraint_violation(
                f'"{atom}" length {length} is less than minimum allowed length {base.min_length}')
        if base.max_length is not None and length > base.max_length:
            raise constraint_violation(
                f'"{atom}" length {length} is greater than maximum allowed length {base.max_length}')


def _check_range(value: Any, lo: Any, hi: Any, show: Callable[[Any], str]) -> None:
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return
    if lo is not None and hi is not None:
        raise constraint_violation(
            f"{show(value)} is not in the valid range {show(lo)} to {show(hi)} (inclusive)")
    if lo is not None:
        raise constraint_violation(f"{show(value)} is less than minimum allowed value {show(lo)}")
    raise constraint_violation(f"{show(value)} is greater than maximum allowed value {show(hi)}")


def _needs_check(base: BaseType) -> bool:
    # refTable is the only uuid constraint, and it is checked at commit.
    return base.enum is not None or (base.has_constraints and base.ref_table is None)


# --- datums --------------------------------------------------------------

def parse(type_: Type, json: Any, symtab: NamedUUIDs | None = None) -> Datum:
    """Parse OVSDB JSON into a datum of ``type_``, checking every constraint."""
    datum = parse_unchecked(type_, json, symtab)
    check(type_, datum)
    return datum


def parse_unchecked(type_: Type, json: Any, symtab: NamedUUIDs | None = None) -> Datum:
    """Parse with type and size checks but without atom constraints."""
    if type_.is_map:
        return _parse_map(type_, json, symtab)
    return parse_atoms(type_.key.type, type_.n_min, type_.n_max, json, symtab)


def _parse_map(type_: Type, json: Any, symtab: NamedUUIDs | None) -> Datum:
    elements = unwrap(json, "map")
    n = len(elements)
    if not type_.n_min <= n <= type_.n_max:
        raise syntax_error(size_message("map", type_.n_min, type_.n_max, n), json)
    assert type_.value is not None
    parse_key = ATOM_PARSERS[type_.key.type]
    parse_value = ATOM_PARSERS[type_.value.type]
    pairs = {}
    for element in elements:
        if type(element) is not list or len(element) != 2:
            raise syntax_error("expected 2-element array", element)
        key = parse_key(element[0], symtab)
        if key in pairs:
            raise OVSDBError("ovsdb error", "map contains duplicate key")
        pairs[key] = parse_value(element[1], symtab)
    return tuple(sorted(pairs.items()))


def check(type_: Type, datum: Datum) -> None:
    """Atom constraint checks (enum, ranges, lengths) over a whole datum."""
    key, value = type_.key, type_.value
    if type_.is_map:
        assert value is not None
        check_key, check_value = _needs_check(key), _needs_check(value)
        if check_key or check_value:
            for k, v in datum:
                if check_key:
                    check_atom(key, k)
                if check_value:
                    check_atom(value, v)
    elif _needs_check(key):
        for atom in datum:
            check_atom(key, atom)


def needs_check(type_: Type) -> bool:
    """Whether parsed values of ``type_`` need :func:`check` (references are checked at commit)."""
    return _needs_check(type_.key) or (type_.value is not None and _needs_check(type_.value))


# Python types of the atoms that stand for themselves in JSON (bool is not an int here).
_PLAIN_ATOMS: dict[str, type] = {"string": str, "boolean": bool}


class ValueParser:
    """Parses the JSON of one column type into a datum (:func:`parse_unchecked`).

    Parsers are objects rather than closures because they are called once per
    column value: from compiled code a method call on them is a direct call,
    where calling a closure goes through Python's generic call protocol,
    which cost about ten times the work of the parse itself during replay.
    """

    def __init__(self, type_: Type) -> None:
        self.column_type = type_

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        return parse_unchecked(self.column_type, json, symtab)


@functools.cache
def parser(type_: Type, checked: bool = True) -> ValueParser:
    """:func:`parse` (or, unless ``checked``, :func:`parse_unchecked`, as journal
    replay wants) specialised for one column type, made once per type.

    A bare string, boolean or in-range integer, and a set or map of strings
    or booleans, take one call; every other form, and every error, goes the
    general way.
    """
    if checked and needs_check(type_):
        return _CheckedParser(type_)
    key_type = type_.key.type
    atom_type = _PLAIN_ATOMS.get(key_type)
    if type_.is_map:
        assert type_.value is not None
        value_type = _PLAIN_ATOMS.get(type_.value.type)
        if atom_type is not None and value_type is not None:
            return _PlainMapParser(type_, atom_type, value_type)
    elif atom_type is not None:
        if type_.is_composite:
            return _PlainSetParser(type_, atom_type)
        return _PlainAtomParser(type_, atom_type)
    elif key_type == "integer":
        return _IntegerParser(type_)
    return ValueParser(type_)


class _CheckedParser(ValueParser):
    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        return parse(self.column_type, json, symtab)


class _PlainAtomParser(ValueParser):
    """A single string or boolean."""

    def __init__(self, type_: Type, atom_type: type) -> None:
        super().__init__(type_)
        self.atom_type = atom_type

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        if type(json) is self.atom_type:
            return (json,)
        return parse_unchecked(self.column_type, json, symtab)


class _IntegerParser(ValueParser):
    """A single integer, or an optional or set of integers."""

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        # Testing `kind` rather than `type(json)` leaves `json` an object:
        # narrowed to int, compiled code would unbox it and box a new int.
        kind = type(json)
        if kind is int and INT64_MIN <= json <= INT64_MAX:
            return (json,)
        return parse_unchecked(self.column_type, json, symtab)


# The fast parsers below take sets and maps whose elements come in order (as
# OVSDB JSON is usually written, and as the journal always holds it) as they
# are; anything else, every error included, goes the general way.

class _PlainSetParser(_PlainAtomParser):
    """Sets of strings or booleans: a bare atom, or ``["set", [atoms in order]]``."""

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        atom_type = self.atom_type
        if type(json) is atom_type:
            return (json,)
        if type(json) is list and len(json) == 2 and json[0] == "set":
            atoms = json[1]
            type_ = self.column_type
            if type(atoms) is list and type_.n_min <= len(atoms) <= type_.n_max:
                previous: Any = None
                for atom in atoms:
                    if type(atom) is not atom_type or (previous is not None and previous >= atom):
                        break
                    previous = atom
                else:
                    return tuple(atoms)
        return parse_unchecked(self.column_type, json, symtab)


class _PlainMapParser(ValueParser):
    """Maps between strings or booleans: ``["map", [[key, value] pairs in key order]]``."""

    def __init__(self, type_: Type, key_type: type, value_type: type) -> None:
        super().__init__(type_)
        self.key_type = key_type
        self.value_type = value_type

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        if type(json) is list and len(json) == 2 and json[0] == "map":
            pairs = json[1]
            type_ = self.column_type
            if type(pairs) is list and type_.n_min <= len(pairs) <= type_.n_max:
                key_type, value_type = self.key_type, self.value_type
                datum = []
                previous: Any = None
                for pair in pairs:
                    if (type(pair) is not list or len(pair) != 2
                            or type(pair[0]) is not key_type or type(pair[1]) is not value_type
                            or (previous is not None and previous >= pair[0])):
                        break
                    previous = pair[0]
                    datum.append((previous, pair[1]))
                else:
                    return tuple(datum)
        return parse_unchecked(self.column_type, json, symtab)


@functools.cache
def encoder(type_: Type) -> Callable[[Datum], Any]:
    """:func:`to_json` specialised for one column type (compiled once per type)."""
    plain_key = json_wrapper(type_.key.type) is None
    if type_.is_scalar and plain_key:
        return itemgetter(0)  # a C call: the commonest column by far
    if type_.is_map:
        assert type_.value is not None
        if plain_key and json_wrapper(type_.value.type) is None:
            def encode_plain_map(datum: Datum) -> Any:
                return ["map", list(map(list, datum))]
            return encode_plain_map
    elif plain_key:
        def encode_plain_set(datum: Datum) -> Any:
            return datum[0] if len(datum) == 1 else ["set", list(datum)]
        return encode_plain_set
    return functools.partial(to_json, type_)


def check_size(type_: Type, datum: Datum) -> None:
    """The size rule after a mutation, worded as OVS does."""
    if not type_.n_min <= len(datum) <= type_.n_max:
        raise constraint_violation(
            f"Attempted to store {len(datum)} elements in {type_.english()}.")


def to_json(type_: Type, datum: Datum) -> Any:
    """OVSDB JSON notation: a 1-element set is a bare atom; maps always wrapped.

    Reals print as ovsdb-server prints them (15 significant digits).
    """
    if not type_.is_map:
        return atoms_to_json(type_.key.type, datum)
    assert type_.value is not None
    wrap_key = json_wrapper(type_.key.type)
    wrap_value = json_wrapper(type_.value.type)
    if wrap_key is None and wrap_value is None:
        return ["map", [[k, v] for k, v in datum]]
    return ["map", [[k if wrap_key is None else wrap_key(k),
                     v if wrap_value is None else wrap_value(v)] for k, v in datum]]


def default(type_: Type) -> Datum:
    """The default datum: empty when min is 0, else one default atom (pair)."""
    if type_.n_min == 0:
        return ()
    key = type_.key.default_atom()
    if type_.value is not None:
        return ((key, type_.value.default_atom()),)
    return (key,)


def diff(type_: Type, old: Datum, new: Datum) -> Datum:
    """update2 / journal diff from ``old`` to ``new``."""
    if not type_.is_composite:
        return new
    if not type_.is_map:
        return tuple(sorted(set(old).symmetric_difference(new)))
    old_map, new_map = dict(old), dict(new)
    changes = [(k, v) for k, v in new_map.items() if old_map.get(k, _MISSING) != v]
    changes += [(k, v) for k, v in old_map.items() if k not in new_map]
    return tuple(sorted(changes))


def apply_diff(type_: Type, old: Datum, change: Datum) -> Datum:
    """Inverse of :func:`diff`: the new datum from ``old`` and a diff."""
    if not type_.is_composite:
        return change
    if not type_.is_map:
        return tuple(sorted(set(old).symmetric_difference(change)))
    result = dict(old)
    for k, v in change:
        if result.get(k, _MISSING) == v:
            del result[k]
        else:
            result[k] = v
    return tuple(sorted(result.items()))


_MISSING = object()


__all__ = [
    "Datum",
    "apply_diff",
    "atom_to_json",
    "atom_to_string",
    "check",
    "check_atom",
    "check_size",
    "default",
    "diff",
    "encoder",
    "needs_check",
    "parse",
    "parse_unchecked",
    "parser",
    "to_json",
]

"""OVSDB atoms: each atomic type's JSON form, and the ``named-uuid`` symbol table.

Below types.py and values.py, which both build on it: a column type's enum
is a set of atoms, as is a value.  An atom is an ``int``, ``float``,
``bool`` or ``str`` (a uuid is its canonical lowercase text); a set of atoms
is a sorted tuple of distinct ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

from .errors import OVSDBError, syntax_error
from .ids import new_uuid
from .jsonfmt import real_json

# Final: compiled code uses the values, not a module lookup per comparison.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def is_id(value: Any) -> bool:
    """True for an OVSDB <id>: ``[A-Za-z_][A-Za-z0-9_]*``."""
    return isinstance(value, str) and ID_RE.match(value) is not None


class NamedUUIDs:
    """The ``uuid-name`` symbol table of one transaction.

    A name used before (or without) its ``insert`` gets a UUID at first use;
    the insert that declares it later binds to that same UUID.
    """

    __slots__ = ("declared", "uuids")

    def __init__(self) -> None:
        self.uuids: dict[str, str] = {}
        self.declared: set[str] = set()

    def resolve(self, name: str) -> str:
        found = self.uuids.get(name)
        if found is None:
            found = self.uuids[name] = new_uuid()
        return found

    def declare(self, name: str, uuid: str | None = None) -> str:
        """Bind ``name`` for an insert; returns the row's UUID."""
        if name in self.declared:
            raise OVSDBError(
                "duplicate uuid-name",
                'This "uuid-name" appeared on an earlier "insert" operation.', name)
        self.declared.add(name)
        if uuid is not None:
            self.uuids[name] = uuid
            return uuid
        return self.resolve(name)


def _parse_integer(json: Any, symtab: NamedUUIDs | None) -> int:
    kind = type(json)
    if kind is int:
        if INT64_MIN <= json <= INT64_MAX:
            return json
        # OVS reads a number beyond int64 as a real, and quotes it so.
        raise syntax_error("expected integer", float(json))
    if kind is float and json.is_integer() and INT64_MIN <= json <= INT64_MAX:
        return int(json)
    raise syntax_error("expected integer", json)


def _parse_real(json: Any, symtab: NamedUUIDs | None) -> float:
    kind = type(json)
    if kind is float:
        if math.isfinite(json):
            return json
    elif kind is int:
        value = float(json)
        if math.isfinite(value):
            return value
    raise syntax_error("expected real", json)


def _parse_boolean(json: Any, symtab: NamedUUIDs | None) -> bool:
    if type(json) is bool:
        return json
    raise syntax_error("expected boolean", json)


def _parse_string(json: Any, symtab: NamedUUIDs | None) -> str:
    if type(json) is str:
        return json
    raise syntax_error("expected string", json)


def _parse_uuid(json: Any, symtab: NamedUUIDs | None) -> str:
    if type(json) is list and len(json) == 2 and type(json[1]) is str:
        tag, text = json
        if tag == "uuid":
            if UUID_RE.match(text):
                return text.lower()
            raise syntax_error(f'"{text}" is not a valid UUID', json)
        if tag == "named-uuid" and symtab is not None:
            if not is_id(text):
                raise syntax_error("named-uuid string is not a valid <id>", json)
            return symtab.resolve(text)
    raise syntax_error('expected ["uuid", <string>]', json)


ATOM_PARSERS: dict[str, Callable[[Any, NamedUUIDs | None], Any]] = {
    "integer": _parse_integer,
    "real": _parse_real,
    "boolean": _parse_boolean,
    "string": _parse_string,
    "uuid": _parse_uuid,
}


def size_message(kind: str, n_min: int, n_max: int, n: int) -> str:
    """A set or map of ``n`` elements outside ``n_min``..``n_max``, in OVS's words."""
    if n_min == 1 and n_max == 1:
        return f"{kind} must have exactly one member but {n} are present"
    return f"{kind} must have {n_min} to {n_max} members but {n} are present"


def unwrap(json: Any, kind: str) -> list[Any]:
    """The elements of ``["set", [...]]`` or ``["map", [...]]``."""
    if type(json) is list and len(json) == 2 and json[0] == kind and type(json[1]) is list:
        return json[1]
    raise syntax_error(f'expected ["{kind}", <array>]', json)


def parse_atoms(atomic: str, n_min: int, n_max: int, json: Any,
                symtab: NamedUUIDs | None) -> tuple[Any, ...]:
    """A bare atom or ``["set", [atoms]]`` of ``n_min`` to ``n_max`` distinct atoms, sorted."""
    if type(json) is list and len(json) and json[0] == "set":
        return _parse_set(atomic, n_min, n_max, json, symtab)
    return (ATOM_PARSERS[atomic](json, symtab),)


def _parse_set(atomic: str, n_min: int, n_max: int, json: Any,
               symtab: NamedUUIDs | None) -> tuple[Any, ...]:
    elements = unwrap(json, "set")
    n = len(elements)
    if not n_min <= n <= n_max:
        raise syntax_error(size_message("set", n_min, n_max, n), json)
    parse_atom = ATOM_PARSERS[atomic]
    atoms = [parse_atom(e, symtab) for e in elements]
    datum = tuple(sorted(set(atoms)))
    if len(datum) != n:
        raise OVSDBError("ovsdb error", "set contains duplicate")
    return datum


def json_wrapper(base_type: str) -> Callable[[Any], Any] | None:
    """How atoms of a type appear in JSON, when not as they are."""
    if base_type == "uuid":
        return _uuid_json
    if base_type == "real":
        return real_json
    return None


def _uuid_json(atom: str) -> list[str]:
    return ["uuid", atom]



def atoms_to_json(atomic: str, atoms: tuple[Any, ...]) -> Any:
    """Sorted atoms in OVSDB JSON: one is a bare atom, any other number a set."""
    wrap = json_wrapper(atomic)
    if len(atoms) == 1:
        return atoms[0] if wrap is None else wrap(atoms[0])
    if wrap is None:
        return ["set", list(atoms)]
    return ["set", [wrap(a) for a in atoms]]


__all__ = ["ATOM_PARSERS", "INT64_MAX", "INT64_MIN", "UUID_RE", "NamedUUIDs", "atoms_to_json",
           "is_id", "json_wrapper", "parse_atoms", "size_message", "unwrap"]

"""Mutations: the ``mutations`` of a mutate op (PROTOCOL.md 4.6).

Each ``[column, mutator, value]`` is parsed once into a function from the old
datum to the new one.  Arithmetic follows C, as ovsdb-server does: integer
division truncates toward zero, the remainder takes the dividend's sign,
results must fit in int64 (and `*=` refuses some products that fit, as
ovsdb-server does), reals must stay finite, and it applies to every
element of a set.  ``insert`` never overwrites a map key; ``delete`` on a map
takes either pairs or keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from . import values
from .atoms import INT64_MAX, INT64_MIN, NamedUUIDs
from .errors import OVSDBError, syntax_error
from .schema import ColumnSchema, TableSchema
from .types import UNLIMITED, BaseType, Type
from .values import Datum

Row = dict[str, Datum]


class Mutation(NamedTuple):
    """One parsed mutation: ``run`` maps the column's datum to its mutated datum."""

    column: str
    mutator: str
    arg: Datum
    run: Callable[[Datum], Datum]


# --- arithmetic on atoms: OverflowError = range error, ZeroDivisionError = domain error

def _int_checked(value: int) -> int:
    if value < INT64_MIN or value > INT64_MAX:
        raise OverflowError
    return value


def _int_mul(x: int, y: int) -> int:
    # ovsdb-server's overflow test (Hacker's Delight, as OVS wrote it) also
    # refuses products that fit: with both factors positive, x >= INT64_MAX / y;
    # with both negative, whenever y < INT64_MAX / y (|y| above about 3.04e9).
    # It is followed here.  Where that test misses a real overflow (both
    # negative, |y| small), ovsdb-server stores the wrapped product, a fault:
    # that stays a range error.
    if (x > 0 and y > 0 and x >= INT64_MAX // y) or (x < 0 and y < 0 and -y > INT64_MAX // -y):
        raise OverflowError
    return _int_checked(x * y)


def _int_div(x: int, y: int) -> int:
    quotient = abs(x) // abs(y)
    return _int_checked(-quotient if (x < 0) != (y < 0) else quotient)


def _int_mod(x: int, y: int) -> int:
    if x == INT64_MIN and y == -1:
        raise OverflowError  # C traps here; OVS reports it as out of range
    remainder = abs(x) % abs(y)
    return -remainder if x < 0 else remainder


def _real_checked(value: float) -> float:
    if not math.isfinite(value):
        raise OverflowError
    return value


_INTEGER_OPS: dict[str, Callable[[int, int], int]] = {
    "+=": lambda x, y: _int_checked(x + y),
    "-=": lambda x, y: _int_checked(x - y),
    "*=": _int_mul,
    "/=": _int_div,
    "%=": _int_mod,
}

_REAL_OPS: dict[str, Callable[[float, float], float]] = {
    "+=": lambda x, y: _real_checked(x + y),
    "-=": lambda x, y: _real_checked(x - y),
    "*=": lambda x, y: _real_checked(x * y),
    "/=": lambda x, y: _real_checked(x / y),
}

ARITHMETIC = frozenset(_INTEGER_OPS)
MUTATORS = ARITHMETIC | {"insert", "delete"}


def _arithmetic(mutator: str, type_: Type, y: Any) -> Callable[[Datum], Datum]:
    op = (_INTEGER_OPS if type_.key.type == "integer" else _REAL_OPS)[mutator]
    key = type_.key
    constrained = key.has_constraints

    def run(datum: Datum) -> Datum:
        try:
            result = [op(x, y) for x in datum]
        except ZeroDivisionError:
            raise OVSDBError("domain error", "Division by zero.") from None
        except OverflowError:
            raise OVSDBError("range error",
                             f'Result of "{mutator}" operation is out of range.') from None
        if constrained:
            for atom in result:
                values.check_atom(key, atom)
        mutated = tuple(sorted(set(result)))
        if len(mutated) != len(result):
            raise OVSDBError("constraint violation",
                             f'Result of "{mutator}" operation contains duplicates.')
        return mutated
    return run


# --- insert / delete ----------------------------------------------------------

def _sized(type_: Type, datum: Datum) -> Datum:
    values.check_size(type_, datum)
    return datum


def _insert(type_: Type, arg: Datum) -> Callable[[Datum], Datum]:
    if type_.is_map:
        def insert_pairs(datum: Datum) -> Datum:
            merged = dict(arg)
            merged.update(datum)  # existing keys keep their values
            return _sized(type_, tuple(sorted(merged.items())))
        return insert_pairs

    def insert_atoms(datum: Datum) -> Datum:
        return _sized(type_, tuple(sorted(set(datum).union(arg))))
    return insert_atoms


def _delete(type_: Type, arg: Datum, by_key: bool) -> Callable[[Datum], Datum]:
    doomed = frozenset(arg)
    if by_key:
        return lambda datum: _sized(type_, tuple(p for p in datum if p[0] not in doomed))
    return lambda datum: _sized(type_, tuple(e for e in datum if e not in doomed))


# --- parsing ----------------------------------------------------------------

class MutationParser:
    """Parses ``mutations`` arrays for one table."""

    def __init__(self, table: TableSchema) -> None:
        self.table = table
        # Argument types per (column, mutator), worked out on first use.
        self._arg_types: dict[tuple[str, str], Type] = {}

    def parse(self, json: list[Any], symtab: NamedUUIDs | None = None) -> list[Mutation]:
        """Parse a ``mutations`` array (the caller has checked that it is an array)."""
        return [self.mutation(m, symtab) for m in json]

    def mutation(self, json: Any, symtab: NamedUUIDs | None = None) -> Mutation:
        if (type(json) is not list or len(json) != 3
                or type(json[0]) is not str or type(json[1]) is not str):
            raise syntax_error("Parse error in mutation.", json)
        name, mutator, value = json
        column = self._column(name, json)
        arg_type = self._arg_types.get((name, mutator))
        if arg_type is None:
            arg_type = self._arg_types[(name, mutator)] = _argument_type(column, mutator, json)
        type_ = column.type
        if mutator in ARITHMETIC:
            arg = values.parse_unchecked(arg_type, value, symtab)
            return Mutation(name, mutator, arg, _arithmetic(mutator, type_, arg[0]))
        if mutator == "insert":
            arg = values.parse(arg_type, value, symtab)
            return Mutation(name, mutator, arg, _insert(type_, arg))
        if not type_.is_map:
            arg = values.parse(arg_type, value, symtab)
            return Mutation(name, mutator, arg, _delete(type_, arg, by_key=False))
        try:
            arg = values.parse(arg_type, value, symtab)
            by_key = False
        except OVSDBError:
            # Not a map of pairs to delete: a set of keys, then (its error wins).
            arg = values.parse(Type(type_.key, None, 0, UNLIMITED), value, symtab)
            by_key = True
        return Mutation(name, mutator, arg, _delete(type_, arg, by_key))

    def _column(self, name: str, json: list[Any]) -> ColumnSchema:
        column = self.table.columns.get(name)
        if column is None:
            raise OVSDBError("unknown column", f"No column {name} in table {self.table.name}.",
                             json)
        if not column.mutable:
            raise OVSDBError("constraint violation",
                             f"Cannot mutate immutable column {name} in table {self.table.name}.",
                             json)
        return column


def _argument_type(column: ColumnSchema, mutator: str, json: list[Any]) -> Type:
    if mutator not in MUTATORS:
        raise OVSDBError("unknown mutator", f"No mutator named {mutator}.")
    type_ = column.type
    if mutator in ARITHMETIC:
        numeric = type_.key.type == "integer" or (type_.key.type == "real" and mutator != "%=")
        if not (type_.is_scalar or type_.is_set) or not numeric:
            raise _type_mismatch(column, mutator, json)
        # One atom of the element type; the column's constraints apply to the result.
        return Type(BaseType(type_.key.type))
    if not (type_.is_set or type_.is_map):
        raise _type_mismatch(column, mutator, json)
    return type_.relaxed(0) if mutator == "insert" else type_.relaxed(0, UNLIMITED)


def _type_mismatch(column: ColumnSchema, mutator: str, json: list[Any]) -> OVSDBError:
    return syntax_error(f'Type mismatch: "{mutator}" operator may not be applied to column '
                        f"{column.name} of type {column.type.english()}.", json)


def apply(mutations: list[Mutation], row: Row) -> None:
    """Apply the mutations in order to ``row`` (a private copy), in place."""
    for m in mutations:
        row[m.column] = m.run(row[m.column])


__all__ = ["MUTATORS", "Mutation", "MutationParser", "apply"]

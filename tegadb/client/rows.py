"""The replica's rows and their values as plain Python, and back to OVSDB JSON.

Values, by column type (the choice the replica documents):
- atoms: ``int``, ``float``, ``bool``, ``str``; a uuid (a reference) is a
  ``uuid.UUID``, so it never passes for a string;
- a scalar column (min 1, max 1): the atom itself;
- an optional column (min 0, max 1): the atom, or ``None`` when empty;
- a set column (max > 1): a ``frozenset`` of atoms;
- a map column: a ``dict`` (treat it as read-only: rows are shared snapshots).

Writing takes the same forms, and also lists, tuples and sets for sets, a
``Row`` or a uuid string for a reference, and a `NewRow` (a row inserted in
the same transaction) for a reference to it.

A `Row` is immutable: every change to a row makes a new one, so the old and
new rows of a `Change` stay what they were.  Its uuid and version are
``row._uuid`` and ``row._version`` (OVSDB's own column names, which no user
column can take); its columns are ``row.name`` or ``row["name"]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.types import BaseType, Type
from ..core.values import Datum

UUID = uuid.UUID


class Row(Mapping[str, Any]):
    """One row of the replica, as it was at one moment (see the module doc)."""

    __slots__ = ("_table", "_uuid", "_values")

    def __init__(self, table: str, row_uuid: UUID, values: dict[str, Any]) -> None:
        self._table = table
        self._uuid = row_uuid
        self._values = values

    @property
    def _version(self) -> UUID | None:
        """The row's ``_version`` (None if the replica does not follow it)."""
        version: UUID | None = self._values.get("_version")
        return version

    def __getattr__(self, column: str) -> Any:
        if column.startswith("_"):  # no user column does; and copy/pickle probe before __init__
            raise AttributeError(column)
        try:
            return self._values[column]
        except KeyError:
            raise AttributeError(f"table {self._table} has no column {column!r} in the replica") from None

    def __getitem__(self, column: str) -> Any:
        try:
            return self._values[column]
        except KeyError:
            raise KeyError(f"table {self._table} has no column {column!r} in the replica") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return (self._table, self._uuid, self._values) == (other._table, other._uuid, other._values)

    def __repr__(self) -> str:
        columns = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if k != "_version")
        return f"Row({self._table} {self._uuid}: {columns})"


@dataclass(frozen=True)
class Change:
    """One row's change in one update: ``kind`` is "insert", "modify" or
    "delete"; ``old`` is None for an insert, ``new`` for a delete."""

    kind: str
    table: str
    uuid: UUID
    old: Row | None
    new: Row | None


@dataclass(eq=False)
class NewRow:
    """A row a transaction inserts: usable as a reference value in the same
    transaction; ``uuid`` is set once the transaction has committed."""

    table: str
    name: str  # its named-uuid in the transaction
    uuid: UUID | None = field(default=None)


# --- OVSDB datums -> Python ---------------------------------------------------

def _atom_to_python(base: BaseType, atom: Any) -> Any:
    return UUID(atom) if base.type == "uuid" else atom


def to_python(type_: Type, datum: Datum) -> Any:
    """A column's datum (the core's sorted tuple) as the Python value above."""
    key = type_.key
    if type_.is_map:
        assert type_.value is not None
        value = type_.value
        return {_atom_to_python(key, k): _atom_to_python(value, v) for k, v in datum}
    if type_.is_scalar:
        return _atom_to_python(key, datum[0])
    if type_.is_optional:
        return _atom_to_python(key, datum[0]) if datum else None
    return frozenset(_atom_to_python(key, atom) for atom in datum)


# --- Python -> OVSDB JSON -----------------------------------------------------

_ATOM_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "real": (int, float), "boolean": (bool,), "string": (str,)}


def _atom_to_json(base: BaseType, value: Any, where: str) -> Any:
    if base.type == "uuid":
        if isinstance(value, NewRow):
            return ["named-uuid", value.name]
        if isinstance(value, Row):
            return ["uuid", str(value._uuid)]
        try:
            return ["uuid", str(value if isinstance(value, UUID) else UUID(value))]
        except (TypeError, ValueError, AttributeError):
            raise TypeError(f"{where}: expected a uuid, a Row or a NewRow, not {value!r}") from None
    fits = isinstance(value, _ATOM_TYPES[base.type]) and isinstance(value, bool) == (base.type == "boolean")
    if not fits:
        raise TypeError(f"{where}: expected {base.type}, not {value!r}")
    return float(value) if base.type == "real" else value


def to_json(type_: Type, value: Any, where: str) -> Any:
    """A Python value (the forms in the module doc) in OVSDB JSON notation for
    a column of ``type_``; TypeError naming ``where`` when it does not fit."""
    key = type_.key
    if type_.is_map:
        assert type_.value is not None
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a dict, not {value!r}")
        return ["map", [[_atom_to_json(key, k, where), _atom_to_json(type_.value, v, where)]
                        for k, v in value.items()]]
    if type_.is_scalar:
        return _atom_to_json(key, value, where)
    if value is None:
        value = ()
    elif not isinstance(value, set | frozenset | list | tuple):
        value = (value,)
    return ["set", [_atom_to_json(key, atom, where) for atom in value]]

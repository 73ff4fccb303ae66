"""OVSDB types: atomic types, base types with constraints, and column types.

Parsing follows the schema language of RFC 7047 section 3.2 as ovsdb-server
reads it, with its error strings.
"""

from __future__ import annotations

from typing import Any

from .atoms import atoms_to_json, is_id, parse_atoms
from .errors import OVSDBError, syntax_error, syntax_text

ATOMIC_TYPES = ("integer", "real", "boolean", "string", "uuid")
UNLIMITED = 4294967295
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

_DEFAULT_ATOMS: dict[str, Any] = {
    "integer": 0, "real": 0.0, "boolean": False, "string": "", "uuid": ZERO_UUID,
}


def check_members(obj: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    """Reject unknown members the way OVS's strict parser words it."""
    extra = [k for k in obj if k not in allowed]
    if not extra:
        return
    if len(extra) == 1:
        msg = f"Member '{extra[0]}' is present but not allowed here."
    else:
        others = len(extra) - 1
        noun = "member" if others == 1 else "members"
        msg = f"Member '{extra[0]}' and {others} other {noun} are present but not allowed here."
    raise syntax_error(f"Parsing {what} failed: {msg}", obj)


def _bound(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise syntax_error(f"Parsing ovsdb type failed: Type mismatch for member '{name}'.", obj)
    return value


class BaseType:
    """An atomic type plus its constraints (enum, ranges, lengths, references).

    Immutable, and equal to (and hashed as) any BaseType with the same
    members.  The core's classes are plain classes, not dataclasses: those
    have their methods generated when their module is imported, at every
    start (BENCHMARKS.md, W6)."""

    __slots__ = ("enum", "has_constraints", "max_integer", "max_length", "max_real",
                 "min_integer", "min_length", "min_real", "ref_table", "ref_type", "type")

    def __init__(self, type: str, enum: tuple[Any, ...] | None = None,
                 min_integer: int | None = None, max_integer: int | None = None,
                 min_real: float | None = None, max_real: float | None = None,
                 min_length: int | None = None, max_length: int | None = None,
                 ref_table: str | None = None, ref_type: str = "strong") -> None:
        self.type = type
        self.enum = enum
        self.min_integer = min_integer
        self.max_integer = max_integer
        self.min_real = min_real
        self.max_real = max_real
        self.min_length = min_length
        self.max_length = max_length
        self.ref_table = ref_table
        self.ref_type = ref_type
        # Derived once: checked for every value parsed.
        self.has_constraints = any(v is not None for v in (
            enum, min_integer, max_integer, min_real, max_real, min_length, max_length,
            ref_table))

    def _members(self) -> tuple[Any, ...]:
        return (self.type, self.enum, self.min_integer, self.max_integer, self.min_real,
                self.max_real, self.min_length, self.max_length, self.ref_table, self.ref_type)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseType) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())

    @classmethod
    def from_json(cls, json: Any) -> BaseType:
        if isinstance(json, str):
            return cls(_atomic_type(json))
        if not isinstance(json, dict):
            raise syntax_error("base type must be string or object", json)
        if "type" not in json:
            raise syntax_error("Parsing ovsdb type failed: Required 'type' member is missing.", json)
        atomic = _atomic_type(json["type"])
        if "enum" in json:
            check_members(json, ("type", "enum"), "ovsdb type")
            return cls(atomic, enum=parse_atoms(atomic, 1, UNLIMITED, json["enum"], None))
        allowed = {
            "integer": ("type", "minInteger", "maxInteger"),
            "real": ("type", "minReal", "maxReal"),
            "string": ("type", "minLength", "maxLength"),
            "uuid": ("type", "refTable", "refType"),
            "boolean": ("type",),
        }[atomic]
        check_members(json, allowed, "ovsdb type")
        if atomic == "integer":
            lo = _bound(json, "minInteger", (int, float))
            hi = _bound(json, "maxInteger", (int, float))
            lo = None if lo is None else _as_int(lo, "minInteger", json)
            hi = None if hi is None else _as_int(hi, "maxInteger", json)
            if lo is not None and hi is not None and lo > hi:
                raise syntax_error("minInteger exceeds maxInteger", json)
            return cls(atomic, min_integer=lo, max_integer=hi)
        if atomic == "real":
            lo = _bound(json, "minReal", (int, float))
            hi = _bound(json, "maxReal", (int, float))
            lo = None if lo is None else float(lo)
            hi = None if hi is None else float(hi)
            if lo is not None and hi is not None and lo > hi:
                raise syntax_error("minReal exceeds maxReal", json)
            return cls(atomic, min_real=lo, max_real=hi)
        if atomic == "string":
            lo = _length(json, "minLength")
            hi = _length(json, "maxLength")
            if lo is not None and hi is not None and lo > hi:
                raise syntax_error("minLength exceeds maxLength", json)
            return cls(atomic, min_length=lo, max_length=hi)
        if atomic == "uuid":
            ref_table = _bound(json, "refTable", str)
            ref_type = _bound(json, "refType", str) or "strong"
            if ref_table is not None and not is_id(ref_table):
                raise syntax_error("Parsing ovsdb type failed: Type mismatch for member 'refTable'.", json)
            if ref_type not in ("strong", "weak"):
                raise syntax_error(f'refType must be "strong" or "weak" (not "{ref_type}")', json)
            return cls(atomic, ref_table=ref_table, ref_type=ref_type)
        return cls(atomic)

    def to_json(self) -> Any:
        if not self.has_constraints:
            return self.type
        obj: dict[str, Any] = {"type": self.type}
        if self.enum is not None:
            obj["enum"] = atoms_to_json(self.type, self.enum)
        for name, value in (("minInteger", self.min_integer), ("maxInteger", self.max_integer),
                            ("minReal", self.min_real), ("maxReal", self.max_real),
                            ("minLength", self.min_length), ("maxLength", self.max_length),
                            ("refTable", self.ref_table)):
            if value is not None:
                obj[name] = value
        if self.ref_table is not None and self.ref_type == "weak":
            obj["refType"] = "weak"
        return obj

    @property
    def is_strong_ref(self) -> bool:
        return self.ref_table is not None and self.ref_type == "strong"

    @property
    def is_weak_ref(self) -> bool:
        return self.ref_table is not None and self.ref_type == "weak"

    def default_atom(self) -> Any:
        return _DEFAULT_ATOMS[self.type]

    def unconstrained(self) -> BaseType:
        """The same atomic type with every constraint dropped (references too)."""
        return BaseType(self.type)


def _atomic_type(name: Any) -> str:
    if name not in ATOMIC_TYPES:
        raise syntax_error(f"{syntax_text(name)} is not an atomic-type", name)
    return name


def _as_int(value: int | float, name: str, obj: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise syntax_error(f"Parsing ovsdb type failed: Type mismatch for member '{name}'.", obj)
        value = int(value)
    return value


def _length(obj: dict[str, Any], name: str) -> int | None:
    value = _bound(obj, name, (int, float))
    if value is None:
        return None
    if (isinstance(value, float) and not value.is_integer()) or not 0 <= value <= UNLIMITED:
        raise syntax_error(f"{name} out of valid range 0 to {UNLIMITED}", value)
    return int(value)


class Type:
    """A column type: key, optional value (a map), and size bounds.

    Immutable, and equal to (and hashed as) any Type with the same key,
    value and bounds: values' parsers and encoders are cached by type."""

    __slots__ = ("is_composite", "is_map", "is_optional", "is_scalar", "is_set", "key",
                 "n_max", "n_min", "value")

    def __init__(self, key: BaseType, value: BaseType | None = None, n_min: int = 1,
                 n_max: int = 1) -> None:
        self.key = key
        self.value = value
        self.n_min = n_min
        self.n_max = n_max
        # Derived flags, computed once: they sit on every hot path.
        is_map = value is not None
        self.is_map = is_map
        self.is_scalar = not is_map and n_min == 1 and n_max == 1
        self.is_optional = not is_map and n_min == 0 and n_max == 1
        self.is_set = not is_map and not (n_min == 1 and n_max == 1)
        self.is_composite = n_max > 1

    def _members(self) -> tuple[Any, ...]:
        return (self.key, self.value, self.n_min, self.n_max)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Type) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())

    @classmethod
    def from_json(cls, json: Any) -> Type:
        if isinstance(json, str):
            return cls(BaseType(_atomic_type(json)))
        if not isinstance(json, dict):
            raise syntax_error("ovsdb type must be string or object", json)
        check_members(json, ("key", "value", "min", "max"), "ovsdb type")
        if "key" not in json:
            raise syntax_error("Parsing ovsdb type failed: Required 'key' member is missing.", json)
        key = BaseType.from_json(json["key"])
        value = BaseType.from_json(json["value"]) if "value" in json else None
        n_min = _size(json.get("min", 1), allow_unlimited=False)
        n_max = _size(json.get("max", 1), allow_unlimited=True)
        if n_min > 1 or n_max < 1 or n_min > n_max:
            raise syntax_error("ovsdb type fails constraint checks", json)
        return cls(key, value, n_min, n_max)

    def to_json(self) -> Any:
        if self.is_scalar and not self.key.has_constraints:
            return self.key.type
        obj: dict[str, Any] = {"key": self.key.to_json()}
        if self.value is not None:
            obj["value"] = self.value.to_json()
        if self.n_min != 1:
            obj["min"] = self.n_min
        if self.n_max != 1:
            obj["max"] = "unlimited" if self.n_max == UNLIMITED else self.n_max
        return obj

    def relaxed(self, n_min: int = 0, n_max: int | None = None) -> Type:
        """A copy with other size bounds (condition and mutation arguments)."""
        return Type(self.key, self.value, n_min, self.n_max if n_max is None else n_max)

    def english(self) -> str:
        """The type in words, as OVS puts it in error messages."""
        key = self.key.type
        if self.is_scalar:
            return key
        words = "map" if self.is_map else "set"
        if self.n_max == UNLIMITED:
            words += f" of {self.n_min} or more" if self.n_min else " of"
        elif self.n_min:
            words += f" of {self.n_min} to {self.n_max}"
        else:
            words += f" of up to {self.n_max}"
        if self.value is None:
            return f"{words} {key}s"
        return f"{words} ({key}, {self.value.type}) pairs"


def _size(value: Any, allow_unlimited: bool) -> int:
    if allow_unlimited and value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise syntax_error("bad min or max value", value)
    if isinstance(value, float):
        if not value.is_integer():
            raise syntax_error("bad min or max value", value)
        value = int(value)
    if value < 0 or value > UNLIMITED:
        raise syntax_error("bad min or max value", value)
    return value


UUID_TYPE = Type(BaseType("uuid"))

__all__ = [
    "ATOMIC_TYPES",
    "UNLIMITED",
    "UUID_TYPE",
    "ZERO_UUID",
    "BaseType",
    "OVSDBError",
    "Type",
    "check_members",
]

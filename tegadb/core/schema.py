"""Database schemas: parsing and validating OVSDB schema files (RFC 7047 3.2)."""

from __future__ import annotations

import re
from typing import Any

from .atoms import is_id
from .errors import OVSDBError, syntax_error
from .types import UUID_TYPE, Type, check_members

VERSION_RE = re.compile(r"\d+\.\d+\.\d+\Z")


class ColumnSchema:
    """One column: its type and whether it may change or is kept on disk.

    Immutable, and equal to (and hashed as) any ColumnSchema with the same
    members (a plain class: see types.BaseType)."""

    __slots__ = ("ephemeral", "mutable", "name", "type")

    def __init__(self, name: str, type: Type, mutable: bool = True,
                 ephemeral: bool = False) -> None:
        self.name = name
        self.type = type
        self.mutable = mutable
        self.ephemeral = ephemeral

    def _members(self) -> tuple[Any, ...]:
        return (self.name, self.type, self.mutable, self.ephemeral)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColumnSchema) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())

    @property
    def persistent(self) -> bool:
        return not self.ephemeral

    @classmethod
    def from_json(cls, name: str, json: Any) -> ColumnSchema:
        if not isinstance(json, dict):
            raise syntax_error(f"Parsing schema for column {name} failed: Object expected.", json)
        check_members(json, ("type", "ephemeral", "mutable"), f"schema for column {name}")
        if "type" not in json:
            raise syntax_error(
                f"Parsing schema for column {name} failed: Required 'type' member is missing.", json)
        for member in ("ephemeral", "mutable"):
            if member in json and not isinstance(json[member], bool):
                raise syntax_error(
                    f"Parsing schema for column {name} failed: Type mismatch for member '{member}'.",
                    json)
        type_ = Type.from_json(json["type"])
        mutable = json.get("mutable", True)
        # OVS makes weak-reference columns mutable, since deleting a referenced
        # row has to be able to change them.
        if type_.key.is_weak_ref or (type_.value is not None and type_.value.is_weak_ref):
            mutable = True
        return cls(name, type_, mutable, json.get("ephemeral", False))

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"type": self.type.to_json()}
        if self.ephemeral:
            obj["ephemeral"] = True
        if not self.mutable:
            obj["mutable"] = False
        return obj

    def references(self) -> list[tuple[str, str]]:
        """(referenced table, "strong"|"weak") for the key and value."""
        bases = [self.type.key] + ([self.type.value] if self.type.value is not None else [])
        return [(b.ref_table, b.ref_type) for b in bases if b.ref_table is not None]


IMPLICIT_COLUMNS = {
    "_uuid": ColumnSchema("_uuid", UUID_TYPE, mutable=False),
    "_version": ColumnSchema("_version", UUID_TYPE, mutable=False, ephemeral=True),
}


class TableSchema:
    """A table: its columns (``columns`` includes ``_uuid`` and ``_version``).

    Equal to any TableSchema with the same members (a plain class: see
    types.BaseType)."""

    __slots__ = ("columns", "indexes", "is_root", "max_rows", "mutable", "name")

    def __init__(self, name: str, columns: dict[str, ColumnSchema], max_rows: int | None = None,
                 is_root: bool = False, indexes: list[tuple[str, ...]] | None = None,
                 mutable: bool = True) -> None:
        self.name = name
        self.columns = columns
        self.max_rows = max_rows
        self.is_root = is_root
        self.indexes: list[tuple[str, ...]] = [] if indexes is None else indexes
        self.mutable = mutable

    def _members(self) -> tuple[Any, ...]:
        return (self.name, self.columns, self.max_rows, self.is_root, self.indexes, self.mutable)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TableSchema) and self._members() == other._members()


    @property
    def user_columns(self) -> dict[str, ColumnSchema]:
        return {n: c for n, c in self.columns.items() if n not in IMPLICIT_COLUMNS}

    @classmethod
    def from_json(cls, name: str, json: Any) -> TableSchema:
        what = f"table schema for table {name}"
        if not isinstance(json, dict):
            raise syntax_error(f"Parsing {what} failed: Object expected.", json)
        check_members(json, ("columns", "maxRows", "isRoot", "indexes", "mutable"), what)
        columns_json = json.get("columns")
        if columns_json is None:
            raise syntax_error(f"Parsing {what} failed: Required 'columns' member is missing.", json)
        if not isinstance(columns_json, dict):
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'columns'.", json)
        if not columns_json:
            raise syntax_error("table must have at least one column", json)
        columns = dict(IMPLICIT_COLUMNS)
        for col_name, col_json in columns_json.items():
            _check_name(col_name, json)
            try:
                columns[col_name] = ColumnSchema.from_json(col_name, col_json)
            except OVSDBError as e:
                raise _located(e, f"table {name}, column {col_name}") from None
        max_rows = json.get("maxRows")
        if max_rows is not None:
            if isinstance(max_rows, bool) or not isinstance(max_rows, int):
                raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'maxRows'.", json)
            if max_rows < 1:
                raise syntax_error("maxRows must be at least 1", json)
        for member in ("isRoot", "mutable"):
            if member in json and not isinstance(json[member], bool):
                raise syntax_error(f"Parsing {what} failed: Type mismatch for member '{member}'.", json)
        indexes = [_parse_index(index, columns) for index in _index_list(json, what)]
        return cls(name, columns, max_rows, json.get("isRoot", False), indexes,
                   json.get("mutable", True))

    def to_json(self, all_root: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {"columns": {n: c.to_json() for n, c in self.user_columns.items()}}
        if self.max_rows is not None:
            obj["maxRows"] = self.max_rows
        if self.is_root and not all_root:
            obj["isRoot"] = True
        if self.indexes:
            obj["indexes"] = [list(index) for index in self.indexes]
        if not self.mutable:
            obj["mutable"] = False
        return obj


def _check_name(name: str, context: Any) -> None:
    if name.startswith("_"):
        raise syntax_error('names beginning with "_" are reserved', context)
    if not is_id(name):
        raise syntax_error("name must be a valid id", context)


def _located(error: OVSDBError, where: str) -> OVSDBError:
    """The same error, its details saying which table and column it is about."""
    return OVSDBError(error.tag, f"{error.details} ({where})", error.syntax, error.has_syntax)


def _index_list(json: dict[str, Any], what: str) -> list[Any]:
    indexes = json.get("indexes", [])
    if not isinstance(indexes, list):
        raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'indexes'.", json)
    return indexes


def _parse_index(json: Any, columns: dict[str, ColumnSchema]) -> tuple[str, ...]:
    if not isinstance(json, list) or not all(isinstance(c, str) for c in json):
        raise syntax_error("array of distinct column names expected", json)
    if not json:
        raise syntax_error("index must have at least one column", json)
    if len(set(json)) != len(json):
        raise syntax_error("array of distinct column names expected", json)
    for name in json:
        if name not in columns:
            raise syntax_error(f"{name} is not a valid column name", json)
        if columns[name].ephemeral:
            raise syntax_error(f"ephemeral columns (such as {name}) may not be indexed", json)
    return tuple(json)


class DbSchema:
    """A database schema: name, version, checksum and tables.

    Equal to any DbSchema with the same members (a plain class: see
    types.BaseType)."""

    __slots__ = ("cksum", "name", "tables", "version")

    def __init__(self, name: str, tables: dict[str, TableSchema], version: str = "",
                 cksum: str = "") -> None:
        self.name = name
        self.tables = tables
        self.version = version
        self.cksum = cksum

    def _members(self) -> tuple[Any, ...]:
        return (self.name, self.tables, self.version, self.cksum)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DbSchema) and self._members() == other._members()


    @property
    def all_root(self) -> bool:
        """True when no table declared isRoot: then every table is a root."""
        return all(t.is_root for t in self.tables.values())

    @classmethod
    def from_json(cls, json: Any) -> DbSchema:
        what = "database schema"
        if not isinstance(json, dict):
            raise syntax_error(f"Parsing {what} failed: Object expected.", json)
        check_members(json, ("name", "version", "cksum", "tables"), what)
        for member in ("name", "tables"):
            if member not in json:
                raise syntax_error(f"Parsing {what} failed: Required '{member}' member is missing.",
                                   json)
        name = json["name"]
        if not is_id(name):
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'name'.", json)
        version = json.get("version", "")
        if not isinstance(version, str):
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'version'.", json)
        if "version" in json and not VERSION_RE.match(version):
            raise syntax_error(f'schema version "{version}" not in format x.y.z', json)
        cksum = json.get("cksum", "")
        if not isinstance(cksum, str):
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'cksum'.", json)
        tables_json = json["tables"]
        if not isinstance(tables_json, dict):
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member 'tables'.", json)
        tables = {}
        for table_name, table_json in tables_json.items():
            _check_name(table_name, table_json)
            tables[table_name] = TableSchema.from_json(table_name, table_json)
        schema = cls(name, tables, version, cksum)
        schema._resolve_references()
        return schema

    def _resolve_references(self) -> None:
        if not any(t.is_root for t in self.tables.values()):
            for table in self.tables.values():
                table.is_root = True
        for table in self.tables.values():
            for column in table.user_columns.values():
                for which, base in (("key", column.type.key), ("value", column.type.value)):
                    if base is None or base.ref_table is None:
                        continue
                    target = self.tables.get(base.ref_table)
                    if target is None:
                        raise syntax_error(
                            f"column {column.name} key refers to undefined table {base.ref_table}"
                            if which == "key" else
                            f"column {column.name} value refers to undefined table "
                            f"{base.ref_table}", has_syntax=False)
                    # A strong reference keeps a non-root row alive, so it must
                    # survive a restart even if the schema calls it ephemeral.
                    if base.is_strong_ref and not target.is_root and column.ephemeral:
                        table.columns[column.name] = ColumnSchema(
                            column.name, column.type, column.mutable, False)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": self.name}
        if self.version:
            obj["version"] = self.version
        if self.cksum:
            obj["cksum"] = self.cksum
        all_root = self.all_root
        obj["tables"] = {n: t.to_json(all_root) for n, t in self.tables.items()}
        return obj


__all__ = ["IMPLICIT_COLUMNS", "ColumnSchema", "DbSchema", "TableSchema"]

"""Conditions: the ``where`` clauses of transact ops and monitors (PROTOCOL.md 4.5).

A condition is parsed once against a table schema into clauses, then compiled
into a predicate over rows: clauses are ANDed in transact ops and ORed in
monitors.  Parsing applies OVS's type rules (``==`` needs a full valid datum,
``includes`` relaxes the minimum size, ``excludes`` both sizes, relational
functions only on numeric scalars); evaluation relies on datums being sorted
tuples, so equality is tuple equality and membership is tuple membership.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import values
from .atoms import NamedUUIDs
from .errors import OVSDBError, syntax_error
from .schema import ColumnSchema, TableSchema
from .types import UNLIMITED, Type
from .values import Datum

Row = dict[str, Datum]
Predicate = Callable[[Row], bool]

RELATIONAL = frozenset(("<", "<=", ">", ">="))
FUNCTIONS = RELATIONAL | {"==", "!=", "includes", "excludes"}


class Clause(NamedTuple):
    """One parsed clause; ``function`` is "true"/"false" for the boolean clauses."""

    column: str | None
    function: str
    arg: Datum


_new_tuple = tuple.__new__
TRUE = Clause(None, "true", ())
FALSE = Clause(None, "false", ())


class ConditionParser:
    """Parses ``where`` lists for one table, working out argument types once per column."""

    def __init__(self, table: TableSchema) -> None:
        self.table = table
        # (column, function) -> the parser of its argument.
        self._arg_parsers: dict[tuple[str, str], values.ValueParser] = {}

    def parse(self, json: list[Any], symtab: NamedUUIDs | None = None) -> list[Clause]:
        """Parse a ``where`` array (the caller has checked that it is an array)."""
        return [self.clause(clause, symtab) for clause in json]

    def clause(self, json: Any, symtab: NamedUUIDs | None = None) -> Clause:
        if json is True:
            return TRUE
        if json is False:
            return FALSE
        if (type(json) is not list or len(json) != 3
                or type(json[0]) is not str or type(json[1]) is not str):
            raise syntax_error("Parse error in condition.", json)
        name, function, value = json
        parser = self._arg_parsers.get((name, function))
        if parser is None:
            parser = values.parser(self._arg_type(name, function, json))
            self._arg_parsers[(name, function)] = parser
        # tuple.__new__ skips the NamedTuple's Python-level constructor.
        return _new_tuple(Clause, (name, function, parser.parse(value, symtab)))

    def _arg_type(self, name: str, function: str, json: list[Any]) -> Type:
        column = self.table.columns.get(name)
        if column is None:
            raise OVSDBError("unknown column", f"No column {name} in table {self.table.name}.",
                             json)
        if function not in FUNCTIONS:
            raise OVSDBError("unknown function", f"No function named {function}.")
        return _argument_type(column, function, json)


def _argument_type(column: ColumnSchema, function: str, json: list[Any]) -> Type:
    type_ = column.type
    if function in RELATIONAL:
        if not (type_.is_scalar or type_.is_optional) or type_.key.type not in ("integer", "real"):
            raise syntax_error(
                f'Type mismatch: "{function}" operator may not be applied to column '
                f"{column.name} of type {type_.english()}.", json)
        # An empty optional compares false, so the argument is always one number.
        return type_ if type_.is_scalar else type_.relaxed(1, 1)
    if type_.is_scalar or function in ("==", "!="):
        return type_
    if function == "includes":
        return type_.relaxed(0)
    return type_.relaxed(0, UNLIMITED)


_PARSERS: dict[int, ConditionParser] = {}


def parser_for(table: TableSchema) -> ConditionParser:
    """The shared parser of ``table`` (it keeps the table alive, so ids stay unique)."""
    parser = _PARSERS.get(id(table))
    if parser is None:
        parser = _PARSERS[id(table)] = ConditionParser(table)
    return parser


def parse(table: TableSchema, json: list[Any], symtab: NamedUUIDs | None = None) -> list[Clause]:
    """Parse a ``where`` array for ``table``; monitors pass no symbol table."""
    return parser_for(table).parse(json, symtab)


# --- evaluation -------------------------------------------------------------

def _always(row: Row) -> bool:
    return True


def _never(row: Row) -> bool:
    return False


def predicate(clause: Clause) -> Predicate:
    """One clause as a function of a row."""
    function = clause.function
    if function == "true":
        return _always
    if function == "false":
        return _never
    col, arg = clause.column, clause.arg
    assert col is not None
    if function == "==":
        return lambda row: row[col] == arg
    if function == "!=":
        return lambda row: row[col] != arg
    if function in RELATIONAL:
        return _relational(col, function, arg[0])
    # includes / excludes: every / no element (or map pair) of arg is in the column.
    if not arg:
        return _always
    if len(arg) == 1:
        atom = arg[0]
        if function == "includes":
            return lambda row: atom in row[col]
        return lambda row: atom not in row[col]
    elements = frozenset(arg)
    if function == "includes":
        return lambda row: elements.issubset(row[col])
    return lambda row: elements.isdisjoint(row[col])


def _relational(col: str, function: str, y: Any) -> Predicate:
    # An empty optional has nothing to compare, so every relation is false.
    if function == "<":
        return lambda row: bool(v := row[col]) and v[0] < y
    if function == "<=":
        return lambda row: bool(v := row[col]) and v[0] <= y
    if function == ">":
        return lambda row: bool(v := row[col]) and v[0] > y
    return lambda row: bool(v := row[col]) and v[0] >= y


def match_all(clauses: list[Clause]) -> Predicate:
    """AND of the clauses (transact ops); no clause matches every row."""
    preds = []
    for clause in clauses:
        if clause.function == "false":
            return _never
        if clause.function != "true":
            preds.append(predicate(clause))
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        first, second = preds
        return lambda row: first(row) and second(row)

    def every(row: Row) -> bool:
        for pred in preds:
            if not pred(row):
                return False
        return True
    return every


def match_any(clauses: list[Clause]) -> Predicate:
    """OR of the clauses (monitors); no clause at all also matches every row."""
    if not clauses:
        return _always
    preds = []
    for clause in clauses:
        if clause.function == "true":
            return _always
        if clause.function != "false":
            preds.append(predicate(clause))
    if not preds:
        return _never
    if len(preds) == 1:
        return preds[0]

    def some(row: Row) -> bool:
        for pred in preds:
            if pred(row):
                return True
        return False
    return some


def equalities(clauses: list[Clause]) -> dict[str, Datum]:
    """Column -> argument of the ``==`` clauses, for index lookups (the first wins)."""
    found: dict[str, Datum] = {}
    for clause in clauses:
        if clause.function == "==" and clause.column not in found:
            assert clause.column is not None
            found[clause.column] = clause.arg
    return found


__all__ = ["FALSE", "FUNCTIONS", "TRUE", "Clause", "ConditionParser", "Predicate", "Row",
           "equalities", "match_all", "match_any", "parse", "parser_for", "predicate"]

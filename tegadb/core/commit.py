"""Committing a transaction: OVS's checks in OVS's order (PROTOCOL.md 4.7), then applying it.

When every op succeeded, commit runs the checks in this order, each over the
rows the transaction touched only:

1. drop rows whose final value equals the original;
2. strong reference counts (kept per row, adjusted by the changed atoms) and
   referential integrity;
3. garbage collection of unreferenced rows in non-root tables, cascading;
4. maxRows;
5. weak references to deleted or missing rows are removed (the referring rows
   are found through a reverse index, not by scanning); a row whose change
   this undoes stays modified, as in ovsdb-server;
6. unique indexes, against the final state;
7. a fresh ``_version`` for every modified row (inserted rows got theirs at
   the insert).  The first row a transaction changes takes the transaction's
   id as its version: the journal need not store that one, as every record
   names its transaction's id, so a single-row transaction's record holds
   no version at all.

Only then is the view applied to the tables, so a failed transaction changes
nothing.
"""

from __future__ import annotations

from typing import Any

from . import values
from .errors import OVSDBError
from .tables import Changes, Contents, Index, Row, Table, difference, ref_atoms
from .types import ZERO_UUID, Type
from .values import Datum
from .view import View


def commit(view: View) -> Changes:
    """Check the transaction (4.7) and apply it; returns the rows that changed."""
    db = view.db
    if view.modified:
        _drop_unchanged(view)
    if not view.touched:
        return {}
    refs = _count_references(view)
    if db.collected_tables:
        _collect_garbage(view, refs)
    if db.limited_tables:
        _check_max_rows(view)
    if db.weak_tables:
        # A row whose change the removal undoes stays changed, as in
        # ovsdb-server: it gets a new _version, and monitors see that.
        _remove_weak_references(view)
    _check_indexes(view)
    return _apply(view, refs)


def _drop_unchanged(view: View) -> None:
    for name in list(view.touched):
        touched = view.touched[name]
        for uuid in [u for u, t in touched.items() if t.old is not None and t.old == t.new]:
            del touched[uuid]
        if not touched:
            del view.touched[name]


def _count_references(view: View) -> dict[str, dict[str, int]]:
    """Strong reference count changes per (table, row); checks referential integrity."""
    deltas: dict[str, dict[str, int]] = {}
    for name, touched in view.touched.items():
        table = view.tables[name]
        for ref in table.strong_columns:
            column = ref[0]
            for uuid, t in touched.items():
                old = t.old[column] if t.old is not None else ()
                new = t.new[column] if t.new is not None else ()
                if old == new:
                    continue
                removed, added = difference(old, new)
                for target_table, target in ref_atoms(ref, removed):
                    if target != uuid:  # references to oneself do not count
                        counts = deltas.setdefault(target_table, {})
                        counts[target] = counts.get(target, 0) - 1
                for target_table, target in ref_atoms(ref, added):
                    if target == uuid:
                        continue
                    if not view.exists(target_table, target):
                        raise OVSDBError(
                            "referential integrity violation",
                            f"Table {name} column {column} row {uuid} references nonexistent "
                            f"row {target} in table {target_table}.")
                    counts = deltas.setdefault(target_table, {})
                    counts[target] = counts.get(target, 0) + 1
    if not view.deleted:
        return deltas
    for name, touched in view.touched.items():
        table = view.tables[name]
        if not table.refs and name not in deltas:
            continue
        counts = deltas.get(name, {})
        for uuid, t in touched.items():
            if t.new is None:
                remaining = table.refs.get(uuid, 0) + counts.get(uuid, 0)
                if remaining:
                    raise OVSDBError(
                        "referential integrity violation",
                        f"cannot delete {name} row {uuid} because of {remaining} "
                        "remaining reference(s)")
    return deltas


def _collect_garbage(view: View, refs: dict[str, dict[str, int]]) -> None:
    """Delete the rows of non-root tables left without strong references, cascading."""
    doomed: list[tuple[Table, str]] = []
    for table in view.db.collected_tables:
        touched = view.touched.get(table.name)
        counts = refs.get(table.name)
        if not touched and not counts:
            continue
        candidates = set(counts or ())
        if touched:
            candidates.update(u for u, t in touched.items() if t.new is not None)
        committed = table.refs
        doomed += [(table, u) for u in candidates
                   if committed.get(u, 0) + (counts.get(u, 0) if counts else 0) == 0]
    while doomed:
        table, uuid = doomed.pop()
        row = view.current(table, view.touched.get(table.name), uuid)
        if row is None:
            continue
        view.delete(table, uuid)
        for ref in table.strong_columns:
            for target_name, target in ref_atoms(ref, row[ref[0]]):
                if target == uuid:
                    continue
                counts = refs.setdefault(target_name, {})
                counts[target] = counts.get(target, 0) - 1
                target_table = view.tables[target_name]
                if (not target_table.schema.is_root
                        and target_table.refs.get(target, 0) + counts[target] == 0):
                    doomed.append((target_table, target))


def _check_max_rows(view: View) -> None:
    for table in view.db.limited_tables:
        name = table.name
        touched = view.touched.get(name)
        if not touched:
            continue
        limit = table.schema.max_rows
        assert limit is not None
        n = len(table.rows)
        for t in touched.values():
            n += (t.old is None) - (t.new is None)
        if n > limit:
            raise OVSDBError("constraint violation", f'transaction causes "{name}" table to '
                             f"contain {n} rows, greater than the schema-defined limit of "
                             f"{limit} row(s)")


def _remove_weak_references(view: View) -> None:
    """Drop weak references to rows that are gone, from every row that holds one."""
    holders = _weak_holders(view) if view.deleted else {}
    for table in view.db.weak_tables:
        touched = view.touched.get(table.name)
        suspects = holders.get(table.name, ())
        if touched:
            for uuid, t in touched.items():
                if t.new is not None:
                    _check_weak_row(view, table, uuid, t.old, t.new, uuid in suspects)
        for uuid in suspects:
            if not touched or uuid not in touched:
                row = table.rows[uuid]
                _check_weak_row(view, table, uuid, row, row, True)


def _weak_holders(view: View) -> dict[str, set[str]]:
    """Rows holding committed weak references to rows deleted here (reverse index)."""
    holders: dict[str, set[str]] = {}
    for name, touched in view.touched.items():
        weak_refs = view.tables[name].weak_refs
        if weak_refs:
            for uuid, t in touched.items():
                if t.new is None:
                    for source_table, source in weak_refs.get(uuid, ()):
                        holders.setdefault(source_table, set()).add(source)
    return holders


def _check_weak_row(view: View, table: Table, uuid: str, old: Row | None, new: Row,
                    suspect: bool) -> None:
    for ref in table.weak_columns:
        column = ref[0]
        datum = new[column]
        if not datum or not (suspect or old is None or old[column] != datum):
            continue
        alive = view.alive
        kept = tuple(e for e in datum
                     if all(alive(t, u) or (t == table.name and u == uuid)
                            for t, u in ref_atoms(ref, (e,))))
        if len(kept) == len(datum):
            continue
        if old is new:  # a committed row: take it into the transaction
            new = view.writable(table, new)
        new[column] = kept
        n_min = table.types[column].n_min
        if len(kept) >= n_min:
            continue
        inserted = old is None
        zero = any(u == ZERO_UUID for e in datum if e not in kept
                   for _, u in ref_atoms(ref, (e,)))
        if zero and inserted:
            raise OVSDBError(
                "constraint violation",
                f'Weak reference column "{column}" in "{table.name}" row {uuid} (inserted '
                "within this transaction) contained all-zeros UUID (probably as the default "
                "value for this column) but deleting this value caused a constraint volation "
                "because this column is not allowed to be empty.")
        raise OVSDBError(
            "constraint violation",
            f"Deletion of {len(datum) - len(kept)} weak reference(s) to deleted (or "
            f'never-existing) rows from column "{column}" in "{table.name}" row {uuid} '
            f"{'(inserted within this transaction) ' if inserted else ''}caused this column "
            "to become empty, but constraints on this column disallow an empty column.")


def _check_indexes(view: View) -> None:
    for name, touched in view.touched.items():
        table = view.tables[name]
        for index in table.indexes:
            key_of, committed_rows = index.key, index.rows
            seen: dict[Any, str] = {}
            for uuid, t in touched.items():
                if t.new is None:
                    continue
                key = key_of(t.new)
                other = seen.get(key)
                if other is None:
                    committed = committed_rows.get(key)
                    if committed is not None and committed != uuid and committed not in touched:
                        other = committed
                if other is not None:
                    raise _index_error(view, table, index, other, uuid)
                seen[key] = uuid


def _index_error(view: View, table: Table, index: Index, first: str, second: str) -> OVSDBError:
    """``first`` is the row met first: an untouched row, or one checked earlier."""
    columns = index.columns
    what = (f'column "{columns[0]}"' if len(columns) == 1 else
            "columns " + _english([f'"{c}"' for c in columns]))
    row = view.touched[table.name][second].new
    assert row is not None
    return OVSDBError(
        "constraint violation",
        f'Transaction causes multiple rows in "{table.name}" table to have identical values '
        f"({_values_text(table, columns, row)}) for index on {what}.  "
        f"{_index_row_text(view, table, columns, first, 'First')}  "
        f"{_index_row_text(view, table, columns, second, 'Second')}")


def _index_row_text(view: View, table: Table, columns: tuple[str, ...], uuid: str,
                    title: str) -> str:
    text = f"{title} row, with UUID {uuid}, "
    t = view.touched[table.name].get(uuid)
    if t is None:
        return text + ("existed in the database before this transaction and was not "
                       "modified by the transaction.")
    if t.old is None:
        return text + "was inserted by this transaction."
    assert t.new is not None
    if all(t.old[c] == t.new[c] for c in columns):
        return text + ("existed in the database before this transaction, which modified "
                       "some of the row's columns but not any columns in this index.")
    return (text + "had the following index values before the transaction: "
            f"{_values_text(table, columns, t.old)}.")


def _apply(view: View, refs: dict[str, dict[str, int]]) -> Changes:
    """Make the transaction permanent; nothing here can fail."""
    changes: Changes = {}
    tables = view.tables
    index_weak_references = view.db.index_weak_references
    for name, touched in view.touched.items():
        if not touched:
            continue  # every row it touched was collected or unchanged
        table = tables[name]
        weak = bool(table.weak_columns)
        applied = changes[name] = {}
        for uuid, t in touched.items():
            old, new = t.old, t.new
            if old is not None and new is not None:
                new["_version"] = view.new_version()
            table.apply(uuid, old, new)
            if weak:
                index_weak_references(table, uuid, old, new)
            applied[uuid] = (old, new)
    for name, counts in refs.items():
        table_refs = tables[name].refs
        for uuid, delta in counts.items():
            if delta:
                total = table_refs.get(uuid, 0) + delta
                if total:
                    table_refs[uuid] = total
                else:
                    del table_refs[uuid]
    return changes


def undo(db: Contents, changes: Changes) -> None:
    """Take back a committed change set, the newest first: rows, indexes,
    reference counts and the weak-reference index are as before the commit.

    A cluster member runs a transaction before the shared log has taken it;
    when another member's record got there first, the member undoes its own
    and runs them again after that record.
    """
    tables = db.tables
    for name, rows in reversed(changes.items()):
        table = tables[name]
        for uuid, (old, new) in reversed(rows.items()):
            if table.strong_columns:
                db.count_references(table, uuid, new, old)
            table.apply(uuid, new, old)
            if table.weak_columns:
                db.index_weak_references(table, uuid, new, old)


def _english(words: list[str]) -> str:
    """"a", "a and b", "a, b, and c", as OVS joins lists in messages."""
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + ", and " + words[-1]


def _datum_text(type_: Type, datum: Datum) -> str:
    """A datum as OVS writes it in messages: bare atom, or [a, b] / {k=v}."""
    key_type = type_.key.type
    if type_.value is not None:
        value_type = type_.value.type
        text = ", ".join(f"{values.atom_to_string(key_type, k)}="
                         f"{values.atom_to_string(value_type, v)}" for k, v in datum)
        return "{" + text + "}"
    text = ", ".join(values.atom_to_string(key_type, a) for a in datum)
    return f"[{text}]" if type_.n_max > 1 or not datum else text


def _values_text(table: Table, columns: tuple[str, ...], row: Row) -> str:
    return _english([_datum_text(table.types[c], row[c]) for c in columns])


__all__ = ["commit"]

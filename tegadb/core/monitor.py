"""Monitors: specs, and rendering update / update2 / update3 (PROTOCOL.md 5).

Sans-IO: requests go in as JSON, committed change sets go in as they commit,
notification params and reply results come out.  The rules, in one place:

- A monitor request names tables; each table has one or more requests with
  disjoint ``columns`` (default: every column but ``_uuid``) and per-column
  ``select`` flags.  v2/v3 add ``where`` clauses, ORed; a table's condition is
  its *first* request's ``where`` (as ovsdb-server does), all rows without one.
- A row's change is judged on its old and new images, each tested against the
  condition (a missing image does not match):

  | old matches | new matches | reported                                     |
  |-------------|-------------|----------------------------------------------|
  | no          | no          | nothing                                      |
  | no          | yes         | insert (v1 ``new``; v2 ``insert``)           |
  | yes         | no          | delete (v1 ``old``; v2 ``delete: null``)     |
  | yes         | yes         | modify, if a watched column changed          |

  Each kind needs its flag in some request of the table; each column appears
  only if its own request selects that kind.  Watched columns are the
  monitored ones (whatever their flags) and those the condition reads, so,
  exactly like ovsdb-server, a change seen only there yields an empty modify.
- v1 ``new`` carries every selected column, ``old`` only the changed ones;
  v2 ``initial``/``insert`` omit default values, ``modify`` carries diffs.
- Between two flushes a monitor's changes are merged per row, keeping the
  first old image and the last new one (insert+delete vanishes).

Fan-out: monitors whose specs are equal share a ``_Group`` that gets each
change set once and renders each pending range once; the body and its encoded
bytes are shared by every monitor reading the same range.  Monitors differ only
by a cursor into the group's log; a monitor that falls far behind keeps a
merged change set of its own instead (bounded by the rows, not the commits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import ujson

from . import conditions, values
from .atoms import UUID_RE
from .conditions import Clause, Predicate
from .database import Database
from .errors import OVSDBError, syntax_error
from .history import History, absorb, merge
from .schema import TableSchema
from .tables import Changes, Row, Table
from .types import ZERO_UUID, Type, check_members

# The ``select`` flags.
INITIAL, INSERT, DELETE, MODIFY = 1, 2, 4, 8
SELECT_ALL = INITIAL | INSERT | DELETE | MODIFY
_SELECT_MEMBERS = (("initial", INITIAL), ("insert", INSERT), ("delete", DELETE),
                   ("modify", MODIFY))
_SELECT_NAMES = tuple(name for name, _ in _SELECT_MEMBERS)

VERSIONS = {"monitor": 1, "monitor_cond": 2, "monitor_cond_since": 3}
NOTIFICATIONS = {1: "update", 2: "update2", 3: "update3"}

# A fast monitor reads the log every event-loop turn; one that leaves more than
# this many change sets unread is slow and merges them into a change set of
# its own, so the shared log stays short.
DEFAULT_MAX_LAG = 32


# --- specs ------------------------------------------------------------------------

# The specs are plain classes, not dataclasses, whose methods would be
# generated at every start (types.BaseType).  Specs are immutable values:
# equal specs share their monitors' updates.

class TableRequest:
    """A table's monitor-requests merged: (column, select flags) pairs and the condition."""

    __slots__ = ("columns", "name", "select", "where")

    def __init__(self, name: str, columns: tuple[tuple[str, int], ...], select: int = 0,
                 where: tuple[Clause, ...] | None = None) -> None:
        self.name = name
        self.columns = columns
        self.select = select  # union of the requests' flags, columns or not
        self.where = where    # None: every row

    def _members(self) -> tuple[Any, ...]:
        return (self.name, self.columns, self.select, self.where)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TableRequest) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())


class MonitorSpec:
    """Everything that decides a monitor's updates, and nothing else: the sharing key.

    v2 and v3 render identical bodies, so only ``v1`` is part of it; the
    monitor id and the notification method belong to the monitor.
    """

    __slots__ = ("db", "tables", "v1")

    def __init__(self, db: str, v1: bool, tables: tuple[TableRequest, ...]) -> None:
        self.db = db
        self.v1 = v1
        self.tables = tables  # sorted by name

    def _members(self) -> tuple[Any, ...]:
        return (self.db, self.v1, self.tables)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MonitorSpec) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())

    def with_conditions(self, where: dict[str, tuple[Clause, ...] | None]) -> MonitorSpec:
        return MonitorSpec(self.db, self.v1, tuple(
            TableRequest(t.name, t.columns, t.select, where[t.name]) if t.name in where else t
            for t in self.tables))


class MonitorRequest:
    """A parsed ``monitor``, ``monitor_cond`` or ``monitor_cond_since`` request."""

    __slots__ = ("last_txn_id", "monitor_id", "spec", "version")

    def __init__(self, version: int, monitor_id: Any, spec: MonitorSpec,
                 last_txn_id: str | None = None) -> None:
        self.version = version
        self.monitor_id = monitor_id
        self.spec = spec
        self.last_txn_id = last_txn_id  # v3 only


# --- parsing -------------------------------------------------------------------------

def parse_monitor(method: str, params: Sequence[Any], db: Database,
                  in_use: Callable[[Any], bool]) -> MonitorRequest:
    """Parse the params of ``method`` (the caller has looked up ``db`` from params[0]).

    ``in_use(monitor_id)`` says whether the session already has that monitor id.
    Checks run in ovsdb-server's order, so the same error comes first: param
    count, duplicate id, the requests table by table, then last-txn-id.
    """
    version = VERSIONS[method]
    count = len(params)
    # ovsdb-server ignores extra params of v1 `monitor` (and fails on too few).
    if count != (4 if version == 3 else 3) and not (version == 1 and count > 3):
        raise syntax_error("invalid parameters", list(params))
    monitor_id, requests = params[1], params[2]
    if in_use(monitor_id):
        raise syntax_error("duplicate monitor ID", monitor_id)
    if type(requests) is not dict:
        raise syntax_error("monitor-requests must be object", requests)
    tables = [_parse_table(db, name, value, version) for name, value in requests.items()]
    last_txn_id = _parse_last_txn_id(params[3]) if version == 3 else None
    spec = MonitorSpec(db.name, version == 1, tuple(sorted(tables, key=lambda t: t.name)))
    return MonitorRequest(version, monitor_id, spec, last_txn_id)


def parse_cond_change(params: Sequence[Any], find: Callable[[Any], Monitor | None],
                      ) -> tuple[Monitor, Any, Any]:
    """The session-level checks of ``monitor_cond_change``: (monitor, new id, requests).

    ``find(monitor_id)`` is the session's lookup of its active monitors.
    """
    if len(params) != 3:
        raise syntax_error("invalid parameters", list(params))
    monitor = find(params[0])
    if monitor is None:
        raise syntax_error("unknown monitor session", params[0])
    other = find(params[1])
    if other is not None and other is not monitor:
        raise syntax_error("duplicate monitor ID", params[1])
    return monitor, params[1], params[2]


def _table_schema(db: Database, name: str) -> TableSchema:
    table = db.schema.tables.get(name)
    if table is None:
        raise syntax_error(f"no table named {name}", has_syntax=False)
    return table


def _parse_table(db: Database, name: str, json: Any, version: int) -> TableRequest:
    table = _table_schema(db, name)
    columns: list[tuple[str, int]] = []
    seen: set[str] = set()
    select = 0
    where: list[Clause] | None = None
    for index, request in enumerate(json if type(json) is list else [json]):
        flags, clauses = _parse_request(table, request, version, seen, columns)
        select |= flags
        if index == 0:
            where = clauses
    # Column order does not matter to clients; sorted, equal requests share more.
    return TableRequest(name, tuple(sorted(columns)), select, _normal_where(where))


def _parse_request(table: TableSchema, json: Any, version: int, seen: set[str],
                   columns: list[tuple[str, int]]) -> tuple[int, list[Clause] | None]:
    """One <monitor-request>: appends its columns, returns its flags and parsed ``where``."""
    what = f"table {table.name}"
    if type(json) is not dict:
        raise _object_expected(what)
    where = _member(json, "where", list, what) if version > 1 else None
    columns_json = _member(json, "columns", list, what)
    select_json = _member(json, "select", dict, what)
    check_members(json, ("where", "columns", "select") if version > 1 else ("columns", "select"),
                  what)
    flags = SELECT_ALL if select_json is None else _parse_select(select_json, f"{what} select")
    names = [c for c in table.columns if c != "_uuid"] if columns_json is None else columns_json
    for name in names:
        if type(name) is not str:
            raise syntax_error("array of column names expected", columns_json)
        if name not in table.columns:
            raise syntax_error(f"{name} is not a valid column name", columns_json)
        if name in seen:
            raise syntax_error(f"column {name} mentioned more than once", columns_json,
                               has_syntax=columns_json is not None)
        seen.add(name)
        columns.append((name, flags))
    return flags, None if where is None else conditions.parse(table, where)


def _parse_select(json: dict[str, Any], what: str) -> int:
    flags = 0
    for name, flag in _SELECT_MEMBERS:
        value = json.get(name, True)
        if type(value) is not bool:
            raise syntax_error(f"Parsing {what} failed: Type mismatch for member '{name}'.", json)
        if value:
            flags |= flag
    check_members(json, _SELECT_NAMES, what)
    return flags


_ABSENT = object()


def _member(json: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """An optional member of type ``kind`` (JSON null is a type mismatch, as in OVS)."""
    value = json.get(name, _ABSENT)
    if value is _ABSENT:
        return None
    if type(value) is not kind:
        raise syntax_error(f"Parsing {what} failed: Type mismatch for member '{name}'.", json)
    return value


def _object_expected(what: str) -> OVSDBError:
    return syntax_error(f"Parsing {what} failed: Object expected.", has_syntax=False)


def _normal_where(clauses: list[Clause] | None) -> tuple[Clause, ...] | None:
    # No clause and no `where` mean the same; one key for both shares more.
    return tuple(clauses) if clauses else None


def _parse_last_txn_id(json: Any) -> str:
    if type(json) is not str:
        raise syntax_error("last-txn-id must be string", json)
    if not UUID_RE.match(json):
        raise syntax_error("last-txn-id must be UUID format.", json)
    return json.lower()


def _parse_cond_change(db: Database, spec: MonitorSpec, version: int,
                       json: Any) -> dict[str, tuple[Clause, ...] | None]:
    """New conditions per table; all parsed before any applies (a v1 monitor gets none)."""
    if type(json) is not dict:
        raise syntax_error("monitor-cond-change-requests must be object", has_syntax=False)
    monitored = {t.name for t in spec.tables}
    changed: dict[str, tuple[Clause, ...] | None] = {}
    for name, requests in json.items():
        table = _table_schema(db, name)
        if name not in monitored:
            raise syntax_error(f"no table named {name} in monitor session", has_syntax=False)
        if type(requests) is not list:
            raise syntax_error(f"table {name} no monitor-cond-change JSON array",
                               has_syntax=False)
        what = f"table {name}"
        for request in requests:
            if type(request) is not dict:
                raise _object_expected(what)
            columns = _member(request, "columns", list, what)
            where = _member(request, "where", list, what)
            check_members(request, ("columns", "where"), what)
            if columns is not None:
                raise syntax_error("changing columns is unsupported", request)
            # ovsdb-server never looks at a v1 monitor's conditions.  The last request wins.
            if version > 1:
                changed[name] = None if where is None else _normal_where(
                    conditions.parse(table, where))
    return changed


# --- rendering -----------------------------------------------------------------------

Column = tuple[str, Type, values.Datum]   # name, type, default


class _View(ABC):
    """One monitored table compiled for rendering: columns per update kind, condition."""

    __slots__ = ("_delete", "_initial", "_insert", "_modify", "_watch_only", "match", "name",
                 "select", "where")

    def __init__(self, request: TableRequest, table: Table) -> None:
        self.name = request.name
        self.select = request.select
        self.where = request.where
        self.match: Predicate | None = (None if request.where is None
                                        else conditions.match_any(list(request.where)))
        types, defaults = table.types, table.defaults

        def selected(flag: int) -> tuple[Column, ...]:
            return tuple((n, types[n], defaults[n]) for n, f in request.columns if f & flag)

        self._initial = selected(INITIAL)
        self._insert = selected(INSERT)
        self._delete = selected(DELETE)
        self._modify = selected(MODIFY)
        # Columns whose change makes a modify although no reported column changed.
        read = [c.column for c in request.where or () if c.column is not None]
        modified = {n for n, _, _ in self._modify}
        self._watch_only = tuple(dict.fromkeys(
            n for n in [n for n, _ in request.columns] + read if n not in modified))

    def change(self, old: Row | None, new: Row | None) -> dict[str, Any] | None:
        """The row update for one (merged) row change, or None when nothing is reported."""
        match = self.match
        if match is not None:
            if old is not None and not match(old):
                old = None
            if new is not None and not match(new):
                new = None
        if old is None:
            return None if new is None else self.inserted(new)
        if new is None:
            return self.deleted(old)
        return self.modified(old, new)

    def _changed_elsewhere(self, old: Row, new: Row) -> bool:
        for name in self._watch_only:
            if old[name] != new[name]:
                return True
        return False

    @abstractmethod
    def initial(self, row: Row) -> dict[str, Any]:
        """The row in the reply to the monitor request."""

    @abstractmethod
    def inserted(self, row: Row) -> dict[str, Any] | None:
        """A row that appeared (or entered the condition)."""

    @abstractmethod
    def deleted(self, row: Row) -> dict[str, Any] | None:
        """A row that went away (or left the condition)."""

    @abstractmethod
    def modified(self, old: Row, new: Row) -> dict[str, Any] | None:
        """A row that changed and still matches."""


class _View1(_View):
    """``<row-update>`` of v1 ``monitor``: ``new`` has every selected column."""

    __slots__ = ()

    @staticmethod
    def _row(columns: tuple[Column, ...], row: Row) -> dict[str, Any]:
        to_json = values.to_json
        return {n: to_json(t, row[n]) for n, t, _ in columns}

    def initial(self, row: Row) -> dict[str, Any]:
        return {"new": self._row(self._initial, row)}

    def inserted(self, row: Row) -> dict[str, Any] | None:
        return {"new": self._row(self._insert, row)} if self.select & INSERT else None

    def deleted(self, row: Row) -> dict[str, Any] | None:
        return {"old": self._row(self._delete, row)} if self.select & DELETE else None

    def modified(self, old: Row, new: Row) -> dict[str, Any] | None:
        if not self.select & MODIFY:
            return None
        to_json = values.to_json
        before = {n: to_json(t, old[n]) for n, t, _ in self._modify if old[n] != new[n]}
        if not before and not self._changed_elsewhere(old, new):
            return None
        return {"old": before, "new": self._row(self._modify, new)}


class _View2(_View):
    """``<row-update2>`` of ``monitor_cond`` / ``monitor_cond_since``."""

    __slots__ = ()

    @staticmethod
    def _row(columns: tuple[Column, ...], row: Row) -> dict[str, Any]:
        to_json = values.to_json
        return {n: to_json(t, row[n]) for n, t, default in columns if row[n] != default}

    def initial(self, row: Row) -> dict[str, Any]:
        return {"initial": self._row(self._initial, row)}

    def inserted(self, row: Row) -> dict[str, Any] | None:
        return {"insert": self._row(self._insert, row)} if self.select & INSERT else None

    def deleted(self, row: Row) -> dict[str, Any] | None:
        return {"delete": None} if self.select & DELETE else None

    def modified(self, old: Row, new: Row) -> dict[str, Any] | None:
        if not self.select & MODIFY:
            return None
        to_json, diff = values.to_json, values.diff
        changes = {}
        for n, t, _ in self._modify:
            before, after = old[n], new[n]
            if before != after:
                changes[n] = to_json(t, diff(t, before, after))
        if not changes and not self._changed_elsewhere(old, new):
            return None
        return {"modify": changes}


def _render(views: dict[str, _View], changes: Changes) -> dict[str, Any]:
    """``<table-updates>`` / ``<table-updates2>`` of a (merged) change set."""
    body = {}
    for name, rows in changes.items():
        view = views.get(name)
        if view is None:
            continue
        change = view.change
        updates = {}
        for uuid, (old, new) in rows.items():
            update = change(old, new)
            if update is not None:
                updates[uuid] = update
        if updates:
            body[name] = updates
    return body


class Update:
    """One rendered body (``<table-updates>`` or ``<table-updates2>``), shared, never mutated.

    ``encoded()`` serializes it once for every session that sends it; the
    notification is the same bytes around a per-monitor id (and txn id).
    """

    __slots__ = ("_encoded", "body")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self._encoded: bytes | None = None

    def encoded(self) -> bytes:
        if self._encoded is None:
            self._encoded = ujson.dumps(self.body, ensure_ascii=False,
                                        escape_forward_slashes=False).encode()
        return self._encoded


# --- groups, monitors and the hub ----------------------------------------------------

class _Cursor:
    """A position in a group's log shared by the monitors that read from it.

    ``merged`` is set once the cursor fell behind: the changes it had not read
    are merged there and the cursor moved to the log's end.
    """

    __slots__ = ("members", "merged", "pos", "rendered")

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.merged: Changes | None = None
        self.members = 0
        self.rendered: tuple[int, Update | None] | None = None   # (log end, update)


class _Group:
    """The monitors of one hub that share a spec: one log, each range rendered once."""

    def __init__(self, hub: MonitorHub, spec: MonitorSpec) -> None:
        self.hub = hub
        self.spec = spec
        view = _View1 if spec.v1 else _View2
        self.views: dict[str, _View] = {t.name: view(t, hub.db.tables[t.name])
                                        for t in spec.tables}
        self.monitors: set[Monitor] = set()
        self.log: list[Changes] = []   # change sets restricted to the monitored tables
        self.base = 0                  # position of log[0]
        self.end = 0                   # position after the last change set
        self.cursors: list[_Cursor] = []
        self.tip: _Cursor | None = None
        self._initial: dict[str, Any] | None = None

    def append(self, changes: Changes) -> None:
        self.log.append(changes)
        self.end += 1
        self._initial = None
        if len(self.log) > self.hub.max_lag:
            self._fold()

    def initial(self) -> dict[str, Any]:
        """The current rows as ``initial`` (v2) or ``new`` (v1); cached until the next change."""
        if self._initial is not None:
            return self._initial
        body = {}
        for name, view in self.views.items():
            if not view.select & INITIAL:
                continue
            match, initial = view.match, view.initial
            rows = {uuid: initial(row) for uuid, row in self.hub.db.tables[name].rows.items()
                    if match is None or match(row)}
            if rows:
                body[name] = rows
        self._initial = body
        return body

    def render(self, changes: Changes) -> dict[str, Any]:
        return _render(self.views, changes)

    # --- cursors -------------------------------------------------------------------
    def join(self, monitor: Monitor) -> None:
        """Add a monitor that is up to date now."""
        self.monitors.add(monitor)
        self._enter(monitor, self._tip())

    def leave(self, monitor: Monitor) -> None:
        self.monitors.discard(monitor)
        self._exit(monitor._cursor)
        if not self.monitors:
            self.hub._discard(self)

    def pending(self, cursor: _Cursor) -> bool:
        return cursor.merged is not None or cursor.pos != self.end

    def take(self, monitor: Monitor) -> Update | None:
        """What ``monitor`` has not read yet, rendered; the monitor is then up to date."""
        cursor = monitor._cursor
        end = self.end
        if cursor.pos == end and cursor.merged is None:
            return None
        rendered = cursor.rendered
        if rendered is None or rendered[0] != end:
            rendered = cursor.rendered = (end, self._render_cursor(cursor))
        self._exit(cursor)
        self._enter(monitor, self._tip())
        return rendered[1]

    def _render_cursor(self, cursor: _Cursor) -> Update | None:
        unread = self.log[cursor.pos - self.base:]
        if cursor.merged is None:
            changes = merge(unread)
        else:
            for entry in unread:
                absorb(cursor.merged, entry)
            cursor.pos = self.end
            changes = cursor.merged
        body = _render(self.views, changes)
        return Update(body) if body else None

    def _tip(self) -> _Cursor:
        """The cursor of the monitors that have read everything."""
        tip = self.tip
        if tip is None or tip.pos != self.end or tip.merged is not None:
            tip = self.tip = _Cursor(self.end)
        return tip

    def _enter(self, monitor: Monitor, cursor: _Cursor) -> None:
        if not cursor.members:
            self.cursors.append(cursor)
        cursor.members += 1
        monitor._cursor = cursor

    def _exit(self, cursor: _Cursor) -> None:
        cursor.members -= 1
        if not cursor.members:
            self.cursors.remove(cursor)
            self._trim()

    def _fold(self) -> None:
        """Cursors at the log's start merge what they have not read, so the log can shrink."""
        base, end = self.base, self.end
        for cursor in self.cursors:
            if cursor.pos == base:
                if cursor.merged is None:
                    cursor.merged = {}
                for entry in self.log:
                    absorb(cursor.merged, entry)
                cursor.pos = end
                cursor.rendered = None
        self._trim()

    def _trim(self) -> None:
        oldest = min((c.pos for c in self.cursors), default=self.end)
        if oldest > self.base:
            del self.log[:oldest - self.base]
            self.base = oldest


class Monitor:
    """One monitor of one session, created by ``MonitorHub.open``.

    ``owner`` is the caller's (the session's); the monitor never looks at it.
    """

    __slots__ = ("_cursor", "_group", "_hub", "id", "owner", "version")

    def __init__(self, hub: MonitorHub, request: MonitorRequest, owner: Any) -> None:
        self.id = request.monitor_id
        self.version = request.version
        self.owner = owner
        self._hub = hub
        self._group = hub._group_for(request.spec)
        self._cursor: _Cursor

    @property
    def method(self) -> str:
        """The notification method: ``update``, ``update2`` or ``update3``."""
        return NOTIFICATIONS[self.version]

    @property
    def spec(self) -> MonitorSpec:
        return self._group.spec

    @property
    def pending(self) -> bool:
        """Whether changes arrived since the last flush (they may still render to nothing)."""
        return self._group.pending(self._cursor)

    def take(self) -> Update | None:
        """The pending update, shared with every monitor of the same spec and cursor.

        Build the params (``params``) right away: update3 names the newest
        transaction, which the next commit changes.
        """
        return self._group.take(self)

    def head(self) -> list[Any]:
        """The notification params that precede the body: the id (and for update3
        the newest transaction)."""
        if self.version == 3:
            return [self.id, self._hub.last_txn_id]
        return [self.id]

    def params(self, update: Update) -> list[Any]:
        """Notification params around ``update``; update3 names the newest transaction."""
        return [*self.head(), update.body]

    def flush(self) -> list[Any] | None:
        """Params of the notification to send now (method: ``self.method``), or None."""
        update = self.take()
        return None if update is None else self.params(update)

    def change_conditions(self, new_id: Any, requests: Any) -> list[list[Any]]:
        """Apply ``monitor_cond_change`` requests; return notification params, in order.

        Errors are raised before anything changes.  Then: the pending changes
        under the old condition, with the old id; the rename; and the rows that
        left (delete) or entered (insert) the condition, with the new id.  Send
        them all before the ``{}`` reply.
        """
        hub = self._hub
        where = _parse_cond_change(hub.db, self.spec, self.version, requests)
        sent = []
        pending = self.flush()
        if pending is not None:
            sent.append(pending)
        self.id = new_id
        new_spec = self.spec.with_conditions(where)
        if new_spec == self.spec:
            return sent
        old = self._group
        new = hub._group_for(new_spec)
        body = {}
        for name in where:
            if old.views[name].where == new.views[name].where:
                continue
            updates = _recondition(old.views[name], new.views[name], hub.db.tables[name])
            if updates:
                body[name] = updates
        old.leave(self)
        self._group = new
        new.join(self)
        if body:
            sent.append(self.params(Update(body)))
        return sent

    def cancel(self) -> None:
        """``monitor_cancel`` or the session's end: no more updates."""
        self._group.leave(self)


def _recondition(old: _View, new: _View, table: Table) -> dict[str, Any]:
    """Rows that left the condition (delete) or entered it (insert), over the whole table."""
    if not new.select & (INSERT | DELETE):
        return {}
    before, after = old.match, new.match
    updates = {}
    for uuid, row in table.rows.items():
        was = before is None or before(row)
        now = after is None or after(row)
        if was != now:
            update = new.inserted(row) if now else new.deleted(row)
            if update is not None:
                updates[uuid] = update
    return updates


class MonitorHub:
    """The monitors of one database, fed every committed change set once.

    Call ``commit`` right after each commit, before anything else reads the
    database: a monitor opened later starts from the state after the last
    ``commit``.
    """

    def __init__(self, db: Database, history: History | None = None, *,
                 max_lag: int = DEFAULT_MAX_LAG) -> None:
        self.db = db
        self.history = history
        self.max_lag = max_lag
        self._groups: dict[MonitorSpec, _Group] = {}
        self._by_table: dict[str, list[_Group]] = {}

    @property
    def group_count(self) -> int:
        """Distinct monitor specs in use (each rendered once per change)."""
        return len(self._groups)

    @property
    def last_txn_id(self) -> str:
        """What update3 and monitor_cond_since report: all zeros without a history."""
        return ZERO_UUID if self.history is None else self.history.last_txn_id

    def commit(self, changes: Changes, txn_id: str = ZERO_UUID) -> list[Monitor]:
        """Feed a committed change set; returns the monitors that now have something pending."""
        if self.history is not None:
            self.history.append(txn_id, changes)
        by_table = self._by_table
        if not by_table:
            return []
        entries: dict[_Group, Changes] = {}
        for name, rows in changes.items():
            groups = by_table.get(name)
            if groups and rows:
                for group in groups:
                    entry = entries.get(group)
                    if entry is None:
                        entries[group] = {name: rows}
                    else:
                        entry[name] = rows
        touched: list[Monitor] = []
        for group, entry in entries.items():
            group.append(entry)
            touched.extend(group.monitors)
        return touched

    def open(self, request: MonitorRequest, owner: Any = None) -> tuple[Monitor, Any]:
        """Create a monitor; returns it and the reply's result."""
        monitor = Monitor(self, request, owner)
        group = monitor._group
        if request.version != 3:
            result: Any = group.initial()
        else:
            assert request.last_txn_id is not None
            changes = (None if self.history is None
                       else self.history.changes_since(request.last_txn_id))
            if changes is None:
                result = [False, self.last_txn_id, group.initial()]
            else:
                result = [True, self.last_txn_id, group.render(changes)]
        group.join(monitor)
        return monitor, result

    def _group_for(self, spec: MonitorSpec) -> _Group:
        group = self._groups.get(spec)
        if group is None:
            group = self._groups[spec] = _Group(self, spec)
            for table in spec.tables:
                self._by_table.setdefault(table.name, []).append(group)
        return group

    def _discard(self, group: _Group) -> None:
        del self._groups[group.spec]
        for table in group.spec.tables:
            groups = self._by_table[table.name]
            groups.remove(group)
            if not groups:
                del self._by_table[table.name]


__all__ = ["DELETE", "INITIAL", "INSERT", "MODIFY", "NOTIFICATIONS", "SELECT_ALL", "VERSIONS",
           "Monitor", "MonitorHub", "MonitorRequest", "MonitorSpec", "TableRequest",
           "Update", "parse_cond_change", "parse_monitor"]

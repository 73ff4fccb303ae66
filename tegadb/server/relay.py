"""A database served as a relay of a source OVSDB server (docs/relay.md).

``tegadb-server relay:DB:REMOTE[,REMOTE...]`` keeps a copy of the source's
database DB in memory, following it with ``monitor_cond_since`` through
``client.follower.Follower``, and serves it as a local database: monitors
(of every flavour, resuming against the relay's own history), read-only
transactions, ``get_schema`` and ``_Server`` run here.  What needs the
source goes to it:

- a transaction with any op but ``select``, ``comment`` and ``abort`` (a
  write, a ``wait``, an ``assert``, a ``commit``) is forwarded, and its reply
  goes back only once the copy holds what it committed: the source sends a
  session its monitor updates before a reply (PROTOCOL.md 1.6), so on the
  follower's own connection the update has been applied when the reply
  comes; a reply from another connection (a lock holder's, below) is
  followed by an empty transaction on the follower's, whose reply comes
  after the update;
- ``lock``, ``steal`` and ``unlock`` go to the source over one connection per
  client that locks (``RelayLocks``): the source sees each client as its own
  session, so its queue, ``locked``/``stolen`` and ``assert`` work as they do
  for its direct clients.  That client's transactions are forwarded over its
  connection (an ``assert`` is checked against the session that locked).

Each update from the source is applied to the copy as one transaction with
the source's transaction id (a fresh one where the source reports none, as a
standalone ovsdb-server does), so the relay's own clients can resume after
it.  A full resync (the source could not resume) is diffed against the copy:
clients see only what really changed.  A schema change on the source
(``convert``) is followed as a local conversion is (ServerDatabases.switch_schema).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ujson

from ..core import changesets, values
from ..core.database import Database
from ..core.errors import OVSDBError
from ..core.history import History
from ..core.ids import new_txn_id
from ..core.schema import DbSchema
from ..core.tables import Row, Table
from ..core.types import UNLIMITED, ZERO_UUID
from .service import ClientSession, DatabaseService, ServerDatabases
from .storage import MemoryStorage

log = logging.getLogger("tegadb.relay")

# Ops a relay runs on its copy; a transaction with any other goes to the source.
LOCAL_OPS = frozenset(("select", "comment", "abort"))
# How long a starting server waits for each relay's first copy before it
# listens anyway (its databases then report connected false).
FIRST_SYNC_TIMEOUT = 5.0


def parse_relay(text: str) -> tuple[str, list[str]]:
    """``relay:DB:REMOTE[,REMOTE...]`` -> (DB, remotes); ValueError naming what is wrong."""
    if not text.startswith("relay:"):
        raise ValueError(f"{text}: not a relay (relay:DBNAME:REMOTE[,REMOTE...])")
    name, _, remotes = text[len("relay:"):].partition(":")
    if not name or not remotes:
        raise ValueError(f"{text}: expected relay:DBNAME:REMOTE[,REMOTE...]")
    if name.startswith("_"):
        raise ValueError(f'{text}: database names beginning with "_" are reserved')
    return name, [r for r in remotes.split(",") if r]


def placeholder_schema(name: str) -> DbSchema:
    """What a relay serves before it first reaches its source: no tables."""
    return DbSchema.from_json({"name": name, "version": "0.0.0", "tables": {}})


# --- updates from the source as changes to the copy --------------------------------

def _stored_row(row_json: dict[str, Any]) -> dict[str, Any]:
    """An update2 ``initial``/``insert`` row as a log record stores a new row
    (default columns left out, as both do; ``_version`` as bare text)."""
    version = row_json.get("_version")
    if version is None:
        return row_json
    return {**row_json, "_version": version[1]}


def _diff_parser(table: Table, column: str) -> Callable[[Any], Any]:
    """How to read a ``modify`` member: a diff for a set or map that may hold
    several elements (it can hold more than the column may), else the value."""
    type_ = table.types[column]
    if not type_.is_composite:
        return lambda json: values.parse_unchecked(type_, json)
    relaxed = type_.relaxed(0, UNLIMITED)
    return lambda json: values.apply_diff(type_, (), values.parse_unchecked(relaxed, json))


def _modified(table: Table, old: Row, change: dict[str, Any]) -> dict[str, Any]:
    """An update2 ``modify`` as a log record stores a modified row: the changed
    columns' full new values."""
    stored: dict[str, Any] = {}
    for column, json in change.items():
        if column == "_version":
            stored[column] = json[1]
            continue
        type_ = table.types.get(column)
        if type_ is None:
            raise OVSDBError("syntax error", f"No column {column} in table {table.name}.")
        if type_.is_composite:
            diff = values.parse_unchecked(type_.relaxed(0, UNLIMITED), json)
            stored[column] = table.encoders[column](values.apply_diff(type_, old[column], diff))
        else:
            stored[column] = json
    return stored


def record_of_update(database: Database, updates: dict[str, Any]) -> dict[str, Any]:
    """An update3's ``<table-updates2>`` as the changes of a log record
    (changesets.apply_changes_json applies them)."""
    record: dict[str, Any] = {}
    for name, rows in updates.items():
        table = database.tables.get(name)
        if table is None:
            raise OVSDBError("syntax error", f"No table named {name}.")
        out = record[name] = {}
        for uuid, change in rows.items():
            if "modify" in change:
                old = table.rows.get(uuid)
                if old is None:
                    raise OVSDBError("syntax error",
                                     f"modify of row {uuid} of table {name}, which the copy lacks")
                out[uuid] = _modified(table, old, change["modify"])
            elif "delete" in change:
                out[uuid] = None
            else:
                out[uuid] = _stored_row(change.get("insert") or change.get("initial") or {})
    return record


def record_of_resync(database: Database, contents: dict[str, Any]) -> dict[str, Any]:
    """Full contents (``initial`` rows) as the changes that turn the copy into
    them: rows gone, rows new, and only the columns that differ."""
    record: dict[str, Any] = {}
    for name, table in database.tables.items():
        rows = contents.get(name) or {}
        out: dict[str, Any] = {}
        for uuid in table.rows.keys() - rows.keys():
            out[uuid] = None
        for uuid, change in rows.items():
            stored = _stored_row(change.get("initial") or change.get("insert") or {})
            old = table.rows.get(uuid)
            if old is None:
                out[uuid] = stored
                continue
            new = dict(table.defaults)
            for column, json in stored.items():
                parser = table.replay_parsers.get(column)
                if parser is None:
                    raise OVSDBError("syntax error", f"No column {column} in table {name}.")
                new[column] = parser.parse(json, None)
            changed = {c: (v[0] if c == "_version" else table.encoders[c](v))
                       for c, v in new.items()
                       if c != "_uuid" and (c != "_version" or "_version" in stored)
                       and old[c] != v}
            if changed:
                out[uuid] = changed
        if out:
            record[name] = out
    unknown = contents.keys() - database.tables.keys()
    if unknown:
        raise OVSDBError("syntax error", f"No table named {sorted(unknown)[0]}.")
    return record


# --- the service ------------------------------------------------------------------

class RelayService(DatabaseService):
    """One database served as a relay: the copy, and the source's UpdateSink."""

    remotes: list[str]

    @classmethod
    def create(cls, name: str, remotes: list[str], history: History | None = None,
               ) -> RelayService:
        """A relay of ``name`` at ``remotes``, empty until ``follow`` reaches the source."""
        schema = placeholder_schema(name)
        service = cls(schema, Database(schema), MemoryStorage(schema.to_json(), f"relay {name}"),
                      history)
        service.remotes = remotes
        service.synced = False             # the copy holds the source's contents
        service.connected = False          # the follower is connected to the source
        service.databases = None
        service.follower = None
        service.first_sync = asyncio.Event()
        service.forwarded = {}
        service.locks = None
        return service

    # Attributes set by create (declared for mypy).
    synced: bool
    connected: bool
    databases: ServerDatabases | None
    follower: Any
    first_sync: asyncio.Event
    forwarded: dict[tuple[int, str], asyncio.Task[None]]
    locks: RelayLocks | None

    @property
    def source(self) -> str:
        return ",".join(self.remotes)

    def server_state(self) -> dict[str, Any]:
        # Every source forwards writes (a cluster's follower to its leader, a
        # relay to its source), so the relay takes writes while it follows:
        # it is a "leader" to leader-only clients (ovs-vsctl, ovn-nbctl, IDLs).
        state: dict[str, Any] = {"model": "relay", "connected": self.connected,
                                 "leader": self.connected}
        if not self.synced:
            state["schema"] = ["set", []]  # clients wait for the real one
        return state

    # --- UpdateSink: what the follower reports ---------------------------------------
    def start(self, schema_json: dict[str, Any], found: bool, updates: dict[str, Any],
              last_id: str) -> None:
        """A (re)connection's ``monitor_cond_since`` reply."""
        schema = DbSchema.from_json(schema_json)
        if not self.synced or schema.to_json() != self.schema_json:
            self._adopt(schema, updates, last_id)
        elif found:
            self._apply(record_of_update(self.database, updates), last_id)
        else:
            self._apply(record_of_resync(self.database, updates), last_id)
        self.synced = True
        self._set_connected(True)
        self.first_sync.set()

    def update(self, updates: dict[str, Any], last_id: str) -> None:
        """An ``update3`` from the source, in order."""
        self._apply(record_of_update(self.database, updates), last_id)

    def disconnected(self) -> None:
        self._set_connected(False)

    def _txn_id(self, last_id: str) -> str:
        """The source's id for what it committed; a fresh one where it gives
        none (standalone ovsdb-server: all zeros) or one the copy already has."""
        if last_id == ZERO_UUID or last_id == self.last_txn:
            return new_txn_id()
        return last_id

    def _apply(self, record: dict[str, Any], last_id: str) -> None:
        if not any(record.values()):
            return
        self.apply_committed(self.seq + 1, self._txn_id(last_id), record)

    def _adopt(self, schema: DbSchema, contents: dict[str, Any], last_id: str) -> None:
        """The source's schema (first contact, or a conversion there) and contents."""
        database = Database(schema)
        txn = self._txn_id(last_id)
        changesets.apply_changes_json(
            database, txn, {name: {uuid: _stored_row(row.get("initial") or {})
                                   for uuid, row in rows.items()}
                            for name, rows in contents.items()})
        if self.synced:
            log.info("%s: the source (%s) changed the schema to version %s", self.name,
                     self.source, schema.version or "(none)")
        assert self.databases is not None
        for session in self.databases.switch_schema(self, schema, database, self.seq + 1, txn):
            session.disconnect()

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        log.info("%s: %s the source (%s)", self.name,
                 "following" if connected else "lost", self.source)
        if self.databases is not None:
            self.databases.state_changed(self)

    # --- transactions ---------------------------------------------------------------
    def transact(self, session: ClientSession, request_id: Any, dialect: int,
                 ops: list[Any]) -> list[Any] | None:
        """Run a read on the copy; forward anything else (None: answered later)."""
        if all(type(op) is dict and op.get("op") in LOCAL_OPS for op in ops):
            return super().transact(session, request_id, dialect, ops)
        key = (id(session), ujson.dumps(request_id, sort_keys=True))
        if key in self.forwarded:
            return super().transact(session, request_id, dialect, ops)  # its duplicate-id error
        task = asyncio.get_running_loop().create_task(
            self._forward(session, request_id, dialect, ops))
        self.forwarded[key] = task

        def forget(_: object) -> None:
            if self.forwarded.get(key) is task:
                del self.forwarded[key]

        task.add_done_callback(forget)
        session.cleanups.append(task.cancel)
        return None

    async def _forward(self, session: ClientSession, request_id: Any, dialect: int,
                       ops: list[Any]) -> None:
        from ..client.connection import RPCError

        link = self.locks.link_of(session) if self.locks is not None else None
        try:
            if not self.connected:
                raise ConnectionError
            if link is None:
                result = await self.follower.request("transact", [self.name, *ops])
            else:
                result = await link.request("transact", [self.name, *ops])
                # The update came to the follower's connection, maybe not yet:
                # the source answers this after sending it.
                await self.follower.request("transact", [self.name])
        except RPCError as e:
            error: Any = e.error       # the source's error, unchanged
        except (ConnectionError, OSError):
            error = self.not_connected("the transaction")
        else:
            if not session.closed:
                session.reply(request_id, result, dialect)
            return
        if not session.closed:
            session.reply_error(request_id, error, dialect)

    def not_connected(self, what: str) -> dict[str, Any]:
        """The error for ``what`` when the source cannot be reached."""
        return {"error": "not connected",
                "details": f"{what} on {self.name} needs its source ({self.source}), "
                           "and the relay is not connected to it"}

    def cancel(self, session: ClientSession, request_id: Any) -> bool:
        task = self.forwarded.pop((id(session), ujson.dumps(request_id, sort_keys=True)), None)
        if task is None:
            return super().cancel(session, request_id)
        task.cancel()
        session.reply_error(request_id, "canceled")
        return True

    def converted(self, schema: DbSchema) -> Database:
        raise OVSDBError("not allowed", f"{self.name} is a relay: convert it on its source "
                         f"({self.source})")

    def flush(self) -> None:
        return None  # nothing is stored: the source keeps the log

    def compact(self) -> None:
        return None

    def close(self) -> None:
        for task in list(self.forwarded.values()):
            task.cancel()
        super().close()

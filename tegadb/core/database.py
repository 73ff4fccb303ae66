"""A database: its committed contents and ``transact`` (PROTOCOL.md 4), sans I/O.

``Database.transact`` runs a transaction's ops in order against a private view
(ops.py) and, when all succeeded, commits it (commit.py); it returns the
results to send and the change set to journal and to feed monitors.  The
engine knows nothing of sockets, clocks or files: the caller passes how long
a parked ``wait`` has been waiting.
"""

from __future__ import annotations

from typing import Any

from . import values
from .atoms import NamedUUIDs
from .commit import commit
from .errors import OVSDBError, syntax_error
from .ops import LockHolder, Parked, Transaction
from .tables import Changes, Contents, Row, Table

# The journal block below keeps its names until it moves out of the core.
from .tables import difference as _difference
from .tables import ref_atoms as _ref_atoms
from .values import Datum

WAIT_FOREVER = float("inf")


class TxnOutcome:
    """What a transaction produced.

    ``results`` is the result array to send (None while parked); ``changes``
    the committed change set, None when nothing changed or the transaction
    failed; ``wait_deadline_ms`` is set only when an unsatisfied ``wait``
    parks the transaction: the smallest ``timeout`` of its waits, in ms since
    the request arrived, or ``WAIT_FOREVER``.
    """

    # Not a dataclass: mypyc compiles this __init__, while a dataclass gets
    # its __init__ generated at import and interpreted on every transaction.
    __slots__ = ("changes", "comment", "durable", "results", "txn_id", "wait_deadline_ms")

    def __init__(self, results: list[Any] | None, changes: Changes | None = None,
                 wait_deadline_ms: float | None = None, durable: bool = False,
                 comment: str | None = None, txn_id: str | None = None) -> None:
        self.results = results
        self.changes = changes
        self.wait_deadline_ms = wait_deadline_ms
        self.durable = durable
        self.comment = comment
        self.txn_id = txn_id  # with ``changes``: the id to journal and report


class Database(Contents):
    """One database's schema and committed contents, and transactions on them."""

    def _load_tables(self) -> None:
        super()._load_tables()
        # Replay reads a row's ``_version`` as written (see _ReplayedVersion).
        for table in self.tables.values():
            table.replay_parsers["_version"] = _ReplayedVersion(table.types["_version"])

    def transact(self, ops: list[Any], lock_holder: LockHolder | None = None, *,
                 elapsed_ms: int = 0, read_only: bool = False,
                 privileged: bool = False) -> TxnOutcome:
        """Run ``ops`` (the params after the database name) as one transaction.

        ``lock_holder`` is the client, for ``assert``; ``elapsed_ms`` is how
        long the request has waited (for ``wait`` timeouts);
        ``read_only`` makes write ops fail as on a read-only server; ``privileged``
        lets the server itself write a reserved database.
        """
        txn = Transaction(self, lock_holder, elapsed_ms)
        results: list[Any] = []
        count = len(ops)
        for index, op in enumerate(ops, 1):
            try:
                results.append(txn.execute(op, index, count, read_only, privileged))
            except Parked:
                deadline = txn.wait_timeout
                return TxnOutcome(None, wait_deadline_ms=WAIT_FOREVER if deadline is None
                                  else deadline)
            except OVSDBError as e:
                results.append(e.to_json())
                results.extend([None] * (count - index))
                return TxnOutcome(results)
        try:
            changes = commit(txn)
        except OVSDBError as e:
            results.append(e.to_json())
            return TxnOutcome(results)
        comment = "\n".join(txn.comments) or None
        if not changes:
            return TxnOutcome(results, None, None, txn.durable, comment)
        return TxnOutcome(results, changes, None, txn.durable, comment, txn.txn_id())

    def insert_internal(self, table: str, row: dict[str, Any]) -> Changes | None:
        """Insert a row (OVSDB JSON values) on the server's own behalf, even when reserved."""
        outcome = self.transact([{"op": "insert", "table": table, "row": row}], privileged=True)
        assert outcome.results is not None
        error = outcome.results[-1]
        if "error" in error:
            raise OVSDBError(error["error"], error.get("details"))
        return outcome.changes

    # --- journal -----------------------------------------------------------------
    def changes_to_json(self, changes: Changes, txn_id: str) -> dict[str, Any]:
        """The change set of transaction ``txn_id`` as the journal stores it
        (PROTOCOL.md 7.2, full new values).

        New rows list their persistent columns not at default, modified rows their
        changed persistent columns, deleted rows are null; rows whose changes touch
        only ephemeral columns are left out.  A row's ``_version`` is left out
        too when it is ``txn_id``, as the transaction gives the first row it changes.
        """
        out: dict[str, Any] = {}
        for name, rows in changes.items():
            table = self.tables[name]
            records: dict[str, Any] = {}
            for uuid, (old, new) in rows.items():
                if new is None:
                    records[uuid] = None
                elif old is None:
                    records[uuid] = table.stored_json(new, txn_id)
                else:
                    changed = {c: encode(new[c]) for c, encode in table.stored
                               if old[c] != new[c]}
                    if changed:
                        version = new["_version"][0]
                        if version != txn_id:
                            changed["_version"] = version
                        records[uuid] = changed
            if records:
                out[name] = records
        return out

    def snapshot_json(self, txn_id: str) -> dict[str, Any]:
        """Every row in the journal's new-row form, for compaction into a
        snapshot record whose id is ``txn_id``."""
        return {name: {uuid: table.stored_json(row, txn_id) for uuid, row in table.rows.items()}
                for name, table in self.tables.items() if table.rows}

    def apply_journal_record(self, record: dict[str, Any]) -> Changes:
        """Replay one journal record (a transaction, or a snapshot replacing everything).

        A row that the record stores without ``_version`` gets the record's ``txn``.
        """
        txn_id = record.get("txn")
        if type(txn_id) is not str:
            raise OVSDBError("syntax error", 'Record has no "txn" string.')
        version = (txn_id,)
        tables = record.get("changes")
        if type(tables) is not dict:
            # The journal checks this too; checked here, compiled code also
            # knows it iterates a dict, which is several times faster.
            raise OVSDBError("syntax error", 'Record has no "changes" object.')
        if record.get("snapshot"):
            self._load_tables()
        changes: Changes = {}
        for name, rows in tables.items():
            table = self.tables.get(name)
            if table is None:
                raise OVSDBError("syntax error", f"No table named {name}.")
            if type(rows) is not dict:
                raise OVSDBError("syntax error", f"Table {name}: rows are not a JSON object.")
            applied = changes[name] = {}
            for uuid, data in rows.items():
                if data is not None and type(data) is not dict:
                    raise OVSDBError("syntax error",
                                     f"Row {uuid} of table {name} is neither a JSON object nor null.")
                old = table.rows.get(uuid)
                if data is None and old is None:
                    continue  # already gone: replay is idempotent
                new = None if data is None else self._replayed_row(table, uuid, old, data,
                                                                   version)
                if table.strong_columns:
                    self._replay_references(table, uuid, old, new)
                table.apply(uuid, old, new)
                if table.weak_columns:
                    self.index_weak_references(table, uuid, old, new)
                applied[uuid] = (old, new)
        return changes

    @staticmethod
    def _replayed_row(table: Table, uuid: str, old: Row | None, data: dict[str, Any],
                      version: Datum) -> Row:
        row = dict(old) if old is not None else table.defaults.copy()
        row["_version"] = version  # unless ``data`` holds another
        parsers = table.replay_parsers
        for column, value in data.items():
            parser = parsers.get(column)
            if parser is None:
                raise OVSDBError("syntax error", f"No column {column} in table {table.name}.")
            row[column] = parser.parse(value, None)
        row["_uuid"] = (uuid,)
        return row

    def _replay_references(self, table: Table, uuid: str, old: Row | None,
                           new: Row | None) -> None:
        for ref in table.strong_columns:
            column = ref[0]
            removed, added = _difference(old[column] if old is not None else (),
                                         new[column] if new is not None else ())
            for delta, elements in ((-1, removed), (1, added)):
                for target_table, target in _ref_atoms(ref, elements):
                    if target == uuid:
                        continue
                    refs = self.tables[target_table].refs
                    total = refs.get(target, 0) + delta
                    if total:
                        refs[target] = total
                    else:
                        refs.pop(target, None)


class _ReplayedVersion(values.ValueParser):
    """A row's ``_version`` as written (bare text), so that a monitor resumes
    exactly after a restart."""

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        if type(json) is str:
            return (json,)
        raise syntax_error("_version is not a string", json)


__all__ = ["WAIT_FOREVER", "Database", "TxnOutcome"]

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
from .tables import Changes, Contents
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

    def reset_tables(self) -> None:
        super().reset_tables()
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


class _ReplayedVersion(values.ValueParser):
    """A row's ``_version`` as written (bare text), so that a monitor resumes
    exactly after a restart."""

    def parse(self, json: Any, symtab: NamedUUIDs | None) -> Datum:
        if type(json) is str:
            return (json,)
        raise syntax_error("_version is not a string", json)


__all__ = ["WAIT_FOREVER", "Database", "TxnOutcome"]

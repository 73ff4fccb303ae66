"""The transaction history of a database, for ``monitor_cond_since`` (PROTOCOL.md 5.6),
and merging change sets.

The history keeps the recent committed change sets by transaction id; a
client that resumes from an id still in the window gets what followed it,
merged into one change set per row (the first old image and the last new
one), the same merge that monitors apply between two flushes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice

from .tables import Changes
from .types import ZERO_UUID


def absorb(into: Changes, changes: Changes) -> None:
    """Merge a later change set: per row, the first old image and the last new one."""
    for name, rows in changes.items():
        merged = into.get(name)
        if merged is None:
            into[name] = dict(rows)   # a copy: change sets are shared, never mutated
            continue
        for uuid, pair in rows.items():
            earlier = merged.get(uuid)
            merged[uuid] = pair if earlier is None else (earlier[0], pair[1])


def merge(change_sets: Sequence[Changes]) -> Changes:
    """Change sets in commit order merged into one (a lone set is returned as is)."""
    if len(change_sets) == 1:
        return change_sets[0]
    merged: Changes = {}
    for changes in change_sets:
        absorb(merged, changes)
    return merged


class History:
    """The recent committed transactions of one database, for ``monitor_cond_since``.

    The window holds a *base* id, whose changes are no longer kept, then
    (id, change set) for each later transaction; a client whose last id is in
    the window can be brought up to date exactly by merging what follows it.

    Bounds (the oldest entries go first; the newest id always stays):

    - ``max_transactions`` (default 10000).  ovsdb-server keeps 100, which a
      busy database commits in a second or two; 10000 lets a client resume
      after a server restart or a network blip of a minute or more at 100
      commits/s, which is what resuming is for.
    - ``max_rows`` (default 20000 row changes), what the window really costs.
      Measured on the test schema's 15-column table: about 1.3 KB per row
      change kept (mostly the old image; column values are shared with the
      newer image), so at most ~26 MB; merging 20000 of them for a resume
      takes ~15 ms.  A transaction bigger than the budget leaves only its id,
      so a client behind it gets found=false, as from ovsdb-server's own
      rule (history no larger than the database).

    Rebuilding at start: ``append`` each replayed transaction, ``reset`` on a
    snapshot record (its id becomes the base).  A resume is exact only if a
    row's ``_version`` survives the restart, as the journal makes sure; a
    store that lost it would have to call ``reset(last_txn_id)`` after replay
    instead, so that ids from before the restart get found=false.
    """

    def __init__(self, max_transactions: int = 10_000, max_rows: int = 20_000) -> None:
        self.max_transactions = max_transactions
        self.max_rows = max_rows
        self._base: str | None = None
        self._entries: deque[tuple[str, Changes, int]] = deque()
        self._position: dict[str, int] = {}   # txn id -> sequence number
        # txn id -> (writer, date in ms) for the ids in _position whose
        # writer is known (what ``tegadb-client watch`` shows).
        self._origins: dict[str, tuple[str, int]] = {}
        self._next = 0                        # sequence number of the next append
        self._rows = 0

    @property
    def last_txn_id(self) -> str:
        """The newest transaction's id; all zeros when nothing was ever committed."""
        if self._entries:
            return self._entries[-1][0]
        return self._base or ZERO_UUID

    def append(self, txn_id: str, changes: Changes) -> None:
        """Record a committed transaction (change sets are kept by reference, not copied)."""
        size = 0
        for rows in changes.values():
            size += len(rows)
        self._entries.append((txn_id, changes, size))
        self._position[txn_id] = self._next
        self._next += 1
        self._rows += size
        while self._entries and (len(self._entries) > self.max_transactions
                                 or self._rows > self.max_rows):
            self._drop_oldest()

    def note_origin(self, txn_id: str, writer: str | None, date_ms: int) -> None:
        """Who committed ``txn_id`` (appended just before), and when; None: unknown."""
        if writer is not None and txn_id in self._position:
            self._origins[txn_id] = (writer, date_ms)

    def origin(self, txn_id: str) -> tuple[str, int] | None:
        """``(writer, date in ms)`` of a transaction in the window, where known."""
        return self._origins.get(txn_id)

    def _drop_oldest(self) -> None:
        txn_id, _, size = self._entries.popleft()
        self._rows -= size
        if self._base is not None:
            del self._position[self._base]
            if self._origins:
                self._origins.pop(self._base, None)
        self._base = txn_id

    def reset(self, txn_id: str) -> None:
        """Forget everything: ``txn_id`` becomes the base (a snapshot, or a converted db)."""
        self._entries.clear()
        self._position = {txn_id: self._next}
        self._origins.clear()
        self._next += 1
        self._rows = 0
        self._base = txn_id

    def changes_since(self, txn_id: str) -> Changes | None:
        """The merged changes committed after ``txn_id``; None when it is not in the window."""
        position = self._position.get(txn_id)
        if position is None or txn_id == ZERO_UUID:
            return None
        skip = len(self._entries) - (self._next - 1 - position)
        return merge([changes for _, changes, _ in islice(self._entries, skip, None)])


__all__ = ["History", "absorb", "merge"]

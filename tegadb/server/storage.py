"""Where a served database's log lives: the storage interface, and the
in-memory storage.

A log is a header (the schema) and records in order of ``seq``, their
position (``records``).  What a served database needs from its storage:

- ``read(after)``: the records that bring a database at position ``after``
  up to date, in order (replay at start; a member catching up).  When the
  log no longer holds the records just after ``after`` (a snapshot trimmed
  them), it starts with that snapshot.
- ``append(record)``: buffer one committed transaction's record, without
  I/O; its ``seq`` is greater than the last one's.
- ``flush(sync)``: write every buffered record as one batch (group commit:
  one per event-loop turn), synced to stable storage when ``sync`` (a
  transaction asked for durability).  A failure raises StorageError and
  leaves none of the batch behind; the caller then acknowledges none of it
  (it undoes the batch and fails its transactions), and the next batch is
  written as usual (a full disk may have room again by then).
- ``compact(header, snapshot)``: store a snapshot of every row at the last
  position and trim the records it covers (the file does both with one
  atomic rename; a log that cannot may trim after the snapshot is stored).
- ``should_compact(overdue)``: whether compacting is worth it now.

Every record a storage holds comes from the codec (``records``), so two
storages hold the same records for the same commits.  For a log shared by
several servers (issue 13's etcd log): ``flush`` appends its batch only if
the log is still at the position before the batch's first record, and
raises StorageError when another writer got there first.  Following the
log as others append (a watch from a position) is that storage's own
addition.

Implementations: the file journal (``journal.Journal``) and
``MemoryStorage`` below (tests, and databases that keep nothing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from .records import Header, Record

# Records since the last compaction after which an in-memory log compacts.
MEMORY_COMPACT_RECORDS = 10_000


class StorageError(Exception):
    """A log cannot be read or written; the message names where."""


class Storage(ABC):
    """The log of one served database (see the module's docstring)."""

    header: Header
    name: str  # for messages: a file's path, or what else names the log

    @abstractmethod
    def read(self, after: int = -1) -> Iterator[Record]:
        """Records after position ``after`` (-1: everything), in order."""

    @abstractmethod
    def where(self, record: Record) -> str:
        """Where ``record``, the last one ``read`` gave, is held (for messages)."""

    @abstractmethod
    def append(self, record: Record) -> None:
        """Buffers ``record`` until ``flush``."""

    @abstractmethod
    def flush(self, sync: bool) -> None:
        """Writes the buffered records as one batch; syncs them if ``sync``."""

    @abstractmethod
    def should_compact(self, overdue: bool = False) -> bool:
        """Whether to compact now (``overdue``: the longest interval has passed)."""

    @abstractmethod
    def compact(self, header: Header, snapshot: Record) -> None:
        """Stores ``snapshot`` (every row, at the last position) under
        ``header`` and drops the records it covers."""

    @abstractmethod
    def close(self) -> None:
        """Writes what is buffered and lets the log go."""


class MemoryStorage(Storage):
    """A log kept in this process's memory: nothing survives the process.

    ``sync`` has nothing to sync: a durable commit is as durable as the
    process.  Reopening a database on the same MemoryStorage object replays
    what was flushed to it, as reopening a file does.
    """

    def __init__(self, schema_json: dict[str, Any], name: str = "memory",
                 compact_after: int = MEMORY_COMPACT_RECORDS) -> None:
        self.header = Header(schema_json)
        self.name = name
        self.compact_after = compact_after
        self.batches = 0                  # flushes that wrote records
        self.synced_batches = 0           # of which asked for a sync
        self._records: list[Record] = []  # a snapshot can only be the first
        self._pending: list[Record] = []
        self._last_seq = -1               # of the last record appended
        self._since_compaction = 0

    def read(self, after: int = -1) -> Iterator[Record]:
        return iter([r for r in self._records if r.seq > after])

    def where(self, record: Record) -> str:
        return f"{self.name}: record {record.seq}"

    def append(self, record: Record) -> None:
        if record.seq <= self._last_seq:
            raise StorageError(f"{self.name}: record seq {record.seq} does not follow"
                               f" {self._last_seq}")
        self._pending.append(record)
        self._last_seq = record.seq

    def flush(self, sync: bool) -> None:
        if self._pending:
            self._records.extend(self._pending)
            self._since_compaction += len(self._pending)
            self._pending.clear()
            self.batches += 1
            if sync:
                self.synced_batches += 1

    def should_compact(self, overdue: bool = False) -> bool:
        if not self._since_compaction:
            return False
        return overdue or self._since_compaction >= self.compact_after

    def compact(self, header: Header, snapshot: Record) -> None:
        self.flush(sync=False)
        if not snapshot.snapshot or snapshot.seq < self._last_seq:
            raise StorageError(f"{self.name}: not a snapshot of the current state"
                               f" (seq {snapshot.seq})")
        self.header = header
        self._records = [snapshot]
        self._last_seq = snapshot.seq
        self._since_compaction = 0

    def close(self) -> None:
        self.flush(sync=False)


__all__ = ["MemoryStorage", "Storage", "StorageError"]

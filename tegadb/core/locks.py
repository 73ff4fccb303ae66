"""Server-wide named locks (PROTOCOL.md 6): FIFO waiters, the owner at the front.

Sans-IO: operations return the notices to send as
``(holder, "locked"|"stolen", lock name)`` triples; the methods layer sends them.
"""

from __future__ import annotations

from collections.abc import Hashable

Holder = Hashable
Notice = tuple[Holder, str, str]


class LockTable:
    """Every lock of the server, each a queue of waiters with the owner first."""

    def __init__(self) -> None:
        self.queues: dict[str, list[Holder]] = {}
        # Each holder's waiter record per name, with how it asked ("lock" or
        # "steal"); it outlives a stolen lock: the holder must still unlock.
        self.records: dict[str, dict[Holder, str]] = {}

    def has_record(self, holder: Holder, name: str) -> bool:
        return holder in self.records.get(name, ())

    def owner(self, name: str) -> Holder | None:
        queue = self.queues.get(name)
        return queue[0] if queue else None

    def lock(self, holder: Holder, name: str) -> bool:
        """Join the back of the queue; True if ``holder`` owns the lock now."""
        queue = self.queues.setdefault(name, [])
        queue.append(holder)
        self.records.setdefault(name, {})[holder] = "lock"
        return queue[0] is holder

    def steal(self, holder: Holder, name: str) -> list[Notice]:
        """Take the lock at once; the previous owner is told it was stolen.

        A victim that got the lock by ``lock`` stays in the queue, to get it
        back in turn; one that got it by ``steal`` leaves the queue.
        """
        queue = self.queues.setdefault(name, [])
        records = self.records.setdefault(name, {})
        notices: list[Notice] = []
        if queue:
            victim = queue[0]
            notices.append((victim, "stolen", name))
            if records[victim] == "steal":
                queue.pop(0)
        queue.insert(0, holder)
        records[holder] = "steal"
        return notices

    def unlock(self, holder: Holder, name: str) -> list[Notice]:
        """Drop ``holder``'s waiter record; whoever owns the lock next is told."""
        records = self.records.get(name)
        if records is not None:
            records.pop(holder, None)
            if not records:
                del self.records[name]
        queue = self.queues.get(name)
        if queue is None or holder not in queue:
            return []
        queue.remove(holder)
        if not queue:
            del self.queues[name]
            return []
        # OVS tells the owner "locked" whenever a waiter leaves, even when the
        # owner did not change; clients treat the notice idempotently.
        return [(queue[0], "locked", name)]

    def release_all(self, holder: Holder, names: list[str]) -> list[Notice]:
        notices: list[Notice] = []
        for name in names:
            notices.extend(self.unlock(holder, name))
        return notices


__all__ = ["LockTable", "Notice"]

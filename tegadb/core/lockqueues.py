"""Cluster-wide lock queues as a pure function of their waiter keys.

In cluster mode every waiter for a lock (PROTOCOL.md 6) is one key in etcd;
server/cluster_locks.py writes them, and every member mirrors them here from
a watch.  The rules give ovsdb-server's semantics (core/locks.py) from the
keys alone, with no read-modify-write:

- A waiter's key is ``PREFIX NAME/MODE/MEMBER/LEASE/SESSION/SERIAL``: MODE is
  how it asked ("lock" or "steal"), LEASE (hex) is the member's etcd lease,
  so a member restarted under the same id never reuses a key of its previous
  life, and SERIAL is new for every request, so the deletion of an old
  request's key is never taken for a later one's.
- The owner of NAME is its newest "steal" key (by create revision) if it has
  one, else its oldest "lock" key: lock waiters queue FIFO behind the stealer.
- A steal creates its key and, in the same etcd transaction, deletes every
  other "steal" key of NAME: a stealer that is stolen from leaves the queue
  (its member keeps its record until it unlocks), a lock waiter stays in line.
  The new key is written first, so every state inside that transaction
  already has the final owner and events can be applied one at a time.

Notices ``(key, "locked"|"stolen", name)`` follow from the events:
- a creation that changes the owner (a steal) tells the previous owner
  "stolen"; the request that created the key learns the answer in its reply;
- the deletion of a queued key tells the owner after it "locked": a new
  owner, or, as ovsdb-server does, the same owner when a waiter behind it left;
- the deletion of the owner's key tells that key "stolen": the member drops
  the notice when the key's holder unlocked, and sends it when the key went
  with its member's lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LOCK = "lock"
STEAL = "steal"
MODES = (LOCK, STEAL)

# (waiter key, "locked" | "stolen", lock name)
KeyNotice = tuple[bytes, str, str]


@dataclass(frozen=True, slots=True)
class WaiterKey:
    """The parts of a waiter's key below the prefix."""

    name: str
    mode: str
    member: str
    lease: int
    session: str
    serial: int

    def encode(self, prefix: bytes) -> bytes:
        return prefix + (f"{self.name}/{self.mode}/{self.member}/{self.lease:x}/"
                         f"{self.session}/{self.serial}").encode()


def parse_waiter_key(prefix: bytes, key: bytes) -> WaiterKey | None:
    """The parts of ``key``, or None for a key that is not a waiter's."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].decode("utf-8", "replace").split("/")
    if len(parts) != 6 or parts[1] not in MODES:
        return None
    name, mode, member, lease, session, serial = parts
    try:
        return WaiterKey(name, mode, member, int(lease, 16), session, int(serial))
    except ValueError:
        return None


def prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's key range holding every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd's "to the end of the key space"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def other_steal_ranges(prefix: bytes, key: WaiterKey) -> list[tuple[bytes, bytes]]:
    """The key ranges holding every "steal" key of ``key``'s lock but ``key``."""
    steals = prefix + f"{key.name}/{STEAL}/".encode()
    own = key.encode(prefix)
    return [(steals, own), (own + b"\0", prefix_end(steals))]


class LockQueues:
    """Every lock's waiters under one prefix, as the watch reports them."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        # name -> waiter key -> (mode, create revision)
        self.waiters: dict[str, dict[bytes, tuple[str, int]]] = {}

    def owner(self, name: str) -> bytes | None:
        waiters = self.waiters.get(name)
        if not waiters:
            return None
        steals = [(revision, key) for key, (mode, revision) in waiters.items() if mode == STEAL]
        if steals:
            return max(steals)[1]
        return min((revision, key) for key, (_, revision) in waiters.items())[1]

    def __contains__(self, key: bytes) -> bool:
        parsed = parse_waiter_key(self.prefix, key)
        return parsed is not None and key in self.waiters.get(parsed.name, ())

    def put(self, key: bytes, create_revision: int) -> list[KeyNotice]:
        """A waiter key was created (a rewrite of an existing one changes nothing)."""
        parsed = parse_waiter_key(self.prefix, key)
        if parsed is None:
            return []
        waiters = self.waiters.setdefault(parsed.name, {})
        if key in waiters:
            return []
        before = self.owner(parsed.name)
        waiters[key] = (parsed.mode, create_revision)
        if before is not None and self.owner(parsed.name) != before:
            return [(before, "stolen", parsed.name)]
        return []

    def delete(self, key: bytes) -> list[KeyNotice]:
        """A waiter key was deleted: by an unlock, a steal or its lease's end."""
        parsed = parse_waiter_key(self.prefix, key)
        waiters = self.waiters.get(parsed.name) if parsed is not None else None
        if parsed is None or waiters is None or key not in waiters:
            return []
        before = self.owner(parsed.name)
        # A "steal" key that does not own the lock was stolen from and is
        # already out of the queue: its deletion tells nobody anything.
        queued = parsed.mode == LOCK or key == before
        del waiters[key]
        if not waiters:
            del self.waiters[parsed.name]
        if not queued:
            return []
        notices: list[KeyNotice] = []
        if key == before:
            notices.append((key, "stolen", parsed.name))
        after = self.owner(parsed.name)
        if after is not None:
            notices.append((after, "locked", parsed.name))
        return notices

    def reset(self, listing: Iterable[tuple[bytes, int]]) -> list[KeyNotice]:
        """Replace every queue by a listing of (key, create revision) pairs.

        After a gap in the events (a start, a broken watch) only owners can be
        compared: each lock whose owner changed tells the old owner "stolen"
        and the new one "locked".
        """
        before = {name: self.owner(name) for name in self.waiters}
        self.waiters = {}
        for key, create_revision in listing:
            parsed = parse_waiter_key(self.prefix, key)
            if parsed is not None:
                self.waiters.setdefault(parsed.name, {})[key] = (parsed.mode, create_revision)
        notices: list[KeyNotice] = []
        for name in sorted(before.keys() | self.waiters.keys()):
            old, new = before.get(name), self.owner(name)
            if old == new:
                continue
            if old is not None:
                notices.append((old, "stolen", name))
            if new is not None:
                notices.append((new, "locked", name))
        return notices


__all__ = ["LOCK", "STEAL", "KeyNotice", "LockQueues", "WaiterKey", "other_steal_ranges",
           "parse_waiter_key", "prefix_end"]

"""The cluster's lock queues from their etcd keys (core/lockqueues.py).

The main check is differential: random lock/steal/unlock sequences go both to
the standalone LockTable and, as the etcd keys cluster_locks.py writes, to
LockQueues; owners and notices must agree at every step.
"""

from __future__ import annotations

import random

import pytest

from tegadb.core.lockqueues import (
    LOCK,
    STEAL,
    LockQueues,
    WaiterKey,
    other_steal_ranges,
    parse_waiter_key,
    prefix_end,
)
from tegadb.core.locks import LockTable

PREFIX = b"/tegadb/_locks/"


class FakeEtcd:
    """Keys with create revisions, writing as cluster_locks.py does, feeding a mirror."""

    def __init__(self) -> None:
        self.keys: dict[bytes, int] = {}
        self.revision = 0
        self.mirror = LockQueues(PREFIX)

    def put(self, key: bytes) -> list[tuple[bytes, str, str]]:
        self.revision += 1
        self.keys[key] = self.revision
        return self.mirror.put(key, self.revision)

    def steal(self, key: bytes) -> list[tuple[bytes, str, str]]:
        """One transaction: the put, then the range deletes (same revision)."""
        self.revision += 1
        self.keys[key] = self.revision
        notices = self.mirror.put(key, self.revision)
        parsed = parse_waiter_key(PREFIX, key)
        assert parsed is not None
        for start, end in other_steal_ranges(PREFIX, parsed):
            for other in sorted(k for k in self.keys if start <= k < end):
                del self.keys[other]
                notices += self.mirror.delete(other)
        return notices

    def delete(self, key: bytes) -> list[tuple[bytes, str, str]]:
        if key not in self.keys:
            return []
        self.revision += 1
        del self.keys[key]
        return self.mirror.delete(key)


def waiter(name: str, mode: str, session: int, serial: int, member: str = "m0") -> WaiterKey:
    return WaiterKey(name, mode, member, 0x1f, str(session), serial)


def test_key_round_trip_and_foreign_keys() -> None:
    key = waiter("ovn_northd", STEAL, 7, 12, member="m2")
    encoded = key.encode(PREFIX)
    assert encoded == b"/tegadb/_locks/ovn_northd/steal/m2/1f/7/12"
    assert parse_waiter_key(PREFIX, encoded) == key
    for foreign in (b"/tegadb/Test/log/1", PREFIX + b"x/lock/m0/1f/7",
                    PREFIX + b"x/grab/m0/1f/7/1", PREFIX + b"x/lock/m0/zz/7/1"):
        assert parse_waiter_key(PREFIX, foreign) is None


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_other_steal_ranges_cover_every_steal_key_but_ours() -> None:
    ours = waiter("L", STEAL, 2, 5)
    keys = [waiter("L", STEAL, s, n).encode(PREFIX) for s, n in ((1, 1), (2, 4), (3, 9), (10, 6))]
    keys += [ours.encode(PREFIX) + b"0", ours.encode(PREFIX)]
    outside = [waiter("L", LOCK, 1, 1).encode(PREFIX), waiter("L_2", STEAL, 1, 1).encode(PREFIX),
               waiter("K", STEAL, 1, 1).encode(PREFIX)]
    covered = {k for k in keys + outside
               if any(start <= k < end for start, end in other_steal_ranges(PREFIX, ours))}
    assert covered == set(keys) - {ours.encode(PREFIX)}


def test_steal_from_a_stealer_drops_it_for_good() -> None:
    etcd = FakeEtcd()
    a, s, t = (waiter("L", LOCK, 1, 1).encode(PREFIX), waiter("L", STEAL, 2, 2).encode(PREFIX),
               waiter("L", STEAL, 3, 3).encode(PREFIX))
    assert etcd.put(a) == []
    assert etcd.steal(s) == [(a, "stolen", "L")]
    assert etcd.steal(t) == [(s, "stolen", "L")]
    assert s not in etcd.keys and etcd.mirror.owner("L") == t
    # T leaves: the lock goes back to A, the "lock" waiter, never to S.
    assert etcd.delete(t) == [(t, "stolen", "L"), (a, "locked", "L")]
    assert etcd.mirror.owner("L") == a


def test_a_waiter_leaving_tells_the_owner_locked_again() -> None:
    etcd = FakeEtcd()
    a, b = waiter("L", LOCK, 1, 1).encode(PREFIX), waiter("L", LOCK, 2, 2).encode(PREFIX)
    etcd.put(a)
    etcd.put(b)
    assert etcd.delete(b) == [(a, "locked", "L")]
    assert etcd.delete(a) == [(a, "stolen", "L")]
    assert etcd.mirror.waiters == {}


def test_reset_compares_owners() -> None:
    mirror = LockQueues(PREFIX)
    a, b = waiter("L", LOCK, 1, 1).encode(PREFIX), waiter("L", LOCK, 2, 2).encode(PREFIX)
    c = waiter("M", LOCK, 3, 3).encode(PREFIX)
    mirror.put(a, 10)
    mirror.put(b, 11)
    mirror.put(c, 12)
    assert mirror.reset([(b, 11), (c, 12)]) == [(a, "stolen", "L"), (b, "locked", "L")]
    assert mirror.reset([(b, 11), (c, 12), (PREFIX + b"junk", 13)]) == []
    assert a not in mirror and b in mirror


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_the_standalone_lock_table(seed: int) -> None:
    rng = random.Random(seed)
    table, etcd = LockTable(), FakeEtcd()
    keys: dict[tuple[int, str], bytes] = {}    # (holder, name) -> its key
    holders: dict[bytes, int] = {}
    serial = 0
    for _ in range(200):
        holder, name = rng.randrange(5), rng.choice("LM")
        if table.has_record(holder, name):
            expected = table.unlock(holder, name)
            got = etcd.delete(keys.pop((holder, name)))
        else:
            serial += 1
            mode = rng.choice((LOCK, LOCK, STEAL))
            key = waiter(name, mode, holder, serial).encode(PREFIX)
            keys[holder, name], holders[key] = key, holder
            if mode == LOCK:
                table.lock(holder, name)
                got = etcd.put(key)
                expected = []
            else:
                expected = table.steal(holder, name)
                got = etcd.steal(key)
        # A holder that just unlocked is not told about its own key's deletion.
        translated = [(holders[key], kind, lock) for key, kind, lock in got
                      if table.has_record(holders[key], lock)]
        assert translated == expected
        for lock in "LM":
            owner_key = etcd.mirror.owner(lock)
            assert (holders[owner_key] if owner_key else None) == table.owner(lock)

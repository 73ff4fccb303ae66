"""Cluster-wide locks (server/cluster_locks.py) against a real etcd.

Each `Member` is what one tegadb-server member would have: its own
connection to etcd (etcd_log.Etcd, preferring its own etcd member), its own
lease kept alive every TTL/3 seconds, and its own ClusterLocks.  Holders are
plain objects, as sessions are.  Every scenario runs on uvloop, as the
server does, against one 3-member etcd cluster shared by the module (a test
that kills or stops an etcd member brings it back before it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aetcd
import pytest
import uvloop
from etcdpeers import EtcdCluster
from peers import free_tcp_port

from tegadb.server.cluster_locks import ClusterLocks, ClusterLocksUnavailable
from tegadb.server.etcd_log import Etcd, EtcdUnavailable, parse_endpoints

LEASE_TTL = 3
# A dead member's lock must reach the next waiter within the lease's TTL plus
# etcd's expiry sweep (it checks leases every 500 ms) and the watch's delay.
HANDOVER_BOUND = LEASE_TTL + 2.0
NOTICE_TIMEOUT = 5.0
# gRPC shares a connection to an address between all channels of a process,
# with its back-off after failures (up to 2 min by default): a client of an
# etcd member that was down would wait out a back-off earned by another.
GRPC_OPTIONS = {"grpc.use_local_subchannel_pool": 1, "grpc.max_reconnect_backoff_ms": 1000}


class Holder:
    """Stands for a session; a ``broken`` one fails to take notices."""

    def __init__(self, label: str, broken: bool = False) -> None:
        self.label = label
        self.broken = broken

    def __repr__(self) -> str:
        return f"<holder {self.label}>"


class Member:
    """One member's connection to etcd, lease (kept alive) and ClusterLocks.

    ``endpoints`` are the etcd members it may use, its own first, through
    etcd_log.Etcd as the server does; ``bare`` gives ClusterLocks a plain
    aetcd client of the first one instead.
    """

    def __init__(self, endpoints: list[str], member_id: str, prefix: bytes,
                 ttl: int = LEASE_TTL, timeout: float = 2.0, bare: bool = False) -> None:
        self.etcd = Etcd(parse_endpoints(",".join(endpoints)), timeout=timeout)
        url = urlsplit(endpoints[0])
        self.bare = aetcd.Client(url.hostname or "127.0.0.1", url.port or 2379, timeout=5,
                                 options=GRPC_OPTIONS) if bare else None
        self.member_id = member_id
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.notices: asyncio.Queue[tuple[Holder, str, str]] = asyncio.Queue()
        # Everything the member's holders were told, in order; a test may
        # add the replies it got to see how they interleave.
        self.history: list[tuple[Any, ...]] = []
        self.lease_id = 0
        self.locks: ClusterLocks
        self.keepalive: asyncio.Task[None] | None = None

    async def start(self) -> Member:
        await self.new_lease()
        self.locks = ClusterLocks(self.bare or self.etcd, self.prefix, self.member_id,
                                  self.lease_id, self._notify, timeout=self.timeout)
        await self.locks.start()
        return self

    async def new_lease(self) -> None:
        self.stop_keepalive()
        lease = await self.etcd.call(lambda client: client.lease(self.ttl))
        self.lease_id = lease.id
        self.keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

    def _notify(self, holder: Any, kind: str, name: str) -> None:
        if holder.broken:
            raise ConnectionResetError(f"{holder} is gone")
        self.notices.put_nowait((holder, kind, name))
        self.history.append((kind, name))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            with contextlib.suppress(aetcd.ClientError, EtcdUnavailable):
                await self.etcd.call(lambda client: client.refresh_lease(self.lease_id))

    async def revoke_lease(self) -> None:
        self.stop_keepalive()
        await self.etcd.call(lambda client: client.revoke_lease(self.lease_id))

    def stop_keepalive(self) -> None:
        """The member's process is gone, as far as etcd can tell."""
        if self.keepalive is not None:
            self.keepalive.cancel()

    async def next_notice(self, timeout: float = NOTICE_TIMEOUT) -> tuple[Holder, str, str]:
        return await asyncio.wait_for(self.notices.get(), timeout)

    async def no_notice(self, wait: float = 0.3) -> None:
        """Nothing arrives within ``wait`` seconds (after the watch's round trip)."""
        await asyncio.sleep(wait)
        assert self.notices.empty(), self.notices.get_nowait()

    async def close(self) -> None:
        self.stop_keepalive()
        await self.locks.close()
        await self.etcd.close()
        if self.bare is not None:
            await self.bare.close()


async def restart(cluster: EtcdCluster, index: int) -> None:
    """Bring an etcd member back, and wait until this process reaches it again.

    gRPC keeps one connection per address for the whole process (etcd_log's
    clients share it) and, while the member was down, learnt to wait longer
    and longer before trying it again: without this wait, the next test's
    client of that member would fail at once.
    """
    cluster.restart(index)
    etcd = Etcd(parse_endpoints(cluster.endpoints[index]), timeout=1)   # etcd_log's options
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                await etcd.call(lambda client: client.get(b"/"))
                return
            except EtcdUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await etcd.close()


@pytest.fixture
def etcd(etcd_cluster_module: EtcdCluster) -> EtcdCluster:
    """The module's 3-member etcd cluster: each run has a prefix of its own."""
    return etcd_cluster_module


def run(scenario: Callable[..., Awaitable[None]], cluster: EtcdCluster, count: int = 3,
        ttl: int = LEASE_TTL, reach: str = "all") -> None:
    """Run ``scenario(*members)`` on uvloop with ``count`` started members.

    Member i prefers etcd member i; with ``reach`` "all" it may fail over to
    the others, with "own" it has no other, with "bare" it has a plain aetcd
    client.  Each run has a prefix of its own: the tests share one cluster.
    """
    prefix = f"/tegadb-test-{uuid.uuid4().hex}/_locks/".encode()

    def endpoints(i: int) -> list[str]:
        own = i % cluster.size
        rotated = cluster.endpoints[own:] + cluster.endpoints[:own]
        return rotated if reach == "all" else rotated[:1]

    async def main() -> None:
        members = [Member(endpoints(i), f"m{i}", prefix, ttl, bare=reach == "bare")
                   for i in range(count)]
        try:
            for member in members:
                await member.start()
            await scenario(*members)
        finally:
            for member in members:
                if member.keepalive is not None:
                    await member.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_lock_waits_in_line_across_members_and_passes_on_unlock(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member, m2: Member) -> None:
        a, b, c = Holder("a"), Holder("b"), Holder("c")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.lock(b, "L") is False
        waiting = m2.locks.lock(c, "L")
        # The record is there before etcd answers: a request read right
        # after this one is checked against it.
        assert m2.locks.has_record(c, "L")
        assert await waiting is False
        assert m0.locks.owner_is(a, "L")
        assert not m1.locks.owner_is(b, "L") and not m2.locks.owner_is(c, "L")
        # Another lock name is independent of "L".
        assert await m2.locks.lock(c, "M") is True
        await m0.locks.unlock(a, "L")
        assert await m1.next_notice() == (b, "locked", "L")
        assert m1.locks.owner_is(b, "L") and not m0.locks.owner_is(a, "L")
        assert not m0.locks.has_record(a, "L")
        await m1.locks.unlock(b, "L")
        # C owned M already; now it owns L too, and is told once per name.
        assert await m2.next_notice() == (c, "locked", "L")
        for member in (m0, m1, m2):
            await member.no_notice()

    run(scenario, etcd)


def test_pipelined_unlock_and_lock_again_keep_their_order(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member) -> None:
        a = Holder("a")
        for round_ in range(20):
            name = f"P{round_}"
            # As a session's requests read in one go: no await in between.
            first = m0.locks.lock(a, name)
            m0.locks.unlock(a, name)
            again = m0.locks.lock(a, name)
            assert (await first, await again) == (True, True)
            await m0.locks.unlock(a, name)
        await m0.no_notice()

    run(scenario, etcd, count=1)


def test_waiter_leaving_tells_owner_locked_again_as_ovsdb_server_does(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member) -> None:
        a, b = Holder("a"), Holder("b")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.lock(b, "L") is False
        await m1.locks.unlock(b, "L")
        assert await m0.next_notice() == (a, "locked", "L")
        await m1.no_notice()

    run(scenario, etcd, count=2)


def test_a_failing_notice_does_not_stop_the_member(etcd: EtcdCluster,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(m0: Member, m1: Member) -> None:
        a, b, c, broken = Holder("a"), Holder("b"), Holder("c"), Holder("x", broken=True)
        assert await m0.locks.lock(broken, "L") is True
        assert await m1.locks.lock(c, "M") is True
        assert await m0.locks.lock(a, "M") is False
        assert await m1.locks.steal(b, "L") is True    # "stolen" to x fails
        await m1.locks.unlock(c, "M")
        assert await m0.next_notice() == (a, "locked", "M")
        assert 'sending "stolen" for lock "L" to <holder x> failed' in caplog.text

    run(scenario, etcd, count=2)


def test_disconnect_hands_locks_to_waiters_on_other_members(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member, m2: Member) -> None:
        a, b, c = Holder("a"), Holder("b"), Holder("c")
        assert await m0.locks.lock(a, "L") is True
        assert await m0.locks.steal(a, "M") is True
        assert await m1.locks.lock(b, "L") is False
        assert await m2.locks.lock(c, "M") is False
        m0.locks.release_all(a, ["L", "M"])
        assert not m0.locks.has_record(a, "L") and not m0.locks.owner_is(a, "L")
        assert await m1.next_notice() == (b, "locked", "L")
        assert await m2.next_notice() == (c, "locked", "M")
        await m0.no_notice()

    run(scenario, etcd)


def test_steal_across_members(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member, m2: Member) -> None:
        a, b, c = Holder("a"), Holder("b"), Holder("c")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.steal(b, "L") is True
        assert m1.locks.owner_is(b, "L")
        assert await m0.next_notice() == (a, "stolen", "L")
        assert not m0.locks.owner_is(a, "L") and m0.locks.has_record(a, "L")
        # B got it by stealing: stolen from in turn, it leaves the queue.
        assert await m2.locks.steal(c, "L") is True
        assert await m1.next_notice() == (b, "stolen", "L")
        assert m1.locks.has_record(b, "L") and not m1.locks.owner_is(b, "L")
        await m0.no_notice()
        # A asked with "lock": it is next in line when C lets go, B is not.
        await m2.locks.unlock(c, "L")
        assert await m0.next_notice() == (a, "locked", "L")
        assert m0.locks.owner_is(a, "L")
        await m1.no_notice()
        # B's record stays until it unlocks; its unlock tells nobody anything.
        await m1.locks.unlock(b, "L")
        assert await m1.locks.lock(b, "L") is False
        for member in (m0, m1, m2):
            await member.no_notice()

    run(scenario, etcd)


def test_reply_and_notices_tell_one_story_when_a_steal_races_a_lock(etcd: EtcdCluster) -> None:
    """A "stolen" never comes before the reply that said "locked": true."""
    async def scenario(m0: Member, m1: Member) -> None:
        async def lock(holder: Holder, name: str) -> None:
            m0.history.append(("reply", await m0.locks.lock(holder, name)))

        for round_ in range(60):
            name = f"R{round_}"
            a, b = Holder("a"), Holder("b")
            m0.history.clear()
            await asyncio.gather(lock(a, name), m1.locks.steal(b, name))
            await asyncio.sleep(0.05)
            # Either the lock came first (owner, then stolen) or the steal
            # did (a waits behind b): never a notice before the reply.
            assert m0.history in ([("reply", True), ("stolen", name)],
                                  [("reply", False)]), m0.history
            await m1.locks.unlock(b, name)
            await m0.locks.unlock(a, name)

    run(scenario, etcd, count=2)


def test_random_requests_leave_every_holder_knowing_where_it_stands(etcd: EtcdCluster) -> None:
    """Random lock/steal/unlock on three members at once; once quiet, what
    each holder was told (replies, then notices) is what its member says,
    and no lock has two owners."""
    async def scenario(*members: Member) -> None:
        rng = random.Random(13)
        holders = [(Holder(f"h{i}"), members[i % len(members)]) for i in range(9)]
        told: dict[tuple[Holder, str], bool] = {}

        def read_notices() -> None:
            for member in members:
                while not member.notices.empty():
                    holder, kind, name = member.notices.get_nowait()
                    told[holder, name] = kind == "locked"

        async def request(holder: Holder, member: Member, name: str) -> None:
            if member.locks.has_record(holder, name):
                await member.locks.unlock(holder, name)
                told.pop((holder, name), None)
            elif rng.random() < 0.25:
                told[holder, name] = await member.locks.steal(holder, name)
            else:
                told[holder, name] = await member.locks.lock(holder, name)

        for _ in range(60):
            read_notices()
            await asyncio.gather(*(request(holder, member, rng.choice("XY"))
                                   for holder, member in rng.sample(holders, 3)))
        await asyncio.sleep(0.5)
        read_notices()
        for name in "XY":
            owners = [holder for holder, member in holders
                      if member.locks.owner_is(holder, name)]
            assert len(owners) <= 1, (name, owners)
            for holder, member in holders:
                if member.locks.has_record(holder, name):
                    assert told[holder, name] == (owners == [holder]), (holder, name)

    run(scenario, etcd)


@pytest.mark.parametrize("death", ["lease revoked", "keep-alive stopped"])
def test_dead_member_loses_its_lock_within_seconds(etcd: EtcdCluster, death: str) -> None:
    async def scenario(m0: Member, m1: Member, m2: Member) -> None:
        a, b, c = Holder("a"), Holder("b"), Holder("c")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.lock(b, "L") is False
        assert await m2.locks.lock(c, "L") is False
        started = time.monotonic()
        if death == "lease revoked":
            await m0.revoke_lease()
        else:
            m0.stop_keepalive()
        assert await m1.next_notice(HANDOVER_BOUND) == (b, "locked", "L")
        elapsed = time.monotonic() - started
        assert elapsed < HANDOVER_BOUND
        if death == "lease revoked":
            assert elapsed < 1.0
        assert m1.locks.owner_is(b, "L")
        # m0 itself still runs here: its holder is told it lost the lock.
        assert await m0.next_notice() == (a, "stolen", "L")
        assert not m0.locks.owner_is(a, "L")
        await m2.no_notice()

    run(scenario, etcd)


def test_member_with_a_new_lease_puts_its_lock_waiters_back_in_line(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member) -> None:
        a, b, c, s = Holder("a"), Holder("b"), Holder("c"), Holder("s")
        assert await m0.locks.lock(a, "L") is True
        assert await m0.locks.lock(c, "N") is True
        assert await m0.locks.steal(s, "M") is True
        assert await m1.locks.lock(b, "L") is False
        # m0's lease ends while m0 lives on (cut off from etcd too long).
        await m0.revoke_lease()
        assert await m1.next_notice() == (b, "locked", "L")
        lost = {await m0.next_notice() for _ in range(3)}
        assert lost == {(a, "stolen", "L"), (c, "stolen", "N"), (s, "stolen", "M")}
        await m0.new_lease()
        m0.locks.use_lease(m0.lease_id)
        # C is back in line, alone: it owns "N" again and is told so.
        assert await m0.next_notice() == (c, "locked", "N")
        await m0.no_notice()
        # A asked with "lock": it is back in line, behind B.  S stole: it is not.
        await m1.locks.unlock(b, "L")
        assert await m0.next_notice() == (a, "locked", "L")
        assert m0.locks.owner_is(a, "L") and not m0.locks.owner_is(s, "M")
        assert await m1.locks.lock(b, "M") is True

    run(scenario, etcd, count=2)


def test_member_cut_off_from_etcd_fails_requests_in_bounded_time(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member) -> None:
        a, b = Holder("a"), Holder("b")
        assert await m0.locks.lock(a, "L") is True
        etcd.kill(0)     # the etcd member m0 talks to
        try:
            started = time.monotonic()
            with pytest.raises(ClusterLocksUnavailable, match='"lock" of lock "M"'):
                await m0.locks.lock(b, "M")
            assert time.monotonic() - started < m0.timeout + 0.5
            assert not m0.locks.has_record(b, "M")
            # The local view is no longer trusted once the probe has failed long enough.
            deadline = time.monotonic() + 3.0
            while m0.locks.owner_is(a, "L") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not m0.locks.owner_is(a, "L")
            started = time.monotonic()
            await m0.locks.unlock(a, "L")      # never fails: retried in the background
            assert time.monotonic() - started < m0.timeout + 0.5
        finally:
            await restart(etcd, 0)

    run(scenario, etcd, count=1, reach="own")


def test_member_follows_again_and_catches_up_when_etcd_is_back(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member) -> None:
        a, b = Holder("a"), Holder("b")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.lock(b, "L") is False
        etcd.kill(1)     # the etcd member m1 talks to
        try:
            # A is gone while m1 cannot see it: m1 learns it when it lists again.
            await m0.locks.unlock(a, "L")
            await asyncio.sleep(2.0)
            assert not m1.locks.owner_is(b, "L")
        finally:
            await restart(etcd, 1)
        assert await m1.next_notice(10) == (b, "locked", "L")
        assert m1.locks.owner_is(b, "L")
        assert await m0.locks.lock(a, "L") is False
        await m1.locks.unlock(b, "L")
        assert await m0.next_notice() == (a, "locked", "L")

    # m1's lease must outlive the outage (the restart takes ~1 s).
    run(scenario, etcd, count=2, ttl=10, reach="own")


def test_member_fails_over_to_another_etcd_member(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member, m1: Member) -> None:
        a, b = Holder("a"), Holder("b")
        assert await m0.locks.lock(a, "L") is True
        assert await m1.locks.lock(b, "L") is False
        etcd.kill(1)     # the etcd member m1 prefers
        try:
            await m0.locks.unlock(a, "L")
            assert await m1.next_notice(5) == (b, "locked", "L")
            assert m1.locks.owner_is(b, "L")
            assert await m1.locks.steal(b, "M") is True
        finally:
            await restart(etcd, 1)

    run(scenario, etcd, count=2, reach="all")


def stop_process(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped: a thread of it that is
    running may otherwise still answer a request sent just after the signal."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                break
        time.sleep(0.005)
    time.sleep(0.05)  # every thread, not only the first, is stopped


def test_etcd_not_answering_times_requests_out(etcd: EtcdCluster) -> None:
    async def scenario(m0: Member) -> None:
        a, b, c = Holder("a"), Holder("b"), Holder("c")
        assert await m0.locks.lock(a, "L") is True
        stop_process(etcd.pid(0))     # its connections stay open, unanswered
        try:
            started = time.monotonic()
            with pytest.raises(ClusterLocksUnavailable,
                               match='"steal" of lock "M" within 2 s: TimeoutError'):
                await m0.locks.steal(b, "M")
            assert m0.timeout - 0.1 < time.monotonic() - started < m0.timeout + 0.5
            assert not m0.locks.has_record(b, "M")
            # By now the probe has not been answered for longer than stale_after.
            assert not m0.locks.owner_is(a, "L")
            # Closing fails what is still in flight, in bounded time.
            in_flight = m0.locks.lock(c, "N")
            started = time.monotonic()
            await m0.locks.close()
            assert time.monotonic() - started < 3 * m0.timeout
            with pytest.raises(ClusterLocksUnavailable, match="the lock table was closed"):
                await in_flight
        finally:
            os.kill(etcd.pid(0), signal.SIGCONT)

    run(scenario, etcd, count=1, reach="bare")


def test_start_without_etcd_fails_in_bounded_time() -> None:
    async def scenario() -> None:
        client = aetcd.Client(port=free_tcp_port())
        locks = ClusterLocks(client, "/tegadb/_locks", "m0", 1, lambda *notice: None,
                             timeout=1.0)
        started = time.monotonic()
        with pytest.raises(ClusterLocksUnavailable, match="cannot read /tegadb/_locks/"):
            await locks.start()
        assert time.monotonic() - started < 1.5
        await client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())

"""Cluster-wide OVSDB locks (PROTOCOL.md 6) kept in etcd: what a member serves.

The layout in etcd (the queue rules are core/lockqueues.py's):

    PREFIX NAME/lock/MEMBER/LEASE/SESSION/SERIAL    a waiter that sent "lock"
    PREFIX NAME/steal/MEMBER/LEASE/SESSION/SERIAL   one that sent "steal"

Every key is empty and attached to its member's lease, so a member that dies
(its lease is no longer kept alive) loses its waiters within the lease's TTL
and the next waiter is told "locked".  A member that lives on while its lease
ended (cut off from etcd for longer than the TTL) tells its owners "stolen";
given a new lease (``use_lease``), it puts its lock waiters back in line.

The owner of NAME is its newest steal key, else its oldest lock key (FIFO by
create revision).  A ``lock`` is one put; a ``steal`` is one transaction
that puts its key and deletes every other steal key of NAME (the stealer
stolen from leaves the queue; its holder keeps its record here until it
unlocks); ``unlock`` deletes the key.

Each member mirrors every key under PREFIX with a watch and derives the
``locked`` / ``stolen`` notices from its events, so a holder on any member is
told when a holder on another one takes or frees a lock.  ``lock`` and
``steal`` change the holder's record at once and return a future, which
resolves once the watch has brought back their own key's creation: then
``owner_is`` already agrees with the answer.  Notices for a holder whose
request is in flight are held back and sent, in order, just after the
future's own callbacks (``loop.call_soon``), so they follow the reply.

How stale ``owner_is`` can be (what ``assert`` sees): by the watch's delay
(milliseconds) while the member reaches etcd.  A probe reads from etcd every
``probe_interval`` seconds; when none has succeeded for ``stale_after``
seconds, or the watch is broken, ``owner_is`` answers False for everyone.
Keep ``stale_after`` below the lease's TTL minus its keep-alive interval (1.5 s
against 3 s and 1 s by default): a member cut off from etcd then stops
asserting its locks before etcd can expire its lease and hand them on.

When etcd cannot be reached, the futures of ``lock`` and ``steal`` fail
with ClusterLocksUnavailable within ``timeout`` seconds.  ``unlock`` and
``release_all`` never fail: a key they could not delete is retried in the
background until it is gone, which the lease's expiry also ensures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aetcd
import aetcd.transactions as txn

from ..core.lockqueues import LOCK, STEAL, KeyNotice, LockQueues, WaiterKey, other_steal_ranges
from .etcd_log import Etcd, EtcdUnavailable

log = logging.getLogger("tegadb.server.cluster_locks")

Holder = Hashable
Notify = Callable[[Holder, str, str], None]
T = TypeVar("T")

# How long to wait before trying etcd again after the watch broke or a
# deletion failed.
RETRY_INTERVAL = 0.5
# What a broken connection to etcd raises: aetcd's errors, etcd_log.Etcd's
# "no endpoint answered", and our own deadlines.
ETCD_ERRORS = (aetcd.ClientError, EtcdUnavailable, TimeoutError)


class ClusterLocksUnavailable(Exception):
    """etcd did not take a lock request in time (or the table closed first).

    The request leaves no record, and its key, if it reached etcd, is deleted.
    """


def error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


class _OneClient:
    """A bare aetcd client, called as etcd_log.Etcd is (without its fail-over)."""

    def __init__(self, client: aetcd.Client) -> None:
        self.client = client

    async def call(self, request: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        return await request(self.client)


@dataclass(eq=False)
class _Record:
    """A holder's waiter record for one lock name, and its key in etcd."""

    holder: Holder
    name: str
    mode: str
    lease: int
    key: bytes
    # Set when the watch brings back the key's creation: whether the holder
    # owned the lock then; set to False if the request failed.
    placed: asyncio.Future[bool]
    # Notices held back while the request is in flight; None once it resolved.
    deferred: list[str] | None = field(default_factory=list)
    # Put back in line by use_lease(), not by a request: told "locked" if its
    # key owns the lock as soon as it is written.
    requeued: bool = False


class ClusterLocks:
    """The lock table of one member of a cluster, shared through etcd.

    ``etcd`` is the member's etcd_log.Etcd (it fails over between endpoints)
    or a bare aetcd client; ``lease_id`` is the member's lease, which its
    owner keeps alive; ``notify(holder, "locked" | "stolen", name)`` is
    called for each notice, at any time; ``timeout`` bounds every request.
    """

    def __init__(self, etcd: Etcd | aetcd.Client, prefix: bytes | str, member_id: str,
                 lease_id: int, notify: Notify, *, timeout: float = 2.0,
                 probe_interval: float = 0.5, stale_after: float = 1.5) -> None:
        prefix = prefix.encode() if isinstance(prefix, str) else prefix
        if not member_id or "/" in member_id:
            raise ValueError(f"cluster locks: member id {member_id!r} must be non-empty, "
                             f"without '/'")
        self._etcd = etcd if isinstance(etcd, Etcd) else _OneClient(etcd)
        self._prefix = prefix if prefix.endswith(b"/") else prefix + b"/"
        self._member = member_id
        self._lease = lease_id
        self._notify = notify
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._stale_after = stale_after
        self._queues = LockQueues(self._prefix)
        self._records: dict[tuple[Holder, str], _Record] = {}
        self._by_key: dict[bytes, _Record] = {}      # this member's keys in etcd
        self._session_ids: dict[Holder, str] = {}
        self._next_session = itertools.count(1)
        self._next_serial = itertools.count(1)
        self._orphans: set[bytes] = set()             # keys still to delete
        self._tasks: set[asyncio.Task[Any]] = set()
        # The deletion in progress of each (holder, name)'s last key: the
        # holder's next request for that name is written after it.
        self._deletions: dict[tuple[Holder, str], asyncio.Task[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._watch: Any = None
        self._watching = False
        self._last_contact = float("-inf")

    # --- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        """Load every waiter and follow them (raises ClusterLocksUnavailable)."""
        try:
            await self._sync()
        except ETCD_ERRORS as error:
            raise ClusterLocksUnavailable(
                f"cluster locks: cannot read {self._prefix.decode()} from etcd "
                f"within {self._timeout:g} s: {error_text(error)}") from error
        self._spawn(self._follow())
        self._spawn(self._probe())

    async def close(self) -> None:
        """Give up this member's locks (best effort, bounded) and stop."""
        records = list(self._records.values())
        self._records.clear()
        if records:
            self._delete_soon(records)
        if self._deletions:
            await asyncio.wait(set(self._deletions.values()), timeout=self._timeout)
        # A cancelled request's clean-up may start a task: cancel until none is left.
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_watch()

    # --- requests ---------------------------------------------------------------
    # Each request changes the holder's record at once, so ``has_record``
    # answers the holder's next request (even one already read) correctly,
    # and returns a future for what etcd makes of it.
    def has_record(self, holder: Holder, name: str) -> bool:
        return (holder, name) in self._records

    @property
    def names_in_use(self) -> int:
        """How many lock names this member's sessions hold or wait for (tegadb_stats)."""
        return len({name for _, name in self._records})

    def owner_is(self, holder: Holder, name: str) -> bool:
        """Whether ``holder`` owns ``name`` as this member sees the cluster."""
        record = self._records.get((holder, name))
        return (record is not None and self._current()
                and self._queues.owner(name) == record.key)

    def lock(self, holder: Holder, name: str) -> asyncio.Future[bool]:
        """Join the back of the queue; resolves to whether ``holder`` owned the lock then.

        Reply as the future resolves (in a done callback, or straight after
        the ``await``): notices that came meanwhile are sent just after.  It
        fails with ClusterLocksUnavailable when etcd does not answer in time.
        """
        return self._place(holder, name, LOCK)

    def steal(self, holder: Holder, name: str) -> asyncio.Future[bool]:
        """Take the lock (resolves to True); the owner, on whatever member, is told "stolen"."""
        return self._place(holder, name, STEAL)

    def unlock(self, holder: Holder, name: str) -> asyncio.Task[None]:
        """Drop the record now; the task deletes its key once its request settled.

        The task never fails: a key that etcd did not delete in time is
        retried in the background.
        """
        return self._delete_soon([self._take_record(holder, name)])

    def release_all(self, holder: Holder, names: Iterable[str]) -> None:
        """A holder is gone: drop its records now, delete their keys in the background."""
        records = [self._take_record(holder, name) for name in names
                   if (holder, name) in self._records]
        self._session_ids.pop(holder, None)
        if records:
            self._delete_soon(records)

    def use_lease(self, lease_id: int) -> None:
        """The member's lease ended and it has a new one: write keys with it.

        Each holder that asked with "lock" and whose key went with the old
        lease joins the back of the queue again, and is told "locked" when
        its turn comes, as a lock waiter stolen from stays in line.  A
        stealer whose key went does not come back, as a stealer stolen from
        does not.
        """
        self._lease = lease_id
        self._requeue_lost()

    # --- placing and removing keys -------------------------------------------------
    def _place(self, holder: Holder, name: str, mode: str) -> asyncio.Future[bool]:
        if (holder, name) in self._records:
            raise ValueError(f'cluster locks: {holder!r} already waits for lock "{name}"')
        # unlock then lock again: this key is written after the old one is gone
        earlier = self._deletions.get((holder, name))
        record, waiter = self._new_record(holder, name, mode)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._spawn(self._settle_request(record, waiter, answer, earlier))
        return answer

    def _new_record(self, holder: Holder, name: str, mode: str) -> tuple[_Record, WaiterKey]:
        session = self._session_ids.setdefault(holder, str(next(self._next_session)))
        waiter = WaiterKey(name, mode, self._member, self._lease, session,
                           next(self._next_serial))
        record = _Record(holder, name, mode, self._lease, waiter.encode(self._prefix),
                         asyncio.get_running_loop().create_future())
        self._records[holder, name] = self._by_key[record.key] = record
        return record, waiter

    def _requeue_lost(self) -> None:
        """Put back in line each lock waiter whose key went with an earlier lease."""
        lost = [record for record in self._records.values()
                if record.mode == LOCK and record.lease != self._lease
                and record.placed.done() and record.key not in self._queues]
        if not lost:
            return
        requeued = []
        for record in lost:
            record, waiter = self._new_record(record.holder, record.name, LOCK)
            record.deferred, record.requeued = None, True
            requeued.append((record, waiter))
        self._spawn(self._write_requeued(requeued))

    async def _write_requeued(self, requeued: list[tuple[_Record, WaiterKey]]) -> None:
        # One after the other, so that they keep their order in the queue.
        for record, waiter in requeued:
            failures = 0
            while (self._records.get((record.holder, record.name)) is record
                   and record.lease == self._lease):
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._write(waiter, record.key)
                    break
                except ETCD_ERRORS as error:
                    if not failures:
                        log.warning('cluster locks: putting %r back in line for lock "%s" '
                                    "failed (%s); retrying", record.holder, record.name,
                                    error_text(error))
                    failures += 1
                    await asyncio.sleep(RETRY_INTERVAL)
            else:
                # Unlocked meanwhile, or another lease came: a later pass takes it.
                if not record.placed.done():
                    record.placed.set_result(False)
                self._delete_later([record.key])
        self._requeue_lost()

    async def _settle_request(self, record: _Record, waiter: WaiterKey,
                              answer: asyncio.Future[bool],
                              earlier: asyncio.Task[None] | None) -> None:
        failure = f'cluster locks: etcd did not take "{waiter.mode}" of lock "{record.name}"'
        try:
            async with asyncio.timeout(self._timeout):
                if earlier is not None:
                    await asyncio.shield(earlier)
                await self._write(waiter, record.key)
                owned = await asyncio.shield(record.placed)
        except ETCD_ERRORS as error:
            self._fail(record, answer, f"{failure} within {self._timeout:g} s: "
                                       f"{error_text(error)}")
            return
        except asyncio.CancelledError:
            self._fail(record, answer, f"{failure}: the lock table was closed")
            raise
        if not answer.cancelled():
            # A steal owns the lock when its key is written, whatever came after.
            answer.set_result(True if waiter.mode == STEAL else owned)
        # The future's callbacks (the reply) were scheduled first: the notices
        # held back meanwhile, and any until then, follow it.
        asyncio.get_running_loop().call_soon(self._end_deferral, record)

    async def _write(self, waiter: WaiterKey, key: bytes) -> None:
        if waiter.mode == LOCK:
            await self._call(lambda client: client.put(key, b"", lease=waiter.lease))
            return
        steal = [txn.Put(key, b"", lease=waiter.lease)]
        steal += [txn.Delete(start, end) for start, end in other_steal_ranges(self._prefix, waiter)]
        await self._call(
            lambda client: client.transaction(compare=[], success=steal, failure=[]))

    def _fail(self, record: _Record, answer: asyncio.Future[bool], reason: str) -> None:
        """A request failed: it leaves no record, and its key (if written) goes."""
        if not record.placed.done():
            record.placed.set_result(False)
        if self._records.get((record.holder, record.name)) is record:
            del self._records[record.holder, record.name]
        self._delete_later([record.key])
        if not answer.done():
            answer.set_exception(ClusterLocksUnavailable(reason))

    def _take_record(self, holder: Holder, name: str) -> _Record:
        record = self._records.pop((holder, name), None)
        if record is None:
            raise ValueError(f'cluster locks: {holder!r} has no record for lock "{name}"')
        return record

    def _delete_soon(self, records: list[_Record]) -> asyncio.Task[None]:
        deletion = self._spawn(self._delete_keys(records))
        for record in records:
            self._deletions[record.holder, record.name] = deletion
        deletion.add_done_callback(self._deletion_done)
        return deletion

    def _deletion_done(self, deletion: asyncio.Task[None]) -> None:
        for request, task in list(self._deletions.items()):
            if task is deletion:
                del self._deletions[request]

    async def _delete_keys(self, records: list[_Record]) -> None:
        """Delete dropped records' keys, once their own requests have settled."""
        unsettled = [record.placed for record in records if not record.placed.done()]
        if unsettled:
            await asyncio.wait(unsettled, timeout=self._timeout)
        keys = [record.key for record in records]
        try:
            async with asyncio.timeout(self._timeout):
                await self._delete(keys)
        except ETCD_ERRORS as error:
            log.warning("cluster locks: deleting %d waiter key(s) failed (%s); retrying "
                        "until it works or the lease ends", len(keys), error_text(error))
            self._delete_later(keys)
            return
        for key in keys:
            self._forget_key(key)

    async def _delete(self, keys: Iterable[bytes]) -> None:
        deletes = [txn.Delete(key) for key in keys]
        await self._call(
            lambda client: client.transaction(compare=[], success=deletes, failure=[]))

    def _delete_later(self, keys: Iterable[bytes]) -> None:
        self._orphans.update(keys)
        if self._reaper is None or self._reaper.done():
            self._reaper = self._spawn(self._reap())

    async def _reap(self) -> None:
        while self._orphans:
            await asyncio.sleep(RETRY_INTERVAL)
            keys = set(self._orphans)
            try:
                async with asyncio.timeout(self._timeout):
                    await self._delete(keys)
            except ETCD_ERRORS:
                continue
            self._orphans -= keys
            for key in keys:
                self._forget_key(key)

    def _forget_key(self, key: bytes) -> None:
        record = self._by_key.get(key)
        if record is not None and self._records.get((record.holder, record.name)) is not record:
            del self._by_key[key]

    async def _call(self, request: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """``request`` through etcd, again if another call's fail-over cut it off.

        etcd_log.Etcd moves to another endpoint by closing its client, and
        gRPC then ends the calls still in flight on it with CancelledError,
        though nobody cancelled their task.  Every request here is idempotent
        and every caller bounds its time, so it is simply sent again.
        """
        while True:
            try:
                return await self._etcd.call(request)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                log.debug("cluster locks: an etcd call was cut off by a fail-over; again")

    # --- following etcd -----------------------------------------------------------
    async def _sync(self) -> None:
        """Replace the mirror by a listing and watch from the listing's revision on."""
        async with asyncio.timeout(self._timeout):
            sent = time.monotonic()
            listing = await self._call(lambda client: client.get_prefix(self._prefix))
            watch = await self._call(lambda client: client.watch_prefix(
                self._prefix, start_revision=listing.header.revision + 1))
        self._watch, self._watching = watch, True
        self._last_contact = sent
        self._deliver(self._queues.reset((kv.key, kv.create_revision) for kv in listing))
        for key, record in list(self._by_key.items()):
            if key in self._queues:
                self._settle(record)
            elif record.placed.done():
                self._forget_key(key)
        self._requeue_lost()

    async def _follow(self) -> None:
        """Apply the watch's events; after a break, list everything again."""
        while True:
            try:
                async for event in self._watch:
                    self._apply(event)
            except ETCD_ERRORS as error:
                log.warning("cluster locks: the watch on %s broke: %s",
                            self._prefix.decode(), error)
            # The stream is over (it broke, or its client was closed when
            # etcd_log.Etcd moved to another endpoint): list and watch again.
            self._watch, self._watching = None, False
            while not self._watching:
                await asyncio.sleep(RETRY_INTERVAL)
                try:
                    await self._sync()
                except ETCD_ERRORS as error:
                    log.debug("cluster locks: etcd still unreachable: %s", error)

    async def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await watch.cancel()
        except (*ETCD_ERRORS, AttributeError):
            pass    # AttributeError: aetcd's client was closed, and its watches with it

    def _apply(self, event: Any) -> None:
        key = event.kv.key
        ours = self._by_key.get(key)
        if event.kind == "PUT":
            self._deliver(self._queues.put(key, event.kv.create_revision))
            if ours is not None:
                self._settle(ours)
            return
        self._orphans.discard(key)
        self._deliver(self._queues.delete(key))
        if ours is not None:
            self._forget_key(key)
            self._requeue_lost()

    def _settle(self, record: _Record) -> None:
        if record.placed.done():
            return
        owned = self._queues.owner(record.name) == record.key
        record.placed.set_result(owned)
        if owned and record.requeued:
            self._deliver([(record.key, "locked", record.name)])

    async def _probe(self) -> None:
        """Read from etcd now and then: how ``owner_is`` knows its view is current."""
        while True:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._probe_interval * 2):
                    await self._call(lambda client: client.get(self._prefix))
                self._last_contact = max(self._last_contact, sent)
            except ETCD_ERRORS:
                pass
            await asyncio.sleep(self._probe_interval)

    def _current(self) -> bool:
        return self._watching and time.monotonic() - self._last_contact < self._stale_after

    # --- notices -----------------------------------------------------------------
    def _deliver(self, notices: list[KeyNotice]) -> None:
        for key, kind, name in notices:
            record = self._by_key.get(key)
            if record is None or self._records.get((record.holder, name)) is not record:
                continue    # another member's waiter, or one that unlocked
            if record.deferred is not None:
                record.deferred.append(kind)
            else:
                self._tell(record.holder, kind, name)

    def _end_deferral(self, record: _Record) -> None:
        deferred, record.deferred = record.deferred or [], None
        for kind in deferred:
            if self._records.get((record.holder, record.name)) is not record:
                return
            self._tell(record.holder, kind, record.name)

    def _tell(self, holder: Holder, kind: str, name: str) -> None:
        # A failing callback must not stop the watch that calls it.
        try:
            self._notify(holder, kind, name)
        except Exception:
            log.exception('cluster locks: sending "%s" for lock "%s" to %r failed',
                          kind, name, holder)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster locks: %s stopped", getattr(task.get_coro(), "__qualname__", task),
                      exc_info=task.exception())


__all__ = ["ClusterLocks", "ClusterLocksUnavailable"]


class MemberLease:
    """A member's etcd lease: its lock keys live as long as it keeps this
    alive.  When etcd says the lease ended (the member was cut off longer
    than the TTL), a new one is granted and handed to ``renewed``."""

    def __init__(self, etcd: Etcd, ttl: int = 3) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.id = 0

    async def grant(self) -> int:
        lease = await self.etcd.call(lambda client: client.lease(self.ttl))
        self.id = int(lease.id)
        return self.id

    async def keep_alive(self, renewed: Callable[[int], None]) -> None:
        """Refresh every TTL/3 seconds, for as long as the member runs."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                reply = await self.etcd.call(lambda client: client.refresh_lease(self.id))
                if reply is None or reply.TTL <= 0:
                    log.warning("lease %x ended; granting a new one", self.id)
                    renewed(await self.grant())
            except ETCD_ERRORS as e:
                log.warning("keeping lease %x alive: %s", self.id, error_text(e))

    async def revoke(self) -> None:
        try:
            await self.etcd.call(lambda client: client.revoke_lease(self.id))
        except ETCD_ERRORS as e:
            log.warning("revoking lease %x: %s", self.id, error_text(e))

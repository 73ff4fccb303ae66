"""Writes forwarded to one member while the cluster is contended (docs/cluster.md).

Every member may append to the log, and the compare on ``head`` keeps the
order whoever writes.  When members append at the same time, all but one
lose the compare and run their batch again, which wastes a round trip and
the CPU of the run.  So a member whose appends keep losing takes the
*writer lease* (``PREFIX/NAME/writer``: its id and the remote other members
reach it at, on an etcd lease of its own), and the others forward their write
transactions to it over an ordinary OVSDB connection: one member then
appends one batch for all.  The writer answers with the log position of
the commit; the forwarding member replies once its own copy holds it, so a
client still reads its write, and its monitor update, on its own member.

Correctness never rests on the lease: a member that forwards nothing, or two
that both think they write, still append under the compare.  A transaction
that asserts a lock or waits runs where its client is (its lock and its
timeout live there).  The writer lets the lease go after a quiet spell.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aetcd
import ujson

from ..client.connection import Connection, RPCError
from .cluster_locks import ETCD_ERRORS, MemberLease
from .etcd_log import EtcdLog
from .service import ClientSession

log = logging.getLogger("tegadb.cluster")

FORWARD_METHOD = "tegadb_forward"
# The writer gives the lease up after this long without a forwarded write.
QUIET_SECONDS = 10.0
# Appends lost within the window that make a member take the lease.
CONTENTION_CONFLICTS = 3
CONTENTION_WINDOW = 1.0
# After a failed connection to the writer, appends go direct for this long.
RETRY_SECONDS = 1.0
_WRITES = frozenset(("insert", "update", "mutate", "delete"))
_LOCAL = frozenset(("wait", "assert"))


def forwardable(ops: list[Any]) -> bool:
    """Writes that neither wait nor assert a lock (those run where their client is)."""
    kinds = {op.get("op") for op in ops if isinstance(op, dict)}
    return bool(kinds & _WRITES) and not kinds & _LOCAL


class WriterLease:
    """Who writes for one database: this member, another (its remote), or nobody."""

    def __init__(self, etcd_log: EtcdLog, sid: str, address: str | None) -> None:
        self.log = etcd_log
        self.key = etcd_log.base.encode() + b"writer"
        self.sid = sid
        self.value = ujson.dumps({"sid": sid, "remote": address}).encode() if address else b""
        self.writer: str | None = None       # the writer's remote, when another member
        self.holding = False
        self.claiming = False
        self.lease: MemberLease | None = None
        self.keeper: asyncio.Task[None] | None = None
        self.last_forwarded = time.monotonic()
        self.conflicts: list[float] = []   # when this member's recent appends lost

    def contended(self) -> None:
        """This member lost an append: take the lease unless someone has it,
        once appends keep conflicting (one conflict is a copy a little behind)."""
        now = time.monotonic()
        self.conflicts = [t for t in self.conflicts if now - t < CONTENTION_WINDOW] + [now]
        if len(self.conflicts) < CONTENTION_CONFLICTS:
            return
        if self.value and not self.holding and self.writer is None and not self.claiming:
            self.claiming = True
            asyncio.get_running_loop().create_task(self._claim())

    async def _claim(self) -> None:
        txn = aetcd.transactions
        try:
            if self.lease is None:
                self.lease = MemberLease(self.log.etcd)
                await self.lease.grant()
            lease_id = self.lease.id
            ok, responses = await self.log.etcd.call(lambda c: c.transaction(
                compare=[txn.Create(self.key) == 0],
                success=[txn.Put(self.key, self.value, lease=lease_id)],
                failure=[txn.Get(self.key)]))
        except ETCD_ERRORS as e:
            log.warning("%s: taking the writer lease: %s", self.log.name, e)
            return
        finally:
            self.claiming = False
        if ok:
            self.holding = True
            self.last_forwarded = time.monotonic()
            self.keeper = asyncio.get_running_loop().create_task(
                self.lease.keep_alive(lambda _id: self._lost()))
            log.info("%s: took the writer lease (members forward writes here)", self.log.name)
        else:
            self._learn(responses[0][0][0] if responses and responses[0] else None)

    def _lost(self) -> None:
        """etcd ended the lease (cut off too long): another member may hold it now."""
        self.holding = False

    def _learn(self, value: bytes | None) -> None:
        remote = None
        if value:
            try:
                found = ujson.loads(value)
                if found.get("sid") != self.sid:
                    remote = found.get("remote")
            except (ValueError, AttributeError):
                log.warning("%s: ignoring a bad writer key %r", self.log.name, value[:80])
        if remote != self.writer:
            log.info("%s: %s", self.log.name, f"writes go to the writer at {remote}"
                     if remote else "no writer: writes are appended here")
        self.writer = remote if isinstance(remote, str) else None

    async def refresh(self) -> None:
        """Once a second: learn who writes; the writer gives up a quiet lease."""
        if self.holding:
            if time.monotonic() - self.last_forwarded > QUIET_SECONDS:
                await self.release()
            return
        try:
            found = await self.log.etcd.call(lambda c: c.get(self.key))
        except ETCD_ERRORS:
            return
        self._learn(found.value if found is not None else None)

    async def release(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
            self.keeper = None
        lease, self.lease, self.holding = self.lease, None, False
        if lease is not None:
            log.info("%s: giving the writer lease up", self.log.name)
            await lease.revoke()  # deletes the key with it


class Forwarder:
    """This member's connection to the writer, and the transactions sent over it."""

    def __init__(self, name: str, lease: WriterLease,
                 applied: Callable[[int], asyncio.Future[None] | None]) -> None:
        self.name = name
        self.lease = lease
        self.applied = applied        # a future done once the copy reached a position
        self.conn: Connection | None = None
        self.remote: str | None = None
        self.connecting = False
        self.failed_at = 0.0
        self.outstanding: dict[ClientSession, int] = {}
        self.held: dict[ClientSession, list[tuple[Any, int, list[Any]]]] = {}

    def usable(self) -> bool:
        """Whether writes go to the writer now (connecting to it if need be)."""
        remote = self.lease.writer
        if remote is None or self.lease.holding:
            return False
        if remote == self.remote and self.conn is not None:
            return True
        if not self.connecting and time.monotonic() - self.failed_at > RETRY_SECONDS:
            self.connecting = True
            asyncio.get_running_loop().create_task(self._connect(remote))
        return False

    async def _connect(self, remote: str) -> None:
        try:
            conn = await asyncio.wait_for(Connection.open(remote), RETRY_SECONDS)
        except (TimeoutError, OSError, ValueError) as e:
            log.warning("%s: cannot reach the writer at %s: %s", self.name, remote, e)
            self.failed_at = time.monotonic()
            return
        finally:
            self.connecting = False
        self._drop()
        self.conn, self.remote = conn, remote

    def _drop(self) -> None:
        if self.conn is not None:
            asyncio.get_running_loop().create_task(self.conn.close())
        self.conn = self.remote = None

    def holds(self, session: ClientSession) -> bool:
        return session in self.outstanding

    def hold(self, session: ClientSession, request_id: Any, dialect: int,
             ops: list[Any]) -> None:
        """Keep a local transaction behind the session's forwarded ones."""
        self.held.setdefault(session, []).append((request_id, dialect, ops))

    def forward(self, session: ClientSession, request_id: Any, dialect: int,
                ops: list[Any], run_held: Callable[[ClientSession, Any, int, list[Any]], None]
                ) -> None:
        assert self.conn is not None
        self.outstanding[session] = self.outstanding.get(session, 0) + 1
        asyncio.get_running_loop().create_task(
            self._send(self.conn, session, request_id, dialect, ops, run_held))

    async def _send(self, conn: Connection, session: ClientSession, request_id: Any,
                    dialect: int, ops: list[Any],
                    run_held: Callable[[ClientSession, Any, int, list[Any]], None]) -> None:
        try:
            answer = await conn.request(FORWARD_METHOD, [self.name, *ops])
            waiting = self.applied(int(answer["seq"]))
            if waiting is not None:
                await waiting
            if not session.closed:
                session.reply(request_id, answer["result"], dialect)
        except RPCError as e:
            if not session.closed:
                session.reply_error(request_id, e.error, dialect)
        except Exception as e:  # the connection broke (closed, reset, a bad answer)
            if conn is self.conn:
                log.warning("%s: lost the writer at %s: %s", self.name, self.remote, e)
                self.failed_at = time.monotonic()
                self._drop()
            if not session.closed:
                # It may have committed: the client must look before trying again.
                session.reply_error(request_id, {
                    "error": "commit status unknown",
                    "details": f"the member that wrote for database {self.name} went away "
                               "before answering; the transaction may or may not have "
                               "committed"}, dialect)
        finally:
            self._settled(session, run_held)

    def _settled(self, session: ClientSession,
                 run_held: Callable[[ClientSession, Any, int, list[Any]], None]) -> None:
        left = self.outstanding[session] - 1
        if left:
            self.outstanding[session] = left
            return
        del self.outstanding[session]
        queue = self.held.pop(session, [])
        # In order; one of them may be forwarded again: the rest wait for it.
        while queue and session not in self.outstanding:
            request_id, dialect, ops = queue.pop(0)
            if not session.closed:
                run_held(session, request_id, dialect, ops)
        if queue:
            self.held[session] = queue + self.held.get(session, [])

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

"""A blocking wrapper of `Replica` for scripts: the replica runs in an event
loop in a thread of its own, and every call here waits for its answer.

Reads return snapshots taken in that loop, so the caller never sees a copy
in the middle of an update.  `SyncReplica.transact`'s function and
`SyncReplica.on_change` callbacks run in the replica's thread: they must not
block.  `SyncReplica.changes` hands changes over through a queue instead.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Self, TypeVar

from .replica import DEFAULT_RETRIES, Replica, Transaction
from .rows import UUID, Change, Row

T = TypeVar("T")


class SyncReplica:
    """`Replica` for code without an event loop; make one with `SyncReplica.open`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 replica: Replica) -> None:
        self._loop = loop
        self._thread = thread
        self._replica = replica
        self._queue: queue.SimpleQueue[Change] | None = None

    @classmethod
    def open(cls, remotes: str | list[str], database: str, *, timeout: float = 10.0,
             **options: Any) -> SyncReplica:
        """`Replica.open` in a new thread's loop; ConnectionError as it says."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"replica-{database}", daemon=True)
        thread.start()
        opening = Replica.open(remotes, database, timeout=timeout, **options)
        try:
            replica = asyncio.run_coroutine_threadsafe(opening, loop).result()
        except BaseException:
            _stop(loop, thread)
            raise
        return cls(loop, thread, replica)

    @property
    def connected(self) -> bool:
        return self._replica.connected

    @property
    def last_id(self) -> str:
        return self._replica.last_id

    def rows(self, table: str) -> dict[UUID, Row]:
        """A snapshot of ``table``'s rows by uuid."""
        return self._call(lambda: dict(self._replica.rows(table)))

    def lookup(self, table: str, **index_values: Any) -> Row | None:
        """`Replica.lookup`."""
        return self._call(functools.partial(self._replica.lookup, table, **index_values))

    def transact(self, prepare: Callable[[Transaction], T], *, retries: int = DEFAULT_RETRIES) -> T:
        """`Replica.transact`; ``prepare`` runs in the replica's thread."""
        return self._wait(self._replica.transact(prepare, retries=retries))

    def cond_change(self, conditions: dict[str, list[Any]]) -> None:
        """`Replica.cond_change`."""
        self._wait(self._replica.cond_change(conditions))

    def on_change(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """`Replica.on_change`; the callback runs in the replica's thread."""
        return self._call(functools.partial(self._replica.on_change, callback))

    def changes(self, timeout: float | None = None) -> Iterator[Change]:
        """The changes since the first call of this method, blocking for each
        next one; the iteration ends after ``timeout`` seconds without one."""
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            self.on_change(self._queue.put)
        return _drain(self._queue, timeout)

    def close(self) -> None:
        """Stop following and end the replica's thread."""
        try:
            self._wait(self._replica.close())
        finally:
            _stop(self._loop, self._thread)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()
        return self._wait(call())

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _drain(changes: queue.SimpleQueue[Change], timeout: float | None) -> Iterator[Change]:
    while True:
        try:
            yield changes.get(timeout=timeout)
        except queue.Empty:
            return


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()

"""A database's log kept in etcd: the shared log of a cluster (docs/cluster.md).

Keys under ``PREFIX/NAME/`` (``PREFIX`` is ``--etcd-prefix``, default ``/tegadb``):

- ``head``: the ``seq`` of the last record in the log, as decimal text.  Every
  append compares it, so the log has one order whoever writes.
- ``log/<seq>``: one batch of records (a loop turn's commits on one member),
  named by the ``seq`` of its *last* record (20 digits), the records as JSON
  lines in the codec's form (``records``).
- ``snapshot``: ``{"seq":S,"txn":..,"id":..,"chunks":K}``, the current
  snapshot: a header line and a snapshot record at position S, in K chunks
  ``snapshot-data/<id>/<i>`` (etcd caps a request at ~1.5 MiB).
- ``cid``: the cluster's id for this database (``_Server``'s ``cid``).

The append rule: a batch that follows position P is written with one etcd
transaction that succeeds only if ``head`` is still P; it puts the batch and
moves ``head``.  When it fails, the same round trip returns what others
appended after P.  A retry after a lost answer is safe: the member finds its
own records (by transaction id) after P.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import ujson

from .records import Header, Record, RecordError
from .storage import StorageError

log = logging.getLogger("tegadb.cluster")

T = TypeVar("T")

SEQ_DIGITS = 20
# What one etcd request may carry, below etcd's default cap of 1.5 MiB.
MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 5.0
# The client errors another endpoint would answer the same way; after any
# other one (a dead or closed connection, a timeout) the next endpoint is asked.
_NOT_RETRYABLE = (aetcd.exceptions.InvalidArgumentError, aetcd.exceptions.PreconditionFailedError,
                  aetcd.exceptions.UnauthenticatedError, aetcd.exceptions.RevisionCompactedError,
                  aetcd.exceptions.DuplicateLeaseError)


class EtcdUnavailable(StorageError):
    """No etcd endpoint answered within the request timeout."""


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``http://HOST:PORT[,http://HOST:PORT...]`` (etcdctl's ``--endpoints``) as pairs."""
    endpoints = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"--etcd-endpoints: {item!r} is not http://HOST:PORT")
        try:
            port = parts.port or 2379
        except ValueError:
            raise ValueError(f"--etcd-endpoints: {item!r} has a bad port") from None
        endpoints.append((parts.hostname, port))
    if not endpoints:
        raise ValueError("--etcd-endpoints: no endpoint given")
    return endpoints


class Etcd:
    """A connection to an etcd cluster that fails over between its endpoints.

    Every request is bounded by ``timeout`` in all, across endpoints: a
    cluster that is down gives EtcdUnavailable, never a hang.
    """

    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.current = 0
        self.client: aetcd.Client | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self) -> aetcd.Client:
        if self.client is None:
            host, port = self.endpoints[self.current]
            # A member that hangs must leave time to ask the others.
            self.client = aetcd.Client(
                host, port, timeout=max(1, int(self.timeout / len(self.endpoints))),
                # gRPC waits up to 2 minutes before it dials an endpoint
                # that was down again; an etcd member restarts in seconds.
                options={"grpc.max_receive_message_length": 64 * 1024 * 1024,
                         "grpc.max_send_message_length": 8 * 1024 * 1024,
                         "grpc.initial_reconnect_backoff_ms": 200,
                         "grpc.max_reconnect_backoff_ms": 1000})
        return self.client

    def drop_current(self) -> None:
        """The current endpoint failed outside a request (a broken watch)."""
        if self.client is not None:
            self.drop(self.client)

    def drop(self, client: aetcd.Client) -> None:
        """Stop using ``client`` (it failed): the next request goes to the next endpoint.

        Closed in the background: other requests may still be using it.
        """
        if self.client is client:
            self.client = None
            self.current = (self.current + 1) % len(self.endpoints)
        task = asyncio.get_running_loop().create_task(_close_quietly(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def where(self) -> str:
        host, port = self.endpoints[self.current]
        return f"{host}:{port}"

    async def call(self, request: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run ``request`` on a client, on the next endpoint after a failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        last: Exception | None = None
        tried = 0
        while True:
            left = deadline - loop.time()
            if left <= 0 or (tried >= len(self.endpoints) * 3):
                raise EtcdUnavailable(
                    f"etcd unavailable: no answer from {self._names()} within "
                    f"{self.timeout:g} s ({_brief(last)})")
            client = self._client()
            try:
                # gRPC's deadline (the client's timeout) bounds each try.
                return await request(client)
            except BaseException as e:  # one handler: see cluster.py on mypyc
                task = asyncio.current_task()
                if isinstance(e, asyncio.CancelledError) and not (
                        task is not None and task.cancelling()):
                    # Its client was closed under it (another request dropped it).
                    last = ConnectionError(f"{self.where}: the connection was closed")
                elif isinstance(e, aetcd.exceptions.ClientError) and not isinstance(
                        e, _NOT_RETRYABLE):
                    last = e
                else:
                    raise
            tried += 1
            log.debug("etcd %s: %s", self.where, _brief(last))
            self.drop(client)
            if tried % len(self.endpoints) == 0:
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    def _names(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await _close_quietly(client)


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 1.0)
    except Exception:  # a dead channel may fail to close: it is dropped anyway
        pass


class Loaded:
    """What a member reads to start: the header, the records from the
    snapshot on, and the etcd revision they were read at (to watch after)."""

    def __init__(self, header: Header | None, records: list[Record], revision: int,
                 cid: str) -> None:
        self.header = header      # None: the records follow the member's own file
        self.records = records
        self.revision = revision
        self.cid = cid


class EtcdLog:
    """The log of database ``name`` under ``prefix`` in etcd."""

    def __init__(self, etcd: Etcd, prefix: str, name: str) -> None:
        self.etcd = etcd
        self.name = name
        base = f"{prefix.rstrip('/')}/{name}/"
        self.base = base
        self.head_key = (base + "head").encode()
        self.snapshot_key = (base + "snapshot").encode()
        self.cid_key = (base + "cid").encode()
        self.log_prefix = (base + "log/").encode()
        self.data_prefix = base + "snapshot-data/"

    def where(self, seq: int) -> str:
        return f"etcd {self.base}log: record {seq}"

    def log_key(self, seq: int) -> bytes:
        return self.log_prefix + str(seq).zfill(SEQ_DIGITS).encode()

    # --- starting --------------------------------------------------------
    async def load(self, cached: tuple[int, str] | None = None) -> Loaded | None:
        """The current snapshot and the log after it; None if there is no log yet.

        ``cached`` is the position and transaction id the member's own file
        ends at: if the log still holds that record (or the snapshot is
        that record), only the records after it are read (``header`` None).
        """
        for _ in range(5):
            try:
                return await self._try_load(cached)
            except _SnapshotReplaced:
                continue
        raise StorageError(f"etcd {self.base}: the snapshot kept changing while it was read")

    async def _try_load(self, cached: tuple[int, str] | None) -> Loaded | None:
        txn = aetcd.transactions
        start = self.log_key(cached[0]) if cached is not None else self.log_prefix
        _ok, responses = await self.etcd.call(lambda c: c.transaction(
            compare=[], success=[txn.Get(self.head_key), txn.Get(self.snapshot_key),
                                 txn.Get(self.cid_key),
                                 txn.Get(start, _prefix_end(self.log_prefix))],
            failure=[]))
        head, pointer, cid = (_value(r) for r in responses[:3])
        if head is None:
            return None
        if pointer is None or cid is None:
            raise StorageError(f"etcd {self.base}: a head but no snapshot or cid")
        revision = responses[0][0][1].header.revision if responses[0] else 0
        info = _parse_json(pointer, f"etcd {self.base}snapshot")
        try:
            seq, snapshot_id, chunks = int(info["seq"]), str(info["id"]), int(info["chunks"])
        except (KeyError, TypeError, ValueError):
            raise StorageError(f"etcd {self.base}snapshot: not a snapshot pointer: "
                               f"{_brief(pointer)}") from None
        if cached is not None:
            after = self._after_cached(cached, (seq, info.get("txn")), responses[3], head)
            if after is not None:
                return Loaded(None, after, revision, cid.decode())
            return await self._try_load(None)  # the file is not (or no longer) the log's
        data = await self._read_chunks(snapshot_id, chunks)
        if data is None:
            raise _SnapshotReplaced
        lines = data.split(b"\n")
        if len(lines) != 2:
            raise StorageError(f"etcd {self.base}snapshot {snapshot_id}: not a header and a "
                               "snapshot record")
        try:
            header = Header.from_json(_parse_json(lines[0], f"etcd {self.base}snapshot"))
            snapshot = Record.from_json(_parse_json(lines[1], f"etcd {self.base}snapshot"))
        except RecordError as e:
            raise StorageError(f"etcd {self.base}snapshot {snapshot_id}: {e}") from None
        if snapshot.seq != seq or not snapshot.snapshot:
            raise StorageError(f"etcd {self.base}snapshot {snapshot_id}: not the snapshot at "
                               f"{seq}")
        records = [snapshot]
        for value, _meta in responses[3]:
            records.extend(r for r in self.decode_batch(value) if r.seq > seq)
        _check_follows(records, self.base)
        # After a conversion the log follows its schema: start there.
        converted = [i for i, r in enumerate(records) if r.schema is not None]
        if converted:
            records = records[converted[-1]:]
            header = Header(records[0].schema or {})
        last = records[-1].seq
        if str(last).encode() != head:
            raise StorageError(f"etcd {self.base}: head says {head.decode(errors='replace')} "
                               f"but the log ends at {last}")
        return Loaded(header, records, revision, cid.decode())

    def _after_cached(self, cached: tuple[int, str], snapshot: tuple[int, Any],
                      found: Any, head: bytes) -> list[Record] | None:
        """The records after the member's file, if the log holds where it ends."""
        position, txn_id = cached
        records = [r for value, _meta in found for r in self.decode_batch(value)
                   if r.seq >= position]
        if records and records[0].seq == position:
            if records[0].txn != txn_id:
                return None
            records = records[1:]
        elif snapshot != cached:
            return None  # trimmed away, or never this log's
        if records:
            _check_follows(records, self.base)
            if records[0].seq != position + 1:
                return None
        if str(records[-1].seq if records else position).encode() != head:
            return None
        return records

    async def _read_chunks(self, snapshot_id: str, chunks: int) -> bytes | None:
        prefix = f"{self.data_prefix}{snapshot_id}/".encode()
        found = await self.etcd.call(lambda c: c.get_prefix(prefix, sort_order="ascend"))
        parts = [kv.value for kv in found]
        if len(parts) != chunks:
            return None
        return b"".join(parts)

    async def seed(self, header: Header, snapshot: Record) -> bool:
        """Start the log with ``snapshot``; False if another member did first."""
        cid = str(uuid.uuid4())
        pointer = await self._write_chunks(header, snapshot)
        txn = aetcd.transactions
        ok, _ = await self.etcd.call(lambda c: c.transaction(
            compare=[txn.Create(self.head_key) == 0],
            success=[txn.Put(self.head_key, str(snapshot.seq).encode()),
                     txn.Put(self.snapshot_key, pointer),
                     txn.Put(self.cid_key, cid.encode())],
            failure=[]))
        if not ok:
            await self._delete_chunks(ujson.loads(pointer)["id"])
        return bool(ok)

    async def _write_chunks(self, header: Header, snapshot: Record) -> bytes:
        """Stores the snapshot's chunks; returns the pointer that names them."""
        snapshot_id = str(uuid.uuid4())
        data = encode_line(header.to_json()) + b"\n" + encode_line(snapshot.to_json())
        chunks = [data[i:i + MAX_REQUEST_BYTES] for i in range(0, len(data), MAX_REQUEST_BYTES)]
        for index, chunk in enumerate(chunks):
            key = f"{self.data_prefix}{snapshot_id}/{index:06d}".encode()
            await self.etcd.call(_put(key, chunk))
        return encode_line({"seq": snapshot.seq, "txn": snapshot.txn, "id": snapshot_id,
                            "chunks": len(chunks)})

    async def _delete_chunks(self, snapshot_id: str) -> None:
        prefix = f"{self.data_prefix}{snapshot_id}/".encode()
        await self.etcd.call(lambda c: c.delete_prefix(prefix))

    # --- appending -------------------------------------------------------
    async def append(self, after: int, records: list[Record],
                     value: bytes) -> list[Record] | None:
        """Append ``records`` (seq after+1...), whose lines joined are ``value``,
        if the log is still at ``after``.

        Returns None when they are in the log, or the records that another
        member appended after ``after`` first.  Raises EtcdUnavailable.
        """
        last = records[-1].seq
        if len(value) > MAX_REQUEST_BYTES:
            raise StorageError(f"{self.where(records[0].seq)}: a batch of {len(value)} bytes "
                               f"exceeds etcd's request limit ({MAX_REQUEST_BYTES} bytes)")
        txn = aetcd.transactions
        ok, responses = await self.etcd.call(lambda c: c.transaction(
            compare=[txn.Value(self.head_key) == str(after).encode()],
            success=[txn.Put(self.log_key(last), value),
                     txn.Put(self.head_key, str(last).encode())],
            failure=[txn.Get(self.log_key(after + 1), _prefix_end(self.log_prefix))]))
        if ok:
            return None
        theirs = [r for value, _meta in responses[0] for r in self.decode_batch(value)
                  if r.seq > after]
        if theirs and theirs[0].seq != after + 1:
            raise LogTrimmed(after)
        if [r.txn for r in theirs[:len(records)]] == [r.txn for r in records]:
            return None  # an earlier try of this very append went through
        return theirs

    async def read_after(self, after: int) -> tuple[list[Record], int]:
        """The records after ``after`` and the revision read at; LogTrimmed
        when a snapshot removed them."""
        found = await self.etcd.call(lambda c: c.get_range(
            self.log_key(after + 1), _prefix_end(self.log_prefix)))
        records = [r for kv in found for r in self.decode_batch(kv.value) if r.seq > after]
        if records and records[0].seq != after + 1:
            raise LogTrimmed(after)
        return records, found.header.revision

    def decode_batch(self, value: bytes) -> list[Record]:
        records = []
        for line in value.split(b"\n"):
            try:
                records.append(Record.from_json(_parse_json(line, f"etcd {self.base}log")))
            except RecordError as e:
                raise StorageError(f"etcd {self.base}log: {e}") from None
        return records

    # --- snapshots -------------------------------------------------------
    async def store_snapshot(self, header: Header, snapshot: Record, keep: int) -> None:
        """Make ``snapshot`` the current one and trim the log before it,
        keeping ``keep`` records for members that are a little behind."""
        pointer = await self._write_chunks(header, snapshot)
        old = await self.etcd.call(lambda c: c.get(self.snapshot_key))
        txn = aetcd.transactions
        compare = ([txn.Mod(self.snapshot_key) == old.mod_revision] if old is not None else
                   [txn.Create(self.snapshot_key) == 0])
        trim_below = self.log_key(max(snapshot.seq - keep, 0) + 1)
        ok, _ = await self.etcd.call(lambda c: c.transaction(
            compare=compare,
            success=[txn.Put(self.snapshot_key, pointer),
                     txn.Delete(self.log_prefix, trim_below)],
            failure=[]))
        new_id = ujson.loads(pointer)["id"]
        if not ok:
            await self._delete_chunks(new_id)
            return
        if old is not None:
            await self._delete_chunks(ujson.loads(old.value)["id"])

    # --- following -------------------------------------------------------
    async def head(self) -> int:
        """The position of the log's last record."""
        found = await self.etcd.call(lambda c: c.get(self.head_key))
        if found is None:
            raise StorageError(f"etcd {self.base}: the log's head is gone")
        try:
            return int(found.value)
        except ValueError:
            raise StorageError(f"etcd {self.base}head: not a position: "
                               f"{_brief(found.value)}") from None

    async def watch(self, revision: int) -> Any:
        """A watch of the log's keys from ``revision`` (an async iterator of events).

        Its creation waits on no gRPC deadline, so it gets one here: a hung
        endpoint raises TimeoutError, and the caller tries the next one."""
        return await asyncio.wait_for(self.etcd.call(lambda c: c.watch_prefix(
            self.log_prefix, start_revision=revision, kind=aetcd.rtypes.EventKind.PUT)),
            self.etcd.timeout)

    def batch_end(self, key: bytes) -> int:
        """The position of the last record of the batch at ``key`` (-1 if not a log key)."""
        tail = key[len(self.log_prefix):]
        return int(tail) if key.startswith(self.log_prefix) and tail.isdigit() else -1


class _SnapshotReplaced(Exception):
    """A newer snapshot replaced the one being read."""


def _put(key: bytes, value: bytes) -> Callable[[aetcd.Client], Awaitable[Any]]:
    return lambda client: client.put(key, value)


class LogTrimmed(StorageError):
    """The records a member needs were trimmed: it must start from the snapshot."""

    def __init__(self, after: int) -> None:
        super().__init__(f"the log no longer holds the records after {after}")
        self.after = after


def encode_line(value: dict[str, Any]) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def _check_follows(records: list[Record], where: str) -> None:
    for before, after in itertools.pairwise(records):
        if after.seq != before.seq + 1:
            raise StorageError(f"etcd {where}log: record {after.seq} follows {before.seq}")


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _value(response: Any) -> bytes | None:
    return response[0][0] if response else None


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return ujson.loads(data)
    except ValueError as e:
        raise StorageError(f"{where}: not JSON ({e})") from None


def _brief(value: Any) -> str:
    text = str(value) or type(value).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["Etcd", "EtcdLog", "EtcdUnavailable", "Loaded", "LogTrimmed", "parse_endpoints"]

"""A served database over a storage, driven as the server shell drives it.

`Served` runs what the server shell runs, without sockets: a client
request goes through `methods.handle_message`, and `turn()` ends the
event-loop turn as the shell does (the group-commit flush, then the
monitor updates).  `on_file` and `on_memory` make one over the file
journal and over the in-memory storage (the `served` fixture in
conftest.py gives each in turn).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tegadb.core.history import History
from tegadb.server import methods
from tegadb.server.journal import Journal, create
from tegadb.server.records import Header, Record
from tegadb.server.service import DatabaseService, ServerDatabases
from tegadb.server.storage import MemoryStorage, Storage

DATA = Path(__file__).parent.parent / "data"
SCHEMA_JSON = json.loads((DATA / "test.ovsschema").read_text())


class Client:
    """A session whose messages are kept, parsed, in `received`."""

    def __init__(self, databases: ServerDatabases, peer: str) -> None:
        self.received: list[Any] = []
        self.closed = False
        self.session = methods.Session(databases, peer, self._write, self._close)
        self._next_id = 0

    def _write(self, data: bytes) -> None:
        self.received.append(json.loads(data))

    def _close(self) -> None:
        self.closed = True

    def send(self, method: str, *params: Any) -> int:
        self._next_id += 1
        methods.handle_message(self.session, {"id": self._next_id, "method": method,
                                              "params": list(params)})
        return self._next_id

    def reply(self, request_id: int) -> Any:
        """The reply to `request_id` (it must have come)."""
        (reply,) = [m for m in self.received if m.get("id") == request_id and "method" not in m]
        return reply

    def notifications(self, method: str) -> list[Any]:
        return [m["params"] for m in self.received if m.get("method") == method]


class Served:
    """The test database on one storage, with its sessions."""

    def __init__(self, kind: str, open_storage: Callable[[], Storage],
                 counts: Callable[[], tuple[int, int]]) -> None:
        self.kind = kind
        self.open_storage = open_storage
        self._counts = counts
        self.open()

    def batches(self) -> int:
        """Batches of records the storage has written so far."""
        return self._counts()[0]

    def syncs(self) -> int:
        """Times the storage has synced so far."""
        return self._counts()[1]

    def open(self, history: History | None = None) -> None:
        self.storage = self.open_storage()
        self.service = DatabaseService.load(self.storage, history)
        self.databases = ServerDatabases([self.service])
        self.databases.attach(lambda: None, lambda delay, callback: None)

    def reopen(self, history: History | None = None) -> None:
        """Close the database and serve it again from what its storage holds."""
        self.databases.close()
        self.open(history)

    def client(self, peer: str = "unix:test") -> Client:
        return Client(self.databases, peer)

    def transact(self, client: Client, *ops: Any) -> Any:
        """Run one transaction and end the turn; its result."""
        request_id = client.send("transact", "Test", *ops)
        self.turn()
        return client.reply(request_id)["result"]

    def turn(self) -> None:
        """End of an event-loop turn: flush the storage, then the monitors."""
        self.databases.flush()
        self.databases.flush_sessions()

    def records(self) -> list[Record]:
        """What the storage holds now (written records only)."""
        return list(self.storage.read())

    def rows(self) -> dict[str, Any]:
        """Every row of Root: uuid -> (name, count, _version)."""
        return {u: (r["name"], r["count"], r["_version"])
                for u, r in self.service.database.tables["Root"].rows.items()}

    def close(self) -> None:
        self.databases.close()


def on_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    """The test database in a new journal file; its writes and syncs are counted."""
    path = str(tmp_path / "test.db")
    create(path, Header(SCHEMA_JSON))
    counts = [0, 0]
    real_write, real_fdatasync = os.write, os.fdatasync

    def write(fd: int, data: bytes) -> int:
        counts[0] += 1  # the journal writes each batch with one write
        return real_write(fd, data)

    def fdatasync(fd: int) -> None:
        counts[1] += 1
        real_fdatasync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return Served("file", lambda: Journal.open(path), lambda: (counts[0], counts[1]))


def on_memory() -> Served:
    """The test database in memory; reopening it replays the same MemoryStorage."""
    storage = MemoryStorage(SCHEMA_JSON, "test")
    return Served("memory", lambda: storage,
                  lambda: (storage.batches, storage.synced_batches))



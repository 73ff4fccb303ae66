"""A journal write that fails (issue 14, item 2), injected: only that
batch's transactions fail, each with "I/O error"; memory, monitors and the
file are as before them, and the next batch is written as if nothing happened."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from harness import Served, on_file

from tegadb.server.journal import check


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    served = on_file(tmp_path, monkeypatch)
    yield served
    served.close()


def insert(name: str) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "row": {"name": name}}


def names(served: Served) -> list[str]:
    return sorted(row[0][0] for row in served.rows().values())


def fail_next(monkeypatch: pytest.MonkeyPatch, call: str, error: int) -> None:
    """The next os.`call` on the journal fails with `error`; a write puts
    half of its bytes in the file first, as a disk that fills up mid-write does."""
    real = getattr(os, call)
    failed = []

    def write(fd: int, data: Any) -> int:
        if failed:
            return real(fd, data)
        failed.append(True)
        real(fd, bytes(data[:len(data) // 2]))
        raise OSError(error, os.strerror(error))

    def fdatasync(fd: int) -> None:
        if not failed:
            failed.append(True)
            raise OSError(error, os.strerror(error))
        real(fd)

    monkeypatch.setattr(os, call, write if call == "write" else fdatasync)


@pytest.mark.parametrize(("call", "error"), [("write", errno.ENOSPC), ("fdatasync", errno.EIO)])
def test_a_failed_write_fails_its_batch_only(served: Served, monkeypatch: pytest.MonkeyPatch,
                                             call: str, error: int) -> None:
    writer, reader, watcher = served.client(), served.client(), served.client()
    watcher.send("monitor_cond", "Test", "m", {"Root": [{"columns": ["name"]}]})
    served.transact(writer, insert("kept"))
    good = Path(served.storage.path).read_bytes()  # type: ignore[attr-defined]
    before = served.rows()
    updates = len(watcher.notifications("update2"))

    fail_next(monkeypatch, call, error)
    batch = [writer.send("transact", "Test", insert(f"lost{i}"),
                         {"op": "commit", "durable": True}) for i in range(3)]
    # A read after them in the same turn saw them: it runs again.
    read = reader.send("transact", "Test", {"op": "select", "table": "Root", "where": [],
                                            "columns": ["name"]})
    served.turn()
    for request_id in batch:
        *results, failure = writer.reply(request_id)["result"]
        assert "uuid" in results[0]
        assert failure == {"error": "I/O error",
                           "details": f"{served.storage.name}: {os.strerror(error)}"}
    assert reader.reply(read)["result"] == [{"rows": [{"name": "kept"}]}]
    assert served.rows() == before
    assert len(watcher.notifications("update2")) == updates  # nothing of the batch was shown
    assert Path(served.storage.path).read_bytes() == good  # type: ignore[attr-defined]

    # The next batch goes to the file, at the positions the failed one had.
    served.transact(writer, insert("after"))
    assert names(served) == ["after", "kept"]
    assert [r.seq for r in served.records()] == [1, 2]
    assert watcher.notifications("update2")[-1][1]["Root"].popitem()[1] == {
        "insert": {"name": "after"}}
    served.reopen()
    assert names(served) == ["after", "kept"]
    assert check(served.storage.path).problems == []  # type: ignore[attr-defined]


def test_a_failed_cut_is_retried_before_the_next_write(served: Served,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """When even cutting off the failed write fails, no write follows until
    the cut succeeds: nothing is glued to half a line."""
    client = served.client()
    served.transact(client, insert("kept"))
    fail_next(monkeypatch, "write", errno.EIO)
    real_ftruncate = os.ftruncate
    truncates = []

    def ftruncate(fd: int, size: int) -> None:
        truncates.append(size)
        if len(truncates) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_ftruncate(fd, size)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    failed = client.send("transact", "Test", insert("lost"))
    served.turn()
    assert client.reply(failed)["result"][-1]["error"] == "I/O error"
    served.transact(client, insert("after"))
    assert len(truncates) == 2  # cut again before "after" was written
    served.reopen()
    assert names(served) == ["after", "kept"]


def test_metrics_count_a_refused_batch_as_failed_not_committed(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    from tegadb.server.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    served.databases.observe(metrics)
    writer = served.client()
    served.transact(writer, insert("kept"))
    fail_next(monkeypatch, "write", errno.ENOSPC)
    for i in range(3):
        writer.send("transact", "Test", insert(f"lost{i}"))
    served.turn()
    served.transact(writer, insert("after"))
    assert metrics.committed_transactions == 2
    assert metrics.failed_transactions == 3
    assert metrics.errors == {"I/O error": 3}

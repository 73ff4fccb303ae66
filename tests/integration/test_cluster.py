"""tegadb members on a real 3-member etcd cluster (issue 13's "Must hold").

Each test runs its own tegadb cluster under its own etcd prefix; tests that
take etcd members down get an etcd cluster of their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peers import REPO_ROOT, TEST_SCHEMA, RawClient, TegadbCluster

DB = "Test"


def insert(name: str, count: int = 0) -> dict[str, Any]:
    return {"op": "insert", "table": "Root", "row": {"name": name, "count": count}}


def names(client: RawClient) -> list[str]:
    rows = client.transact(DB, {"op": "select", "table": "Root", "where": [],
                                "columns": ["name"]})[0]["rows"]
    return sorted(r["name"] for r in rows)


def eventually(check: Any, timeout: float = 5.0) -> Any:
    """``check()``'s first true value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def server_row(client: RawClient) -> dict[str, Any]:
    rows = client.transact("_Server", {"op": "select", "table": "Database",
                                       "where": [["name", "==", DB]]})[0]["rows"]
    return rows[0]


@pytest.fixture
def cluster(etcd_cluster_module, tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as members:
        yield members


def test_a_commit_through_one_member_is_read_on_the_others(cluster):
    with cluster[0].client() as c0, cluster[1].client() as c1, cluster[2].client() as c2:
        result = c0.transact(DB, insert("a"))
        assert "uuid" in result[0]
        assert eventually(lambda: names(c1) == ["a"])
        assert eventually(lambda: names(c2) == ["a"])
        c2.transact(DB, insert("b"))
        assert eventually(lambda: names(c0) == ["a", "b"])


@pytest.mark.parametrize("method", ["monitor", "monitor_cond", "monitor_cond_since"])
def test_a_monitor_on_one_member_sees_commits_through_another(cluster, method):
    params: list[Any] = [DB, "m", {"Root": [{"columns": ["name"]}]}]
    if method == "monitor_cond_since":
        params.append("00000000-0000-0000-0000-000000000000")
    with cluster[0].client() as writer, cluster[1].client() as m1, cluster[2].client() as m2:
        for client in (m1, m2):
            assert client.request(method, params)["error"] is None
        writer.transact(DB, insert("x"))
        updates = [client.wait_notification(
            {"monitor": "update", "monitor_cond": "update2",
             "monitor_cond_since": "update3"}[method]) for client in (m1, m2)]
        for update in updates:
            rows = update["params"][-1]["Root"]
            (row,) = rows.values()
            assert (row.get("new") or row.get("insert"))["name"] == "x"
        if method == "monitor_cond_since":
            # The same transaction id on every member.
            assert updates[0]["params"][1] == updates[1]["params"][1]


def test_the_same_unique_value_through_two_members_commits_once(cluster):
    for attempt in range(5):
        with cluster[0].client() as c0, cluster[1].client() as c1:
            name = f"race{attempt}"
            c0.send({"method": "transact", "params": [DB, insert(name)], "id": 1})
            c1.send({"method": "transact", "params": [DB, insert(name)], "id": 1})
            results = [c0.reply(1)["result"], c1.reply(1)["result"]]
        ok = [r for r in results if len(r) == 1 and "uuid" in r[0]]
        failed = [r for r in results if r[-1].get("error") == "constraint violation"]
        assert len(ok) == 1 and len(failed) == 1, results


COUNTER_SCHEMA = {"name": "Counter", "version": "1.0.0", "tables": {"Counter": {
    "isRoot": True, "indexes": [["name"]],
    "columns": {"name": {"type": "string"}, "value": {"type": "integer"}}}}}


def test_pipelined_increments_through_every_member_all_count(etcd_cluster_module, tmp_path):
    schema = tmp_path / "counter.ovsschema"
    schema.write_text(json.dumps(COUNTER_SCHEMA))
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg, schema=schema) as cluster:
        with cluster[0].client() as c0:
            c0.transact("Counter", {"op": "insert", "table": "Counter",
                                    "row": {"name": "c", "value": 0}})
        clients = [member.client() for member in cluster.members]
        increment = {"op": "mutate", "table": "Counter", "where": [],
                     "mutations": [["value", "+=", 1]]}

        def value(client: RawClient) -> int | None:
            rows = client.transact("Counter", {"op": "select", "table": "Counter",
                                               "where": []})[0]["rows"]
            return rows[0]["value"] if rows else None

        try:
            # Reads are served by each member's copy: wait until the row reached every one.
            for client in clients:
                assert eventually(lambda c=client: value(c) == 0)
            for client in clients:
                for n in range(40):
                    client.send({"method": "transact", "params": ["Counter", increment], "id": n})
            for client in clients:
                for n in range(40):
                    assert client.reply(n)["result"] == [{"count": 1}]

            for client in clients:
                assert eventually(lambda c=client: value(c) == 120), value(client)
        finally:
            for client in clients:
                client.close()


def test_a_wait_on_one_member_is_released_by_a_commit_through_another(cluster):
    with cluster[0].client() as waiter, cluster[2].client() as writer:
        waiter.send({"method": "transact", "id": "w", "params": [DB, {
            "op": "wait", "table": "Root", "where": [["name", "==", "late"]], "columns": ["name"],
            "until": "==", "rows": [{"name": "late"}], "timeout": 10000}]})
        time.sleep(0.2)
        writer.transact(DB, insert("late"))
        assert waiter.reply("w", timeout=5)["result"] == [{}]


def test_server_rows_describe_the_members(cluster):
    with cluster[0].client() as c0:
        c0.transact(DB, insert("a"))
    rows = []
    for member in cluster.members:
        with member.client() as client:
            rows.append(eventually(lambda c=client: (lambda r: r if r["index"] == 1 else None)(
                server_row(c))))
    for row in rows:
        assert row["model"] == "clustered"
        assert row["connected"] is True and row["leader"] is True
        assert row["index"] == 1
    assert len({row["cid"][1] for row in rows}) == 1
    assert len({row["sid"][1] for row in rows}) == 3


def test_members_restart_with_everything(cluster):
    with cluster[1].client() as client:
        for n in range(20):
            client.transact(DB, insert(f"r{n}"))
    for member in cluster.members:
        member.stop()
    for member in cluster.members:
        member.start(member.tcp_port)
    for member in cluster.members:
        with member.client() as client:
            assert names(client) == sorted(f"r{n}" for n in range(20))


def test_a_member_down_during_many_commits_catches_up_from_the_snapshot(
        etcd_cluster_module, tmp_path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg,
                       extra_args=["--etcd-snapshot-every=500"]) as cluster:
        cluster[2].stop()
        with cluster[0].client() as client:
            for n in range(0, 2000, 100):
                client.send({"method": "transact", "id": n, "params": [
                    DB, *(insert(f"s{n + i}") for i in range(100))]})
            for n in range(0, 2000, 100):
                assert "uuid" in client.reply(n)["result"][0]
            for n in range(600):
                client.send({"method": "transact", "id": f"m{n}", "params": [DB, insert(f"m{n}")]})
            for n in range(600):
                assert "uuid" in client.reply(f"m{n}")["result"][0]
        log = cluster[0].directory / "server.log"
        assert eventually(lambda: "stored a snapshot" in log.read_text()), cluster[0].diagnostics()
        first_batch = etcd_cluster_module.etcdctl(
            "get", f"{cluster.prefix}/Test/log/", "--prefix", "--keys-only").split()[0]
        assert int(first_batch.rsplit("/", 1)[1]) > 100  # trimmed: the snapshot covers it
        cluster[2].start()
        with cluster[2].client() as client:
            assert eventually(lambda: len(names(client)) == 2600)


def test_a_member_whose_schema_differs_is_refused(etcd_cluster_module, tmp_path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg, size=1) as cluster:
        schema = tmp_path / "other.ovsschema"
        schema.write_text(TEST_SCHEMA.read_text().replace('"version": "1.2.3"',
                                                          '"version": "9.9.9"'))
        db = tmp_path / "other.db"
        _tool("create", str(db), str(schema))
        result = subprocess.run(
            [sys.executable, "-m", "tegadb.server", *cluster.args, "--remote=ptcp:0:127.0.0.1",
             str(db)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
            env=_env())
        assert result.returncode != 0
        assert "differs from the cluster's schema" in result.stderr
        assert "version 9.9.9" in result.stderr and "version 1.2.3" in result.stderr


def test_unreachable_etcd_at_start_is_a_clear_error_after_a_bounded_wait(tmp_path):
    db = tmp_path / "t.db"
    _tool("create", str(db), str(TEST_SCHEMA))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tegadb.server", "--etcd-endpoints=http://127.0.0.1:1",
         "--etcd-timeout=1", "--etcd-start-timeout=2", "--remote=ptcp:0:127.0.0.1", str(db)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, env=_env())
    assert result.returncode == 1
    assert "etcd unavailable" in result.stderr and "--etcd-start-timeout" in result.stderr
    assert time.monotonic() - started < 15


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _tool(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tegadb.cli.tegadb_tool", *args], check=True,
                   env=_env(), capture_output=True)

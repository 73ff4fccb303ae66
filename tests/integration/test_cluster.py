"""tegadb members on a real 3-member etcd cluster (issue 13's "Must hold").

Each test runs its own tegadb cluster under its own etcd prefix; tests that
take etcd members down get an etcd cluster of their own.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from peers import (
    REPO_ROOT,
    TEST_SCHEMA,
    RawClient,
    TegadbCluster,
    assert_whole_pairs,
    pipelined_pairs,
    start_tegadb_server,
)

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


def test_a_monitor_of_server_rows_sees_the_index_move_with_each_commit(cluster):
    with cluster[1].client() as watcher, cluster[0].client() as writer:
        watcher.request("monitor", ["_Server", "s", {"Database": {"columns": ["name", "index"]}}])
        for n in range(3):
            writer.transact(DB, insert(f"i{n}"))
            update = watcher.wait_notification("update", timeout=5)
            rows = update["params"][1]["Database"].values()
            assert [r["new"]["index"] for r in rows if "new" in r] == [n + 1], update


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


def test_a_restarted_member_starts_from_its_file_and_reads_only_what_followed(cluster):
    with cluster[0].client() as client:
        for n in range(5):
            client.transact(DB, insert(f"f{n}"))
    member = cluster[1]
    assert eventually(lambda: len(names(member.client())) == 5)
    member.stop()  # its file now ends at position 5
    with cluster[0].client() as client:
        for n in range(5, 8):
            client.transact(DB, insert(f"f{n}"))
    member.start(member.tcp_port)
    assert "started from" in member.log_path.read_text()
    assert "at position 5, then 3 records from etcd" in member.log_path.read_text()
    with member.client() as client:
        assert names(client) == sorted(f"f{n}" for n in range(8))
        # It follows on from there.
        client.transact(DB, insert("f8"))
    with cluster[2].client() as client:
        assert eventually(lambda: len(names(client)) == 9)


def test_a_file_that_is_not_the_clusters_history_is_not_used_as_its_cache(
        etcd_cluster_module, tmp_path):
    with TegadbCluster(tmp_path / "c", etcd_cluster_module.endpoints_arg, size=1) as cluster:
        with cluster[0].client() as client:
            for n in range(3):
                client.transact(DB, insert(f"c{n}"))
        # A file of the same schema at position 2, with other transactions.
        stray = start_tegadb_server(tmp_path / "stray", [TEST_SCHEMA])
        with stray.client() as client:
            client.transact(DB, insert("x0"))
            client.transact(DB, insert("x1"))
        stray.stop()
        joining = start_tegadb_server(tmp_path / "j", [TEST_SCHEMA], extra_args=cluster.args)
        try:
            joining.stop()
            shutil.copy(tmp_path / "stray" / "Test.db", tmp_path / "j" / "Test.db")
            joining.start(joining.tcp_port)
            assert "started from" not in joining.log_path.read_text()
            with joining.client() as client:
                assert names(client) == ["c0", "c1", "c2"]
        finally:
            joining.stop()


def test_a_member_down_while_10k_transactions_commit_catches_up_from_the_snapshot(
        etcd_cluster_module, tmp_path):
    # The default interval (5000): the log is trimmed twice meanwhile.
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        cluster[2].stop()
        with cluster[0].client(timeout=30) as client:
            for start in range(0, 10_000, 500):
                for n in range(start, start + 500):
                    client.send({"method": "transact", "id": n,
                                 "params": [DB, insert(f"s{n}")]})
                for n in range(start, start + 500):
                    assert "uuid" in client.reply(n)["result"][0]
        log = cluster[0].directory / "server.log"
        assert eventually(lambda: "stored a snapshot at 10000" in log.read_text(), 10), \
            cluster[0].diagnostics()
        first_batch = etcd_cluster_module.etcdctl(
            "get", f"{cluster.prefix}/Test/log/", "--prefix", "--keys-only").split()[0]
        assert int(first_batch.rsplit("/", 1)[1]) > 5000  # trimmed: the snapshot covers it
        cluster[2].start()
        with cluster[2].client() as client:
            assert eventually(lambda: len(names(client)) == 10_000)
        with cluster[1].client() as client:
            assert len(names(client)) == 10_000


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


def test_kill_9_of_members_under_pipelined_writes_loses_nothing_acknowledged(
        etcd_cluster_module, tmp_path):
    rng = random.Random(13)
    acked: set[str] = set()
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        for kill in range(30):
            victim = cluster[kill % 3]
            results: list[set[str]] = []
            client = victim.client(timeout=10)
            writer = threading.Thread(
                target=lambda c=client, k=kill, r=results: r.append(pipelined_pairs(c, f"k{k}", 60)))
            writer.start()
            time.sleep(rng.uniform(0.0, 0.15))
            victim.kill()
            writer.join(30)
            client.close()
            acked |= results[0]
            victim.start(victim.tcp_port)
        assert len(acked) > 100  # kills came while writes were being acknowledged
        for member in cluster.members:
            with member.client() as client:
                eventually(lambda c=client: {n.rsplit("-", 1)[0] for n in names(c)} >= acked)
                assert_whole_pairs(names(client), acked)


def test_writes_go_on_with_one_etcd_member_down(etcd_cluster, tmp_path):
    with TegadbCluster(tmp_path, etcd_cluster.endpoints_arg) as cluster:
        etcd_cluster.kill(0)  # the endpoint every member talks to first
        for n, member in enumerate(cluster.members):
            with member.client(timeout=15) as client:
                assert "uuid" in client.transact(DB, insert(f"after{n}"), timeout=15)[0]
        for member in cluster.members:
            with member.client() as client:
                assert eventually(lambda c=client: names(c) == ["after0", "after1", "after2"])


def test_a_member_started_before_etcd_answers_within_10_s_of_etcd_being_reachable(
        etcd_cluster, tmp_path):
    for index in range(3):
        etcd_cluster.kill(index)
    started: list[TegadbCluster] = []
    starting = threading.Thread(target=lambda: started.append(
        TegadbCluster(tmp_path, etcd_cluster.endpoints_arg, size=1)))
    starting.start()
    try:
        time.sleep(3)  # the member waits for etcd meanwhile
        assert not started
        etcd_cluster.restart(0, 1, 2)
        reachable = time.monotonic()
        starting.join(30)
        assert started, "the member did not start once etcd was back"
        with started[0][0].client() as client:
            assert "uuid" in client.transact(DB, insert("first"))[0]
        assert time.monotonic() - reachable < 10
    finally:
        starting.join(30)
        for cluster in started:
            cluster.stop()


def test_without_etcd_writes_fail_clearly_reads_go_on_and_all_resumes(etcd_cluster, tmp_path):
    with TegadbCluster(tmp_path, etcd_cluster.endpoints_arg,
                       extra_args=["--etcd-timeout=2"]) as cluster:
        with cluster[0].client() as client:
            client.transact(DB, insert("before"))
        for index in range(3):
            etcd_cluster.kill(index)
        with cluster[1].client(timeout=10) as client:
            started = time.monotonic()
            result = client.transact(DB, insert("during"), timeout=10)
            assert time.monotonic() - started < 5
            assert result[-1]["error"] == "cluster unavailable", result
            assert "etcd" in result[-1]["details"]
            assert eventually(lambda: names(client) == ["before"])
            assert eventually(lambda: server_row(client)["connected"] is False, 10)
            assert server_row(client)["leader"] is False
        etcd_cluster.restart(0, 1, 2)
        for n, member in enumerate(cluster.members):
            with member.client(timeout=10) as client:
                assert eventually(lambda c=client: server_row(c)["connected"] is True, 15)
                assert "uuid" in client.transact(DB, insert(f"back{n}"))[0]
        with cluster[2].client() as client:
            assert eventually(lambda: names(client) == ["back0", "back1", "back2", "before"])


def test_locks_are_the_clusters(cluster):
    with cluster[0].client() as a, cluster[1].client() as b, cluster[2].client() as c:
        assert a.request("lock", ["L"])["result"] == {"locked": True}
        assert b.request("lock", ["L"])["result"] == {"locked": False}
        # tegadb_stats counts the names each member's sessions hold or wait for
        assert [x.request("tegadb_stats", [])["result"]["locks"] for x in (a, b, c)] == [1, 1, 0]
        # assert sees the owner as the cluster does
        assert a.transact(DB, {"op": "assert", "lock": "L"}) == [{}]
        assert b.transact(DB, {"op": "assert", "lock": "L"})[0]["error"] == "not owner"
        assert a.request("unlock", ["L"])["result"] == {}
        assert b.wait_notification("locked")["params"] == ["L"]
        assert c.request("steal", ["L"])["result"] == {"locked": True}
        assert b.wait_notification("stolen")["params"] == ["L"]
        assert c.request("unlock", ["L"])["result"] == {}
        # b still has its record: it owns the lock again once the stealer leaves
        assert b.wait_notification("locked")["params"] == ["L"]


def test_a_lock_passes_on_when_its_holder_disconnects_or_its_member_dies(cluster):
    with cluster[2].client() as waiter:
        with cluster[0].client() as holder:
            assert holder.request("lock", ["D"])["result"] == {"locked": True}
            assert waiter.request("lock", ["D"])["result"] == {"locked": False}
        assert waiter.wait_notification("locked", timeout=5)["params"] == ["D"]
        with cluster[1].client() as next_one:
            assert next_one.request("lock", ["D"])["result"] == {"locked": False}
            cluster[2].kill()  # the owner's member dies: its lease ends within seconds
            started = time.monotonic()
            assert next_one.wait_notification("locked", timeout=10)["params"] == ["D"]
            assert time.monotonic() - started < 8


def test_the_ovs_idl_leader_only_survives_the_death_of_its_member(cluster):
    idl_module = pytest.importorskip("ovs.db.idl")
    from test_idl import insert_root, run_until

    remotes = ",".join(member.remote_tcp for member in cluster.members)
    helper = idl_module.SchemaHelper(location=str(TEST_SCHEMA))
    helper.register_all()
    idl = idl_module.Idl(remotes, helper, leader_only=True)
    try:
        run_until(idl, idl.has_ever_connected)

        def commit(name: str) -> int:
            txn = idl_module.Transaction(idl)
            insert_root(name)(txn)
            return txn.commit_block()

        def idl_names() -> set[str]:
            return {row.name for row in idl.tables["Root"].rows.values()}

        assert commit("one") == idl_module.Transaction.SUCCESS

        def sessions(member) -> int:
            with member.client() as client:
                return client.request("tegadb_stats", [])["result"]["sessions"] - 1

        (used,) = [m for m in cluster.members if sessions(m) == 1]
        used.kill()
        with next(m for m in cluster.members if m is not used).client() as other:
            other.transact(DB, insert("while-away"))
        run_until(idl, lambda: idl_names() == {"one", "while-away"}, timeout=20)
        assert commit("two") == idl_module.Transaction.SUCCESS
        assert idl_names() == {"one", "two", "while-away"}
        # It resumed where it was: the member it moved to sent only what it missed.
        logs = "".join(m.log_path.read_text() for m in cluster.members if m is not used)
        assert "monitor_cond_since resumed" in logs
    finally:
        idl.close()


def test_a_conversion_goes_through_the_log_to_every_member(cluster):
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "1.3.0"
    schema["tables"]["Weak"]["columns"]["added"] = {"type": "integer"}
    with cluster[0].client() as c0, cluster[2].client() as c2:
        c0.transact(DB, insert("kept", 7))
        assert c0.request("convert", [DB, schema])["result"] == {}
        for member in cluster.members:
            with member.client() as client:
                assert eventually(lambda c=client: c.request("get_schema", [DB])["result"][
                    "version"] == "1.3.0")
                rows = client.transact(DB, {"op": "select", "table": "Root", "where": [],
                                            "columns": ["name", "count"]})[0]["rows"]
                assert rows == [{"name": "kept", "count": 7}]
                assert server_row(client)["schema"] and '"1.3.0"' in server_row(client)["schema"]
        # c2 was not change-aware: the conversion disconnected it, as ovsdb-server does.
        assert c2.wait_closed(5)
    with cluster[2].client() as client:
        assert "uuid" in client.transact(DB, {"op": "insert", "table": "Weak",
                                              "row": {"name": "w", "added": 5}})[0]
    cluster[1].restart()
    with cluster[1].client() as client:
        assert eventually(lambda: client.transact(DB, {
            "op": "select", "table": "Weak", "where": [], "columns": ["added"]})[0]["rows"]
            == [{"added": 5}])


def test_a_conversion_the_data_does_not_fit_is_refused_everywhere(cluster):
    schema = json.loads(TEST_SCHEMA.read_text())
    schema["version"] = "1.3.0"
    schema["tables"]["Root"]["columns"]["count"]["type"]["key"]["maxInteger"] = 5
    with cluster[0].client() as c0:
        c0.transact(DB, insert("big", 50))
        reply = c0.request("convert", [DB, schema])
        assert reply["error"]["error"] == "constraint violation", reply
    for member in cluster.members:
        with member.client() as client:
            assert client.request("get_schema", [DB])["result"]["version"] == "1.2.3"


def test_a_record_a_member_cannot_apply_stops_it_naming_the_position(
        etcd_cluster_module, tmp_path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg, size=2) as cluster:
        with cluster[0].client() as client:
            client.transact(DB, insert("fine"))
        bad = json.dumps({"seq": 2, "txn": "00000000-0000-4000-8000-000000000002", "date": 0,
                          "changes": {"NoSuchTable": {}}})
        base = f"{cluster.prefix}/{DB}/"
        etcd_cluster_module.etcdctl("put", f"{base}log/{2:020d}", bad)
        etcd_cluster_module.etcdctl("put", f"{base}head", "2")
        for member in cluster.members:
            assert member.process is not None
            assert member.process.wait(10) == 1
            log = member.log_path.read_text()
            assert f"cannot apply etcd {base}log: record 2" in log, log[-2000:]
            assert "No table named NoSuchTable" in log


def test_a_transaction_over_etcds_request_limit_is_refused_and_big_batches_split(cluster):
    big = ["set", [f"{n:04d}" + "x" * 996 for n in range(1100)]]  # ~1.1 MB
    with cluster[0].client(timeout=20) as client:
        result = client.transact(DB, {"op": "insert", "table": "Root",
                                      "row": {"name": "big", "tags": big}})
        assert result[-1]["error"] == "resources exhausted", result[-1]
        assert "etcd request" in result[-1]["details"]
        assert names(client) == []
        # 30 transactions of ~100 kB each: more than one etcd request holds.
        part = ["set", [f"{n:04d}" + "y" * 996 for n in range(100)]]
        for n in range(30):
            client.send({"method": "transact", "id": n, "params": [
                DB, {"op": "insert", "table": "Root", "row": {"name": f"p{n}", "tags": part}}]})
        for n in range(30):
            assert "uuid" in client.reply(n, timeout=20)["result"][0]
    with cluster[1].client() as other:
        assert eventually(lambda: len(names(other)) == 30)

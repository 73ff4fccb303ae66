"""Writes forwarded to the member holding the writer lease (cluster_forward.py),
on real members and a real 3-member etcd cluster."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from peers import RawClient, TegadbCluster, assert_whole_pairs, pipelined_pairs
from test_cluster import DB, eventually, insert, names

COUNT = 400
TOOK = "took the writer lease"
FOLLOWS = "writes go to the writer at"


def log_text(member: Any) -> str:
    return member.log_path.read_text()


def contend(cluster: TegadbCluster, prefix: str, count: int = 60) -> set[str]:
    """Pipelined pairs through every member at once; the acknowledged ones."""
    acked: list[set[str]] = [set() for _ in cluster.members]
    clients = [member.client(timeout=20) for member in cluster.members]

    def write(i: int) -> None:
        acked[i] = pipelined_pairs(clients[i], f"{prefix}{i}", count)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for client in clients:
        client.close()
    return set().union(*acked)


def the_writer(cluster: TegadbCluster) -> int:
    """The member that took the lease, once the others follow it."""
    def found() -> int | None:
        writers = [i for i, m in enumerate(cluster.members) if TOOK in log_text(m)]
        others = [m for i, m in enumerate(cluster.members) if i not in writers]
        if len(writers) == 1 and all(FOLLOWS in log_text(m) for m in others):
            return writers[0]
        return None

    writer = None
    for round_ in range(10):  # contention until someone loses an append
        writer = eventually(found, timeout=1.5)
        if writer is not None:
            return writer
        contend(cluster, f"warm{round_}-", 30)
    raise AssertionError("no member took the writer lease: "
                         + " | ".join(log_text(m)[-400:] for m in cluster.members))


def test_contended_writes_go_through_one_writer_and_all_commit(etcd_cluster_module,
                                                               tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        writer = the_writer(cluster)
        acked = contend(cluster, "p")
        assert len(acked) == 3 * 60
        for member in cluster.members:
            with member.client() as client:
                assert eventually(lambda c=client: {
                    n.rsplit("-", 1)[0] for n in names(c)} >= acked)
                assert_whole_pairs(names(client), acked)
        assert sum(TOOK in log_text(m) for m in cluster.members) == 1, writer


def test_a_forwarded_write_is_read_and_monitored_on_its_own_member(etcd_cluster_module,
                                                                    tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        writer = the_writer(cluster)
        member = cluster[(writer + 1) % 3]
        with member.client() as client:
            client.send({"method": "monitor", "id": "m",
                         "params": [DB, None, {"Root": {"columns": ["name"]}}]})
            client.reply("m")
            client.send({"method": "transact", "id": 1, "params": [DB, insert("fwd")]})
            assert "uuid" in client.reply(1)["result"][0]
            # The monitor's update came first, as for a local write.
            assert any(n.get("method") == "update" and "fwd" in str(n["params"])
                       for n in client.notifications), client.notifications
            assert "fwd" in names(client)  # read at once on the same member


def test_errors_of_a_forwarded_transaction_come_back_unchanged(etcd_cluster_module,
                                                               tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        writer = the_writer(cluster)
        with cluster[(writer + 2) % 3].client() as client:
            reply = client.request("transact", [DB, {"op": "insert", "table": "Nope",
                                                     "row": {}}])
            assert reply["result"][0]["error"] == "syntax error", reply
            assert "Nope" in reply["result"][0]["details"], reply
            result = client.transact(DB, insert("u1"), insert("u1"))
            assert result[-1]["error"] == "constraint violation", result


def test_the_writer_killed_under_forwarded_writes_loses_nothing_acknowledged(
        etcd_cluster_module, tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        writer = the_writer(cluster)
        others = [cluster[(writer + k) % 3] for k in (1, 2)]
        acked: set[str] = set()
        unknown: list[Any] = []

        def write(client: RawClient, prefix: str) -> None:
            for n in range(COUNT):
                client.send({"method": "transact", "id": n, "params": [DB, *(
                    {"op": "insert", "table": "Root", "row": {"name": f"{prefix}-{n}-{h}"}}
                    for h in "ab")]})
            for n in range(COUNT):
                reply = client.reply(n, timeout=20)
                if reply.get("error") is None:
                    acked.add(f"{prefix}-{n}")
                else:
                    unknown.append(reply["error"])

        clients = [m.client(timeout=20) for m in others]
        threads = [threading.Thread(target=write, args=(c, f"k{i}"))
                   for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        time.sleep(0.02)
        cluster[writer].kill()
        for thread in threads:
            thread.join(60)
        assert len(acked) + len(unknown) == 2 * COUNT  # every request answered
        for error in unknown:
            assert error["error"] == "commit status unknown", error
        time.sleep(0.5)  # the survivors noticed: no forward is in the air
        for client in clients:
            # The survivors take writes: they append themselves.
            assert "uuid" in client.transact(DB, insert(f"after-{id(client)}"))[0]
            client.close()
        for member in others:
            with member.client() as client:
                assert eventually(lambda c=client: {
                    n.rsplit("-", 1)[0] for n in names(c)} >= acked)
                assert_whole_pairs([n for n in names(client) if n.startswith("k")], acked)


def test_no_forward_writes_keeps_every_member_appending(etcd_cluster_module, tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg,
                       extra_args=["--no-forward-writes"]) as cluster:
        acked = contend(cluster, "n")
        assert len(acked) == 3 * 60
        time.sleep(1.2)  # a lease would be announced by now
        assert not any(TOOK in log_text(m) or FOLLOWS in log_text(m) for m in cluster.members)

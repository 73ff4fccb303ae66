"""The etcd launcher (tests/etcdpeers.py) runs real clusters that behave as etcd does."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from etcdpeers import EtcdCluster

# A write in flight when the leader dies is lost with it and hangs until the
# client's timeout; a short one and a retry give the election time to finish.
WRITE_DEADLINE = 10.0


def _put_until_accepted(cluster: EtcdCluster, member: int, key: str, value: str) -> None:
    deadline = time.monotonic() + WRITE_DEADLINE
    while True:
        try:
            cluster.etcdctl("put", key, value, "--command-timeout=1s", member=member)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def _get(cluster: EtcdCluster, member: int, key: str) -> str:
    return cluster.etcdctl("get", key, "--print-value-only", member=member).strip()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_put_through_one_member_is_read_through_another(etcd_cluster: EtcdCluster) -> None:
    assert len(set(etcd_cluster.endpoints)) == 3
    assert etcd_cluster.endpoints_arg == ",".join(etcd_cluster.endpoints)
    etcd_cluster.etcdctl("put", "/k", "through m0", member=0)
    assert _get(etcd_cluster, 2, "/k") == "through m0"


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_writes_go_on_while_a_member_is_down_and_it_serves_them_after_restart(
        etcd_cluster: EtcdCluster, role: str) -> None:
    leader = etcd_cluster.leader()
    down = leader if role == "leader" else (leader + 1) % 3
    survivor = (down + 1) % 3
    pid = etcd_cluster.pid(down)
    etcd_cluster.kill(down)
    assert not _running(pid)
    with pytest.raises(RuntimeError, match="failed"):
        etcd_cluster.etcdctl("get", "/k", "--command-timeout=300ms", member=down)
    _put_until_accepted(etcd_cluster, survivor, "/k", "written while down")
    assert etcd_cluster.leader() != down
    etcd_cluster.restart(down)
    assert _get(etcd_cluster, down, "/k") == "written while down"
    etcd_cluster.etcdctl("put", "/k", "after restart", member=down)
    assert _get(etcd_cluster, survivor, "/k") == "after restart"


def test_two_clusters_in_one_run_stay_apart(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    with EtcdCluster(tmp_path / "other", size=1) as other:
        assert other.token != etcd_cluster.token
        etcd_cluster.etcdctl("put", "/k", "first")
        assert other.etcdctl("get", "/k", "--print-value-only") == ""
        members = other.etcdctl("member", "list").splitlines()
    assert len(members) == 1 and other.endpoints[0] in members[0]
    assert len(etcd_cluster.etcdctl("member", "list").splitlines()) == 3


def test_stop_ends_every_member_and_may_be_called_twice(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd")
    cluster.start()
    pids = [cluster.pid(i) for i in range(cluster.size)]
    cluster.kill(2)
    cluster.stop()
    cluster.stop()
    assert not any(_running(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="not running"):
        cluster.pid(0)


def test_a_member_that_does_not_come_up_is_reported_with_its_log(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", size=1, extra_args=("--no-such-flag",))
    with pytest.raises(RuntimeError, match=r"(?s)m0 exited.*m0\.log.*no-such-flag"):
        cluster.start()
    cluster.stop()

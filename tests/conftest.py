"""Fixtures shared by every test file: real servers and the test schema.

`ovsdb_peer` and `tegadb_peer` are factories: call them with schema paths
(default: the test schema) to get a running `peers.Peer`; each is stopped
when the test ends.  `peer` is the same factory parametrized over both
servers, for tests that must hold for tegadb exactly as for ovsdb-server.
`etcd_cluster` (per test) and `etcd_cluster_module` (per module) are running
3-member etcd clusters (`etcdpeers.EtcdCluster`).

The test schema (tests/data/test.ovsschema, database "Test"):
- Root (root, unique index on name): name, count (integer 0..100),
  ratio (real 0..1), flag, color (optional enum blue/green/red),
  note (optional string, maxLength 10), tags (string set), numbers (set of
  at most 3 integers), props (string map), children (strong refs to Child),
  named (map string -> strong ref to Child), weak (weak refs to Weak),
  serial (immutable integer), status (ephemeral optional string).
  Rows inserted in one transaction need distinct names (the index).
- Child (not root: garbage-collected when unreferenced): value, number.
- Weak (root): name.
- Singleton (root, maxRows 1): mode (required enum auto/off/on; omitting
  it is a constraint violation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcdpeers import EtcdCluster, missing_etcd_binaries
from peers import (
    TEST_SCHEMA,
    Peer,
    PeerFactory,
    missing_ovs_binaries,
    start_ovsdb_server,
    start_tegadb_server,
)

Starter = Callable[[Path, list[Path]], Peer]


def _factory(start: Starter, label: str, tmp_path: Path) -> Iterator[PeerFactory]:
    started: list[Peer] = []

    def make(*schema_paths: str | os.PathLike[str]) -> Peer:
        paths = [Path(p) for p in schema_paths] or [TEST_SCHEMA]
        peer = start(tmp_path / f"{label}{len(started)}", paths)
        started.append(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


@pytest.fixture
def test_schema() -> Path:
    """Path of tests/data/test.ovsschema (database "Test")."""
    return TEST_SCHEMA


@pytest.fixture
def ovsdb_peer(tmp_path: Path) -> Iterator[PeerFactory]:
    """Factory: `ovsdb_peer(*schema_paths) -> Peer` running the real ovsdb-server."""
    missing = missing_ovs_binaries()
    if missing:
        # In CI a missing peer is a broken setup, not a reason to skip.
        message = f"{', '.join(missing)} not installed (run `make peers`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield from _factory(start_ovsdb_server, "ovsdb", tmp_path)


@pytest.fixture(scope="session")
def member_args(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """With TEGADB_TEST_CLUSTER=1, the options that make every tegadb_peer a
    cluster member (on one etcd for the whole run, a prefix per server), so
    that the protocol tests run against cluster mode too; else none."""
    if not os.environ.get("TEGADB_TEST_CLUSTER"):
        yield []
        return
    with EtcdCluster(tmp_path_factory.mktemp("member-etcd"), size=1) as cluster:
        yield [f"--etcd-endpoints={cluster.endpoints_arg}"]


@pytest.fixture
def tegadb_peer(tmp_path: Path, member_args: list[str]) -> Iterator[PeerFactory]:
    """Factory: `tegadb_peer(*schema_paths) -> Peer` running tegadb-server."""
    def start(directory: Path, schema_paths: list[Path]) -> Peer:
        prefix = [f"--etcd-prefix=/t{os.urandom(4).hex()}"] if member_args else []
        return start_tegadb_server(directory, schema_paths, [*member_args, *prefix])

    yield from _factory(start, "tegadb", tmp_path)


@pytest.fixture(params=["ovsdb-server", "tegadb"])
def peer(request: pytest.FixtureRequest) -> PeerFactory:
    """`ovsdb_peer` or `tegadb_peer`: the test runs once against each server."""
    name = "ovsdb_peer" if request.param == "ovsdb-server" else "tegadb_peer"
    factory: PeerFactory = request.getfixturevalue(name)
    return factory


def _etcd_cluster(directory: Path) -> Iterator[EtcdCluster]:
    missing = missing_etcd_binaries()
    if missing:
        # Never a skip: the cluster tests are part of the suite.
        pytest.fail(f"{', '.join(missing)} not installed (run `make peers`)")
    with EtcdCluster(directory) as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A healthy 3-member etcd cluster for one test, stopped after it."""
    yield from _etcd_cluster(tmp_path / "etcd")


@pytest.fixture(scope="module")
def etcd_cluster_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster shared by a module's tests: a test that kills
    a member restarts it before it ends."""
    yield from _etcd_cluster(tmp_path_factory.mktemp("etcd"))

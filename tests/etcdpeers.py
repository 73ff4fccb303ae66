"""Real etcd clusters for tests and benchmarks, on 127.0.0.1.

`EtcdCluster(directory, size)` runs `size` etcd members, each with its data
directory and log file under `directory`, on free ports, with a cluster token
of its own (two clusters in one run never join each other).  Members are
started, killed and stopped by pid; `kill` and `restart` let a test take one
member down and bring it back on the same ports and data.

    with EtcdCluster(tmp_path / "etcd") as cluster:   # started, healthy
        run("tegadb-server", f"--etcd-endpoints={cluster.endpoints_arg}", ...)
        cluster.kill(1)
        cluster.restart(1)

etcd 3.4 comes from Debian's etcd-server and etcd-client (`make peers`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from peers import stop_process

ETCD_BINARIES = ("etcd", "etcdctl")
STOP_TIMEOUT = 5.0
# Raft timing for tests: a leader's death is noticed after one election
# timeout (randomized up to twice it).  Measured here, from SIGKILL of the
# leader to a put acknowledged by a survivor, median of 6: 1.2 s with etcd's
# defaults (100 ms / 1000 ms), 0.9 s with 50 / 500, 0.4 s with 25 / 250.
# 50 / 500 leaves room for a loaded 2-core machine's stalls (a spurious
# election stalls every write in flight until its client's timeout).
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500
START_ATTEMPTS = 3
BIND_FAILURE = "address already in use"
# The members are local: an http_proxy in the environment must not be used.
_LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_etcd_binaries() -> list[str]:
    """The etcd binaries that are not on PATH (`make peers` installs them)."""
    return [name for name in ETCD_BINARIES if shutil.which(name) is None]


@dataclass
class _Member:
    name: str
    data_dir: Path
    log_path: Path
    client_port: int = 0
    peer_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return f"--- {self.log_path}: (no log)"
        return f"--- {self.log_path}:\n{self.log_path.read_text(errors='replace')[-chars:]}"


class EtcdCluster:
    """A cluster of `size` etcd members under `directory` (see the module doc)."""

    def __init__(self, directory: Path, size: int = 3, extra_args: tuple[str, ...] = ()) -> None:
        """`extra_args` go to every member (e.g. `--max-request-bytes=N`)."""
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        self.directory = directory
        self.extra_args = extra_args
        # Unique per instance: members of another cluster that got hold of
        # one of our ports (a test's leftover) refuse to join ours.
        self.token = f"tegadb-test-{uuid.uuid4().hex}"
        self._members = [_Member(f"m{i}", directory / f"m{i}.etcd", directory / f"m{i}.log")
                         for i in range(size)]

    def __enter__(self) -> Self:
        """Start the cluster (default timeout) for the `with` block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def endpoints(self) -> list[str]:
        """The members' client URLs, in member order."""
        return [member.client_url for member in self._members]

    @property
    def endpoints_arg(self) -> str:
        """The client URLs comma-joined, as `etcdctl --endpoints` and
        `tegadb-server --etcd-endpoints` take them."""
        return ",".join(self.endpoints)

    def pid(self, index: int) -> int:
        """The pid of a running member."""
        process = self._members[index].process
        if process is None:
            raise RuntimeError(f"etcd member {index} is not running")
        return process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start every member on fresh free ports and wait until all are healthy.

        Ports are found free by binding to port 0 and released before etcd
        binds them, so another process may take one meanwhile: then the
        whole cluster is started again on new ports, with fresh data.
        """
        if any(member.process is not None for member in self._members):
            raise RuntimeError("the etcd cluster is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            self._choose_ports()
            deadline = time.monotonic() + timeout
            try:
                for member in self._members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                    self._launch(member, "new")
                    self._wait_serving_peers(member, deadline)
                self._wait_healthy(self._members, deadline)
                return
            except BaseException as error:
                # Stopped here also on Ctrl-C: `with` never calls __exit__
                # when __enter__ raises.
                self.stop()
                retry = isinstance(error, RuntimeError) and self._lost_a_port()
                if attempt == START_ATTEMPTS or not retry:
                    raise

    def kill(self, index: int) -> None:
        """SIGKILL one member by its pid and reap it."""
        member = self._members[index]
        if member.process is None:
            raise RuntimeError(f"etcd member {index} is not running")
        process, member.process = member.process, None
        process.kill()
        process.wait()

    def restart(self, *indexes: int, timeout: float = 10.0) -> None:
        """Start killed members again on their ports and data (all at once: a
        member alone has no quorum); wait until they are healthy."""
        members = [self._members[index] for index in indexes]
        for index, member in zip(indexes, members, strict=True):
            if member.process is not None:
                raise RuntimeError(f"etcd member {index} is still running; kill it first")
        for member in members:
            self._launch(member, "existing")
        try:
            self._wait_healthy(members, time.monotonic() + timeout)
        except BaseException:
            self._terminate(members)
            raise

    def stop(self) -> None:
        """Stop every member by pid: SIGTERM, SIGKILL past a bound.  Idempotent."""
        self._terminate(self._members)

    def leader(self, timeout: float = 5.0) -> int:
        """The index of the member that leads the cluster, once a running
        member names a running leader (after a kill, an election may be on)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = {index: self._status(member) for index, member in enumerate(self._members)
                        if member.process is not None}
            ids = {status["header"]["member_id"]: index
                   for index, status in statuses.items() if status}
            for status in statuses.values():
                if status and status["leader"] in ids:
                    return ids[status["leader"]]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no running etcd member names a running leader: {statuses}")
            time.sleep(0.05)

    def etcdctl(self, *args: str, member: int | None = None, timeout: float = 10.0) -> str:
        """Run `etcdctl ARGS` (API v3) against one member or all; return its stdout."""
        endpoints = self.endpoints_arg if member is None else self.endpoints[member]
        argv = ["etcdctl", f"--endpoints={endpoints}", *args]
        env = dict(os.environ, ETCDCTL_API="3")
        result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        return result.stdout

    def _choose_ports(self) -> None:
        # All sockets are held at once, so the ports of one cluster differ.
        with ExitStack() as stack:
            ports = []
            for _ in range(2 * self.size):
                sock = stack.enter_context(socket.socket())
                sock.bind(("127.0.0.1", 0))
                ports.append(sock.getsockname()[1])
        for member in self._members:
            member.client_port, member.peer_port = ports.pop(), ports.pop()

    def _launch(self, member: _Member, cluster_state: str) -> None:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        argv = [
            "etcd", f"--name={member.name}", f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={cluster_state}",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_TIMEOUT_MS}",
            "--logger=zap", *self.extra_args,
        ]
        with open(member.log_path, "ab") as log:
            log.write(f"=== {' '.join(argv)}\n".encode())
            log.flush()
            member.process = subprocess.Popen(
                argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)

    def _wait_serving_peers(self, member: _Member, deadline: float) -> None:
        """Return once the member answers on its peer URL.

        A new member first asks the others whether it joined already, and
        waits a second for each one that accepts connections but does not
        answer yet (as one that started a moment before it): started one
        after the other, the members come up in ~0.3 s rather than ~2.3 s.
        """
        self._wait_until(lambda: _answers(f"{member.peer_url}/version"), [member],
                         deadline, "answering on its peer URL")

    def _wait_healthy(self, members: list[_Member], deadline: float) -> None:
        """Return once every member's /health says true (a quorum read went through it)."""
        waiting = list(members)

        def all_healthy() -> bool:
            waiting[:] = [m for m in waiting if not _answers(f"{m.client_url}/health", b'"true"')]
            return not waiting

        self._wait_until(all_healthy, waiting, deadline, "healthy")

    @staticmethod
    def _wait_until(condition: Callable[[], bool], members: list[_Member], deadline: float,
                    state: str) -> None:
        """Poll `condition`; raise with the members' logs if one of them exits
        or the deadline passes first."""
        while not condition():
            for member in members:
                assert member.process is not None
                if member.process.poll() is not None:
                    raise RuntimeError(
                        f"etcd member {member.name} exited ({member.process.returncode}) "
                        f"before {state}\n{member.log_tail()}")
            if time.monotonic() > deadline:
                tails = "\n".join(member.log_tail() for member in members)
                raise RuntimeError(
                    f"etcd members {[m.name for m in members]} not {state} in time\n{tails}")
            time.sleep(0.02)

    def _lost_a_port(self) -> bool:
        return any(BIND_FAILURE in member.log_tail() for member in self._members)

    def _terminate(self, members: list[_Member]) -> None:
        # One at a time: a leader told to stop hands its leadership to a live
        # follower first, and waits ~5 s if that follower is stopping too.
        for member in members:
            process, member.process = member.process, None
            if process is not None:
                stop_process(process, STOP_TIMEOUT)

    @staticmethod
    def _status(member: _Member) -> dict[str, Any]:
        """The member's status (its id, the leader's id), or {} if it does not answer."""
        request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status",
                                         data=b"{}", method="POST")
        try:
            with _LOCAL_HTTP.open(request, timeout=1.0) as response:
                status: dict[str, Any] = json.load(response)
                return status
        except (urllib.error.URLError, OSError):
            return {}


def _answers(url: str, expected: bytes = b"") -> bool:
    """True if a GET of `url` is answered with 200 and a body containing `expected`."""
    # A short timeout: a starting member accepts connections before it
    # answers them, and a long wait for it would delay the other checks.
    try:
        with _LOCAL_HTTP.open(url, timeout=0.25) as response:
            return expected in response.read()
    except (urllib.error.URLError, OSError):
        return False

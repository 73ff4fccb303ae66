"""examples/watch_interfaces.py, run as a user runs it, against both servers."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from typing import Any

from peers import REPO_ROOT, SCHEMA_DIR, Peer, PeerFactory

EXAMPLE = REPO_ROOT / "examples" / "watch_interfaces.py"
WAIT = 15.0


class Output:
    """The lines a process prints, read in a thread so a test can wait for each."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in stdout],
                         daemon=True).start()

    def expect(self, *wanted: str) -> None:
        """The next lines are ``wanted``, in any order."""
        got = {self.lines.get(timeout=WAIT) for _ in wanted}
        assert got == set(wanted)


def router(server: Peer, *ops: dict[str, Any]) -> list[Any]:
    with server.client() as client:
        return client.transact("Router", *ops)


def interface(name: str, **columns: Any) -> dict[str, Any]:
    return {"op": "insert", "table": "Interface",
            "row": {"name": name, "type": "ethernet", "addressing": "dhcp", **columns}}


def mtu_of(server: Peer, name: str) -> Any:
    result = router(server, {"op": "select", "table": "Interface", "where": [["name", "==", name]],
                             "columns": ["mtu"]})
    return result[0]["rows"][0]["mtu"]


def test_the_example_controller_watches_and_reacts(peer: PeerFactory) -> None:
    server = peer(SCHEMA_DIR / "router.ovsschema")
    router(server, interface("eth0", enabled=True), interface("lo", type="loopback"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, str(EXAMPLE), server.remote_unix], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = Output(process)
        out.expect("watching 2 interfaces")
        # eth0 was enabled without an MTU: the controller gives it one, and sees its own write.
        out.expect("eth0: gave it MTU 1500", "eth0: mtu None -> 1500")
        assert mtu_of(server, "eth0") == 1500
        router(server, interface("eth1", enabled=True, mtu=9000))
        out.expect("eth1: added (ethernet, enabled)")
        router(server, {"op": "update", "table": "Interface", "where": [["name", "==", "lo"]],
                        "row": {"enabled": True}})
        out.expect("lo: enabled False -> True", "lo: gave it MTU 1500", "lo: mtu None -> 1500")
        router(server, {"op": "delete", "table": "Interface", "where": [["name", "==", "eth1"]]})
        out.expect("eth1: removed")
        assert mtu_of(server, "lo") == 1500
    finally:
        process.kill()
        process.wait()

"""A connection's input served 50 messages a turn in cluster mode, where
input is also held back while a batch settles in etcd: nothing is lost or
reordered between the two queues."""

from __future__ import annotations

import json
from pathlib import Path

from peers import TegadbCluster

DB = "Test"


def test_pipelined_requests_past_a_turns_share_are_answered_in_order(
        etcd_cluster_module, tmp_path: Path):
    with TegadbCluster(tmp_path, etcd_cluster_module.endpoints_arg) as cluster:
        with cluster[0].client() as writer, cluster[0].client() as other:
            count = 600
            # Inserts and selects alternate: a select is held while the
            # batch before it settles, the inserts after it wait behind it.
            requests = []
            for n in range(count):
                if n % 3 == 2:
                    op = {"op": "select", "table": "Root",
                          "where": [["name", "==", f"r{n - 1}"]], "columns": ["name"]}
                else:
                    op = {"op": "insert", "table": "Root", "row": {"name": f"r{n}"}}
                requests.append(json.dumps({"method": "transact", "id": n, "params": [DB, op]}))
            writer.send_raw("".join(requests).encode())
            # Another client is served meanwhile.
            assert other.request("echo", ["meanwhile"], timeout=10)["result"] == ["meanwhile"]
            for n in range(count):
                reply = writer.recv(timeout=20)
                assert reply["id"] == n and reply["error"] is None, reply
                if n % 3 == 2:
                    # Each select sees the insert sent just before it.
                    assert reply["result"] == [{"rows": [{"name": f"r{n - 1}"}]}], reply
                else:
                    assert "uuid" in reply["result"][0], reply

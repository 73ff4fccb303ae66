"""TLS remotes (pssl:) with the real ovsdb-client as the peer."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from peers import make_pki, missing_ovs_binaries, start_tls_tegadb


def test_ovsdb_client_over_tls(tmp_path):
    if missing_ovs_binaries() or not shutil.which("openssl"):
        pytest.skip("needs ovsdb-client and openssl (make peers)")
    server, pki, port = start_tls_tegadb(tmp_path)
    try:
        client_keys = ["-p", str(pki["client.key"]), "-c", str(pki["client.pem"]),
                       "-C", str(pki["ca.pem"])]
        done = subprocess.run(["ovsdb-client", *client_keys, "list-dbs",
                               f"ssl:127.0.0.1:{port}"], capture_output=True, text=True,
                              timeout=20)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["Test", "_Server"]
        # A client whose certificate another CA signed is refused.
        (tmp_path / "other").mkdir()
        other = make_pki(tmp_path / "other")
        refused = subprocess.run(["ovsdb-client", "-p", str(other["client.key"]), "-c",
                                  str(other["client.pem"]), "-C", str(pki["ca.pem"]), "-t", "5",
                                  "list-dbs", f"ssl:127.0.0.1:{port}"],
                                 capture_output=True, text=True, timeout=20)
        assert refused.returncode != 0 and "Test" not in refused.stdout
    finally:
        server.stop()

"""Unit tests for tegadb.protocol.remotes and tegadb.protocol.tls."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from peers import make_pki

from tegadb.protocol.remotes import Remote, parse_active, parse_passive
from tegadb.protocol.tls import tls_context


@pytest.mark.parametrize("text,expected", [
    ("tcp:127.0.0.1:6641", Remote("tcp", "127.0.0.1", 6641)),
    ("tcp:127.0.0.1", Remote("tcp", "127.0.0.1", 6640)),
    ("ssl:[::1]:6641", Remote("ssl", "::1", 6641)),
    ("tcp:[fe80::1]", Remote("tcp", "fe80::1", 6640)),
    ("unix:var/tegadb.sock", Remote("unix", path="var/tegadb.sock")),
])
def test_active_remotes(text: str, expected: Remote) -> None:
    assert parse_active(text) == expected
    assert parse_active(str(expected)) == expected


@pytest.mark.parametrize("text,expected", [
    ("ptcp:6641:127.0.0.1", Remote("ptcp", "127.0.0.1", 6641)),
    ("ptcp:6641", Remote("ptcp", "0.0.0.0", 6641)),
    ("ptcp:", Remote("ptcp", "0.0.0.0", 6640)),
    ("pssl:6641:[::1]", Remote("pssl", "::1", 6641)),
    ("punix:var/tegadb.sock", Remote("punix", path="var/tegadb.sock")),
])
def test_passive_remotes(text: str, expected: Remote) -> None:
    assert parse_passive(text) == expected
    assert parse_passive(str(expected)) == expected


@pytest.mark.parametrize("text", ["tcp:", "ptcp:6640", "tcp:1.2.3.4:x", "unix:", "db.sock",
                                  "tcp:1.2.3.4:70000", "tcp::6640"])
def test_bad_active_remotes_are_named(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_active(text)
    assert str(info.value).startswith(f'"{text}": ')


@pytest.mark.parametrize("text,reason", [
    ("punix:", "punix: needs a path"),
    ("ptcp:x", "bad port 'x'"),
    ("ptcp:-1", "bad port '-1'"),
    ("pssl:65536", "bad port '65536'"),
    ("tcp:1.2.3.4:6640", "unknown remote type (use ptcp:, punix: or pssl:)"),
    ("db.sock", "unknown remote type (use ptcp:, punix: or pssl:)"),
])
def test_bad_passive_remotes_are_named(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_passive(text)
    assert str(info.value) == f"{text}: {reason}"


def test_kinds() -> None:
    assert [(r.is_unix, r.uses_tls) for r in (
        parse_active("unix:x"), parse_active("ssl:h"), parse_passive("punix:x"),
        parse_passive("pssl:"), parse_passive("ptcp:"))] == [
        (True, False), (False, True), (True, False), (False, True), (False, False)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {name: str(path) for name, path in make_pki(tmp_path_factory.mktemp("pki")).items()}


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """A TLS handshake between the two contexts in memory; raises ssl.SSLError."""
    pipes = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(2)]
    ends = [client.wrap_bio(*pipes[0], server_side=False),
            server.wrap_bio(*pipes[1], server_side=True)]
    done = [False, False]
    for _ in range(20):
        for i, end in enumerate(ends):
            try:
                end.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
            # What this end wrote is what the other end reads.
            pipes[1 - i][0].write(pipes[i][1].read())
        if all(done):
            return
    raise AssertionError("handshake did not finish")


def test_tls_both_ends_accept_each_other(pki: dict[str, str]) -> None:
    server = tls_context(pki["server.key"], pki["server.pem"], pki["ca.pem"], server=True)
    client = tls_context(pki["client.key"], pki["client.pem"], pki["ca.pem"], server=False)
    # No host name is checked: the server's certificate names "server".
    assert server.verify_mode == client.verify_mode == ssl.CERT_REQUIRED
    handshake(client, server)


def test_tls_server_with_a_ca_refuses_a_client_without_a_certificate(
        pki: dict[str, str]) -> None:
    server = tls_context(pki["server.key"], pki["server.pem"], pki["ca.pem"], server=True)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(pki["ca.pem"])
    with pytest.raises(ssl.SSLError):
        handshake(anonymous, server)


def test_tls_server_without_a_ca_accepts_a_client_without_a_certificate(
        pki: dict[str, str]) -> None:
    server = tls_context(pki["server.key"], pki["server.pem"], None, server=True)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(pki["ca.pem"])
    handshake(anonymous, server)


def test_tls_client_refuses_a_server_the_ca_did_not_sign(
        pki: dict[str, str], tmp_path: Path) -> None:
    other = make_pki(tmp_path)
    server = tls_context(str(other["server.key"]), str(other["server.pem"]), None, server=True)
    client = tls_context(pki["client.key"], pki["client.pem"], pki["ca.pem"], server=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client, server)

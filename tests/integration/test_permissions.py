"""Who may read the database files and connect to the sockets (issue 14, item 6).

Database files are created 0640 and Unix sockets 0770 whatever the umask
(ovsdb-server: 0660 and 0770, less the umask), compaction and conversion
keep a file's mode, both are options, and tegadb-server refuses a socket in
a directory anyone may write to without the sticky bit.  Each server runs
under the umask of the test: children inherit it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from peers import REPO_ROOT, SCHEMA_DIR, TEST_SCHEMA, Peer, start_ovsdb_server, start_tegadb_server

UMASKS = [0o000, 0o077]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def server_directory(tmp_path: Path, name: str) -> Path:
    """Made before the umask changes: under umask 000 it would be 0777, a
    directory that tegadb-server refuses to put its socket in."""
    directory = tmp_path / name
    directory.mkdir()
    return directory


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def checkout(module: str, *args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` from this checkout."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mask", UMASKS)
def test_database_and_socket_modes_whatever_the_umask(tmp_path, mask):
    directory = server_directory(tmp_path, "t")
    with umask(mask):
        server = start_tegadb_server(directory, [TEST_SCHEMA])
    try:
        db_file = directory / "Test.db"
        assert mode(db_file) == 0o640  # tegadb-tool create
        assert stat.S_ISSOCK(os.stat(server.unix_path).st_mode)
        assert mode(server.unix_path) == 0o770
        before = os.stat(db_file).st_ino
        with server.client() as c:  # conversion writes a new file
            reply = c.request("convert", ["Test", json.loads(TEST_SCHEMA.read_text())])
            assert reply["result"] == {}, reply
        assert os.stat(db_file).st_ino != before
        assert mode(db_file) == 0o640
    finally:
        server.stop()
    os.chmod(db_file, 0o600)
    with umask(mask):
        result = checkout("tegadb.cli.tegadb_tool", "compact", db_file)
    assert result.returncode == 0, result.stderr
    assert mode(db_file) == 0o600  # compaction keeps an operator's chmod


@pytest.mark.parametrize("mask", UMASKS)
def test_mode_options(tmp_path, mask):
    db_file = tmp_path / "Test.db"
    directory = server_directory(tmp_path, "t")
    with umask(mask):
        result = checkout("tegadb.cli.tegadb_tool", "create", "--db-file-mode", "0660",
                          db_file, TEST_SCHEMA)
        assert result.returncode == 0, result.stderr
        assert mode(db_file) == 0o660
        server = start_tegadb_server(directory, [TEST_SCHEMA],
                                     extra_args=["--socket-mode", "0700"])
    try:
        assert mode(server.unix_path) == 0o700
        with server.client() as c:
            assert c.request("echo", ["ok"])["result"] == ["ok"]
    finally:
        server.stop()
    bad = checkout("tegadb.cli.tegadb_tool", "create", "--db-file-mode", "u+rw",
                   tmp_path / "Other.db", TEST_SCHEMA)
    assert bad.returncode == 1 and "--db-file-mode" in bad.stderr  # one line, as ovsdb-tool
    assert not (tmp_path / "Other.db").exists()


def test_socket_mode_is_ovsdb_servers(tmp_path):
    """ovsdb-server sets 0770 on its sockets too (less the umask)."""
    ovsdb_directory, tegadb_directory = (server_directory(tmp_path, n) for n in "ot")
    with umask(0o000):
        ovsdb = start_ovsdb_server(ovsdb_directory, [TEST_SCHEMA])
        tegadb = start_tegadb_server(tegadb_directory, [TEST_SCHEMA])
    try:
        assert mode(ovsdb.unix_path) == mode(tegadb.unix_path) == 0o770
    finally:
        ovsdb.stop()
        tegadb.stop()


def test_world_writable_socket_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    db_file = tmp_path / "Test.db"
    assert checkout("tegadb.cli.tegadb_tool", "create", db_file, TEST_SCHEMA).returncode == 0
    socket_path = shared / "db.sock"
    result = checkout("tegadb.server", f"--remote=punix:{socket_path}", db_file)
    assert result.returncode == 1
    assert (f"{socket_path}: directory {shared} is writable by everyone (mode 0777) without the"
            " sticky bit") in result.stderr
    assert "--allow-unsafe-socket-dir" in result.stderr
    assert not socket_path.exists()


@pytest.mark.parametrize("directory_mode, option", [
    (0o777, ["--allow-unsafe-socket-dir"]),  # told to
    (0o1777, []),                                     # sticky, as /tmp: nobody else may replace it
])
def test_world_writable_socket_directory_when_allowed_or_sticky(tmp_path, directory_mode, option):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(directory_mode)
    server = start_tegadb_server(directory, [TEST_SCHEMA], extra_args=option)
    try:
        with server.client() as c:
            assert c.request("echo", ["ok"])["result"] == ["ok"]
    finally:
        server.stop()


def test_default_databases_under_a_permissive_umask(tmp_path):
    """With no DBFILE the server creates var/ and a database per shipped
    schema: var/ not writable by others, the files in --db-file-mode."""
    directory = server_directory(tmp_path, "t")
    (directory / "schemas").symlink_to(SCHEMA_DIR)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "tegadb.server", "--db-file-mode", "0600",
                f"--remote=punix:{directory / 'db.sock'}", f"--remote=ptcp:{port}:127.0.0.1"]

    server = Peer("tegadb", directory, command, env)
    with umask(0o000):
        server.start()
    try:
        created = sorted((directory / "var").glob("*.db"))
        assert [p.stem for p in created] == sorted(p.stem for p in SCHEMA_DIR.glob("*.ovsschema"))
        assert mode(directory / "var") == 0o750
        assert {mode(p) for p in created} == {0o600}
    finally:
        server.stop()

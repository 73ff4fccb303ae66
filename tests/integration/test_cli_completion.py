"""Shell completion: the callback against a real server, and the bash script
driving it as bash's programmable completion does.

``tegadb-client --complete SHELL LINE`` must offer commands, options, and
the tables, columns and record names of the server the line names; the
bash script, sourced into a real bash, must fill COMPREPLY from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from peers import REPO_ROOT, SCHEMA_DIR, Peer

ROUTER = SCHEMA_DIR / "router.ovsschema"
IOT = SCHEMA_DIR / "iot.ovsschema"
CLIENT = [sys.executable, "-m", "tegadb.cli.client_main"]


def environment(peer: Peer | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env["PATH"] = f"{REPO_ROOT / 'bin'}{os.pathsep}{env['PATH']}"  # the script calls tegadb-client
    if peer is not None:
        env["TEGADB_REMOTE"] = peer.remote_unix
    return env


def complete(line: str, peer: Peer | None, shell: str = "bash") -> list[str]:
    result = subprocess.run([*CLIENT, "--complete", shell, line], capture_output=True,
                            text=True, env=environment(peer), timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def server(tegadb_peer) -> Peer:  # type: ignore[no-untyped-def]
    peer: Peer = tegadb_peer(ROUTER, IOT)
    created = subprocess.run(
        [*CLIENT, f"--db={peer.remote_unix}", "--database=Router", "create", "Interface",
         "name=lan", "type=ethernet", "addressing=static", "--", "create", "Interface",
         "name=lo", "type=loopback", "addressing=none"],
        capture_output=True, text=True, env=environment(None), timeout=30)
    assert created.returncode == 0, created.stderr
    return peer


@pytest.mark.parametrize(("line", "expected"), [
    ("tegadb-client li", ["list", "list-columns", "list-dbs", "list-tables"]),
    ("tegadb-client wa", ["wait", "wait-until", "watch"]),
    ("tegadb-client --dat", ["--data=", "--database="]),
    ("tegadb-client --database=Router list Fire", ["Firewall_Rule", "Firewall_Zone"]),
    ("tegadb-client --database=Router get Interface l", ["lan", "lo"]),
    ("tegadb-client --database=Router get Interface lan m", ["mac", "members", "mtu"]),
    ("tegadb-client --database=Router set Interface lan mt", ["mtu="]),
    ("tegadb-client --database=Router find Interface add", ["addresses=", "addressing="]),
    ("tegadb-client --database=Router add Interface lan add", ["addresses", "addressing"]),
    ("tegadb-client --database=Router list System -- cl", ["clear"]),
    ("tegadb-client --database=Router list System -- clear Sys", ["System"]),
    ("tegadb-client watch Router Rad", ["Radio"]),
    ("tegadb-client watch --database=Router Radio chan", ["channel", "channel_width"]),
    ("tegadb-client dump Router SSID enc", ["encryption"]),
    ("tegadb-client list-columns Router Sta", ["Static_Lease"]),
    ("tegadb-client completion ", ["bash", "zsh"]),
])
def test_callback_offers_names_from_the_servers_schema(server: Peer, line: str,
                                                       expected: list[str]) -> None:
    assert complete(line, server) == expected


def test_callback_without_a_server_offers_commands_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env_line = f"tegadb-client --db=unix:{tmp_path}/none.sock list Int"
    assert complete(env_line, None) == []
    assert "list" in complete("tegadb-client l", None)


def test_bash_cuts_candidates_at_bash_word_breaks(server: Peer) -> None:
    # bash completes only what follows "=" or ":" in a word.
    assert complete("tegadb-client --database=Rou", server, "bash") == []
    assert complete("tegadb-client --colu", server, "bash") == ["--columns="]
    assert complete("tegadb-client --columns=x --database=Router list Sys", server) == ["System"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_fills_compreply(server: Peer) -> None:
    script = subprocess.run([*CLIENT, "completion", "bash"], capture_output=True, text=True,
                            env=environment(server), timeout=30).stdout
    line = "tegadb-client --database=Router set Interface lan mt"
    probe = (script + f'COMP_LINE="{line}"; COMP_POINT={len(line)}; _tegadb_client; '
             'printf "%s\\n" "${COMPREPLY[@]}"; complete -p tegadb-client\n')
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                            env=environment(server), timeout=30)
    assert result.stdout.splitlines() == ["mtu=", "complete -F _tegadb_client tegadb-client"], \
        result.stderr


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_registers_and_adds_candidates(server: Peer) -> None:
    script = subprocess.run([*CLIENT, "completion", "zsh"], capture_output=True, text=True,
                            env=environment(server), timeout=30).stdout
    # compadd stands in for zsh's own (which works only inside completion).
    probe = (script + 'compadd() { print -r -- "compadd $*" }\n'
             'LBUFFER="tegadb-client --database=Router set Interface lan mt"; _tegadb_client\n'
             'LBUFFER="tegadb-client --database=Router get Interface l"; _tegadb_client\n'
             'print -r -- "${_comps[tegadb-client]}"\n')
    result = subprocess.run(["zsh", "-c", probe], capture_output=True, text=True,
                            env=environment(server), timeout=30)
    assert result.stdout.splitlines() == [
        "compadd -S  -- mtu=", "compadd --",  # "=": no space after it
        "compadd -S  --", "compadd -- lan lo",
        "_tegadb_client"], result.stderr


def test_zsh_script_is_printed() -> None:
    result = subprocess.run([*CLIENT, "completion", "zsh"], capture_output=True, text=True,
                            env=environment(None), timeout=30)
    assert result.returncode == 0
    assert "compdef _tegadb_client tegadb-client" in result.stdout
    assert 'tegadb-client --complete zsh "$LBUFFER"' in result.stdout
    bad = subprocess.run([*CLIENT, "completion", "fish"], capture_output=True, text=True,
                         env=environment(None), timeout=30)
    assert (bad.returncode, bad.stderr) == (
        1, "tegadb-client: usage: tegadb-client completion bash|zsh\n")

"""Busy polling: the server polls instead of sleeping only while clients answer quickly."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import uvloop
from peers import TEST_SCHEMA, start_tegadb_server

from tegadb.server import main as server_command
from tegadb.server.connections import Server
from tegadb.server.service import ServerDatabases


def run(coroutine_function):
    return uvloop.run(coroutine_function())


def test_quick_input_starts_polling_and_a_quiet_window_ends_it():
    async def scenario():
        server = Server(ServerDatabases([]), busy_poll=0.02)
        server.input_arrived()          # first input: nothing recent, no polling
        assert not server.polling
        server.input_arrived()          # the client answered at once
        assert server.polling
        await asyncio.sleep(0.005)      # within the window: the loop keeps polling
        assert server.polling
        await asyncio.sleep(0.05)       # a quiet window: back to sleeping
        assert not server.polling

    run(scenario)


def test_a_client_slower_than_the_window_never_starts_polling():
    async def scenario():
        server = Server(ServerDatabases([]), busy_poll=0.005)
        for _ in range(3):
            server.input_arrived()
            assert not server.polling
            await asyncio.sleep(0.02)

    run(scenario)


def test_zero_disables_polling():
    async def scenario():
        server = Server(ServerDatabases([]), busy_poll=0.0)
        server.input_arrived()
        server.input_arrived()
        assert not server.polling

    run(scenario)


def test_window_from_the_command_line(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert server_command.busy_poll_seconds(250) == pytest.approx(250e-6)
    assert server_command.busy_poll_seconds(0) == 0.0
    # With one CPU, polling would keep the client itself from running.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert server_command.busy_poll_seconds(250) == 0.0


@pytest.mark.parametrize("text", ["-1", "abc", "nan", "inf"])
def test_bad_window_is_refused(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        server_command.parse_args([f"--busy-poll={text}"])
    assert exit_info.value.code == 2
    assert "--busy-poll" in capsys.readouterr().err


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sleeps(pid: int) -> int:
    """How often the server's main thread has slept (blocked in epoll, mostly)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="polling is off with one CPU")
@pytest.mark.parametrize(("window_us", "polls"), [(20_000, True), (0, False)])
def test_a_client_answering_within_the_window_keeps_the_server_polling(tmp_path, window_us,
                                                                       polls):
    """Input over a real connection starts the polling: the server then stays
    awake through the client's pauses, where without it it sleeps in epoll
    until each request.  Counted in the kernel's voluntary context switches,
    not CPU time, which a busy machine would not give it."""
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], [f"--busy-poll={window_us}"])
    requests = 150
    try:
        with server.client() as c:
            c.request("echo", [0])
            before = _sleeps(server.pid)
            for i in range(requests):
                time.sleep(0.004)  # well within a 20 ms window
                assert c.request("echo", [i])["result"] == [i]
            sleeps = _sleeps(server.pid) - before
        # Without polling: about once a request (149 of 150 seen: a request
        # may come while the server is awake anyway).  Polling: measured 0-15
        # on a quiet machine, 50-55 with three times more runnable processes
        # than cores (a preempted server finds its window gone, and sleeps).
        if polls:
            assert sleeps < requests * 3 // 4, f"the server slept {sleeps} times while polling"
        else:
            assert sleeps >= requests * 9 // 10, \
                f"the server slept only {sleeps} times with polling off"
    finally:
        server.stop()


def test_server_sleeps_again_after_a_burst_of_quick_requests(tegadb_peer):
    """Quick sequential requests make the real server poll; it must stop once they do."""
    server = tegadb_peer()
    with server.client() as c:
        for i in range(300):
            assert c.request("echo", [i])["result"] == [i]
        before = _cpu_seconds(server.pid)
        time.sleep(1.0)
        used = _cpu_seconds(server.pid) - before
        # Polling left on would use the whole second.
        assert used < 0.2, f"server used {used:.2f} s of CPU while idle for 1 s"
        assert c.request("echo", ["still serving"])["result"] == ["still serving"]


@pytest.mark.parametrize(("args", "window"), [([], "100 us"), (["--busy-poll=250"], "250 us"),
                                              (["--busy-poll=0"], "off")])
def test_the_server_polls_as_told(tmp_path, args, window):
    if len(os.sched_getaffinity(0)) < 2:
        window = "off"
    server = start_tegadb_server(tmp_path / "s", [TEST_SCHEMA], args)
    try:
        with server.client() as c:
            assert c.request("echo", [1])["result"] == [1]
        assert f"busy polling: {window}" in server.log_path.read_text()
    finally:
        server.stop()

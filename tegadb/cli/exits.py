"""How the commands end: exit statuses, a reader gone away, Ctrl-C.

Statuses (docs/cli.md lists them per command):

- 0: done; a transaction whose ops failed is still an answer, so 0.
- 1: an error, printed as one line ``PROGRAM: MESSAGE`` on stderr (bad
  arguments, an unreachable server, a server's error reply, output nobody
  reads any more).
- 2: ``tegadb-client appctl``: the server ran the command and it failed
  (ovs-appctl's status).
- Ctrl-C: the program ends by SIGINT itself, as ovsdb-client does, so the
  shell reports 130 and a script running it stops too.  ``monitor``,
  ``lock`` and ``wait`` given -t/--timeout end by SIGALRM when it expires
  (the shell reports 142), as ovsdb-client's do.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

EXIT_FAILURE = 1


def stdout_gone(program: str) -> int:
    """The reader of stdout has gone (`| head`): say so once and fail.

    stdout is pointed at /dev/null so that Python does not fail again
    flushing it at exit.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print(f"{program}: write to stdout failed", file=sys.stderr)
    return EXIT_FAILURE


def die_of_interrupt() -> NoReturn:
    """End as a program killed by Ctrl-C, after Python has unwound (so a
    progress bar has given the terminal its cursor back)."""
    try:
        sys.stdout.flush()
    except OSError:
        pass  # the reader may be gone too; nothing more to say
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(128 + signal.SIGINT)  # only if SIGINT could not be delivered

"""What every tegadb-server start imports: only what serving needs.

W6 (cold start) is timed from exec to the first answer, and at 20k records
the imports are about a third of it (BENCHMARKS.md): modules that only
other commands, relays or rare paths need are imported where they are
used, and must not come back into the start by way of another import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

# Each cost ~1-4 ms of every start (BENCHMARKS.md, W6, seventh session).
NOT_AT_START = ("pathlib", "dataclasses", "ctypes", "importlib.util", "tegadb.client.connection",
                "jsonrpcserver")


def test_the_server_command_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    # Without site (-S): the checkout's editable install hooks its imports
    # in with modules of its own; the packages are found by their path (and
    # not in the current directory).
    path = os.pathsep.join([str(REPO), sysconfig.get_path("purelib"),
                            sysconfig.get_path("platlib")])
    environment = {**os.environ, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-S", "-c",
         f"import sys, tegadb.server.main; print(sorted(set({NOT_AT_START!r}) & set(sys.modules)))"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, check=True)
    assert run.stdout == "[]\n"

"""`pip install .` into a fresh venv, then check the installed tegadb (issue 12).

    python tests/bench/check_install.py VENV [--python PY] [--no-compiler]

Makes VENV anew from PY, installs this checkout into it as a user would
(`pip install .`: setup.py compiles the core), from a copy of its package
files so that no earlier build in the checkout is reused (nor one made by
another interpreter), and checks what a user gets:
the core the build was expected to give (`tegadb.native.is_compiled()`), and
the three commands working together: tegadb-tool creates a database,
tegadb-server serves it on a Unix socket, tegadb-client writes a row and
reads it back, tegadb-tool checks the file.  `--no-compiler` builds with CC
pointing nowhere: the build must then warn and install the pure-Python
modules, which must work as well.

`make bench` runs it for the venv its tegadb-server comes from, and `make
check-install` (which CI runs) both ways.  It is not a pytest test: the
compile alone takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# What `pip install .` reads; the rest of a checkout (venvs, builds) is left out of the copy.
PACKAGE_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "tegadb")
SCHEMA = REPO / "tests" / "bench" / "bench.ovsschema"
FALLBACK_NOTE = "tegadb: could not compile the core to C"


class CheckFailed(Exception):
    """The install or the installed commands did not do what was expected."""


def run(argv: list[str | Path], env: dict[str, str] | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            check=False, env=env, cwd=cwd)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                          f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def install(venv: Path, python: str, env: dict[str, str]) -> str:
    """A fresh venv with the checkout pip-installed; returns pip's output."""
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", venv])
    with tempfile.TemporaryDirectory(prefix="tegadb-source-") as source:
        for name in PACKAGE_FILES:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, Path(source, name),
                                ignore=shutil.ignore_patterns("__pycache__", "_native"))
            else:
                shutil.copy(REPO / name, source)
        # --use-pep517: dependencies without a pyproject.toml (jsonrpcserver)
        # are installed from a wheel, byte-compiled, not by `setup.py install`.
        result = run([venv / "bin" / "pip", "install", "--verbose", "--use-pep517",
                      "--disable-pip-version-check", source], env=env)
    return result.stdout + result.stderr


def check_core(venv: Path, expect: str) -> None:
    result = run([venv / "bin" / "python", "-c",
                  "import tegadb.native as n, tegadb.core.database as e; "
                  "print(n.is_compiled(), e.__file__)"], cwd=tempfile.gettempdir())
    compiled, module_file = result.stdout.split()
    got = "compiled" if compiled == "True" else "interpreted"
    if got != expect:
        raise CheckFailed(f"expected the {expect} core, the install runs the {got} one "
                          f"(tegadb.core.database is {module_file})")
    print(f"core: {got} ({module_file})")


def check_commands(venv: Path) -> None:
    """tegadb-tool, tegadb-server and tegadb-client, as installed, on a temp database."""
    bin_dir = venv / "bin"
    with tempfile.TemporaryDirectory(prefix="tegadb-install-") as work:
        db, sock = Path(work, "bench.db"), Path(work, "db.sock")
        run([bin_dir / "tegadb-tool", "create", db, SCHEMA])
        remote = f"unix:{sock}"
        with open(Path(work, "server.log"), "w") as log:
            server = subprocess.Popen([bin_dir / "tegadb-server", f"--remote=p{remote}", db],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            deadline = time.monotonic() + 15
            while not sock.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed("tegadb-server did not start:\n"
                                      + Path(work, "server.log").read_text())
                time.sleep(0.02)
            client = bin_dir / "tegadb-client"
            run([client, "transact", remote, json.dumps(
                ["Bench", {"op": "insert", "table": "Item", "row": {"name": "installed"}}])])
            reply = run([client, "query", remote, json.dumps(
                ["Bench", {"op": "select", "table": "Item", "where": [["name", "==", "installed"]],
                           "columns": ["name"]}])]).stdout
            if json.loads(reply)[0]["rows"] != [{"name": "installed"}]:
                raise CheckFailed(f"the row written is not read back: {reply}")
        finally:
            server.terminate()
            server.wait(10)
        run([bin_dir / "tegadb-tool", "check", db])
    print("commands: tegadb-tool create/check, tegadb-server, tegadb-client transact/query work")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", type=lambda path: Path(path).absolute())
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter to make the venv from (default: this one)")
    parser.add_argument("--no-compiler", action="store_true",
                        help="build with no C compiler: the install must fall back")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.pop("TEGADB_PURE", None)
    started = time.perf_counter()
    try:
        if args.no_compiler:
            env["CC"] = "/nonexistent/cc"
        output = install(args.venv, args.python, env)
        if args.no_compiler:
            if FALLBACK_NOTE not in output:
                raise CheckFailed(f"the build gave no fallback warning ({FALLBACK_NOTE!r})")
            print("build: no compiler, fell back with a warning")
        check_core(args.venv, "interpreted" if args.no_compiler else "compiled")
        check_commands(args.venv)
    except CheckFailed as exc:
        print(f"check_install: {args.venv}: {exc}", file=sys.stderr)
        return 1
    print(f"check_install: {args.venv} ok in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

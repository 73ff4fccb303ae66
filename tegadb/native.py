"""The compiled core: which modules mypyc compiles, how they are built, and
when they are used.

Every request runs through these modules; compiled to C by mypyc they run
about 40% fewer instructions than under the interpreter (BENCHMARKS.md).
`build()` (which `make native` runs) compiles them into
`tegadb/_native/` beside a manifest of their sources' checksums. On import,
the package puts that folder first on its path only while every compiled
module's source is unchanged: an edited source is never shadowed by a stale
build, it runs interpreted (with a warning) until the next build.
Set TEGADB_PURE=1 to run the pure-Python modules regardless.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
NATIVE_DIR = PACKAGE_DIR / "_native"
MANIFEST = NATIVE_DIR / "SOURCES.json"

# The per-request path. The commands (server.py, the CLIs) and the client
# stay interpreted: their cost is per start, connection or command.
MODULES = ("core/errors", "core/types", "core/values", "core/schema", "core/conditions",
           "core/mutations", "core/engine", "core/monitor", "core/locks", "protocol/framer",
           "protocol/messages", "server/journal", "server/service", "server/methods",
           "server/connections")

log = logging.getLogger("tegadb")


def source_checksums() -> dict[str, str]:
    """Each compiled module's source, as size and CRC-32 (cheap at every start)."""
    checksums = {}
    for name in MODULES:
        data = (PACKAGE_DIR / f"{name}.py").read_bytes()
        checksums[name] = f"{len(data)}:{zlib.crc32(data):08x}"
    return checksums


@functools.cache
def stale_modules() -> list[str] | None:
    """The compiled modules whose source changed since the build, or None
    when there is no (readable) build.  Read once per process."""
    try:
        built = json.loads(MANIFEST.read_bytes())
    except (OSError, ValueError):
        return None
    return sorted(name for name, checksum in source_checksums().items()
                  if built.get(name) != checksum)


def use_compiled(package_path: list[str], package: str = "") -> bool:
    """Put the compiled modules of `package` (a layer's folder, or "" for
    the top) first on its `package_path` if they all match their sources.
    Returns whether they are used."""
    if os.environ.get("TEGADB_PURE"):
        return False
    stale = stale_modules()
    if stale is None:
        return False
    if stale:
        if not package:  # the top package is imported first: warn once
            log.warning("compiled core is older than %s.py: running the interpreted core; "
                        "rebuild with `make native`", ".py, ".join(stale))
        return False
    package_path.insert(0, str(NATIVE_DIR / package))
    return True


def is_compiled() -> bool:
    """Whether this process runs the compiled core."""
    from .core import engine
    return not engine.__file__.endswith(".py")


def build_if_stale() -> None:
    """Build unless the compiled core matches the sources (what `make` runs)."""
    if stale_modules() != []:
        build()


def build() -> None:
    """Compile MODULES with mypyc into NATIVE_DIR (replacing what is there)."""
    # Imported here: only a build needs mypyc and setuptools.
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    checksums = source_checksums()  # before compiling: an edit meanwhile makes the build stale
    shutil.rmtree(NATIVE_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="tegadb-native-") as work:
        with contextlib.chdir(PACKAGE_DIR.parent):  # mypyc names modules by their path from here
            extensions = mypycify([f"tegadb/{name}.py" for name in MODULES], opt_level="3",
                                  group_name="tegadb.native", target_dir=os.path.join(work, "c"))
            setup(name="tegadb-native", ext_modules=extensions,
                  script_args=["--quiet", "build_ext", "--parallel", str(os.cpu_count() or 1),
                               "--build-lib", os.path.join(work, "lib"),
                               "--build-temp", os.path.join(work, "obj")])
        compiled = Path(work, "lib", "tegadb")
        (compiled / MANIFEST.name).write_text(json.dumps(checksums, indent=1) + "\n")
        shutil.move(compiled, NATIVE_DIR)

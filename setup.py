"""Build tegadb with its compiled core, or without it where it cannot be built.

`pip install .` and `pip wheel .` compile the modules that tegadb/native.py
lists (MODULES) to C with mypyc, as black and mypy build themselves, and
install each extension module beside its source: the import system prefers
it, so the installed package runs compiled.  Where the C compiler or
Python's headers are missing (or with TEGADB_PURE=1) the build warns and
installs the pure-Python modules, which behave the same, only slower.

An editable install (`make venv`, `pip install -e`) compiles nothing: a
checkout runs its sources, with the compiled core that `make native` builds
into tegadb/_native/ (tegadb/native.py says when that is used).

The metadata is in setup.cfg.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = Path(__file__).resolve().parent
# Stands for the compiled core until `Build` generates it: a package with
# extension modules is built as a platform wheel, and build runs build_ext.
PLACEHOLDER = [Extension("tegadb.native__mypyc", sources=[])]
FALLBACK = ("installing the pure-Python modules instead: tegadb works the same but "
            "runs its requests slower (see README, Install)")


def load_native() -> ModuleType:
    """tegadb/native.py on its own: importing the package would run its
    start-up code, and the build only needs MODULES and the mypyc recipe."""
    spec = importlib.util.spec_from_file_location("tegadb_native", HERE / "tegadb" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def remove_extensions(build_lib: str, keep: list[str]) -> None:
    """Delete tegadb's extension modules under `build_lib` other than `keep`."""
    kept = {os.path.abspath(path) for path in keep}
    suffix = ".so" if os.name == "posix" else ".pyd"
    for path in Path(os.path.abspath(build_lib), "tegadb").rglob(f"*{suffix}"):
        if str(path) not in kept:
            path.unlink()


class Build(build):
    """build, with the compiled core's extensions generated as it starts.

    Generated here rather than when setup.py loads: metadata steps (egg_info,
    which pip runs first) then never run mypyc, and neither does an
    editable build, which runs build's sub-commands but not this."""

    def run(self) -> None:
        self.distribution.ext_modules = self.compiled_core()
        # The wheel is made from build_lib: extension modules an earlier
        # build left there must not outlive this build's list (one would
        # shadow its newer source).
        remove_extensions(self.build_lib, keep=self.get_finalized_command("build_ext").get_outputs())
        super().run()

    def compiled_core(self) -> list[Extension]:
        build_ext_cmd = self.distribution.get_command_obj("build_ext")
        if getattr(build_ext_cmd, "editable_mode", False) or build_ext_cmd.inplace:
            return []
        if os.environ.get("TEGADB_PURE"):
            self.warn(f"tegadb: TEGADB_PURE is set: {FALLBACK}")
            return []
        try:
            extensions: list[Extension] = load_native().mypyc_extensions(
                os.path.abspath(os.path.join(self.build_temp, "mypyc")))
        except ImportError as exc:  # built without the build requirements (--no-build-isolation)
            self.warn(f"tegadb: mypyc is missing ({exc}): {FALLBACK}")
            return []
        return extensions


class BuildExt(build_ext):
    """build_ext for the compiled core, which falls back to none when C
    cannot be compiled here."""

    def get_source_files(self) -> list[str]:
        # An sdist carries the package's .py files, which the build compiles;
        # the generated C is the build's own.
        return []

    def run(self) -> None:
        if self.extensions is PLACEHOLDER:
            self.announce("no compiled core in an editable install or a build_ext "
                          "on its own (`make native` builds the checkout's)", level=2)
            return
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            remove_extensions(self.build_lib, keep=[])
            self.extensions = []
            self.warn(f"tegadb: could not compile the core to C ({exc}); {FALLBACK}. "
                      "A C compiler and the Python headers build it (on Debian: "
                      "apt-get install gcc libc6-dev python3-dev)")


if __name__ == "__main__":  # as pip's build backend runs it; tests import the classes
    setup(ext_modules=PLACEHOLDER, cmdclass={"build": Build, "build_ext": BuildExt})

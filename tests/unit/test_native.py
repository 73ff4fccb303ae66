"""The compiled core: in a checkout it is used only while it matches its
sources; `pip install .` builds it beside the sources, or falls back."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tegadb import native

REPO = Path(native.PACKAGE_DIR).parent

needs_build = pytest.mark.skipif(not os.path.exists(native.MANIFEST),
                                 reason="no compiled core: `make native` builds it")


def test_this_run_uses_the_core_make_test_asked_for() -> None:
    """`make test` names the core each pass must run (TEGADB_EXPECT): a
    missing or stale build must fail the compiled pass, not pass it quietly."""
    expected = os.environ.get("TEGADB_EXPECT")
    if expected is None:
        pytest.skip("TEGADB_EXPECT is set by `make test`")
    assert expected in ("compiled", "interpreted")
    assert native.is_compiled() == (expected == "compiled")


def database_module(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import tegadb.core.database from the package copy under `root` in a new process."""
    environment = {k: v for k, v in os.environ.items() if k != "TEGADB_PURE"}
    environment.update(env, PYTHONPATH=str(root))
    return subprocess.run(
        [sys.executable, "-c", "import tegadb.core.database as e, tegadb.native as n; "
                               "print(e.__file__, n.is_compiled())"],
        cwd=root, env=environment, capture_output=True, text=True, check=True)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(native.PACKAGE_DIR, tmp_path / "tegadb",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@needs_build
def test_a_current_build_is_used(package_copy: Path) -> None:
    run = database_module(package_copy)
    path, compiled = run.stdout.split()
    assert Path(path).parent == package_copy / "tegadb" / "_native" / "core"
    assert path.endswith(".so") and compiled == "True"
    assert run.stderr == ""


@needs_build
def test_an_edited_source_runs_interpreted_with_a_warning(package_copy: Path) -> None:
    with open(package_copy / "tegadb" / "core" / "mutations.py", "a") as source:
        source.write("# edited after the build\n")
    run = database_module(package_copy)
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]
    assert "compiled core is older than core/mutations.py" in run.stderr


@needs_build
def test_tegadb_pure_runs_interpreted(package_copy: Path) -> None:
    run = database_module(package_copy, TEGADB_PURE="1")
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]
    assert run.stderr == ""


@needs_build
def test_a_damaged_manifest_runs_interpreted(package_copy: Path) -> None:
    (package_copy / "tegadb" / "_native" / "SOURCES.json").write_text("{")
    run = database_module(package_copy)
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]


@needs_build
def test_an_installed_layout_runs_compiled(package_copy: Path) -> None:
    """As `pip install .` lays it out: each compiled module beside its source
    and no `_native` folder; the import system prefers the extension."""
    package = package_copy / "tegadb"
    for built in (package / "_native").rglob("*.so"):
        built.rename(package / built.relative_to(package / "_native"))
    shutil.rmtree(package / "_native")
    run = database_module(package_copy)
    path, compiled = run.stdout.split()
    assert Path(path).parent == package / "core"
    assert path.endswith(".so") and compiled == "True"
    assert run.stderr == ""


def test_start_up_without_a_build_imports_no_build_machinery(package_copy: Path) -> None:
    """Every server start imports the package: where there is no `_native`
    build (an installed package) that must cost one failed open, not the
    modules that reading or making a build needs."""
    shutil.rmtree(package_copy / "tegadb" / "_native", ignore_errors=True)
    environment = {k: v for k, v in os.environ.items() if k != "TEGADB_PURE"}
    run = subprocess.run(
        [sys.executable, "-c", "import sys, tegadb, tegadb.native as n; "
                               "print(n.stale_modules(), sorted({'json', 'zlib', 'shutil', "
                               "'tempfile', 'mypyc', 'setuptools'} & set(sys.modules)))"],
        cwd=package_copy, env={**environment, "PYTHONPATH": str(package_copy)},
        capture_output=True, text=True, check=True)
    assert run.stdout.split(maxsplit=1) == ["None", "[]\n"]


# --- setup.py: the compiled core in `pip install .` ------------------------------

def load_setup_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tegadb_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the commands; setup() runs only as __main__
    return module


@pytest.fixture
def setup_script() -> ModuleType:
    return load_setup_script()


def distribution(setup_script: ModuleType, ext_modules: list[Any]) -> Any:
    from setuptools.dist import Distribution

    return Distribution({"name": "tegadb", "ext_modules": ext_modules,
                         "cmdclass": {"build": setup_script.Build,
                                      "build_ext": setup_script.BuildExt}})


def test_an_editable_install_compiles_nothing(setup_script: ModuleType) -> None:
    """`pip install -e` (make venv) must not build into the checkout."""
    dist = distribution(setup_script, setup_script.PLACEHOLDER)
    dist.get_command_obj("build_ext").editable_mode = True
    build = dist.get_command_obj("build")
    build.ensure_finalized()
    assert build.compiled_core() == []


def test_tegadb_pure_builds_no_compiled_core(setup_script: ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEGADB_PURE", "1")
    build = distribution(setup_script, setup_script.PLACEHOLDER).get_command_obj("build")
    build.ensure_finalized()
    assert build.compiled_core() == []


def test_without_a_compiler_the_build_falls_back(setup_script: ModuleType, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that cannot compile C installs no extension module, not even
    one an earlier build left, and does not fail."""
    from setuptools import Extension

    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    source = tmp_path / "core.c"
    source.write_text("int x;\n")
    stale = tmp_path / "lib" / "tegadb" / f"old{sysconfig.get_config_var('EXT_SUFFIX')}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    command = distribution(setup_script, [Extension("tegadb.core", [str(source)])]
                           ).get_command_obj("build_ext")
    command.build_lib, command.build_temp = str(tmp_path / "lib"), str(tmp_path / "temp")
    command.ensure_finalized()
    command.run()
    assert command.extensions == []
    assert list((tmp_path / "lib").rglob("*.so")) == []


def test_a_build_keeps_only_its_own_extension_modules(setup_script: ModuleType,
                                                      tmp_path: Path) -> None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    current, gone = (tmp_path / "tegadb" / "core" / f"{name}{suffix}" for name in ("engine", "old"))
    current.parent.mkdir(parents=True)
    current.write_bytes(b"")
    gone.write_bytes(b"")
    setup_script.remove_extensions(str(tmp_path), keep=[str(current)])
    assert list(tmp_path.rglob(f"*{suffix}")) == [current]

"""The compiled core is used only while it matches its sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tegadb import native

needs_build = pytest.mark.skipif(not native.MANIFEST.exists(),
                                 reason="no compiled core: `make native` builds it")


def test_this_run_uses_the_core_make_test_asked_for() -> None:
    """`make test` names the core each pass must run (TEGADB_EXPECT): a
    missing or stale build must fail the compiled pass, not pass it quietly."""
    expected = os.environ.get("TEGADB_EXPECT")
    if expected is None:
        pytest.skip("TEGADB_EXPECT is set by `make test`")
    assert expected in ("compiled", "interpreted")
    assert native.is_compiled() == (expected == "compiled")


def engine_module(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
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
    run = engine_module(package_copy)
    path, compiled = run.stdout.split()
    assert Path(path).parent == package_copy / "tegadb" / "_native" / "core"
    assert path.endswith(".so") and compiled == "True"
    assert run.stderr == ""


@needs_build
def test_an_edited_source_runs_interpreted_with_a_warning(package_copy: Path) -> None:
    with open(package_copy / "tegadb" / "core" / "mutations.py", "a") as source:
        source.write("# edited after the build\n")
    run = engine_module(package_copy)
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]
    assert "compiled core is older than core/mutations.py" in run.stderr


@needs_build
def test_tegadb_pure_runs_interpreted(package_copy: Path) -> None:
    run = engine_module(package_copy, TEGADB_PURE="1")
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]
    assert run.stderr == ""


@needs_build
def test_a_damaged_manifest_runs_interpreted(package_copy: Path) -> None:
    (package_copy / "tegadb" / "_native" / "SOURCES.json").write_text("{")
    run = engine_module(package_copy)
    assert run.stdout.split() == [str(package_copy / "tegadb" / "core" / "database.py"), "False"]

"""Unit tests for the tegadb-server command's start-up (tegadb/server/main.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tegadb.server import main


def test_reading_the_options_imports_no_shutil() -> None:
    # argparse's own help formatter imports shutil (and bz2, lzma) for the
    # terminal width at every add_argument: ~1 ms of each start.
    code = ("import sys; from tegadb.server import main; main.parse_args(['x.db']); "
            "print(sorted({'shutil', 'bz2', 'lzma'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("columns,widest", [("50", 50), ("200", 200)])
def test_help_is_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], columns: str,
                                         widest: int) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        main.parse_args(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= widest
    assert max(map(len, lines)) > widest - 30  # lines fill the width, not a default 80

"""The unit tests' fixtures.

`served` is the test database served over each storage, as tinydb runs its
tests over each of its storages: every test that takes it runs once over
the file journal and once over the in-memory storage (see harness.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Served, on_file, on_memory


@pytest.fixture(params=["file", "memory"])
def served(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The test database served from a journal file, then from memory."""
    served = on_file(tmp_path, monkeypatch) if request.param == "file" else on_memory()
    yield served
    served.close()

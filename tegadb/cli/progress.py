"""Progress bars for long commands: on a terminal only, never in scripts.

A bar is drawn on stderr (stdout may be the data, as with ``backup``) when
stderr is a terminal and ``--quiet`` was not given; otherwise every call is a
no-op, so scripts and logs see nothing.  rich draws it (and puts the cursor
back if the command is interrupted).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class Bar(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def next_phase(self, description: str, total: float | None = None) -> None: ...


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def next_phase(self, description: str, total: float | None = None) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def next_phase(self, description: str, total: float | None = None) -> None:
        """Replace the bar by a new one (rich cannot make a bar's total unknown again)."""
        self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)


def shown(quiet: bool) -> bool:
    """Whether a bar would be drawn: stderr is a terminal and not ``--quiet``."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def bar(description: str, total: float | None, quiet: bool = False) -> Iterator[Bar]:
    """A progress bar for ``total`` units (None: unknown, a spinner), removed at the end."""
    if not shown(quiet):
        yield _Silent()
        return
    # Imported only for a terminal: rich costs start-up time.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(file=sys.stderr), transient=True)
    with progress:
        yield _RichBar(progress, progress.add_task(description, total=total))

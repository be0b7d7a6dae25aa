"""Progress bars, all from one library (rich): ``track`` over an iterable, ``counter`` for
a bar advanced by hand. Bars draw on stderr; piped output (CI, nohup) gets a wide line
instead of rich's 80 columns."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")


def console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 180)


def bar(enabled: bool = True, transient: bool = False, *status_columns) -> Progress:
    """A rich Progress with description, bar, n/total and times (plus ``status_columns``)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), *status_columns,
                    console=console(), disable=not enabled, transient=transient)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
          transient: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a bar (none when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    with bar(enabled, transient) as progress:
        yield from progress.track(items, total=total, description=description)


class counter:
    """A bar advanced by ``update(n)``; ``close()`` (or the ``with`` block) ends it."""

    def __init__(self, total: int, description: str, initial: int = 0, enabled: bool = True):
        self.progress = bar(enabled)
        self.progress.start()
        self.task: TaskID = self.progress.add_task(description, total=total, completed=initial)

    def update(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()

    def __enter__(self) -> "counter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

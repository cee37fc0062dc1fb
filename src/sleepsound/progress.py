"""Progress bars and closing summaries: one look for every long-running command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def progress_bar(
    description: str, total: float | None, enabled: bool = True, unit: str = ""
) -> Iterator[Callable[[float], None]]:
    """``with progress_bar("train", total=n) as advance: advance(k)``; a no-op when disabled."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def say(message: str) -> None:
    """A status line on stderr (stdout stays for tables and machine-readable output)."""
    console.print(message, highlight=False)

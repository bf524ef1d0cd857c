"""Progress display shared by long-running stages (rich when interactive, quiet in pipes)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Under DDP (torchrun, SLURM, Lightning's launcher) only the first process reports progress.
IS_MAIN_PROCESS = all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
console = Console(stderr=True, soft_wrap=True, highlight=False, quiet=not IS_MAIN_PROCESS)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; draws a bar on terminals, a start/end line otherwise."""
    if not sys.stderr.isatty():
        console.print(f"{description}: {total} items")
        yield lambda: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)

"""Progress display shared by long-running stages (rich when interactive, quiet in pipes)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Under DDP (torchrun, SLURM, Lightning's launcher) only the first process reports progress.
IS_MAIN_PROCESS = all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
#: The console output a run folder keeps (``run_log``).
LOG_FILE = "log.txt"
_logs: list[TextIO] = []


def log_line(text: str) -> None:
    """Append a line to the logs of the runs now open (``run_log``), not to the screen."""
    for log in _logs:
        log.write(text + "\n")
        log.flush()


class _LoggingConsole(Console):
    """A console whose printed lines also go to the open run logs, as plain text."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*objects, **kwargs)
        if _logs and IS_MAIN_PROCESS:
            log_line(" ".join(str(o) for o in objects))


console = _LoggingConsole(stderr=True, soft_wrap=True, highlight=False, quiet=not IS_MAIN_PROCESS)


@contextmanager
def run_log(folder: Path) -> Iterator[None]:
    """Keep ``folder/log.txt``: every line lesionssl prints while the run is open, and its epoch
    lines even where a terminal shows a progress bar instead (appended across resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / LOG_FILE
    with open(target, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} lesionssl {' '.join(sys.argv[1:])}\n")
        _logs.append(log)
        try:
            yield
        except BaseException:
            # a run refused before it made anything leaves nothing half-made behind, not even its log
            if not any(f.is_file() and f != target for f in folder.rglob("*")):
                target.unlink(missing_ok=True)
            raise
        finally:
            _logs.remove(log)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; draws a bar on terminals, a start/end line otherwise."""
    if not sys.stderr.isatty():
        console.print(f"{description}: {total} items")
        yield lambda: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)

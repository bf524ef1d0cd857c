"""Stopping on purpose: SIGTERM (a cluster's preemption notice, ``kill``) or Ctrl-C ends a long
command at once. Checkpoints and finished results are written atomically, so what was saved stays
whole; the CLI then prints the command that resumes."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence


class Stopped(BaseException):
    """Raised in the main thread when SIGTERM or SIGINT arrives.

    A ``BaseException`` so that ``except Exception`` blocks on the way up do not swallow it, and
    not a ``KeyboardInterrupt``, which Lightning turns into ``sys.exit(1)`` inside ``fit``.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """Route SIGTERM and SIGINT to :class:`Stopped` (called by the CLI, never on import)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stopped)


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues ``argv`` (``pretrain`` needs ``--resume``; ``compare``
    skips finished runs by itself; ``finetune`` starts its run again with the same seed)."""
    args = list(argv)
    if args[:1] == ["pretrain"] and "--resume" not in args:
        args.append("--resume")
    return "lesionssl " + shlex.join(args)

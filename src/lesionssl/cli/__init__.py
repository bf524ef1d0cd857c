"""The ``lesionssl`` command: split -> pretrain -> select -> finetune -> compare -> report, ``demo``, and the
commands that put a model to use.

One contract for flags and YAML (:mod:`.contract`): every command takes ``--config FILE``, a YAML
mapping whose keys are its option names (underscores for dashes); flags override the file. Every
key of a command's configuration is also a flag, nested sections through dotted flags
(``--runtime.devices 4``, ``--finetune.epochs 3``), as LightningCLI and Hydra users expect;
``--print-config`` writes the resolved YAML and exits; a misspelt key or flag gets "did you mean".
The commands themselves are in :mod:`.commands`.
"""

from __future__ import annotations

from lesionssl.cli.commands import app, cli, main
from lesionssl.cli.contract import COMMAND_CONFIGS, _check_key, _generic_flags, choices_of, one_of
from lesionssl.errors import LesionSSLError

__all__ = [
    "COMMAND_CONFIGS",
    "LesionSSLError",
    "_check_key",
    "_generic_flags",
    "app",
    "choices_of",
    "cli",
    "main",
    "one_of",
]

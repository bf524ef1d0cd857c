"""lesionssl: self-supervised pretraining and honest limited-label transfer for lesion images.

The stages are functions returning typed results (:mod:`lesionssl.api`)::

    from lesionssl import split, pretrain, select, finetune, compare

Importing lesionssl changes no global state (no matplotlib backend, logging level or warnings
filter) and imports neither torch nor Lightning until a stage runs.
"""

from typing import Any

from lesionssl.errors import LesionSSLError

__version__ = "0.1.0"
__all__ = ["LesionSSLError", "__version__", "compare", "finetune", "pretrain", "select", "split"]
_API = ("split", "pretrain", "select", "finetune", "compare")


def __getattr__(name: str) -> Any:
    if name in _API:
        from lesionssl import api

        return getattr(api, name)
    raise AttributeError(f"module 'lesionssl' has no attribute {name!r}")

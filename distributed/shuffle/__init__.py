"""Peer-to-peer (p2p) shuffles and rechunks: not available here.

dask imports ``distributed.shuffle`` and its private modules
(``distributed.shuffle._core``, ``._shuffle``, ``._merge``, ``._arrow`` ...)
only when a computation asks for the p2p method: ``df.shuffle(...,
shuffle_method="p2p")``, ``x.rechunk(..., method="p2p")``, or
``dask.config.set({"dataframe.shuffle.method": "p2p"})`` before a merge,
``set_index`` or shuffle.  This implementation has no p2p extension, so every
such import, of one of the names dask uses from this package or of any
module below it, raises
``P2PUnavailableError`` with one message that says so and how to use the
task-based method instead.  Task-based shuffles and rechunks are what dask
uses with our client by default (``dask_graphs.use_task_based_shuffles``).

``P2PUnavailableError`` is a ``ModuleNotFoundError``, so code that probes for
the p2p modules and falls back when they are missing (dask does, e.g. for
``P2PBarrierTask``) keeps working, and a ``NotImplementedError``.

>>> from distributed.shuffle import rechunk_p2p
Traceback (most recent call last):
...
distributed.shuffle.P2PUnavailableError: peer-to-peer (p2p) shuffling and rechunking are not available ...
"""
from __future__ import annotations

import importlib.abc
import sys
from typing import Any

__all__ = ["P2PUnavailableError", "MESSAGE"]

#: What the user reads, whichever p2p name dask asked for.
MESSAGE = (
    "peer-to-peer (p2p) shuffling and rechunking are not available in this implementation of "
    "distributed; use the task-based method instead: shuffle_method='tasks' for dataframes, "
    "rechunk(..., method='tasks') for arrays, or for everything at once "
    "dask.config.set({'dataframe.shuffle.method': 'tasks', 'array.rechunk.method': 'tasks'})"
)


class P2PUnavailableError(ModuleNotFoundError, NotImplementedError):
    """A p2p shuffle or rechunk was asked for; this implementation has none."""


#: The names dask (this and earlier releases) imports from this package.
_P2P_NAMES = frozenset({
    "rechunk_p2p", "rearrange_by_column_p2p", "hash_join_p2p", "P2PShuffleLayer", "HashJoinP2PLayer",
    "ShuffleSchedulerExtension", "ShuffleWorkerExtension", "ShuffleSchedulerPlugin", "ShuffleWorkerPlugin",
})


def __getattr__(name: str) -> Any:
    # Only dask's names get the error: tools probe modules for other names
    # (pytest's setup_module, pickle's dunders) and expect AttributeError.
    if name in _P2P_NAMES:
        raise P2PUnavailableError(MESSAGE, name=f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _P2PModuleFinder(importlib.abc.MetaPathFinder):
    """Answers every import of a module below this package with the error
    (asked only after the ordinary finders found no such file)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.startswith(__name__ + "."):
            raise P2PUnavailableError(MESSAGE, name=fullname)
        return None


if not any(isinstance(f, _P2PModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_P2PModuleFinder())

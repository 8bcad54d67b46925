"""Task metadata: a nested dictionary in the scheduler that clients and tasks
write and read by key path (``Client.set_metadata`` / ``get_metadata``).

``set_metadata("x", 1)`` stores ``{"x": 1}``; ``set_metadata(["a", "b"],
2)`` stores ``{"a": {"b": 2}}``, creating the levels on the way.
``get_metadata(["a", "b"])`` walks the same path; a missing path raises
``KeyError`` unless a default is given.  Values are msgpack data (dicts,
lists, strings, numbers, bytes, None, booleans): they are stored as they
arrive, so a later path can walk into a dict stored earlier.  Lists come
back as tuples.

An entry whose top-level key is a task key is dropped when that task is
forgotten, as upstream: the extension watches the scheduler's transitions
only while it holds any entry, so an unused extension costs the scheduler
nothing per task.

Runs on the scheduler's loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["MetadataExtension"]

logger = logging.getLogger(__name__)


class MetadataExtension:
    """The scheduler's side of ``Client.set_metadata`` / ``get_metadata``.

    >>> scheduler.extensions["metadata"].task_metadata    # doctest: +SKIP
    {'a': {'b': 2}}
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.task_metadata: dict = {}
        self._watching = False
        scheduler.handlers.update({
            "set_metadata": self.set_metadata,
            "get_metadata": self.get_metadata,
        })

    def __repr__(self) -> str:
        return f"<MetadataExtension: {len(self.task_metadata)} top-level keys>"

    def set_metadata(self, comm=None, keys=(), value=None, **kwargs) -> str:
        """Store ``value`` at the path ``keys`` (a non-empty sequence)."""
        keys = _path(keys)
        level = self.task_metadata
        for i, key in enumerate(keys[:-1]):
            below = level.get(key)
            if below is None:
                below = level[key] = {}
            elif not isinstance(below, dict):
                raise TypeError(f"set_metadata: {list(keys[:i + 1])!r} holds a {type(below).__name__}, "
                                f"not a dict, so {list(keys)!r} cannot be set below it")
            level = below
        level[keys[-1]] = value
        self._watch()
        return "OK"

    def get_metadata(self, comm=None, keys=(), **kwargs) -> dict:
        """``{"found": True, "value": ...}`` or ``{"found": False}``."""
        keys = _path(keys)
        value: Any = self.task_metadata
        for key in keys:
            if not isinstance(value, dict):
                return {"found": False}
            try:
                value = value[key]
            except (KeyError, TypeError):
                return {"found": False}
        return {"found": True, "value": value}

    # -- dropping the metadata of forgotten tasks -------------------------

    def transition(self, key: Any, start: str, finish: str, *args, **kwargs) -> None:
        if finish == "forgotten" and key in self.task_metadata:
            del self.task_metadata[key]
            if not self.task_metadata:
                # Not now: the scheduler is iterating over its plugins.
                try:
                    asyncio.get_running_loop().call_soon(self._unwatch_if_empty)
                except RuntimeError:  # no loop (a state machine driven by hand)
                    pass

    def _unwatch_if_empty(self) -> None:
        if not self.task_metadata:
            self._unwatch()

    def _watch(self) -> None:
        plugins = getattr(self.scheduler.state, "plugins", None)
        if not self._watching and isinstance(plugins, list):
            plugins.append(self)
            self._watching = True

    def _unwatch(self) -> None:
        plugins = getattr(self.scheduler.state, "plugins", None)
        if self._watching and isinstance(plugins, list) and self in plugins:
            plugins.remove(self)
        self._watching = False

    def close(self) -> None:
        self._unwatch()


def _path(keys: Any) -> tuple:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        keys = (keys,)
    if not keys:
        raise ValueError("set_metadata/get_metadata need a key or a non-empty list of keys")
    return tuple(keys)

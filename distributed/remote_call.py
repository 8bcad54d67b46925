"""Run a user's function inside a server's process (``client.run``,
``client.run_on_scheduler``).

Shared by the worker and the scheduler, which otherwise never import each
other.  Runs on the server's event loop: the function is called there, and
a coroutine it returns is awaited there.
"""
from __future__ import annotations

import inspect
from typing import Any

from distributed.exceptions import error_message
from distributed.protocol import Serialize
from distributed.protocol.serialize import pickle_loads

__all__ = ["run_user_function", "has_parameter"]


async def run_user_function(server: Any, param: str, function, args, kwargs, wait: bool) -> dict:
    """Call ``function(*args, **kwargs)`` in this process and reply with its
    result; the server itself is passed as keyword ``param`` (``dask_worker``
    or ``dask_scheduler``) when the function asks for it.

    >>> import asyncio
    >>> reply = asyncio.run(run_user_function(None, "dask_worker", len, ([1, 2],), {}, True))
    >>> reply["status"], reply["result"].data
    ('OK', 2)
    """
    try:
        if isinstance(function, (bytes, bytearray, memoryview)):
            function = pickle_loads(function)
        if isinstance(args, (bytes, bytearray, memoryview)):
            args = pickle_loads(args)
        if isinstance(kwargs, (bytes, bytearray, memoryview)):
            kwargs = pickle_loads(kwargs)
        kwargs = dict(kwargs)
        if has_parameter(function, param):
            kwargs[param] = server
        result = function(*args, **kwargs)
        if inspect.isawaitable(result):
            if wait:
                result = await result
            else:
                server.spawn(result)
                result = None
        return {"status": "OK", "result": Serialize(result)}
    except Exception as e:
        return error_message(e)


def has_parameter(func, name: str) -> bool:
    """Whether ``func`` takes a parameter called ``name``.

    >>> has_parameter(lambda dask_worker: None, "dask_worker")
    True
    """
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False

"""Client methods that act on the cluster rather than on data: restart,
run a function on workers or the scheduler, upload files, retire workers,
and the concurrent.futures executor.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from distributed import config
from distributed.exceptions import clean_exception
from distributed.protocol import Serialize

__all__ = ["ClusterControl"]

logger = logging.getLogger(__name__)

_NO_DEFAULT = object()  # get_metadata without a default raises KeyError


class ClusterControl:
    """The cluster control methods of ``Client`` (``self`` is a Client)."""

    def restart(self, timeout=None, wait_for_workers: bool = True, asynchronous=None):
        """Restart the cluster: every future is cancelled (``CancelledError``),
        workers with a nanny get a fresh process, the others drop their data.

        >>> client.restart()          # doctest: +SKIP
        <Client: ...>
        """
        return self.sync(self._restart, timeout=timeout, wait_for_workers=wait_for_workers,
                         asynchronous=asynchronous)

    async def _restart(self, timeout=None, wait_for_workers: bool = True, **kwargs):
        timeout = config.parse_timedelta(timeout) if timeout is not None else 4 * self.timeout
        # On the stream, after everything sent before: all of it is forgotten.
        answer = asyncio.get_running_loop().create_future()
        self._restart_waiters.append(answer)
        self._send_now({"op": "restart-request", "timeout": timeout, "wait_for_workers": wait_for_workers})
        self._on_restart()
        msg = await asyncio.wait_for(answer, timeout + 10)
        if msg.get("status") != "OK":
            raise TimeoutError(f"restart failed: {msg.get('message')}")
        return self

    def run(self, function: Callable, *args, workers=None, wait: bool = True, nanny: bool = False,
            on_error: str = "raise", **kwargs):
        """Run ``function`` on every worker (not as a task); a dict worker ->
        result.  A ``dask_worker`` parameter receives the Worker.

        >>> client.run(os.getpid)     # doctest: +SKIP
        {'tcp://127.0.0.1:4231': 1234, ...}
        """
        return self.sync(self._run, function, *args, workers=workers, wait=wait,
                         on_error=on_error, **kwargs)

    async def _run(self, function, *args, workers=None, wait: bool = True, nanny: bool = False,
                   on_error: str = "raise", **kwargs) -> dict:
        if on_error not in ("raise", "return", "ignore"):
            raise ValueError(f"on_error must be 'raise', 'return' or 'ignore', not {on_error!r}")
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        responses = await self.scheduler.broadcast(
            msg={"op": "run", "function": Serialize(function), "args": Serialize(args),
                 "kwargs": Serialize(kwargs), "wait": wait},
            workers=list(workers) if workers is not None else None)
        results = {}
        for addr, resp in responses.items():
            if isinstance(resp, dict) and resp.get("status") == "OK":
                results[addr] = resp.get("result")
            elif isinstance(resp, dict) and resp.get("status") == "error":
                _, exc, tb = clean_exception(**resp)
                if on_error == "raise":
                    raise exc.with_traceback(tb)
                if on_error == "return":
                    results[addr] = exc
            else:
                results[addr] = resp
        return results if wait else None

    async def _run_coroutine(self, function, *args, workers=None, wait: bool = True, **kwargs):
        return await self._run(function, *args, workers=workers, wait=wait, **kwargs)

    def run_coroutine(self, function, *args, workers=None, wait: bool = True, **kwargs):
        """Like ``run`` for a coroutine function (run on each worker's loop)."""
        return self.run(function, *args, workers=workers, wait=wait, **kwargs)

    def run_on_scheduler(self, function: Callable, *args, **kwargs):
        """Run ``function`` in the scheduler process; a ``dask_scheduler``
        parameter receives the Scheduler."""
        return self.sync(self._run_on_scheduler, function, *args, **kwargs)

    async def _run_on_scheduler(self, function, *args, wait: bool = True, **kwargs):
        response = await self.scheduler.run_function(
            function=Serialize(function), args=Serialize(args), kwargs=Serialize(kwargs), wait=wait)
        if response.get("status") == "error":
            _, exc, tb = clean_exception(**response)
            raise exc.with_traceback(tb)
        return response.get("result")

    def upload_file(self, filename: str, load: bool = True, **kwargs):
        """Send a local .py/.egg/.zip file to every worker and import it there."""
        return self.sync(self._upload_file, filename, load=load)

    async def _upload_file(self, filename: str, raise_on_error: bool = True, load: bool = True):
        from distributed.diagnostics.plugin import UploadFile

        # A worker plugin, so that workers which join later get the file too
        # (plugins.py); {worker: {"status": "OK"}} as in dask.distributed.
        plugin = UploadFile(filename, load=load)
        try:
            return await self._register_worker_plugin(plugin)
        except Exception as e:
            # A file that fails to load is not handed to workers that join later.
            try:
                await self._unregister_worker_plugin(plugin.name)
            except Exception as e2:
                logger.debug("withdrawing %s failed too: %r", plugin.name, e2)
            if raise_on_error:
                raise
            logger.warning("upload_file %s failed on some workers: %r", filename, e)
            return {}

    def retire_workers(self, workers=None, close_workers: bool = True, asynchronous=None, **kwargs):
        """Move the data of ``workers`` elsewhere and close them."""
        return self.sync(self._retire_workers, workers, close_workers=close_workers,
                         asynchronous=asynchronous)

    async def _retire_workers(self, workers=None, close_workers: bool = True):
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        return await self.scheduler.retire_workers(
            workers=list(workers) if workers is not None else None, close_workers=close_workers)

    # -- task metadata (distributed.coordination.metadata) ----------------

    def set_metadata(self, key, value, asynchronous=None):
        """Store ``value`` (msgpack data) in the scheduler under ``key``; a
        list of keys is a path into nested dicts, made on the way.

        >>> client.set_metadata(["a", "b"], 1)    # doctest: +SKIP
        >>> client.get_metadata("a")              # doctest: +SKIP
        {'b': 1}
        """
        import msgpack

        try:
            msgpack.packb(value)
        except Exception as e:
            raise TypeError(f"set_metadata: the value must be msgpack data (dicts, lists, strings, numbers, "
                            f"bytes, None), not {type(value).__name__}: {e}") from None
        keys = list(key) if isinstance(key, list) else [key]
        return self.sync(self._set_metadata, keys, value, asynchronous=asynchronous)

    async def _set_metadata(self, keys: list, value) -> None:
        await self.scheduler.set_metadata(keys=keys, value=value)

    def get_metadata(self, keys, default=_NO_DEFAULT, asynchronous=None):
        """The value stored under ``keys`` (a key or a list: a path);
        ``KeyError`` if there is none and no ``default`` was given."""
        keys = list(keys) if isinstance(keys, list) else [keys]
        return self.sync(self._get_metadata, keys, default, asynchronous=asynchronous)

    async def _get_metadata(self, keys: list, default=_NO_DEFAULT):
        reply = await self.scheduler.get_metadata(keys=keys)
        if reply.get("found"):
            return reply.get("value")
        if default is _NO_DEFAULT:
            raise KeyError(keys[0] if len(keys) == 1 else keys)
        return default

    def get_executor(self, **kwargs):
        """A ``concurrent.futures.Executor`` that submits to this client.

        >>> ex = client.get_executor()             # doctest: +SKIP
        >>> list(ex.map(inc, range(3)))            # doctest: +SKIP
        [1, 2, 3]
        """
        from distributed.executor import ClientExecutor

        return ClientExecutor(self, **kwargs)

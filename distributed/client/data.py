"""Client methods that move data: gather, scatter, cancel and retry,
replicate and rebalance, published datasets.

Values fetched from workers or the scheduler are deserialized inside
``context.receiving_for(client)``, so Futures inside them belong to this
client.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import ItemsView, Iterator, KeysView, ValuesView

from distributed import context
from distributed.client.queues import QueueFeeder, is_queue
from distributed.comm import CommClosedError
from distributed.comm.tcp import configured_max_message_size
from distributed.futures import Future, futures_of
from distributed.protocol import MessageTooLargeError, Serialize
from distributed.protocol.serialize import to_serialized
from distributed.structure import substitute_results
from distributed.utils import tokenize

__all__ = ["DataMovement"]

logger = logging.getLogger(__name__)


class DataMovement:
    """The data movement methods of ``Client`` (``self`` is a Client)."""

    # ------------------------------------------------------------------
    # Getting results
    # ------------------------------------------------------------------

    def gather(self, futures, errors: str = "raise", direct=None, asynchronous=None):
        """Values of the futures, in the same structure (list, dict, nested).

        >>> client.gather([f1, {"b": f2}])    # doctest: +SKIP
        [1, {'b': 2}]
        """
        if isinstance(futures, Iterator) and not isinstance(futures, (list, tuple, dict, set)):
            return (self.gather(f, errors=errors, direct=direct) for f in futures)
        return self.sync(self._gather, futures, errors=errors, direct=direct, asynchronous=asynchronous)

    async def _gather_one(self, future: Future):
        return await self._gather(future)

    async def _gather(self, futures, errors: str = "raise", direct=None, local_worker=None):
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        found = futures_of(futures)
        for f in found:
            if f.client is not self:
                raise ValueError(f"{f!r} belongs to another client; gather it with that client")
        states = {f.key: f._state for f in found}
        data: dict = {}
        bad: set = set()
        deadline_tries = 0
        while True:
            for key, st in states.items():
                if key in data or key in bad:
                    continue
                await st.wait()
                if st.failed:
                    if errors == "raise":
                        raise st.exception.with_traceback(st.traceback)
                    bad.add(key)
                elif st.status == "cancelled":
                    if errors == "raise":
                        raise st.cancelled_error()
                    bad.add(key)
            wanted = [k for k in states if k not in data and k not in bad]
            if not wanted:
                break
            fetched, failed = await self._fetch(wanted, {k: states[k].workers for k in wanted})
            data.update(fetched)
            if failed:
                deadline_tries += 1
                for key, worker in failed.items():
                    if worker is not None:
                        self._send_to_scheduler(
                            {"op": "report-missing-data", "key": key, "errant_worker": worker})
                    st = states[key]
                    if st.status == "finished":
                        st.workers = ()
                await asyncio.sleep(min(0.01 * deadline_tries, 0.2))
        return substitute_results(futures, data, bad)

    async def _fetch(self, keys: list, known: dict) -> tuple[dict, dict]:
        """Fetch keys from workers; returns (data, {key: failed worker})."""
        unknown = [k for k in keys if not known.get(k)]
        who_has = {k: list(known[k]) for k in keys if known.get(k)}
        if unknown:
            who_has.update(await self.scheduler.who_has(keys=unknown))
        by_worker: dict[str, list] = {}
        failed: dict = {}
        for k in keys:
            holders = who_has.get(k) or ()
            if not holders:
                failed[k] = None
                continue
            by_worker.setdefault(sorted(holders)[0], []).append(k)
        pool = self.connection_pool

        async def from_worker(worker, ks):
            try:
                return worker, ks, await pool(worker).get_data(keys=ks, who=self.id)
            except MessageTooLargeError:
                if len(ks) == 1:
                    raise
                # Too large together, not necessarily one by one.
                got: dict = {}
                for k in ks:
                    _, _, response = await from_worker(worker, [k])
                    if isinstance(response, BaseException):
                        return worker, ks, response
                    got.update(response.get("data", {}))
                return worker, ks, {"status": "OK", "data": got}
            except (OSError, CommClosedError) as e:
                return worker, ks, e

        data: dict = {}
        with context.receiving_for(self):  # Futures inside the values are ours
            results = await asyncio.gather(*(from_worker(w, ks) for w, ks in by_worker.items()))
        for worker, ks, response in results:
            if isinstance(response, BaseException):
                logger.info("could not fetch from %s: %s", worker, response)
                pool.remove(worker)
                for k in ks:
                    failed[k] = worker
                continue
            got = response.get("data", {})
            data.update(got)
            for k in ks:
                if k not in got:
                    failed[k] = worker
        return data, failed

    # ------------------------------------------------------------------
    # Scatter
    # ------------------------------------------------------------------

    def scatter(self, data, workers=None, broadcast: bool = False, direct=None, hash: bool = True,
                timeout=None, asynchronous=None, maxsize: int = 0):
        """Send local data to workers; Futures of the same shape come back.

        A list, tuple, set or frozenset gives the same type of Futures, a
        dict gives a dict with the same keys (the keys are the data's keys),
        any other iterable (a generator, ``range``, a dict's ``keys()``...)
        gives a list, and a single value gives one Future.  A
        ``queue.Queue`` gives at once a ``queue.Queue`` (of at most
        ``maxsize`` items, 0: no limit) that a thread fills with a Future
        per item as items arrive, until a ``StopIteration`` item or the
        client closes (the old streaming API).

        >>> a, b = client.scatter([1, 2])           # doctest: +SKIP
        >>> d = client.scatter({"x": 1})            # doctest: +SKIP
        >>> out = client.scatter(queue.Queue())     # doctest: +SKIP
        """
        if is_queue(data):
            return self._scatter_queue(data, workers, broadcast, hash, maxsize)
        return self.sync(self._scatter, data, workers=workers, broadcast=broadcast, hash=hash,
                         asynchronous=asynchronous, callback_timeout=timeout)

    def _scatter_queue(self, q, workers, broadcast: bool, hash: bool, maxsize: int):
        self._check_open()
        loop = self.loop.asyncio_loop

        def one(value):
            # In the feeder thread: scatter on the client's loop, with a deadline.
            coro = self._scatter([value], workers=workers, broadcast=broadcast, hash=hash)
            done = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, self.timeout), loop)
            return done.result(self.timeout + 5)[0]

        return QueueFeeder(self, [q], one, maxsize=maxsize, name="scatter").start()

    async def _scatter(self, data, workers=None, broadcast: bool = False, direct=None,
                       hash: bool = True, timeout=None, maxsize: int = 0):
        if is_queue(data):
            return self._scatter_queue(data, workers, broadcast, hash, maxsize)
        if isinstance(data, Future) or futures_of(data if isinstance(data, (list, tuple, dict, set)) else []):
            raise TypeError("scatter takes local data, not Futures (they are already on the cluster)")
        if isinstance(data, (Iterator, range, KeysView, ValuesView, ItemsView)):
            data = list(data)
        workers = _worker_list(workers)
        single = False
        if isinstance(data, dict):
            items = list(data.items())
            keys_given = True
        elif isinstance(data, (list, tuple, set, frozenset)):
            items = [(None, v) for v in data]
            keys_given = False
        else:
            items = [(None, data)]
            keys_given = False
            single = True
        serialized = {}
        nbytes = {}
        types = {}
        keys = []
        for k, v in items:
            s = to_serialized(v)
            if not keys_given:
                prefix = type(v).__name__
                k = f"{prefix}-{tokenize(*s.frames) if hash else uuid.uuid4().hex}"
            keys.append(k)
            serialized[k] = s
            nbytes[k] = s.nbytes
            types[k] = type(v).__name__
        nthreads = await self.scheduler.ncores(workers=workers) if workers is not None else \
            await self.scheduler.ncores()
        targets = [w for w, n in nthreads.items() if n]
        if not targets:
            raise ValueError("no workers to scatter to" + (f" among {workers!r}" if workers else ""))
        if broadcast:
            assignment = {w: dict(serialized) for w in targets}
        else:
            assignment = {}
            slots = [w for w in sorted(targets) for _ in range(max(1, nthreads[w]))]
            for i, k in enumerate(serialized):
                assignment.setdefault(slots[i % len(slots)], {})[k] = serialized[k]
        # A value over the size limit fails here, before anything is sent
        # (no worker is left holding part of a failed scatter); values that
        # fit go to each worker in as many messages as they need.
        limit = configured_max_message_size()
        for k, s in serialized.items():
            if s.nbytes > limit:
                raise MessageTooLargeError(s.nbytes, limit, "send", f"a worker (scattering {k!r})")
        pool = self.connection_pool
        await asyncio.gather(*(pool(w).update_data(data=part, report=False)
                               for w, d in assignment.items() for part in _parts(d, limit // 2)))
        who_has: dict = {}
        for w, d in assignment.items():
            for k in d:
                who_has.setdefault(k, []).append(w)
        futures = {}
        with self._ref_lock:
            for k in keys:
                futures[k] = Future(k, self, inform=False)
        # The scheduler answers update-data with key-in-memory for each key:
        # wait for that, so that once scatter returns the scheduler knows the
        # data (who_has, replicate, other clients all see it).
        loop = asyncio.get_running_loop()
        confirmed = [loop.create_future() for _ in keys]
        for k, fut in zip(keys, confirmed):
            self._key_waiters.setdefault(k, []).append(fut)
        try:
            self._send_to_scheduler({"op": "update-data", "who_has": who_has, "nbytes": nbytes,
                                     "types": types})
            await asyncio.gather(*confirmed)
        finally:
            for k, fut in zip(keys, confirmed):
                waiters = self._key_waiters.get(k)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._key_waiters[k]
        if single:
            return futures[keys[0]]
        if isinstance(data, dict):
            return {k: futures[k] for k in keys}
        out = [futures[k] for k in keys]
        return type(data)(out) if isinstance(data, (tuple, set, frozenset)) else out

    # ------------------------------------------------------------------
    # Control
    # ------------------------------------------------------------------

    def cancel(self, futures, asynchronous=None, force: bool = False):
        """Stop computing these futures and release their results."""
        return self.sync(self._cancel, futures, force=force, asynchronous=asynchronous)

    async def _cancel(self, futures, force: bool = False) -> None:
        keys = [f.key for f in futures_of(futures)]
        if not keys:
            return
        # On the stream, not by RPC: a cancel must not overtake the
        # submission of the same keys still waiting in the stream.
        self._send_to_scheduler({"op": "cancel-keys", "keys": keys, "force": force})
        with self._ref_lock:
            for k in keys:
                # Forget the state: existing Futures keep it (cancelled) while
                # a new submission of the same key starts afresh.
                st = self.futures.pop(k, None)
                if st is not None and st.status != "cancelled":
                    self._cancelled_states[k] = st
                    st.cancel()

    def retry(self, futures, asynchronous=None):
        """Run failed futures again."""
        return self.sync(self._retry, futures, asynchronous=asynchronous)

    async def _retry(self, futures) -> None:
        keys = [f.key for f in futures_of(futures) if f.status == "error"]
        for k in keys:
            st = self.futures.get(k)
            if st is not None:
                st.reset()
        await self.scheduler.retry(keys=keys, client=self.id)

    def replicate(self, futures, n=None, workers=None, branching_factor=2, asynchronous=None):
        """Copy data to ``n`` workers (all by default)."""
        return self.sync(self._replicate, futures, n=n, workers=workers, asynchronous=asynchronous)

    async def _replicate(self, futures, n=None, workers=None, branching_factor=2):
        futures = futures_of(futures)
        await _wait_all(futures)
        return await self.scheduler.replicate(keys=[f.key for f in futures], n=n, workers=workers)

    def rebalance(self, futures=None, workers=None, asynchronous=None, **kwargs):
        """Even out memory use across workers by moving data."""
        return self.sync(self._rebalance, futures, workers, asynchronous=asynchronous)

    async def _rebalance(self, futures=None, workers=None):
        keys = None
        if futures is not None:
            futures = futures_of(futures)
            await _wait_all(futures)
            keys = [f.key for f in futures]
        return await self.scheduler.rebalance(keys=keys, workers=workers)

    def _wait(self, futures, timeout=None, return_when="ALL_COMPLETED"):
        from distributed.futures import _wait

        return _wait(futures_of(futures), timeout=timeout, return_when=return_when)

    # -- datasets ----------------------------------------------------------

    def publish_dataset(self, *args, name=None, override: bool = False, **kwargs):
        """Keep futures (or collections of them) on the cluster under a name
        that other clients can ``get_dataset``."""
        if args:
            if name is None:
                raise ValueError("publish_dataset(value, name=...) needs a name")
            if len(args) != 1:
                raise ValueError("publish_dataset takes one positional value with name=")
            kwargs[name] = args[0]
        return self.sync(self._publish_dataset, override=override, **kwargs)

    async def _publish_dataset(self, override: bool = False, **kwargs):
        for name, value in kwargs.items():
            keys = [f.key for f in futures_of(value)]
            await self.scheduler.publish_put(keys=keys, name=name, data=Serialize(value),
                                             override=override, client=self.id)

    def get_dataset(self, name, default=None, **kwargs):
        """A dataset published under ``name``."""
        return self.sync(self._get_dataset, name, default=default)

    async def _get_dataset(self, name, default=None):
        out = await self.scheduler.publish_get(name=name, client=self.id)
        if out is None:
            if default is not None:
                return default
            raise KeyError(f"Dataset {name!r} not found")
        with context.receiving_for(self):
            from distributed.protocol import Serialized

            data = out["data"]
            if isinstance(data, Serialized):
                data = data.deserialize()
        return data

    def list_datasets(self, **kwargs):
        """Names of published datasets."""
        return self.sync(self._list_datasets)

    async def _list_datasets(self):
        return list(await self.scheduler.publish_list())

    def unpublish_dataset(self, name, **kwargs):
        """Remove a published dataset name (its futures may be released)."""
        return self.sync(self.scheduler.publish_delete, name=name)


def _parts(serialized: dict, most: int) -> list[dict]:
    """``serialized`` split into dicts of at most ``most`` bytes each (a
    larger value alone)."""
    parts: list[dict] = [{}]
    size = 0
    for k, s in serialized.items():
        if parts[-1] and size + s.nbytes > most:
            parts.append({})
            size = 0
        parts[-1][k] = s
        size += s.nbytes
    return parts


def _worker_list(workers):
    """``workers=`` as a list: one address, name or ``(host, port)`` becomes
    a list of one (a bare string would otherwise be read letter by letter).

    >>> _worker_list("tcp://127.0.0.1:1"), _worker_list(("127.0.0.1", 1)), _worker_list(None)
    (['tcp://127.0.0.1:1'], [('127.0.0.1', 1)], None)
    """
    if workers is None:
        return None
    if isinstance(workers, (str, int)) or (
            isinstance(workers, tuple) and len(workers) == 2 and isinstance(workers[1], int)
            and not isinstance(workers[1], bool)):
        return [workers]
    return list(workers)


async def _wait_all(futures) -> None:
    for f in futures:
        await f._state.wait()


class _Datasets:
    """``client.datasets['name']``: dict-like access to published datasets."""

    def __init__(self, client):
        self._client = weakref.ref(client)

    def __getitem__(self, name):
        return self._client().get_dataset(name)

    def __setitem__(self, name, value):
        self._client().publish_dataset(value, name=name)

    def __delitem__(self, name):
        self._client().unpublish_dataset(name)

    def __contains__(self, name) -> bool:
        return name in self._client().list_datasets()

    def __iter__(self):
        return iter(self._client().list_datasets())

    def __len__(self) -> int:
        return len(self._client().list_datasets())

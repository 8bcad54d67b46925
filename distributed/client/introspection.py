"""Client methods that describe the cluster: who holds what, threads per
worker, the scheduler's identity, and the Client's reprs.
"""
from __future__ import annotations

import asyncio
import html
import logging

from distributed import config, versions
from distributed.client.data import _worker_list
from distributed.comm import CommClosedError
from distributed.futures import futures_of
from distributed.utils import sync

__all__ = ["Introspection"]

logger = logging.getLogger(__name__)


class Introspection:
    """The introspection methods of ``Client`` (``self`` is a Client)."""

    def who_has(self, futures=None, asynchronous=None):
        """Which workers hold each key: ``{key: [addresses]}``."""
        return self.sync(self._who_has, futures, asynchronous=asynchronous)

    async def _who_has(self, futures=None):
        keys = None if futures is None else [f.key for f in futures_of(futures)]
        out = await self.scheduler.who_has(keys=keys)
        return {k: list(v) for k, v in out.items()}

    def has_what(self, workers=None, asynchronous=None):
        """Which keys each worker holds: ``{address: [keys]}``."""
        return self.sync(self._has_what, workers, asynchronous=asynchronous)

    async def _has_what(self, workers=None):
        out = await self.scheduler.has_what(workers=_worker_list(workers))
        return {w: list(v) for w, v in out.items()}

    def processing(self, workers=None, asynchronous=None):
        """Keys processing on each worker: ``{address: [keys]}``, for all
        workers or for ``workers`` (addresses, names, ``(host, port)``, or
        one of them).

        >>> client.processing()              # doctest: +SKIP
        {'tcp://127.0.0.1:40575': ['inc-1', 'inc-2'], 'tcp://127.0.0.1:40576': []}
        """
        return self.sync(self._processing, workers, asynchronous=asynchronous)

    async def _processing(self, workers=None):
        out = await self.scheduler.processing(workers=_worker_list(workers))
        return {w: list(v) for w, v in out.items()}

    def nthreads(self, workers=None, asynchronous=None):
        """Threads per worker: ``{address: nthreads}``."""
        return self.sync(self._nthreads, workers, asynchronous=asynchronous)

    ncores = nthreads

    async def _nthreads(self, workers=None):
        return await self.scheduler.ncores(workers=_worker_list(workers))

    _ncores = _nthreads

    def get_versions(self, check: bool = False, packages=None, asynchronous=None):
        """Versions of Python and packages on the client, the scheduler and
        every worker: ``{"scheduler": v, "workers": {address: v}, "client": v}``,
        each ``v`` as ``distributed.versions.get_versions()`` gives it (None
        for a worker that did not answer).  ``packages``: names of more
        packages to report.  With ``check=True``, a required package (or
        Python) that differs raises ``ValueError`` naming the package and
        its versions; another that differs warns
        (``VersionMismatchWarning``).

        >>> client.get_versions(check=True)["workers"]      # doctest: +SKIP
        {'tcp://127.0.0.1:40575': {'host': {...}, 'packages': {...}}}
        """
        return self.sync(self._get_versions, check=check, packages=packages, asynchronous=asynchronous)

    async def _get_versions(self, check: bool = False, packages=None):
        if packages is not None and (isinstance(packages, str)
                                     or not all(isinstance(p, str) for p in packages)):
            raise TypeError(f"packages must be a list of package names, not {packages!r}")
        packages = list(packages or ())
        client = versions.get_versions(packages)
        scheduler = await self.scheduler.versions(packages=packages)
        replies = await self.scheduler.broadcast(msg={"op": "versions", "packages": packages})
        workers = {w: r if isinstance(r, dict) and "packages" in r else None for w, r in replies.items()}
        result = {"scheduler": scheduler, "workers": workers, "client": client}
        if check:
            versions.check_versions(result)
        return result

    def scheduler_info(self, asynchronous=None, **kwargs):
        """The scheduler's identity and its workers."""
        return self.sync(self._scheduler_info, asynchronous=asynchronous)

    async def _scheduler_info(self):
        return await self.scheduler.identity()

    def wait_for_workers(self, n_workers: int = 1, timeout=None):
        """Block until ``n_workers`` workers are connected."""
        if timeout is not None:
            timeout = config.parse_timedelta(timeout)
        return self.sync(self._wait_for_workers, n_workers, timeout=timeout)

    async def _wait_for_workers(self, n_workers: int = 1, timeout=None):
        return await self.scheduler.wait_for_workers(n_workers=n_workers, timeout=timeout)

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard URL (config ``distributed.dashboard.link``
        with its scheme, host and port), or None when it serves none.  Read
        from what the scheduler said when this client connected (no round
        trip).  A dashboard reachable off-loopback on a cluster with a secret
        needs a token: the link carries it (``?token=``, derived from the
        secret, never the secret itself).

        >>> client.dashboard_link  # doctest: +SKIP
        'http://127.0.0.1:8787/status'
        """
        import os

        from distributed.comm.auth_secret import dashboard_token_for

        port = (self._services or {}).get("dashboard")
        if not port:
            return None
        host = str(self._address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        try:
            token = dashboard_token_for(host, getattr(self.security, "auth_secret", None))
        except ValueError:  # require-token without a secret here: the link cannot carry it
            token = None
        if ":" in host:
            host = f"[{host}]"
        template = config.get("distributed.dashboard.link", "{scheme}://{host}:{port}/status")
        link = os.path.expandvars(template).format_map({**os.environ, "scheme": "http", "host": host,
                                                       "port": port})
        return link if token is None else f"{link}{'&' if '?' in link else '?'}token={token}"

    def __repr__(self) -> str:
        if self.status != "running":
            return f"<Client: {self.status}>"
        # A blocking client refreshes the summary; an asynchronous one cannot
        # wait here and shows what it learned when it connected.
        if not self.asynchronous:
            self._refresh_info()
        info = self._info_cache
        if info is None:
            return f"<Client: {self._address!r}>"
        return (f"<Client: {self._address!r} processes={info[0]} threads={info[1]}, "
                f"memory={config.format_bytes(info[2])}>")

    def _refresh_info(self) -> None:
        """Update the cached worker summary now (blocking clients only)."""
        try:
            sync(self.loop, self._update_scheduler_info, callback_timeout=5)
        except Exception:
            pass

    async def _update_scheduler_info(self) -> None:
        try:
            info = await self.scheduler.identity()
        except (OSError, CommClosedError, asyncio.TimeoutError):
            return
        workers = info.get("workers", {}).values()
        self._services = dict(info.get("services") or {})
        self._info_cache = (len(workers), sum(w.get("nthreads", 0) for w in workers),
                            sum(w.get("memory_limit") or 0 for w in workers))

    def _repr_html_(self) -> str:
        if self.status != "running":
            return f"<b>Client</b>: {html.escape(str(self._address))} ({self.status})"
        if not self.asynchronous:
            self._refresh_info()
        n, threads, memory = self._info_cache or (0, 0, 0)
        rows = [("Scheduler", html.escape(str(self._address))),
                ("Workers", n), ("Threads", threads), ("Memory", config.format_bytes(memory))]
        if self.cluster is not None:
            rows.insert(1, ("Cluster", html.escape(type(self.cluster).__name__)))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><h3>Client</h3><table>{body}</table></div>"

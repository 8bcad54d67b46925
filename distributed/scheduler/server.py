"""The Scheduler server: a thin shell around ``SchedulerState``.

It accepts workers and clients, keeps one batched stream to each, feeds
their messages to the state machine and sends what comes back.  Task
payloads are never unpickled here (the listener does not deserialize); they
are forwarded to workers as they came.

Runs on one event loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable

from distributed import config
from distributed.batched import BatchedSend
from distributed.comm import CommClosedError, normalize_address
from distributed.core import NO_REPLY, Server, Status
from distributed.exceptions import error_message
from distributed.protocol import Serialized
from distributed.remote_call import run_user_function
from distributed.scheduler.extensions import close_extensions, load_extensions, notify_extensions
from distributed.scheduler.plugin_server import SchedulerPluginsMixin
from distributed.scheduler.state import SchedulerState
from distributed.scheduler.stealing import WorkStealing, interval_from_config
from distributed.utils import host_from_interface, refuse_unknown_keywords
from distributed.versions import get_versions

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)


def _config_int(key: str, override=None) -> int:
    """An integer setting; a malformed value names its environment variable."""
    value = config.get(key, override_with=override)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{config.env_var(key)}={value!r} is not a valid integer "
                         f"(config key {key!r})") from None


def _format_link(host: str, port: int) -> str:
    """``distributed.dashboard.link`` filled in (environment variables expand).

    >>> _format_link("127.0.0.1", 8787)
    'http://127.0.0.1:8787/status'
    """
    template = config.get("distributed.dashboard.link", "{scheme}://{host}:{port}/status")
    if ":" in host:
        host = f"[{host}]"
    return os.path.expandvars(template).format_map({**os.environ, "scheme": "http", "host": host, "port": port})


class _Started:
    """What ``Scheduler.start()`` returns: the scheduler listens already,
    and awaiting this (old and new code both do) gives the scheduler."""

    def __init__(self, server):
        self.server = server

    def __await__(self):
        # Scheduler plugins given to the constructor start with the scheduler.
        yield from self.server._wait_plugins_started().__await__()
        return self.server


class Scheduler(Server, SchedulerPluginsMixin):
    """The central scheduler.

    >>> async def main():                         # doctest: +SKIP
    ...     async with Scheduler(port=0) as s:
    ...         print(s.address)
    """

    default_port = 8786

    def __init__(
        self,
        loop=None,
        ip: str | None = None,
        port: int | None = None,
        host: str | None = None,
        validate: bool | None = None,
        allowed_failures: int | None = None,
        worker_ttl: float | str | None = None,
        scheduler_file: str | None = None,
        dashboard_address: str | None = None,
        dashboard: bool | None = None,
        interface: str | None = None,
        extensions: dict | None = None,
        plugins=None,
        preload=None,
        preload_argv=None,
        security=None,
        protocol: str | None = None,
        **kwargs,
    ):
        refuse_unknown_keywords("Scheduler", kwargs)
        config.refresh()
        self._host = host_from_interface(ip or host, interface) or "127.0.0.1"
        # As upstream: the Python API listens on a free port unless told; only the CLI uses 8786
        # (dask-jobqueue and other SpecCluster users pass no port and must not collide on a login node).
        self._port = 0 if port is None else port
        validate = validate if validate is not None else config.get("distributed.scheduler.validate", False)
        self.validate = validate
        self.state = SchedulerState(
            allowed_failures=_config_int("distributed.scheduler.allowed-failures", allowed_failures),
            validate=validate,
            bandwidth=config.get("distributed.scheduler.bandwidth"),
            transition_log_length=config.get("distributed.scheduler.transition-log-length"),
            worker_saturation=config.get("distributed.scheduler.worker-saturation"),
        )
        self.worker_ttl = config.get_timedelta("distributed.scheduler.worker-ttl", worker_ttl)
        self.scheduler_file = scheduler_file
        if dashboard_address is not None:  # a malformed address raises before anything starts
            from distributed.http.server import parse_address

            parse_address(dashboard_address, "127.0.0.1", 8787)
        self.dashboard_address = dashboard_address
        self._dashboard = dashboard
        self.http_server = None  # distributed.http.scheduler.SchedulerHTTP, when serving
        self.worker_services: dict[str, dict] = {}  # worker -> {"dashboard": port}, as they register
        self.worker_streams: dict[str, BatchedSend] = {}
        self.client_streams: dict[str, BatchedSend] = {}
        self.datasets: dict[str, dict] = {}
        # Why workers went away, as they or their nannies told us, until the
        # removal that needs it (worker address -> reason).
        self._exit_reasons: dict[str, str] = {}
        self._exit_culprits: dict[str, tuple] = {}  # worker -> keys it says ended it
        self._restarting: set[str] = set()  # workers whose nannies restart them
        self._closed_event: asyncio.Event | None = None
        self.start_time = time.time()
        handlers = {
            "register-worker": self.add_worker,
            "register-client": self.add_client,
            "heartbeat_worker": self.heartbeat_worker,
            "identity": self.identity,
            "scheduler_info": self.identity,
            "who_has": self.get_who_has,
            "has_what": self.get_has_what,
            "ncores": self.get_nthreads,
            "nthreads": self.get_nthreads,
            "processing": self.get_processing,
            "gather": self.gather,
            "cancel": self.cancel,
            "broadcast": self.broadcast,
            "run_function": self.run_function,
            "replicate": self.replicate,
            "rebalance": self.rebalance,
            "retire_workers": self.retire_workers,
            "adaptive_target": self.adaptive_target,
            "workers_to_close": self.workers_to_close,
            "restart": self.restart,
            "publish_put": self.publish_put,
            "publish_get": self.publish_get,
            "publish_list": self.publish_list,
            "publish_delete": self.publish_delete,
            "wait_for_workers": self.wait_for_workers,
            "validate_state": self._validate_handler,
            "versions": self.versions,
            "task_states": self.task_states,
            "terminate": self.terminate,
            "close": self.terminate,
            "retry": self.retry,
        }
        stream_handlers = {
            # from workers
            "task-finished": self._task_finished,
            "task-erred": self._task_erred,
            "add-keys": self._add_keys,
            "missing-data": self._missing_data,
            "release-worker-data": self._release_worker_data,
            "long-running": self._long_running,
            "reschedule": self._reschedule,
            "request-who-has": self._request_who_has,
            "unregister": self._unregister,
            "worker-exiting": self._worker_exiting,
            "worker-status-change": self._worker_status_change,
            "keep-alive": lambda **kw: None,
            "steal-response": self._steal_response,
            # from clients
            "update-graph": self._update_graph,
            "client-releases-keys": self._client_releases_keys,
            "client-desires-keys": self._client_desires_keys,
            "update-data": self._update_data,
            "report-missing-data": self._report_missing_data,
            "cancel-keys": self._cancel_keys,
            "heartbeat-client": self._heartbeat_client,
            "close-client": self._close_client,
            "fire-and-forget": self._fire_and_forget,
            "restart-request": self._restart_request,
        }
        super().__init__(handlers, stream_handlers, deserialize=False)
        # TLS: security= in any accepted form; protocol= 'tcp' or 'tls' (or in host=).
        self.set_security(security, "scheduler")
        self._protocol = protocol
        self.listen_scheme(self._host, protocol)  # a bad protocol raises here
        self.rpc.limit = 512  # the scheduler talks to every worker
        # Named add-ons (locks, ...) through the registry: they add their own handlers.
        self.extensions = load_extensions(self, extensions)
        if config.get("distributed.scheduler.work-stealing"):  # the balancer: scheduler/stealing.py
            self.extensions["stealing"] = WorkStealing(self.state)
            self._stealing_interval = interval_from_config(
                config.get("distributed.scheduler.work-stealing-interval"))
        # Plugins (Scheduler(plugins=...), add_plugin) and event topics: plugin_server.py.
        self._init_plugins_and_events(plugins, preload, preload_argv)

    # ------------------------------------------------------------------
    # Attributes users and tests look at
    # ------------------------------------------------------------------

    @property
    def tasks(self) -> dict:
        return self.state.tasks

    @property
    def workers(self) -> dict:
        return self.state.workers

    @property
    def clients(self) -> dict:
        return self.state.clients

    @property
    def aliases(self) -> dict:
        return self.state.aliases

    def __repr__(self) -> str:
        return (f"<Scheduler {self.address!r}, workers: {len(self.workers)}, "
                f"threads: {sum(w.nthreads for w in self.workers.values())}, tasks: {len(self.tasks)}>")

    def validate_state(self) -> None:
        self.state.validate_state()

    def story(self, *keys) -> list:
        return self.state.story(*keys)

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def start(self, port: int | None = None, host: str | None = None) -> _Started:
        """Start listening now; the result may be awaited (old and new style)."""
        if self.status == Status.running:
            return _Started(self)
        if port is not None:
            self._port = port
        if host is not None:
            self._host = host
        self._closed_event = asyncio.Event()
        self.listener = None
        self._loop = self.loop
        from distributed.comm import listen
        from distributed.comm.limits import raise_fd_limit

        raise_fd_limit()  # one socket per worker and client, as upstream's scheduler does
        scheme = self.listen_scheme(self._host, self._protocol)
        host = self._host.split("://", 1)[-1]
        self._apply_auth_policy(f"{scheme}://{host}:{self._port}")  # may generate a secret
        self.listener = listen(f"{scheme}://{host}:{self._port}", self.handle_comm,
                               deserialize=False, **self.listen_args)  # limit: distributed.comm.max-message-size
        self.status = Status.running
        self._start_http_server()
        self._start_plugins()
        if "stealing" in self.extensions:
            self.start_periodic_callback("stealing", self._balance, self._stealing_interval)
        ttl = self.worker_ttl
        if ttl:
            self.start_periodic_callback("worker-ttl", self._check_worker_ttl, min(max(ttl / 10, 0.05), 10))
        if self.scheduler_file:
            info = self.identity()
            secret = getattr(self.security, "auth_secret", None)
            if secret is not None:
                # Same trust model as a Jupyter connection file: private to the user.
                info = {**info, "auth-secret": secret if isinstance(secret, str) else secret.decode()}
            fd = os.open(self.scheduler_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # also when the file already existed
            with os.fdopen(fd, "w") as f:
                json.dump(info, f, indent=2)
        logger.info("Scheduler at %s", self.address)
        return _Started(self)

    def __await__(self):
        self.start()
        return _Started(self).__await__()

    def _start_http_server(self) -> None:
        """Serve the dashboard when asked (``dashboard_address`` or
        ``dashboard=True``); ``dashboard=False`` with an address serves only
        the machine-readable routes (``/health``, ``/metrics``, JSON)."""
        if self.dashboard_address is None and not self._dashboard:
            return
        from distributed.http.scheduler import SchedulerHTTP

        host = self._host.split("://", 1)[-1] or "127.0.0.1"
        host = (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).strip("[]")
        http = SchedulerHTTP(self, pages=self._dashboard is not False)
        http.start(self.dashboard_address if self.dashboard_address is not None else ":8787", host)
        self.http_server = http

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's ``/status`` URL (``distributed.dashboard.link``), None without one."""
        if self.http_server is None or self.http_server.port is None:
            return None
        host = self.http_server.http.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        link = _format_link(host, self.http_server.port)
        token = self.http_server.token
        return link if token is None else f"{link}?token={token}"

    async def __aenter__(self):
        await self.start()  # also waits for preloads and plugins' start hooks
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _start(self, port: int | None = None, **kwargs):
        return await self.start(port)

    async def close(self, fast: bool = False, close_workers: bool = False, **kwargs) -> None:
        """Stop the scheduler; idempotent.  ``close_workers`` asks the workers
        to close too."""
        if self.status in (Status.closing, Status.closed):
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self.status = Status.closing
        await self._close_plugins("before_close")
        if close_workers:
            for addr in list(self.worker_streams):
                try:
                    self.worker_streams[addr].send({"op": "close", "reason": "scheduler-close"})
                except CommClosedError:
                    pass
        for stream in list(self.client_streams.values()):
            try:
                stream.send({"op": "stream-closed"})
            except CommClosedError:
                pass
        streams = [*self.worker_streams.values(), *self.client_streams.values()]
        await asyncio.gather(*(s.close(timeout=1) for s in streams), return_exceptions=True)
        await close_extensions(self.extensions)
        await self._close_plugins("close")
        if self.http_server is not None:
            await self.http_server.close()
        await self.close_server()
        if self.scheduler_file and os.path.exists(self.scheduler_file):
            try:
                os.remove(self.scheduler_file)
            except OSError:
                pass
        self.status = Status.closed
        if self._closed_event is not None:
            self._closed_event.set()
        logger.info("Scheduler %s closed", self.address)

    _close = close

    async def finished(self) -> None:
        if self._closed_event is not None:
            await self._closed_event.wait()

    def terminate(self, comm=None, **kwargs) -> str:
        self.spawn(self.close(close_workers=kwargs.get("close_workers", False)))
        return "OK"

    # ------------------------------------------------------------------
    # Sending what the state machine returns
    # ------------------------------------------------------------------

    def send_all(self, client_msgs: dict, worker_msgs: dict) -> None:
        for client, msgs in client_msgs.items():
            stream = self.client_streams.get(client)
            if stream is not None and msgs:
                try:
                    stream.send(*msgs)
                except CommClosedError:
                    logger.info("client %s is gone; %d messages not delivered", client, len(msgs))
        for worker, msgs in worker_msgs.items():
            stream = self.worker_streams.get(worker)
            if stream is not None and msgs:
                try:
                    stream.send(*msgs)
                except CommClosedError:
                    logger.info("worker %s is gone; %d messages not delivered", worker, len(msgs))

    # ------------------------------------------------------------------
    # Workers
    # ------------------------------------------------------------------

    async def add_worker(self, comm=None, address=None, nthreads=1, name=None, memory_limit=0,
                         resources=None, pid=0, host="", local_directory="", nanny=None,
                         keys=(), nbytes=None, server_id=None, **kwargs):
        """A worker registers; its connection becomes the worker's stream."""
        try:
            address = normalize_address(address)
            if self.status != Status.running:
                raise RuntimeError("the scheduler is closing")
            cmsgs, wmsgs = self.state.add_worker(
                address, int(nthreads), name=name, memory_limit=int(memory_limit or 0),
                resources=resources, pid=pid, host=host, local_directory=local_directory,
                nanny=nanny, keys=keys, nbytes=nbytes, now=time.time(), server_id=server_id)
        except Exception as e:
            await comm.write({"status": "error", "message": str(e)})
            return NO_REPLY
        await comm.write({"status": "OK", "time": time.time(), **self._worker_registered_reply()})
        stream = BatchedSend(name=f"scheduler->{address}")
        stream.start(comm)
        self.worker_streams[address] = stream
        self.worker_services[address] = dict(kwargs.get("services") or {})
        logger.info("Register worker %s (%s threads)", address, nthreads)
        self.send_all(cmsgs, wmsgs)
        self._note_worker_added(address, nanny)
        self._balance()  # a worker that joins gets queued work at once
        try:
            await self.handle_stream(comm, extra={"worker": address})
        finally:
            if self.worker_streams.get(address) is stream:
                if address in self._restarting:
                    await self._remove_worker(address, safe=True)
                else:
                    reason = await self._why_worker_left(address)
                    await self._remove_worker(address, safe=False, reason=reason)
        return NO_REPLY

    async def _why_worker_left(self, address: str) -> str:
        """The reason a worker's connection ended: what it told us, else
        what its nanny saw (asked while the worker takes no new tasks)."""
        reason = self._exit_reasons.pop(address, None)
        if reason is not None:
            return reason
        ws = self.state.workers.get(address)
        if ws is not None and ws.nanny:
            ws.status = "closing"
            self.state.stop_placing(address)
            try:
                reason = await asyncio.wait_for(
                    self.rpc(ws.nanny).worker_exit_status(address=address, timeout=0.5), 2)
            except Exception as e:
                logger.debug("nanny %s did not say why %s left: %s", ws.nanny, address, e)
            reason = self._exit_reasons.pop(address, None) or reason
        return reason or "its connection to the scheduler was lost"

    def _worker_status_change(self, worker=None, status: str = "", **kwargs) -> None:
        self.send_all(*self.state.handle_worker_status_change(worker, status))

    def _worker_exiting(self, worker=None, reason: str = "", keys=(), **kwargs) -> None:
        self._exit_reasons[worker] = reason
        self._exit_culprits[worker] = tuple(keys)

    async def _remove_worker(self, address: str, safe: bool = False, reason: str | None = None) -> None:
        stream = self._forget_worker(address, safe, reason)
        if stream is None:
            return
        if safe and not stream.closed():
            # Tell a worker we let go of to close, rather than register again.
            try:
                stream.send({"op": "close", "reason": "removed by the scheduler"})
            except CommClosedError:
                pass
            await stream.close(timeout=2)
        else:
            stream.abort()

    def _forget_worker(self, address: str, safe: bool, reason: str | None = None) -> BatchedSend | None:
        """Remove a worker from the state at once; returns its stream."""
        stream = self.worker_streams.pop(address, None)
        self.worker_services.pop(address, None)
        self._exit_reasons.pop(address, None)
        culprits = self._exit_culprits.pop(address, None)
        if address not in self.state.workers:
            return stream
        if safe:
            logger.info("Remove worker %s", address)
        else:
            logger.warning("Remove worker %s: %s", address, reason or "lost")
        self.rpc.remove(address)
        self.send_all(*self.state.remove_worker(address, safe=safe, reason=reason, culprits=culprits))
        self._note_worker_removed(address, safe, reason)
        return stream

    def remove_worker(self, address: str, safe: bool = False, **kwargs):
        """Forget a worker (public, awaitable)."""
        return self._remove_worker(normalize_address(address), safe=safe)

    def heartbeat_worker(self, comm=None, address=None, metrics=None, **kwargs) -> dict:
        ws = self.state.workers.get(address)
        if ws is None:
            return {"status": "missing"}
        ws.last_seen = time.time()
        if metrics:
            ws.metrics = dict(metrics)
            if metrics.get("bandwidth"):  # measured by the worker's fetches
                self.state.note_bandwidth(metrics["bandwidth"])
        return {"status": "OK", "time": time.time()}

    def _check_worker_ttl(self) -> None:
        for address in self.state.check_worker_ttl(time.time(), self.worker_ttl):
            reason = f"no heartbeat for more than {self.worker_ttl:g} s"
            stream = self.worker_streams.get(address)
            if stream is not None:
                try:
                    stream.send({"op": "close", "reason": "worker-ttl-timed-out"})
                except CommClosedError:
                    pass
            self.spawn(self._remove_worker(address, safe=False, reason=reason))

    def _balance(self) -> None:
        """One work-stealing pass: send the steal requests it decides."""
        stealing = self.extensions.get("stealing")
        if stealing is None:
            return
        decisions = stealing.balance()
        if decisions:
            self.send_all({}, stealing.requests(decisions))
        self._log_steals(stealing)

    def _steal_response(self, key=None, stimulus_id="", state=None, worker=None, **kwargs):
        stealing = self.extensions.get("stealing")
        if stealing is not None:
            self.send_all(*stealing.handle_steal_response(key, stimulus_id, state, worker))
            self._log_steals(stealing)

    def _log_steals(self, stealing) -> None:
        if stealing.events:
            for event in stealing.take_events():
                self.log_event("stealing", event)

    def _task_finished(self, key=None, worker=None, nbytes=-1, type=None, duration=None, **kwargs):
        self.send_all(*self.state.handle_task_finished(key, worker, nbytes, type, duration))

    def _task_erred(self, key=None, worker=None, exception=None, traceback=None,
                    exception_text="", traceback_text="", **kwargs):
        self.send_all(*self.state.handle_task_erred(
            key, worker, exception, traceback, exception_text, traceback_text))
        self._note_task_erred(key, worker, exception_text)

    def _add_keys(self, worker=None, keys=(), nbytes=None, **kwargs):
        self.send_all(*self.state.handle_add_keys(worker, keys, nbytes))

    def _missing_data(self, key=None, errant_worker=None, worker=None, **kwargs):
        self.send_all(*self.state.handle_missing_data(key, errant_worker))

    def _release_worker_data(self, key=None, worker=None, **kwargs):
        self.send_all(*self.state.handle_release_worker_data(key, worker))

    def _long_running(self, key=None, worker=None, **kwargs):
        self.send_all(*self.state.handle_long_running(key, worker))

    def _reschedule(self, key=None, worker=None, **kwargs):
        ts = self.state.tasks.get(key)
        if ts is None or ts.processing_on is None or ts.processing_on.address != worker:
            return
        self.send_all(*self.state.transitions({key: "waiting"}))

    def _request_who_has(self, keys=(), worker=None, **kwargs):
        who_has = self.state.who_has(keys)
        stream = self.worker_streams.get(worker)
        if stream is not None:
            stream.send({"op": "refresh-who-has", "who_has": who_has})

    def _unregister(self, worker=None, **kwargs):
        # At once: the connection closing next must not read as a death.
        stream = self._forget_worker(worker, safe=True)
        if stream is not None:
            self.spawn(stream.close(timeout=2))

    # ------------------------------------------------------------------
    # Clients
    # ------------------------------------------------------------------

    async def add_client(self, comm=None, client=None, **kwargs):
        """A client connects; its connection becomes the client's stream."""
        self.state.add_client(client, now=time.time())
        self._note_client_added(client)
        stream = BatchedSend(name=f"scheduler->{client}")
        stream.start(comm)
        self.client_streams[client] = stream
        stream.send({"op": "stream-start"})
        logger.info("Receive client connection: %s", client)
        try:
            await self.handle_stream(comm, extra={"client": client})
        finally:
            if self.client_streams.get(client) is stream:
                del self.client_streams[client]
                self.send_all(*self.state.remove_client(client))
                notify_extensions(self.extensions, "remove_client", client)
                self._note_client_removed(client)
                logger.info("Remove client %s", client)
            stream.abort()
        return NO_REPLY

    def _update_graph(self, client=None, tasks=None, dependencies=None, keys=(), priority=None,
                      user_priority=0, restrictions=None, loose_restrictions=None, resources=None,
                      retries=None, actors=None, **kwargs):
        try:
            msgs = self.state.update_graph(
                client, tasks or {}, dependencies or {}, keys, priority=priority,
                user_priority=user_priority, restrictions=restrictions,
                loose_restrictions=loose_restrictions, resources=resources, retries=retries,
                actors=actors)
        except Exception as e:
            logger.exception("update-graph from %s failed", client)
            err = error_message(e)
            msgs = ({client: [{"op": "task-erred", "key": k, "exception": err["exception"],
                               "traceback": err["traceback"]} for k in keys]}, {})
        self.send_all(*msgs)
        self._note_graph_updated(client, keys, tasks or {}, dependencies, priority, kwargs.get("annotations"))

    def _client_releases_keys(self, client=None, keys=(), **kwargs):
        self.send_all(*self.state.client_releases_keys(client, keys))

    def _client_desires_keys(self, client=None, keys=(), **kwargs):
        self.send_all(*self.state.client_desires_keys(client, keys))

    def _update_data(self, client=None, who_has=None, nbytes=None, types=None, **kwargs):
        self.send_all(*self.state.update_data(who_has or {}, nbytes or {}, client, types))

    def _report_missing_data(self, client=None, key=None, errant_worker=None, **kwargs):
        self.send_all(*self.state.handle_missing_data(key, errant_worker))

    def _cancel_keys(self, client=None, keys=(), force=False, **kwargs):
        self.send_all(*self.state.cancel_keys(client, keys, force))

    def _fire_and_forget(self, client=None, keys=(), **kwargs):
        self.send_all(*self.state.fire_and_forget(keys))

    def retry(self, comm=None, keys=(), client=None, **kwargs) -> str:
        self.send_all(*self.state.retry(keys))
        return "OK"

    def _heartbeat_client(self, client=None, **kwargs):
        cs = self.state.clients.get(client)
        if cs is not None:
            cs.last_seen = time.time()

    def _close_client(self, client=None, **kwargs):
        stream = self.client_streams.pop(client, None)
        self.send_all(*self.state.remove_client(client))
        notify_extensions(self.extensions, "remove_client", client)
        if stream is not None:
            self._note_client_removed(client)
        if stream is not None:
            self.spawn(stream.close())

    # ------------------------------------------------------------------
    # RPC handlers
    # ------------------------------------------------------------------

    def identity(self, comm=None, **kwargs) -> dict:
        return {
            "type": "Scheduler",
            "id": self.id,
            "address": self.address,
            "services": {"dashboard": self.http_server.port} if self.http_server is not None else {},
            "started": self.start_time,
            "n_workers": len(self.state.workers),
            "total_threads": sum(w.nthreads for w in self.state.workers.values()),
            "total_memory": sum(w.memory_limit for w in self.state.workers.values()),
            "workers": {addr: {**ws.identity(), "services": self.worker_services.get(addr, {})}
                        for addr, ws in self.state.workers.items()},
        }

    def get_who_has(self, comm=None, keys=None, **kwargs) -> dict:
        return self.state.who_has(keys)

    def get_has_what(self, comm=None, workers=None, **kwargs) -> dict:
        return self.state.has_what(workers)

    def get_nthreads(self, comm=None, workers=None, **kwargs) -> dict:
        if workers is None:
            return {a: ws.nthreads for a, ws in self.state.workers.items()}
        out = {}
        for w in workers:
            addr = self.state.coerce_address(w)
            out[addr] = self.state.workers[addr].nthreads if addr in self.state.workers else None
        return out

    def get_processing(self, comm=None, workers=None, **kwargs) -> dict:
        """``{worker address: [keys processing there]}`` for ``workers``
        (addresses or names; all by default); an unknown worker has none."""
        workers_ = self.state.workers
        addrs = workers_ if workers is None else [self.state.coerce_address(w) for w in workers]
        return {a: [ts.key for ts in workers_[a].processing] if a in workers_ else [] for a in addrs}

    def task_states(self, comm=None, keys=None, **kwargs) -> dict:
        tasks = self.state.tasks
        keys = tasks if keys is None else keys
        return {k: tasks[k].state if k in tasks else "forgotten" for k in keys}

    async def gather(self, comm=None, keys=(), **kwargs) -> dict:
        """Collect the values of ``keys`` from the workers that hold them."""
        keys = list(keys)
        by_worker: dict[str, list] = {}
        missing = []
        for key in keys:
            ts = self.state.tasks.get(key)
            if ts is None or not ts.who_has:
                missing.append(key)
                continue
            ws = min(ts.who_has, key=lambda w: w.address)
            by_worker.setdefault(ws.address, []).append(key)
        data: dict = {}
        results = await asyncio.gather(
            *(self.rpc(w).get_data(keys=ks, who=self.address) for w, ks in by_worker.items()),
            return_exceptions=True)
        for (worker, ks), result in zip(by_worker.items(), results):
            if isinstance(result, BaseException):
                logger.info("gather: worker %s unreachable: %s", worker, result)
                for k in ks:
                    self.send_all(*self.state.handle_missing_data(k, worker))
                missing.extend(ks)
                continue
            got = result.get("data", {})
            data.update(got)
            for k in ks:
                if k not in got:
                    self.send_all(*self.state.handle_missing_data(k, worker))
                    missing.append(k)
        if missing:
            return {"status": "error", "keys": missing}
        return {"status": "OK", "data": data}

    def cancel(self, comm=None, keys=(), client=None, force=False, **kwargs) -> str:
        self.send_all(*self.state.cancel_keys(client, keys, force))
        return "OK"

    async def broadcast(self, comm=None, msg=None, workers=None, nanny=False, **kwargs) -> dict:
        """Send ``msg`` to each worker (all by default); their replies by address."""
        addresses = self._resolve_workers(workers)
        msg = dict(msg or {})
        op = msg.pop("op")

        async def one(addr):
            try:
                return await getattr(self.rpc(addr), op)(**msg)
            except Exception as e:
                return error_message(e)

        results = await asyncio.gather(*(one(a) for a in addresses))
        return dict(zip(addresses, results))

    def _resolve_workers(self, workers) -> list[str]:
        if workers is None:
            return list(self.state.workers)
        if isinstance(workers, (str, int)):
            workers = [workers]
        out = []
        for w in workers:
            addr = self.state.coerce_address(w)
            if addr not in self.state.workers:
                raise ValueError(f"no worker {w!r} is connected")
            out.append(addr)
        return out

    async def run_function(self, comm=None, function=None, args=(), kwargs=None, wait=True, **kw) -> dict:
        """``client.run_on_scheduler``: run ``function`` here."""
        function = function.deserialize() if isinstance(function, Serialized) else function
        args = args.deserialize() if isinstance(args, Serialized) else args
        kwargs = kwargs.deserialize() if isinstance(kwargs, Serialized) else (kwargs or {})
        return await run_user_function(self, "dask_scheduler", function, args, kwargs, wait)

    async def replicate(self, comm=None, keys=(), n=None, workers=None, **kwargs) -> str:
        """Copy ``keys`` to ``n`` workers (all of ``workers`` by default)."""
        targets = self._resolve_workers(workers)
        n = len(targets) if n is None else n
        if n < 1:
            raise ValueError(f"replicate needs n >= 1, not {n}")
        for key in keys:
            ts = self.state.tasks.get(key)
            if ts is None or ts.state != "memory":
                raise KeyError(f"cannot replicate {key!r}: it is not in memory")
        # An actor lives on one worker; a copy elsewhere would only be its handle.
        keys = [k for k in keys if k not in self.state.actor_homes]
        gathers: dict[str, dict] = {}
        for key in keys:
            ts = self.state.tasks[key]
            holders = [ws.address for ws in ts.who_has]
            need = n - len([h for h in holders if h in targets])
            for addr in sorted((a for a in targets if a not in holders),
                               key=lambda a: self.state.workers[a].nbytes):
                if need <= 0:
                    break
                gathers.setdefault(addr, {})[key] = holders
                need -= 1
        results = await asyncio.gather(
            *(self.rpc(addr).gather(who_has=wh) for addr, wh in gathers.items()),
            return_exceptions=True)
        for (addr, wh), result in zip(gathers.items(), results):
            if isinstance(result, BaseException):
                logger.info("replicate: worker %s failed: %s", addr, result)
                continue
            got = [k for k in wh if k not in result.get("keys", {})]
            self.send_all(*self.state.handle_add_keys(addr, got))
        return "OK"

    async def rebalance(self, comm=None, keys=None, workers=None, **kwargs) -> dict:
        """Move data so every worker holds about the same number of bytes."""
        addresses = self._resolve_workers(workers)
        wss = [self.state.workers[a] for a in addresses]
        if len(wss) < 2:
            return {"status": "OK"}
        keyset = set(keys) if keys is not None else None
        mean = sum(ws.nbytes for ws in wss) / len(wss)
        senders = sorted((ws for ws in wss if ws.nbytes > mean), key=lambda w: -w.nbytes)
        receivers = sorted((ws for ws in wss if ws.nbytes < mean), key=lambda w: w.nbytes)
        moves: list[tuple] = []  # (ts, sender, receiver)
        budget = {ws.address: mean - ws.nbytes for ws in receivers}
        for sender in senders:
            excess = sender.nbytes - mean
            for ts in sorted(sender.has_what, key=lambda t: -t.nbytes):
                if excess <= 0 or not receivers:
                    break
                if keyset is not None and ts.key not in keyset:
                    continue
                if len(ts.who_has) > 1 or ts.key in self.state.actor_homes:  # actors never move
                    continue
                receiver = max(receivers, key=lambda r: budget[r.address])
                if budget[receiver.address] < ts.nbytes / 2:
                    continue
                moves.append((ts, sender, receiver))
                budget[receiver.address] -= ts.nbytes
                excess -= ts.nbytes
        by_receiver: dict[str, dict] = {}
        for ts, sender, receiver in moves:
            by_receiver.setdefault(receiver.address, {})[ts.key] = [sender.address]
        results = await asyncio.gather(
            *(self.rpc(a).gather(who_has=wh) for a, wh in by_receiver.items()), return_exceptions=True)
        moved_from: dict[str, list] = {}
        for (addr, wh), result in zip(by_receiver.items(), results):
            if isinstance(result, BaseException):
                continue
            got = [k for k in wh if k not in result.get("keys", {})]
            self.send_all(*self.state.handle_add_keys(addr, got))
            # Drop a sender's copy only of what its receiver holds now (it may have died meanwhile).
            receiver = self.state.workers.get(addr)
            for k in got:
                ts = self.state.tasks.get(k)
                if receiver is not None and ts is not None and receiver in ts.who_has:
                    moved_from.setdefault(wh[k][0], []).append(k)
        for sender, ks in moved_from.items():
            for k in ks:
                self.send_all(*self.state.handle_release_worker_data(k, sender))
        # Reply only once the senders have dropped their copies.
        await asyncio.gather(
            *(self.rpc(sender).delete_data(keys=ks) for sender, ks in moved_from.items()),
            return_exceptions=True)
        return {"status": "OK", "moved": sum(len(v) for v in moved_from.values())}

    async def retire_workers(self, comm=None, workers=None, close_workers: bool = True,
                             remove: bool = True, names=None, n: int | None = None,
                             timeout: float | str | None = None, **kwargs) -> dict:
        """Move the unique data of ``workers`` (addresses, or ``names``, or the
        ``n`` cheapest: ``workers_to_close``) elsewhere, then close them;
        returns ``{address: identity}`` of those retired.

        A key is never lost to the move: a recipient that dies during it is
        replaced by another until every key the retiring workers hold lives
        elsewhere too, for up to ``timeout`` (default 60 s).  A worker whose
        data could not all move stays (running again, logged) rather than
        take keys with it.

        A worker where actors live is not retired: an actor cannot move, so
        this raises ``ValueError`` naming them and changes nothing.  Release
        the actors first (drop their futures), or close the worker, which
        ends them (calls on them then raise "Worker holding Actor was lost").
        """
        from distributed.scheduler.retire import move_unique_data

        if names is not None:
            # Adaptive and clusters name workers that may have gone meanwhile.
            wanted = [names] if isinstance(names, (str, int)) else list(names)
            addresses = [a for a in (self.state.aliases.get(nm) for nm in wanted) if a in self.state.workers]
        elif workers is not None:
            addresses = self._resolve_workers(workers)
        elif n is not None:
            addresses = self.workers_to_close(n=n)
        else:
            addresses = []
        remaining = [a for a in self.state.workers if a not in addresses]
        if addresses and not remaining and any(self.state.workers[a].has_what for a in addresses):
            raise ValueError("cannot retire every worker: the data would have nowhere to go")
        holding = {a: keys for a in addresses if (keys := self.state.actors_on(a))}
        if holding:
            raise ValueError(f"cannot retire workers where actors live (an actor cannot move): {holding}; "
                             "release those actors first, or close the workers, which ends them")
        for addr in addresses:
            self.state.workers[addr].status = "closing_gracefully"  # no new work
            self.state.stop_placing(addr)
        timeout = config.parse_timedelta(timeout) if timeout is not None else 60.0
        stuck = await move_unique_data(self, addresses, timeout)
        retired = {}
        for addr in addresses:
            ws = self.state.workers.get(addr)
            if ws is None:
                continue  # it died meanwhile: removed already
            if stuck.get(addr):
                logger.warning("retire_workers: %s keeps running: %d keys could not move (%s ...)",
                               addr, len(stuck[addr]), stuck[addr][:3])
                ws.status = "running"
                self.state._check_idle(ws)
                continue
            retired[addr] = ws.identity()
            if close_workers or remove:
                await self._remove_worker(addr, safe=True)
        return retired

    def adaptive_target(self, comm=None, target_duration=None, **kwargs) -> int:
        """How many workers would finish the work in sight within
        ``target_duration`` (default ``distributed.adaptive.target-duration``);
        ``Adaptive`` scales to this (``scheduler/scaling.py``)."""
        from distributed.scheduler.scaling import adaptive_target

        target_duration = config.parse_timedelta(
            target_duration if target_duration is not None else config.get("distributed.adaptive.target-duration"))
        return adaptive_target(self.state, target_duration)

    def workers_to_close(self, comm=None, n: int | None = None, target: int | None = None,
                         memory_ratio: float | None = None, key=None, minimum: int | None = None,
                         attribute: str = "address", **kwargs) -> list:
        """Idle workers that can close without harm, cheapest first
        (``scheduler/scaling.py``); ``key(ws)`` groups workers that go together."""
        from distributed.scheduler.scaling import workers_to_close

        if isinstance(key, Serialized):
            key = key.deserialize()
        return workers_to_close(self.state, n=n, target=target, memory_ratio=memory_ratio, key=key,
                                minimum=minimum, attribute=attribute)

    def restart(self, comm=None, client=None, timeout: float = 30, wait_for_workers: bool = True,
                **kwargs):
        """Forget every task (clients' futures are cancelled) and restart
        every worker that has a nanny; workers without one only drop their
        data.  The tasks are forgotten before this returns; await the result
        to wait for the restarted workers (``TimeoutError`` names those that
        did not come back within ``timeout``)."""
        nannies = {addr: ws.nanny for addr, ws in self.state.workers.items() if ws.nanny}
        old = {addr: self.state.workers[addr] for addr in nannies}
        for addr in nannies:
            self.state.workers[addr].status = "closing"  # no new work while it restarts
            self.state.stop_placing(addr)
        self._restarting.update(nannies)
        self.send_all(*self.state.restart())
        self._note_restart()
        self.datasets.clear()
        return self._restart_workers(nannies, old, timeout, wait_for_workers)

    async def _restart_workers(self, nannies: dict, old: dict, timeout: float, wait_for_workers: bool) -> str:
        try:
            results = await asyncio.gather(
                *(asyncio.wait_for(self.rpc(nanny).restart(timeout=timeout / 2), timeout)
                  for nanny in nannies.values()),
                return_exceptions=True)
        finally:
            self._restarting.difference_update(nannies)
        for addr in nannies:
            if self.state.workers.get(addr) is old[addr]:  # its old connection is not closed yet
                await self._remove_worker(addr, safe=True)
        failed = [n for n, r in zip(nannies.values(), results) if isinstance(r, BaseException)]
        if failed:
            logger.error("restart: nannies %s failed: %s", failed,
                         [r for r in results if isinstance(r, BaseException)])
            if wait_for_workers:
                raise TimeoutError(f"{len(failed)} of {len(nannies)} workers did not restart within "
                                   f"{timeout} s (nannies {', '.join(failed)})")
        return "OK"

    def _restart_request(self, client=None, timeout: float = 30, wait_for_workers: bool = True, **kwargs):
        """``client.restart()`` comes on the client's stream, so whatever the
        client sent before it is forgotten too; the answer goes back there."""
        try:
            workers_back = self.restart(client=client, timeout=timeout, wait_for_workers=wait_for_workers)
        except Exception as e:
            self._answer_restart(client, e)
            return

        async def finish():
            try:
                await workers_back
            except Exception as e:
                self._answer_restart(client, e)
            else:
                self._answer_restart(client, None)

        self.spawn(finish())

    def _answer_restart(self, client, error: Exception | None) -> None:
        msg = {"op": "restart-done", "status": "OK"} if error is None else \
            {"op": "restart-done", "status": "error", "message": f"{type(error).__name__}: {error}"}
        self.send_all({client: [msg]}, {})

    # -- datasets --------------------------------------------------------

    def publish_put(self, comm=None, keys=(), name=None, data=None, override=False, client=None, **kw):
        if name in self.datasets and not override:
            raise KeyError(f"Dataset {name!r} already exists")
        owner = f"published-{name}"
        if name in self.datasets:
            self.send_all(*self.state.client_releases_keys(owner, self.datasets[name]["keys"]))
        self.state.add_client(owner)
        self.send_all(*self.state.client_desires_keys(owner, keys))
        self.datasets[name] = {"keys": list(keys), "data": data}
        return {"status": "OK", "name": name}

    def publish_get(self, comm=None, name=None, client=None, **kw):
        return self.datasets.get(name)

    def publish_list(self, comm=None, **kw):
        return sorted(self.datasets, key=str)

    def publish_delete(self, comm=None, name=None, **kw):
        ds = self.datasets.pop(name, None)
        if ds is None:
            raise KeyError(f"no dataset named {name!r}")
        owner = f"published-{name}"
        self.send_all(*self.state.client_releases_keys(owner, ds["keys"]))
        self.state.remove_client(owner)
        return "OK"

    async def wait_for_workers(self, comm=None, n_workers: int = 1, timeout: float | None = None, **kw):
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.state.workers) < n_workers:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.state.workers)} of {n_workers} workers arrived within {timeout} s")
            await asyncio.sleep(0.01)
        return "OK"

    def _validate_handler(self, comm=None, **kw) -> str:
        self.state.validate_state()
        return "OK"

    def versions(self, comm=None, packages=None, **kw) -> dict:
        """This process's ``get_versions(packages)``."""
        return get_versions(packages)

    # -- convenience for in-process tests ---------------------------------

    def who_has(self, keys: Iterable | None = None) -> dict:
        return self.state.who_has(keys)

    def has_what(self, workers: Iterable | None = None) -> dict:
        return self.state.has_what(workers)

    def ncores(self) -> dict:
        return {a: ws.nthreads for a, ws in self.state.workers.items()}

    nthreads = ncores


"""The import map: old module paths and names -> their homes here.

Data only.  ``TABLE`` maps a module path that user code imports from (in
dask.distributed 1.15-1.21 or in 2024-2026 releases) to ``{name: target}``
where ``target`` is

* ``"home.module:attr"``: the object that answers the name,
* ``"home.module"`` (no colon): a module that answers the name, or
* a ``PENDING`` marker (``"pending: issue N, title"``): the feature is not
  built yet; importing the name raises ImportError naming the issue.

A path that is a real module of ours keeps its own attributes; the table adds
the old names it lacks.  A path that does not exist here becomes a module
made from the table (``hook.py``).  A path whose names are all pending, with
no submodules, cannot be imported at all: the ImportError says which issue
brings it.  ``dask.distributed.<path>`` is ``distributed.<path>`` (dask's own
``dask.distributed`` re-exports our top level).

One entry per name, pointing at the single home of the code: nothing is
copied.  ``docs/import-map.rst`` is generated from this file
(``python -m distributed.compat.docs``) and ``tests/test_import_map.py``
imports every entry.
"""
from __future__ import annotations

__all__ = ["TABLE", "ALIASES", "ISSUES", "NOTES", "PENDING_PREFIX"]

PENDING_PREFIX = "pending: "

#: issue number -> what it builds (the titles the ImportErrors quote).
ISSUES = {
    12: "coordination primitives, actors and plugins",
    13: "diagnostics: progress bars, task stream, performance report, dashboard",
    14: "security: TLS and authentication",
    15: "scheduling and deployment: SpecCluster, Adaptive, SSHCluster, work stealing",
    16: "jobqueue and ecosystem integrations",
}

COORDINATION = f"{PENDING_PREFIX}issue 12, {ISSUES[12]}"
DIAGNOSTICS = f"{PENDING_PREFIX}issue 13, {ISSUES[13]}"
SECURITY = f"{PENDING_PREFIX}issue 14, {ISSUES[14]}"
DEPLOY = f"{PENDING_PREFIX}issue 15, {ISSUES[15]}"
ECOSYSTEM = f"{PENDING_PREFIX}issue 16, {ISSUES[16]}"

#: module path prefixes that are other names of ours.
ALIASES = {"dask.distributed": "distributed"}

#: what the import map page says about a module path beyond its names.
NOTES = {
    "distributed.shuffle": (
        "Peer-to-peer (p2p) shuffles and rechunks are not available here. Every p2p name dask "
        "imports from this package, and every module below it, raises "
        "``distributed.shuffle.P2PUnavailableError`` (an ``ImportError``) saying to use the "
        "task-based method, which dask uses with our client by default."
    ),
}


def _at(home: str, *names: str) -> dict[str, str]:
    """Each of ``names`` lives under the same name in ``home``."""
    return {name: f"{home}:{name}" for name in names}


def _pending(marker: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, marker)


_PLUGINS = ("SchedulerPlugin", "WorkerPlugin", "NannyPlugin", "PipInstall", "PackageInstall",
            "UploadFile", "Environ")
_PLUGINS_PENDING = ("CondaInstall", "UploadDirectory")

TABLE: dict[str, dict[str, str]] = {
    # ------------------------------------------------------------------
    # The top level (also dask.distributed)
    # ------------------------------------------------------------------
    "distributed": {
        "__version__": "distributed._version:__version__",
        "config": "distributed.config",
        **_at("distributed.client", "Client", "get_client", "worker_client"),
        "Executor": "distributed.client:Client",  # 1.x name of the Client
        "local_client": "distributed.client:worker_client",  # 1.x name
        **_at("distributed.futures", "Future", "wait", "as_completed", "fire_and_forget", "futures_of"),
        # context, not client: a worker process must not import the client
        **_at("distributed.context", "default_client", "get_worker"),
        **_at("distributed.threadpool", "secede", "rejoin"),
        **_at("distributed.exceptions", "CancelledError", "TimeoutError", "KilledWorker",
              "Reschedule", "FutureLost"),
        **_at("distributed.core", "Status", "rpc"),
        "connect": "distributed.comm:connect",
        "sync": "distributed.utils:sync",
        "LocalCluster": "distributed.deploy.local:LocalCluster",
        "Scheduler": "distributed.scheduler.server:Scheduler",
        "Worker": "distributed.worker.server:Worker",
        "Nanny": "distributed.nanny:Nanny",
        "Lock": "distributed.coordination.lock:Lock",
        "Semaphore": "distributed.coordination.semaphore:Semaphore",
        "MultiLock": "distributed.coordination.multi_lock:MultiLock",
        "Variable": "distributed.coordination.variable:Variable",
        "Queue": "distributed.coordination.queue:Queue",
        "Event": "distributed.coordination.event:Event",
        **_at("distributed.coordination.pubsub", "Pub", "Sub"),
        **_at("distributed.coordination.actor", "Actor", "ActorFuture", "BaseActorFuture"),
        **_at("distributed.diagnostics.plugin", *_PLUGINS),
        **_pending(COORDINATION, *_PLUGINS_PENDING),
        "progress": "distributed.diagnostics.progressbar:progress",
        "performance_report": "distributed.diagnostics.perf_report:performance_report",
        "get_task_stream": "distributed.diagnostics.task_stream:get_task_stream",
        **_pending(DIAGNOSTICS, "get_task_metadata", "print", "warn"),
        "Security": "distributed.security:Security",
        "SpecCluster": "distributed.deploy.spec:SpecCluster",
        "Adaptive": "distributed.deploy.adaptive:Adaptive",
        "SSHCluster": "distributed.deploy.ssh:SSHCluster",
        **_pending(DEPLOY, "SubprocessCluster"),
    },
    # ------------------------------------------------------------------
    # Client side
    # ------------------------------------------------------------------
    "distributed.client": {
        **_at("distributed.client", "Client", "get_client"),
        "Executor": "distributed.client:Client",
        **_at("distributed.futures", "Future", "wait", "as_completed", "fire_and_forget", "futures_of",
              "FIRST_COMPLETED", "ALL_COMPLETED"),
        "default_client": "distributed.context:default_client",
        **_at("distributed.exceptions", "CancelledError", "TimeoutError"),
        "WrappedKey": "dask._task_spec:TaskRef",  # 1.x home; the base class of Future
        "performance_report": "distributed.diagnostics.perf_report:performance_report",
        "get_task_stream": "distributed.diagnostics.task_stream:get_task_stream",
        "get_task_metadata": DIAGNOSTICS,
        "_get_global_client": "distributed.context:global_client",  # fsspec's dask:// filesystem imports it
    },
    "distributed.executor": {  # 1.x module of the Executor (now Client)
        "Executor": "distributed.client:Client",
        **_at("distributed.futures", "wait", "as_completed"),
        "default_executor": "distributed.context:default_client",
        "ClientExecutor": "distributed.executor:ClientExecutor",
    },
    "distributed.cfexecutor": {"ClientExecutor": "distributed.executor:ClientExecutor"},
    "distributed.worker_client": {
        "worker_client": "distributed.client:worker_client",
        "local_client": "distributed.client:worker_client",
    },
    "distributed.threadpoolexecutor": _at("distributed.threadpool", "secede", "rejoin"),
    # ------------------------------------------------------------------
    # Servers
    # ------------------------------------------------------------------
    "distributed.scheduler": {
        "Scheduler": "distributed.scheduler.server:Scheduler",
        "KilledWorker": "distributed.exceptions:KilledWorker",
        **_at("distributed.scheduler.state", "TaskState", "WorkerState", "ClientState", "SchedulerState"),
    },
    "distributed.worker": {
        **_at("distributed.worker.server", "Worker", "parse_memory_limit"),
        "get_worker": "distributed.context:get_worker",
        "get_client": "distributed.client:get_client",
        **_at("distributed.threadpool", "secede", "rejoin"),
        "Reschedule": "distributed.exceptions:Reschedule",
        "thread_state": "distributed.utils:thread_state",
        "TaskState": "distributed.worker.state:TaskState",
        **_pending(DIAGNOSTICS, "print", "warn"),
    },
    "distributed.worker_state_machine": _at("distributed.worker.state", "TaskState", "WorkerState"),
    "distributed.nanny": {"Nanny": "distributed.nanny:Nanny"},
    "distributed.spill": {"SpillBuffer": "distributed.spill:SpillBuffer"},
    "distributed.stealing": {"WorkStealing": "distributed.scheduler.stealing:WorkStealing"},
    # ------------------------------------------------------------------
    # Communication
    # ------------------------------------------------------------------
    "distributed.core": {
        **_at("distributed.core", "rpc", "Server", "Status", "ConnectionPool", "send_recv"),
        **_at("distributed.comm", "connect", "CommClosedError"),
        "coerce_to_address": "distributed.comm:normalize_address",
        **_at("distributed.exceptions", "error_message", "clean_exception"),
    },
    "distributed.batched": {"BatchedSend": "distributed.batched:BatchedSend"},
    "distributed.comm": _at("distributed.comm", "connect", "listen", "Comm", "Listener", "CommClosedError",
                            "FatalCommClosedError",
                            "parse_address", "unparse_address", "normalize_address",
                            "get_address_host", "get_address_host_port"),
    "distributed.comm.core": _at("distributed.comm", "Comm", "Listener", "CommClosedError", "connect",
                                 "listen", "FatalCommClosedError"),
    "distributed.comm.addressing": _at("distributed.comm.addressing", "parse_address", "unparse_address",
                                       "normalize_address", "get_address_host",
                                       "get_address_host_port"),
    "distributed.protocol": {
        "dumps": "distributed.protocol.message:encode_message",
        "loads": "distributed.protocol.message:decode_message",
        **_at("distributed.protocol.serialize", "serialize", "deserialize", "Serialize", "Serialized"),
        "to_serialize": "distributed.protocol.serialize:Serialize",
        "pickle": "distributed.protocol.pickle",
        **_pending(ECOSYSTEM, "dask_serialize", "dask_deserialize", "register_serialization",
                   "register_generic"),
    },
    "distributed.protocol.core": {
        "dumps": "distributed.protocol.message:encode_message",
        "loads": "distributed.protocol.message:decode_message",
    },
    "distributed.protocol.serialize": {
        **_at("distributed.protocol.serialize", "serialize", "deserialize", "Serialize", "Serialized"),
        "to_serialize": "distributed.protocol.serialize:Serialize",
        **_pending(ECOSYSTEM, "dask_serialize", "dask_deserialize", "register_serialization",
                   "register_generic"),
    },
    "distributed.protocol.pickle": _at("distributed.protocol.pickle", "dumps", "loads", "HIGHEST_PROTOCOL"),
    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    "distributed.metrics": _at("time", "time", "monotonic", "thread_time", "process_time"),
    # dask's dispatch (``sizeof.register(MyType)``), which our own sizeof consults
    "distributed.sizeof": {"sizeof": "dask.sizeof:sizeof", "safe_sizeof": "distributed.utils:safe_sizeof"},
    "distributed.utils": {
        **_at("distributed.utils", "All", "sync", "LoopRunner", "thread_state", "key_split", "funcname",
              "tmpfile", "mp_context", "get_ip", "get_ipv6", "get_ip_interface", "ensure_ip",
              "open_port", "log_errors", "nbytes", "iscoroutinefunction", "import_term", "has_arg",
              "typename", "silence_logging", "is_kernel", "offload", "Log", "Logs", "sizeof",
              "safe_sizeof"),
        "ignoring": "contextlib:suppress",
        **_at("distributed.config", "parse_bytes", "parse_timedelta", "format_bytes", "format_time"),
        **_at("distributed.exceptions", "TimeoutError", "CancelledError"),
        "wait_for": "asyncio:wait_for",
        "SyncMethodMixin": "distributed.deploy.cluster:SyncMethodMixin",  # dask-jobqueue's runners
        # cluster managers (dask-cloudprovider, dask-kubernetes) use these
        **_at("distributed.deploy.utils", "format_dashboard_link", "warn_on_duration", "serialize_for_cli",
              "deserialize_for_cli", "cli_keywords"),
    },
    "distributed.utils_comm": {"WrappedKey": "dask._task_spec:TaskRef"},
    "distributed.compatibility": {
        **_at("distributed.utils", "WINDOWS", "LINUX", "MACOS", "PYPY"),
        "to_thread": "asyncio:to_thread",
        **_at("queue", "Queue", "Empty"),
        "finalize": "weakref:finalize",
        "get_thread_identity": "threading:get_ident",
        "unicode": "builtins:str",
        **_at("importlib", "reload", "invalidate_caches"),
        "html_escape": "html:escape",
        "singledispatch": "functools:singledispatch",
    },
    "distributed.versions": {"get_versions": "distributed.versions:get_versions"},
    # ------------------------------------------------------------------
    # The test harness (public: downstream test suites import it)
    # ------------------------------------------------------------------
    "distributed.utils_test": {
        **_at("distributed.utils_test", "gen_cluster", "gen_test", "cluster", "popen", "clean",
              "pristine_loop", "start_cluster", "end_cluster", "scheduler_process",
              "loop", "loop_in_thread", "cleanup", "cluster_fixture", "s", "a", "b", "c", "client",
              "client_secondary", "inc", "dec", "add", "mul", "div", "double", "deep", "throws",
              "slowinc", "slowdec", "slowadd", "slowsum", "slowidentity", "randominc", "lock_inc",
              "varying", "geninc", "asyncinc", "wait_for", "async_wait_for", "poll_for",
              "async_poll_for", "wait_for_port", "wait_for_state", "captured_logger",
              "captured_handler", "raises", "raises_with_cause", "terminate_process", "slow",
              "nodebug", "has_ipv6", "requires_ipv6", "assert_can_connect", "assert_cannot_connect",
              "save_sys_modules", "check_thread_leak", "check_process_leak",
              "valid_python_script", "invalid_python_script", "client_contract_script"),
        **_at("distributed.utils_test", "tls_config", "tls_only_config", "tls_security",
              "tls_only_security", "get_cert", "gen_tls_cluster", "get_client_ssl_context",
              "get_server_ssl_context"),
    },
    # ------------------------------------------------------------------
    # Features still to build (and Lock, built)
    # ------------------------------------------------------------------
    "distributed.lock": {"Lock": "distributed.coordination.lock:Lock"},
    "distributed.variable": _at("distributed.coordination.variable", "Variable", "VariableExtension"),
    "distributed.queues": _at("distributed.coordination.queue", "Queue", "QueueExtension"),
    "distributed.semaphore": {"Semaphore": "distributed.coordination.semaphore:Semaphore",
                              "SemaphoreExtension": "distributed.coordination.semaphore:SemaphoreExtension"},
    "distributed.event": _at("distributed.coordination.event", "Event", "EventExtension"),
    "distributed.multi_lock": {"MultiLock": "distributed.coordination.multi_lock:MultiLock",
                               "MultiLockExtension": "distributed.coordination.multi_lock:MultiLockExtension"},
    "distributed.pubsub": {**_at("distributed.coordination.pubsub", "Pub", "Sub"),
                           "PubSubSchedulerExtension": "distributed.coordination.pubsub:PubSubExtension"},
    "distributed.actor": _at("distributed.coordination.actor", "Actor", "ActorFuture", "BaseActorFuture",
                             "EagerActorFuture"),
    "distributed.diagnostics": {
        **_at("distributed.diagnostics.progressbar", "progress", "ProgressBar"),
        "MemorySampler": "distributed.diagnostics.memory_sampler:MemorySampler",
        **_at("distributed.diagnostics.plugin", "SchedulerPlugin", "WorkerPlugin", "NannyPlugin"),
    },
    "distributed.diagnostics.plugin": {**_at("distributed.diagnostics.plugin", *_PLUGINS),
                                       **_pending(COORDINATION, *_PLUGINS_PENDING)},
    "distributed.diagnostics.progressbar": _at("distributed.diagnostics.progressbar", "progress", "ProgressBar",
                                               "TextProgressBar", "ProgressWidget",
                                               "MultiProgressBar", "MultiProgressWidget"),
    "distributed.diagnostics.progress": _pending(DIAGNOSTICS, "Progress", "MultiProgress", "AllProgress"),
    "distributed.diagnostics.memory_sampler": _at("distributed.diagnostics.memory_sampler", "MemorySampler"),
    "distributed.diagnostics.task_stream": _at("distributed.diagnostics.task_stream", "TaskStreamPlugin"),
    "distributed.diagnostics.eventstream": _pending(DIAGNOSTICS, "EventStream", "eventstream"),
    "distributed.http": {},
    "distributed.http.routing": {"RoutingApplication": DIAGNOSTICS},
    "distributed.http.utils": _pending(DIAGNOSTICS, "RequestHandler", "redirect"),
    "distributed.security": {"Security": "distributed.security:Security"},
    "distributed.deploy": {
        "LocalCluster": "distributed.deploy.local:LocalCluster",
        "Cluster": "distributed.deploy.cluster:Cluster",
        **_at("distributed.deploy.spec", "SpecCluster", "ProcessInterface"),
        "Adaptive": "distributed.deploy.adaptive:Adaptive",
        "SSHCluster": "distributed.deploy.ssh:SSHCluster",
        **_pending(DEPLOY, "SubprocessCluster"),
    },
    "distributed.deploy.local": _at("distributed.deploy.local", "LocalCluster", "nprocesses_nthreads"),
    "distributed.deploy.cluster": _at("distributed.deploy.cluster", "Cluster"),
    "distributed.deploy.spec": _at("distributed.deploy.spec", "SpecCluster", "ProcessInterface", "NoOpAwaitable"),
    "distributed.deploy.adaptive": _at("distributed.deploy.adaptive", "Adaptive"),
    "distributed.deploy.adaptive_core": _at("distributed.deploy.adaptive_core", "AdaptiveCore"),
    "distributed.deploy.ssh": _at("distributed.deploy.ssh", "SSHCluster", "Scheduler", "Worker"),
    "distributed.deploy.utils": {"nprocesses_nthreads": "distributed.deploy.local:nprocesses_nthreads"},
    "distributed.deploy.subprocess": {"SubprocessCluster": DEPLOY},
    "distributed.shuffle": {"P2PUnavailableError": "distributed.shuffle:P2PUnavailableError"},
    "distributed.joblib": {"DistributedBackend": ECOSYSTEM},  # 1.x: importing it registered a backend
}

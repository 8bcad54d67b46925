"""The import map (distributed/compat/table.py): every old (module, name)
imports as the very object at its home; a name not built yet raises
ImportError naming the issue that brings it; ``import distributed`` stays
light; the generated docs page is current.  Also the helpers written for
the map (distributed.utils, distributed.utils_test, protocol.pickle)."""
from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import inspect
import logging
import os
import pickle
import subprocess
import sys
import threading

import pytest
from tornado import gen

import distributed
from distributed.compat import hook
from distributed.compat.docs import default_path, render
from distributed.compat.table import ALIASES, ISSUES, PENDING_PREFIX, TABLE
from distributed.utils_test import gen_cluster, inc

ENTRIES = [(module, name, target) for module, entries in TABLE.items() for name, target in entries.items()]
BUILT = [e for e in ENTRIES if not hook.is_pending(e[2])]
PENDING = [e for e in ENTRIES if hook.is_pending(e[2])]


def _id(entry) -> str:
    return f"{entry[0]}:{entry[1]}"


def _issue(target: str) -> str:
    """'issue 12' from a pending marker."""
    return target[len(PENDING_PREFIX):].split(",")[0]


def _home_object(target: str):
    home, _, attr = target.partition(":")
    if home.split(".")[0] == "dask":
        pytest.importorskip("dask")
    module = importlib.import_module(home)
    return getattr(module, attr) if attr else module


def _leaf_all_pending(module: str) -> bool:
    entries = TABLE[module]
    return (bool(entries) and all(hook.is_pending(t) for t in entries.values())
            and not any(path.startswith(module + ".") for path in TABLE))


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


# ----------------------------------------------------------------------
# Every entry
# ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", BUILT, ids=_id)
def test_built_name_imports_as_the_object_at_its_home(entry):
    module_name, name, target = entry
    expected = _home_object(target)
    namespace: dict = {}
    exec(f"from {module_name} import {name} as value", namespace)
    assert namespace["value"] is expected
    module = importlib.import_module(module_name)
    assert getattr(module, name) is expected
    assert name in dir(module)


@pytest.mark.parametrize("entry", PENDING, ids=_id)
def test_pending_name_raises_import_error_naming_its_issue(entry):
    module_name, name, target = entry
    issue = _issue(target)
    with pytest.raises(ImportError, match=issue) as info:
        exec(f"from {module_name} import {name}", {})
    assert "not built yet" in str(info.value)
    if _leaf_all_pending(module_name):  # the module itself cannot be imported
        with pytest.raises(ImportError, match=issue):
            importlib.import_module(module_name)
        return
    module = importlib.import_module(module_name)
    with pytest.raises(ImportError, match=issue):
        getattr(module, name)
    assert name not in dir(module)
    assert name not in getattr(module, "__all__", ())


def test_every_pending_marker_names_a_known_issue():
    numbers = {int(_issue(t).split()[1]) for _, _, t in PENDING}
    assert numbers <= set(ISSUES)
    for _, _, target in PENDING:
        number = int(_issue(target).split()[1])
        assert target == f"{PENDING_PREFIX}issue {number}, {ISSUES[number]}"


def test_table_targets_are_well_formed():
    for module, name, target in BUILT:
        home, sep, attr = target.partition(":")
        assert home and " " not in target, (module, name, target)
        assert not sep or attr, (module, name, target)
    for module in TABLE:
        assert module == "distributed" or module.startswith("distributed."), module


# ----------------------------------------------------------------------
# The top level and dask.distributed
# ----------------------------------------------------------------------


def test_names_api_md_lists_are_reachable_from_the_top_level():
    names = """Client Future LocalCluster Scheduler Worker Nanny wait as_completed progress
        fire_and_forget default_client get_client get_worker worker_client secede rejoin futures_of
        CancelledError TimeoutError KilledWorker __version__ Variable Queue Lock MultiLock Semaphore
        Event Pub Sub Actor ActorFuture SchedulerPlugin WorkerPlugin NannyPlugin Security
        performance_report get_task_stream SpecCluster Adaptive SSHCluster Status""".split()
    for name in names:
        assert name in TABLE["distributed"], name
        target = TABLE["distributed"][name]
        if hook.is_pending(target):
            with pytest.raises(ImportError, match=_issue(target)):
                getattr(distributed, name)
        else:
            assert getattr(distributed, name) is _home_object(target)


def test_star_import_brings_the_built_names_only():
    namespace: dict = {}
    exec("from distributed import *", namespace)
    assert set(distributed.__all__) <= set(namespace)
    assert "Client" in namespace and "progress" in namespace and "get_task_metadata" not in namespace
    assert set(distributed.__all__) == set(hook.public_names("distributed"))


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        distributed.no_such_name  # noqa: B018
    assert not hasattr(distributed, "no_such_name")


def test_type_checking_imports_agree_with_the_table():
    source = inspect.getsource(distributed)
    block = next(node for node in ast.parse(source).body
                 if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING")
    for node in block.body:
        for alias in node.names:
            target = TABLE["distributed"][alias.name]
            assert target in (f"{node.module}:{alias.name}", f"{node.module}.{alias.name}"), alias.name


def test_dask_distributed_reexports_our_top_level():
    pytest.importorskip("dask")
    import dask.distributed

    for name in distributed.__all__:
        assert getattr(dask.distributed, name) is getattr(distributed, name), name
    from dask.distributed import Client, wait  # noqa: F401

    assert Client is distributed.Client


def test_dask_distributed_client_and_progress():
    """``from dask.distributed import Client, progress``: the pending
    ImportError while progress is not built, the real thing once it is."""
    pytest.importorskip("dask")
    import dask.distributed  # imports cleanly either way

    target = TABLE["distributed"]["progress"]
    if hook.is_pending(target):
        with pytest.raises(ImportError, match=_issue(target)):
            from dask.distributed import Client, progress  # noqa: F401
    else:
        from dask.distributed import Client, progress  # noqa: F401

        assert progress is _home_object(target)
    assert dask.distributed.Client is distributed.Client


def test_dask_distributed_submodule_paths_are_our_modules():
    pytest.importorskip("dask")
    from dask.distributed.protocol import dumps

    import distributed.protocol

    assert dumps is distributed.protocol.dumps
    assert sys.modules["dask.distributed.protocol"] is distributed.protocol
    import dask.distributed.metrics as metrics

    assert metrics is importlib.import_module("distributed.metrics")
    for prefix, ours in ALIASES.items():
        assert prefix != ours


# ----------------------------------------------------------------------
# How the hook treats modules
# ----------------------------------------------------------------------


def test_module_made_from_the_table():
    import distributed.metrics as metrics

    assert metrics.__all__ == hook.public_names("distributed.metrics")
    assert {"time", "monotonic"} <= set(dir(metrics))
    assert "import-map" in metrics.__doc__
    with pytest.raises(AttributeError, match="no_such_name"):
        metrics.no_such_name  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("distributed.metrics.sub")


def test_package_made_from_the_table_has_submodules():
    import distributed.http as http

    # distributed.http is a real package now (the dashboard); the table still
    # gives it the submodules of names not built yet.
    assert http.__path__ and http.__file__.endswith("__init__.py")
    with pytest.raises(ImportError, match="issue 13"):
        importlib.import_module("distributed.http.routing")
    with pytest.raises(ImportError, match="issue 13"):
        from distributed.http.utils import redirect  # noqa: F401


def test_real_package_gets_pending_names_from_the_table():
    """``distributed.diagnostics`` is ours (the plugin base classes); the
    names still to come raise ImportError naming their issue."""
    from distributed.diagnostics import MemorySampler, SchedulerPlugin  # noqa: F401
    from distributed.diagnostics.plugin import WorkerPlugin  # noqa: F401

    with pytest.raises(ImportError, match="issue 12"):
        from distributed.diagnostics.plugin import CondaInstall  # noqa: F401


def test_old_submodule_path_does_not_replace_the_name_of_the_same_name():
    """``distributed.worker_client`` is a function and an old module path:
    importing the module leaves the function in place, as upstream did."""
    module = importlib.import_module("distributed.worker_client")
    assert module.worker_client is distributed.worker_client
    assert callable(distributed.worker_client) and not inspect.ismodule(distributed.worker_client)


def test_module_whose_names_are_all_pending_cannot_be_imported():
    with pytest.raises(ImportError, match="issue 15") as info:
        import distributed.deploy.subprocess  # noqa: F401
    assert "SubprocessCluster" in str(info.value) and "not built yet" in str(info.value)
    assert "distributed.deploy.subprocess" not in sys.modules


def test_shuffle_path_is_the_module_that_says_p2p_is_unavailable():
    import distributed.shuffle

    with pytest.raises(ImportError, match="p2p"):
        from distributed.shuffle import rechunk_p2p  # noqa: F401
    with pytest.raises(ImportError, match="task-based"):
        importlib.import_module("distributed.shuffle._core")
    assert distributed.shuffle.P2PUnavailableError is _home_object(
        TABLE["distributed.shuffle"]["P2PUnavailableError"])


def test_notes_are_about_paths_in_the_table():
    from distributed.compat.table import NOTES

    assert set(NOTES) <= set(TABLE)


def test_unknown_module_path_is_still_module_not_found():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("distributed.no_such_module")


def test_real_module_keeps_its_own_attributes_and_gains_old_names():
    import distributed.scheduler
    import distributed.utils

    assert distributed.utils.sizeof.__module__ == "distributed.utils"  # its own, untouched
    assert distributed.scheduler.KilledWorker is distributed.KilledWorker  # gained
    assert "KilledWorker" in dir(distributed.scheduler)
    assert distributed.utils.mp_context.get_start_method() == "spawn"  # its own lazy name still works
    with pytest.raises(AttributeError, match="no_such_name"):
        distributed.scheduler.no_such_name  # noqa: B018


def test_bare_package_star_imports_the_names_of_its_path():
    namespace: dict = {}
    exec("from distributed.scheduler import *", namespace)
    assert namespace["Scheduler"] is distributed.Scheduler
    assert namespace["KilledWorker"] is distributed.KilledWorker
    assert "tokenize" in importlib.import_module("distributed.utils").__all__  # its own __all__ is kept


def test_real_module_source_and_reload_still_work():
    import distributed.worker

    assert "def " in inspect.getsource(distributed.utils)
    getattr_before = distributed.worker.__getattr__
    importlib.reload(distributed.worker)
    assert distributed.worker.Worker is distributed.Worker
    # the table's __getattr__ is not wrapped around itself again
    assert distributed.worker.__getattr__._import_map_fallback == getattr_before._import_map_fallback


def test_install_is_idempotent():
    hook.install()
    hook.install()
    assert sum(isinstance(f, hook.ImportMapFinder) for f in sys.meta_path) == 1


# ----------------------------------------------------------------------
# Import cost: the worker process stays light
# ----------------------------------------------------------------------


def test_import_distributed_loads_neither_the_client_nor_dask_nor_typing():
    out = _run("import sys, distributed; "
               "print(sorted(m for m in sys.modules if m in ('dask', 'typing', 'distributed.client', "
               "'distributed.futures', 'distributed.worker.server')))")
    assert out == "[]"


def test_old_server_paths_do_not_load_the_client_or_dask():
    out = _run("import sys; "
               "from distributed import Worker, Scheduler, Nanny, get_worker, secede; "
               "from distributed.worker import Worker, get_worker, thread_state, Reschedule; "
               "from distributed.scheduler import Scheduler, KilledWorker; "
               "from distributed.metrics import time; from distributed.utils import All, tmpfile; "
               "print(sorted(m for m in sys.modules if m in ('dask', 'distributed.client')))")
    assert out == "[]"


# ----------------------------------------------------------------------
# The generated page
# ----------------------------------------------------------------------


def test_import_map_page_is_up_to_date():
    with open(default_path(), encoding="utf-8") as f:
        assert f.read() == render(), "run: python -m distributed.compat.docs"
    with open(os.path.join(os.path.dirname(default_path()), "index.rst"), encoding="utf-8") as f:
        assert "import-map" in f.read()


# ----------------------------------------------------------------------
# Helpers written once for the map: they do what they did
# ----------------------------------------------------------------------


def test_all_returns_results_in_order_and_raises_the_first_error():
    from distributed.utils import All

    async def value(x, delay):
        await asyncio.sleep(delay)
        return x

    async def fail(delay):
        await asyncio.sleep(delay)
        raise ZeroDivisionError

    async def main():
        assert await All([value(1, 0.01), value(2, 0)]) == [1, 2]
        with pytest.raises(ZeroDivisionError):
            await All([fail(0), value(3, 0.01)])

    asyncio.run(main())


def test_all_runs_in_a_tornado_coroutine():
    from distributed.utils import All

    @gen.coroutine
    def old_style():
        results = yield All([asyncio.sleep(0, result=1), asyncio.sleep(0, result=2)])
        return results

    async def main():
        return await old_style()

    assert asyncio.run(main()) == [1, 2]


def test_tmpfile_removes_files_and_directories():
    from distributed.utils import tmpfile

    with tmpfile("txt") as fn:
        assert fn.endswith(".txt") and not os.path.exists(fn)
        with open(fn, "w") as f:
            f.write("x")
    assert not os.path.exists(fn)
    with tmpfile() as dn:
        os.makedirs(os.path.join(dn, "sub"))
    assert not os.path.exists(dn)


def test_log_errors_logs_and_reraises(caplog):
    from distributed.utils import log_errors

    @log_errors
    def bad():
        raise ValueError("sync failure")

    @log_errors
    async def bad_async():
        raise ValueError("async failure")

    with caplog.at_level(logging.ERROR, logger="distributed.utils"):
        with pytest.raises(ValueError):
            bad()
        with pytest.raises(ValueError):
            asyncio.run(bad_async())
        with pytest.raises(KeyError), log_errors():
            raise KeyError("in a block")
    assert "sync failure" in caplog.text and "async failure" in caplog.text and "in a block" in caplog.text
    assert bad.__name__ == "bad"


def test_small_helpers():
    from distributed import utils

    assert utils.nbytes(b"abcd") == 4 and utils.nbytes(memoryview(bytearray(16)).cast("i")) == 16
    assert utils.get_ip("127.0.0.1") == "127.0.0.1"
    assert utils.ensure_ip("localhost") in ("127.0.0.1", "::1")
    port = utils.open_port("127.0.0.1")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert utils.import_term("distributed.utils.import_term") is utils.import_term
    with pytest.raises(ValueError, match="dotted"):
        utils.import_term("nodots")
    assert utils.iscoroutinefunction(gen.coroutine(lambda: None))
    assert not utils.iscoroutinefunction(functools.partial(len))
    assert utils.has_arg(utils.tmpfile, "extension")
    assert utils.typename(utils.LoopRunner()) == "distributed.utils.LoopRunner"
    assert utils.is_kernel() is False
    assert asyncio.run(utils.offload(threading.current_thread)) is not threading.current_thread()
    assert "&lt;" in utils.Log("<x>")._repr_html_() and "a" in utils.Logs(a="x")._repr_html_()
    with pytest.raises(ValueError, match="valid interfaces"):
        utils.get_ip_interface("no-such-interface")


def test_safe_sizeof_falls_back_on_a_default(monkeypatch):
    from distributed import utils

    def broken(obj):
        raise RuntimeError("cannot measure")

    monkeypatch.setattr(utils, "sizeof", broken)
    assert utils.safe_sizeof(object(), default_size=123) == 123


def test_protocol_pickle_dumps_bytes_and_falls_back_on_cloudpickle():
    from distributed.protocol import pickle as dpickle

    assert isinstance(dpickle.dumps([1, 2]), bytes)
    assert dpickle.loads(dpickle.dumps([1, 2])) == [1, 2]
    func = dpickle.loads(dpickle.dumps(lambda x: x + 1))  # plain pickle cannot do a lambda
    assert func(1) == 2
    with pytest.raises(pickle.PicklingError, match="generator"):
        dpickle.dumps(x for x in [])


def test_wrapped_key_is_the_base_of_future():
    pytest.importorskip("dask")
    from distributed.utils_comm import WrappedKey

    assert issubclass(distributed.Future, WrappedKey)
    assert WrappedKey("x").key == "x"


def test_poll_for_calls_fail_func_before_failing():
    from distributed.utils_test import poll_for, wait_for

    calls = []
    with pytest.raises(AssertionError, match="not met"):  # upstream's positional order
        poll_for(lambda: False, 0.02, lambda: calls.append("positional"), 0.01)
    with pytest.raises(AssertionError):
        wait_for(lambda: False, timeout=0.02, fail_func=lambda: calls.append("keyword"))
    assert calls == ["positional", "keyword"]
    poll_for(lambda: True, timeout=1)


def test_raises_with_cause_checks_the_chain():
    from distributed.utils_test import raises, raises_with_cause

    def chained():
        try:
            raise KeyError("inner")
        except KeyError as e:
            raise ValueError("outer") from e

    with raises_with_cause(ValueError, "outer", KeyError, "inner"):
        chained()
    with pytest.raises(AssertionError):
        with raises_with_cause(ValueError, "outer", TypeError, None):
            chained()
    assert raises(chained, ValueError) and not raises(lambda: 1)


def test_captured_handler_and_save_sys_modules():
    from distributed.utils_test import captured_handler, lock_inc, save_sys_modules

    handler = logging.StreamHandler()
    log = logging.getLogger("distributed.test_import_map")
    log.addHandler(handler)
    try:
        with captured_handler(handler) as out:
            log.warning("hello")
        assert "hello" in out.getvalue()
    finally:
        log.removeHandler(handler)
    with save_sys_modules():
        import colorsys  # noqa: F401

        import distributed.compat.docs  # noqa: F401  (already imported: kept)

    assert "colorsys" not in sys.modules and "distributed.compat.docs" in sys.modules
    assert lock_inc(1, threading.Lock()) == 2


@gen_cluster(client=True)
async def test_wait_for_state_on_worker_and_scheduler(c, s, a, b):
    from distributed.utils_test import wait_for_state

    future = c.submit(inc, 1, key="x", workers=[a.address])
    await wait_for_state("x", "memory", s)
    await wait_for_state("x", ("memory",), a)
    with pytest.raises(AssertionError, match="'x'"):
        await wait_for_state("x", "erred", s, timeout=0.05)
    assert await future == 2

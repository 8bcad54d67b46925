"""The package's public names load on first use: a worker process (what a
nanny starts) imports neither the client nor dask."""
from __future__ import annotations

import subprocess
import sys

import pytest

import distributed


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_every_public_name_resolves():
    for name in distributed.__all__:
        assert getattr(distributed, name) is not None, name
    assert set(distributed.__all__) <= set(dir(distributed))
    from distributed import Client, Future, LocalCluster  # noqa: F401


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        distributed.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from distributed import no_such_name  # noqa: F401


def test_a_worker_process_imports_neither_the_client_nor_dask():
    out = _run("import sys, distributed.nanny, distributed.worker.server; "
               "print(sorted(m for m in ('dask', 'distributed.client') if m in sys.modules))")
    assert out == "[]"


def test_importing_the_client_still_brings_dask_integration():
    pytest.importorskip("dask")
    out = _run("import sys; from distributed import Client; "
               "from distributed.futures import Future; import dask._task_spec as t; "
               "print(issubclass(Future, t.TaskRef))")
    assert out == "True"


_NO_DASK = """
import sys

class NoDask:
    def find_spec(self, name, path=None, target=None):
        if name == "dask" or name.startswith("dask."):
            raise ImportError(f"no {name} here: the core must work without dask")

sys.meta_path.insert(0, NoDask())
"""


def test_the_core_works_without_dask():
    """dask is an optional extra: with it unimportable, the public names
    load, a local cluster computes, and progress and the diagnostics work."""
    out = _run(_NO_DASK + (
        "import distributed\n"
        "for name in distributed.__all__: getattr(distributed, name)\n"
        "from distributed import Client, LocalCluster, progress, performance_report\n"
        "with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as lc, "
        "Client(lc) as c:\n"
        "    fs = c.map(lambda x: x + 1, range(10))\n"
        "    progress(fs)\n"
        "    print(sum(c.gather(fs)), 'dask' in sys.modules)\n"))
    assert out.splitlines()[-1] == "55 False"

"""joblib's dask backend on our Client, driving scikit-learn.

``joblib.parallel_config(backend="dask")`` (``parallel_backend`` in older
joblib) sends each of joblib's batches to the current ``Client`` as a task
(see ``joblib/_dask.py``).  ``GridSearchCV`` fitted that way must choose the
same parameters as with joblib's own worker processes (loky): the search is
deterministic, so any difference means a batch was lost, duplicated or
returned out of order.  joblib blocks, so these are ``with cluster()`` and
``LocalCluster`` tests, not ``gen_cluster`` ones.
"""
import pytest

from distributed import Client, LocalCluster, get_worker
from distributed.utils_test import cluster

joblib = pytest.importorskip("joblib", reason="joblib is in the test extras")
pytest.importorskip("sklearn", reason="scikit-learn is in the test extras")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

PARAM_GRID = {"C": [0.1, 1.0, 10.0], "gamma": [1e-4, 1e-3, 1e-2]}


def _data():
    digits = load_digits()
    return digits.data[:400], digits.target[:400]  # small: the search takes about a second


def _parallel_config(backend: str, **kwargs):
    """joblib >= 1.3 names it parallel_config; older ones only have parallel_backend."""
    config = getattr(joblib, "parallel_config", None) or joblib.parallel_backend
    return config(backend, **kwargs)


def _search(backend: str, **kwargs) -> GridSearchCV:
    X, y = _data()
    search = GridSearchCV(SVC(), PARAM_GRID, cv=3, n_jobs=kwargs.pop("n_jobs", -1))
    with _parallel_config(backend, **kwargs):
        search.fit(X, y)
    return search


@pytest.fixture(scope="module")
def loky_search() -> GridSearchCV:
    """The reference: joblib's own processes."""
    return _search("loky", n_jobs=2)


def test_grid_search_on_a_cluster_of_worker_processes_matches_loky(loop, loky_search):
    with cluster(nworkers=2) as (s, _), Client(s["address"], loop=loop):
        search = _search("dask")
        assert search.best_params_ == loky_search.best_params_
        assert search.best_score_ == loky_search.best_score_
        assert list(search.cv_results_["mean_test_score"]) == list(loky_search.cv_results_["mean_test_score"])


def test_grid_search_on_a_local_cluster_matches_loky(loky_search):
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as c:
        search = _search("dask")
        assert search.best_params_ == loky_search.best_params_
        assert search.best_score_ == loky_search.best_score_
        assert len(c.scheduler_info()["workers"]) == 2


def _square_and_where(i):
    return i**2, get_worker().address


def test_parallel_calls_run_on_our_workers_and_return_in_order(loop):
    with cluster(nworkers=2) as (s, _), Client(s["address"], loop=loop) as c:
        with _parallel_config("dask"):
            out = joblib.Parallel(batch_size=3)(joblib.delayed(_square_and_where)(i) for i in range(50))
        workers = set(c.scheduler_info()["workers"])
    assert [square for square, _ in out] == [i**2 for i in range(50)]
    assert {where for _, where in out} <= workers

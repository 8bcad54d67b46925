"""End-to-end basics: the examples from the core issue, verbatim."""
from distributed import Client
from distributed.utils_test import cluster, gen_cluster, inc


@gen_cluster(client=True)
def test_submit(c, s, a, b):
    future = c.submit(inc, 1)
    assert future.key in c.futures
    result = yield future
    assert result == 2
    assert future.key in s.tasks
    assert future.key in a.data or future.key in b.data


def test_submit_sync(loop):
    with cluster() as (s, [a, b]):
        with Client(('127.0.0.1', s['port']), loop=loop) as c:
            future = c.submit(inc, 1)
            assert future.key in c.futures
            assert future.result() == 2
            a['proc'].terminate()   # kill one of the workers
            assert future.result() == 2   # the future stays valid

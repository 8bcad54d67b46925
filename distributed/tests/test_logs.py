"""Server log deques (get_scheduler_logs, get_worker_logs) and
forward_logging."""
from __future__ import annotations

import logging

import pytest

from distributed import Client
from distributed.diagnostics.logs import SERVER_LOGGER, DequeHandler, get_logs
from distributed.utils_test import async_poll_for, cluster, gen_cluster


@pytest.fixture(autouse=True)
def _distributed_logs_at_info():
    """What reaches the deques depends on the ``distributed`` logger's level,
    which a LocalCluster's ``silence_logs`` lowers for the whole process (as
    upstream's does): make it INFO here, whatever ran before."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def _log_from_task(msg):
    logging.getLogger("user.app").warning("task says %s", msg)
    logging.getLogger("distributed.user_task").warning("in the worker deque: %s", msg)
    return msg


@gen_cluster(client=True)
async def test_scheduler_and_worker_logs_newest_first(c, s, a, b):
    logging.getLogger("distributed.test").info("a line from the test")
    logs = await c.get_scheduler_logs()
    assert logs and all(isinstance(level, str) and isinstance(text, str) for level, text in logs)
    assert "a line from the test" in logs[0][1]
    assert len(await c.get_scheduler_logs(n=1)) == 1
    await c.submit(_log_from_task, "hello", workers=[a.address])
    wlogs = await c.get_worker_logs(workers=[a.address])
    assert list(wlogs) == [a.address]
    assert any("in the worker deque: hello" in text for _, text in wlogs[a.address])
    both = await c.get_worker_logs(n=3)
    assert set(both) == {a.address, b.address} and all(len(v) == 3 for v in both.values())


@gen_cluster(client=True)
async def test_handlers_are_attached_while_running_and_removed_on_close(c, s, a, b):
    handlers = [h for h in logging.getLogger(SERVER_LOGGER).handlers if isinstance(h, DequeHandler)]
    assert s.extensions["diagnostics"].log_handler in handlers
    assert a.diagnostics.log_handler in handlers
    handler = a.diagnostics.log_handler
    await a.close()
    assert handler not in logging.getLogger(SERVER_LOGGER).handlers


@gen_cluster(client=True, config={"distributed.admin.log-length": 3})
async def test_log_length_is_configured(c, s, a, b):
    for i in range(10):
        logging.getLogger("distributed.test").info("line %d", i)
    assert len(await c.get_scheduler_logs()) == 3


def test_get_logs_checks_n():
    with pytest.raises(ValueError, match="non-negative"):
        get_logs(DequeHandler(), n=-1)


@gen_cluster(client=True)
async def test_nanny_logs_without_nannies_is_a_clear_error(c, s, a, b):
    with pytest.raises(ValueError, match="no nanny"):
        await c.get_worker_logs(nanny=True)


@gen_cluster(client=True)
async def test_forward_logging_reemits_worker_records_here(c, s, a, b):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    log = logging.getLogger("user.app")
    handler = Keep()
    log.addHandler(handler)
    try:
        await c.forward_logging("user.app", level="WARNING")
        await c.submit(_log_from_task, "forwarded", workers=[b.address])
        # The task itself logs into this process too (same process): keep
        # only the re-emitted copy, which carries the worker.
        await async_poll_for(lambda: any(getattr(r, "worker", None) for r in seen), timeout=10)
        [record] = [r for r in seen if getattr(r, "worker", None)]
        assert record.worker == b.address and record.getMessage() == "task says forwarded"
        await c.unforward_logging("user.app")
        assert "forwarded-log-record-forward-logging-user.app" not in s.worker_plugins
    finally:
        log.removeHandler(handler)


def test_blocking_api_with_real_processes():
    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            client.submit(_log_from_task, "real").result()
            logs = client.get_worker_logs()
            assert set(logs) == {a["address"], b["address"]}
            assert any("in the worker deque: real" in text for v in logs.values() for _, text in v)
            assert any("Receive client connection" in t or "client" in t.lower()
                       for _, t in client.get_scheduler_logs())

"""Regenerate performance-report.png and performance-report-stream.png: a
performance report opened offline, its summary and its task stream.

    python docs/images/perf_report_screenshot.py

Two workers run a small graph inside ``performance_report``; the report file
is opened from disk (``file://``, no server) in headless Chromium.
"""
from __future__ import annotations

import asyncio
import os
import tempfile

from distributed import Client, performance_report
from distributed.http._cdp import Browser
from distributed.scheduler.server import Scheduler
from distributed.utils_test import slowinc
from distributed.worker.server import Worker

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "performance-report.png")
OUT_STREAM = os.path.join(HERE, "performance-report-stream.png")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "dask-report.html")
        async with Scheduler(port=0) as s, \
                Worker(s.address, nthreads=2, name="alice"), Worker(s.address, nthreads=2, name="bob"), \
                Client(s.address, asynchronous=True) as c:
            async with performance_report(filename=report):
                x = c.map(slowinc, range(200), delay=0.02)
                y = c.map(slowinc, x, delay=0.01)
                await c.submit(sum, y)
        async with Browser(width=1280, height=800) as br:
            await br.goto("file://" + report)
            await br.wait_for("document.readyState === 'complete'")
            await br.screenshot(OUT)
            # The tabs are radio buttons (the report runs no script): pick the task stream.
            await br.wait_for("(document.getElementById('tab1').checked = true)")
            await br.screenshot(OUT_STREAM)
    print("wrote", OUT, OUT_STREAM)


if __name__ == "__main__":
    asyncio.run(main())

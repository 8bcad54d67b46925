"""Regenerate dashboard-status.png: /status in headless Chromium during a run.

    python docs/images/dashboard_screenshot.py

Two workers run 300 ``slowinc`` tasks and a reduction; the screenshot is
taken about two seconds in, while tasks are processing.
"""
from __future__ import annotations

import asyncio
import os

from distributed import Client
from distributed.http._cdp import Browser
from distributed.scheduler.server import Scheduler
from distributed.utils_test import slowinc
from distributed.worker.server import Worker

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard-status.png")


async def main() -> None:
    async with Scheduler(port=0, dashboard_address="127.0.0.1:0") as s, \
            Worker(s.address, nthreads=2, name="alice"), Worker(s.address, nthreads=2, name="bob"):
        async with Client(s.address, asynchronous=True) as c:
            async with Browser(width=1280, height=900) as br:
                x = c.map(slowinc, range(300), delay=0.03)
                y = c.map(slowinc, x, delay=0.02)
                total = c.submit(sum, y)
                await br.goto(f"http://127.0.0.1:{s.http_server.port}/status")
                await br.wait_for("document.body.dataset.updated")
                await br.wait_for("Number(document.querySelector('#progress-table tbody td:nth-child(3)')"
                                  " && document.querySelector('#progress-table tbody td:nth-child(3)')"
                                  ".textContent) > 120", timeout=30, what="about half the first prefix done")
                await br.screenshot(OUT)
                await total
    print("wrote", OUT)


if __name__ == "__main__":
    asyncio.run(main())

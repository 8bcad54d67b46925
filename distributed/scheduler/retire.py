"""Moving the data off workers that retire, so that no key is lost.

``move_unique_data(scheduler, addresses, timeout)`` copies every key that
only the retiring workers hold to the other running workers, round after
round: a copy counts once the scheduler's state says the recipient holds it,
so a recipient that dies during the move (its replicas leave the state with
it) just sends its keys to the next round, to another worker.  It stops when
nothing unique is left, when no running worker remains to take the data, or
at the deadline; what is still unique then is returned, by worker, for the
caller to keep those workers.

Runs on the scheduler's event loop (it awaits ``Scheduler.replicate``).
"""
from __future__ import annotations

import asyncio
import logging
import time

__all__ = ["move_unique_data"]

logger = logging.getLogger(__name__)

#: Pause between rounds when a round moved nothing (a recipient was dying).
_RETRY_DELAY = 0.05


def _unique_keys(state, retiring: set) -> dict:
    """``{address: [keys only retiring workers hold]}`` for live retiring workers."""
    out = {}
    for addr in retiring:
        ws = state.workers.get(addr)
        if ws is None:
            continue
        keys = [ts.key for ts in ws.has_what
                if ts.state == "memory" and all(w.address in retiring for w in ts.who_has)]
        if keys:
            out[addr] = keys
    return out


async def move_unique_data(scheduler, addresses: list, timeout: float) -> dict:
    """Copy what only ``addresses`` hold to other running workers; returns
    ``{address: [keys that could not move]}`` (empty when all moved).

    >>> stuck = await move_unique_data(scheduler, ["tcp://127.0.0.1:40001"], 60)  # doctest: +SKIP
    """
    state = scheduler.state
    retiring = set(addresses)
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        unique = _unique_keys(state, retiring)
        if not unique:
            return {}
        targets = [a for a, ws in state.workers.items() if a not in retiring and ws.status == "running"]
        if not targets:
            logger.warning("retire: no running worker left to take %d keys",
                           sum(len(v) for v in unique.values()))
            return unique
        if time.monotonic() > deadline:
            logger.warning("retire: %d keys still unique to retiring workers after %.1f s",
                           sum(len(v) for v in unique.values()), timeout)
            return unique
        if rounds:
            await asyncio.sleep(_RETRY_DELAY)
        rounds += 1
        keys = [k for ks in unique.values() for k in ks]
        try:
            await scheduler.replicate(keys=[k for k in keys if k in state.tasks and state.tasks[k].state == "memory"],
                                      n=1, workers=[t for t in targets if t in state.workers])
        except (KeyError, ValueError) as e:
            # A key was released or a target left between the check and the call: look again.
            logger.debug("retire: replicate round %d: %s", rounds, e)

"""The scheduler's records of tasks, workers and clients, and how their
collection-valued fields are stored.

``SchedulerState`` (``state.py``) owns these objects and is the only code
that changes them; everyone else reads them.  They live here so that the
state machine reads on its own.

Memory
------
A scheduler holds hundreds of thousands of tasks, so a task's bytes count.
The collection-valued fields of a task (``dependencies``, ``dependents``,
``waiting_on``, ``waiters``, ``who_has``, ``who_wants``, ``erred_on``) are
empty most of the time, mostly small otherwise, and ``who_has``/
``who_wants`` mostly hold a single worker/client.  So a field holds

* ``_EMPTY``, one shared ``frozenset()``, while it is empty;
* for ``who_has`` and ``who_wants``, the worker's or client's own
  ``frozenset({itself})`` (its ``_singleton``) while that is the only
  member, shared by every such task;
* a tuple of distinct members while there are at most ``_SMALL`` of them
  (a two-member tuple is 56 bytes, a two-member set 216);
* otherwise a ``set`` of its own (never an empty one).

Everyone may read these fields as collections (iterate, ``in``, ``len``;
``set(field)`` for set algebra); only ``SchedulerState`` (``state.py``)
changes them, and only through ``_add`` and ``_discard`` below (or by
assigning ``_EMPTY``).  ``SchedulerState.validate_state`` checks these rules.  Function payloads that many tasks
share (``run_spec[1]``) are interned in ``update_graph``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

__all__ = ["ClientState", "TaskState", "TransitionLog", "WorkerState"]

#: What a set-valued field of a task holds while empty (see "Memory" above):
#: one shared immutable object instead of a 216-byte ``set()`` per task.
_EMPTY: frozenset = frozenset()

#: The collection-valued fields of TaskState.
_TASK_SET_FIELDS = ("dependencies", "dependents", "waiting_on", "waiters", "who_has",
                    "who_wants", "erred_on")

#: Up to this many members, a field is a tuple rather than a set.
_SMALL = 8


def _add(obj, field: str, item, singleton: frozenset | None = None) -> None:
    """Add ``item`` to the collection-valued ``field`` of ``obj`` (see
    "Memory" above).

    An empty field (``_EMPTY``) becomes ``singleton`` when given (the shared
    ``frozenset({item})``), else ``(item,)``; a tuple or singleton grows into
    a longer tuple, and into a set of its own past ``_SMALL`` members.
    """
    members = getattr(obj, field)
    if type(members) is set:
        members.add(item)
    elif not members:
        setattr(obj, field, (item,) if singleton is None else singleton)
    elif item not in members:
        setattr(obj, field, (*members, item) if len(members) < _SMALL else {*members, item})


def _discard(obj, field: str, item) -> None:
    """Remove ``item`` from the collection-valued ``field`` of ``obj`` if it
    is there; the field goes back to ``_EMPTY`` when ``item`` was its last
    member."""
    members = getattr(obj, field)
    if item in members:
        if len(members) == 1:
            setattr(obj, field, _EMPTY)
        elif type(members) is set:
            members.remove(item)
        else:
            setattr(obj, field, tuple(m for m in members if m != item))


class TransitionLog:
    """The last ``maxlen`` transitions as ``(key, start, finish)``, for
    debugging (``SchedulerState.story``); iterating yields those triples.

    They are kept flat, three items per transition in one deque.  A tuple
    per transition would be 64 bytes, and a big graph makes several per
    task.  The log keeps only the last ``maxlen``, so the older tuples are
    freed among live objects.  Together they cost about 120 bytes of
    scheduler RSS per task on a 200,000-task graph.
    """

    __slots__ = ("maxlen", "_items")

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self._items: deque = deque(maxlen=3 * maxlen)

    def append(self, key, start: str, finish: str) -> None:
        if self.maxlen:
            self._items.extend((key, start, finish))

    def __iter__(self):
        items = iter(self._items)
        return zip(items, items, items)

    def __len__(self) -> int:
        return len(self._items) // 3


class _RareFields:
    """The fields of a task that most tasks never set: failure details,
    retries, restrictions and being an actor.  A task creates its record on
    the first such assignment, so one that never fails, has no restrictions
    and is no actor pays 8 bytes for all twelve instead of 96."""

    __slots__ = ("exception", "traceback", "exception_text", "traceback_text", "exception_blame",
                 "retries", "suspicious", "worker_restrictions", "loose_restrictions",
                 "resource_restrictions", "erred_on", "actor")

    DEFAULTS = {"exception": None, "traceback": None, "exception_text": "", "traceback_text": "",
                "exception_blame": None, "retries": 0, "suspicious": 0, "worker_restrictions": None,
                "loose_restrictions": False, "resource_restrictions": None, "erred_on": _EMPTY,
                "actor": False}

    def __init__(self):
        for name, default in self.DEFAULTS.items():
            setattr(self, name, default)


def _rare_field(name: str) -> property:
    """A TaskState attribute stored in its ``_RareFields`` record."""
    default = _RareFields.DEFAULTS[name]

    def get(ts):
        rare = ts._rare
        return default if rare is None else getattr(rare, name)

    def set_(ts, value):
        rare = ts._rare
        if rare is None:
            if value is default:
                return
            rare = ts._rare = _RareFields()
        setattr(rare, name, value)

    return property(get, set_, doc=f"``{name}`` (kept in the task's ``_RareFields``).")


class TaskState:
    """What the scheduler knows of one key."""

    __slots__ = (
        "key",
        "run_spec",
        "state",
        "priority",
        "prefix",
        "dependencies",
        "dependents",
        "waiting_on",
        "waiters",
        "who_has",
        "processing_on",
        "who_wants",
        "nbytes",
        "type",
        "_rare",
    )

    exception = _rare_field("exception")
    traceback = _rare_field("traceback")
    exception_text = _rare_field("exception_text")
    traceback_text = _rare_field("traceback_text")
    exception_blame = _rare_field("exception_blame")  # TaskState | None
    retries = _rare_field("retries")
    suspicious = _rare_field("suspicious")  # how many worker deaths it was blamed for
    worker_restrictions = _rare_field("worker_restrictions")  # set | None
    loose_restrictions = _rare_field("loose_restrictions")
    resource_restrictions = _rare_field("resource_restrictions")  # dict | None
    erred_on = _rare_field("erred_on")  # Collection[str], see "Memory"
    actor = _rare_field("actor")  # its value is an actor: see SchedulerState.actor_homes

    def __init__(self, key, run_spec, prefix: str):
        self.key = key
        self.run_spec = run_spec
        self.state = "released"
        self.priority: tuple = ()
        self.prefix = prefix
        # Read-only outside this file; see "Memory" in the module docstring.
        self.dependencies: Collection[TaskState] = _EMPTY
        self.dependents: Collection[TaskState] = _EMPTY
        self.waiting_on: Collection[TaskState] = _EMPTY
        self.waiters: Collection[TaskState] = _EMPTY
        self.who_has: Collection[WorkerState] = _EMPTY
        self.processing_on: WorkerState | None = None
        self.who_wants: Collection[ClientState] = _EMPTY
        self.nbytes = -1
        self.type: str | None = None
        self._rare: _RareFields | None = None

    # Hash by key, not by id(): sets of tasks then iterate in the same order
    # on every run, so the state machine is deterministic (a failure found
    # by random testing reproduces).  Equality stays identity.  Not cached:
    # a str key caches its own hash, and a cached int costs ~40 bytes a task.
    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"

    @property
    def has_restrictions(self) -> bool:
        """Whether placement is not free: worker or resource restrictions,
        or an actor (placed where the fewest actors live, see
        ``decide_worker``)."""
        rare = self._rare
        return rare is not None and bool(rare.worker_restrictions or rare.resource_restrictions
                                         or rare.actor)


class WorkerState:
    """What the scheduler knows of one worker."""

    __slots__ = (
        "address",
        "name",
        "host",
        "nthreads",
        "memory_limit",
        "resources",
        "pid",
        "local_directory",
        "nanny",
        "has_what",
        "processing",
        "occupancy",
        "nbytes",
        "status",
        "last_seen",
        "metrics",
        "long_running",
        "server_id",
        "_hash",
        "_singleton",
    )

    def __init__(self, address: str, nthreads: int, name=None, memory_limit: int = 0,
                 resources: dict | None = None, pid: int = 0, host: str = "",
                 local_directory: str = "", nanny: str | None = None):
        self.address = address
        self.name = address if name is None else name
        self.host = host or address.split("://")[-1].rsplit(":", 1)[0]
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.resources = dict(resources or {})
        self.pid = pid
        self.local_directory = local_directory
        self.nanny = nanny
        self.has_what: dict[TaskState, None] = {}
        self.processing: dict[TaskState, float] = {}
        self.occupancy = 0.0
        self.nbytes = 0
        self.status = "running"
        self.last_seen = 0.0
        self.metrics: dict = {}
        self.long_running: set[TaskState] = set()
        self.server_id: str | None = None
        self._hash = hash(address)
        # The who_has of every task that only this worker holds.
        self._singleton = frozenset((self,))

    def __hash__(self) -> int:  # deterministic, see TaskState.__hash__
        return self._hash

    def __repr__(self) -> str:
        return (f"<WorkerState {self.address!r} name: {self.name}, "
                f"processing: {len(self.processing)}, memory: {len(self.has_what)}>")

    @property
    def ncores(self) -> int:
        return self.nthreads

    def identity(self) -> dict:
        return {
            "type": "Worker",
            "id": self.name,
            "name": self.name,
            "host": self.host,
            "nthreads": self.nthreads,
            "memory_limit": self.memory_limit,
            "resources": self.resources,
            "local_directory": self.local_directory,
            "pid": self.pid,
            "nanny": self.nanny,
            "metrics": self.metrics,
            "last_seen": self.last_seen,
        }


class ClientState:
    """A connected client and the keys it wants."""

    __slots__ = ("client_key", "wants_what", "last_seen", "_hash", "_singleton")

    def __init__(self, client_key: str):
        self.client_key = client_key
        self.wants_what: set[TaskState] = set()
        self.last_seen = 0.0
        self._hash = hash(client_key)
        # The who_wants of every task that only this client wants.
        self._singleton = frozenset((self,))

    def __hash__(self) -> int:  # deterministic, see TaskState.__hash__
        return self._hash

    def __repr__(self) -> str:
        return f"<ClientState {self.client_key!r} wants {len(self.wants_what)} keys>"

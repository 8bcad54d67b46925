"""Make the import map (``table.py``) work.

Theory of operation.  ``install()`` puts one finder in front of
``sys.meta_path``.  It looks only at module paths that the table names, and
at ``dask.distributed.<path>``:

* ``dask.distributed.<path>`` is answered with the module ``distributed.<path>``
  itself (dask's ``dask.distributed`` is a module re-exporting our top level;
  without this, ``from dask.distributed.protocol import dumps`` would load a
  second copy of our package under another name).
* A path that is a real module of ours is loaded as usual by the other
  finders; once it has run, it gets a module ``__getattr__`` (PEP 562) that
  answers the old names the table lists for it, so the module's own
  attributes always win and the table only fills gaps.  A ``__getattr__`` the
  module defines itself is kept and asked for every other name.
* A path that does not exist here becomes a module made from the table: its
  names resolve on first use, its ``__all__`` lists the names that are built.
  If all its names are pending and it has no submodules, importing it raises
  ImportError naming the issue that brings it.

Names resolve lazily, so ``import distributed`` stays cheap and a worker
process never imports the client or dask unless a name needs them.  A
resolved name is stored in the module, so the next access is a plain lookup.
A pending name raises ImportError (not AttributeError) so that both
``from distributed import progress`` and ``distributed.progress`` say which
issue builds it; for the same reason ``dir()`` and ``__all__`` list only
built names.

Thread rules: the import system serialises the loading of one module; name
resolution may run in several threads at once and is idempotent.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType

from distributed.compat.table import ALIASES, PENDING_PREFIX, TABLE

# typing costs more than the rest of ``import distributed`` together.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["install", "resolve", "module_functions", "attach", "public_names",
           "is_pending", "pending_message", "ImportMapFinder"]


def is_pending(target: str) -> bool:
    """Whether a table target marks a feature not built yet.

    >>> is_pending("pending: issue 13, diagnostics"), is_pending("time:time")
    (True, False)
    """
    return target.startswith(PENDING_PREFIX)


def _issue(target: str) -> str:
    """``'issue 13 (diagnostics)'`` from ``'pending: issue 13, diagnostics'``."""
    number, _, title = target[len(PENDING_PREFIX):].partition(", ")
    return f"{number} ({title})" if title else number


def pending_message(module_name: str, name: str, target: str) -> str:
    """The ImportError text for a name whose feature is not built yet.

    >>> pending_message("distributed", "progress", "pending: issue 13, diagnostics")
    "cannot import name 'progress' from 'distributed': it is not built yet here; issue 13 (diagnostics) brings it"
    """
    return (f"cannot import name {name!r} from {module_name!r}: it is not built yet here; "
            f"{_issue(target)} brings it")


def public_names(module_name: str) -> list[str]:
    """The names the table makes importable (built) from ``module_name``.

    >>> "time" in public_names("distributed.metrics")
    True
    """
    return sorted(name for name, target in TABLE.get(module_name, {}).items() if not is_pending(target))


def _has_submodules(module_name: str) -> bool:
    prefix = module_name + "."
    return any(path.startswith(prefix) for path in TABLE)


def _load_target(target: str, module_name: str, name: str) -> Any:
    if is_pending(target):
        raise ImportError(pending_message(module_name, name, target), name=module_name)
    home, _, attr = target.partition(":")
    module = importlib.import_module(home)
    if not attr:
        return module
    try:
        return vars(module)[attr]
    except KeyError:
        pass
    if home == module_name and attr == name:  # the table says "here", but it is not here
        raise AttributeError(f"module {module_name!r} has no attribute {name!r} (the import map "
                             f"says it lives in the module itself)")
    return getattr(module, attr)


def resolve(module_name: str, name: str) -> Any:
    """The object the table gives for ``from module_name import name``.

    Raises ImportError naming the issue for a pending name, AttributeError for
    a name the table does not list.

    >>> import time
    >>> resolve("distributed.metrics", "time") is time.time
    True
    """
    target = TABLE.get(module_name, {}).get(name)
    if target is None:
        raise AttributeError(f"the import map has no {name!r} in {module_name!r}")
    return _load_target(target, module_name, name)


def module_functions(module_name: str, namespace: dict, fallback: Callable | None = None,
                     dir_fallback: Callable | None = None) -> tuple[Callable, Callable]:
    """A module ``__getattr__`` and ``__dir__`` answering the table's names.

    ``namespace`` is the module's ``__dict__`` (a resolved name is stored
    there); ``fallback`` is the module's own ``__getattr__``, asked for names
    the table does not list.

    >>> ns = {}
    >>> getattr_, dir_ = module_functions("distributed.metrics", ns)
    >>> getattr_("time") is ns["time"]
    True
    """
    entries = TABLE.get(module_name, {})

    def __getattr__(name: str) -> Any:
        target = entries.get(name)
        # A name the module makes itself on first use (its own __getattr__)
        # is listed as living in the module: ask the module.
        if target is None or (fallback is not None and target == f"{module_name}:{name}"):
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = _load_target(target, module_name, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        names = set(dir_fallback()) if dir_fallback is not None else set(namespace)
        return sorted(names.union(public_names(module_name)))

    __getattr__._import_map_fallback = (fallback, dir_fallback)  # type: ignore[attr-defined]
    return __getattr__, __dir__


class _MapModule(ModuleType):
    """A module one of whose old names is also an old submodule path (the
    function ``distributed.worker_client`` and the module
    ``distributed.worker_client``): importing the submodule must not replace
    the name, as it did not in dask.distributed."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            target = TABLE.get(self.__name__, {}).get(name)
            if target is not None and target != value.__name__:
                return  # the import system binding the submodule; the table's name stays
        super().__setattr__(name, value)


def _guard_names(module: ModuleType) -> None:
    name = module.__name__
    if type(module) is ModuleType and any(f"{name}.{attr}" in TABLE for attr in TABLE.get(name, ())):
        module.__class__ = _MapModule


def attach(module: ModuleType) -> None:
    """Give a module of ours the table's names for its path (again after a
    reload, without stacking).

    >>> import types
    >>> m = types.ModuleType("distributed.metrics")
    >>> attach(m)
    >>> import time; m.time is time.time
    True
    """
    ns = module.__dict__
    own_getattr, own_dir = ns.get("__getattr__"), ns.get("__dir__")
    previous = getattr(own_getattr, "_import_map_fallback", None)
    if previous is not None:
        own_getattr, own_dir = previous
    ns["__getattr__"], ns["__dir__"] = module_functions(module.__name__, ns, own_getattr, own_dir)
    _guard_names(module)


def _alias_target(fullname: str) -> str | None:
    for prefix, ours in ALIASES.items():
        if fullname.startswith(prefix + "."):
            return ours + fullname[len(prefix):]
    return None


class _AliasLoader:
    """Loads ``dask.distributed.<path>`` as the module ``distributed.<path>``."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the module ran when it was imported under its own name


class _RealLoader:
    """A real module's own loader, then the table's names attached."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        if "__all__" not in module.__dict__:  # a bare package: star-import what the table gives
            module.__all__ = public_names(module.__name__)
        attach(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self.loader, name)


class _TableLoader:
    """Builds a module that exists only in the table."""

    def create_module(self, spec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        entries = TABLE[name]
        if entries and not public_names(name) and not _has_submodules(name):
            issues = sorted({_issue(t) for t in entries.values()})
            raise ImportError(f"No module named {name!r} yet: {', '.join(sorted(entries))} "
                              f"{'is' if len(entries) == 1 else 'are'} not built yet here; "
                              f"{' and '.join(issues)} brings it", name=name)
        module.__doc__ = (f"Old import path {name}, kept by the import map "
                          f"(distributed/compat/table.py; see docs/import-map.rst).")
        module.__all__ = public_names(name)
        attach(module)


class ImportMapFinder:
    """The ``sys.meta_path`` finder of the import map (see the module docs)."""

    _is_import_map = True

    def find_spec(self, fullname: str, path=None, target=None):
        alias = _alias_target(fullname)
        if alias is not None:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(alias))
        if fullname not in TABLE:
            return None
        spec = self._real_spec(fullname, path, target)
        if spec is not None:
            if hasattr(spec.loader, "exec_module") and not isinstance(spec.loader, _RealLoader):
                spec.loader = _RealLoader(spec.loader)
            return spec
        return importlib.machinery.ModuleSpec(fullname, _TableLoader(),
                                              is_package=_has_submodules(fullname))

    def _real_spec(self, fullname: str, path, target):
        for finder in list(sys.meta_path):
            if getattr(finder, "_is_import_map", False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            # A directory without __init__.py (a namespace package: origin
            # None) is leftover, not a module of ours: the table wins.
            if spec is not None and spec.origin is not None:
                return spec
        return None


def install() -> None:
    """Put the finder in front of ``sys.meta_path`` (once)."""
    if not any(getattr(f, "_is_import_map", False) for f in sys.meta_path):
        sys.meta_path.insert(0, ImportMapFinder())


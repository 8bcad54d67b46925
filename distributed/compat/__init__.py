"""Old import paths, kept working from one table.

Users import names from where dask.distributed kept them in 2016 and in
2024-2026 (``distributed.lock.Lock``, ``distributed.client.wait``,
``distributed.metrics.time``, ...).  Our modules are laid out differently, so
``table.py`` maps every such (old module, name) to its home here, ``hook.py``
makes those imports work (an import hook plus module ``__getattr__``), and
``docs.py`` writes ``docs/import-map.rst`` from the same table.

This package is imported by ``import distributed`` itself, so it imports
nothing heavy: the homes are imported only when a name is first used.
"""

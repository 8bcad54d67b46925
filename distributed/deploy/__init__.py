"""Ways to start clusters: ``local.py`` (LocalCluster, processes or threads).

``from distributed.deploy import LocalCluster`` and the other names user code
imports from here come from the import map (distributed/compat/table.py,
listed in docs/import-map.rst), on first use.
"""

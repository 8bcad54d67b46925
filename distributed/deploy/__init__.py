"""Ways to start clusters: ``cluster.py`` (the ``Cluster`` base), ``spec.py``
(``SpecCluster``, ``ProcessInterface``), ``local.py`` (``LocalCluster``, a
SpecCluster of processes or threads here), ``adaptive.py`` and
``adaptive_core.py`` (``Adaptive``), ``ssh.py`` (``SSHCluster``).

``from distributed.deploy import LocalCluster`` and the other names user code
imports from here come from the import map (distributed/compat/table.py,
listed in docs/import-map.rst), on first use.
"""

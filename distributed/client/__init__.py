"""The Client and its helpers: ``Client``, ``default_client``,
``get_client``, ``worker_client``.

The Client is written by concern: ``core`` (connection, lifecycle, reports,
reference counts), ``submission``, ``data``, ``control`` and
``introspection``.

>>> from distributed.client import Client
>>> client = Client()            # doctest: +SKIP
"""
from distributed.client.core import Client, default_client, get_client, worker_client

__all__ = ["Client", "default_client", "get_client", "worker_client"]

"""Versions of Python and of the packages a cluster's processes must agree on.

>>> sorted(local_versions())[:3]
['cloudpickle', 'distributed', 'msgpack']
"""
from __future__ import annotations

import platform

from distributed._version import __version__

__all__ = ["local_versions"]


def local_versions() -> dict:
    """The versions in this process: Python and the required packages.

    >>> local_versions()["distributed"] == __version__
    True
    """
    import cloudpickle
    import msgpack
    import tornado

    return {
        "python": platform.python_version(),
        "distributed": __version__,
        "tornado": tornado.version,
        "msgpack": ".".join(map(str, msgpack.version)),
        "cloudpickle": cloudpickle.__version__,
    }

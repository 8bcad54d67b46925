"""Sphinx configuration for the distributed documentation.

Build with ``sphinx-build -b html docs docs/_build/html`` from the
repository root (the package must be importable, e.g. after
``pip install -e .``; the repository root is also put on ``sys.path``).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "distributed"
author = "the distributed developers"
copyright = "the distributed developers"

try:
    from distributed import __version__ as release
except Exception:  # docs can still be built, without API pages
    release = "unknown"
version = release

extensions = ["sphinx.ext.autodoc"]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

pygments_style = "sphinx"
html_title = f"distributed {release}"

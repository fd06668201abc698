"""Sphinx configuration of the uqrecon API reference.

Build (no network needed; warnings are errors, as in ``tests/test_docs.py``)::

    JAX_PLATFORMS=cpu python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

project = "uqrecon"
author = "uqrecon developers"
copyright = "uqrecon developers"

import uqrecon  # noqa: E402

release = version = uqrecon.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Google-style docstrings only; "Args:"/"Returns:" become field lists.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures keep type hints as written (strings), so no annotation has to resolve.
autodoc_type_aliases = {}
# Default values such as jnp.complex64 or large tuples print as they are.
autodoc_preserve_defaults = True

# No network: no intersphinx, nothing fetched at build time.
html_theme = "alabaster"
html_static_path = []
html_title = f"uqrecon {release}"

# interfaces.md links to source files and headings; those are not documents here.
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]

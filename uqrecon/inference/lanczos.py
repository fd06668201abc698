"""Matrix-free symmetric eigensolvers, re-exported from :mod:`uqrecon.linalg`.

:func:`~uqrecon.linalg.lanczos_eigh`, :func:`~uqrecon.linalg.randomized_eigh` and
:class:`~uqrecon.linalg.Eigh` live in the numerical ground floor; this module keeps their
old import path.
"""

from __future__ import annotations

from ..linalg import Eigh, lanczos_eigh, randomized_eigh

__all__ = ["Eigh", "lanczos_eigh", "randomized_eigh"]

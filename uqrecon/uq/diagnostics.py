"""MCMC diagnostics (R-hat, ESS, Welford): :mod:`uqrecon.diagnostics` under its old path.

The array-level diagnostics live below the inference layer (the sampler runner computes
them when it makes a Result), in :mod:`uqrecon.diagnostics`. This module *is* that
module: importing ``uqrecon.uq.diagnostics`` binds the same module object, so user
imports, attribute access and monkeypatching (e.g. ``_CHUNK_ELEMENTS``) act on the one
implementation.
"""

import sys

from uqrecon import diagnostics as _diagnostics

sys.modules[__name__] = _diagnostics

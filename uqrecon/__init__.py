"""uqrecon: Bayesian uncertainty quantification for imaging inverse problems in JAX.

The top level re-exports the public surface; submodules load on first use so that
``import uqrecon`` stays cheap (samplers pull in blackjax, deep UQ pulls in flax).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Posterior": "uqrecon.models.posterior",
    "map_estimate": "uqrecon.map",
    "sample": "uqrecon.inference.sample",
    "approximate": "uqrecon.inference.approximate",
    "compare": "uqrecon.uq.compare",
    "compare_table": "uqrecon.uq.compare",
    "Result": "uqrecon.result",
    "make_problem": "uqrecon.problems",
}

_SUBMODULES = {"operators", "models", "inference", "uq", "gold", "deep", "phantoms",
               "problems", "report", "result", "cli", "noise", "linalg", "diagnostics",
               "catalogue", "interop"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = import_module(f"uqrecon.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'uqrecon' has no attribute {name!r}")


def __dir__():
    return __all__

"""uqrecon: Bayesian uncertainty quantification for imaging inverse problems in JAX."""

__version__ = "0.1.0"

"""Inference methods: MCMC samplers, exact Gaussian draws, one chunked runner."""

from .runner import RunOutput, run_chains
from .sample import METHODS, sample

__all__ = ["sample", "METHODS", "run_chains", "RunOutput"]

"""Inference methods: MCMC samplers, exact Gaussian draws, one chunked runner."""

from .runner import RunOutput, run_chains
from .sample import METHODS, sample
from .samplers import gsm as _gsm


def _build_gsm(post, key, cfg, num_chains, dtype):
    """``method="gsm"``: the exact TV / l1-wavelet sampler (see samplers/gsm.py)."""
    from .sample import _Built
    sampler, params, init, used, setup = _gsm.build(post, key, cfg, num_chains, dtype)
    return _Built(sampler, params, init, used, setup)


METHODS.setdefault("gsm", _build_gsm)

__all__ = ["sample", "METHODS", "run_chains", "RunOutput"]

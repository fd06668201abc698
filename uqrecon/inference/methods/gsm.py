"""The exact TV / l1-wavelet sampler (:mod:`..samplers.gsm`): options and set-up."""

from __future__ import annotations

import math

import jax.numpy as jnp

from ..samplers import gsm as _gsm
from . import common


def build(post, key, cfg, num_chains, dtype):
    """The exact TV / l1-wavelet sampler (:mod:`..samplers.gsm`). Chains start at
    independent N(0, init_jitter^2) images by default: an over-dispersed start for R-hat."""
    _gsm.check_gsm_posterior(post)
    tol = common.pop_positive(cfg, "tol", _gsm.default_tol(dtype))
    if not tol < 1:
        raise ValueError(f"'tol' must be a number in (0, 1), got {tol!r}")
    maxiter = common.pop_int(cfg, "maxiter", 1000, 1)
    dense_max = common.pop_int(cfg, "dense_max", _gsm.GSM_DENSE_MAX, 0)
    coarse = cfg.pop("coarse", "auto")
    _gsm.coarse_blocks(tuple(post.shape), coarse)        # validated before any work
    hmc_moves = common.pop_int(cfg, "hmc_moves", 0, 0)
    hmc_steps = common.pop_int(cfg, "hmc_steps", _gsm.GSM_HMC_STEPS, 1)
    hmc_step_size = common.pop_positive(cfg, "hmc_step_size", None)
    hmc_smoothing = common.pop_positive(cfg, "hmc_smoothing", None)
    init, jitter = common.pop_init(cfg, 0.1)
    common.reject_unknown(cfg, "gsm")
    zeros = jnp.zeros(tuple(post.shape), dtype)
    init, _ = common.init_positions(post, key, init, jitter, num_chains, dtype,
                              unconstrained=False, ref=zeros)
    params, spent = _gsm.gsm_params(post, tol, maxiter, dense_max, coarse, hmc_moves,
                                    hmc_steps, hmc_step_size, hmc_smoothing)
    return common.Built(_gsm.GSM, params, init,
                        {"tol": tol, "maxiter": maxiter, "preconditioner": params.kind,
                         "dense_max": dense_max, "coarse_blocks": params.coarse_blocks,
                         "dense_normal": params.normal is not None,
                         "hmc_moves": hmc_moves, "hmc_steps": hmc_steps,
                         "hmc_step_size": float(params.hmc_step_size),
                         "hmc_smoothing": float(params.hmc_smoothing)},
                        {"num_grad_evals_setup": math.ceil(spent / 2)})

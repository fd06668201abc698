"""ChEES-HMC (:mod:`..samplers.chees`): options, set-up and the cross-chain tuning."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from ..samplers import chees as _chees
from . import common


def build(post, key, cfg, num_chains, dtype, num_warmup):
    """ChEES-HMC (:mod:`..samplers.chees`): preconditioned and started like NUTS; the step
    size and trajectory length are tuned across all chains in the set-up by blackjax's
    ``chees_adaptation`` over ``num_warmup`` iterations, and the runner does no warmup
    (the tuning's gradients are ``num_grad_evals_warmup``)."""
    common.require_smooth(post, "chees")
    if num_chains < 2:
        raise ValueError("method='chees' tunes its trajectory length across chains: "
                         f"'num_chains' must be >= 2 (4 or more advised), got {num_chains}")
    pc_name, rank = common.pop_preconditioner(cfg, post)
    init, jitter = common.pop_init(cfg, None)
    diag = common.pop_bool(cfg, "diagonal_preconditioning", False)
    # 0.651: the optimal acceptance of HMC in high dimension (Beskos et al. 2013), the
    # ChEES paper's choice; 0.025: Adam's rate on the log trajectory length (TFP's default)
    target = common.pop_unit(cfg, "target_acceptance", 0.651)
    rate = common.pop_positive(cfg, "learning_rate", 0.025)
    step = common.pop_positive(cfg, "step_size", 0.5)
    cap = common.pop_int(cfg, "max_leapfrog_steps", 1000, 1)
    common.reject_unknown(cfg, "chees")
    common.check_tuning_warmup("chees", num_warmup, "its step size and trajectory length")

    k_init, k_pc, k_tune = jax.random.split(key, 3)
    whitened, init, used, setup_grads = common.whitened_start(
        post, k_pc, k_init, pc_name, rank, init, jitter, num_chains, dtype)
    images, step_size, num_leapfrog, imm, start, spent, capped = _chees.tune_chees(
        whitened, init, k_tune, jnp.asarray(step, dtype), jnp.asarray(rate, dtype),
        jnp.asarray(target, dtype), num_steps=num_warmup, diagonal_preconditioning=diag,
        max_leapfrog_steps=cap)
    params = _chees.CheesParams(whitened, step_size, num_leapfrog, imm, start)
    # the criterion wanted longer trajectories than max_leapfrog_steps allowed for most
    # of the tuning's second half: the chain stays exact, but its tuning was held back
    held = float(capped)
    if held > 0.5:
        warnings.warn(f"method='chees': 'max_leapfrog_steps'={cap} held the trajectory "
                      f"length for {held:.0%} of the tuning's second half; the chain stays "
                      "exact but may mix slowly: raise max_leapfrog_steps",
                      RuntimeWarning, stacklevel=3)
    used.update(target_acceptance=target, learning_rate=rate, max_leapfrog_steps=cap,
                diagonal_preconditioning=diag, step_size=float(step_size),
                num_leapfrog=float(num_leapfrog), tuning_held_at_cap=held,
                trajectory_length=float(step_size * num_leapfrog))
    # every chain integrated the same number of leapfrog steps in every iteration
    return common.Built(_chees.CHEES, params, images, used,
                        {"num_grad_evals_setup": setup_grads,
                         "num_grad_evals_warmup": num_chains * int(spent)}, num_warmup=0)

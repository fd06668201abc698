"""MCLMC and MAMS (:mod:`..samplers.mclmc`): options, set-up and blackjax's tuning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..samplers import mclmc as _mclmc
from . import common

def _family(kind):
    """MCLMC (unadjusted) or MAMS (adjusted) on ``z``, preconditioned and started like
    NUTS; ``L`` and the step size are tuned in the set-up by blackjax's tuners over
    ``num_warmup`` steps per chain (:mod:`..samplers.mclmc`), and the runner does no
    warmup: the tuning's gradients are reported as ``num_grad_evals_warmup``."""
    def build(post, key, cfg, num_chains, dtype, num_warmup):
        common.require_smooth(post, kind)
        pc_name, rank = common.pop_preconditioner(cfg, post)
        init, jitter = common.pop_init(cfg, None)
        diag = common.pop_bool(cfg, "diagonal_preconditioning", False)
        if kind == "mclmc":
            energy_var = common.pop_positive(cfg, "desired_energy_var", 5e-4)
        else:
            target = common.pop_unit(cfg, "target_acceptance", 0.9)
            avg_steps = common.pop_positive(cfg, "num_integration_steps", 2.0)
            if not avg_steps > 1.1:   # blackjax's floor on L / step_size
                raise ValueError(f"'num_integration_steps' must be > 1.1 (blackjax's "
                                 f"floor on L / step_size), got {avg_steps!r}")
        common.reject_unknown(cfg, kind)
        common.check_tuning_warmup(kind, num_warmup, "L and the step size")

        k_init, k_pc, k_tune = jax.random.split(key, 3)
        whitened, init, used, setup_grads = common.whitened_start(
            post, k_pc, k_init, pc_name, rank, init, jitter, num_chains, dtype)
        keys = jax.random.split(k_tune, num_chains)
        if kind == "mclmc":
            # blackjax's three phases (step size, variance, L from the autocorrelation)
            # take a third of num_warmup each
            images, L, step, imm, steps = _mclmc.tune_mclmc(
                whitened, init, keys, jnp.asarray(energy_var, dtype),
                num_steps=num_warmup, diagonal_preconditioning=diag)
            params = _mclmc.MCLMCParams(whitened, *_pool_tuned(L, step, imm))
            sampler = _mclmc.MCLMC
            used["desired_energy_var"] = energy_var
        else:
            # two dual-averaging passes (2/3 + 1/3 of num_warmup trajectories)
            images, L, step, imm, steps = _mclmc.tune_mams(
                whitened, init, keys, jnp.asarray(target, dtype),
                jnp.asarray(avg_steps, dtype), num_steps=num_warmup,
                diagonal_preconditioning=diag)
            params = _mclmc.MAMSParams(whitened, *_pool_tuned(L, step, imm))
            sampler = _mclmc.MAMS
            used.update(target_acceptance=target, num_integration_steps=avg_steps)
        used.update(diagonal_preconditioning=diag, L=float(params.L),
                    step_size=float(params.step_size),
                    L_per_chain=np.asarray(L).tolist(),
                    step_size_per_chain=np.asarray(step).tolist())
        warmup_grads = _mclmc.GRADS_PER_STEP * int(np.sum(np.asarray(steps, np.int64)))
        return common.Built(sampler, params, images, used,
                            {"num_grad_evals_setup": setup_grads,
                             "num_grad_evals_warmup": warmup_grads}, num_warmup=0)
    return build

@jax.jit
def _pool_tuned(L, step, imm):
    """One ``(L, step_size, inverse_mass_matrix)`` for all chains: the medians of the
    per-chain tuned values (same target, so they differ by tuning noise only)."""
    return jnp.median(L), jnp.median(step), jnp.median(imm, axis=0)


build_mclmc = _family("mclmc")
build_mams = _family("mams")

"""NUTS and HMC (:mod:`..samplers.hmc`) on whitened coordinates: options and set-up."""

from __future__ import annotations

import math

import jax

from ..samplers import hmc as _hmc
from . import common

# NUTS's default maximum tree depth after the dense (exact for linear-Gaussian) whitening:
# 31 leapfrog steps, about one period of the whitened dynamics at the step sizes dual
# averaging finds (0.19-0.24 at 64x64); see the note in samplers/hmc.py's nuts()
NUTS_DENSE_MAX_DOUBLINGS = 5


def _family(kind):
    def build(post, key, cfg, num_chains, dtype):
        common.require_smooth(post, kind)
        pc_name, rank = common.pop_preconditioner(cfg, post)
        init, jitter = common.pop_init(cfg, None)
        target = common.pop_unit(cfg, "target_acceptance", None)
        if kind == "nuts":
            depth = common.pop_int(cfg, "max_num_doublings", None, 1)
            if depth is None:
                depth = NUTS_DENSE_MAX_DOUBLINGS if pc_name == "dense" else 10
            given = common.pop(cfg, "step_size_jitter", 0.0)
            try:
                sjitter = float(given)
            except (TypeError, ValueError):
                sjitter = float("nan")
            if not 0.0 <= sjitter < 1.0:
                raise ValueError(f"'step_size_jitter' must be in [0, 1), got {given!r}")
            target = 0.8 if target is None else target
        else:
            steps = common.pop_int(cfg, "num_integration_steps", None, 1)
            path = common.pop_positive(cfg, "path_length", None)
            if path is None and steps is None and pc_name == "dense":
                # a quarter period of the whitened Gaussian; a low-rank whitening leaves
                # soft directions with std >> 1, where this path would be far too short
                path = math.pi / 2
            # 0.65: the optimal acceptance of HMC in high dimension (Beskos et al. 2013)
            target = (0.65 if path is not None else 0.8) if target is None else target
            steps = 16 if steps is None else steps
        # the start of the step-size adaptation; with num_warmup=0 it is the step used
        # (how gold.mcmc_reference continues a chain with the step of its first round)
        step = common.pop_positive(cfg, "step_size", 0.5)
        common.reject_unknown(cfg, kind)

        k_init, k_pc = jax.random.split(key)
        whitened, init, used, setup_grads = common.whitened_start(
            post, k_pc, k_init, pc_name, rank, init, jitter, num_chains, dtype)
        if kind == "nuts":
            sampler, params = _hmc.nuts(whitened, depth, initial_step_size=step,
                                        target_acceptance=target, dtype=dtype,
                                        step_size_jitter=sjitter)
            used.update(max_num_doublings=depth, step_size_jitter=float(sjitter))
        else:
            sampler, params = _hmc.hmc(whitened, steps, initial_step_size=step,
                                       target_acceptance=target, dtype=dtype,
                                       path_length=path)
            used.update({"path_length": float(path)} if path is not None
                        else {"num_integration_steps": steps})
        used.update(target_acceptance=target, initial_step_size=float(step))
        return common.Built(sampler, params, init, used, {"num_grad_evals_setup": setup_grads})
    return build


build_nuts = _family("nuts")
build_hmc = _family("hmc")

"""ULA and MALA (:mod:`..samplers.langevin`): options and set-up."""

from __future__ import annotations

import jax

from ..samplers import langevin as _langevin
from . import common


def build_ula(post, key, cfg, num_chains, dtype):
    common.require_smooth(post, "ula")
    if post.constraint is not None:
        raise ValueError("method 'ula' steps on the smooth potential and would leave the "
                         "posterior's constraint out; use 'myula'/'skrock' (projection "
                         "prox) or 'mala'/'nuts'/'hmc' (unconstrained space)")
    step = common.pop(cfg, "step_size", None)
    init, jitter = common.pop_init(cfg, 0.1)
    common.reject_unknown(cfg, "ula")
    k_init, k_l = jax.random.split(key)
    step = step if step is not None else 1.0 / common.lipschitz(post, k_l)
    init, grads = common.init_positions(post, k_init, init, jitter, num_chains, dtype,
                                  unconstrained=False)
    sampler, params = _langevin.ula(post, step, dtype)
    return common.Built(sampler, params, init, {"step_size": step},
                        {"num_grad_evals_setup": grads})


def build_mala(post, key, cfg, num_chains, dtype):
    """MALA on ``z`` (preconditioned like NUTS); the initial step is 1 for a whitening
    preconditioner and ``1/L`` without one."""
    common.require_smooth(post, "mala")
    pc_name, rank = common.pop_preconditioner(cfg, post)
    init, jitter = common.pop_init(cfg, None)
    step = common.pop(cfg, "step_size", None)
    target = common.pop_unit(cfg, "target_acceptance", 0.574)
    common.reject_unknown(cfg, "mala")
    k_init, k_l, k_pc = jax.random.split(key, 3)
    whitened, init, used, setup_grads = common.whitened_start(
        post, k_pc, k_init, pc_name, rank, init, jitter, num_chains, dtype)
    if step is None:
        step = 1.0 / common.lipschitz(post, k_l) if pc_name == "identity" else 1.0
    sampler, params = _langevin.mala(whitened, step, target, dtype)
    used.update(initial_step_size=float(step), target_acceptance=target)
    return common.Built(sampler, params, init, used, {"num_grad_evals_setup": setup_grads})

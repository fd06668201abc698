"""MYULA and SK-ROCK (:mod:`..samplers.proximal`): options, default steps and set-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..samplers import proximal as _proximal
from . import common


def _family(kind):
    def build(post, key, cfg, num_chains, dtype):
        box = common.pop(cfg, "box", None)
        lam = common.pop_positive(cfg, "lam", None)
        stages = common.pop_int(cfg, "stages", 10, 1) if kind == "skrock" else 1
        eta = common.pop_positive(cfg, "eta", 0.05) if kind == "skrock" else 0.0
        frac = common.pop_positive(cfg, "step_fraction", 0.9 if kind == "skrock" else 1.0)
        step = common.pop(cfg, "step_size", None)
        init, jitter = common.pop_init(cfg, 0.1)
        common.reject_unknown(cfg, kind)
        if kind == "skrock" and step is None and _proximal.skrock_max_step(1.0, stages,
                                                                          eta) <= 0:
            raise ValueError(f"'stages'={stages} has no stable default SK-ROCK step (eta="
                             f"{eta}); use stages >= 2 or pass 'step_size'")
        k_init, k_l = jax.random.split(key)
        proxes = tuple(post.nonsmooth)
        if box is not None:
            proxes += (_proximal.Box(jnp.asarray(box[0], dtype), jnp.asarray(box[1], dtype)),)
        L = common.lipschitz(post, k_l)
        lam = 1.0 / L if lam is None else lam
        L_total = L + len(proxes) / lam
        if step is None:
            step = frac * (_proximal.skrock_max_step(L_total, stages, eta)
                           if kind == "skrock" else 1.0 / L_total)
        step = float(step)
        init, grads = common.init_positions(post, k_init, init, jitter, num_chains, dtype,
                                      unconstrained=False)
        if kind == "skrock":
            sampler, params = _proximal.skrock(post, proxes, lam, step, stages, eta, dtype)
            used = {"stages": stages, "eta": eta}
        else:
            sampler, params = _proximal.myula(post, proxes, lam, step, dtype)
            used = {}
        used.update(lam=lam, step_size=step, lipschitz=L, num_prox_terms=len(proxes))
        return common.Built(sampler, params, init, used, {"num_grad_evals_setup": grads})
    return build


build_myula = _family("myula")
build_skrock = _family("skrock")

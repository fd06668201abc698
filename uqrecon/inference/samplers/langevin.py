"""Langevin samplers: ULA (unadjusted) and MALA (Metropolis-adjusted, blackjax kernel).

ULA's step is set from the Lipschitz constant L of the gradient (default 1/L, inside the
stability bound 2/L); its bias shrinks with the step. MALA tunes its step during warmup
to the optimal-scaling acceptance 0.574 (Roberts & Rosenthal 1998), then freezes it.

Both are :class:`~.base.Sampler` bundles of module-level functions (:data:`ULA`,
:data:`MALA`); the problem travels in ``params`` (:class:`ULAParams`,
:class:`MALAParams`), so runs on same-shaped problems share one compilation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from .base import (Sampler, StepInfo, as_float, check_positive, check_unit_interval,
                   image_init, image_position, tuned_finish_warmup, tuned_init, tuned_step)

__all__ = ["ULA", "ULAParams", "ula", "MALA", "MALAParams", "mala"]


class ULAParams(NamedTuple):
    """``target``: any pytree with ``grad_smooth_potential(x)`` (a Posterior);
    ``step_size``: the step ``h`` (an array)."""

    target: Any
    step_size: jax.Array


def _ula_step(key, x, params: ULAParams):
    """``x' = x - h grad U(x) + sqrt(2h) xi``; one gradient a step."""
    h = params.step_size.astype(x.dtype)
    xi = jax.random.normal(key, x.shape, x.dtype)
    x_new = x - h * params.target.grad_smooth_potential(x) + jnp.sqrt(2 * h) * xi
    return x_new, StepInfo(jnp.ones((), x.dtype), jnp.int32(1), jnp.bool_(False), h)


ULA = Sampler(init=image_init, step=_ula_step, position=image_position)


def ula(target, step_size: float, dtype=jnp.float32):
    """``(ULA, ULAParams)``: unadjusted Langevin on ``target`` with step ``step_size``."""
    return ULA, ULAParams(target, as_float(check_positive("step_size", step_size), dtype))


class MALAParams(NamedTuple):
    """``target``: a :class:`~.base.Whitened` (or any pytree with ``logdensity(z)``,
    ``to_image(z)``, ``from_image(x)``); the chain runs on ``z``."""

    target: Any
    initial_step_size: jax.Array
    target_acceptance: jax.Array


def _mala_init(key, x, params: MALAParams):
    z = params.target.from_image(x)
    return tuned_init(blackjax.mala.init(z, params.target.logdensity),
                      params.initial_step_size, params.target_acceptance)


def _mala_inner(key, state, step_size, params: MALAParams):
    """blackjax's MALA kernel (built while tracing, from the traced target); one gradient
    a step (the proposal's; the current one is cached in the state)."""
    kernel = blackjax.mala.build_kernel()
    new, info = kernel(key, state, params.target.logdensity, step_size)
    return new, StepInfo(info.acceptance_rate.astype(step_size.dtype), jnp.int32(1),
                         jnp.bool_(False), step_size)


def _mala_step(key, state, params: MALAParams):
    return tuned_step(_mala_inner, key, state, params, params.target_acceptance)


def _mala_position(state, params: MALAParams):
    return params.target.to_image(state.inner.position)


MALA = Sampler(init=_mala_init, step=_mala_step, position=_mala_position,
               finish_warmup=tuned_finish_warmup)


def mala(target, initial_step_size: float, target_acceptance: float = 0.574,
         dtype=jnp.float32):
    """``(MALA, MALAParams)``: blackjax MALA with the step tuned by dual averaging during
    warmup. The step convention is blackjax's: ``z' = z + h grad log p + sqrt(2h) xi``."""
    return MALA, MALAParams(
        target, as_float(check_positive("step_size", initial_step_size), dtype),
        as_float(check_unit_interval("target_acceptance", target_acceptance), dtype))

"""Langevin samplers: ULA (unadjusted) and MALA (Metropolis-adjusted, blackjax kernel).

ULA's step is set from the Lipschitz constant L of the gradient (default 1/L, inside the
stability bound 2/L); its bias shrinks with the step. MALA tunes its step during warmup
to the optimal-scaling acceptance 0.574 (Roberts & Rosenthal 1998), then freezes it.
"""

from __future__ import annotations

from typing import Callable

import blackjax
import jax
import jax.numpy as jnp

from .base import (LegacySampler, StepInfo, as_float,
                   with_step_size_adaptation)

__all__ = ["ula", "mala"]


def ula(grad_potential: Callable, step_size: float, dtype=jnp.float32) -> LegacySampler:
    """Unadjusted Langevin: ``x' = x - h grad U(x) + sqrt(2h) xi``; one gradient a step."""
    h = as_float(step_size, dtype)

    def step(key, x):
        xi = jax.random.normal(key, x.shape, x.dtype)
        x_new = x - h * grad_potential(x) + jnp.sqrt(2 * h) * xi
        return x_new, StepInfo(jnp.ones((), dtype), jnp.int32(1), jnp.bool_(False), h)

    return LegacySampler(init=lambda key, x: x, step=step, position=lambda x: x)


def mala(logdensity: Callable, initial_step_size: float, target_acceptance: float = 0.574,
         dtype=jnp.float32) -> LegacySampler:
    """MALA from blackjax with the step tuned by dual averaging during warmup.

    The step convention is blackjax's: ``x' = x + h grad log p + sqrt(2h) xi``.
    One gradient evaluation per step (the proposal's; the current one is cached).
    """
    kernel = blackjax.mala.build_kernel()

    def inner_step(key, state, step_size):
        new, info = kernel(key, state, logdensity, step_size)
        return new, StepInfo(info.acceptance_rate.astype(dtype), jnp.int32(1),
                             jnp.bool_(False), step_size)

    return with_step_size_adaptation(
        inner_init=lambda key, x: blackjax.mala.init(x, logdensity),
        inner_step=inner_step, position=lambda s: s.position,
        initial_step_size=initial_step_size, target_acceptance=target_acceptance,
        dtype=dtype)

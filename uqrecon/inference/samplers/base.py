"""The sampler protocol shared by every MCMC method, and step-size adaptation.

A :class:`Sampler` is a bundle of pure functions in blackjax style. The runner
(:mod:`uqrecon.inference.runner`) only ever calls these, so every method (NUTS, MALA,
SK-ROCK, Gibbs, exact draws) runs through the same chunked, checkpointed loop.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import dual_averaging_adaptation

__all__ = ["StepInfo", "Sampler", "TunedState", "with_step_size_adaptation", "as_float"]


class StepInfo(NamedTuple):
    """What one transition reports: the runner accumulates these per chain."""

    acceptance: jax.Array      # Metropolis acceptance probability (1.0 if unadjusted)
    num_grad_evals: jax.Array  # gradient evaluations spent in this transition (int32)
    divergent: jax.Array       # bool: energy error past the divergence threshold
    step_size: jax.Array       # step size used


class Sampler(NamedTuple):
    """Pure functions that define a Markov chain (or an i.i.d. stream) on images.

    ``init(key, x) -> state``; ``step(key, state) -> (state, StepInfo)``, the same
    function in warmup and sampling (adaptive samplers carry an ``adapting`` flag in their
    state, so warmup and sampling share one compiled chunk); ``finish_warmup(state) ->
    state`` freezes the tuning; ``position(state) -> image``; ``trace(state) -> dict`` of
    scalars kept per kept draw (e.g. Gibbs hyperparameters).

    ``draw(key) -> image`` (optional) marks an i.i.d. stream whose step is
    ``position(step(key, s)) == draw(key)`` whatever the state: the runner then makes a
    whole chunk of draws at once (one matrix product instead of one matvec per step).
    """

    init: Callable[[jax.Array, jax.Array], Any]
    step: Callable
    position: Callable
    finish_warmup: Callable = lambda state: state
    trace: Callable = lambda state: {}
    draw: Callable | None = None


class TunedState(NamedTuple):
    """A kernel state with a step size tuned by dual averaging while ``adapting``."""

    inner: Any
    step_size: jax.Array
    da: Any
    adapting: jax.Array


def as_float(value, dtype) -> jax.Array:
    return jnp.asarray(value, dtype=dtype)


def with_step_size_adaptation(inner_init: Callable, inner_step: Callable,
                              position: Callable, initial_step_size: float,
                              target_acceptance: float, dtype) -> Sampler:
    """Wrap ``inner_step(key, state, step_size) -> (state, StepInfo)`` into a Sampler
    whose warmup tunes the step size to ``target_acceptance`` by dual averaging
    (Hoffman & Gelman 2014), then freezes it at the averaged value."""
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance)

    def init(key, x):
        step = as_float(initial_step_size, dtype)
        return TunedState(inner_init(key, x), step, da_init(step), jnp.bool_(True))

    def step(key, state):
        inner, info = inner_step(key, state.inner, state.step_size)
        acc = jnp.where(jnp.isfinite(info.acceptance), info.acceptance, 0.0)
        da = jax.tree_util.tree_map(lambda new, old: jnp.where(state.adapting, new, old),
                                    da_update(state.da, acc), state.da)
        step_size = jnp.where(state.adapting, jnp.exp(da.log_step_size).astype(dtype),
                              state.step_size)
        return TunedState(inner, step_size, da, state.adapting), info

    def finish_warmup(state):
        # With no warmup step taken (num_warmup=0) the averaged value is meaningless:
        # keep the step size the user gave.
        adapted = state.da.step > da_init(1.0).step
        final = jnp.where(adapted, da_final(state.da).astype(dtype), state.step_size)
        return state._replace(step_size=final, adapting=jnp.bool_(False))

    return Sampler(init=init, step=step, position=lambda state: position(state.inner),
                   finish_warmup=finish_warmup)

"""The sampler protocol shared by every MCMC method, and step-size adaptation.

A :class:`Sampler` is a static bundle of module-level pure functions in blackjax style;
everything that varies between problems (the posterior, a preconditioner, step sizes,
tolerances) travels separately as ``params``, any pytree. The runner
(:mod:`uqrecon.inference.runner`) passes the Sampler to its jitted chunk as a *static*
argument and ``params`` as a traced one, so two runs on same-shaped problems (other data,
other noise level, other tuned step) reuse one compiled executable: the Sampler values
compare equal (same functions) and the params have the same tree structure and shapes.
Every method (NUTS, MALA, SK-ROCK, Gibbs, exact draws) runs through that one chunked,
checkpointed loop.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc.dynamic_hmc import halton_sequence

__all__ = ["StepInfo", "Sampler", "TunedState", "Whitened", "tuned_init", "tuned_step",
           "tuned_finish_warmup", "dual_averaging_update", "dual_averaging_final",
           "keep_state", "no_trace", "image_init", "image_position",
           "as_float", "check_positive", "check_int", "check_unit_interval",
           "HALTON_BITS", "halton_point"]

# bits of the Halton sequence that jitters HMC's and ChEES's trajectories: period 2^20
# iterations, far beyond any run (the sequence stays a valid jitter after it wraps)
HALTON_BITS = 20


def halton_point(i) -> jax.Array:
    """The ``i``-th point of the base-2 Halton (van der Corput) sequence, in [0, 1) (0
    only where ``i + 1`` is a multiple of ``2^HALTON_BITS``): a
    trajectory jitter that every chain shares at iteration ``i`` (blackjax's
    ``halton_sequence`` on ``HALTON_BITS`` bits)."""
    return halton_sequence(jnp.asarray(i, jnp.int32), HALTON_BITS)


class StepInfo(NamedTuple):
    """What one transition reports: the runner accumulates these per chain."""

    acceptance: jax.Array      # Metropolis acceptance probability (1.0 if unadjusted)
    num_grad_evals: jax.Array  # gradient evaluations spent in this transition (int32)
    divergent: jax.Array       # bool: energy error past the divergence threshold
    step_size: jax.Array       # step size used
    # the trajectory stopped at its length cap (NUTS: maximum tree depth, neither a
    # U-turn nor a divergence); samplers without a cap keep the default
    capped: Any = False


def image_init(key, x, params):
    """``init`` of samplers whose state is the image itself."""
    return x


def image_position(x, params):
    """``position`` of samplers whose state is the image itself."""
    return x


def keep_state(state, params):
    """Default ``finish_warmup``: nothing to freeze."""
    return state


def no_trace(state, params):
    """Default ``trace``: no per-draw scalars."""
    return {}


class Sampler(NamedTuple):
    """Static bundle of module-level pure functions: hashable, passed to jit as a static
    argument (so it must compare equal across calls: never build one from closures).

    ``init(key, x, params) -> state``; ``step(key, state, params) -> (state, StepInfo)``,
    the same function in warmup and sampling (adaptive samplers carry an ``adapting``
    flag in their state, so warmup and sampling share one compiled chunk);
    ``position(state, params) -> image``; ``finish_warmup(state, params) -> state``
    freezes the tuning; ``trace(state, params) -> dict`` of scalars kept per kept draw
    (e.g. Gibbs hyperparameters).

    ``draw(key, params) -> image`` (optional) marks an i.i.d. stream whose step is
    ``position(step(key, s, p), p) == draw(key, p)`` whatever the state: the runner then
    makes a whole chunk of draws at once (one matrix product instead of one matvec per
    step).

    ``one_blas_thread``: the step calls LAPACK every iteration on small matrices (GSM's
    coarse Cholesky), so the runner limits the process's BLAS libraries to one thread
    while the chains run (:func:`~uqrecon.inference.runner.one_blas_thread`).
    """

    init: Callable
    step: Callable
    position: Callable
    finish_warmup: Callable = keep_state
    trace: Callable = no_trace
    draw: Callable | None = None
    one_blas_thread: bool = False


class TunedState(NamedTuple):
    """A kernel state with a step size tuned by dual averaging while ``adapting``."""

    inner: Any
    step_size: jax.Array
    da: Any
    adapting: jax.Array


def as_float(value, dtype) -> jax.Array:
    return jnp.asarray(value, dtype=dtype)


def check_positive(name: str, value) -> float:
    """``value`` as a finite float > 0, else a ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a finite number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"'{name}' must be a finite number > 0, got {value!r}")
    return v


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_unit_interval(name: str, value) -> float:
    """``value`` as a float strictly inside (0, 1), else a ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"'{name}' must be in (0, 1), got {value!r}")
    return v


class Whitened(NamedTuple):
    """A posterior seen on whitened unconstrained coordinates ``z``: ``u = pc(z)``,
    ``x = posterior.transform.forward(u)``; the target of MALA, HMC and NUTS (a pytree,
    so it travels in ``params``). Any pytree with these three methods will do (tests
    use plain Gaussians)."""

    posterior: Any
    preconditioner: Any

    def logdensity(self, z):
        return self.posterior.logdensity_unconstrained(self.preconditioner(z))

    def to_image(self, z):
        return self.posterior.transform.forward(self.preconditioner(z))

    def from_image(self, x):
        return self.preconditioner.inverse(self.posterior.transform.inverse(x))


def tuned_init(inner_state, initial_step_size, target_acceptance) -> TunedState:
    """Wrap a kernel state for dual-averaging step-size adaptation (Hoffman & Gelman
    2014) starting at ``initial_step_size`` (an array: its dtype is the step's)."""
    step = jnp.asarray(initial_step_size)
    da_init, _, _ = dual_averaging_adaptation(target_acceptance)
    return TunedState(inner_state, step, da_init(step), jnp.bool_(True))


def tuned_step(inner_step: Callable, key, state: TunedState, params, target_acceptance):
    """One ``inner_step(key, inner_state, step_size, params) -> (inner, StepInfo)`` with
    the step size updated towards ``target_acceptance`` while ``state.adapting``.
    Called from module-level step functions (``inner_step`` is module-level too)."""
    inner, info = inner_step(key, state.inner, state.step_size, params)
    da, step_size = dual_averaging_update(state.da, state.step_size, info.acceptance,
                                          state.adapting, target_acceptance)
    return TunedState(inner, step_size, da, state.adapting), info


def dual_averaging_update(da, step_size, acceptance, adapting, target_acceptance):
    """One dual-averaging update of ``(da, step_size)`` towards ``target_acceptance``
    while ``adapting`` (a non-finite acceptance counts as 0); unchanged otherwise."""
    _, da_update, _ = dual_averaging_adaptation(target_acceptance)
    acc = jnp.where(jnp.isfinite(acceptance), acceptance, 0.0)
    new_da = jax.tree_util.tree_map(lambda new, old: jnp.where(adapting, new, old),
                                    da_update(da, acc), da)
    new_step = jnp.where(adapting, jnp.exp(new_da.log_step_size).astype(step_size.dtype),
                         step_size)
    return new_da, new_step


def dual_averaging_final(da, step_size):
    """The frozen step: the dual-averaged value, or ``step_size`` itself if no update
    was taken (``num_warmup=0``: the average is meaningless)."""
    da_init, _, da_final = dual_averaging_adaptation(0.5)   # final() ignores the target
    adapted = da.step > da_init(1.0).step
    return jnp.where(adapted, da_final(da).astype(step_size.dtype), step_size)


def tuned_finish_warmup(state: TunedState, params) -> TunedState:
    """Freeze the step at its dual-averaged value (:func:`dual_averaging_final`)."""
    return state._replace(step_size=dual_averaging_final(state.da, state.step_size),
                          adapting=jnp.bool_(False))

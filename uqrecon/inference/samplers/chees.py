"""ChEES-HMC (blackjax's ``chees_adaptation`` + jittered dynamic HMC) on whitened
coordinates, tuned across chains before the run.

ChEES-HMC (Hoffman, Radul & Sountsov, AISTATS 2021) is HMC whose trajectory length is
tuned for many chains at once: a warm-up over the ensemble of chains maximises the
*change in the estimator of the expected square* (ChEES) criterion by Adam on the log
trajectory length while dual averaging sets the step size; the sampling kernel then
integrates ``ceil(h_t * L / step_size)`` leapfrog steps at iteration ``t``, where ``h_t``
is the ``t``-th element of a Halton sequence in (0, 1] shared by every chain. Two
things follow, and are why it is here:

* **No lockstep waste.** Every chain integrates the same number of steps in every
  iteration, so vmapped chains (``chain_method="vectorized"``, the default for this
  method; and many chains on an accelerator) never wait for the longest trajectory of
  the batch, unlike NUTS, whose batched iteration lasts as long as the deepest tree.
* **No missed U-turns.** The length is fixed per iteration and jittered, so the exactly
  whitened Gaussian that makes NUTS miss its U-turn (see :mod:`.hmc`) poses no problem.

The kernel is a Metropolis-adjusted HMC whose number of steps does not depend on the
state (a deterministic sequence), so every iteration leaves the posterior invariant:
the method is asymptotically exact. Like MCLMC/MAMS (:mod:`.mclmc`), the tuning runs in
the set-up, in one module-level jit (:func:`tune_chees`) whose number of steps is static
and whose target is a traced pytree; the tuned step size and mean number of leapfrog
steps travel in :class:`CheesParams` as arrays, so the runner's chunk compiles once per
posterior structure, and the runner does no warm-up. The chains start where the tuning
left them, their Halton index continuing from the tuning's.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import optax
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.mcmc import dynamic_hmc as _dhmc

from ...operators.base import operator_dataclass
from .base import HALTON_BITS, Sampler, StepInfo, halton_point
from .mclmc import _Target

__all__ = ["CHEES", "CheesParams", "tune_chees", "HALTON_BITS"]

@operator_dataclass
class CheesParams:
    """ChEES-HMC's settings, arrays shared by the chains: the whitened target, the
    tuned ``step_size``, ``num_leapfrog`` (the mean trajectory length ``L / step_size``
    before jitter), the diagonal ``inverse_mass_matrix`` (ones unless estimated) and
    ``start_index``, the Halton index where sampling continues after the tuning."""

    target: Any
    step_size: jax.Array
    num_leapfrog: jax.Array
    inverse_mass_matrix: jax.Array
    start_index: jax.Array


def _next_index(i):
    return i + 1


def _num_steps(i, num_leapfrog):
    """``ceil(h_i * num_leapfrog)`` leapfrog steps, ``h_i`` the ``i``-th Halton point."""
    h = halton_point(i)
    return jnp.maximum(jnp.ceil(h * num_leapfrog), 1).astype(jnp.int32)


def _kernel():
    return _dhmc.build_kernel(next_random_arg_fn=_next_index,
                              integration_steps_fn=_num_steps)


def _init(key, x, params: CheesParams):
    return _dhmc.init(params.target.from_image(x), _Target(params.target),
                      params.start_index)


def _step(key, state, params: CheesParams):
    new, info = _kernel()(key, state, _Target(params.target), params.step_size,
                          params.inverse_mass_matrix,
                          integration_steps_params=(params.num_leapfrog,))
    dtype = params.step_size.dtype
    # velocity Verlet: one gradient per leapfrog step (the first reuses the state's)
    return new, StepInfo(jnp.asarray(info.acceptance_rate, dtype),
                         jnp.asarray(info.num_integration_steps).astype(jnp.int32),
                         jnp.asarray(info.is_divergent), params.step_size)


def _position(state, params):
    return params.target.to_image(state.position)


CHEES = Sampler(init=_init, step=_step, position=_position)


@partial(jax.jit, static_argnames=("num_steps", "diagonal_preconditioning",
                                   "max_leapfrog_steps"))
def tune_chees(target, images, key, initial_step_size, learning_rate, target_acceptance,
               *, num_steps: int, diagonal_preconditioning: bool = False,
               max_leapfrog_steps: int = 1000):
    """blackjax's ChEES adaptation over all chains at once.

    Args:
        target: the whitened posterior (a pytree with ``logdensity``, ``to_image``,
            ``from_image``).
        images: ``(chains, *shape)`` starting images.
        key: PRNG key.
        initial_step_size: where the dual averaging of the step starts (traced).
        learning_rate: Adam's learning rate on the log trajectory length (traced).
        target_acceptance: the dual averaging's target mean acceptance (traced).
        num_steps: adaptation iterations (static); each runs every chain once.
        diagonal_preconditioning: also estimate a diagonal inverse mass matrix from the
            ensemble (blackjax's ``mass_matrix_estimation="diagonal"``).
        max_leapfrog_steps: cap on ``L / step_size`` during the adaptation (static).

    Returns:
        ``(images, step_size, num_leapfrog, inverse_mass_matrix, start_index,
        leapfrog steps, capped)``: the chains' end points, the tuned values, the Halton
        index where sampling continues, the leapfrog steps (gradients) spent per chain,
        and the share of the tuning's second half during which the
        ``max_leapfrog_steps`` clip held the trajectory length.
    """
    positions = jax.vmap(target.from_image)(images)
    num_chains, zshape = positions.shape[0], positions.shape[1:]
    # blackjax's ChEES criterion wants one flat vector per chain
    flat = positions.reshape(num_chains, -1)
    adapt = blackjax.chees_adaptation(
        _FlatTarget(target, zshape), num_chains, target_acceptance_rate=target_acceptance,
        max_leapfrog_steps=max_leapfrog_steps,
        adaptation_info_fn=get_filter_adapt_info_fn(
            info_keys={"num_integration_steps"},
            adapt_state_keys={"trajectory_length", "step_size"}),
        mass_matrix_estimation="diagonal" if diagonal_preconditioning else None)
    (states, tuned), info = adapt.run(key, flat, initial_step_size,
                                      optax.adam(learning_rate), num_steps)
    dtype = positions.dtype
    imm = jnp.broadcast_to(jnp.asarray(tuned["inverse_mass_matrix"], dtype),
                           (flat.shape[1],))
    # every chain ran the same number of leapfrog steps each iteration
    spent = jnp.sum(jnp.asarray(info.info.num_integration_steps)[:, 0]).astype(jnp.int32)
    # blackjax clips the tuning's trajectory at max_leapfrog_steps * step: the share of
    # the second half of the tuning during which that clip held the length
    tr = info.adaptation_state
    held = tr.trajectory_length >= 0.999 * max_leapfrog_steps * tr.step_size
    capped = jnp.mean(held[num_steps // 2:].astype(dtype))
    ends = states.position.reshape(num_chains, *zshape)
    return (jax.vmap(target.to_image)(ends),
            jnp.asarray(tuned["step_size"], dtype),
            jnp.asarray(tuned["integration_steps_params"][0], dtype), imm,
            jnp.asarray(states.random_generator_arg[0]).astype(jnp.int32), spent, capped)


class _FlatTarget(NamedTuple):
    """``target.logdensity`` on a flat vector (the tuning's view of ``z``)."""

    target: Any
    shape: tuple

    def __call__(self, z_flat):
        return self.target.logdensity(z_flat.reshape(self.shape))

"""MCLMC and MAMS (blackjax kernels) on whitened coordinates, tuned before the run.

- :data:`MCLMC`: unadjusted microcanonical Langevin Monte Carlo (Robnik et al. 2023),
  blackjax's ``mclmc`` kernel: isokinetic dynamics with partial momentum refreshment
  (decoherence length ``L``), no accept/reject, so its stationary law is biased by the
  discretisation (the tuner sizes the step so the energy error per dimension has
  variance ``desired_energy_var``; the bias grows with it).
- :data:`MAMS`: Metropolis-adjusted microcanonical sampler (Robnik et al. 2025),
  blackjax's ``adjusted_mclmc_dynamic`` kernel: isokinetic trajectories of a random
  number of steps (mean ``L / step_size``, Halton-free uniform jitter), accepted or
  rejected on the energy error, so the posterior is its invariant law.

Both run on the :class:`~.base.Whitened` target of NUTS (``z`` with ``u = pc(z)``), which
is close to isotropic: what the isokinetic dynamics wants (one ``L`` for every
direction). The isokinetic McLachlan integrator takes 2 gradients per step.

Tuning (compile once): blackjax's tuners (``mclmc_find_L_and_step_size``,
``adjusted_mclmc_find_L_and_step_size``) loop over a Python-int number of steps and
return ``L`` and the step size. They run *before* the runner, in module-level jits
(:func:`tune_mclmc`, :func:`tune_mams`) whose step count is static and whose target is
a traced pytree, vmapped over the chains: each chain tunes from its own start and ends
burnt in. The tuned ``L`` and step are then pooled over the chains (median: the target
is the same for every chain, so the per-chain values differ by tuning noise only) and
travel in the params as arrays (:class:`MCLMCParams`, :class:`MAMSParams`), so the
runner's chunk takes them as arguments and compiles once per posterior structure. The
chains' tuned end points are the runner's starting points; the runner itself does no
warmup.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.mcmc import adjusted_mclmc_dynamic as _amd
from blackjax.mcmc import mclmc as _mclmc

from ...operators.base import operator_dataclass
from .base import Sampler, StepInfo

__all__ = ["MCLMC", "MCLMCParams", "MAMS", "MAMSParams", "tune_mclmc", "tune_mams",
           "GRADS_PER_STEP"]

# the share of the tuning steps given to each of blackjax's tuning phases
_THIRD = 1.0 / 3.0

# isokinetic McLachlan: three velocity updates and two position updates a step; the
# first velocity update reuses the previous step's gradient
GRADS_PER_STEP = 2


class _Target(NamedTuple):
    """``target.logdensity`` as a pytree callable (blackjax takes a function)."""

    target: Any

    def __call__(self, z):
        return self.target.logdensity(z)


# --------------------------------------------------------------------------------------
# MCLMC (unadjusted)
# --------------------------------------------------------------------------------------
@operator_dataclass
class MCLMCParams:
    """MCLMC's settings: the whitened target and the tuned ``L`` (momentum decoherence
    length), ``step_size`` and diagonal ``inverse_mass_matrix`` (ones unless tuned with
    diagonal preconditioning), all arrays shared by the chains."""

    target: Any
    L: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def _mclmc_kernel():
    return _mclmc.build_kernel()


def _mclmc_init(key, x, params: MCLMCParams):
    z = params.target.from_image(x)
    return _mclmc.init(z, _Target(params.target), key)


def _mclmc_step(key, state, params: MCLMCParams):
    new, info = _mclmc_kernel()(key, state, _Target(params.target),
                                params.inverse_mass_matrix, params.L, params.step_size)
    dtype = params.step_size.dtype
    return new, StepInfo(jnp.ones((), dtype), jnp.int32(GRADS_PER_STEP),
                         ~jnp.asarray(info.nonans), params.step_size)


def _state_position(state, params):
    return params.target.to_image(state.position)


MCLMC = Sampler(init=_mclmc_init, step=_mclmc_step, position=_state_position)


@partial(jax.jit, static_argnames=("num_steps", "diagonal_preconditioning"))
def tune_mclmc(target, images, keys, desired_energy_var, *, num_steps: int,
               diagonal_preconditioning: bool = False):
    """blackjax's ``mclmc_find_L_and_step_size`` on every chain (vmapped).

    Args:
        target: the whitened posterior (a pytree with ``logdensity``, ``to_image``,
            ``from_image``).
        images: ``(chains, *shape)`` starting images.
        keys: ``(chains, 2)`` PRNG keys.
        desired_energy_var: target variance of the energy error per dimension (traced).
        num_steps: tuning steps per chain (static): a third each for blackjax's three
            phases (step size from the energy error, L from the variance, L from the
            autocorrelation; with diagonal preconditioning a further third of the
            second phase re-tunes the step).
        diagonal_preconditioning: also estimate a diagonal inverse mass matrix.

    Returns:
        ``(images, L, step_size, inverse_mass_matrix, integrator steps)``: the chains'
        end points and per-chain tuned values (``(chains,)``, ``(chains, n)``), and the
        integrator steps each chain spent (a Python-static count, as an array).
    """
    logdensity = _Target(target)

    def one(x, key):
        k_init, k_tune = jax.random.split(key)
        state = _mclmc.init(target.from_image(x), logdensity, k_init)
        state, tuned, steps = blackjax.mclmc_find_L_and_step_size(
            _mclmc_kernel(), num_steps, state, k_tune, logdensity_fn=logdensity,
            frac_tune1=_THIRD, frac_tune2=_THIRD, frac_tune3=_THIRD,
            desired_energy_var=desired_energy_var,
            diagonal_preconditioning=diagonal_preconditioning)
        dtype = state.position.dtype
        imm = jnp.broadcast_to(jnp.asarray(tuned.inverse_mass_matrix, dtype),
                               (state.position.size,))
        return (target.to_image(state.position), jnp.asarray(tuned.L, dtype),
                jnp.asarray(tuned.step_size, dtype), imm, jnp.int32(steps))

    return jax.vmap(one)(images, keys)


# --------------------------------------------------------------------------------------
# MAMS (adjusted)
# --------------------------------------------------------------------------------------
@operator_dataclass
class MAMSParams:
    """MAMS's settings: the whitened target, the tuned ``L`` (mean trajectory length,
    so ``L / step_size`` integrator steps on average) and ``step_size``, and the
    diagonal ``inverse_mass_matrix``; arrays shared by the chains."""

    target: Any
    L: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


_integration_steps = _amd.make_random_trajectory_length_fn(True)


def _mams_kernel():
    return _amd.build_kernel(integration_steps_fn=_integration_steps)


def _mams_init(key, x, params: MAMSParams):
    return _amd.init(params.target.from_image(x), _Target(params.target), key)


def _mams_step(key, state, params: MAMSParams):
    new, info = _mams_kernel()(key, state, _Target(params.target), params.step_size,
                               inverse_mass_matrix=params.inverse_mass_matrix,
                               integration_steps_params=(params.L / params.step_size,))
    dtype = params.step_size.dtype
    return new, StepInfo(jnp.asarray(info.acceptance_rate, dtype),
                         (GRADS_PER_STEP * info.num_integration_steps).astype(jnp.int32),
                         jnp.asarray(info.is_divergent), params.step_size)


MAMS = Sampler(init=_mams_init, step=_mams_step, position=_state_position)


@partial(jax.jit, static_argnames=("num_steps", "diagonal_preconditioning"))
def tune_mams(target, images, keys, target_acceptance, num_integration_steps, *,
              num_steps: int, diagonal_preconditioning: bool = False):
    """blackjax's ``adjusted_mclmc_find_L_and_step_size`` on every chain (vmapped).

    Args:
        target: the whitened posterior.
        images: ``(chains, *shape)`` starting images.
        keys: ``(chains, 2)`` PRNG keys.
        target_acceptance: the dual averaging's target mean acceptance (traced).
        num_integration_steps: blackjax's ``target_num_integration_steps``, the mean
            trajectory length ``L / step_size`` in integrator steps (traced).
        num_steps: tuning trajectories per chain (static): a first dual-averaging
            pass over 2/3 of them (the variance estimate in its second half), a
            second pass over the last third.
        diagonal_preconditioning: also estimate a diagonal inverse mass matrix.

    Returns:
        ``(images, L, step_size, inverse_mass_matrix, integrator steps)`` per chain.
    """
    logdensity = _Target(target)

    def one(x, key):
        k_init, k_tune = jax.random.split(key)
        state = _amd.init(target.from_image(x), logdensity, k_init)
        state, tuned, steps = blackjax.adjusted_mclmc_find_L_and_step_size(
            _mams_kernel(), logdensity, num_steps, state, k_tune,
            target=target_acceptance, frac_tune1=_THIRD, frac_tune2=_THIRD, diagonal_preconditioning=diagonal_preconditioning,
            target_num_integration_steps=num_integration_steps)
        dtype = state.position.dtype
        imm = jnp.broadcast_to(jnp.asarray(tuned.inverse_mass_matrix, dtype),
                               (state.position.size,))
        return (target.to_image(state.position), jnp.asarray(tuned.L, dtype),
                jnp.asarray(tuned.step_size, dtype), imm,
                jnp.asarray(steps).astype(jnp.int32))

    return jax.vmap(one)(images, keys)

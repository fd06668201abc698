"""Blocked Gibbs sampler for hierarchical linear-Gaussian models.

Alternates ``hyperparameters | image`` (independent Gamma draws from their conjugate full
conditionals) and ``image | hyperparameters`` (an exact Gaussian draw by
perturbation-optimisation, warm-started at the current image so the CG tolerance is
relative to the perturbation). With no Gamma hyperpriors it reduces to exact draws.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..exact import cg, perturbed_rhs
from .base import LegacySampler, StepInfo

__all__ = ["GibbsState", "gibbs", "gamma_draws", "exact_image_draw"]


class GibbsState(NamedTuple):
    x: jax.Array
    hypers: dict


def gamma_draws(key, shape_rate: dict, dtype) -> dict:
    """One Gamma(shape, rate) draw per entry of ``{name: (shape, rate)}``."""
    names = sorted(shape_rate)
    keys = jax.random.split(key, max(len(names), 1))
    return {n: (jax.random.gamma(k, jnp.asarray(shape_rate[n][0], dtype), dtype=dtype)
                / jnp.asarray(shape_rate[n][1], dtype))
            for n, k in zip(names, keys)}


def exact_image_draw(form_of: Callable, tol: float, maxiter: int) -> Callable:
    """``(key, x, hypers) -> (x_new, cg_iterations, converged)`` for the Gaussian
    conditional ``form_of(hypers)``: solves ``P d = b + eta - P x`` and returns ``x + d``."""

    def draw(key, x, hypers):
        form = form_of(hypers)
        b = form.rhs + perturbed_rhs(form, key) - form.precision(x)
        d, k, relres = cg(form.precision, b, tol, maxiter)
        return x + d, k, relres <= tol

    return draw


def gibbs(conditionals: Callable, image_draw: Callable, init_hypers: Callable,
          dtype=jnp.float32) -> LegacySampler:
    """Gibbs sampler from ``conditionals(x) -> {name: (shape, rate)}``, an image draw
    ``image_draw(key, x, hypers) -> (x, grads, ok)`` and ``init_hypers(x) -> dict``.

    ``acceptance`` reports 1 when the inner solve converged, 0 otherwise (flagged as
    divergent), so a bad inner solve is never silently averaged.
    """

    def step(key, state):
        kh, kx = jax.random.split(key)
        hypers = {**state.hypers, **gamma_draws(kh, conditionals(state.x), dtype)}
        x, k, ok = image_draw(kx, state.x, hypers)
        return GibbsState(x, hypers), StepInfo(jnp.where(ok, 1.0, 0.0).astype(dtype),
                                               k.astype(jnp.int32), ~ok, jnp.zeros((), dtype))

    return LegacySampler(init=lambda key, x: GibbsState(x, init_hypers(x)), step=step,
                   position=lambda s: s.x, trace=lambda s: dict(s.hypers))

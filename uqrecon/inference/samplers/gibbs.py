"""Blocked Gibbs sampler for hierarchical linear-Gaussian models.

Alternates ``hyperparameters | image`` (independent Gamma draws from their conjugate full
conditionals) and ``image | hyperparameters`` (an exact Gaussian draw by
perturbation-optimisation, warm-started at the current image so the CG tolerance is
relative to the perturbation). With no Gamma hyperpriors it reduces to exact draws.

:data:`GIBBS` is a :class:`~.base.Sampler` of module-level functions; the posterior and
the CG settings travel in :class:`GibbsParams` (tolerance and iteration cap as arrays),
so runs on same-shaped problems share one compilation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ...linalg import pcg
from ..exact import perturbed_rhs
from .base import Sampler, StepInfo, check_int, check_positive

__all__ = ["GibbsState", "GibbsParams", "GIBBS", "gibbs", "gamma_draws", "image_draw"]


class GibbsState(NamedTuple):
    x: jax.Array
    hypers: dict


class GibbsParams(NamedTuple):
    """``posterior``: a hierarchical linear-Gaussian Posterior (``conditionals``,
    ``with_hyperparameters``, ``gaussian_form``); ``tol``/``maxiter``: the image draw's
    CG relative tolerance and iteration cap."""

    posterior: Any
    tol: jax.Array
    maxiter: jax.Array


def gamma_draws(key, shape_rate: dict, dtype) -> dict:
    """One Gamma(shape, rate) draw per entry of ``{name: (shape, rate)}``."""
    names = sorted(shape_rate)
    keys = jax.random.split(key, max(len(names), 1))
    return {n: (jax.random.gamma(k, jnp.asarray(shape_rate[n][0], dtype), dtype=dtype)
                / jnp.asarray(shape_rate[n][1], dtype))
            for n, k in zip(names, keys)}


def image_draw(key, x, form, tol, maxiter):
    """An exact draw from the Gaussian ``form`` warm-started at ``x``: solves
    ``P d = b + eta - P x`` and returns ``(x + d, products with P, converged)``."""
    b = form.rhs + perturbed_rhs(form, key) - form.precision(x)
    d, _, relres, _, k = pcg(form.precision, b, tol=tol, maxiter=maxiter)
    # x's dtype: with jax_enable_x64 on, a float64 constant in the form must not promote
    # the chain (the runner's scan carries x in the posterior's dtype)
    return (x + d).astype(x.dtype), k, relres <= tol


def _gibbs_init(key, x, params: GibbsParams):
    hypers = {k: jnp.asarray(v, x.dtype) for k, v in params.posterior.hyperparameters.items()}
    return GibbsState(x, hypers)


def _gibbs_step(key, state: GibbsState, params: GibbsParams):
    """Hyperparameters from their Gamma conditionals, then the image. ``acceptance``
    reports 1 when the inner solve converged, 0 otherwise (flagged as divergent), so a
    bad inner solve is never silently averaged."""
    post = params.posterior
    dtype = state.x.dtype
    kh, kx = jax.random.split(key)
    hypers = {**state.hypers, **gamma_draws(kh, post.conditionals(state.x), dtype)}
    form = post.with_hyperparameters(**hypers).gaussian_form()
    x, k, ok = image_draw(kx, state.x, form, params.tol.astype(dtype), params.maxiter)
    return GibbsState(x, hypers), StepInfo(jnp.where(ok, 1.0, 0.0).astype(dtype),
                                           k.astype(jnp.int32), ~ok, jnp.zeros((), dtype))


def _gibbs_position(state: GibbsState, params):
    return state.x


def _gibbs_trace(state: GibbsState, params):
    return dict(state.hypers)


GIBBS = Sampler(init=_gibbs_init, step=_gibbs_step, position=_gibbs_position,
                trace=_gibbs_trace)


def gibbs(posterior, tol: float, maxiter: int, dtype=jnp.float32):
    """``(GIBBS, GibbsParams)`` for a hierarchical linear-Gaussian ``posterior``."""
    return GIBBS, GibbsParams(posterior, jnp.asarray(check_positive("tol", tol), dtype),
                              jnp.asarray(check_int("maxiter", maxiter, 1), jnp.int32))

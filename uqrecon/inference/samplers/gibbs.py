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
    """An exact draw from the Gaussian ``form`` by perturbation-optimisation, warm-started
    at ``x``: solves ``P z = b + eta`` from ``z = x`` and returns ``(z, products with P,
    converged)``.

    The tolerance is relative to ``||b + eta||``, as for a solve started from zero (the
    package's meaning of ``tol``, :func:`~uqrecon.linalg.pcg`'s ``x0``): the warm start
    saves iterations, it does not tighten the solve. (Solving the shifted system
    ``P d = b + eta - P x`` from zero made the tolerance relative to the shifted residual,
    stricter the closer ``x`` lies, and near float32's rounding floor: a solve of the
    32x32 test posterior stopped at a relative residual just above 1e-5 after a change in
    the operator's summation order.)"""
    rhs = form.rhs + perturbed_rhs(form, key)
    z, _, relres, _, matvecs = pcg(form.precision, rhs, tol=tol, maxiter=maxiter,
                                   x0=x.astype(rhs.dtype))
    # x's dtype: with jax_enable_x64 on, a float64 constant in the form must not promote
    # the chain (the runner's scan carries x in the posterior's dtype)
    return z.astype(x.dtype), matvecs, relres <= tol


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

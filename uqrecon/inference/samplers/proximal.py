"""Proximal Langevin samplers for non-smooth priors (TV, wavelet-l1, box constraints).

Both target the Moreau-Yosida smoothed posterior ``pi_lam ∝ exp(-f(x) - sum_i g_i^lam(x))``
whose gradient needs only the prox of each non-smooth term:
``grad g^lam(x) = (x - prox_{lam g}(x)) / lam``.

- MYULA (Durmus, Moulines & Pereyra 2018, SIAM J. Imaging Sci.): one Euler-Maruyama step,
  defaults ``lam = 1/L_f`` and ``step = 1/(L_f + n_terms/lam)`` (the paper's bound).
- SK-ROCK (Pereyra, Vargas-Mieles & Zygalakis 2020, SIAM J. Imaging Sci.): an ``s``-stage
  stabilised Runge-Kutta-Chebyshev step with damping ``eta = 0.05`` whose stable step grows
  like ``s^2``: ``step <= l_s / L`` with ``l_s = (s - 0.5)^2 (2 - 4 eta / 3) - 1.5``.

Both are :class:`~.base.Sampler` bundles of module-level functions (:data:`MYULA`,
:data:`SKROCK`); the posterior, the proxes, ``lam``, the step and SK-ROCK's Chebyshev
coefficients travel in ``params`` (the number of stages is the coefficients' length, a
shape), so runs on same-shaped problems share one compilation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .base import Sampler, StepInfo, as_float, check_positive, image_init, image_position

__all__ = ["Box", "moreau_gradient", "MYULA", "SKROCK", "ProximalParams", "myula", "skrock",
           "skrock_coefficients", "skrock_max_step"]


class Box(NamedTuple):
    """The indicator of ``[lo, hi]`` as a prox term (projection), for the ``box`` option."""

    lo: jax.Array
    hi: jax.Array

    def prox(self, x, step):
        return jnp.clip(x, self.lo, self.hi)


class ProximalParams(NamedTuple):
    """``target``: any pytree with ``grad_smooth_potential(x)`` (a Posterior);
    ``proxes``: a tuple of pytrees with ``prox(x, step)`` (the posterior's non-smooth
    terms, a :class:`Box`); ``mu, nu, kappa``: SK-ROCK's coefficients (empty for MYULA)."""

    target: Any
    proxes: tuple
    lam: jax.Array
    step_size: jax.Array
    mu: jax.Array
    nu: jax.Array
    kappa: jax.Array


def moreau_gradient(params: ProximalParams, x):
    """Gradient of ``f + sum_i g_i^lam`` at ``x`` from ``grad f`` and the proxes."""
    lam = params.lam.astype(x.dtype)
    g = params.target.grad_smooth_potential(x)
    for term in params.proxes:
        g = g + (x - term.prox(x, lam)) / lam
    return g


def _myula_step(key, x, params: ProximalParams):
    """``x' = x - h grad U_lam(x) + sqrt(2h) xi``; one gradient (and prox) a step."""
    h = params.step_size.astype(x.dtype)
    xi = jax.random.normal(key, x.shape, x.dtype)
    x_new = x - h * moreau_gradient(params, x) + jnp.sqrt(2 * h) * xi
    return x_new, StepInfo(jnp.ones((), x.dtype), jnp.int32(1), jnp.bool_(False), h)


MYULA = Sampler(init=image_init, step=_myula_step, position=image_position)


def myula(target, proxes, lam: float, step_size: float, dtype=jnp.float32):
    """``(MYULA, ProximalParams)`` on ``target`` with the prox terms ``proxes``."""
    empty = jnp.zeros((0,), dtype)
    return MYULA, ProximalParams(target, tuple(proxes), as_float(check_positive("lam", lam),
                                                                 dtype),
                                 as_float(check_positive("step_size", step_size), dtype),
                                 empty, empty, empty)


def skrock_coefficients(s: int, eta: float = 0.05):
    """The SK-ROCK damping-shifted Chebyshev coefficients (mu_j, nu_j, kappa_j), j=1..s."""
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"skrock: 'stages' must be an integer >= 1, got {s!r}")
    if not (math.isfinite(float(eta)) and float(eta) > 0):
        raise ValueError(f"skrock: 'eta' must be a finite number > 0, got {eta!r}")
    w0 = 1.0 + eta / s**2
    # Chebyshev polynomials T_j(w0) and derivative T_s'(w0) = s U_{s-1}(w0)
    T = [1.0, w0]
    U = [1.0, 2 * w0]
    for _ in range(2, s + 1):
        T.append(2 * w0 * T[-1] - T[-2])
        U.append(2 * w0 * U[-1] - U[-2])
    w1 = T[s] / (s * U[s - 1])
    mu = np.zeros(s)
    nu = np.zeros(s)
    kappa = np.zeros(s)
    mu[0], nu[0], kappa[0] = w1 / w0, s * w1 / 2, s * w1 / w0
    for j in range(2, s + 1):
        mu[j - 1] = 2 * w1 * T[j - 1] / T[j]
        nu[j - 1] = 2 * w0 * T[j - 1] / T[j]
        kappa[j - 1] = 1 - nu[j - 1]
    return mu, nu, kappa


def skrock_max_step(lipschitz: float, s: int, eta: float = 0.05) -> float:
    """Largest stable SK-ROCK step for a gradient with Lipschitz constant ``lipschitz``."""
    ls = (s - 0.5) ** 2 * (2 - 4 * eta / 3) - 1.5
    return ls / lipschitz


def _skrock_step(key, x, params: ProximalParams):
    """One SK-ROCK step; ``stages`` (= ``len(mu)``, static) gradients."""
    h = params.step_size.astype(x.dtype)
    mu, nu, kappa = (c.astype(x.dtype) for c in (params.mu, params.nu, params.kappa))
    stages = mu.shape[0]
    xi = jax.random.normal(key, x.shape, x.dtype)
    noise = jnp.sqrt(2 * h) * xi
    prev, cur = x, x - mu[0] * h * moreau_gradient(params, x + nu[0] * noise) \
        + kappa[0] * noise

    def stage(carry, coef):
        prev, cur = carry
        m, n, k = coef
        new = -m * h * moreau_gradient(params, cur) + n * cur + k * prev
        return (cur, new), None

    (_, cur), _ = jax.lax.scan(stage, (prev, cur), (mu[1:], nu[1:], kappa[1:]))
    return cur, StepInfo(jnp.ones((), x.dtype), jnp.int32(stages), jnp.bool_(False), h)


SKROCK = Sampler(init=image_init, step=_skrock_step, position=image_position)


def skrock(target, proxes, lam: float, step_size: float, stages: int = 10,
           eta: float = 0.05, dtype=jnp.float32):
    """``(SKROCK, ProximalParams)``: SK-ROCK on the Moreau-Yosida smoothed target;
    ``stages`` gradients a step."""
    mu, nu, kappa = (as_float(c, dtype) for c in skrock_coefficients(stages, eta))
    return SKROCK, ProximalParams(target, tuple(proxes),
                                  as_float(check_positive("lam", lam), dtype),
                                  as_float(check_positive("step_size", step_size), dtype),
                                  mu, nu, kappa)

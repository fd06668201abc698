"""Proximal Langevin samplers for non-smooth priors (TV, wavelet-l1, box constraints).

Both target the Moreau-Yosida smoothed posterior ``pi_lam ∝ exp(-f(x) - sum_i g_i^lam(x))``
whose gradient needs only the prox of each non-smooth term:
``grad g^lam(x) = (x - prox_{lam g}(x)) / lam``.

- MYULA (Durmus, Moulines & Pereyra 2018, SIAM J. Imaging Sci.): one Euler-Maruyama step,
  defaults ``lam = 1/L_f`` and ``step = 1/(L_f + n_terms/lam)`` (the paper's bound).
- SK-ROCK (Pereyra, Vargas-Mieles & Zygalakis 2020, SIAM J. Imaging Sci.): an ``s``-stage
  stabilised Runge-Kutta-Chebyshev step with damping ``eta = 0.05`` whose stable step grows
  like ``s^2``: ``step <= l_s / L`` with ``l_s = (s - 0.5)^2 (2 - 4 eta / 3) - 1.5``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .base import LegacySampler, StepInfo, as_float

__all__ = ["moreau_gradient", "myula", "skrock", "skrock_coefficients", "skrock_max_step"]


def moreau_gradient(grad_smooth: Callable, proxes: Sequence[Callable], lam) -> Callable:
    """Gradient of ``f + sum_i g_i^lam`` from ``grad f`` and the proxes ``prox_i(x, step)``."""

    def grad(x):
        g = grad_smooth(x)
        for prox in proxes:
            g = g + (x - prox(x, lam)) / lam
        return g

    return grad


def myula(grad_smooth: Callable, proxes: Sequence[Callable], lam: float, step_size: float,
          dtype=jnp.float32) -> LegacySampler:
    """MYULA: ``x' = x - h grad U_lam(x) + sqrt(2h) xi``; one gradient (and prox) a step."""
    lam_, h = as_float(lam, dtype), as_float(step_size, dtype)
    grad = moreau_gradient(grad_smooth, proxes, lam_)

    def step(key, x):
        xi = jax.random.normal(key, x.shape, x.dtype)
        x_new = x - h * grad(x) + jnp.sqrt(2 * h) * xi
        return x_new, StepInfo(jnp.ones((), dtype), jnp.int32(1), jnp.bool_(False), h)

    return LegacySampler(init=lambda key, x: x, step=step, position=lambda x: x)


def skrock_coefficients(s: int, eta: float = 0.05):
    """The SK-ROCK damping-shifted Chebyshev coefficients (mu_j, nu_j, kappa_j), j=1..s."""
    if s < 1:
        raise ValueError(f"skrock: 'stages' must be >= 1, got {s}")
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


def skrock(grad_smooth: Callable, proxes: Sequence[Callable], lam: float, step_size: float,
           stages: int = 10, eta: float = 0.05, dtype=jnp.float32) -> LegacySampler:
    """SK-ROCK on the Moreau-Yosida smoothed target; ``stages`` gradients a step."""
    lam_, h = as_float(lam, dtype), as_float(step_size, dtype)
    grad = moreau_gradient(grad_smooth, proxes, lam_)
    mu, nu, kappa = (jnp.asarray(c, dtype) for c in skrock_coefficients(stages, eta))

    def step(key, x):
        xi = jax.random.normal(key, x.shape, x.dtype)
        noise = jnp.sqrt(2 * h) * xi
        prev, cur = x, x - mu[0] * h * grad(x + nu[0] * noise) + kappa[0] * noise

        def stage(carry, coef):
            prev, cur = carry
            m, n, k = coef
            new = -m * h * grad(cur) + n * cur + k * prev
            return (cur, new), None

        (_, cur), _ = jax.lax.scan(stage, (prev, cur), (mu[1:], nu[1:], kappa[1:]))
        return cur, StepInfo(jnp.ones((), dtype), jnp.int32(stages), jnp.bool_(False), h)

    return LegacySampler(init=lambda key, x: x, step=step, position=lambda x: x)

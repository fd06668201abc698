"""Eigenpairs of the Laplace pencil ``H v = theta M v`` and the compiled pieces that
compute them (module-level jits taking the Gaussian form or the posterior as a pytree, so
a second call on a same-shaped problem reuses the compiled code), plus the departure
measure that decides which pairs to keep.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ...linalg import Eigh, dense_from_matvec, lanczos_eigh, randomized_eigh
from .family import Base

__all__ = ["diagonal_estimate"]


def diagonal_estimate(matvec: Callable, key: jax.Array, n: int, num_probes: int,
                      dtype) -> jax.Array:
    """Stochastic diagonal of a symmetric operator, ``mean_k z_k * (H z_k)`` with
    Rademacher ``z_k`` (Bekas, Kokiopoulou and Saad 2007); unbiased, error
    ``sqrt(sum_{j != i} H_ij^2 / num_probes)`` per entry."""
    z = jax.random.rademacher(key, (num_probes, n), dtype)
    hz = jax.lax.map(matvec, z, batch_size=min(num_probes, 8))
    return jnp.mean(z * hz, axis=0)


def _is_dense_eig(steps, n, mass):
    return 2 * steps >= n and mass is None


def _eig(solver, matvec, key, n, steps, dtype, mass, mass_solve, power_iters):
    if _is_dense_eig(steps, n, mass):
        # half the spectrum or more: n products cost about as much as the Lanczos steps,
        # and dense eigh is cheaper than full reorthogonalisation and more accurate
        theta, vecs = jnp.linalg.eigh(_dense(matvec, n, dtype))
        return Eigh(theta[::-1], vecs[:, ::-1], jnp.zeros_like(theta))
    if solver == "lanczos":
        v0 = jax.random.normal(key, (n,), dtype)
        return lanczos_eigh(matvec, v0, steps, mass=mass, mass_solve=mass_solve)
    return randomized_eigh(matvec, key, n, steps, dtype=dtype, power_iters=power_iters,
                           mass=mass, mass_solve=mass_solve)


def _num_products(solver, n, steps, power_iters, dense):
    """Products with the Hessian (or data-misfit Hessian) one eigensolve costs."""
    if dense:
        return n
    if solver == "lanczos":
        return steps
    return steps * (2 + power_iters)        # probes, power iterations, projection


def _dense(matvec, n, dtype):
    return dense_from_matvec(matvec, n, dtype, symmetrize=True)


# -- compiled pieces: the form / posterior is a pytree argument, so a second call on a
# -- same-shaped problem reuses the compiled code --------------------------------------
@jax.jit
def _prior_cholesky(form):
    n, dtype = form.rhs.size, form.rhs.dtype
    return jnp.linalg.cholesky(_dense(Base("cg", form).mass, n, dtype))


@jax.jit
def _cholesky_covariance(R):
    """``Q^{-1} = R^{-T} R^{-1}`` and its diagonal."""
    Rinv = jax.scipy.linalg.solve_triangular(R, jnp.eye(R.shape[0], dtype=R.dtype),
                                             lower=True)
    return Rinv.T @ Rinv, jnp.sum(Rinv ** 2, axis=0)


@jax.jit
def _dense_mode(form):
    """``P^{-1} b`` by dense Cholesky: error ~ cond(P) eps, below CG's tolerance."""
    n, dtype = form.rhs.size, form.rhs.dtype
    prec = lambda v: form.precision(v.reshape(form.rhs.shape)).reshape(-1)  # noqa: E731
    R = jnp.linalg.cholesky(_dense(prec, n, dtype))
    return jax.scipy.linalg.cho_solve((R, True), form.rhs.reshape(-1).astype(dtype))


def _misfit(form):
    shape, dtype = form.rhs.shape, form.rhs.dtype
    A, tau = form.operator, form.noise_precision

    def misfit(v):
        return (tau * jnp.real(A.normal(v.reshape(shape)))).reshape(-1).astype(dtype)

    return misfit


@functools.partial(jax.jit, static_argnames=("solver", "steps", "power_iters"))
def _eig_prior(form, base, key, solver, steps, power_iters):
    """Eigenpairs of ``(tau A^T A, Q)``; vectors ``Q``-orthonormal."""
    n, dtype = form.rhs.size, form.rhs.dtype
    misfit = _misfit(form)
    if base.kind == "cg":          # Lanczos in the Q inner product, Q^{-1} by CG
        return _eig(solver, misfit, key, n, steps, dtype, base.mass, base.solve,
                    power_iters)
    # whitened by the Cholesky factor: more accurate in float32
    tri = jax.scipy.linalg.solve_triangular
    R = base.R
    whitened = lambda w: tri(R, misfit(tri(R.T, w, lower=False)), lower=True)  # noqa: E731
    eig = _eig(solver, whitened, key, n, steps, dtype, None, None, power_iters)
    return eig._replace(vectors=tri(R.T, eig.vectors, lower=False))


def _hessian_matvec(post, x, hessian):
    shape, dtype = x.shape, x.dtype
    hvp = post.gauss_newton_vp if hessian == "gauss_newton" else post.hessian_vp
    return lambda v: hvp(x, v.reshape(shape)).reshape(-1).astype(dtype)


@functools.partial(jax.jit, static_argnames=("hessian", "num_probes"))
def _diag_hessian(post, x, key, hessian, num_probes):
    return diagonal_estimate(_hessian_matvec(post, x, hessian), key, x.size, num_probes,
                             x.dtype)


@functools.partial(jax.jit, static_argnames=("hessian", "solver", "steps", "power_iters"))
def _eig_diag(post, x, d, key, hessian, solver, steps, power_iters):
    """The pencil ``(H, D)`` in D-whitened coordinates ``S H S``, ``S = D^{-1/2}``."""
    hmat = _hessian_matvec(post, x, hessian)
    s = jax.lax.rsqrt(d)
    eig = _eig(solver, lambda w: s * hmat(s * w), key, x.size, steps, x.dtype, None, None,
               power_iters)
    return eig._replace(vectors=s[:, None] * eig.vectors)


def _departure(theta):
    """``1 - min(theta, 1/theta)``: the relative change of variance along an eigenvector
    that keeping the pair makes; ``lambda / (1 + lambda)`` for the prior base."""
    theta = np.maximum(np.asarray(theta, np.float64), np.finfo(np.float64).tiny)
    return 1.0 - np.minimum(theta, 1.0 / theta)


def _theta(values, preconditioner):
    """Eigenvalues of the pencil: ``1 + lambda`` for the prior base."""
    return 1.0 + jnp.maximum(values, 0.0) if preconditioner == "prior" else values


def _departure_interval(theta, residuals):
    """Smallest and largest departure over ``[theta - r, theta + r]``."""
    theta = np.asarray(theta, np.float64)
    r = np.asarray(residuals, np.float64)
    a, b = _departure(theta - r), _departure(theta + r)
    contains_one = (theta - r <= 1.0) & (theta + r >= 1.0)
    return np.where(contains_one, 0.0, np.minimum(a, b)), np.maximum(a, b)


def _select(theta, vectors, rank):
    """The ``rank`` pairs with the largest ``|log theta|`` (optimal truncation)."""
    tiny = jnp.finfo(theta.dtype).tiny
    theta = jnp.maximum(theta, tiny)
    order = jnp.argsort(-jnp.abs(jnp.log(theta)))[:rank]
    return theta[order], vectors[:, order]

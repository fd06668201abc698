"""The Gaussian family of the Laplace approximation: a base ``N(0, M^{-1})`` (prior
precision by dense Cholesky or by CG, or a diagonal) updated along ``rank`` eigenvectors
of the pencil ``(H, M)``, ``Gamma = M^{-1} - V diag(1 - 1/theta) V^T``; exact draws,
pixel variances and (small problems) the dense covariance.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ...linalg import pcg

__all__ = ["Base", "LaplaceApproximation"]


@jax.tree_util.register_pytree_node_class
class Base:
    """The base Gaussian ``N(0, M^{-1})`` of the pencil, as a pytree (so the compiled
    functions below take it as an argument and are reused across same-shaped problems).

    ``kind``: ``'chol'`` -- ``M = Q = R R^T`` with the dense lower Cholesky factor ``R``;
    ``'cg'`` -- ``M = Q`` applied matrix-free, draws ``Q^{-1} L^H eps`` by CG to ``tol``;
    ``'diag'`` -- ``M = diag(d)``.
    """

    def __init__(self, kind, form=None, R=None, d=None, tol=None, maxiter=0):
        self.kind, self.form, self.R, self.d = kind, form, R, d
        self.tol, self.maxiter = tol, maxiter

    def tree_flatten(self):
        return (self.form, self.R, self.d, self.tol), (self.kind, self.maxiter)

    @classmethod
    def tree_unflatten(cls, aux, children):
        form, R, d, tol = children
        return cls(aux[0], form, R, d, tol, aux[1])

    def mass(self, v):
        """``M v`` for a flat ``v``."""
        if self.kind == "diag":
            return self.d * v
        shape = self.form.rhs.shape
        return self.form.prior_precision(v.reshape(shape)).reshape(-1).astype(v.dtype)

    def sample(self, key):
        """One draw ``u ~ N(0, M^{-1})`` (flat)."""
        if self.kind == "diag":
            return jax.random.normal(key, self.d.shape, self.d.dtype) * jax.lax.rsqrt(self.d)
        dtype = self.form.rhs.dtype
        if self.kind == "chol":
            eps = jax.random.normal(key, (self.R.shape[0],), dtype)
            return jax.scipy.linalg.solve_triangular(self.R.T, eps, lower=False)
        L = self.form.prior_precision_sqrt
        eps = jax.random.normal(key, L.range_shape, dtype)
        rhs = jnp.real(L.adjoint(eps)).reshape(-1).astype(dtype)
        return pcg(self.mass, rhs, tol=self.tol, maxiter=self.maxiter).x

    def solve(self, v):
        """``M^{-1} v`` ('cg' kind: by CG to ``tol``)."""
        return pcg(self.mass, v, tol=self.tol, maxiter=self.maxiter).x


class LaplaceApproximation(NamedTuple):
    """``N(mean, M^{-1} - V diag(1 - 1/theta) V^T)`` in factored form (flat vectors).

    ``base`` is the :class:`Base` ``N(0, M^{-1})``; ``base_variance`` is ``diag(M^{-1})``
    when known exactly, else ``None``; ``base_cov`` is the dense ``M^{-1}`` for small
    problems, else ``None``.
    """

    mean: jax.Array
    theta: jax.Array
    vectors: jax.Array
    base: Base
    base_variance: jax.Array | None
    base_cov: jax.Array | None

    def mass(self, v):
        return self.base.mass(v)

    def base_sample(self, key):
        return self.base.sample(key)

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` exact draws ``(num, n)``: ``u - V diag(1 - theta^-1/2) V^T M u``."""
        return _draws(self, key, int(num))

    def variance(self) -> jax.Array | None:
        """Exact pixel variances of the approximation, when ``diag(M^{-1})`` is known."""
        if self.base_variance is None:
            return None
        c = 1.0 - 1.0 / self.theta
        return self.base_variance - jnp.sum(self.vectors ** 2 * c, axis=1)

    def covariance(self) -> jax.Array | None:
        """The dense covariance (small problems only), else ``None``."""
        if self.base_cov is None:
            return None
        c = 1.0 - 1.0 / self.theta
        return self.base_cov - (self.vectors * c) @ self.vectors.T


@functools.partial(jax.jit, static_argnames=("num",))
def _draws(approx, key, num):
    g = 1.0 - jax.lax.rsqrt(approx.theta)
    V = approx.vectors

    def one(k):
        u = approx.base.sample(k)
        return approx.mean + u - V @ (g * (approx.base.mass(u) @ V))

    return jax.lax.map(one, jax.random.split(key, num), batch_size=min(num, 16))

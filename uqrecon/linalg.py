"""Numerical ground floor shared by every layer: preconditioned conjugate gradients.

Pure functions of JAX arrays and callables, importable from any layer (it imports no
other uqrecon module). :func:`pcg` is the package's preconditioned CG; its stopping rule
is one relative-residual test, ``||b - A x|| <= tol ||b||``, and it always reports the
iterations it took and the residual it reached, so a caller can say when it stopped short.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["pcg", "identity"]


def identity(r):
    """The trivial preconditioner."""
    return r


def _dot(a, b):
    return jnp.vdot(a, b).real


def pcg(matvec: Callable, b: jax.Array, precond: Callable = identity, tol=1e-5,
        maxiter=1000, x0: jax.Array | None = None):
    """Solve ``A x = b`` for symmetric positive definite ``A`` by preconditioned CG.

    Args:
        matvec: ``v -> A v`` (any array shape; inner products over all entries).
        b: right-hand side.
        precond: ``r -> M^{-1} r`` for an SPD preconditioner ``M ~ A``.
        tol: stop when the recursively updated residual satisfies
            ``||r|| <= tol ||b||`` (may be a traced scalar).
        maxiter: iteration cap (may be a traced integer).
        x0: starting point (default zero).

    Returns:
        ``(x, iterations, relres)`` with ``relres = ||r|| / ||b||`` of the recursive
        residual at exit (``relres > tol`` means the cap was hit).
    """
    bnorm2 = _dot(b, b)
    thresh = (jnp.asarray(tol, bnorm2.dtype) ** 2) * bnorm2
    if x0 is None:
        x0, r0 = jnp.zeros_like(b), b
    else:
        r0 = b - matvec(x0)
    z0 = precond(r0)

    def cond(c):
        _, r, _, _, _, k = c
        return (_dot(r, r) > thresh) & (k < maxiter)

    def body(c):
        x, r, z, p, rz, k = c
        ap = matvec(p)
        alpha = rz / _dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        z = precond(r)
        rz_new = _dot(r, z)
        return x, r, z, z + (rz_new / rz) * p, rz_new, k + 1

    init = (x0, r0, z0, z0, _dot(r0, z0), jnp.int32(0))
    x, r, _, _, _, k = jax.lax.while_loop(cond, body, init)
    relres = jnp.sqrt(_dot(r, r) / jnp.where(bnorm2 > 0, bnorm2, 1.0))
    return x, k, relres

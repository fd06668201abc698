"""Exact draws from linear-Gaussian posteriors.

For ``y = A x + e``, ``e ~ N(0, 1/tau)`` and prior ``N(m, Q^{-1})`` with ``Q = L^T L`` the
posterior is ``N(P^{-1} b, P^{-1})`` with ``P = tau A^T A + Q`` and ``b = tau A^T y + Q m``.

- Dense path (small n): ``P`` formed from the densified operator, Cholesky
  ``P = R R^T``; ``x = mean + R^{-T} eps``, a block of draws per triangular solve.
- Perturbation-optimisation / RTO (any n, matrix-free): ``x = P^{-1} eta`` with
  ``eta = b + sqrt(tau) A^T e1 + L^T e2`` has exactly the posterior law, because
  ``Cov(eta) = P``. Each draw is one CG solve (``P`` applied once per iteration, the cost
  of one gradient), solved to a relative residual ``tol`` of the *perturbation* (solving
  ``P d = eta - b`` and adding the mean), so the tolerance controls the std error directly.
  CG is preconditioned by a circulant model of ``P`` measured from its point-spread
  function (:func:`uqrecon.linalg.circulant_symbol`; one product with ``P`` at set-up):
  measured on sparse-view CT with a GMRF prior, 77 -> 40 iterations per draw at 128x128
  and 78 -> 34 at 256x256 (``benchmarks/results/gold_tv.md``). Draws are batched with
  ``vmap``.

:data:`EXACT_DENSE` and :data:`PO` are :class:`~.samplers.base.Sampler` bundles of
module-level functions; the factor (:class:`DenseGaussian`) or the form, tolerance and
mean (:class:`POParams`) travel as ``params``, so runs on same-shaped problems share one
compilation.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ..linalg import circulant_solve, circulant_symbol, default_tol, pcg
from .samplers.base import (Sampler, StepInfo, check_int, check_positive, image_init,
                           image_position)

__all__ = ["cg", "default_tol", "posterior_mean", "precision_symbol", "perturbed_rhs",
           "dense_factor", "po_sampler", "dense_sampler", "DenseGaussian", "dense_precision",
           "PO", "POParams", "EXACT_DENSE"]


def cg(matvec: Callable, b: jax.Array, tol: float, maxiter: int):
    """Conjugate gradients for SPD ``matvec`` from zero: :func:`uqrecon.linalg.pcg`
    without a preconditioner; returns ``(x, iterations, relres)``.

    Stops when ``||b - A x|| <= tol ||b||``, at the rounding floor, or after ``maxiter``
    iterations.
    """
    return tuple(pcg(matvec, b, tol=tol, maxiter=maxiter)[:3])


def precision_symbol(form) -> jax.Array:
    """The circulant model of ``P`` used to precondition every CG solve here (one product
    with ``P``; :func:`uqrecon.linalg.circulant_symbol`).

    A complex image in real coordinates (``form.pair_axis``: shape ``(2, *image)``) gets
    the model of the block ``Re P`` acting on the real and on the imaginary part alike (a
    symbol constant along the pair axis, so :func:`~uqrecon.linalg.circulant_solve`'s FFT
    over that axis leaves the two parts separate); an FFT across the pair axis would model
    nothing.
    """
    dtype = form.rhs.dtype
    if getattr(form, "pair_axis", False):
        shape = form.shape[1:]

        def real_block(v):
            return form.precision(jnp.stack([v, jnp.zeros_like(v)]))[0]
        return jnp.broadcast_to(circulant_symbol(real_block, shape, dtype), form.shape)
    return circulant_symbol(form.precision, form.shape, dtype)


@jax.jit
def _posterior_mean(form, tol, maxiter):
    precond = circulant_solve(precision_symbol(form))
    out = pcg(form.precision, form.rhs, precond, tol=tol, maxiter=maxiter)
    # + 1: the product that measured the preconditioner's symbol
    return out.x, out.matvecs + 1, out.relres


def posterior_mean(form, tol: float, maxiter: int):
    """``P^{-1} b`` by circulant-preconditioned CG.

    Jitted at module level on the form (a pytree) with ``tol`` and ``maxiter`` as traced
    scalars, so repeated calls on same-shaped problems reuse the compiled solver whatever
    the data, noise level or tolerance.

    Args:
        form: the :class:`~uqrecon.models.posterior.GaussianForm`.
        tol: relative residual tolerance.
        maxiter: cap on CG iterations.

    Returns:
        ``(mean, products with P, relres)``: the products include the one that measured
        the preconditioner.
    """
    # Python scalars enter as weak-typed traced scalars: no dtype needed here (asking
    # form.rhs for one would apply the operator eagerly)
    return _posterior_mean(form, float(tol), int(maxiter))


def perturbed_rhs(form, key) -> jax.Array:
    """``sqrt(tau) A^H e1 + L^T e2``: a zero-mean vector with covariance ``P``.

    For complex data (MRI) the likelihood gives real and imaginary parts each variance
    ``1/tau``, so ``e1`` has independent standard normal real and imaginary parts; then
    ``Cov(Re A^H e1) = Re(A^H A)``, the likelihood's Hessian for a real image. For a
    complex image ``e2`` too has standard normal real and imaginary parts, so
    ``E[eta eta^H] = 2 P`` and ``E[eta eta^T] = 0``: in real coordinates ``(Re, Im)``
    the covariance of ``eta`` is the real precision ``[[Re P, -Im P], [Im P, Re P]]``
    (see :mod:`uqrecon.models.realview`), and ``P^{-1} eta`` has the posterior's law.
    """
    A, L = form.operator, form.prior_precision_sqrt
    dtype = form.rhs.dtype
    k1, k2, k3 = jax.random.split(key, 3)
    real = jnp.finfo(dtype).dtype
    e1 = jax.random.normal(k1, A.range_shape, real)
    if jnp.issubdtype(jnp.dtype(A.range_dtype), jnp.complexfloating):
        e1 = e1 + 1j * jax.random.normal(k3, A.range_shape, real)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        k2, k4 = jax.random.split(k2)
        e2 = (jax.random.normal(k2, L.range_shape, real)
              + 1j * jax.random.normal(k4, L.range_shape, real)).astype(dtype)
    else:
        e2 = jax.random.normal(k2, L.range_shape, dtype)
    return jnp.sqrt(form.noise_precision) * A.adjoint(e1) + L.adjoint(e2)


class POParams(NamedTuple):
    """Perturbation-optimisation settings: the Gaussian form, CG tolerance and iteration
    cap (arrays), the posterior mean the draws are centred on, and the circulant
    preconditioner's symbol (:func:`precision_symbol`)."""

    form: object
    tol: jax.Array
    maxiter: jax.Array
    mean: jax.Array
    symbol: jax.Array


def _po_step(key, x, params: POParams):
    """One independent draw: one CG solve of ``P d = eta - b``; ``num_grad_evals``
    reports its products with P (CG iterations and the true-residual checks)."""
    dtype = params.mean.dtype
    tol = params.tol.astype(jnp.finfo(dtype).dtype)
    d, _, relres, _, k = pcg(params.form.precision, perturbed_rhs(params.form, key),
                             circulant_solve(params.symbol), tol=tol,
                             maxiter=params.maxiter)
    ok = relres <= tol
    return params.mean + d, StepInfo(jnp.where(ok, 1.0, 0.0).astype(dtype), k, ~ok,
                                     tol.astype(dtype))


PO = Sampler(init=image_init, step=_po_step, position=image_position)


_precision_symbol = jax.jit(precision_symbol)


def po_sampler(form, tol: float, maxiter: int, mean: jax.Array,
               preconditioner: str = "circulant"):
    """Independent draws by circulant-preconditioned perturbation-optimisation.

    Args:
        form: the :class:`~uqrecon.models.posterior.GaussianForm`.
        tol: CG relative residual tolerance of each draw's solve.
        maxiter: cap on CG iterations per draw.
        mean: the posterior mean (:func:`posterior_mean`) the draws are centred on.
        preconditioner: ``"circulant"`` (:func:`precision_symbol`) or ``"none"``.

    Returns:
        ``(PO, POParams)`` for the runner; measuring the preconditioner costs one product
        with ``P``.
    """
    mean = jnp.asarray(mean)
    real = jnp.finfo(mean.dtype).dtype
    tol = check_positive("tol", tol)
    maxiter = check_int("maxiter", maxiter, 1)
    if preconditioner == "circulant":
        symbol = _precision_symbol(form)
    elif preconditioner == "none":     # C = I: the same compiled step, two idle FFTs
        symbol = jnp.ones(form.shape, real)
    else:
        raise ValueError("'preconditioner' must be 'circulant' or 'none', got "
                         f"{preconditioner!r}")
    return PO, POParams(form, jnp.asarray(tol, real), jnp.asarray(maxiter, jnp.int32), mean,
                        symbol)


class DenseGaussian(NamedTuple):
    """Posterior mean and lower Cholesky factor ``R`` of the precision ``P = R R^H``.

    For a complex image the density is ``exp(-(x - mean)^H P (x - mean) / 2)``: a circular
    complex Gaussian with ``E[(x - mean)(x - mean)^H] = 2 P^{-1}`` (real and imaginary
    parts each of covariance ``Re P^{-1}``; see :mod:`uqrecon.models.realview`).
    """

    mean: jax.Array
    chol: jax.Array

    def variance(self) -> jax.Array:
        """Pixel variances ``diag(P^{-1}) = diag(R^{-H} R^{-1})``: column sums of squares of
        ``R^{-1}`` (one triangular inversion, n^3/3 flops; only when asked). For a
        complex image ``E|x_i - mean_i|^2 = 2 diag(P^{-1})``, the sum of the variances of
        the real and the imaginary part (the package's convention for complex images)."""
        n = self.mean.size
        rinv = jsl.solve_triangular(self.chol, jnp.eye(n, dtype=self.chol.dtype), lower=True)
        var = jnp.sum(jnp.abs(rinv) ** 2, axis=0).real.reshape(self.mean.shape)
        return 2 * var if jnp.iscomplexobj(self.mean) else var

    def sample(self, key, num=()):
        """``mean + R^{-H} eps``; a block of draws is one triangular solve with many
        right-hand sides (level-3 BLAS), much faster than one solve per draw. For a
        complex image ``eps`` has standard normal real and imaginary parts
        (``E[eps eps^H] = 2 I``)."""
        num = (num,) if isinstance(num, int) else tuple(num)
        count = math.prod(num)
        if jnp.iscomplexobj(self.mean):
            real = jnp.finfo(self.mean.dtype).dtype
            k1, k2 = jax.random.split(key)
            eps = (jax.random.normal(k1, (self.mean.size, count), real)
                   + 1j * jax.random.normal(k2, (self.mean.size, count), real))
            eps = eps.astype(self.mean.dtype)
        else:
            eps = jax.random.normal(key, (self.mean.size, count), self.mean.dtype)
        x = jsl.solve_triangular(self.chol, eps, lower=True, trans="C")
        return self.mean + x.T.reshape(*num, *self.mean.shape)


def dense_precision(form) -> jax.Array:
    """``P`` as an n x n matrix (:meth:`GaussianForm.precision_matrix`: the operator
    densified once and squared, not n products with P)."""
    return form.precision_matrix()


@jax.jit
def _dense_factor(form):
    R = jnp.linalg.cholesky(dense_precision(form))
    mean = jsl.cho_solve((R, True), form.rhs.ravel()).reshape(form.shape)
    return DenseGaussian(mean, R)


def dense_factor(form) -> DenseGaussian:
    """Dense posterior: build ``P``, factor it, solve for the mean."""
    dense = _dense_factor(form)
    if not bool(jnp.all(jnp.isfinite(dense.chol))):
        raise ValueError("exact (dense): the posterior precision is not numerically positive "
                         "definite in this dtype; use float64 or method='rto'")
    return dense


def _dense_step(key, x, params: DenseGaussian):
    dtype = params.mean.dtype
    return params.sample(key), StepInfo(jnp.ones((), dtype), jnp.int32(0),
                                        jnp.bool_(False), jnp.zeros((), dtype))


def _dense_draw(key, params: DenseGaussian):
    return params.sample(key)


EXACT_DENSE = Sampler(init=image_init, step=_dense_step, position=image_position,
                      draw=_dense_draw)


def dense_sampler(dense: DenseGaussian):
    """``(EXACT_DENSE, dense)``: independent draws ``mean + R^{-T} eps``; no gradient
    evaluations. An i.i.d. stream (``draw``): the runner makes each chunk's draws in one
    blocked solve."""
    return EXACT_DENSE, dense

"""Low-rank Laplace approximation: a Gaussian at the mode with a matrix-free Hessian.

The Hessian ``H`` of the potential at the mode is only ever applied to vectors
(forward-over-reverse Hessian-vector products, or Gauss-Newton products for non-Gaussian
likelihoods). Relative to an SPD *base* precision ``M`` with covariance ``M^{-1}``, the
pencil ``H v = theta M v`` is partly diagonalised by Lanczos (or a randomized
eigensolver), and the covariance is the low-rank update

    Gamma = M^{-1} - V diag(1 - 1/theta) V^T,      V^T M V = I,

keeping the ``rank`` pairs with the largest ``|log theta|`` -- the optimal low-rank
update of Spantini et al. (2015) / Bui-Thanh et al. (2013). Two bases:

* ``'prior'`` (linear-Gaussian posteriors, i.e. ``posterior.gaussian_form()`` exists):
  ``M = Q``, the prior precision, and ``theta = 1 + lambda`` with ``lambda`` the
  eigenvalues of the prior-preconditioned data-misfit Hessian, so
  ``Gamma_post = Gamma_pr - V diag(lambda / (1 + lambda)) V^T``. Exact as the rank
  reaches the number of informed directions. Up to ``dense_max`` pixels the pencil is
  whitened by the Cholesky factor of ``Q``; beyond, Lanczos runs in the ``Q`` inner
  product with ``Q^{-1}`` applied by CG.
* ``'diag'`` (anything smooth: smoothed TV, Cauchy, Poisson likelihoods): no prior
  covariance exists, so ``M = D`` is a diagonal estimate of the Hessian itself (Bekas et
  al. 2007, Rademacher probes), and the low-rank part corrects the directions where
  ``H`` differs most from ``D``. Exact at full rank for any positive ``D``; for a
  non-Gaussian likelihood (Poisson) ``H`` is the Gauss-Newton curvature by default.

Pixel variances never form an ``n x n`` matrix: ``diag(M^{-1})`` minus the low-rank
correction. ``diag(Q^{-1})`` is computed exactly (dense Cholesky of ``Q``) up to
``dense_max`` pixels; beyond, the pixel variances are the sample variances of
``num_variance_samples`` exact draws of the approximation, with relative standard error
``sqrt(2 / N)`` per pixel, recorded in the result's diagnostics.

What it captures: the local curvature at the mode, hence the exact posterior for linear
Gaussian models at full rank. It cannot capture skew, heavy tails or boundary effects of
constraints (e.g. positivity), nor the mean shift of a non-Gaussian posterior.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..linalg import (Eigh, default_tol, dense_from_matvec, lanczos_eigh, pcg,
                      randomized_eigh)
from .accounting import APPROXIMATION, CallClock, method_result
from .exact import posterior_mean as _posterior_mean

__all__ = ["laplace", "laplace_approximation", "LaplaceApproximation", "diagonal_estimate"]


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
        return approx.mean + u - V @ (g * (V.T @ approx.base.mass(u)))

    return jax.lax.map(one, jax.random.split(key, num), batch_size=min(num, 16))


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


def laplace_approximation(posterior, key: jax.Array, *, rank: int | str = 50, mode=None,
                          preconditioner: str = "auto", solver: str = "lanczos",
                          oversample: int = 10, power_iters: int = 1,
                          hessian: str = "gauss_newton", num_probes: int = 32,
                          dense_max: int = 4096, cg_tol: float | None = None,
                          cg_maxiter: int = 5000, map_config: dict | None = None,
                          rank_tol: float = 0.1, max_rank: int | None = None,
                          max_time_s: float | None = None
                          ) -> tuple[LaplaceApproximation, dict]:
    """Build the factored low-rank Laplace approximation; returns ``(approx, info)``.

    See :func:`laplace` for the arguments. ``info`` records the base, the mode's
    linear-solve residual (Gaussian case), the eigenvalues found, the rank rule's
    outcome and the number of gradient / Hessian-vector products used.
    """
    _check_args(posterior, rank, preconditioner, solver, oversample, hessian, num_probes,
                mode, rank_tol, max_rank, max_time_s)
    shape = tuple(posterior.shape)
    dtype = jnp.dtype(posterior.dtype)
    n = math.prod(shape)
    tol = default_tol(dtype) if cg_tol is None else float(cg_tol)
    form = posterior.gaussian_form()
    if preconditioner == "auto":
        preconditioner = "prior" if form is not None else "diag"
    if preconditioner == "prior" and form is None:
        raise ValueError("preconditioner='prior' needs a linear-Gaussian 'posterior' "
                         "(posterior.gaussian_form() is None); use preconditioner='diag'")
    info = {"preconditioner": preconditioner}
    k_eig, k_diag = jax.random.split(key)
    mode_grads = 0

    # -- mode ------------------------------------------------------------------------
    if mode is not None:
        x0 = jnp.asarray(mode, dtype).reshape(-1)
    elif form is not None:
        if n <= dense_max:      # dense Cholesky (n products with P to build it)
            x0 = _dense_mode(form)
            mode_grads = n
        else:
            x0, iters, res = _posterior_mean(form, tol, cg_maxiter)
            x0 = x0.reshape(-1).astype(dtype)
            info["mode_cg_relres"] = float(res)
            mode_grads = int(iters)          # one product with P per CG iteration
    else:
        from uqrecon.map import map_estimate

        x_map, map_info = map_estimate(posterior, **(map_config or {}))
        info["map"] = {k: v for k, v in map_info.items() if isinstance(v, (str, int, float, bool))}
        x0 = jnp.asarray(x_map, dtype).reshape(-1)
        mode_grads = int(map_info.get("num_grad_evals", 0))
    info["num_grad_evals_mode"] = mode_grads

    # -- base of the pencil ----------------------------------------------------------
    if preconditioner == "prior":
        if n > dense_max:
            base = Base("cg", form, tol=jnp.asarray(tol, dtype), maxiter=int(cg_maxiter))
            base_var = base_cov = None
        else:
            R = _prior_cholesky(form)
            if not bool(jnp.all(jnp.isfinite(R))):
                raise ValueError("laplace: the prior precision is singular (improper prior, "
                                 "e.g. a GMRF with periodic/neumann boundary) or not "
                                 "numerically positive definite; use preconditioner='diag'")
            base = Base("chol", form, R=R)
            base_cov, base_var = _cholesky_covariance(R)

        def eig(steps):
            return _eig_prior(form, base, k_eig, solver, steps, power_iters)
        eig_mass = base.kind == "cg"
    else:
        x_img = x0.reshape(shape)
        d = _diag_hessian(posterior, x_img, k_diag, hessian, num_probes)
        info["num_hvp_diagonal"] = num_probes
        floor = 1e-3 * jnp.mean(jnp.abs(d))
        d = jnp.maximum(d, floor)
        info["diag_clipped"] = int(jnp.sum(d <= floor))
        base = Base("diag", d=d)
        base_var = 1.0 / d
        base_cov = jnp.diag(base_var) if n <= dense_max else None

        def eig(steps):
            return _eig_diag(posterior, x_img, d, k_eig, hessian, solver, steps, power_iters)
        eig_mass = False

    # -- eigenpairs: a fixed rank, or grown until the dropped pairs are negligible -----
    hvps = 0
    t0 = time.perf_counter()
    if rank == "auto":
        cap = min(n, 1000 if max_rank is None else int(max_rank))
        margin = max(int(oversample), 1)
        steps, prev_keep = min(n, 32 + margin), None
        while True:
            eigh = eig(steps)
            hvps += _num_products(solver, n, steps, power_iters, _is_dense_eig(
                steps, n, True if eig_mass else None))
            theta, vectors = _theta(eigh.values, preconditioner), eigh.vectors
            dep = _departure(theta)
            keep = int(np.sum(dep >= rank_tol))
            if eigh.residuals is not None:
                # Ritz values with their residual bounds: no pair may straddle the
                # threshold, and `margin` pairs must lie certainly below it
                lo, hi = _departure_interval(theta, eigh.residuals)
                certain_below = int(np.sum(hi < rank_tol))
                met = (not np.any((lo < rank_tol) & (hi >= rank_tol))
                       and certain_below >= min(margin, steps - keep))
            else:       # randomized: the count above the threshold stopped growing
                met = prev_keep is not None and keep == prev_keep
            met = (met and keep + margin <= steps) or steps == n
            timed_out = max_time_s is not None and time.perf_counter() - t0 > max_time_s
            if met or steps >= min(n, cap + margin) or timed_out:
                break
            prev_keep = keep
            steps = min(n, 2 * steps, cap + margin)
        rank_used = max(1, min(keep, cap))
        ok = bool(met and keep <= cap)
        info["rank_rule"] = {
            "rank_tol": float(rank_tol), "max_rank": cap, "steps": steps,
            "criterion_met": ok,
            "stopped_by": "criterion" if ok else "time" if timed_out else "max_rank"}
    else:
        steps = min(n, rank + oversample)
        eigh = eig(steps)
        hvps += _num_products(solver, n, steps, power_iters, _is_dense_eig(
            steps, n, True if eig_mass else None))
        theta, vectors = _theta(eigh.values, preconditioner), eigh.vectors
        rank_used = int(rank)
    info["eigensolver_s"] = time.perf_counter() - t0
    all_theta = np.asarray(theta, np.float64)
    order = np.argsort(-_departure(all_theta), kind="stable")
    dropped_idx = order[rank_used:]
    # the largest departure among the computed pairs that were dropped, as an upper
    # bound from each Ritz value and its residual (Lanczos; exact for a dense eigh):
    # an unconverged pair (large residual) makes the bound large, honestly. Pairs never
    # computed are assumed below the computed ones (Ritz values interlace).
    if eigh.residuals is not None:
        _, hi = _departure_interval(all_theta, np.asarray(eigh.residuals, np.float64))
        kind = "ritz value + residual bound"
    else:
        hi = _departure(all_theta)
        kind = "ritz value (randomized solver: no residual, an estimate)"
    dropped = float(np.max(hi[dropped_idx])) if dropped_idx.size else 0.0
    info["truncation"] = {
        "departure": dropped, "kind": kind,
        "variance_ratio_bound": 1.0 / (1.0 - dropped) if dropped < 1 else math.inf,
        "whole_spectrum": bool(steps == n)}
    theta, vectors = _select(theta, vectors, rank_used)
    info["eigenvalues"] = np.asarray(theta)
    info["num_hvp"] = hvps + info.get("num_hvp_diagonal", 0)
    info["num_grad_evals"] = mode_grads + info["num_hvp"]
    approx = LaplaceApproximation(x0, theta, vectors, base, base_var, base_cov)
    return approx, info


def laplace(posterior, key: jax.Array, *, rank: int | str = 50, mode=None,
            preconditioner: str = "auto", solver: str = "lanczos", oversample: int = 10,
            power_iters: int = 1, hessian: str = "gauss_newton", num_probes: int = 32,
            dense_max: int = 4096, num_variance_samples: int = 200,
            cg_tol: float | None = None, cg_maxiter: int = 5000,
            map_config: dict | None = None, rank_tol: float = 0.1,
            max_rank: int | None = None, max_time_s: float | None = None):
    """Low-rank Laplace approximation of ``posterior``; returns a Gaussian ``Result``.

    ``rank``: eigenpairs kept (``solver`` 'lanczos' or 'randomized' computes
    ``rank + oversample``), or ``'auto'``: the eigensolve is repeated with twice the
    steps until at least ``max(oversample, 1)`` computed pairs have a *departure*
    ``1 - min(theta, 1/theta)`` below ``rank_tol`` (for the prior base this is
    ``lambda / (1 + lambda)``: dropping the pair changes the variance along it by that
    fraction), and all pairs above it are kept -- at most ``max_rank`` (default
    ``min(n, 1000)``) and, if given, stopping after ``max_time_s`` seconds of
    eigensolves. For the prior base, every pixel variance then satisfies
    ``var_post <= var_approx <= var_post / (1 - departure)`` with ``departure`` the
    largest dropped one (exact eigenpairs; Lanczos Ritz values estimate it). The rank
    used, the rule's outcome and this bound are in ``diagnostics``.
    ``mode``: the MAP image if known (else CG on the normal equations for
    linear-Gaussian posteriors, ``uqrecon.map_estimate`` otherwise).
    ``preconditioner``: 'prior' | 'diag' | 'auto' (see the module docstring).
    ``hessian``: 'gauss_newton' or 'exact' (forward-over-reverse) for the 'diag' base.
    ``cg_tol`` / ``cg_maxiter``: the CG solves with the prior precision (mode and base
    beyond ``dense_max`` pixels); ``cg_tol`` defaults to :func:`uqrecon.linalg.default_tol`.
    Up to ``dense_max`` pixels the result carries the dense covariance (``gaussian``
    of kind 'dense'); beyond, pixel variances are exact for the 'diag' base and
    estimated from ``num_variance_samples`` draws for the 'prior' base.
    ``diagnostics['num_grad_evals']`` counts gradient-equivalent products: products
    with the precision for the mode (CG iterations, dense columns, or the MAP
    optimiser's gradients) plus Hessian-vector products of the eigensolver and the
    diagonal estimate (prior-precision solves, which involve no forward operator, are
    not counted).
    """
    if not isinstance(num_variance_samples, (int, np.integer)) or num_variance_samples < 2:
        raise ValueError("'num_variance_samples' must be an integer >= 2, got "
                         f"{num_variance_samples!r}")
    with CallClock() as clock:
        approx, info = laplace_approximation(
            posterior, key, rank=rank, mode=mode, preconditioner=preconditioner,
            solver=solver, oversample=oversample, power_iters=power_iters, hessian=hessian,
            num_probes=num_probes, dense_max=dense_max, cg_tol=cg_tol,
            cg_maxiter=cg_maxiter, map_config=map_config, rank_tol=rank_tol,
            max_rank=max_rank, max_time_s=max_time_s)
        shape = tuple(posterior.shape)
        var = approx.variance()
        diagnostics = {"eigenvalues": info["eigenvalues"],
                       "rank": int(approx.theta.shape[0]),
                       "preconditioner": info["preconditioner"],
                       "num_grad_evals": info["num_grad_evals"],
                       "num_grad_evals_mode": info["num_grad_evals_mode"],
                       "num_hvp": info["num_hvp"], "truncation": info["truncation"]}
        for k in ("mode_cg_relres", "diag_clipped", "map", "rank_rule"):
            if k in info:
                diagnostics[k] = info[k]
        if var is None:
            draws = approx.sample(jax.random.fold_in(key, 1), num_variance_samples)
            var = jnp.mean((draws - approx.mean) ** 2, axis=0)
            diagnostics["variance_estimator"] = (
                f"sample variance of {num_variance_samples} exact draws of the "
                "approximation (prior draws by CG)")
            diagnostics["variance_rel_se"] = math.sqrt(2.0 / num_variance_samples)
        else:
            diagnostics["variance_estimator"] = "exact"
        var = np.maximum(np.asarray(var), 0.0)  # rounding can give -eps where var ~ 0
        cov = approx.covariance()
        gaussian = None if cov is None else {
            "kind": "dense", "mean": np.asarray(approx.mean), "cov": np.asarray(cov)}
    config = {"rank": rank, "preconditioner": info["preconditioner"], "solver": solver,
              "oversample": oversample, "power_iters": power_iters, "hessian": hessian,
              "num_probes": num_probes, "dense_max": dense_max,
              "num_variance_samples": num_variance_samples, "cg_tol": cg_tol,
              "cg_maxiter": cg_maxiter, "mode": None if mode is None else "given",
              "rank_tol": rank_tol, "max_rank": max_rank, "max_time_s": max_time_s}
    return method_result(posterior, "laplace", config, clock,
                         mean=np.asarray(approx.mean).reshape(shape),
                         variance=var.reshape(shape), diagnostics=diagnostics,
                         gaussian=gaussian, exactness=APPROXIMATION)


def _check_args(posterior, rank, preconditioner, solver, oversample, hessian, num_probes,
                mode, rank_tol=0.1, max_rank=None, max_time_s=None):
    if not getattr(posterior, "is_smooth", False):
        raise ValueError("'posterior' has non-smooth terms; the Laplace approximation needs "
                         "a smooth potential (use a smoothed prior)")
    n = math.prod(posterior.shape)
    if isinstance(rank, str):
        if rank != "auto":
            raise ValueError(f"'rank' must be an integer in [1, {n}] or 'auto', got {rank!r}")
    elif isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
            or not 1 <= rank <= n:
        raise ValueError(f"'rank' must be an integer in [1, {n}] or 'auto', got {rank!r}")
    if isinstance(rank_tol, bool) or not isinstance(rank_tol, (int, float, np.floating)) \
            or not 0 < rank_tol < 1:
        raise ValueError(f"'rank_tol' must be a number in (0, 1), got {rank_tol!r}")
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(
            max_rank, (int, np.integer)) or max_rank < 1):
        raise ValueError(f"'max_rank' must be a positive integer or None, got {max_rank!r}")
    if max_time_s is not None and (isinstance(max_time_s, bool) or not isinstance(
            max_time_s, (int, float, np.floating)) or not max_time_s > 0):
        raise ValueError(f"'max_time_s' must be a number > 0 or None, got {max_time_s!r}")
    if not isinstance(oversample, (int, np.integer)) or oversample < 0:
        raise ValueError(f"'oversample' must be a non-negative integer, got {oversample!r}")
    if preconditioner not in ("auto", "prior", "diag"):
        raise ValueError("'preconditioner' must be 'auto', 'prior' or 'diag', got "
                         f"{preconditioner!r}")
    if solver not in ("lanczos", "randomized"):
        raise ValueError(f"'solver' must be 'lanczos' or 'randomized', got {solver!r}")
    if hessian not in ("gauss_newton", "exact"):
        raise ValueError(f"'hessian' must be 'gauss_newton' or 'exact', got {hessian!r}")
    if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
        raise ValueError(f"'num_probes' must be a positive integer, got {num_probes!r}")
    if mode is not None and tuple(np.shape(mode)) != tuple(posterior.shape):
        raise ValueError(f"'mode' has shape {tuple(np.shape(mode))}, expected "
                         f"{tuple(posterior.shape)}")

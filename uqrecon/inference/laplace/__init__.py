"""Low-rank Laplace approximation: a Gaussian at the mode with a matrix-free Hessian.

Pieces: ``family`` (the Gaussian family and its draws), ``pencil`` (eigenpairs of the
pencil, compiled once), ``fit`` (mode, base, eigensolve, truncation); :func:`laplace`
here packs the Result.

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

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..accounting import APPROXIMATION, CallClock, method_result
from .family import Base, LaplaceApproximation
from .fit import laplace_approximation
from .pencil import diagonal_estimate

__all__ = ["laplace", "laplace_approximation", "LaplaceApproximation", "Base",
           "diagonal_estimate"]


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
    of kind 'dense'); beyond, pixel variances are exact for the 'diag' base, whose
    factors the result carries at any size (kind 'diag_update':
    :class:`uqrecon.gaussians.UpdatedDiagonalGaussian`, so ``Result.sample``, structure
    tests and risk work from them), and estimated from ``num_variance_samples`` draws
    for the 'prior' base (no factors: its base ``Q^{-1}`` is applied by CG only).
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
        if cov is not None:
            gaussian = {"kind": "dense", "mean": np.asarray(approx.mean),
                        "cov": np.asarray(cov)}
        elif approx.base.kind == "diag":     # any size: D^{-1} - V diag(1 - 1/theta) V^T
            gaussian = {"kind": "diag_update", "mean": np.asarray(approx.mean),
                        "precision": np.asarray(approx.base.d),
                        "vectors": np.asarray(approx.vectors),
                        "theta": np.asarray(approx.theta)}
        else:      # the prior base beyond dense_max: Q^{-1} only by CG, not as arrays
            gaussian = None
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

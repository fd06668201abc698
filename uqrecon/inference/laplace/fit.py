"""Building the factored low-rank Laplace approximation: the mode, the base, the
eigensolve (repeated with twice the steps under ``rank='auto'``) and the bookkeeping of
what it cost and what the truncation drops.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from ...linalg import default_tol
from ..exact import posterior_mean as _posterior_mean
from .family import Base, LaplaceApproximation
from .pencil import (_cholesky_covariance, _dense_mode, _departure, _departure_interval,
                     _diag_hessian, _eig_diag, _eig_prior, _is_dense_eig, _num_products,
                     _prior_cholesky, _select, _theta)

__all__ = ["laplace_approximation"]


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

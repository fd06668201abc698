"""Low-rank-plus-diagonal Gaussian variational inference.

The family is ``q = N(mu, D (I + W W^T) D)`` with ``D`` diagonal and ``W`` of shape
``(n, rank)`` (so ``U = D W`` is the low-rank factor, stored through the dimensionless
``W``: one Adam learning rate then suits pixels whose scales differ by orders of
magnitude). Draws are ``mu + d * (eps1 + W eps2)``; the entropy and log density use the
matrix determinant lemma and Woodbury identity on a ``rank x rank`` system, so a step
costs ``O(n rank^2)`` on top of the potential.

Optimiser for a linear-Gaussian posterior (``optimizer='lbfgs'``, chosen by 'auto' when
the exact Hessian diagonal is affordable): the mean is the posterior mean (one CG solve)
and ``(log d, W)`` minimise the exact KL divergence by L-BFGS
(:mod:`uqrecon.inference.variational.gaussian_target`), stopped when its rms gradient is
below ``gtol``: no Monte Carlo noise, and it converges where Adam does not.

Optimiser otherwise (``optimizer='adam'``): the mean gets a Newton-CG step after every
window of Adam steps (from the window's antithetic estimate of ``E_q[grad U]``, which is
the mean's stationarity condition for every Gaussian family): on an ill-conditioned
posterior the mean converges in CG iterations rather than in ~``cond`` Adam steps, and
for a Gaussian target it is exact after the first window. ``log d`` and ``W`` are
fitted with Adam. Convergence is not an ELBO plateau: a plateau at the last learning
rate triggers a check with fixed parameters and fresh draws (see
:func:`uqrecon.inference.variational.core.fit_adam`), and only a passed check sets
``converged``.

What it captures: the mean, and the ``rank`` directions of largest posterior
correlation, so marginal variances are much less under-estimated than by mean-field VI
(exact as ``rank -> n`` for a Gaussian target, up to optimisation noise). It cannot
represent skew, heavy tails or several modes.
"""

from __future__ import annotations

import math
import warnings

import jax
import numpy as np

from ..accounting import CallClock
from . import core, gaussian_target

__all__ = ["lowrank"]


def lowrank(posterior, key: jax.Array, *, rank: int = 10, init=None,
            init_scale: float = 0.1, num_mc: int = 8, tol: float = 1e-3,
            var_tol: float = 0.02, max_iter: int = 20000, learning_rate: float = 1e-2,
            window: int = 200, elbo_tol: float = 1e-3, estimator: str = "analytic",
            lr_decay: float = 0.3, num_decays: int = 2, hessian: str = "gauss_newton",
            hessian_diagonal: str = "auto", cg_tol: float | None = None,
            cg_maxiter: int | None = None, curvature_draws: int | None = None,
            optimizer: str = "auto", gtol: float = 1e-5, progress: bool = False):
    """Low-rank-plus-diagonal Gaussian VI of ``posterior`` (covariance ``D^2 + U U^T``).

    ``rank`` is the number of columns of ``U``; it starts as small random columns
    (``U = 0`` is a saddle point of the ELBO). ``D`` starts at ``diag(M)^{-1/2}`` (the
    Gauss-Newton Hessian's diagonal at the start, by ``n`` unit-vector products, when
    ``hessian_diagonal`` is 'exact', or 'auto' up to 16384 pixels), else at
    ``init_scale``. ``tol``: the mean's Newton step (relative l2); ``var_tol``: the rms
    gradient of the dimensionless covariance parameters, both as 3-sigma bounds at a
    check. ``optimizer``: 'lbfgs' (linear-Gaussian posteriors with an affordable exact
    Hessian diagonal: L-BFGS on the exact KL, stopped at rms gradient ``gtol`` over the
    dimensionless parameters ``log d`` and ``W``; ``max_iter`` caps its iterations),
    'adam' (any posterior; ``tol``, ``var_tol`` and the Adam options apply), or 'auto'
    (the first where it applies). Other arguments as in
    :func:`uqrecon.inference.variational.meanfield` with ``optimizer='adam'``. With
    'lbfgs' the Adam options, ``tol``, ``var_tol``, ``init`` and ``init_scale`` have no
    effect (the mean is the exact one, the scales start at the mean-field optimum).
    """
    core.check_common(posterior, num_mc=num_mc, max_iter=max_iter, tol=tol,
                      var_tol=var_tol, init=init, init_scale=init_scale, hessian=hessian)
    core.check_adam(learning_rate=learning_rate, window=window, elbo_tol=elbo_tol,
                    estimator=estimator, lr_decay=lr_decay, num_decays=num_decays)
    n = math.prod(posterior.shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or \
            not 1 <= rank <= n:
        raise ValueError(f"'rank' must be an integer in [1, {n}], got {rank!r}")
    if optimizer not in ("auto", "adam", "lbfgs"):
        raise ValueError("'optimizer' must be 'auto', 'adam' or 'lbfgs', got "
                         f"{optimizer!r}")
    core.check_positive("gtol", gtol)
    exact_diag, cg_tol, cg_maxiter, curvature_draws = core.solver_options(
        posterior, hessian_diagonal, cg_tol, cg_maxiter, curvature_draws)
    form = posterior.gaussian_form()
    lbfgs_ok = form is not None and exact_diag
    if optimizer == "lbfgs" and not lbfgs_ok:
        raise ValueError("optimizer='lbfgs' needs a linear-Gaussian posterior and the "
                         "exact Hessian diagonal (hessian_diagonal='exact', or 'auto' up "
                         "to 16384 pixels); use optimizer='adam'")
    if optimizer == "auto":
        optimizer = "lbfgs" if lbfgs_ok else "adam"
    if optimizer == "lbfgs":
        return _lowrank_lbfgs(posterior, form, key, rank=rank, init_scale=init_scale,
                              max_iter=max_iter, gtol=gtol, hessian=hessian,
                              cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    config = {"rank": rank, "optimizer": "adam", "init_scale": init_scale, "num_mc": num_mc,
              "tol": tol,
              "var_tol": var_tol, "max_iter": max_iter, "learning_rate": learning_rate,
              "window": window, "elbo_tol": elbo_tol, "estimator": estimator,
              "lr_decay": lr_decay, "num_decays": num_decays, "hessian": hessian,
              "hessian_diagonal": "exact" if exact_diag else "none", "cg_tol": cg_tol,
              "cg_maxiter": cg_maxiter,
              "curvature_draws": curvature_draws, "init": None if init is None else "given"}
    with CallClock() as clock:
        mu = core.initial_mean(posterior, init)
        key, kW = jax.random.split(key)
        log_d, adiag, setup = core.initial_log_scale(posterior, mu, exact_diag, hessian,
                                                     init_scale)
        W = 0.1 / math.sqrt(rank) * jax.random.normal(kW, (n, rank), mu.dtype)
        params, diagnostics = core.fit_adam(
            posterior, key, "lowrank", mu, {"log_d": log_d, "W": W}, num_mc=num_mc,
            tol=tol, var_tol=var_tol, max_iter=max_iter, hessian=hessian, cg_tol=cg_tol,
            cg_maxiter=cg_maxiter, learning_rate=learning_rate, window=window,
            elbo_tol=elbo_tol, estimator=estimator, lr_decay=lr_decay,
            num_decays=num_decays, progress=progress, setup_grad_evals=setup,
            name="low-rank VI", curvature_draws=curvature_draws, anchor_diag=adiag)
        d = np.exp(np.asarray(params["log_d"], np.float64))
        factor = (d[:, None] * np.asarray(params["W"], np.float64)).astype(posterior.dtype)
    return core.vi_result(posterior, "lowrank", "lowrank", params["mu"],
                          (d * d).astype(posterior.dtype), factor, diagnostics, config,
                          clock)


def _lowrank_lbfgs(posterior, form, key, *, rank, init_scale, max_iter, gtol, hessian,
                   cg_tol, cg_maxiter):
    """``optimizer='lbfgs'``: exact mean by CG, then L-BFGS on the exact KL."""
    from .. import exact as _exact

    n = math.prod(posterior.shape)
    dtype = posterior.dtype
    config = {"rank": rank, "optimizer": "lbfgs", "init_scale": init_scale,
              "max_iter": max_iter, "gtol": gtol, "hessian": hessian,
              "hessian_diagonal": "exact", "cg_tol": cg_tol, "cg_maxiter": cg_maxiter}
    with CallClock() as clock:
        mean, cg_products, relres = _exact.posterior_mean(form, cg_tol, cg_maxiter)
        mu = mean.reshape(-1).astype(dtype)
        log_d, diag_p, diag_products = core.initial_log_scale(posterior, mu, True, hessian,
                                                              init_scale)
        W = 0.1 / math.sqrt(rank) * jax.random.normal(key, (n, rank), dtype)
        params, steps, g_rms, kl, evals = gaussian_target.fit_lowrank_kl(
            posterior, mu, diag_p, {"log_d": log_d, "W": W}, gtol, max_iter,
            hessian=hessian)
        steps, g_rms, evals = int(steps), float(g_rms), int(evals)
        d = np.exp(np.asarray(params["log_d"], np.float64))
        factor = (d[:, None] * np.asarray(params["W"], np.float64)).astype(dtype)
    relres = float(relres)
    shortfalls = []
    if g_rms > gtol:
        shortfalls.append(f"'max_iter'={max_iter} L-BFGS iterations used; rms gradient of "
                          f"the exact KL {g_rms:.2e} > gtol={gtol:g}")
    if relres > cg_tol:
        shortfalls.append(f"the mean's CG stopped at relative residual {relres:.2e} > "
                          f"cg_tol={cg_tol:g} ('cg_maxiter'={cg_maxiter})")
    converged = not shortfalls
    reason = ("; ".join(shortfalls) if shortfalls
              else f"rms gradient of the exact KL {g_rms:.2e} <= gtol={gtol:g}")
    if not converged:
        warnings.warn(f"low-rank VI did not converge: {reason}; results may be inaccurate",
                      RuntimeWarning, stacklevel=3)
    products = int(cg_products) + diag_products + evals * rank
    diagnostics = {"converged": converged, "reason": reason, "num_steps": steps,
                   "rms_grad": g_rms, "kl_covariance_part": float(kl),
                   "mean_cg_relres": relres, "num_grad_evals": products,
                   "num_hessian_products": products, "num_objective_evals": evals}
    return core.vi_result(posterior, "lowrank", "lowrank", mu, (d * d).astype(dtype),
                          factor, diagnostics, config, clock)

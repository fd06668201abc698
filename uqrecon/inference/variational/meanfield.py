"""Mean-field (fully factorised) Gaussian variational inference.

The family is ``q = N(mu, diag(sigma^2))``. Its optimum (maximum ELBO) satisfies two
fixed-point equations (Opper and Archambeau 2009):

* mean:      ``E_q[grad U(x)] = 0``;
* variances: ``1 / sigma_i^2 = E_q[d^2 U / dx_i^2]``.

For a Gaussian target ``N(m, P^{-1})`` they give the exact mean ``m`` and the
*conditional* variances ``1 / P_ii``, which under-estimate the marginal variances
whenever pixels are correlated (always in CT/MRI). The family cannot represent
correlations, multimodality or skew (e.g. from TV or positivity).

Optimiser (``optimizer='newton'``, the default): rounds of

1. ``8`` independent groups of antithetic draws give ``E_q[grad U]`` and the curvature
   ``E_q[diag hess U]`` (Stein's identity with a control variate whose expectation, the
   diagonal of the Gauss-Newton Hessian at an anchor point, is computed exactly from
   ``n`` unit-vector products, see :mod:`.core`); for a quadratic potential both are
   exact, without Monte Carlo error;
2. a Newton-CG step on the mean, ``-M^{-1} E_q[grad U]`` with ``M`` the Gauss-Newton
   Hessian (at the mean for a linear-Gaussian posterior, averaged over a few draws of
   ``q`` otherwise), by CG preconditioned with the current variances: ill-conditioning
   costs CG iterations (~ ``sqrt(cond)``), not optimiser steps (Adam needs ~ ``cond``);
   a line search on ``E_q[U]`` (common random numbers) guards non-quadratic potentials;
3. the natural-gradient / fixed-point update of the precisions ``1/sigma^2 <- E_q[diag
   hess U]``.

For a linear-Gaussian posterior this is the closed-form coordinate ascent (CAVI) fixed
point reached by CG: two or three rounds. For any other smooth posterior it is
stochastic natural-gradient VI whose Monte Carlo error is measured and controlled.

Stopping rule: each step's Monte Carlo error comes from independent groups of draws; a
step is shrunk by ``max(0, 1 - noise^2/|step|^2)`` (James-Stein), and a round whose
steps are mostly noise doubles the draws of the next. The run has *converged* when

* the mean's distance to its fixed point, a 3-sigma upper bound on the noise-free
  Newton step times ``1 / (1 - rho)`` with ``rho`` the measured shrinkage of successive
  steps (:class:`.core.Contraction`), is below ``tol`` (relative l2, against
  ``sqrt(|mu|^2 + |sigma|^2)``), and
* a 3-sigma upper bound on the noise-free relative change of the precisions is below
  ``var_tol`` (rms over pixels).

Otherwise the result says ``converged: False`` with the measured steps and bounds
(``diagnostics['reason']``, ``diagnostics['rounds']``), and warns. An ELBO plateau is
never a criterion.

``optimizer='adam'`` keeps the Newton-CG steps on the mean but fits ``log sigma`` with
Adam (same control variate; the estimator of the reparameterisation gradient is
selectable); Adam's ELBO plateau only triggers a check at fixed parameters with fresh
draws (:func:`.core.fit_adam`, shared with :mod:`.lowrank`).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..accounting import CallClock
from . import core
from .core import GROUPS

__all__ = ["meanfield"]


def meanfield(posterior, key: jax.Array, *, optimizer: str = "newton", init=None,
              init_scale: float = 0.1, num_mc: int = 8, tol: float = 1e-3,
              var_tol: float = 0.01, max_iter: int = 20000, hessian: str = "gauss_newton",
              hessian_diagonal: str = "auto", cg_tol: float | None = None,
              cg_maxiter: int | None = None, curvature_draws: int | None = None,
              max_rounds: int = 60,
              learning_rate: float = 1e-2, window: int = 200, elbo_tol: float = 1e-3,
              estimator: str | None = None, lr_decay: float = 0.3, num_decays: int = 2,
              progress: bool = False):
    """Mean-field Gaussian VI of ``posterior``; returns a Gaussian ``Result``.

    ``init`` (image) starts the mean (zeros by default), ``init_scale`` the standard
    deviations when the Hessian diagonal is not computed. ``num_mc`` draws (antithetic
    pairs, so even) per iteration; ``max_iter`` caps the iterations (each ``num_mc``
    gradients; a Newton round costs at least 8). ``tol`` / ``var_tol``: see the module
    docstring. ``hessian`` ('gauss_newton' or 'exact') is the matrix of the Newton step
    and of the control variate; ``hessian_diagonal`` ('auto', 'exact', 'none'): 'exact'
    computes ``diag(M)`` by ``n`` products with unit vectors (the control variate that
    makes the variance estimate exact for Gaussian targets), 'auto' does so up to
    16384 pixels. ``cg_tol`` / ``cg_maxiter``: the Newton step's CG (defaults 1e-6 in
    float32, 1e-10 in float64; ``n``). ``curvature_draws``: draws of ``q`` over which the
    Newton matrix is averaged (default 0, the mean, for a linear-Gaussian posterior,
    else 4). ``max_rounds`` caps the Newton rounds.

    ``optimizer='adam'`` uses ``learning_rate``, ``window``, ``elbo_tol`` (ELBO plateau,
    nats per pixel), ``lr_decay``, ``num_decays`` and ``estimator`` ('analytic' or
    'stl', sticking the landing).
    """
    if optimizer not in ("newton", "adam"):
        raise ValueError(f"'optimizer' must be 'newton' or 'adam', got {optimizer!r}")
    core.check_common(posterior, num_mc=num_mc, max_iter=max_iter, tol=tol,
                      var_tol=var_tol, init=init, init_scale=init_scale, hessian=hessian)
    if not isinstance(max_rounds, (int, np.integer)) or isinstance(max_rounds, bool) \
            or max_rounds < 1:
        raise ValueError(f"'max_rounds' must be a positive integer, got {max_rounds!r}")
    if optimizer == "newton" and estimator is not None:
        raise ValueError("'estimator' applies to optimizer='adam' only (the Newton "
                         "optimiser uses antithetic Stein estimates)")
    exact_diag, cg_tol, cg_maxiter, curvature_draws = core.solver_options(
        posterior, hessian_diagonal, cg_tol, cg_maxiter, curvature_draws)
    config = {"optimizer": optimizer, "init_scale": init_scale, "num_mc": num_mc,
              "tol": tol, "var_tol": var_tol, "max_iter": max_iter, "hessian": hessian,
              "hessian_diagonal": "exact" if exact_diag else "none", "cg_tol": cg_tol,
              "cg_maxiter": cg_maxiter,
              "curvature_draws": curvature_draws, "init": None if init is None else "given"}

    with CallClock() as clock:
        mu = core.initial_mean(posterior, init)
        if optimizer == "newton":
            config["max_rounds"] = max_rounds
            mu, var, diagnostics = _newton(
                posterior, key, mu, num_mc=num_mc, tol=tol, var_tol=var_tol,
                max_iter=max_iter, hessian=hessian, exact_diag=exact_diag, cg_tol=cg_tol,
                cg_maxiter=cg_maxiter, max_rounds=max_rounds, init_scale=init_scale,
                curvature_draws=curvature_draws, progress=progress)
        else:
            estimator = "analytic" if estimator is None else estimator
            core.check_adam(learning_rate=learning_rate, window=window, elbo_tol=elbo_tol,
                            estimator=estimator, lr_decay=lr_decay, num_decays=num_decays)
            config.update(learning_rate=learning_rate, window=window, elbo_tol=elbo_tol,
                          estimator=estimator, lr_decay=lr_decay, num_decays=num_decays)
            log_s, adiag, hd_evals = core.initial_log_scale(posterior, mu, exact_diag,
                                                            hessian, init_scale)
            params, diagnostics = core.fit_adam(
                posterior, key, "diag", mu, {"log_sigma": log_s}, num_mc=num_mc, tol=tol,
                var_tol=var_tol, max_iter=max_iter, hessian=hessian, cg_tol=cg_tol,
                cg_maxiter=cg_maxiter, learning_rate=learning_rate, window=window,
                elbo_tol=elbo_tol, estimator=estimator, lr_decay=lr_decay,
                num_decays=num_decays, progress=progress, setup_grad_evals=hd_evals,
                name="mean-field VI", curvature_draws=curvature_draws, anchor_diag=adiag)
            mu, var = params["mu"], np.exp(2 * np.asarray(params["log_sigma"], np.float64))
    return core.vi_result(posterior, "meanfield", "diag", mu,
                          np.asarray(var).astype(posterior.dtype), None, diagnostics,
                          config, clock)


def _newton(post, key, mu, *, num_mc, tol, var_tol, max_iter, hessian, exact_diag, cg_tol,
            cg_maxiter, max_rounds, init_scale, curvature_draws, progress):
    """The Newton / fixed-point rounds (see the module docstring). Returns the mean,
    the variances and the diagnostics dict."""
    n, dtype = mu.shape[0], mu.dtype
    pairs = num_mc // 2
    batch = min(n, 32)
    grads = hvps = 0
    anchor = mu
    if exact_diag:
        adiag = core.hessian_diagonal(post, mu, hessian=hessian, batch=batch)
        hvps += batch * math.ceil(n / batch)
        lam = np.asarray(adiag, np.float64)
        if not np.all(lam > 0):       # indefinite exact Hessian at the start
            lam = np.where(lam > 0, lam, init_scale ** -2)
    else:
        adiag = jnp.zeros(n, dtype)
        lam = np.full(n, init_scale ** -2)
    anchors = 1
    m = 1                             # batches per group in a round
    used = 0
    history, elbos = [], []
    converged, reason = False, ""
    full_solves = 0
    contraction = core.Contraction()
    bar = core.progress_bar(progress, max_iter, "mean-field VI")
    for rnd in range(max_rounds):
        if used >= max_iter and rnd > 0:
            reason = f"'max_iter'={max_iter} iterations used"
            break
        mb = max(1, min(m, (max_iter - used) // GROUPS))
        key, k_round, k_ls, k_curv = jax.random.split(key, 4)
        sigma = jnp.asarray(lam ** -0.5, dtype)
        stats = core.meanfield_round(post, mu, sigma, anchor, k_round, mb, pairs=pairs,
                                     groups=GROUPS, hessian=hessian, control=exact_diag)
        G, U = stats["G"], stats["U"]
        D, beta = core.curvature_estimate(stats, adiag)
        used += GROUPS * mb
        grads += GROUPS * mb * num_mc
        hvps += GROUPS * mb * pairs * exact_diag
        pts = core.curvature_points(mu, sigma, k_curv, curvature_draws)
        step, se, products, it, relres, short = core.newton_solve(
            post, pts, G, sigma, cg_tol, cg_maxiter, hessian)
        hvps += products
        mu_np = np.asarray(mu, np.float64)
        size = math.sqrt(float(np.sum((mu_np + step) ** 2) + np.sum(1.0 / lam)))
        ms = core.step_stats(step, se)
        if short and ms["upper"] * contraction.peek(ms, 0.1 * tol * size) <= tol * size:
            # a CG stopped short makes small steps far from the optimum: a step that
            # would certify convergence is recomputed with a full CG (n iterations)
            step, se, products, it, relres, _ = core.newton_solve(
                post, pts, G, sigma, cg_tol, max(cg_maxiter, n), hessian)
            hvps += products
            size = math.sqrt(float(np.sum((mu_np + step) ** 2) + np.sum(1.0 / lam)))
            ms = core.step_stats(step, se)
            full_solves += 1
        r = D.mean(0) / lam - 1.0
        r_se = D.std(0, ddof=1) / math.sqrt(GROUPS) / lam
        vs = core.step_stats(r, r_se, weight=1.0 / n)
        elbo = float(-np.mean(np.asarray(U, np.float64)) - 0.5 * np.sum(np.log(lam))
                     + 0.5 * n * (1.0 + math.log(2 * math.pi)))
        elbos.append(elbo)
        bound = ms["upper"] * contraction.update(ms, 0.1 * tol * size)
        mean_ok = bound <= tol * size
        var_ok = vs["upper"] <= var_tol
        # -- updates: shrunken steps; a line search on the mean when the step is signal
        mu, alpha, evals = core.mean_update(post, "diag", mu,
                                            {"log_sigma": jnp.log(sigma)},
                                            step, ms, size, tol, k_ls, pairs)
        grads += evals
        lam = np.maximum(lam * (1.0 + vs["shrink"] * r), 0.1 * lam)
        history.append({"round": rnd, "iterations": GROUPS * mb,
                        "mean_step": ms["systematic"] / size,
                        "mean_step_upper": ms["upper"] / size,
                        "mean_error_bound": bound / size, "contraction": contraction.rho,
                        "mean_mc_error": ms["noise"] / size, "step_size": alpha,
                        "var_step": vs["systematic"], "var_step_upper": vs["upper"],
                        "var_mc_error": vs["noise"], "cg_iterations": it,
                        "control_coefficient": None if beta is None else float(
                            np.median(beta)),
                        "cg_relres": relres, "elbo": elbo})
        if bar is not None:
            bar.update(GROUPS * mb)
            bar.set_postfix(mean_step=f"{ms['upper'] / size:.2g}",
                            var_step=f"{vs['upper']:.2g}")
        if mean_ok and var_ok:
            converged = True
            break
        noisy = (not mean_ok and ms["shrink"] < 0.5) or (not var_ok and vs["shrink"] < 0.5)
        if noisy:
            m *= 2
        if (exact_diag and not var_ok and vs["shrink"] < 0.5 and anchors < 4
                and np.linalg.norm(mu_np - np.asarray(anchor)) > 0.1 * size):
            anchor = mu                # a closer anchor: a better control variate
            adiag = core.hessian_diagonal(post, mu, hessian=hessian, batch=batch)
            hvps += batch * math.ceil(n / batch)
            anchors += 1
    else:
        reason = f"'max_rounds'={max_rounds} rounds used"
    if bar is not None:
        bar.close()
    last = history[-1]
    if not converged:
        reason = (f"{reason}: the mean's Newton step is {last['mean_step']:.2e} "
                  f"(3-sigma bound {last['mean_step_upper']:.2e}, Monte Carlo error "
                  f"{last['mean_mc_error']:.2e}; steps shrink by "
                  f"{last['contraction']:.2g} a round, so the mean may be "
                  f"{last['mean_error_bound']:.2e} from the optimum, tol={tol:g}) and the "
                  "precisions' fixed-point "
                  f"step {last['var_step']:.2e} rms (bound {last['var_step_upper']:.2e}, "
                  f"var_tol={var_tol:g}; Monte Carlo error {last['var_mc_error']:.2e})")
        warnings.warn(f"mean-field VI did not converge: {reason}; results may be "
                      "inaccurate (raise 'max_iter' / 'max_rounds' or loosen "
                      "'tol' / 'var_tol')", RuntimeWarning, stacklevel=4)
    diagnostics = {"converged": converged, "reason": reason or "tolerances met",
                   "num_steps": used, "num_rounds": len(history),
                   "num_grad_evals": grads + hvps, "num_gradients": grads,
                   "num_hessian_products": hvps, "num_anchors": anchors * exact_diag,
                   "num_full_cg_checks": full_solves,
                   "elbo_trace": np.asarray(elbos), "final_elbo": elbos[-1],
                   "mean_step": last["mean_step"],
                   "mean_step_upper": last["mean_step_upper"],
                   "mean_error_bound": last["mean_error_bound"],
                   "mean_mc_error": last["mean_mc_error"], "var_step": last["var_step"],
                   "var_step_upper": last["var_step_upper"],
                   "var_mc_error": last["var_mc_error"], "rounds": history}
    return mu, 1.0 / lam, diagnostics

"""Exact Gaussian draws (:mod:`..exact`): dense factor or perturbation-optimisation CG."""

from __future__ import annotations

import warnings
from functools import partial

import jax.numpy as jnp

from .. import exact as _exact
from . import common


def build_exact(post, key, cfg, num_chains, dtype, method="exact"):
    form = common.gaussian_form_or_raise(post, method)
    n = common.size(post)
    solver = common.pop(cfg, "solver", "dense" if n <= common.DENSE_MAX_PIXELS else "cg")
    if solver not in ("dense", "cg"):
        raise ValueError(f"'solver' must be 'dense' or 'cg', got {solver!r}")
    tol = common.pop_positive(cfg, "tol", _exact.default_tol(dtype))
    maxiter = common.pop_int(cfg, "maxiter", 10 * n, 1)
    precond = common.pop(cfg, "preconditioner", "circulant")
    if precond not in ("circulant", "none"):
        raise ValueError(f"'preconditioner' must be 'circulant' or 'none' for method="
                         f"{method!r}, got {precond!r}")
    if precond != "circulant" and solver == "dense":
        raise ValueError("'preconditioner' applies to solver='cg' only (the dense solver "
                         "factors the precision)")
    common.pop_init(cfg, None)      # validated, unused: exact draws need no starting point
    common.reject_unknown(cfg, method)
    if solver == "dense":
        dense = _exact.dense_factor(form)
        (sampler, params), mean = _exact.dense_sampler(dense), dense.mean
        setup = {"num_grad_evals_setup": common.dense_setup_grads(form)}
        used = {"solver": "dense"}
    else:
        # the mean's solve is always circulant-preconditioned; 'preconditioner' sets the draws'
        mean, it, relres = _exact.posterior_mean(form, tol, maxiter)
        relres = float(relres)
        if not relres <= tol:
            warnings.warn(f"method={method!r}: the posterior mean's CG stopped at relative "
                          f"residual {relres:.2e} > tol={tol:.1e} (maxiter={maxiter}); every "
                          "draw is centred on that inexact mean", RuntimeWarning, stacklevel=3)
        sampler, params = _exact.po_sampler(form, tol, maxiter, mean,
                                            preconditioner=precond)
        # + the product that measured the sampler's preconditioner
        setup = {"num_grad_evals_setup": int(it) + (precond == "circulant")}
        used = {"solver": "cg", "tol": tol, "maxiter": maxiter, "preconditioner": precond,
                "mean_cg_relres": relres}
    init = jnp.broadcast_to(mean, (num_chains, *post.shape))
    return common.Built(sampler, params, init, used, setup, num_warmup=0)


build_rto = partial(build_exact, method="rto")

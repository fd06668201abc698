"""Gibbs sampling of a linear-Gaussian posterior with Gamma hyperpriors
(:mod:`..samplers.gibbs`): options and set-up."""

from __future__ import annotations

from .. import exact as _exact
from ..samplers import gibbs as _gibbs
from . import common


def build(post, key, cfg, num_chains, dtype):
    common.gaussian_form_or_raise(post, "gibbs")
    n = common.size(post)
    tol = common.pop_positive(cfg, "tol", _exact.default_tol(dtype))
    maxiter = common.pop_int(cfg, "maxiter", 10 * n, 1)
    init, jitter = common.pop_init(cfg, 0.1)
    common.reject_unknown(cfg, "gibbs")
    init, grads = common.init_positions(post, key, init, jitter, num_chains, dtype,
                                  unconstrained=False)
    names = sorted(post.hyperparameters)
    sampler, params = _gibbs.gibbs(post, tol, maxiter, dtype)
    return common.Built(sampler, params, init,
                        {"tol": tol, "maxiter": maxiter, "hyperparameters": names},
                        {"num_grad_evals_setup": grads})

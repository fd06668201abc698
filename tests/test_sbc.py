"""Simulation-based calibration (Talts et al. 2018) of the exact methods on a 2x2 problem.

For each of R replicates: x* ~ prior, y ~ p(y | x*), then L draws from p(x | y). If the
sampler is correct the rank of x* among the draws is uniform on {0..L} for every pixel.
Replicates run vectorised (vmap over posteriors stacked as pytrees); ranks are tested by a
chi-square test per pixel at a fixed seed (10 bins, R = 200, 20 expected per bin).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from uqrecon.inference.exact import default_tol, po_sampler, posterior_mean
from uqrecon.inference.samplers import hmc as _hmc
from uqrecon.inference.samplers.base import Whitened
from uqrecon.inference.samplers.langevin import mala
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator

S = (2, 2)
R, L, BINS = 200, 99, 10


@pytest.fixture(scope="module")
def replicates():
    """R posteriors (stacked into one pytree), their true images, and a whitening
    preconditioner (the Hessian does not depend on the data here)."""
    rng = np.random.default_rng(42)
    A = rng.normal(size=(3, 4)).astype(np.float32)
    op = MatrixOperator(A, domain_shape=S)
    prior = GMRF(S, delta=1.0)
    sigma = 0.5
    base = Posterior(Gaussian(op, jnp.zeros(3), sigma=sigma), prior)
    eye = jnp.eye(4, dtype=jnp.float32).reshape(4, *S)
    Q = np.asarray(jax.vmap(base.gaussian_form().prior_precision)(eye), np.float64).reshape(4, 4)
    x_true = rng.normal(size=(R, 4)) @ np.linalg.inv(np.linalg.cholesky(Q)).T  # N(0, Q^-1)
    y = x_true @ A.T.astype(np.float64) + sigma * rng.normal(size=(R, 3))
    posts = [Posterior(Gaussian(op, jnp.asarray(yi, jnp.float32), sigma=sigma), prior)
             for yi in y]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *posts)
    u0 = jnp.zeros(S, jnp.float32)
    hess = _hmc.hessian_matrix(lambda u: -base.logdensity_unconstrained(u), u0)
    pc = _hmc.dense_preconditioner(hess, u0)
    return stacked, x_true.reshape(R, *S), pc


def _chain(sampler, params, x0, key, num_warmup, thin):
    """Warmup, freeze, then L draws every ``thin`` steps (one replicate, traceable)."""
    state = sampler.init(key, x0, params)

    def body(state, k):
        return sampler.step(k, state, params)[0], None

    kw, ks = jax.random.split(key)
    state, _ = jax.lax.scan(body, state, jax.random.split(kw, num_warmup))
    state = sampler.finish_warmup(state, params)

    def keep(state, k):
        state, _ = jax.lax.scan(body, state, jax.random.split(k, thin))
        return state, sampler.position(state, params)

    _, draws = jax.lax.scan(keep, state, jax.random.split(ks, L))
    return draws


def _draws(method, post, key, pc):
    if method == "exact":
        form = post.gaussian_form()
        m, _, _ = posterior_mean(form, default_tol(jnp.float32), 40)
        s, params = po_sampler(form, default_tol(jnp.float32), 40, m)
        return jax.vmap(lambda k: s.step(k, m, params)[0])(jax.random.split(key, L))
    target = Whitened(post, pc)
    if method == "nuts":
        (s, params), thin = _hmc.nuts(target), 2
    elif method == "hmc":
        (s, params), thin = _hmc.hmc(target, num_integration_steps=4), 2
    else:
        (s, params), thin = mala(target, 1.0), 8
    x0 = jnp.zeros(S, jnp.float32)
    return _chain(s, params, x0, key, 300, thin)


@pytest.mark.parametrize("method", ["exact", "nuts", "hmc", "mala"])
def test_sbc_ranks_are_uniform(replicates, method):
    posts, x_true, pc = replicates
    keys = jax.random.split(jax.random.PRNGKey(0), R)
    draws = np.asarray(jax.jit(jax.vmap(lambda p, k: _draws(method, p, k, pc)))(posts, keys))
    assert draws.shape == (R, L, *S) and np.all(np.isfinite(draws))
    ranks = (draws < x_true[:, None]).sum(axis=1).reshape(R, -1)       # in 0..L
    counts = np.stack([np.bincount(r * BINS // (L + 1), minlength=BINS) for r in ranks.T])
    pvals = stats.chisquare(counts, axis=1).pvalue
    # 4 pixels x 4 methods: Bonferroni at an overall 1 % level
    assert pvals.min() > 0.01 / 16, (method, pvals, counts)


def test_sbc_detects_a_miscalibrated_sampler(replicates):
    """The same check rejects draws whose spread is 30 % too small (not vacuous)."""
    posts, x_true, pc = replicates
    keys = jax.random.split(jax.random.PRNGKey(0), R)
    draws = np.asarray(jax.jit(jax.vmap(lambda p, k: _draws("exact", p, k, pc)))(posts, keys))
    mean = draws.mean(axis=1, keepdims=True)
    bad = mean + 0.7 * (draws - mean)
    ranks = (bad < x_true[:, None]).sum(axis=1).reshape(R, -1)
    counts = np.stack([np.bincount(r * BINS // (L + 1), minlength=BINS) for r in ranks.T])
    assert stats.chisquare(counts, axis=1).pvalue.min() < 0.01 / 16

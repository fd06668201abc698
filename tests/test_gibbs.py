"""Hierarchical Gibbs: conjugate Gamma draws and recovery of the noise and prior
precisions used to simulate the data."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import sample
from uqrecon.inference.samplers.gibbs import gamma_draws
from uqrecon.models import GMRF, Gamma, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view

S = (12, 12)


def test_gamma_draws_have_the_gamma_moments():
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    d = jax.vmap(lambda k: gamma_draws(k, {"a": (3.0, 2.0), "b": (50.0, 0.5)},
                                       jnp.float32))(keys)
    for name, (shape, rate) in {"a": (3.0, 2.0), "b": (50.0, 0.5)}.items():
        x = np.asarray(d[name], np.float64)
        se = np.sqrt(shape) / rate / np.sqrt(len(x))
        assert abs(x.mean() - shape / rate) < 5 * se
        np.testing.assert_allclose(x.var(), shape / rate ** 2, rtol=0.06)


@pytest.fixture(scope="module")
def hierarchical():
    """Data simulated with known precisions: x ~ GMRF(delta=25), noise sigma = 0.02."""
    delta_true, sigma_true = 25.0, 0.02
    op = sparse_view(S, 16)
    n = S[0] * S[1]
    probe = Posterior(Gaussian(op, jnp.zeros(op.range_shape), sigma=1.0),
                      GMRF(S, delta=delta_true))
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, *S)
    Q = np.asarray(jax.vmap(probe.gaussian_form().prior_precision)(eye),
                   np.float64).reshape(n, n)
    rng = np.random.default_rng(11)
    x_true = np.linalg.solve(np.linalg.cholesky(Q).T, rng.normal(size=n)).reshape(S)
    clean = np.asarray(op(jnp.asarray(x_true, jnp.float32)))
    data = clean + sigma_true * rng.normal(size=clean.shape)
    post = Posterior(Gaussian(op, jnp.asarray(data, jnp.float32),
                              noise_precision=Gamma(1.0, 1e-4)),
                     GMRF(S, delta=Gamma(1.0, 1e-4)))
    return post, {"noise_precision": 1 / sigma_true ** 2, "prior_precision": delta_true}


def test_gibbs_recovers_simulation_precisions(hierarchical):
    post, truth = hierarchical
    assert post.is_hierarchical
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(post, method="gibbs", num_chains=4, num_warmup=100, num_samples=400,
                   seed=0, progress=False)
    for name, value in truth.items():
        trace = r.diagnostics[name]
        assert trace.shape == (4, 400)
        lo, hi = np.quantile(trace, [0.005, 0.995])
        assert lo < value < hi, (name, value, lo, hi)
        # the interval is informative: narrower than the value itself
        assert hi - lo < value, (name, lo, hi)
    assert r.diagnostics["divergences"] == 0
    assert r.diagnostics["rhat"].max() < 1.05
    assert r.provenance["config"]["hyperparameters"] == ["noise_precision",
                                                         "prior_precision"]
    # hyperparameter traces go to ArviZ sample_stats
    idata = r.to_inference_data()
    assert "noise_precision" in idata.sample_stats


def test_gibbs_needs_a_gaussian_conditional():
    from uqrecon.models import TV
    op = sparse_view(S, 4)
    post = Posterior(Gaussian(op, jnp.zeros(op.range_shape), sigma=0.1), TV(S, 1.0))
    with pytest.raises(ValueError, match="linear-Gaussian"):
        sample(post, method="gibbs", progress=False)

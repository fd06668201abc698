"""Runs with ``jax_enable_x64`` on (inside a context manager: other tests keep the
default). A float32 posterior under x64 used to fail deep inside blackjax ("cond branches
must have equal output types") for MALA/NUTS/MCLMC/MAMS, and Gibbs's scan carry changed
dtype."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import sample
from uqrecon.models import GMRF, Gamma, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view


def _posterior(dtype, hierarchical=False):
    op = sparse_view((8, 8), 6)
    y = jnp.asarray(op(jnp.ones((8, 8), jnp.float32)), dtype)
    if hierarchical:
        return Posterior(Gaussian(op, y, noise_precision=Gamma(1.0, 1e-4)),
                         GMRF((8, 8), delta=Gamma(1.0, 1e-4)))
    return Posterior(Gaussian(op, y, sigma=0.1), GMRF((8, 8), delta=10.0))


@pytest.mark.parametrize("method", ["mala", "nuts", "mclmc", "mams", "chees"])
def test_blackjax_kernels_refuse_float32_under_x64_before_any_work(method):
    """A clear ValueError naming x64, raised before set-up (catches removing the check:
    the TypeError from inside blackjax comes back)."""
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            sample(_posterior(jnp.float32), method=method, num_chains=1, num_warmup=5,
                   num_samples=5, progress=False)


def test_float32_gibbs_and_float64_nuts_run_under_x64():
    """Gibbs keeps a float32 chain float32 (catches dropping the cast in
    ``gibbs.image_draw``: the scan carry turns float64 and tracing fails); a float64
    posterior runs NUTS in float64 and says so."""
    kw = dict(num_chains=1, num_warmup=10, num_samples=10, progress=False)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(_posterior(jnp.float32, hierarchical=True), method="gibbs", **kw)
        assert r.mean.dtype == np.float32 and r.provenance["dtype"] == "float32"
        r = sample(_posterior(jnp.float64), method="nuts", **kw)
        assert r.mean.dtype == np.float64 and r.provenance["dtype"] == "float64"

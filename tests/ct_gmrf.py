"""The small sparse-view CT posterior with a GMRF prior that several test files sample,
and its exact mean and pixel std from a dense float64 inverse (numpy, independent of
uqrecon's solvers and samplers).

A disc phantom (``x^2 + y^2 < 0.5`` on [-1, 1]^2), ``num_angles`` parallel-beam views,
Gaussian noise of std ``noise * max|Ax|`` (numpy generator ``seed``), GMRF delta = 10.
"""

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view


def _build(size, num_angles, seed, noise):
    op = sparse_view((size, size), num_angles)
    g = np.linspace(-1, 1, size)
    X, Y = np.meshgrid(g, g, indexing="ij")
    clean = np.asarray(op(jnp.asarray(((X ** 2 + Y ** 2) < 0.5).astype(np.float32))))
    sigma = noise * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    post = Posterior(Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma),
                     GMRF((size, size), delta=10.0))
    return post, op, data, sigma


def ct_gmrf_posterior(size, num_angles, seed=0, noise=0.01):
    """The posterior alone (float32)."""
    return _build(size, num_angles, seed, noise)[0]


def ct_gmrf(size, num_angles, seed=0, noise=0.01):
    """``(posterior, exact mean, exact pixel std)``, the moments in float64."""
    post, op, data, sigma = _build(size, num_angles, seed, noise)
    A = np.asarray(op.to_dense(), np.float64)
    n = size * size
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, size, size)
    Q = np.asarray(jax.vmap(post.gaussian_form().prior_precision)(eye), np.float64)
    cov = np.linalg.inv(A.T @ A / sigma ** 2 + Q.reshape(n, n))
    mean = cov @ (A.T @ data.ravel() / sigma ** 2)
    return post, mean.reshape(size, size), np.sqrt(np.diag(cov)).reshape(size, size)

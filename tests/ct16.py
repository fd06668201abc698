"""The 16x16 linear-Gaussian CT posterior shared by the MCLMC/MAMS and ChEES tests, with
its exact mean and pixel std from a dense float64 inverse (independent of uqrecon's
solvers)."""

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view

N = 16


def ct16(seed, noise):
    """16x16 CT, GMRF delta=10; data = noise draw ``seed`` at relative level ``noise``.
    Returns the posterior and its exact mean and pixel std (dense float64)."""
    op = sparse_view((N, N), 12)
    g = np.linspace(-1, 1, N)
    X, Y = np.meshgrid(g, g, indexing="ij")
    clean = np.asarray(op(jnp.asarray(((X ** 2 + Y ** 2) < 0.5).astype(np.float32))))
    sigma = noise * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    post = Posterior(Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma),
                     GMRF((N, N), delta=10.0))
    A = np.asarray(op.to_dense(), np.float64)
    n = N * N
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, N, N)
    Q = np.asarray(jax.vmap(post.gaussian_form().prior_precision)(eye), np.float64)
    cov = np.linalg.inv(A.T @ A / sigma ** 2 + Q.reshape(n, n))
    mean = cov @ (A.T @ data.ravel() / sigma ** 2)
    return post, mean.reshape(N, N), np.sqrt(np.diag(cov)).reshape(N, N)

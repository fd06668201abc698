"""from_odl under a *local* ``with jax.enable_x64(True):`` and with x64 off.

The host callback runs on an XLA thread that the thread-local x64 context does not
reach; a float64 result must still come back as float64, exactly (checked against
numpy to float64 rounding, which a float32 round trip would miss by ~1e-8).
"""

import jax
import jax.numpy as jnp
import numpy as np
import odl
import pytest

from uqrecon.map import map_estimate
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators import from_odl


def _matrix(dtype, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(15, 12))
    if np.issubdtype(dtype, np.complexfloating):
        M = M + 1j * rng.normal(size=(15, 12))
    return M.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_local_x64_context_gives_exact_float64_results(dtype):
    M = _matrix(dtype)
    rng = np.random.default_rng(1)
    x = rng.normal(size=12).astype(dtype)
    y = rng.normal(size=15).astype(dtype)
    with jax.enable_x64(True):
        op = from_odl(odl.MatrixOperator(M))
        assert op.domain_dtype == dtype and op.range_dtype == dtype
        fwd = jax.jit(op)(jnp.asarray(x))           # compiled: callback on an XLA thread
        adj = jax.jit(op.adjoint)(jnp.asarray(y))
        batched = jax.jit(jax.vmap(op))(jnp.stack([jnp.asarray(x), 2 * jnp.asarray(x)]))
    assert fwd.dtype == dtype and adj.dtype == dtype
    np.testing.assert_allclose(np.asarray(fwd), M @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(adj), M.conj().T @ y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(batched[1]), 2 * (M @ x), rtol=1e-13, atol=1e-13)


def test_map_through_the_bridge_inside_a_local_x64_context():
    """The reported failure: a compiled solver loop calling the bridge inside a local
    ``jax.enable_x64(True)``; the MAP must equal the dense float64 solution."""
    M = _matrix(np.float64)
    rng = np.random.default_rng(7)
    y = rng.normal(size=15)
    with jax.enable_x64(True):
        post = Posterior(Gaussian(from_odl(odl.MatrixOperator(M)), y, 0.5), GMRF((12,), 3.0))
        x, info = map_estimate(post, method="lbfgs", tol=1e-12, max_iter=5000)
        P = np.asarray(post.gaussian_form().precision_matrix())
        b = np.asarray(post.gaussian_form().rhs)
    assert x.dtype == np.float64 and info["converged"]
    # L-BFGS stops on the iterate's relative change: ~sqrt(eps) accuracy in x
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(P, b), rtol=1e-6)
    with jax.enable_x64(True):      # the gradient inside jit, to float64 rounding
        g = jax.jit(post.grad_smooth_potential)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), P @ np.asarray(x) - b, atol=1e-12)


def test_x64_off_follows_the_active_config():
    """With x64 off a float64 ODL space is used in float32 (no 64-bit request)."""
    M = _matrix(np.float64)
    x = np.random.default_rng(2).normal(size=12)
    with jax.enable_x64(False):
        op = from_odl(odl.MatrixOperator(M))
        assert op.domain_dtype == np.float32 and op.range_dtype == np.float32
        out = jax.jit(op)(jnp.asarray(x, jnp.float32))
        g = jax.grad(lambda v: jnp.sum(op(v) ** 2))(jnp.asarray(x, jnp.float32))
    assert out.dtype == np.float32 and g.dtype == np.float32
    np.testing.assert_allclose(np.asarray(out), M @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g), 2 * M.T @ (M @ x), rtol=1e-4, atol=1e-4)

"""LinearOperator algebra, MatrixOperator and the ODL bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sps
from hypothesis import given, settings
from hypothesis import strategies as st

from uqrecon.operators import (Identity, MatrixOperator, Stacked, adjoint_mismatch,
                               from_odl)


def _rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 12), h=st.integers(1, 6), w=st.integers(1, 6),
       sparse=st.booleans(), seed=st.integers(0, 10_000))
def test_matrix_operator_adjoint_identity_float32(m, h, w, sparse, seed):
    a = _rand((m, h * w), seed)
    if sparse:
        a = sps.csr_matrix(a * (np.abs(a) > 0.8))
    op = MatrixOperator(a, domain_shape=(h, w))
    assert float(adjoint_mismatch(op, jax.random.PRNGKey(seed))) < 1e-5


def test_matrix_operator_adjoint_identity_float64_complex():
    with jax.enable_x64(True):
        a = _rand((9, 12), 1, np.float64) + 1j * _rand((9, 12), 2, np.float64)
        op = MatrixOperator(a, domain_shape=(3, 4))
        assert op.domain_dtype == jnp.complex128
        assert float(adjoint_mismatch(op, jax.random.PRNGKey(0))) < 1e-10
        real = MatrixOperator(_rand((9, 12), 3, np.float64), domain_shape=(3, 4))
        assert float(adjoint_mismatch(real, jax.random.PRNGKey(0))) < 1e-10


def test_matrix_operator_matches_numpy_and_keeps_image_shape():
    a = _rand((10, 12))
    x = _rand((3, 4), 5)
    op = MatrixOperator(a, domain_shape=(3, 4), range_shape=(2, 5))
    np.testing.assert_allclose(op(x), (a @ x.ravel()).reshape(2, 5), rtol=1e-5, atol=1e-6)
    y = _rand((2, 5), 6)
    np.testing.assert_allclose(op.adjoint(y), (a.T @ y.ravel()).reshape(3, 4), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(op.to_dense(), a, rtol=0, atol=0)
    np.testing.assert_allclose(op.norm(), np.linalg.norm(a, 2), rtol=1e-4)


def test_algebra_composition_scaling_sum_and_batching():
    a, b = _rand((6, 12), 1), _rand((12, 12), 2)
    A = MatrixOperator(a, domain_shape=(3, 4))
    B = MatrixOperator(b, domain_shape=(3, 4), range_shape=(3, 4))
    C = 2.0 * (A @ B) - A @ Identity((3, 4))
    dense = 2.0 * a @ b - a
    np.testing.assert_allclose(C.to_dense(), dense, rtol=1e-4, atol=1e-4)
    assert float(adjoint_mismatch(C, jax.random.PRNGKey(3))) < 1e-5
    np.testing.assert_allclose(C.T.to_dense(), dense.T, rtol=1e-4, atol=1e-4)
    xb = _rand((5, 3, 4), 4)
    out = jax.jit(lambda op, x: op(x))(C, xb)
    np.testing.assert_allclose(out, xb.reshape(5, 12) @ dense.T, rtol=1e-4, atol=1e-4)
    S = Stacked((A, 3 * A))
    assert S.range_shape == (2, 6)
    assert float(adjoint_mismatch(S, jax.random.PRNGKey(4))) < 1e-5


def test_operator_is_a_pytree_that_jit_grad_and_vmap_see_through():
    op = MatrixOperator(_rand((8, 16)), domain_shape=(4, 4))
    x = jnp.asarray(_rand((4, 4), 7))
    g = jax.grad(lambda o, x: 0.5 * jnp.sum(o(x) ** 2), argnums=1)(op, x)
    np.testing.assert_allclose(g, op.normal(x), rtol=1e-5, atol=1e-5)
    leaves = jax.tree_util.tree_leaves(op)
    assert len(leaves) == 1 and leaves[0].shape == (8, 16)
    # a traced operator (e.g. a scale inside jit) works
    f = jax.jit(lambda s, x: (s * op)(x))
    np.testing.assert_allclose(f(2.0, x), 2 * op(x), rtol=1e-6)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="'matrix'"):
        MatrixOperator(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        MatrixOperator(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="domain_shape"):
        MatrixOperator(np.ones((3, 4)), domain_shape=(3, 3))
    op = MatrixOperator(np.ones((3, 4)), domain_shape=(2, 2))
    with pytest.raises(ValueError, match="argument 'x'"):
        op(jnp.ones((4,)))
    with pytest.raises(ValueError, match="argument 'y'"):
        op.adjoint(jnp.ones((4,)))
    with pytest.raises(ValueError, match="compose"):
        op @ op
    with pytest.raises(TypeError, match="odl_operator"):
        from_odl(np.ones(3))


# --------------------------------------------------------------------------------------
# ODL bridge
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def astra_ray_transform():
    odl = pytest.importorskip("odl")
    from odl.applications import tomo
    space = odl.uniform_discr([-1, -1], [1, 1], (24, 24), dtype="float32")
    geometry = tomo.parallel_beam_geometry(space, num_angles=9)
    return tomo.RayTransform(space, geometry, impl="astra_cpu")


def test_from_odl_forward_equals_odl(astra_ray_transform):
    R = astra_ray_transform
    op = from_odl(R)
    x = _rand((24, 24), 11)
    expected = R(R.domain.element(x.copy())).data
    np.testing.assert_array_equal(np.asarray(op(x)), expected)
    assert op.range_shape == tuple(R.range.shape)


def test_from_odl_transpose_is_euclidean_and_grad_uses_it(astra_ray_transform):
    R = astra_ray_transform
    op = from_odl(R)
    # ODL's adjoint is weighted; the bridge's adjoint must be the plain transpose.
    assert float(adjoint_mismatch(op, jax.random.PRNGKey(0))) < 1e-5
    x = jnp.asarray(_rand((24, 24), 12))
    g = jax.grad(lambda x: 0.5 * jnp.sum(op(x) ** 2))(x)
    np.testing.assert_allclose(g, op.adjoint(op(x)), rtol=1e-6, atol=1e-6)
    # second-order reverse mode (Hessian-vector product of a least-squares loss)
    v = jnp.asarray(_rand((24, 24), 13))
    hvp = jax.grad(lambda x: jnp.vdot(jax.grad(lambda z: 0.5 * jnp.sum(op(z) ** 2))(x), v))(x)
    np.testing.assert_allclose(hvp, op.normal(v), rtol=1e-5, atol=1e-5)
    # vmap runs the callback per item
    xb = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(jax.vmap(op)(xb)[1], 2 * op(x), rtol=1e-5, atol=1e-5)


def test_from_odl_gradient_agrees_with_native_ray_transform(astra_ray_transform):
    """The bridge and the native JAX kernel are the same operator up to ASTRA's rounding."""
    from uqrecon.operators import RayTransform
    R = astra_ray_transform
    bridged = from_odl(R)
    native = RayTransform(R.domain, R.geometry)
    x = jnp.asarray(_rand((24, 24), 21))
    y = jnp.asarray(_rand(tuple(R.range.shape), 22))

    def loss(op):
        return lambda x: 0.5 * jnp.sum((op(x) - y) ** 2)

    g_bridge = jax.grad(loss(bridged))(x)
    g_native = jax.grad(loss(native))(x)
    rel = float(jnp.linalg.norm(g_bridge - g_native) / jnp.linalg.norm(g_native))
    assert rel < 1e-4

"""CartesianMRI: exact adjoint, numpy FFT and ODL references, coil maps, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import odl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqrecon.operators.base import adjoint_mismatch
from uqrecon.operators.coils import birdcage_maps
from uqrecon.operators.masks import random_line_mask, variable_density_mask
from uqrecon.operators.mri import CartesianMRI

# one compilation per operator structure instead of one per primitive (keeps tests fast)
_mismatch = jax.jit(adjoint_mismatch, static_argnames="dtype")


@jax.jit
def _forward_adjoint(op, x):
    y = op(x)
    return y, op.adjoint(y)


def _np_fft2c(x):
    """Reference centred orthonormal FFT in numpy."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                           axes=(-2, -1))


def _np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"),
                           axes=(-2, -1))


def _cplx(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("shape, image_dtype, coils", [
    ((16, 16), jnp.float32, 0), ((16, 16), jnp.complex64, 0),
    ((15, 10), jnp.float32, 4), ((15, 10), jnp.complex64, 4)])
def test_adjoint_identity_float32(shape, image_dtype, coils):
    mask = variable_density_mask(shape, acceleration=3, seed=1)
    sens = birdcage_maps(shape, coils) if coils else None
    op = CartesianMRI(mask, sens, image_dtype=image_dtype)
    for seed in range(3):
        assert float(_mismatch(op, jax.random.PRNGKey(seed))) < 1e-5


@pytest.mark.parametrize("image_dtype, coils", [(jnp.complex128, 0), (jnp.float64, 3)])
def test_adjoint_identity_float64(image_dtype, coils):
    with jax.enable_x64(True):
        mask = random_line_mask((16, 12), acceleration=2, center_fraction=0.2, seed=0)
        sens = birdcage_maps((16, 12), coils, dtype=jnp.complex128) if coils else None
        op = CartesianMRI(mask, sens, image_dtype=image_dtype)
        assert op.domain_dtype == image_dtype and op.range_dtype == jnp.complex128
        assert float(_mismatch(op, jax.random.PRNGKey(0))) < 1e-10
        y, x = _forward_adjoint(op, jnp.ones((16, 12), image_dtype))
        assert y.dtype == jnp.complex128 and x.dtype == image_dtype


_forward = jax.jit(lambda op, x: op(x))


@settings(max_examples=10, deadline=None)
@given(cplx=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_adjoint_and_numpy_match_property(cplx, seed):
    """Random masks (20 of 42 positions), random complex coil maps, random inputs.

    Shapes are fixed (odd x even) so that all examples share one compilation.
    """
    h, w, coils = 7, 6, 2
    rng = np.random.default_rng(seed)
    mask = np.zeros(h * w, bool)
    mask[rng.choice(h * w, 20, replace=False)] = True
    mask = mask.reshape(h, w)
    sens = _cplx((coils, h, w), seed + 1).astype(np.complex64)
    op = CartesianMRI(mask, sens, image_dtype=jnp.complex64 if cplx else jnp.float32)
    assert float(_mismatch(op, jax.random.PRNGKey(seed))) < 1e-5
    x = _cplx((h, w), seed + 2) if cplx else rng.standard_normal((h, w))
    ref = _np_fft2c(sens * x)[..., mask]
    y = np.asarray(_forward(op, jnp.asarray(x, op.domain_dtype)))
    assert y.shape == op.range_shape == (coils, 20)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_forward_and_adjoint_match_numpy_fft():
    shape = (12, 9)
    mask = random_line_mask(shape, 4, 0.08, seed=3)
    sens = np.asarray(birdcage_maps(shape, 3))
    x = np.random.default_rng(0).standard_normal(shape)
    y = _cplx((3, int(mask.sum())), 1)
    grid = np.zeros((3, *shape), complex)
    grid[:, mask] = y
    ref_adj = np.sum(np.conj(sens) * _np_ifft2c(grid), axis=0)

    @jax.jit
    def run(op1, opc, opr, x, y):
        return op1(x), opc.adjoint(y), opc.to_kspace_grid(y), opr.zero_filled(y)

    fwd, adj, kgrid, zf = run(CartesianMRI(mask),
                              CartesianMRI(mask, sens, image_dtype=jnp.complex64),
                              CartesianMRI(mask, sens), jnp.asarray(x, jnp.float32),
                              jnp.asarray(y, jnp.complex64))
    np.testing.assert_allclose(fwd, _np_fft2c(x)[mask], atol=1e-5)
    np.testing.assert_allclose(adj, ref_adj, atol=1e-5)
    np.testing.assert_allclose(kgrid, grid, atol=1e-6)
    # real image: the adjoint (zero-filled image) is the real part of the complex one
    np.testing.assert_allclose(zf, ref_adj.real, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8), (9, 6)])
def test_matches_odl_dft_composition(shape):
    """ODL's M F (unnormalised fft2, exact adjoint ifft2) after shifts and 1/sqrt(HW)."""
    h, w = shape
    mask = variable_density_mask(shape, 2, seed=4)
    X = odl.uniform_discr([0, 0], [h, w], shape, dtype=complex)
    K = odl.uniform_discr([0, 0], [1, 1], shape, dtype=complex)
    F = odl.trafos.DiscreteFourierTransform(X, range=K)
    m_unshift = np.fft.ifftshift(mask)   # mask in numpy's uncentred layout
    A_odl = odl.MultiplyOperator(K.element(m_unshift.astype(complex)), domain=K) * F
    op = CartesianMRI(mask, image_dtype=jnp.complex64)
    x = _cplx(shape, 5)
    y = _cplx(op.range_shape, 6)
    ours_fwd, ours_adj = jax.jit(lambda A, x, y: (A(x), A.adjoint(y)))(
        op, jnp.asarray(x, jnp.complex64), jnp.asarray(y, jnp.complex64))
    theirs = np.fft.fftshift(A_odl(X.element(np.fft.ifftshift(x))).data)[mask]
    np.testing.assert_allclose(ours_fwd, theirs / np.sqrt(h * w), atol=1e-5)
    grid = np.zeros(shape, complex)
    grid[mask] = y
    odl_adj = np.fft.fftshift(A_odl.adjoint(K.element(np.fft.ifftshift(grid))).data)
    np.testing.assert_allclose(ours_adj, np.sqrt(h * w) * odl_adj, atol=1e-5)


def test_full_sampling_with_normalised_coils_is_an_isometry():
    shape = (16, 16)
    full = np.ones(shape, bool)
    x = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    normal = jax.jit(lambda A, x: (A.normal(x), jnp.linalg.norm(A(x))))
    for sens in (None, birdcage_maps(shape, 6)):
        op = CartesianMRI(full, sens)
        ata_x, norm_ax = normal(op, x)
        np.testing.assert_allclose(ata_x, x, atol=1e-5)
        np.testing.assert_allclose(norm_ax, jnp.linalg.norm(x), rtol=1e-5)
    assert abs(float(jax.jit(lambda A: A.norm())(op)) - 1.0) < 1e-4


def test_shapes_batching_jit_and_pytree():
    shape = (8, 10)
    mask = random_line_mask(shape, 2, 0.2, seed=1)
    op = CartesianMRI(mask, birdcage_maps(shape, 2))
    assert op.domain_shape == shape
    assert op.range_shape == (2, int(mask.sum()))
    assert op.num_samples == int(mask.sum())
    assert op.acceleration == pytest.approx(mask.size / mask.sum())
    assert op.range_dtype == jnp.complex64
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((3, *shape)), jnp.float32)

    @jax.jit
    def run(A, xs):
        ys = A(xs)
        return ys, A.to_kspace_grid(ys), A.zero_filled(ys), A.normal(xs[0])

    ys, grids, zf, n0 = run(op, xs)
    assert ys.shape == (3, *op.range_shape) and ys.dtype == jnp.complex64
    assert grids.shape == (3, 2, *shape) and zf.shape == xs.shape and zf.dtype == jnp.float32
    np.testing.assert_allclose(zf[0], n0, atol=1e-5)
    np.testing.assert_array_equal(grids[:, :, ~mask], 0)
    np.testing.assert_array_equal(grids[:, :, mask], ys)
    np.testing.assert_allclose(op(xs[0]), ys[0], atol=1e-6)        # eager == jit, unbatched
    leaves, tree = jax.tree_util.tree_flatten(op)
    rebuilt = jax.tree_util.tree_unflatten(tree, leaves)
    np.testing.assert_array_equal(run(rebuilt, xs)[0], ys)


def test_bad_inputs_raise_named_errors():
    shape = (6, 6)
    good = np.zeros(shape, bool)
    good[3, 3] = True
    with pytest.raises(ValueError, match="'mask'"):
        CartesianMRI(np.zeros(shape, bool))                     # no samples
    with pytest.raises(ValueError, match="'mask'"):
        CartesianMRI(good.astype(np.float32))                   # not boolean
    with pytest.raises(ValueError, match="'mask'"):
        CartesianMRI(np.full(shape, np.nan))                    # NaN, not boolean
    with pytest.raises(ValueError, match="'mask'"):
        CartesianMRI(np.ones((2, *shape), bool))                # not 2D
    with pytest.raises(ValueError, match="'sensitivities'"):
        CartesianMRI(good, np.ones((2, 6, 5), complex))         # shape mismatch
    with pytest.raises(ValueError, match="'sensitivities'"):
        CartesianMRI(good, np.ones(shape, complex))             # missing coil axis
    bad = np.ones((2, *shape), complex)
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="'sensitivities'"):
        CartesianMRI(good, bad)
    with pytest.raises(TypeError, match="'image_dtype'"):
        CartesianMRI(good, image_dtype=jnp.int32)
    op = CartesianMRI(good)
    with pytest.raises(ValueError, match="'x'"):
        op(jnp.ones((5, 6)))
    with pytest.raises(ValueError, match="'y'"):
        op.to_kspace_grid(jnp.ones((2,), jnp.complex64))


def test_autodiff_gradient_of_data_fit_is_the_adjoint_residual():
    """jax.grad of 0.5 ||A x - y||^2 over a real image is A^H (A x - y) (the real part)."""
    shape = (8, 10)
    op = CartesianMRI(random_line_mask(shape, 2, 0.2, seed=1), birdcage_maps(shape, 2))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    y = jnp.asarray(_cplx(op.range_shape, 1), jnp.complex64)

    @jax.jit
    def both(A, x, y):
        g = jax.grad(lambda x: 0.5 * jnp.sum(jnp.abs(A(x) - y) ** 2))(x)
        return g, A.adjoint(A(x) - y)

    g, ref = both(op, x, y)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, ref, atol=1e-5)

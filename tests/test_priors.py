"""Priors: closed forms (GMRF precision, ranks), gradients, curvature bounds, wavelets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from uqrecon.models import (GMRF, TV, Box, CauchyMRF, FiniteDifference, GaussianPrior,
                            WaveletL1, WaveletTransform)
from uqrecon.operators.matrix import MatrixOperator

SHAPE = (6, 8)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _diff_1d(n, boundary):
    """Independent numpy difference matrices."""
    eye = np.eye(n)
    if boundary == "zero":
        return eye - np.eye(n, k=-1)
    if boundary == "periodic":
        return eye - np.roll(eye, 1, axis=0)
    d = np.eye(n, k=1) - eye
    d[-1] = 0
    return d


def _diff_2d(shape, boundary):
    h, w = shape
    return np.vstack([np.kron(_diff_1d(h, boundary), np.eye(w)),
                      np.kron(np.eye(h), _diff_1d(w, boundary))])


@pytest.mark.parametrize("boundary", ["zero", "periodic", "neumann"])
def test_gmrf_closed_form_and_rank(x64, boundary):
    D = _diff_2d(SHAPE, boundary)
    np.testing.assert_allclose(np.asarray(FiniteDifference(SHAPE, boundary).to_dense()), D,
                               atol=1e-14)
    prior = GMRF(SHAPE, 3.0, boundary)
    x = np.random.default_rng(0).normal(size=SHAPE)
    np.testing.assert_allclose(float(prior.potential(x)),
                               1.5 * x.ravel() @ D.T @ D @ x.ravel(), rtol=1e-12)
    assert prior.rank == np.linalg.matrix_rank(D.T @ D)
    L = np.asarray(prior.precision_sqrt.to_dense())
    np.testing.assert_allclose(L.T @ L, 3.0 * D.T @ D, atol=1e-12)


def _smooth_priors():
    rng = np.random.default_rng(1)
    S = MatrixOperator(rng.normal(size=(30, 48)), SHAPE)
    return {
        "gauss_iid": GaussianPrior(SHAPE, 2.0, mean=0.3),
        "gauss_sqrt": GaussianPrior(SHAPE, 2.0, sqrt_operator=S),
        "gmrf_zero": GMRF(SHAPE, 4.0, "zero"),
        "gmrf_periodic": GMRF(SHAPE, 4.0, "periodic"),
        "cauchy": CauchyMRF(SHAPE, 0.3),
        "tv_huber": TV(SHAPE, 0.7).smoothed(0.05),
        "tv_charb_aniso": TV(SHAPE, 0.7, isotropic=False).smoothed(0.05, "charbonnier"),
        "wavelet_huber": WaveletL1((8, 8), 0.5, "haar", levels=2).smoothed(0.05),
    }


@pytest.mark.parametrize("name", ["gauss_iid", "gauss_sqrt", "gmrf_zero", "gmrf_periodic",
                                  "cauchy", "tv_huber", "tv_charb_aniso", "wavelet_huber"])
def test_prior_gradients_and_curvature(x64, name):
    prior = _smooth_priors()[name]
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=prior.shape))
    f = jax.jit(prior.potential)
    check_grads(f, (x,), order=1, modes=["rev"], eps=1e-5)
    v = jnp.asarray(rng.normal(size=prior.shape))
    fd = (f(x + 1e-6 * v) - f(x - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(float(jnp.vdot(jax.grad(f)(x), v)), float(fd), rtol=1e-5)
    # lipschitz_vp dominates the Hessian: lambda_max(H) <= lambda_max(majorant)
    n = x.size
    eye = jnp.eye(n).reshape(n, *prior.shape)
    H = jax.jit(jax.vmap(lambda e: jax.jvp(jax.grad(prior.potential), (x,), (e,))[1]))(eye)
    M = jax.jit(jax.vmap(lambda e: prior.lipschitz_vp(x, e)))(eye)
    assert np.max(np.abs(np.linalg.eigvalsh(np.asarray(H).reshape(n, n)))) <= (
        np.max(np.linalg.eigvalsh(np.asarray(M).reshape(n, n))) * (1 + 1e-9))
    G = jax.jit(jax.vmap(lambda e: prior.gauss_newton_vp(x, e)))(eye)
    assert np.min(np.linalg.eigvalsh(np.asarray(G).reshape(n, n))) > -1e-9   # PSD


def test_daubechies_filters():
    from uqrecon.models.wavelets import WAVELETS
    s3 = np.sqrt(3.0)
    db2 = np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * np.sqrt(2.0))   # closed form
    h2 = np.array(WAVELETS["db2"])
    assert np.allclose(h2, db2, atol=1e-12) or np.allclose(h2, db2[::-1], atol=1e-12)
    for n in range(1, 9):
        h = np.array(WAVELETS["haar" if n == 1 else f"db{n}"])
        assert len(h) == 2 * n
        for shift in range(n):        # orthonormal to its even shifts
            np.testing.assert_allclose(h[2 * shift:] @ h[:len(h) - 2 * shift],
                                       1.0 if shift == 0 else 0.0, atol=1e-10)
        k = np.arange(len(h))         # n vanishing moments of the high-pass filter
        g = (-1.0) ** k * h[::-1]
        for m in range(n):
            assert abs(np.sum(g * k**m)) <= 1e-7 * np.sum(np.abs(g) * k**m)


@pytest.mark.parametrize("wavelet,levels", [("haar", 3), ("db2", 2), ("db4", 1)])
def test_wavelet_orthonormal(x64, wavelet, levels):
    op = WaveletTransform((8, 16), wavelet, levels)
    W = np.asarray(jax.jit(lambda o: o.to_dense())(op))
    np.testing.assert_allclose(W.T @ W, np.eye(128), atol=1e-12)
    with pytest.raises(ValueError, match="levels"):
        WaveletTransform((8, 16), wavelet, levels + 1)


def test_haar_matches_formula(x64):
    x = np.random.default_rng(3).normal(size=(4, 4))
    c = np.asarray(WaveletTransform((4, 4), "haar", 1)(x))
    a = (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) / 2
    d_rows = (x[0::2, 0::2] + x[0::2, 1::2] - x[1::2, 0::2] - x[1::2, 1::2]) / 2
    np.testing.assert_allclose(c[:2, :2], a, atol=1e-12)
    np.testing.assert_allclose(c[2:, :2], d_rows, atol=1e-12)


def test_wavelet_l1_spares_approximation(x64):
    prior = WaveletL1((8, 8), 1.0, "haar", levels=2)
    assert float(prior.potential(jnp.ones((8, 8)))) == pytest.approx(0.0, abs=1e-12)
    x = np.random.default_rng(4).normal(size=(8, 8))
    c = np.array(WaveletTransform((8, 8), "haar", 2)(x))
    c[:2, :2] = 0
    np.testing.assert_allclose(float(prior.potential(x)), np.abs(c).sum(), rtol=1e-12)


@pytest.mark.parametrize("isotropic", [True, False])
def test_smoothed_tv_tends_to_tv(x64, isotropic):
    """0 <= TV - Huber <= w eps/2 per term; 0 <= TV - Charbonnier <= w eps per term."""
    x = jnp.asarray(np.random.default_rng(6).normal(size=SHAPE))
    tv = TV(SHAPE, 0.7, isotropic=isotropic)
    exact = float(tv.potential(x))
    terms = x.size * (1 if isotropic else 2)
    for eps in (1e-1, 1e-3):
        for kind, bound in (("huber", 0.5), ("charbonnier", 1.0)):
            gap = exact - float(tv.smoothed(eps, kind).potential(x))
            assert 0 <= gap <= 0.7 * eps * bound * terms + 1e-12


def test_float32_default():
    x = jnp.ones(SHAPE, jnp.float32)
    for prior in _smooth_priors().values():
        if prior.shape == SHAPE:
            assert jax.jit(jax.grad(prior.potential))(x).dtype == jnp.float32


def test_bad_input():
    with pytest.raises(ValueError, match="delta"):
        GMRF(SHAPE, 0.0)
    with pytest.raises(ValueError, match="delta"):
        GMRF(SHAPE, -2.0)
    with pytest.raises(ValueError, match="boundary"):
        GMRF(SHAPE, 1.0, "reflect")
    with pytest.raises(ValueError, match="precision"):
        GaussianPrior(SHAPE, precision=np.nan)
    with pytest.raises(ValueError, match="mean"):
        GaussianPrior(SHAPE, mean=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="weight"):
        TV(SHAPE, weight=0.0)
    with pytest.raises(ValueError, match="levels"):
        WaveletL1((8, 8), levels=4, wavelet="db2")
    with pytest.raises(ValueError, match="scale"):
        CauchyMRF(SHAPE, scale=-1.0)
    with pytest.raises(ValueError, match="upper"):
        Box(SHAPE, 1.0, 0.0)
    with pytest.raises(ValueError, match="eps"):
        TV(SHAPE).smoothed(0.0)
    with pytest.raises(ValueError, match="shape"):
        GMRF((0, 3))


def test_complex_image_prior_precision_conditional_against_scipy():
    """A complex image under ``delta/2 (x-m)^H Q (x-m)``: real and imaginary parts are
    independent N(m, (delta Q)^-1), so the normaliser is delta^rank (2 * rank real
    degrees of freedom, rank/2 each) and the Gamma shape is a + rank, not a + rank/2."""
    import scipy.stats

    from uqrecon.models import ComplexGaussian, Gamma, GaussianPrior, Posterior
    from uqrecon.operators.mri import CartesianMRI

    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        shape = (6, 6)
        mri = CartesianMRI(rng.uniform(size=shape) < 0.5, image_dtype=jnp.complex128)
        k = rng.normal(size=mri.range_shape) + 1j * rng.normal(size=mri.range_shape)
        post = Posterior(ComplexGaussian(mri, k, 0.5),
                         GaussianPrior(shape, precision=Gamma(2.0, 0.5)))
        x = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        a, b = (float(v) for v in post.conditionals(jnp.asarray(x))["prior_precision"])
    ts = np.linspace(0.5, 20.0, 9)
    joint = np.array([np.sum(scipy.stats.norm.logpdf(x.real, 0, 1 / np.sqrt(t))
                             + scipy.stats.norm.logpdf(x.imag, 0, 1 / np.sqrt(t)))
                      + scipy.stats.gamma.logpdf(t, 2.0, scale=2.0) for t in ts])
    diff = joint - scipy.stats.gamma.logpdf(ts, a, scale=1 / b)
    np.testing.assert_allclose(diff - diff[0], 0.0, atol=1e-8)
    assert a == pytest.approx(2.0 + 36)

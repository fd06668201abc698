"""Complex MRI images (images with phase): every method that makes sense for a complex
Gaussian posterior, checked against the exact complex posterior.

The reference is computed here, densely in float64 and independently of the package's
exact code: the Cartesian MRI matrix from numpy's FFT of unit images, the GMRF's
difference matrix from Kronecker products, the real ``2n x 2n`` precision
``[[Re P, -Im P], [Im P, Re P]]`` of ``P = A^H A / sigma^2 + Q`` in the real coordinates
``(Re x, Im x)``, its inverse ``C`` and mean. The convention under test (docs/interfaces.md,
"Complex images"): a Result of a complex image has a complex mean and complex draws, and
its pixel variance is ``E|x - mean|^2 = Var(Re x) + Var(Im x)``; Gaussian factors are
those of the real coordinates.

Monte Carlo checks use batch means (8 batches of the pooled chains): the pixel-variance
ratio ``T = mean_i(E|x_i - mean_ref_i|^2 / var_ref_i)`` must lie within 4 batch standard
errors of 1,
*and* that standard error must be below 0.015, so a 10 % variance error (``T = 0.9``) is
at least 6.7 standard errors away and fails: the power is asserted, not hoped for.
The mean must lie within 3 Monte Carlo standard errors (in norm) of the exact mean.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uqrecon
from uqrecon.inference import exact as _exact
from uqrecon.models import GMRF, TV, ComplexGaussian, GaussianPrior
from uqrecon.models.identity import posterior_hash
from uqrecon.operators.coils import birdcage_maps
from uqrecon.operators.masks import equispaced_line_mask
from uqrecon.operators.mri import CartesianMRI
from uqrecon.phantoms import brain_mri
from uqrecon.result import Result

SHAPE = (16, 16)
N = SHAPE[0] * SHAPE[1]
SIGMA = 0.05
DELTA = 20.0          # GMRF precision
WHITE = 4.0           # white Gaussian prior precision (2-coil problem)
NUM_BATCHES = 8
MAX_VAR_SE = 0.015    # the variance ratio's standard error must be below this (power)


@pytest.fixture(scope="module", autouse=True)
def x64():
    """The whole module in float64 (restoring the global flag afterwards)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


# --------------------------------------------------------------------------------------
# problems and their independent dense references
# --------------------------------------------------------------------------------------
def _np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                           axes=(-2, -1))


def _diff_matrix(k):
    """Backward differences with a zero before the first pixel (GMRF boundary 'zero')."""
    return np.eye(k) - np.eye(k, k=-1)


@functools.lru_cache(maxsize=None)
def problem(coils: int):
    """``(posterior, mean_ref, C_ref)``: a complex brain phantom (magnitude times a smooth
    phase), Cartesian equispaced mask (4x single-coil with a GMRF prior; 8x 2-coil with a
    white Gaussian prior), noise of std ``SIGMA`` in real and imaginary parts; the exact
    posterior of the real coordinates ``(Re x, Im x)``: mean (2n,) and covariance
    (2n, 2n), from numpy only."""
    acc = 4 if coils == 1 else 8
    mask = np.asarray(equispaced_line_mask(SHAPE, acceleration=acc, center_fraction=0.08,
                                           seed=0))
    sens = None if coils == 1 else np.asarray(birdcage_maps(SHAPE, coils,
                                                            dtype=jnp.complex128))
    op = CartesianMRI(mask, None if sens is None else jnp.asarray(sens),
                      image_dtype=jnp.complex128)
    truth = np.asarray(brain_mri(SHAPE, complex_valued=True, dtype=jnp.float64))
    # numpy forward matrix: rows = sampled k-space positions (coil-major)
    F = _np_fft2c(np.eye(N).reshape(N, *SHAPE)).reshape(N, N).T        # column j = F e_j
    rows = np.flatnonzero(mask)
    blocks = [F[rows]] if sens is None else [F[rows] * s.ravel()[None, :] for s in sens]
    A = np.vstack(blocks)
    rng = np.random.default_rng(coils)
    noise = SIGMA * (rng.standard_normal(A.shape[0]) + 1j * rng.standard_normal(A.shape[0]))
    y = A @ truth.ravel() + noise
    data = y.reshape(op.range_shape)
    if coils == 1:
        prior = GMRF(SHAPE, delta=DELTA)
        D = np.vstack([np.kron(_diff_matrix(SHAPE[0]), np.eye(SHAPE[1])),
                       np.kron(np.eye(SHAPE[0]), _diff_matrix(SHAPE[1]))])
        Q = DELTA * D.T @ D
    else:
        prior = GaussianPrior(SHAPE, precision=WHITE)
        Q = WHITE * np.eye(N)
    post = uqrecon.Posterior(ComplexGaussian(op, jnp.asarray(data), sigma=SIGMA), prior)
    P = A.conj().T @ A / SIGMA ** 2 + Q
    Pr = np.block([[P.real, -P.imag], [P.imag, P.real]])
    b = A.conj().T @ y / SIGMA ** 2
    C = np.linalg.inv(Pr)
    mean = C @ np.concatenate([b.real, b.imag])
    return post, mean, C, Pr


def _ref_pixel(mean, C):
    """Complex mean image and pixel variance E|x - mean|^2 of the reference."""
    m = (mean[:N] + 1j * mean[N:]).reshape(SHAPE)
    d = np.diag(C)
    return m, (d[:N] + d[N:]).reshape(SHAPE)


# --------------------------------------------------------------------------------------
# Monte Carlo checks
# --------------------------------------------------------------------------------------
def _batches(draws):
    """Pooled draws (chains, draws, *shape) cut into NUM_BATCHES contiguous batches
    (each within one chain)."""
    c, d = draws.shape[:2]
    per = NUM_BATCHES // c
    assert per * c == NUM_BATCHES and d % per == 0, (c, d)
    return draws.reshape(c * per, d // per, *draws.shape[2:])


def _variance_ratio(batches, ref_var, ref_mean):
    """``T`` and its batch-means standard error: per batch, the pixels' mean squared
    deviation from the *exact* mean over the reference variance (unbiased whatever the
    chain's autocorrelation, unlike a variance about the batch's own mean), averaged
    over pixels."""
    t = np.array([np.mean(np.mean(np.abs(b - ref_mean) ** 2, axis=0) / ref_var)
                  for b in batches])
    return t.mean(), t.std(ddof=1) / np.sqrt(len(t))


def check_draws(result, mean, C, label):
    """The draws of ``result`` against the exact reference: pixel variances
    ``E|x - mean|^2``, the real and the imaginary parts' variances separately, and
    the mean. Fails for a 10 % variance error (the asserted power) and for a mean off by
    more than 3 Monte Carlo standard errors (in norm)."""
    m_ref, v_ref = _ref_pixel(mean, C)
    draws = np.asarray(result.draws)
    assert np.iscomplexobj(draws) and draws.shape[2:] == SHAPE
    batches = _batches(draws)
    d = np.diag(C)
    for name, parts, ref, mu in (
            ("pixel", batches, v_ref, m_ref),
            ("real part", batches.real, d[:N].reshape(SHAPE), m_ref.real),
            ("imaginary part", batches.imag, d[N:].reshape(SHAPE), m_ref.imag)):
        t, se = _variance_ratio(parts, ref, mu)
        assert se < MAX_VAR_SE, f"{label} {name}: too few draws for the stated power ({se})"
        assert abs(t - 1) < 4 * se, f"{label} {name} variance ratio {t:.4f} (se {se:.4f})"
    # the Result's own variance is the (unbiased, pooled) pixel variance of its draws
    np.testing.assert_allclose(result.variance, np.var(draws, axis=(0, 1), ddof=1), rtol=1e-6)
    # mean: squared error against the batch means' Monte Carlo variance (summed)
    bm = batches.mean(axis=1)
    mc_var = np.sum(np.abs(bm - bm.mean(axis=0)) ** 2) / (len(bm) - 1) / len(bm)
    err = np.sum(np.abs(result.mean - m_ref) ** 2)
    assert err < 9 * mc_var, f"{label} mean: squared error {err:.3g} vs MC {mc_var:.3g}"


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("coils", [1, 2])
def test_exact_gaussian_matches_dense_reference(coils):
    """``gold.exact_gaussian`` on a complex posterior: complex mean, pixel variance
    ``E|x - mean|^2`` and the real coordinates' covariance equal the reference to
    rounding. Catches: the real-array refusal, a complex covariance without the factor
    2 of a circular Gaussian (variance off by 2), a wrong ``[[Re P, -Im P], [Im P, Re P]]``
    layout (covariance mismatch)."""
    post, mean, C, _ = problem(coils)
    m_ref, v_ref = _ref_pixel(mean, C)
    r = uqrecon.gold.exact_gaussian(post)
    assert r.is_complex and r.variance.dtype == np.float64
    np.testing.assert_allclose(r.mean, m_ref, rtol=0, atol=1e-9 * np.abs(m_ref).max())
    np.testing.assert_allclose(r.variance, v_ref, rtol=1e-8)
    np.testing.assert_allclose(r.gaussian["cov"], C, rtol=0, atol=1e-9 * C.max())
    assert r.provenance["posterior_hash"] == posterior_hash(post)
    # the real-coordinate view and its inverse
    rc = r.real_coordinates()
    assert rc.shape == (2, *SHAPE)
    np.testing.assert_allclose(rc.variance.ravel(), np.diag(C), rtol=1e-8)
    back = Result.from_real_coordinates(rc)
    np.testing.assert_allclose(back.variance, r.variance)
    with pytest.raises(ValueError, match="complex image"):
        r.interval(0.9)


def test_exact_draws_dense_and_cg():
    """``sample(method='exact')``, dense and CG paths (circulant preconditioner per real
    and imaginary part) on the single-coil GMRF problem, dense on the 2-coil one: Monte
    Carlo match (fails for a 10 % variance error; see the module docstring)."""
    for coils, solver in ((1, "dense"), (1, "cg"), (2, "dense")):
        post, mean, C, _ = problem(coils)
        r = uqrecon.sample(post, method="exact", solver=solver, num_chains=2,
                           num_samples=1000, seed=3, progress=False)
        check_draws(r, mean, C, f"exact/{solver}/{coils} coil(s)")
        assert r.provenance["posterior_hash"] == posterior_hash(post)


def test_native_complex_dense_factor_and_perturbation():
    """The complex (not real-coordinate) exact machinery: ``DenseGaussian`` of the complex
    form reports ``E|x - mean|^2`` and its draws have that variance; the
    perturbation-optimisation right-hand side ``eta`` has ``E[eta eta^H] = 2 P`` (checked
    through ``P^{-1} eta``'s variance). Catches the draws with half the reported
    variance (complex ``eps`` with ``E|eps|^2 = 1``) and a prior perturbation with half
    the variance (``e2`` drawn as a unit complex normal)."""
    post, mean, C, _ = problem(1)
    m_ref, v_ref = _ref_pixel(mean, C)
    form = post.gaussian_form()
    dense = _exact.dense_factor(form)
    np.testing.assert_allclose(np.asarray(dense.mean), m_ref, atol=1e-9)
    np.testing.assert_allclose(np.asarray(dense.variance()), v_ref, rtol=1e-8)
    x = np.asarray(dense.sample(jax.random.PRNGKey(0), 2000)).reshape(NUM_BATCHES, -1, *SHAPE)
    t, se = _variance_ratio(x, v_ref, m_ref)
    assert se < MAX_VAR_SE and abs(t - 1) < 4 * se, (t, se)
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    eta = np.asarray(jax.vmap(lambda k: _exact.perturbed_rhs(form, k))(keys))
    P = np.asarray(form.precision_matrix())
    d = np.linalg.solve(P, eta.reshape(len(keys), N).T).T.reshape(NUM_BATCHES, -1, *SHAPE)
    t, se = _variance_ratio(d, v_ref, 0.0)
    assert se < MAX_VAR_SE and abs(t - 1) < 4 * se, (t, se)


@pytest.mark.parametrize("method, chains, samples", [
    ("nuts", 2, 400), ("hmc", 2, 400), ("mala", 2, 1200)])
def test_gradient_samplers_match_exact(method, chains, samples):
    """NUTS / HMC / MALA run on the real coordinates ``(Re x, Im x)`` (dense whitening of
    the real 2n x 2n precision) and return complex draws matching the exact posterior
    (fails for a 10 % variance error; see the module docstring). Single-coil GMRF: the
    2-coil operator goes through the same real-coordinate wrapper in the exact tests."""
    post, mean, C, _ = problem(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # short chains: ESS warnings are expected
        r = uqrecon.sample(post, method=method, num_chains=chains, num_samples=samples,
                           num_warmup=200, seed=1, progress=False)
    check_draws(r, mean, C, method)
    assert r.diagnostics["ess_bulk"].shape == SHAPE     # worse of Re / Im per pixel
    assert r.provenance["coordinates"].startswith("real")


def test_meanfield_matches_closed_form_optimum():
    """Mean-field VI in real coordinates: for a Gaussian posterior its optimum is the
    exact mean and the variances ``1 / diag(P_r)`` of the real 2n x 2n precision (one per
    real and imaginary part). Catches a complex-vs-real factor 2 in the variances and a
    mean-field over complex pixels instead of real coordinates."""
    post, mean, C, Pr = problem(1)
    m_ref, _ = _ref_pixel(mean, C)
    r = uqrecon.approximate(post, method="meanfield", tol=1e-6)
    assert r.is_complex
    np.testing.assert_allclose(r.mean, m_ref, rtol=0, atol=1e-6 * np.abs(m_ref).max())
    opt = 1.0 / np.diag(Pr)
    np.testing.assert_allclose(r.real_coordinates().variance.ravel(), opt, rtol=1e-4)
    np.testing.assert_allclose(r.variance, (opt[:N] + opt[N:]).reshape(SHAPE), rtol=1e-4)


def test_laplace_and_map_are_exact():
    """Laplace (all eigenpairs) of a Gaussian posterior is the posterior itself, and the
    MAP estimate is its mean: both against the reference."""
    post, mean, C, _ = problem(2)
    m_ref, v_ref = _ref_pixel(mean, C)
    r = uqrecon.approximate(post, method="laplace", rank=2 * N)   # every eigenpair
    np.testing.assert_allclose(r.mean, m_ref, rtol=0, atol=1e-7 * np.abs(m_ref).max())
    np.testing.assert_allclose(r.variance, v_ref, rtol=1e-5)
    x_map, _ = uqrecon.map_estimate(post)
    assert np.linalg.norm(np.asarray(x_map) - m_ref) < 1e-5 * np.linalg.norm(m_ref)


def test_unsupported_methods_and_models_refused_before_setup():
    """Methods with no complex version, and complex posteriors that are not linear
    Gaussian, fail with a ValueError naming the method and "complex image" (never a
    crash inside JAX)."""
    post, _, _, _ = problem(1)
    for method in ("myula", "skrock", "gsm", "gibbs"):
        with pytest.raises(ValueError, match=f"method='{method}'.*complex image"):
            uqrecon.sample(post, method=method, num_samples=10, progress=False)
    tv = uqrecon.Posterior(post.likelihood, [GMRF(SHAPE, delta=DELTA), TV(SHAPE, 1.0)])
    with pytest.raises(ValueError, match="method='nuts'.*complex image"):
        uqrecon.sample(tv, method="nuts", num_samples=10, progress=False)
    with pytest.raises(ValueError, match="meanfield.*complex image"):
        uqrecon.approximate(tv, method="meanfield")
    # the circulant whitening models image axes only, not the (Re, Im) pair
    with pytest.raises(ValueError, match="circulant.*complex image"):
        uqrecon.sample(post, method="nuts", preconditioner="circulant", num_samples=10,
                       progress=False)

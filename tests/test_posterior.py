"""Posterior: closed-form density, HVPs, Gaussian form, conditionals, batching, operators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from uqrecon.models import (GMRF, TV, Box, CauchyMRF, ComplexGaussian, Gamma, Gaussian,
                            GaussianPrior, NonNegative, Posterior)
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.operators.mri import CartesianMRI
from uqrecon.operators.tomo import sparse_view

SHAPE = (6, 6)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _diff(n, periodic):
    e = np.eye(n)
    return e - (np.roll(e, 1, axis=0) if periodic else np.eye(n, k=-1))


def _problem(periodic=False, hyper=False):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(20, 36))
    A = MatrixOperator(M, SHAPE)
    y = rng.normal(size=20)
    lik = (Gaussian(A, y, noise_precision=Gamma(2.0, 0.1)) if hyper else Gaussian(A, y, 0.5))
    prior = GMRF(SHAPE, Gamma(3.0, 2.0) if hyper else 3.0,
                 "periodic" if periodic else "zero")
    d = _diff(6, periodic)
    D = np.vstack([np.kron(d, np.eye(6)), np.kron(np.eye(6), d)])
    return Posterior(lik, prior), M, y, D


def test_closed_form_density_and_gaussian_form(x64):
    post, M, y, D = _problem()
    P = 4.0 * M.T @ M + 3.0 * D.T @ D
    b = 4.0 * M.T @ y
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(2, *SHAPE))
    quad = lambda x: 0.5 * x.ravel() @ P @ x.ravel() - b @ x.ravel()
    np.testing.assert_allclose(float(post.logdensity(x1) - post.logdensity(x2)),
                               -(quad(x1) - quad(x2)), rtol=1e-10)
    v = rng.normal(size=SHAPE)
    np.testing.assert_allclose(np.asarray(post.hessian_vp(x1, v)).ravel(), P @ v.ravel(),
                               rtol=1e-10)
    np.testing.assert_allclose(post.gauss_newton_vp(x1, v), post.hessian_vp(x1, v),
                               rtol=1e-10)
    gf = post.gaussian_form()
    np.testing.assert_allclose(np.asarray(gf.precision_matrix()), P, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(gf.rhs).ravel(), b, rtol=1e-10)
    L = np.asarray(gf.prior_precision_sqrt.to_dense())
    np.testing.assert_allclose(L.T @ L, 3.0 * D.T @ D, atol=1e-10)
    np.testing.assert_allclose(float(post.lipschitz()), np.linalg.eigvalsh(P).max(),
                               rtol=1e-4)
    mu = np.linalg.solve(P, b)
    np.testing.assert_allclose(np.asarray(gf.mean_cg(tol=1e-12)).ravel(), mu, rtol=1e-8)
    # a warm start reaches the same solution (the correction is solved to tol ||rhs||)
    warm = gf.mean_cg(tol=1e-12, x0=np.asarray(mu).reshape(gf.shape) + 0.1)
    np.testing.assert_allclose(np.asarray(warm).ravel(), mu, rtol=1e-8)
    assert Posterior(post.likelihood, [GMRF(SHAPE), TV(SHAPE)]).gaussian_form() is None


@pytest.mark.parametrize("periodic", [False, True])
def test_conditionals_closed_form(x64, periodic):
    post, M, y, D = _problem(periodic, hyper=True)
    x = np.random.default_rng(2).normal(size=SHAPE)
    cond = post.conditionals(x)
    rank = np.linalg.matrix_rank(D.T @ D)
    assert rank == (35 if periodic else 36)
    a, b = cond["noise_precision"]
    np.testing.assert_allclose((a, float(b)), (2.0 + 10, 0.1 + 0.5 * np.sum((M @ x.ravel() - y) ** 2)))
    a, b = cond["prior_precision"]
    np.testing.assert_allclose((a, float(b)), (3.0 + rank / 2, 2.0 + 0.5 * np.sum((D @ x.ravel()) ** 2)))
    # log_joint as a function of each precision is the Gamma conditional's log density
    for name, (shape, rate) in cond.items():
        t1, t2 = 0.7, 2.9
        lj = [float(post.with_hyperparameters(**{name: t}).log_joint(x)) for t in (t1, t2)]
        ref = scipy.stats.gamma.logpdf([t1, t2], shape, scale=1 / float(rate))
        np.testing.assert_allclose(lj[0] - lj[1], ref[0] - ref[1], rtol=1e-9)


def test_several_gaussian_priors(x64):
    post, M, y, D = _problem()
    two = Posterior(post.likelihood, [GMRF(SHAPE, Gamma(1.0, 1.0)),
                                      GaussianPrior(SHAPE, Gamma(2.0, 1.0))])
    assert sorted(two.hyperparameters) == ["noise_precision", "prior_precision_0",
                                           "prior_precision_1"]
    two = two.with_hyperparameters(prior_precision_0=3.0, prior_precision_1=0.5)
    L = np.asarray(two.gaussian_form().prior_precision_sqrt.to_dense())
    np.testing.assert_allclose(L.T @ L, 3.0 * D.T @ D + 0.5 * np.eye(36), atol=1e-12)
    x = np.random.default_rng(8).normal(size=SHAPE)
    cond = two.conditionals(x)
    np.testing.assert_allclose(float(cond["prior_precision_1"][1]), 1.0 + 0.5 * np.sum(x**2))


def test_hyperparameters_jit_and_batching(x64):
    post, *_ = _problem(hyper=True)
    assert post.is_hierarchical
    assert float(post.hyperparameters["noise_precision"]) == pytest.approx(20.0)
    new = post.with_hyperparameters(noise_precision=5.0, prior_precision=0.5)
    assert float(new.hyperparameters["prior_precision"]) == 0.5
    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, *SHAPE)))
    f = jax.jit(lambda p, t, x: p.with_hyperparameters(noise_precision=t).logdensity(x))
    batched = f(post, 5.0, x)
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched[1], new.with_hyperparameters(prior_precision=1.5)
                               .logdensity(x[1]), rtol=1e-12)
    g = post.grad_smooth_potential(x)
    np.testing.assert_allclose(g[2], post.grad_smooth_potential(x[2]), rtol=1e-12)


def test_split_transform_and_unconstrained(x64):
    post, *_ = _problem()
    cpost = Posterior(post.likelihood, [GMRF(SHAPE), Box(SHAPE, -1.0, 2.0)])
    assert cpost.is_smooth and len(cpost.nonsmooth) == 1
    tvpost = Posterior(post.likelihood, [TV(SHAPE), NonNegative(SHAPE)])
    assert not tvpost.is_smooth and len(tvpost.nonsmooth) == 2
    z = jnp.asarray(np.random.default_rng(4).normal(size=SHAPE))
    x = cpost.transform.forward(z)
    np.testing.assert_allclose(cpost.logdensity_unconstrained(z),
                               cpost.logdensity(x) + cpost.transform.log_det_jacobian(z),
                               rtol=1e-12)
    assert float(cpost.logdensity(x + 5.0)) == -np.inf


def _check_grad_fd(post, x, h):
    v = jnp.asarray(np.random.default_rng(9).normal(size=x.shape), x.dtype)
    val, g = post.value_and_grad_smooth_potential(x)
    fd = (post.smooth_potential(x + h * v) - post.smooth_potential(x - h * v)) / (2 * h)
    assert np.isfinite(float(val))
    np.testing.assert_allclose(float(jnp.vdot(g, v)), float(fd), rtol=1e-6)


def test_works_with_ray_transform_and_mri():
    """CT and MRI operators: float32 end to end; gradient vs finite differences in float64."""
    ct = sparse_view((16, 16), 8)
    x = jnp.asarray(np.random.default_rng(5).uniform(size=(16, 16)), jnp.float32)
    post = Posterior(Gaussian(ct, ct(x), 0.1), [CauchyMRF((16, 16), 0.1), NonNegative((16, 16))])
    assert post.dtype == jnp.float32
    assert post.grad_smooth_potential(x).dtype == jnp.float32
    with jax.enable_x64(True):
        x64_ = jnp.asarray(x, jnp.float64)
        p64 = Posterior(Gaussian(ct, np.asarray(ct(x64_)), 0.1), CauchyMRF((16, 16), 0.1))
        assert p64.dtype == jnp.float64
        _check_grad_fd(p64, x64_, 1e-6)
    mask = np.zeros((16, 16), bool)
    mask[:, ::2] = True
    mri = CartesianMRI(mask, image_dtype=jnp.complex64)
    xc = (x + 1j * x[::-1]).astype(jnp.complex64)
    mpost = Posterior(ComplexGaussian(mri, mri(xc), 0.05), TV((16, 16), 1.0).smoothed(0.01))
    assert mpost.dtype == jnp.complex64
    val, g = mpost.value_and_grad_smooth_potential(xc)
    assert g.dtype == jnp.complex64 and np.isfinite(float(val))
    # complex gradient convention: d/dt f(x + t v) = Re<g, v> (ascent direction)
    with jax.enable_x64(True):
        xc64 = jnp.asarray(xc, jnp.complex128)
        mri64 = CartesianMRI(mask, image_dtype=jnp.complex128)
        p64 = Posterior(ComplexGaussian(mri64, np.asarray(mri64(xc64)) + 0.3, 0.05),
                        TV((16, 16), 1.0).smoothed(0.01))
        rng = np.random.default_rng(6)
        v = jnp.asarray(rng.normal(size=(16, 16)) + 1j * rng.normal(size=(16, 16)))
        h = 1e-6
        fd = (p64.smooth_potential(xc64 + h * v) - p64.smooth_potential(xc64 - h * v)) / (2 * h)
        g64 = p64.grad_smooth_potential(xc64)
        np.testing.assert_allclose(float(jnp.real(jnp.vdot(g64, v))), float(fd), rtol=1e-6)


@pytest.fixture
def global_x64():
    """x64 through the global flag: the bridge's host callback runs in another thread,
    where the thread-local ``jax.enable_x64`` context does not apply."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def test_works_with_from_odl(global_x64):
    """A bridged ODL operator (reverse mode only): gradient, Gauss-Newton, Lipschitz, MAP."""
    import odl

    from uqrecon.map import map_estimate
    from uqrecon.operators import from_odl

    rng = np.random.default_rng(7)
    M = rng.normal(size=(15, 12))
    y = rng.normal(size=15)
    post = Posterior(Gaussian(from_odl(odl.MatrixOperator(M)), y, 0.5), GMRF((12,), 3.0))
    d = _diff(12, False)
    P = 4.0 * M.T @ M + 3.0 * d.T @ d
    x, v = rng.normal(size=(2, 12))
    np.testing.assert_allclose(post.grad_smooth_potential(x), P @ x - 4.0 * M.T @ y,
                               rtol=1e-10)
    np.testing.assert_allclose(post.gauss_newton_vp(x, v), P @ v, rtol=1e-10)
    np.testing.assert_allclose(float(post.lipschitz()), np.linalg.eigvalsh(P).max(), rtol=1e-4)
    xm, _ = map_estimate(post, tol=1e-12)
    np.testing.assert_allclose(xm, np.linalg.solve(P, 4.0 * M.T @ y), rtol=1e-6)


def test_bad_input():
    post, *_ = _problem()
    with pytest.raises(ValueError, match="prior"):
        Posterior(post.likelihood, GMRF((5, 5)))
    with pytest.raises(ValueError, match="constraint"):
        Posterior(post.likelihood, [NonNegative(SHAPE), Box(SHAPE)])
    with pytest.raises(ValueError, match="unknown"):
        post.with_hyperparameters(sigma=1.0)
    with pytest.raises(ValueError, match="noise_precision"):
        post.with_hyperparameters(noise_precision=-1.0)
    with pytest.raises(ValueError, match="'x'"):
        post.logdensity(jnp.zeros((5, 6)))
    with pytest.raises(TypeError, match="likelihood"):
        Posterior(GMRF(SHAPE))

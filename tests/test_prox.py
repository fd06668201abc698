"""Proximal operators: optimality conditions and agreement with long-run references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.models import (TV, Box, Gaussian, NonNegative, Posterior, SigmoidTransform,
                            SoftplusTransform, WaveletL1, WaveletTransform)
from uqrecon.operators.base import Identity

SHAPE = (10, 10)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _reference_prox(x, mu, K, grouped, lo=-np.inf, hi=np.inf, iters=20000):
    """min_u 1/2||u - x||^2 + mu sum |K u| + i_[lo,hi](u), by accelerated Chambolle-Pock
    (numpy, float64, dense K) -- an algorithm independent of the code under test."""
    x = x.ravel()
    L = np.linalg.norm(K, 2)
    tau = sigma = 1.0 / L
    u = ubar = np.clip(x, lo, hi)
    q = np.zeros(K.shape[0])
    for _ in range(iters):
        q = q + sigma * K @ ubar
        if grouped:
            g = q.reshape(2, -1)
            q = (g / np.maximum(1.0, np.linalg.norm(g, axis=0) / mu)).ravel()
        else:
            q = np.clip(q, -mu, mu)
        u_new = np.clip((u - tau * K.T @ q + tau * x) / (1 + tau), lo, hi)
        theta = 1 / np.sqrt(1 + 2 * tau)          # strong convexity 1 (Alg. 2)
        tau, sigma = theta * tau, sigma / theta
        ubar = u_new + theta * (u_new - u)
        u = u_new
    return u


def _image(seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros(SHAPE)
    x[2:7, 3:8] = 1.0
    return x + 0.2 * rng.normal(size=SHAPE)


@pytest.mark.parametrize("isotropic", [True, False])
def test_tv_prox_certificate_and_reference(x64, isotropic):
    tv = TV(SHAPE, 0.5, isotropic=isotropic, prox_max_iter=3000, prox_tol=1e-10)
    x, step = _image(), 0.4
    u, p, _ = tv.prox_dual(jnp.asarray(x), step)
    D = tv.analysis_operator
    # dual certificate: (x - u)/step = weight D^T p with |p| <= 1 and <p, Du> = TV(u)
    np.testing.assert_allclose((x - u) / step, 0.5 * D.adjoint(p), atol=1e-10)
    mag = np.linalg.norm(p, axis=0) if isotropic else np.abs(p)
    assert mag.max() <= 1 + 1e-12
    tv_u = float(tv.potential(u)) / 0.5
    gap = 0.5 * step * (tv_u - float(jnp.vdot(p, D(u))))     # primal-dual gap >= F(u) - F*
    assert 0 <= gap <= 1e-6 * tv_u
    K = np.asarray(D.to_dense())
    ref = _reference_prox(x, 0.5 * step, K, isotropic)
    obj = lambda v: 0.5 * np.sum((v - x.ravel()) ** 2) + 0.5 * step * np.sum(
        np.linalg.norm((K @ v).reshape(2, -1), axis=0) if isotropic else np.abs(K @ v))
    # F is 1-strongly convex: F(u) - F* <= gap and ||u - u*||^2 <= 2 gap
    assert obj(np.asarray(u).ravel()) - obj(ref) <= gap + 1e-12
    assert np.linalg.norm(np.asarray(u).ravel() - ref) <= np.sqrt(2 * gap) + 1e-5
    # the default (short) settings are close to the reference too
    u_default = TV(SHAPE, 0.5, isotropic=isotropic).prox(jnp.asarray(x), step)
    assert np.linalg.norm(np.asarray(u_default).ravel() - ref) <= 1e-3 * np.linalg.norm(ref)


def test_tv_prox_constrained_via_posterior(x64):
    """Posterior.prox of TV + box equals the long-run constrained reference."""
    x = _image(1)
    post = Posterior(Gaussian(Identity(SHAPE), x, 1.0),
                     [TV(SHAPE, 0.3, prox_max_iter=3000, prox_tol=1e-10), Box(SHAPE, 0.0, 0.8)])
    u = post.prox(jnp.asarray(x), 0.5)
    K = np.asarray(TV(SHAPE).analysis_operator.to_dense())
    ref = _reference_prox(x, 0.15, K, True, 0.0, 0.8)
    np.testing.assert_allclose(np.asarray(u).ravel(), ref, atol=1e-4)


def test_wavelet_prox_subgradient(x64):
    prior = WaveletL1((8, 8), 0.3, "db2", levels=1)
    x, step = jnp.asarray(_image(2)[:8, :8]), 0.7
    u = prior.prox(x, step)
    W = WaveletTransform(prior.shape, "db2", 1)
    cx, cu = np.asarray(W(x)), np.asarray(W(u))
    w = np.asarray(prior.weights(jnp.float64)) * np.ones(prior.shape)
    r = (cx - cu) / step                 # must lie in the subdifferential of w|c| at cu
    nz = np.abs(cu) > 1e-12          # thresholded coefficients come back as ~1e-17
    np.testing.assert_allclose(r[nz], (w * np.sign(cu))[nz], atol=1e-10)
    assert np.all(np.abs(r[~nz]) <= w[~nz] + 1e-10)


def test_wavelet_plus_box_dykstra_matches_reference(x64):
    shape = (8, 8)
    x = np.random.default_rng(3).normal(size=shape)
    post = Posterior(Gaussian(Identity(shape), x, 1.0),
                     [WaveletL1(shape, 0.4, "haar", 2, penalize_approximation=True),
                      NonNegative(shape)])
    u = post.prox(jnp.asarray(x), 0.5)
    W = np.asarray(WaveletTransform(shape, "haar", 2).to_dense())
    ref = _reference_prox(x, 0.2, W, False, 0.0)
    obj = lambda v: 0.5 * np.sum((v - x.ravel()) ** 2) + 0.2 * np.abs(W @ v).sum()
    u = np.asarray(u).ravel()
    assert u.min() >= 0
    # both are iterative: objectives agree to 1e-9 relative, iterates to ~sqrt(2e-9 F)
    assert abs(obj(u) - obj(ref)) <= 1e-9 * obj(ref)
    np.testing.assert_allclose(u, ref, atol=1e-4)


@pytest.mark.parametrize("cons", [NonNegative(SHAPE), Box(SHAPE, -0.2, 0.5)])
def test_constraint_prox_is_projection(x64, cons):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=SHAPE))
    u = cons.prox(x, 3.0)
    assert bool(cons.contains(u)) and float(cons.potential(u)) == 0.0
    assert float(cons.potential(x)) == np.inf
    # variational inequality <x - u, v - u> <= 0 for every feasible v
    for _ in range(5):
        v = cons.project(jnp.asarray(rng.normal(size=SHAPE)))
        assert float(jnp.vdot(x - u, v - u)) <= 1e-12


@pytest.mark.parametrize("t", [SoftplusTransform(jnp.asarray(0.1)),
                               SigmoidTransform(jnp.asarray(-1.0), jnp.asarray(2.0))])
def test_transforms(x64, t):
    z = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4)))
    np.testing.assert_allclose(t.inverse(t.forward(z)), z, atol=1e-10)
    J = jax.jacfwd(lambda a: t.forward(a).ravel())(z.ravel())
    np.testing.assert_allclose(float(t.log_det_jacobian(z)),
                               np.linalg.slogdet(np.asarray(J))[1], rtol=1e-10)

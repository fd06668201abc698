"""MAP: exact posterior mean for linear-Gaussian models; FISTA vs PDHG on TV."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.map import map_estimate
from uqrecon.models import GMRF, TV, Gaussian, NonNegative, Posterior
from uqrecon.operators.base import Identity
from uqrecon.operators.matrix import MatrixOperator

SHAPE = (8, 8)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _blur_problem():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(40, 64)) / 8
    x = np.zeros(SHAPE)
    x[2:6, 3:7] = 1.0
    y = M @ x.ravel() + 0.02 * rng.normal(size=40)
    return MatrixOperator(M, SHAPE), M, y


@pytest.mark.parametrize("method", ["lbfgs", "fista"])
def test_map_equals_exact_mean(x64, method):
    A, M, y = _blur_problem()
    post = Posterior(Gaussian(A, y, 0.02), GMRF(SHAPE, 5.0))
    gf = post.gaussian_form()
    mu = np.linalg.solve(np.asarray(gf.precision_matrix()), np.asarray(gf.rhs).ravel())
    x, info = map_estimate(post, method=method, tol=1e-12, max_iter=20000)
    assert info["converged"] and info["method"] == method
    assert np.linalg.norm(np.asarray(x).ravel() - mu) <= 1e-4 * np.linalg.norm(mu)


@pytest.mark.parametrize("complex_image", [False, True])
def test_mri_map_equals_exact_mean(x64, complex_image):
    """Complex k-space data, real or complex image: P = tau Re(A^H A) (or A^H A) + delta I."""
    from uqrecon.models import ComplexGaussian, GaussianPrior
    from uqrecon.operators.mri import CartesianMRI

    rng = np.random.default_rng(2)
    mask = rng.uniform(size=SHAPE) < 0.4
    dtype = jnp.complex128 if complex_image else jnp.float64
    A = CartesianMRI(mask, image_dtype=dtype)
    k = rng.normal(size=A.range_shape) + 1j * rng.normal(size=A.range_shape)
    post = Posterior(ComplexGaussian(A, k, 0.5), GaussianPrior(SHAPE, 2.0))
    M = np.asarray(jax.jit(lambda o: o.to_dense())(A))
    G = M.conj().T @ M
    P = 4.0 * (G if complex_image else G.real) + 2.0 * np.eye(64)
    b = 4.0 * (M.conj().T @ k if complex_image else (M.conj().T @ k).real)
    mu = np.linalg.solve(P, b)
    gf = post.gaussian_form()
    np.testing.assert_allclose(np.asarray(gf.precision_matrix()), P, atol=1e-10)
    np.testing.assert_allclose(np.asarray(gf.rhs).ravel(), b, atol=1e-10)
    if not complex_image:
        return                       # the real-image MAP path is covered above
    x, info = map_estimate(post, method="lbfgs", tol=1e-12)
    assert x.dtype == dtype and info["converged"]
    assert np.linalg.norm(np.asarray(x).ravel() - mu) <= 1e-4 * np.linalg.norm(mu)


def test_tv_map_fista_agrees_with_pdhg(x64):
    A, M, y = _blur_problem()
    post = Posterior(Gaussian(A, y, 0.02), [TV(SHAPE, 2.0, prox_tol=1e-9, prox_max_iter=2000),
                                           NonNegative(SHAPE)])
    xf, inf_f = map_estimate(post, tol=1e-10, max_iter=20000)
    xp, inf_p = map_estimate(post, method="pdhg", tol=1e-10, max_iter=50000)
    assert inf_f["method"] == "fista" and inf_f["converged"] and inf_p["converged"]
    assert float(xf.min()) >= 0 and float(xp.min()) >= 0
    assert abs(inf_f["objective"] - inf_p["objective"]) <= 1e-6 * abs(inf_p["objective"])
    assert np.linalg.norm(xf - xp) <= 1e-3 * np.linalg.norm(xp)


def test_tv_denoising_map_is_prox(x64):
    """With A = I the MAP is the TV prox of the data with step sigma^2."""
    y = np.random.default_rng(1).normal(size=SHAPE)
    tv = TV(SHAPE, 1.5, prox_tol=1e-10, prox_max_iter=5000)
    post = Posterior(Gaussian(Identity(SHAPE), y, 0.5), tv)
    x, _ = map_estimate(post, tol=1e-10)
    np.testing.assert_allclose(x, tv.prox(jnp.asarray(y), 0.25), atol=1e-8)


def test_bad_input():
    A, M, y = _blur_problem()
    post = Posterior(Gaussian(A, y, 0.02), [TV(SHAPE), NonNegative(SHAPE)])
    with pytest.raises(ValueError, match="method"):
        map_estimate(post, method="newton")
    with pytest.raises(ValueError, match="lbfgs"):
        map_estimate(post, method="lbfgs")
    with pytest.raises(ValueError, match="x0"):
        map_estimate(post, x0=np.zeros((3, 3)))


@pytest.mark.parametrize("method", ["lbfgs", "fista", "pdhg"])
def test_second_call_on_a_same_shaped_posterior_compiles_nothing(method):
    """The solvers are jitted on the posterior pytree: other data (and other tol /
    max_iter) reuse the compiled loop."""
    from compile_count import CompileCount

    A, _, y = _blur_problem()
    prior = GMRF(SHAPE, 5.0) if method == "lbfgs" else TV(SHAPE, weight=2.0)
    first = Posterior(Gaussian(A, y, 0.02), prior)
    second = Posterior(Gaussian(A, 2.0 * y, 0.03), prior)
    with CompileCount() as c1:
        x1, _ = map_estimate(first, method=method, max_iter=200)
    with CompileCount() as c2:
        x2, info = map_estimate(second, method=method, max_iter=300, tol=1e-7)
    assert len(c1.names) > 0 and len(c2.names) == 0, (c1.names, c2.names)
    assert not np.allclose(x1, x2) and info["num_grad_evals"] >= info["iterations"]


def test_lbfgs_num_grad_evals_counts_every_potential_evaluation(monkeypatch):
    """Count evaluations of the likelihood on the host: L-BFGS evaluates value and
    gradient together once per line-search step, plus once at the start; map_estimate
    evaluates the potential once more for its report."""
    calls = []
    potential = Gaussian.potential

    def counting(self, x):
        jax.debug.callback(lambda: calls.append(1))
        return potential(self, x)

    monkeypatch.setattr(Gaussian, "potential", counting)
    # a shape no other test uses, so the solver is traced (with the counter) here
    rng = np.random.default_rng(3)
    A = MatrixOperator(rng.normal(size=(33, 49)) / 7, (7, 7))
    post = Posterior(Gaussian(A, rng.normal(size=33), 0.1), GMRF((7, 7), 5.0))
    _, info = map_estimate(post, method="lbfgs", tol=1e-8)
    assert info["num_grad_evals"] == len(calls) - 1 and info["iterations"] > 10

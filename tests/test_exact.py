"""Exact Gaussian draws: CG, the dense Cholesky path and perturbation-optimisation, against
numpy float64 references."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import sample
from uqrecon.inference.exact import (cg, default_tol, dense_factor, perturbed_rhs,
                                     po_sampler, posterior_mean)
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator

S = (4, 4)
n = 16


@pytest.fixture(scope="module")
def small():
    """A 4x4 linear-Gaussian posterior (random 24x16 A) and its f64 mean and covariance."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(24, n)) / 4
    data = rng.normal(size=24)
    sigma = 0.3
    post = Posterior(Gaussian(MatrixOperator(A.astype(np.float32), domain_shape=S),
                              jnp.asarray(data, jnp.float32), sigma=sigma), GMRF(S, delta=3.0))
    form = post.gaussian_form()
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, *S)
    Q = np.asarray(jax.vmap(form.prior_precision)(eye), np.float64).reshape(n, n)
    A32 = A.astype(np.float32).astype(np.float64)
    P = A32.T @ A32 / sigma ** 2 + Q
    cov = np.linalg.inv(P)
    mean = cov @ (A32.T @ data.astype(np.float32) / sigma ** 2)
    return post, form, mean, cov


def test_cg_solves_spd_system_and_reports_iterations():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(30, 30))
    M = B @ B.T + 30 * np.eye(30)
    b = rng.normal(size=30)
    x, k, relres = cg(lambda v: jnp.asarray(M, jnp.float32) @ v, jnp.asarray(b, jnp.float32),
                      1e-6, 100)
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-4, atol=1e-6)
    assert 0 < int(k) <= 30 and float(relres) <= 1e-6
    _, k1, r1 = cg(lambda v: jnp.asarray(M, jnp.float32) @ v, jnp.asarray(b, jnp.float32),
                   1e-12, 3)
    assert int(k1) == 3 and float(r1) > 1e-12          # stopped by maxiter, and says so


def test_dense_factor_mean_and_variance(small):
    post, form, mean, cov = small
    d = dense_factor(form)
    np.testing.assert_allclose(np.asarray(d.mean).ravel(), mean, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(d.variance()).ravel(), np.diag(cov), rtol=2e-4)
    m2, k, _ = posterior_mean(form, 1e-6, 100)
    np.testing.assert_allclose(np.asarray(m2).ravel(), mean, rtol=1e-4, atol=1e-5)


def test_perturbed_rhs_has_covariance_P(small):
    """Cov(sqrt(tau) A^T e1 + L^T e2) = P, the identity that makes PO exact."""
    _, form, _, cov = small
    P = np.linalg.inv(cov)
    keys = jax.random.split(jax.random.PRNGKey(0), 40000)
    eta = np.asarray(jax.vmap(lambda k: perturbed_rhs(form, k))(keys), np.float64)
    emp = np.cov(eta.reshape(-1, n), rowvar=False)
    # entrywise standard error of a covariance estimate: sqrt((P_ii P_jj + P_ij^2) / N)
    se = np.sqrt((np.outer(np.diag(P), np.diag(P)) + P ** 2) / len(keys))
    assert np.max(np.abs(emp - P) / se) < 5


@pytest.mark.parametrize("path", ["dense", "cg"])
def test_draws_are_exactly_the_posterior(small, path):
    """Whitened draws R^T (x - mean) are N(0, I): mean and covariance within 5 standard
    errors entrywise (20000 draws)."""
    post, form, mean, cov = small
    if path == "dense":
        d = dense_factor(form)
        x = np.asarray(d.sample(jax.random.PRNGKey(3), 20000), np.float64)
    else:
        m, _, _ = posterior_mean(form, default_tol(jnp.float32), 10 * n)
        s, params = po_sampler(form, default_tol(jnp.float32), 10 * n, m)
        keys = jax.random.split(jax.random.PRNGKey(3), 20000)
        x, info = jax.vmap(lambda k: s.step(k, m, params))(keys)
        x = np.asarray(x, np.float64)
        assert np.all(np.asarray(info.divergent) == 0)     # every solve converged
    R = np.linalg.cholesky(np.linalg.inv(cov))
    z = (x.reshape(-1, n) - mean) @ R
    N = len(z)
    assert np.max(np.abs(z.mean(0))) < 5 / np.sqrt(N)
    emp = np.cov(z, rowvar=False)
    se = np.sqrt((1 + np.eye(n)) / N)
    assert np.max(np.abs(emp - np.eye(n)) / se) < 5


def test_truncated_cg_is_flagged_not_silently_used(small):
    """maxiter far too small (as CUQIpy's default maxit=10 on CT): every draw is flagged
    as a failed solve, counted as divergence, and a warning is raised; the mean the
    draws are centred on stopped short too, and the Result says so (warning and
    ``config['mean_cg_relres'] > tol``)."""
    post, *_ = small
    with pytest.warns(RuntimeWarning) as caught:
        r = sample(post, method="rto", solver="cg", maxiter=2, num_chains=2,
                   num_samples=50, progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "divergent" in messages and "posterior mean's CG stopped" in messages
    assert r.provenance["config"]["mean_cg_relres"] > r.provenance["config"]["tol"]
    assert r.diagnostics["divergences"] == 100
    assert r.diagnostics["acceptance_rate"] == 0.0


def test_rto_std_matches_exact_and_counts_cg_iterations(small):
    post, _, mean, cov = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(post, method="rto", solver="cg", num_chains=4, num_samples=1000,
                   progress=False, seed=5)
    std = np.sqrt(np.diag(cov))
    # 4000 independent draws: std error ~ 1/sqrt(2 * 4000) = 1.1 %
    np.testing.assert_allclose(r.std.ravel(), std, rtol=0.06)
    np.testing.assert_allclose(r.mean.ravel(), mean, atol=5 * std.max() / np.sqrt(4000))
    iters = r.diagnostics["num_grad_evals"] / 4000
    assert 1 <= iters <= n + 2                  # CG on n=16 unknowns
    assert r.provenance["config"]["tol"] == default_tol(jnp.float32)


def test_float64_when_x64_enabled():
    """With jax_enable_x64 and float64 inputs the exact sampler runs in float64."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import jax; jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np
        from uqrecon.inference import sample
        from uqrecon.models import GMRF, Gaussian, Posterior
        from uqrecon.operators.matrix import MatrixOperator
        rng = np.random.default_rng(0)
        op = MatrixOperator(rng.normal(size=(20, 16)), domain_shape=(4, 4))
        post = Posterior(Gaussian(op, jnp.asarray(rng.normal(size=20)), sigma=0.5),
                         GMRF((4, 4), delta=2.0))
        r = sample(post, method="rto", solver="cg", num_chains=1, num_samples=20,
                   progress=False)
        print(r.mean.dtype, r.provenance["dtype"], r.provenance["config"]["tol"])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["float64", "float64", "1e-08"]


def test_rto_draws_have_the_exact_std_for_complex_mri_data():
    """Complex k-space data: the perturbation must carry real and imaginary noise."""
    from uqrecon import gold
    from uqrecon.inference import sample
    from uqrecon.models import GMRF, ComplexGaussian, Posterior
    from uqrecon.operators import CartesianMRI, random_line_mask

    with jax.enable_x64(True):
        mask = random_line_mask((6, 6), acceleration=2, center_fraction=0.34, seed=0)
        op = CartesianMRI(mask)
        y = op(jnp.full((6, 6), 0.5, jnp.float64))
        post = Posterior(ComplexGaussian(op, y, sigma=0.1), GMRF((6, 6), delta=5.0))
        exact = gold.exact_gaussian(post)
        r = sample(post, method="rto", num_chains=4, num_samples=1000, seed=0,
                   progress=False)
    # 4000 independent draws: the std of a std estimate is ~1.1 %; real-only noise gave 0.92
    ratio = np.asarray(r.std) / np.asarray(exact.std)
    assert abs(np.median(ratio) - 1.0) < 0.03


def _sparse_view_gmrf(size, views, delta=100.0):
    from uqrecon.operators import sparse_view
    from uqrecon.phantoms import shepp_logan
    A = sparse_view((size, size), num_angles=views)
    y = A(shepp_logan((size, size)))
    sigma = 0.01 * float(jnp.max(jnp.abs(y)))
    y = y + sigma * jax.random.normal(jax.random.PRNGKey(0), y.shape)
    return Posterior(Gaussian(A, y, sigma=sigma), GMRF((size, size), delta=delta))


def test_circulant_preconditioner_cuts_cg_iterations_on_sparse_view_ct():
    """The PO path's preconditioner (a circulant model of P from its point-spread
    function, floored at CIRCULANT_FLOOR of its maximum) must cut the CG iterations of a
    draw on sparse-view CT: measured 74 -> 40 at 32x32, 20 views. Catches a preconditioner
    that is ignored (identity: 74), and the floor of the first version (1e-3: 103
    iterations, worse than none) -- both checked."""
    from uqrecon.inference.exact import precision_symbol
    from uqrecon.linalg import circulant_solve, identity, pcg
    form = _sparse_view_gmrf(32, 20).gaussian_form()
    b = perturbed_rhs(form, jax.random.PRNGKey(1))
    plain = pcg(form.precision, b, identity, tol=1e-5, maxiter=5000)
    pre = pcg(form.precision, b, circulant_solve(precision_symbol(form)), tol=1e-5,
              maxiter=5000)
    assert float(plain.relres) <= 1e-5 and float(pre.relres) <= 1e-5
    assert int(pre.iterations) < 0.7 * int(plain.iterations), (pre.iterations,
                                                                plain.iterations)


def test_po_draws_at_the_default_tolerance_have_no_bias_above_monte_carlo_error():
    """A CG solve stopped early under-disperses a PO draw (CG from zero misses the
    slow, high-variance directions first). At the default tolerance that bias must stay
    below Monte Carlo error: the pixel-averaged variance ratio of 2000 preconditioned
    PO draws to the dense exact posterior is within 4 standard errors of 1. The standard
    error is exact for independent draws, ``sqrt(2/N * mean_pq rho_pq^2)`` from the
    posterior correlations ``rho`` (~0.5 % here), so a 10 % variance error is ~20
    standard errors: power ~1. The positive control runs the same check at ``tol=0.3``
    and must see the truncation bias (it does: the ratio falls several s.e. below 1).
    Also catches draws whose perturbation lacks a term (ratio far from 1)."""
    post = _sparse_view_gmrf(16, 12)
    dense = dense_factor(post.gaussian_form())
    n = 256
    cov = np.asarray(jnp.linalg.inv(dense.chol @ dense.chol.T), np.float64)
    var = np.diag(cov)
    rho = cov / np.sqrt(np.outer(var, var))
    N = 2000
    se = np.sqrt(2.0 / N * np.mean(rho ** 2))

    def ratio(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sample(post, method="exact", solver="cg", num_chains=4, num_samples=N // 4,
                       progress=False, seed=3, **kw)
        return float(np.mean(np.asarray(r.variance).ravel() / var))

    assert abs(ratio() - 1.0) < 4 * se, (ratio(), se)
    assert ratio(tol=0.3) < 1.0 - 4 * se

"""Low-rank Laplace approximation and the matrix-free eigensolvers behind it.

References are dense numpy computations nobody tuned: the exact posterior of a small
sparse-view CT problem with a GMRF prior (``inv(tau A^T A + Q)`` in float64) and, for a
smoothed-TV prior, the inverse of the dense Hessian from ``jax.hessian``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from uqrecon.inference.approximate import APPROXIMATIONS, approximate
from uqrecon.inference.lanczos import lanczos_eigh, randomized_eigh
from uqrecon.inference.laplace import laplace_approximation
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.operators.tomo import sparse_view
from uqrecon.phantoms import shepp_logan
from compile_count import CompileCount

SIZE = 10          # 100 pixels: full rank is cheap, the CT posterior is still correlated


@pytest.fixture
def x64():
    """Run a test in float64 (restoring the global flag afterwards)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@functools.lru_cache(maxsize=None)
def ct_matrix(size, num_angles):
    """The sparse-view ray transform as a dense float64 matrix (computed once)."""
    op = sparse_view((size, size), num_angles)
    return np.asarray(op.to_dense(jnp.float32), np.float64), tuple(op.range_shape)


def ct_posterior(dtype=np.float32, prior="gmrf", size=SIZE, num_angles=6, seed=0):
    """Sparse-view CT, modified Shepp-Logan, 2 % noise; GMRF or smoothed-TV prior.

    The ray transform enters as its system matrix (``MatrixOperator``): the same
    posterior, but compiled in a fraction of the time, which keeps the tests quick.
    """
    A, range_shape = ct_matrix(size, num_angles)
    op = MatrixOperator(A.astype(dtype), domain_shape=(size, size), range_shape=range_shape)
    truth = np.asarray(shepp_logan((size, size)), dtype)
    clean = A @ truth.astype(np.float64).ravel()
    sigma = 0.02 * np.abs(clean).max()
    data = (clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)).reshape(
        range_shape)
    lik = Gaussian(op, jnp.asarray(data, dtype), sigma)
    p = GMRF((size, size), delta=20.0) if prior == "gmrf" else TV(
        (size, size), weight=5.0).smoothed(0.05)
    return Posterior(lik, p), truth


def dense_reference(post):
    """Exact posterior mean and std in float64 from dense matrices."""
    form = post.gaussian_form()
    n = math.prod(post.shape)
    A = np.asarray(form.operator.matrix, np.float64)
    eye = np.eye(n).reshape(n, *post.shape)
    Q = np.stack([np.asarray(form.prior_precision(jnp.asarray(e, post.dtype)), np.float64)
                  .ravel() for e in eye], axis=1)
    tau = float(form.noise_precision)
    P = tau * A.T @ A + 0.5 * (Q + Q.T)
    C = np.linalg.inv(P)
    mean = C @ (tau * A.T @ np.asarray(form.data, np.float64).ravel())
    return mean.reshape(post.shape), np.sqrt(np.diag(C)).reshape(post.shape), P


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def test_full_rank_laplace_is_exact_float64(x64):
    post, _ = ct_posterior(np.float64)
    mean, std, _ = dense_reference(post)
    n = math.prod(post.shape)
    res = approximate(post, "laplace", rank=n, seed=0)
    assert res.mean.dtype == np.float64
    assert rel(res.mean, mean) < 1e-3 and rel(res.std, std) < 1e-3
    # in float64 it is exact to solver precision, far below the 1e-3 the issue asks
    assert rel(res.mean, mean) < 1e-8 and rel(res.std, std) < 1e-8


def test_full_rank_laplace_float32_within_rounding(x64):
    post64, _ = ct_posterior(np.float64)
    mean, std, _ = dense_reference(post64)
    post, _ = ct_posterior(np.float32)
    n = math.prod(post.shape)
    res = approximate(post, "laplace", rank=n, seed=0)
    assert res.mean.dtype == np.float32
    # float32: the issue's bound (the float64 test above shows the method is exact)
    print(f"\nfloat32 full rank: mean err {rel(res.mean, mean):.2e}, std err "
          f"{rel(res.std, std):.2e}")
    assert rel(res.mean, mean) < 1e-3 and rel(res.std, std) < 1e-3


def test_lowrank_laplace_converges_monotonically_with_rank():
    post, _ = ct_posterior()
    _, std, _ = dense_reference(post)
    n = math.prod(post.shape)
    ranks = [4, 24, n]
    errors, variances = [], []
    for r in ranks:
        res = approximate(post, "laplace", rank=r, seed=0)
        errors.append(rel(res.std, std))
        variances.append(res.variance)
    again = approximate(post, "laplace", rank=ranks[0], seed=0)   # same seed, same result
    assert np.array_equal(again.variance, variances[0])
    assert again.provenance["seed"] == 0 and again.provenance["method"] == "laplace"
    print("\nLaplace rank -> rel. std error:", dict(zip(ranks, np.round(errors, 5))))
    # truncating the update drops non-negative terms: variance decreases with rank
    # towards the exact one, pixel by pixel
    for lo, hi in zip(variances, variances[1:]):
        assert np.all(hi <= lo + 1e-6 * lo.max())
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[0] > 0.1 and errors[-1] < 1e-3


def test_diag_base_full_rank_equals_dense_hessian_inverse_for_tv(x64):
    """Smoothed TV has no prior covariance: the 'diag' base with the exact Hessian at
    full rank must give diag(H^-1) at the given point."""
    post, truth = ct_posterior(np.float64, prior="tv")
    assert post.gaussian_form() is None
    x = jnp.asarray(truth)
    n = math.prod(post.shape)
    H = np.asarray(jax.hessian(lambda v: post.smooth_potential(v.reshape(post.shape)))(
        x.ravel()))
    std_ref = np.sqrt(np.diag(np.linalg.inv(H)))
    res = approximate(post, "laplace", rank=n, mode=x, hessian="exact", seed=0)
    assert res.provenance["config"]["preconditioner"] == "diag"
    assert np.array_equal(res.mean, truth)
    assert rel(res.std, std_ref) < 1e-8
    # and the covariance it carries is the whole inverse Hessian
    assert np.allclose(res.gaussian["cov"], np.linalg.inv(H), atol=1e-10 * np.abs(H).max())


def test_diag_base_carries_its_factors_above_dense_max(x64):
    """Above ``dense_max`` the 'diag' base still puts its Gaussian factors in the Result
    (``UpdatedDiagonalGaussian``: ``D^{-1} - V diag(1 - 1/theta) V^T``), the same
    approximation whose dense covariance a run below ``dense_max`` carries: covariance
    and variances agree, and ``Result.sample`` draws from it. Catches factors packed
    with the wrong sign of the update or ``theta`` in place of ``1 - 1/theta`` (the
    covariance check), or none at all (as before: ``Result.sample`` raised)."""
    post, truth = ct_posterior(np.float64, prior="tv")
    n = math.prod(post.shape)
    opts = dict(rank=20, mode=jnp.asarray(truth), hessian="exact", seed=0)
    small = approximate(post, "laplace", **opts)
    big = approximate(post, "laplace", dense_max=n - 1, **opts)
    assert small.gaussian.kind == "dense" and big.gaussian.kind == "diag_update"
    cov = np.asarray(small.gaussian["cov"], np.float64)
    assert np.allclose(big.gaussian.covariance(), cov, atol=1e-9 * np.abs(cov).max())
    assert rel(big.variance, small.variance) < 1e-9
    draws = big.sample(jax.random.PRNGKey(2), 3)
    assert draws.shape == (3, *post.shape) and np.all(np.isfinite(draws))


def test_sampled_variances_respect_their_stated_error():
    """Above dense_max the pixel variances are sampled; check the stated error bound
    against the exact variances of the same factored approximation."""
    post, _ = ct_posterior()
    n = math.prod(post.shape)
    key = jax.random.PRNGKey(0)
    sampled = approximate(post, "laplace", rank=40, key=key, dense_max=n - 1,
                          num_variance_samples=400)
    approx, _ = laplace_approximation(post, key, rank=40, dense_max=n - 1)
    assert sampled.gaussian is None and approx.base_variance is None
    _, _, P = dense_reference(post)
    form = post.gaussian_form()
    A = np.asarray(form.operator.matrix, np.float64)
    prior_cov = np.linalg.inv(P - float(form.noise_precision) * A.T @ A)
    V, theta = np.asarray(approx.vectors, np.float64), np.asarray(approx.theta, np.float64)
    exact_var = np.diag(prior_cov) - np.sum(V ** 2 * (1 - 1 / theta), axis=1)
    se = sampled.diagnostics["variance_rel_se"]
    assert se == pytest.approx(math.sqrt(2 / 400))
    ratio = sampled.variance.ravel() / exact_var
    within = np.mean(np.abs(ratio - 1) < 3 * se)
    print(f"\nsampled/exact variance: median {np.median(ratio):.3f}, "
          f"{within:.1%} of pixels within 3 stated SE")
    assert within > 0.95


def test_factored_draws_have_the_approximate_covariance(x64):
    post, _ = ct_posterior(np.float64)
    approx, _ = laplace_approximation(post, jax.random.PRNGKey(0), rank=20)
    draws = np.asarray(approx.sample(jax.random.PRNGKey(1), 4000))
    emp = np.var(draws, axis=0)
    exact_var = np.asarray(approx.variance())
    # per-pixel relative SE of a variance from 4000 Gaussian draws is sqrt(2/4000) = 2.2 %
    assert np.mean(np.abs(emp / exact_var - 1) < 3 * math.sqrt(2 / 4000)) > 0.95


def test_both_eigensolvers_reach_the_optimal_truncation():
    """Rank-30 update vs the optimal one from scipy's dense generalized eigh(H, Q)."""
    post, _ = ct_posterior()
    _, std, P = dense_reference(post)
    form = post.gaussian_form()
    A = np.asarray(form.operator.matrix, np.float64)
    H = float(form.noise_precision) * A.T @ A
    Q = P - H
    lam, V = scipy.linalg.eigh(H, Q)
    lam, V = lam[::-1][:30], V[:, ::-1][:, :30]
    opt = np.sqrt(np.diag(np.linalg.inv(Q)) - np.sum(V ** 2 * lam / (1 + lam), axis=1))
    for solver in ("lanczos", "randomized"):
        res = approximate(post, "laplace", rank=30, solver=solver, seed=0)
        print(f"\n{solver}: rel. std difference to the optimal rank-30 update "
              f"{rel(res.std, opt):.4f} (truncation error itself {rel(opt, std):.3f})")
        assert rel(res.std, opt) < 0.05


def test_lanczos_and_randomized_generalized_eigenpairs(x64):
    rng = np.random.default_rng(0)
    n = 40
    G = rng.normal(size=(n, n))
    H = G @ G.T / n
    B = rng.normal(size=(n, n))
    M = B @ B.T / n + np.eye(n)
    w_ref = scipy.linalg.eigh(H, M, eigvals_only=True)[::-1]
    Hj, Mj = jnp.asarray(H), jnp.asarray(M)
    Minv = jnp.linalg.inv(Mj)
    kw = dict(mass=lambda v: Mj @ v, mass_solve=lambda v: Minv @ v)
    lz = lanczos_eigh(lambda v: Hj @ v, jnp.ones(n), n, **kw)
    rz = randomized_eigh(lambda v: Hj @ v, jax.random.PRNGKey(0), n, n, dtype=jnp.float64,
                         **kw)
    for e in (lz, rz):
        assert np.allclose(np.asarray(e.values), w_ref, atol=1e-10)
        V = np.asarray(e.vectors)
        assert np.allclose(V.T @ M @ V, np.eye(n), atol=1e-10)
        assert np.allclose(H @ V, M @ V * np.asarray(e.values), atol=1e-9)


def test_bad_input_is_rejected_with_named_arguments():
    post, truth = ct_posterior()
    tv_post, _ = ct_posterior(prior="tv")
    with pytest.raises(ValueError, match="'method'.*laplace.*lowrank.*meanfield"):
        approximate(post, "nuts")
    assert sorted(APPROXIMATIONS) == ["laplace", "lowrank", "meanfield"]
    with pytest.raises(ValueError, match="'rank'"):
        approximate(post, "laplace", rank=0)
    with pytest.raises(ValueError, match="'preconditioner'"):
        approximate(post, "laplace", preconditioner="chol")
    with pytest.raises(ValueError, match="preconditioner='prior'"):
        approximate(tv_post, "laplace", preconditioner="prior", mode=truth)
    with pytest.raises(ValueError, match="'mode'"):
        approximate(post, "laplace", mode=np.zeros(5))
    with pytest.raises(TypeError, match="'seed'"):
        approximate(post, "laplace", seed=1.5)
    nonsmooth = Posterior(post.likelihood, TV(post.shape))
    with pytest.raises(ValueError, match="'posterior'.*non-smooth"):
        approximate(nonsmooth, "laplace")


# -- compiled once, products counted, rank chosen by a rule ---------------------------
@pytest.mark.parametrize("prior,config", [
    ("gmrf", {"rank": "auto", "dense_max": 50}),   # CG base, Lanczos grown, sampled var.
    ("tv", {"rank": 20}),                          # diag base, MAP by L-BFGS
])
def test_second_call_on_a_same_shaped_posterior_compiles_nothing(prior, config):
    first, _ = ct_posterior(prior=prior, seed=0)
    second, _ = ct_posterior(prior=prior, seed=1)     # other data, same shapes
    with CompileCount() as c1:
        r1 = approximate(first, "laplace", seed=0, **config)
    with CompileCount() as c2:
        r2 = approximate(second, "laplace", seed=0, **config)
    assert len(c1.names) > 0 and c2.names == [], (len(c1.names), c2.names)
    assert not np.array_equal(r1.mean, r2.mean)


def _counting_posterior(prior, dtype=np.float32):
    """The test posterior with a forward operator that counts its applications on the
    host (one per gradient or Gauss-Newton product), through a debug callback."""
    from uqrecon.operators.base import operator_dataclass

    calls = []

    @operator_dataclass
    class Counting(MatrixOperator):
        def _apply(self, x):
            jax.debug.callback(lambda v: calls.append(v.size // x.size), x)
            return super()._apply(x)

    post, _ = ct_posterior(dtype, prior=prior)
    A = post.likelihood.operator
    op = Counting(A.matrix, domain_shape=A.domain_shape, range_shape=A.range_shape)
    lik = Gaussian(op, post.likelihood.data, post.likelihood.sigma)
    return Posterior(lik, post.priors[0]), calls


@pytest.mark.parametrize("prior,config", [
    ("gmrf", {"rank": 20, "dense_max": 50}),                        # CG mode + Lanczos
    ("tv", {"rank": 20, "solver": "randomized"}),  # L-BFGS MAP + diagonal probes
])
def test_num_grad_evals_counts_the_forward_operator_applications(prior, config):
    post, calls = _counting_posterior(prior)
    res = approximate(post, "laplace", seed=0, **config)
    d = res.diagnostics
    counted = sum(calls)
    # map_estimate evaluates the potential once more for its report (not a gradient)
    extra = 1 if prior == "tv" else 0
    print(f"\n{prior} {config}: counted {counted}, reported {d['num_grad_evals']} "
          f"(mode {d['num_grad_evals_mode']}, HVPs {d['num_hvp']})")
    assert d["num_grad_evals"] == counted - extra
    assert d["num_grad_evals_mode"] > 0 and d["num_hvp"] > 0


def _prior_pencil(post):
    """Exact eigenvalues of (tau A^T A, Q) and the exact prior and posterior covariance."""
    _, _, P = dense_reference(post)
    form = post.gaussian_form()
    A = np.asarray(form.operator.matrix, np.float64)
    H = float(form.noise_precision) * A.T @ A
    Q = P - H
    lam = scipy.linalg.eigh(H, Q, eigvals_only=True)[::-1]
    return lam, np.linalg.inv(Q), np.linalg.inv(P)


def test_rank_auto_keeps_the_pairs_above_the_threshold_and_its_bound_holds(x64):
    """Dense path (n = 100): the whole spectrum is known, so the rule must keep exactly
    the pairs with lambda / (1 + lambda) >= rank_tol, and every pixel variance must lie
    in [exact, exact / (1 - largest dropped departure)]."""
    post, _ = ct_posterior(np.float64)
    lam, _, post_cov = _prior_pencil(post)
    dep = lam / (1 + lam)
    for tol in (0.1, 0.02):
        res = approximate(post, "laplace", rank="auto", rank_tol=tol, seed=0)
        d = res.diagnostics
        assert d["rank"] == int(np.sum(dep >= tol))
        assert d["rank_rule"]["criterion_met"]
        bound = d["truncation"]["variance_ratio_bound"]
        assert d["truncation"]["departure"] == pytest.approx(dep[d["rank"]], rel=1e-6)
        ratio = res.variance.ravel() / np.diag(post_cov)
        print(f"\nrank_tol {tol}: rank {d['rank']}, variance ratio in "
              f"[{ratio.min():.4f}, {ratio.max():.4f}], bound {bound:.4f}")
        assert ratio.min() >= 1 - 1e-8 and ratio.max() <= bound * (1 + 1e-8)


def test_rank_auto_with_lanczos_in_the_prior_inner_product(x64):
    """Matrix-free path (CG base): Lanczos grows until the Ritz values with their residual
    bounds sit clearly on one side of the threshold; the rank found must match the exact
    count, and the factored approximation must satisfy the stated variance bound."""
    post, _ = ct_posterior(np.float64)
    lam, prior_cov, post_cov = _prior_pencil(post)
    n = math.prod(post.shape)
    key = jax.random.PRNGKey(0)
    approx, info = laplace_approximation(post, key, rank="auto", rank_tol=0.1,
                                         dense_max=n - 1)
    rule = info["rank_rule"]
    rank = int(approx.theta.shape[0])
    exact_rank = int(np.sum(lam / (1 + lam) >= 0.1))
    V, theta = np.asarray(approx.vectors, np.float64), np.asarray(approx.theta, np.float64)
    var = np.diag(prior_cov) - np.sum(V ** 2 * (1 - 1 / theta), axis=1)
    ratio = var / np.diag(post_cov)
    bound = info["truncation"]["variance_ratio_bound"]
    print(f"\nLanczos auto: rank {rank} (exact count {exact_rank}), steps {rule['steps']}, "
          f"ratio <= {ratio.max():.4f}, stated bound {bound:.4f}")
    assert rule["criterion_met"] and rule["stopped_by"] == "criterion"
    assert abs(rank - exact_rank) <= 1
    # the bound uses the first dropped Ritz value, accurate to its residual (float64)
    assert ratio.min() >= 1 - 1e-6 and ratio.max() <= bound + 1e-6

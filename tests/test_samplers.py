"""Samplers against exact answers: a 16x16 sparse-view CT posterior with a GMRF prior
whose mean and covariance are computed in float64 numpy (independent of the samplers),
closed-form stationary laws of the unadjusted schemes, and bad input."""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from uqrecon.inference import METHODS, sample
from uqrecon.inference.samplers import hmc as _hmc_mod
from uqrecon.inference.samplers.langevin import ula
from uqrecon.inference.samplers.proximal import Box, myula, skrock, skrock_max_step
from uqrecon.inference.runner import run_chains
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view
from ct_gmrf import ct_gmrf
from mc_error import zscores
from std_normal import StdNormal

N = 16


class _Linear(NamedTuple):
    """A Gaussian target given by its potential's gradient ``lam * (x - mu)``."""

    lam: jax.Array
    mu: jax.Array = 0.0

    def grad_smooth_potential(self, x):
        return self.lam * (x - self.mu)


class _Quadratic(NamedTuple):
    """``u -> u^T H u / 2`` as a pytree callable (what lowrank_preconditioner takes)."""

    H: jax.Array

    def __call__(self, u):
        return 0.5 * u @ (self.H @ u)


@pytest.fixture(scope="module")
def ct():
    """16x16, 12 angles: the cheap posterior for behaviour tests."""
    return ct_gmrf(N, 12)


@pytest.fixture(scope="module")
def ct32():
    """32x32, 20 angles (cond(P) ~ 1e4): the correctness posterior for exact methods."""
    return ct_gmrf(32, 20)


@pytest.mark.parametrize("method,kwargs", [
    ("nuts", dict(num_warmup=150, num_samples=300)),
    ("hmc", dict(num_warmup=150, num_samples=300)),
    ("mala", dict(num_warmup=300, num_samples=4000, thin=8)),
    ("gibbs", dict(num_warmup=20, num_samples=200)),
    ("exact", dict(num_samples=500)),
    ("rto", dict(num_samples=150, solver="cg")),
])
def test_exact_methods_match_exact_posterior(ct32, method, kwargs):
    """32x32 CT: mean and pixel std within 4 Monte Carlo standard errors (from the ESS) for
    >= 99 % of pixels; the MC error itself is small (ESS >= 100 per pixel)."""
    post, mean, std = ct32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # R-hat noise at these short runs is not tested here
        r = sample(post, method=method, num_chains=4, seed=1, progress=False, **kwargs)
    assert r.mean.shape == mean.shape and r.draws.shape[0] == 4
    assert r.diagnostics["ess_bulk"].min() >= 100
    z_mean, z_std = zscores(r, mean, std)
    assert np.mean(z_mean <= 4) >= 0.99, (method, np.sort(z_mean.ravel())[-5:])
    assert np.mean(z_std <= 4) >= 0.99, (method, np.sort(z_std.ravel())[-5:])
    assert r.diagnostics["divergences"] == 0
    assert r.provenance["method"] == method and r.provenance["seed"] == 1


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_preconditioner_beats_identity_per_gradient(ct, method):
    """The Hessian preconditioner gives more ESS per gradient evaluation than none (HMC:
    quarter-period path when whitened, 1..31 steps without)."""
    post, _, _ = ct
    out = {}
    for pc in ("dense", "identity"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sample(post, method=method, num_chains=2, num_warmup=100, num_samples=200,
                       preconditioner=pc, progress=False)
        out[pc] = np.median(r.diagnostics["ess_bulk"]) / r.diagnostics["num_grad_evals"]
    # this 16x16 posterior is only mildly ill-conditioned (cond(P) ~ 560). Measured
    # dense/identity: NUTS 7.1x (15 vs 63 leapfrog steps per draw), HMC 13x
    assert out["dense"] > 3 * out["identity"], out


def test_ula_stationary_variance_matches_closed_form():
    """ULA on N(0, 1/lam): stationary variance 1 / (lam (1 - h lam / 2)) (biased, exact)."""
    lam = jnp.asarray(np.linspace(0.5, 4.0, 8), jnp.float32)
    h = 0.3
    s = ula(_Linear(lam), h)
    out = run_chains(*s, jnp.zeros((4, 8)), jax.random.PRNGKey(0), num_warmup=100,
                     num_samples=20000, keep_draws=False, progress=False)
    expected = 1.0 / (lam * (1 - h * lam / 2))
    # ~80000 strongly correlated iterations: a few per cent Monte Carlo error
    np.testing.assert_allclose(out.variance, expected, rtol=0.06)
    # and distinguishable from the exact variance for the stiffest components
    assert np.all(out.variance[-3:] > 1.3 / np.asarray(lam[-3:]))


def test_skrock_stability_polynomial_is_shifted_chebyshev():
    """For a linear drift ``-lam x`` one SK-ROCK step multiplies x by
    ``T_s(w0 - w1 z) / T_s(w0)`` with ``z = h lam`` (Abdulle's damped Chebyshev
    polynomial), and stays stable up to the documented step."""
    s, eta = 7, 0.05
    w0 = 1 + eta / s ** 2
    cheb = np.polynomial.chebyshev.Chebyshev.basis(s)
    w1 = cheb(w0) / cheb.deriv()(w0)
    lmax = skrock_max_step(1.0, s, eta)
    z = np.linspace(0.0, lmax, 50)
    gains = []
    for zz in z:
        k, params = skrock(_Linear(jnp.float32(zz)), (), 1.0, 1.0, stages=s, eta=eta)
        # start far out so the O(1) noise term is negligible against the drift
        x1, _ = jax.jit(k.step)(jax.random.PRNGKey(0), jnp.asarray([1e6], jnp.float32),
                                params)
        gains.append(float(x1[0]) / 1e6)
    expected = cheb(w0 - w1 * z) / cheb(w0)
    np.testing.assert_allclose(gains, expected, atol=1e-4)
    # skrock_max_step stays inside the polynomial's stability region
    assert np.all(np.abs(expected) < 1.0 + 1e-9)


def test_myula_box_bias_shrinks_like_sqrt_lambda():
    """MYULA with a box prox on N(mu, 1) truncated to x >= 0: the error of the mean
    against the closed-form truncated-normal mean shrinks like sqrt(lambda) (the Moreau
    envelope of the indicator leaks mass a distance ~sqrt(lambda) past the boundary)."""
    mu = jnp.asarray(np.linspace(-1.0, 1.0, 16), jnp.float32)
    alpha = -np.asarray(mu, np.float64)
    exact = np.asarray(mu) + stats.norm.pdf(alpha) / stats.norm.sf(alpha)
    errs = []
    for lam in (0.5, 0.05):
        step = 1.0 / (1.0 + 1.0 / lam)
        s = myula(_Linear(jnp.float32(1.0), mu), (Box(jnp.float32(0.0), jnp.float32(jnp.inf)),),
                  lam, step)
        out = run_chains(*s, jnp.ones((4, 16)), jax.random.PRNGKey(1), num_warmup=200,
                         num_samples=20000, keep_draws=False, progress=False)
        errs.append(np.abs(out.mean - exact).max())
    ratio = errs[1] / errs[0]
    assert 0.2 < ratio < 0.45, (errs, ratio, "expected ~ sqrt(0.1) = 0.32")


@pytest.fixture(scope="module")
def ct_noisy():
    """The CT problem at 10 % noise (better conditioned, so short unadjusted runs mix);
    returns the posterior and its exact precision matrix and mean (f64)."""
    op = sparse_view((N, N), 12)
    A = np.asarray(op.to_dense(), np.float64)
    rng = np.random.default_rng(3)
    clean = A @ rng.uniform(size=N * N)
    sigma = 0.1 * float(np.abs(clean).max())
    data = (clean + sigma * rng.normal(size=clean.shape)).reshape(op.range_shape)
    post = Posterior(Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma),
                     GMRF((N, N), delta=10.0))
    n = N * N
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, N, N)
    Q = np.asarray(jax.vmap(post.gaussian_form().prior_precision)(eye), np.float64)
    P = A.T @ A / sigma ** 2 + Q.reshape(n, n)
    return post, P, np.linalg.solve(P, A.T @ data.ravel() / sigma ** 2)


def test_ula_on_posterior_matches_its_biased_closed_form(ct_noisy):
    """ULA on N(m, P^{-1}) with step h is stationary at N(m, (P - h P^2 / 2)^{-1}); its
    pixel std matches that and its distance to the exact std shrinks with h (~h)."""
    post, P, m = ct_noisy
    L = float(np.linalg.eigvalsh(P)[-1])
    err_exact = []
    std_exact = np.sqrt(np.diag(np.linalg.inv(P)))
    for frac in (1.0, 0.5):
        h = frac / L
        std_h = np.sqrt(np.diag(np.linalg.inv(P - h * P @ P / 2)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sample(post, method="ula", step_size=h, num_chains=4, num_warmup=1000,
                       num_samples=6000, thin=20, seed=2, progress=False)
        std = r.std.ravel()
        assert np.linalg.norm(std - std_h) / np.linalg.norm(std_h) < 0.04
        np.testing.assert_allclose(r.mean.ravel(), m, atol=0.3 * std_exact.max())
        err_exact.append(np.linalg.norm(std - std_exact) / np.linalg.norm(std_exact))
    assert err_exact[1] < 0.75 * err_exact[0], err_exact


def test_skrock_std_bias_shrinks_with_step(ct_noisy):
    """SK-ROCK's std error against the exact posterior shrinks with the step."""
    post, P, _ = ct_noisy
    std_exact = np.sqrt(np.diag(np.linalg.inv(P)))
    errs = []
    for frac in (0.9, 0.2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sample(post, method="skrock", step_fraction=frac, num_chains=4,
                       num_warmup=200, num_samples=2000, thin=10, seed=2, progress=False)
        errs.append(np.linalg.norm(r.std.ravel() - std_exact) / np.linalg.norm(std_exact))
    assert errs[1] < 0.6 * errs[0], errs


def test_myula_and_skrock_run_on_tv_posterior(ct):
    """Non-smooth TV prior with a box: proximal samplers run, stay finite, and either stay
    in range or say they have not converged.

    The second clause is there because SK-ROCK can leave the box and stay out: with the
    tests' XLA flags (conftest), seed 0's second chain sits at 1.43 in one pixel for all
    200 draws although every gradient term points back (box 6,745, likelihood 134, TV 17),
    a spurious fixed point of the stabilised stages on the kinked Moreau-Yosida box
    penalty (its mean reaches 1.215). Such a run must report R-hat far above 1.01, and it
    does (1.85). Would catch: a sampler that leaves the range silently, non-finite
    draws, a dropped box term."""
    post, _, _ = ct
    tv = Posterior(post.likelihood, TV((N, N), 5.0))
    for method in ("myula", "skrock"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = sample(tv, method=method, num_chains=2, num_warmup=100, num_samples=200,
                       box=(0.0, 1.0), progress=False)
        assert np.all(np.isfinite(r.mean)) and np.all(r.std > 0)
        in_range = r.mean.min() > -0.2 and r.mean.max() < 1.2
        flagged = (float(np.max(r.diagnostics["rhat"])) > 1.1
                   and any("R-hat" in str(w.message) for w in caught))
        assert in_range or flagged, (method, r.mean.min(), r.mean.max())
        assert r.provenance["config"]["num_prox_terms"] == 2


def test_bad_input_errors(ct):
    post, _, _ = ct
    with pytest.raises(ValueError, match="valid names"):
        sample(post, method="gibs")
    tv = Posterior(post.likelihood, TV((N, N), 5.0))
    for m in ("nuts", "hmc", "mala"):
        with pytest.raises(ValueError, match="myula"):
            sample(tv, method=m, progress=False)
    with pytest.raises(ValueError, match="linear-Gaussian"):
        sample(tv, method="exact", progress=False)
    with pytest.raises(TypeError, match="unknown options"):
        sample(post, method="exact", num_samples=10, progress=False, stepsize=0.1)
    with pytest.raises(TypeError, match="num_chains"):
        sample(post, method="exact", num_chains=2.5)
    with pytest.raises(ValueError, match="preconditioner"):
        sample(post, method="nuts", preconditioner="diag", progress=False)
    assert set(METHODS) >= {"nuts", "hmc", "ula", "mala", "myula", "skrock", "gibbs",
                            "exact", "rto"}


@pytest.mark.parametrize("method,option", [
    ("exact", {"tol": 0.0}), ("exact", {"tol": -1.0}), ("exact", {"maxiter": 0}),
    ("rto", {"solver": "cg", "tol": -1.0}), ("rto", {"solver": "cg", "maxiter": 0}),
    ("gibbs", {"tol": -1.0}), ("gibbs", {"maxiter": 0}),
    ("skrock", {"eta": -1.0}), ("skrock", {"eta": 0.0}), ("skrock", {"stages": 0}),
    ("skrock", {"stages": 1}), ("skrock", {"lam": -1.0}), ("myula", {"lam": -1.0}),
    ("myula", {"lam": 0.0}), ("myula", {"step_fraction": 0.0}),
    ("skrock", {"step_fraction": -0.5}),
    ("mala", {"target_acceptance": 1.5}), ("mala", {"target_acceptance": 0.0}),
    ("nuts", {"target_acceptance": 1.0}), ("hmc", {"target_acceptance": -0.2}),
    ("nuts", {"max_num_doublings": 0}), ("nuts", {"step_size_jitter": 1.0}),
    ("hmc", {"num_integration_steps": 0}), ("hmc", {"path_length": 0.0}),
    ("hmc", {"path_length": -1.0}), ("nuts", {"preconditioner": "lowrank", "rank": 0}),
    ("mala", {"rank": 0}), ("ula", {"init_jitter": -0.1}), ("myula", {"init_jitter": -1.0}),
    ("nuts", {"init_jitter": -1.0}), ("gibbs", {"init_jitter": -1.0}),
    ("exact", {"init_jitter": -1.0}), ("ula", {"step_size": -1.0}),
])
def test_invalid_options_raise_before_any_work(ct, monkeypatch, method, option):
    """Every invalid option is a ValueError naming it (issue 11 item 7: before, e.g.
    eta=-1 gave means ~1e8, tol=-1 a zero std, max_num_doublings=0 a bare IndexError),
    raised before any expensive set-up: the reference image, preconditioner, Lipschitz
    constant, dense factor, CG mean and starting points are patched to fail loudly, so a
    check placed after them (or missing) fails this test."""
    import importlib
    common = importlib.import_module("uqrecon.inference.methods.common")
    exact = importlib.import_module("uqrecon.inference.exact")
    post, _, _ = ct

    def expensive(*a, **k):
        raise AssertionError("expensive set-up ran before the options were validated")

    for name in ("reference_image", "lipschitz", "preconditioner", "init_positions",
                 "init_in_z"):
        monkeypatch.setattr(common, name, expensive)
    monkeypatch.setattr(exact, "dense_factor", expensive)
    monkeypatch.setattr(exact, "posterior_mean", expensive)
    name = next(k for k in option if k not in ("solver", "preconditioner"))
    with pytest.raises(ValueError, match=f"'{name}'"):
        sample(post, method=method, num_chains=2, num_samples=10, progress=False, **option)


def test_nonfinite_chains_are_reported(ct):
    """A step far past the stability bound blows up: an error, never a silent average."""
    post, _, _ = ct
    with pytest.raises(FloatingPointError, match="non-finite"):
        sample(post, method="ula", step_size=50.0 / float(post.lipschitz()), num_chains=2,
               num_warmup=0, num_samples=200, progress=False)


def test_lowrank_preconditioner_whitens_the_stiff_subspace():
    """On H with a few stiff and many soft directions, Lanczos captures the stiff ones:
    C^T H C has its largest eigenvalue ~1 (was 1e4) and C is invertible (inverse exact)."""
    from uqrecon.inference.samplers.hmc import lowrank_preconditioner
    rng = np.random.default_rng(0)
    n = 100
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    spec = np.concatenate([np.geomspace(1e4, 1e2, 10), np.linspace(1.0, 2.0, n - 10)])
    H = jnp.asarray((U * spec) @ U.T, jnp.float32)
    pc = lowrank_preconditioner(_Quadratic(H), jnp.zeros(n), jax.random.PRNGKey(0), rank=30)
    C = np.asarray(jax.vmap(pc, in_axes=1, out_axes=1)(jnp.eye(n)), np.float64)
    ev = np.linalg.eigvalsh(C.T @ np.asarray(H, np.float64) @ C)
    assert ev.max() < 1.5 and ev.max() / ev.min() < 10, (ev.min(), ev.max())
    z = jnp.asarray(rng.normal(size=n), jnp.float32)
    np.testing.assert_allclose(pc.inverse(pc(z)), z, rtol=1e-3, atol=1e-3)


def test_nuts_lowrank_on_ct_posterior(ct):
    """NUTS with the Lanczos low-rank preconditioner also matches the exact posterior."""
    post, mean, std = ct
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(post, method="nuts", preconditioner="lowrank", rank=48, num_chains=4,
                   num_warmup=200, num_samples=300, seed=4, progress=False)
    assert r.provenance["config"]["lowrank_kept"] > 0
    z_mean, z_std = zscores(r, mean, std)
    assert np.mean(z_mean <= 4) >= 0.99 and np.mean(z_std <= 4) >= 0.99


def test_no_warmup_keeps_the_given_step_size():
    """num_warmup=0 must not replace the user's step size by an unadapted average."""
    from uqrecon.models import GMRF, Gaussian, Posterior
    from uqrecon.operators import MatrixOperator
    A = MatrixOperator(np.random.default_rng(0).standard_normal((20, 16)), domain_shape=(4, 4))
    post = Posterior(Gaussian(A, A(jnp.ones((4, 4))), sigma=0.1), GMRF((4, 4), delta=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(post, method="mala", num_chains=2, num_samples=20, num_warmup=0, seed=0,
                   progress=False, step_size=1e-5, preconditioner="identity")
    np.testing.assert_allclose(r.diagnostics["step_size"], 1e-5, rtol=1e-6)
    assert r.diagnostics["acceptance_rate"] > 0.9


def test_dense_preconditioner_handles_an_indefinite_hessian():
    """Away from the mode a Hessian can be indefinite: Cholesky fails, and the whitening
    falls back to |H| (SoftAbs): C^T |H| C = I, the map is invertible, curvature scales
    are kept (no silent identity)."""
    from uqrecon.inference.samplers.hmc import dense_preconditioner
    rng = np.random.default_rng(3)
    n = 40
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    spec = np.concatenate([-np.geomspace(50.0, 1.0, 5), np.geomspace(1.0, 1e4, n - 5)])
    H = (U * spec) @ U.T
    pc = dense_preconditioner(jnp.asarray(H, jnp.float64 if jax.config.jax_enable_x64
                                          else jnp.float32), jnp.zeros(n))
    C = np.asarray(pc.factor, np.float64)
    absH = (U * np.abs(spec)) @ U.T
    np.testing.assert_allclose(C.T @ absH @ C, np.eye(n), atol=2e-3)
    z = jnp.asarray(rng.normal(size=n), jnp.float32)
    np.testing.assert_allclose(pc.inverse(pc(z)), z, rtol=1e-3, atol=1e-3)


def test_nuts_on_a_constrained_posterior_starts_at_the_unconstrained_mode():
    """Non-negativity (softplus change of variables) + GMRF: NUTS builds its dense
    preconditioner at the L-BFGS mode of the unconstrained potential, where the Hessian is
    positive definite, counts those gradients as set-up, and samples without divergences;
    its mean agrees with MALA's on the same posterior within Monte Carlo error."""
    from uqrecon.inference.methods import common
    from uqrecon.models.constraints import NonNegative
    n = 10
    op = sparse_view((n, n), 8)
    g = np.linspace(-1, 1, n)
    X, Y = np.meshgrid(g, g, indexing="ij")
    truth = (((X ** 2 + Y ** 2) < 0.4) * 1.0).astype(np.float32)
    clean = np.asarray(op(jnp.asarray(truth)))
    sigma = 0.05 * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(0).normal(size=clean.shape)
    post = Posterior(Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma),
                     [GMRF((n, n), delta=2.0), NonNegative((n, n))])
    u, evals = common.unconstrained_mode(post, jnp.zeros((n, n)))
    grad = jax.grad(post.logdensity_unconstrained)(u)
    assert float(jnp.linalg.norm(grad)) < 1e-2 * float(
        jnp.linalg.norm(jax.grad(post.logdensity_unconstrained)(jnp.zeros((n, n)))))
    assert np.linalg.eigvalsh(np.asarray(common.unconstrained_hessian(post, u)))[0] > 0
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, kw in (("nuts", {}), ("mala", dict(thin=2))):
            out[m] = sample(post, method=m, num_chains=4, num_warmup=200, num_samples=400,
                            seed=5, progress=False, **kw)
    r = out["nuts"]
    assert r.diagnostics["divergences"] == 0
    assert r.diagnostics["num_grad_evals_setup"] >= int(evals) > 1
    se = np.sqrt(r.std ** 2 / r.diagnostics["ess_bulk"]
                 + out["mala"].std ** 2 / out["mala"].diagnostics["ess_bulk"])
    assert np.mean(np.abs(r.mean - out["mala"].mean) <= 4 * se) >= 0.98


def test_upper_triangular_blocks_match_the_dense_product():
    """The blocked whitening factor (non-zero blocks only) is the same linear map as the
    dense upper-triangular matrix, for sizes not divisible by the block count, and under
    vmap and grad."""
    from uqrecon.inference.samplers.hmc import UpperTriangular
    for n in (200, 203):
        M = jnp.triu(jax.random.normal(jax.random.PRNGKey(n), (n, n))) / np.sqrt(n)
        U = UpperTriangular.from_dense(M)
        assert U.blocks.shape[0] == 36          # 8 x 8 grid, upper half
        V = jax.random.normal(jax.random.PRNGKey(1), (3, n))
        np.testing.assert_allclose(jax.vmap(lambda v: U @ v)(V), V @ M.T, atol=2e-5)
        g = jax.grad(lambda v: jnp.sum(jnp.sin(U @ v)))(V[0])
        np.testing.assert_allclose(g, M.T @ jnp.cos(M @ V[0]), atol=2e-5)


@jax.jit
def _hmc_steps_of_chains(keys, states, params):
    """One HMC transition of every chain (vmapped, as the runner's vectorised mode)."""
    return jax.vmap(_hmc_mod.HMC.step, in_axes=(0, 0, None))(keys, states, params)


@pytest.mark.parametrize("path_length", [None, 1.3])
def test_hmc_chains_share_the_halton_trajectory_length(path_length):
    """Every chain takes the same number of leapfrog steps at an iteration, the number
    the Halton rule gives (``ceil(T (1/2 + h_i) / eps)``, or ``ceil(h_i (2L - 1))``
    without a path), with ``h_i`` the van der Corput point of ``i + 1``, computed here
    by reversing the bits in numpy. Vmapped chains run in lockstep, so a per-chain jitter
    would make every iteration cost the longest chain's trajectory. Catches: a jitter
    drawn from each chain's key (the previous rule: steps differ between chains), a
    Halton index that does not advance (steps constant over iterations) or starts
    elsewhere, and a wrong scale of the trajectory."""
    chains, iters, L, eps = 8, 12, 5, 0.25
    sampler, params = _hmc_mod.hmc(StdNormal(jnp.ones(6)), num_integration_steps=L,
                                   initial_step_size=eps, path_length=path_length)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (chains, 6))
    states = jax.vmap(sampler.init, in_axes=(0, 0, None))(
        jax.random.split(jax.random.PRNGKey(1), chains), x0, params)
    states = jax.vmap(sampler.finish_warmup, in_axes=(0, None))(states, params)
    steps = []
    for i in range(iters):
        keys = jax.random.split(jax.random.PRNGKey(100 + i), chains)
        states, info = _hmc_steps_of_chains(keys, states, params)
        steps.append(np.asarray(info.num_grad_evals))
    steps = np.stack(steps)                                  # (iters, chains)
    h = np.array([int(format(i + 1, "020b")[::-1], 2) / 2 ** 20 for i in range(iters)])
    if path_length is None:
        expect = np.ceil(h * (2 * L - 1))
    else:
        expect = np.minimum(np.ceil(path_length * (0.5 + h) / eps), 1024)
    assert np.all(steps == steps[:, :1])                     # shared by the chains
    np.testing.assert_array_equal(steps[:, 0], expect.astype(int))
    assert len(np.unique(steps[:, 0])) >= 4                  # and jittered over time

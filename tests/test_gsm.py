"""The exact TV / l1-wavelet sampler (``method="gsm"``) against references no one tuned.

* Its random variates and preconditioner pieces against closed forms.
* Its draws against an *independent* long NUTS run (numpyro, float64, on a log density
  written here from scratch, not through uqrecon's TV/wavelet classes) on 4x4 posteriors:
  isotropic TV, anisotropic TV, l1-Haar, and TV with a CG tolerance so loose that only the
  Metropolis correction keeps the chain exact.
* Simulation-based calibration on a tiny TV model whose prior is proper and drawn exactly
  (rejection from its Gaussian part), with the test's power checked in the same run.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_walk import equations

import uqrecon
from uqrecon.inference.samplers import gsm
from uqrecon.models import Gaussian, GaussianPrior, Posterior, TV, WaveletL1
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.uq.diagnostics import ess_bulk

N = 4


# --------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------
def test_inverse_gaussian_moments_and_extremes():
    """IG(mean, shape) draws have mean ``mu`` and variance ``mu^3/s`` (catches a wrong
    root or a swapped branch probability: either shifts the mean by > 10 %), and stay
    finite for means up to 1e30 in float32."""
    key = jax.random.PRNGKey(0)
    n = 400_000
    for mu, s in ((0.5, 2.0), (3.0, 0.7), (50.0, 100.0)):
        x = np.asarray(gsm.inverse_gaussian(key, jnp.full((n,), mu, jnp.float32),
                                            jnp.float32(s)), np.float64)
        var = mu ** 3 / s
        assert abs(x.mean() - mu) < 5 * math.sqrt(var / n), (mu, s, x.mean())
        # the sample variance of an IG has a heavy tail: 10 % is many standard errors here
        assert abs(x.var() / var - 1) < 0.1, (mu, s, x.var(), var)
    big = gsm.inverse_gaussian(key, jnp.full((1000,), 1e30, jnp.float32), jnp.float32(4.0))
    assert bool(jnp.all(jnp.isfinite(big))) and bool(jnp.all(big > 0))


@pytest.mark.parametrize("isotropic", [True, False])
def test_tv_diagonal_matches_the_dense_operator(isotropic):
    """``tv_diagonal`` = diag(D^T Λ D) of the dense difference matrix (catches a wrong
    boundary: the structurally zero last difference must carry no weight)."""
    shape = (5, 4)
    tv = TV(shape, 1.0, isotropic=isotropic)
    K = tv.analysis_operator
    D = np.asarray(K.to_dense(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
                   np.float64)
    lam = np.random.default_rng(0).gamma(1.0, 1.0, (2, *shape) if not isotropic else shape)
    lam_c = np.broadcast_to(lam, (2, *shape)) if isotropic else lam
    dense = np.diag(D.T @ (lam_c.ravel()[:, None] * D)).reshape(shape)
    got = np.asarray(gsm.tv_diagonal(jnp.asarray(lam_c, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, dense, rtol=1e-5)


def test_gsm_rejects_what_it_cannot_sample():
    A = MatrixOperator(np.eye(N * N), (N, N))
    lik = Gaussian(A, jnp.zeros(N * N), sigma=0.1)
    from uqrecon.models import NonNegative
    with pytest.raises(ValueError, match="constraint"):
        uqrecon.sample(Posterior(lik, [TV((N, N), 1.0), NonNegative((N, N))]),
                       method="gsm", progress=False)
    with pytest.raises(ValueError, match="one non-smooth term"):
        uqrecon.sample(Posterior(lik, [TV((N, N), 1.0), WaveletL1((N, N), 1.0)]),
                       method="gsm", progress=False)
    with pytest.raises(ValueError, match="'tol'"):
        uqrecon.sample(Posterior(lik, TV((N, N), 1.0)), method="gsm", tol=0.0,
                       progress=False)
    with pytest.raises(ValueError, match="'maxiter'"):
        uqrecon.sample(Posterior(lik, TV((N, N), 1.0)), method="gsm", maxiter=0,
                       progress=False)
    with pytest.raises(ValueError, match="'coarse'"):
        uqrecon.sample(Posterior(lik, TV((N, N), 1.0)), method="gsm", coarse=-2,
                       progress=False)


def test_coarse_inverse_factorises_chains_one_at_a_time():
    """Vmapped over chains, the coarse Cholesky runs once per chain on a 2-D matrix, not
    as one batched LAPACK call: with 4 chains on 2 host devices of a 2-core CPU the
    batched 1024 x 1024 factorisation deadlocked XLA's thread pool (GSM at 64x64 hung).
    Catches the ``sequential_vmap`` dropped (the jaxpr then holds a 3-D cholesky; checked);
    the inverses are checked against numpy's, and a failed factorisation gives zeros."""
    rng = np.random.default_rng(0)
    B = rng.normal(size=(3, 6, 6))
    K = jnp.asarray(B @ B.transpose(0, 2, 1) + 6 * np.eye(6), jnp.float32)
    K = K.at[2].set(-jnp.eye(6))                       # not positive definite
    jaxpr = jax.make_jaxpr(jax.vmap(gsm._coarse_inverse))(K)
    ranks = {e.invars[0].aval.ndim for e in equations(jaxpr) if e.primitive.name == "cholesky"}
    assert ranks == {2}
    inv = np.asarray(jax.vmap(gsm._coarse_inverse)(K))
    np.testing.assert_allclose(inv[:2], np.linalg.inv(np.asarray(K[:2], np.float64)),
                               rtol=1e-4, atol=1e-6)
    assert np.all(inv[2] == 0.0)


@pytest.mark.parametrize("isotropic", [True, False])
def test_two_level_coarse_matrices_are_the_galerkin_products(isotropic):
    """The two-level preconditioner's coarse matrix is ``Z^T (tau C + D^T Λ D) Z`` for the
    block aggregates ``Z`` (formed here densely, pixel by pixel), on a 10x10 image with 4x4
    blocks (edge blocks cut short); the preconditioner is symmetric positive definite.
    Catches a wrong crossing rule (a difference inside a block coupling two blocks, or one
    across a boundary left out), a mis-ordered block index, expansion/aggregation that are
    not transposes of each other, and a lost noise precision ``tau``."""
    from uqrecon import make_problem
    from uqrecon.linalg import dense_from_matvec

    shape = (10, 10)
    n = 100
    prob = make_problem("sparse_view_ct", size=10, num_angles=6)
    post = Posterior(Gaussian(prob.operator, prob.data, sigma=prob.sigma),
                     TV(shape, 3.0, isotropic=isotropic))
    params, _ = gsm.gsm_params(post, 1e-4, 100, dense_max=0, coarse=4)
    assert params.coarse_blocks == (4, 4) and params.coarse_circulant.shape == (9, 9)
    rng = np.random.default_rng(0)
    lam = jnp.asarray(rng.gamma(1.0, 50.0, shape if isotropic else (2, *shape)), jnp.float32)
    lam_c = jnp.broadcast_to(lam[None], (2, *shape)) if isotropic else lam
    ids, nc, _ = gsm._coarse_layout(shape, (4, 4))
    Z = np.zeros((n, nc))
    Z[np.arange(n), ids] = 1.0
    # the block index is the block grid's C order: pixel (5, 9) lies in block (1, 2)
    assert ids[5 * 10 + 9] == 1 * 3 + 2
    term = gsm._penalty(post)
    K = term.analysis_operator

    def dense(f):      # the matrix of a linear map on images, column by column
        return np.asarray(dense_from_matvec(f, n, jnp.float32, in_shape=shape), np.float64)

    C = dense(lambda e: gsm._circulant(params.lik_symbol, e))
    L = dense(lambda e: K.adjoint(gsm._lam_apply(term, lam, K(e))))
    np.testing.assert_allclose(np.asarray(params.coarse_circulant), Z.T @ C @ Z,
                               rtol=1e-4, atol=1e-4 * np.abs(Z.T @ C @ Z).max())
    Lc = np.asarray(gsm._coarse_laplacian(lam_c, (4, 4), jnp.float32))
    np.testing.assert_allclose(Lc, Z.T @ L @ Z, rtol=1e-4, atol=1e-3)
    tau = post.likelihood.noise_precision
    pre = gsm._preconditioner(params, post, lam, tau, jnp.float32)
    M = dense(pre)
    assert np.abs(M - M.T).max() < 1e-4 * np.abs(M).max()
    assert np.linalg.eigvalsh(0.5 * (M + M.T)).min() > 0
    # and its coarse part is the exact inverse of the Galerkin matrix on the coarse space
    Kc = float(tau) * (Z.T @ C @ Z) + Z.T @ L @ Z
    one_level = gsm._preconditioner(params.__class__(**{**params.__dict__,
                                                        "coarse_blocks": None}),
                                    post, lam, tau, jnp.float32)
    S = dense(one_level)
    P_model = float(tau) * C + L
    E = Z @ np.linalg.solve(Kc, Z.T)
    B = np.eye(n) - E @ P_model
    np.testing.assert_allclose(M, E + B @ S @ B.T, rtol=2e-3, atol=2e-3 * np.abs(M).max())


def test_two_level_preconditioner_cuts_cg_iterations_at_64x64():
    """On a 64x64 sparse-view CT TV posterior (30 views), at latent weights drawn at a
    chain-like image (the truth plus 2 % noise), the two-level preconditioner with 2x2
    aggregates needs at most 60 % of the one-level one's CG iterations to reach tol 1e-4
    (measured: 87 -> 35), and with ``"auto"``'s aggregates (5x5, chosen for the cost of
    a sweep, not the count) at most 70 % (measured: 51). Catches a coarse correction
    that does not help (wrong coarse matrix, wrong sign in the balancing) or that was
    silently switched off (e.g. ``"auto"`` resolving to off where the operator pair is
    applied). An iteration count, not a time."""
    from uqrecon import make_problem
    from uqrecon.linalg import pcg

    prob = make_problem("sparse_view_ct", size=64, num_angles=30)
    post = Posterior(Gaussian(prob.operator, prob.data, sigma=prob.sigma), TV((64, 64), 10.0))
    x = jnp.asarray(prob.truth, jnp.float32)
    x = x + 0.02 * jax.random.normal(jax.random.PRNGKey(9), x.shape)
    lam = gsm._draw_lam(jax.random.PRNGKey(0), post, x)
    tau = post.likelihood.noise_precision
    b = jax.random.normal(jax.random.PRNGKey(10), x.shape)
    counts = {}
    for coarse in (0, 2, "auto"):
        params, _ = gsm.gsm_params(post, 1e-4, 5000, coarse=coarse)
        assert params.normal is None    # 4096 pixels > dense_max: the operator pair
        pre = gsm._preconditioner(params, post, lam, tau, jnp.float32)
        res = pcg(lambda v: gsm._precision(post, lam, v), b, pre, 1e-4, 5000)
        assert float(res.relres) <= 1e-4
        counts[coarse] = int(res.iterations)
    assert counts[2] <= 0.6 * counts[0], counts
    assert counts["auto"] <= 0.7 * counts[0], counts


@pytest.mark.parametrize("coarse", [-1, True, "fine", 2.5, 1])
def test_gsm_rejects_bad_coarse_option(coarse):
    """``coarse`` is 'auto', 0 or a positive block size giving at most GSM_COARSE_MAX
    blocks (block size 1 on 128x128 would factorise a 16384^2 matrix every sweep)."""
    with pytest.raises(ValueError, match="'coarse'"):
        gsm.coarse_blocks((128, 128), coarse)


@pytest.mark.parametrize("option,value", [("hmc_moves", -1), ("hmc_moves", 1.5),
                                          ("hmc_steps", 0), ("hmc_step_size", -0.1),
                                          ("hmc_smoothing", 0.0)])
def test_gsm_rejects_bad_hmc_options(option, value):
    """Bad HMC-move options fail before any work with an error naming them."""
    M, y, sigma = _problem()
    post = _uqrecon_posterior("tv-iso", M, y, sigma, 2.0)
    with pytest.raises(ValueError, match=f"'{option}'"):
        uqrecon.sample(post, method="gsm", num_samples=4, progress=False, **{option: value})


# --------------------------------------------------------------------------------------
# against an independent NUTS reference
# --------------------------------------------------------------------------------------
def _problem(seed=0, m=10):
    """A 4x4 image seen through 10 random projections: the prior shapes the posterior."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(m, N * N)) / math.sqrt(N * N)
    x = np.zeros((N, N))
    x[1:3, 1:4] = 1.0
    sigma = 0.2
    y = M @ x.ravel() + sigma * rng.normal(size=m)
    return M, y, sigma


def _haar_matrix():
    """Orthonormal 2D Haar matrix of one level on 4x4 (rows: coefficients), built here."""
    h = np.array([[1, 1], [1, -1]]) / math.sqrt(2)
    H1 = np.zeros((N, N))
    for i in range(N // 2):
        H1[i, 2 * i:2 * i + 2] = h[0]
        H1[N // 2 + i, 2 * i:2 * i + 2] = h[1]
    return np.kron(H1, H1)


def _independent_potential(kind, M, y, sigma, weight):
    """``-log p(x|y)`` written from the definitions, in float64 numpy-style jnp."""
    M, y = jnp.asarray(M), jnp.asarray(y)
    H = jnp.asarray(_haar_matrix())
    # coefficients of the approximation band (unpenalised by default)
    approx = np.zeros((N, N), bool)
    approx[:N // 2, :N // 2] = True
    detail = jnp.asarray(~approx.ravel())

    def pot(x):
        img = x.reshape(N, N)
        dx = jnp.concatenate([img[1:] - img[:-1], jnp.zeros((1, N))], 0)
        dy = jnp.concatenate([img[:, 1:] - img[:, :-1], jnp.zeros((N, 1))], 1)
        if kind == "tv-iso":
            pen = jnp.sum(jnp.sqrt(dx ** 2 + dy ** 2 + 1e-300))
        elif kind == "tv-aniso":
            pen = jnp.sum(jnp.abs(dx)) + jnp.sum(jnp.abs(dy))
        else:
            # 2D Haar of a 4x4 image with the coefficient layout of uqrecon's DWT
            # (approximation block top-left) is the Kronecker product of 1D Haar rows
            pen = jnp.sum(jnp.abs(H @ x) * detail)
        r = M @ x - y
        return 0.5 * jnp.dot(r, r) / sigma ** 2 + weight * pen

    return pot


def _nuts_reference(pot, seed=0, num_chains=4, num_samples=8_000):
    """numpyro NUTS in float64 on ``exp(-pot)``: an exact MCMC independent of uqrecon."""
    from numpyro.infer import MCMC, NUTS

    with jax.enable_x64(True):
        kernel = NUTS(potential_fn=pot, target_accept_prob=0.9)
        mcmc = MCMC(kernel, num_warmup=2000, num_samples=num_samples, num_chains=num_chains,
                    chain_method="vectorized", progress_bar=False)
        init = 0.5 * jnp.ones((num_chains, N * N), jnp.float64)
        mcmc.run(jax.random.PRNGKey(seed), init_params=init)
        draws = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
    return draws.reshape(num_chains, num_samples, N, N)


@functools.lru_cache(maxsize=None)
def _cached_nuts_reference(kind, weight):
    """One NUTS reference per model: ``tv-iso-loose`` grades against ``tv-iso``'s."""
    M, y, sigma = _problem()
    return _nuts_reference(_independent_potential(kind, M, y, sigma, weight))


def _uqrecon_posterior(kind, M, y, sigma, weight):
    A = MatrixOperator(np.asarray(M, np.float32), (N, N))
    lik = Gaussian(A, jnp.asarray(y, jnp.float32), sigma=sigma)
    if kind == "tv-iso":
        prior = TV((N, N), weight)
    elif kind == "tv-aniso":
        prior = TV((N, N), weight, isotropic=False)
    else:
        prior = WaveletL1((N, N), weight, wavelet="haar", levels=1)
    return Posterior(lik, prior)


def _moments(draws):
    """Per-pixel mean, std, 10 % quantile, and their Monte Carlo standard errors (from
    the bulk ESS; the quantile's from the density at it, by a Gaussian approximation)."""
    flat = draws.reshape(-1, *draws.shape[2:])
    ess = ess_bulk(draws)
    mean, std = flat.mean(0), flat.std(0)
    q = np.quantile(flat, 0.1, axis=0)
    se_mean = std / np.sqrt(ess)
    # log std: var(log s) ~ (kurtosis - 1) / (4 ESS)
    kurt = ((flat - mean) ** 4).mean(0) / std ** 4
    se_logstd = np.sqrt((kurt - 1) / (4 * ess))
    dens = np.exp(-0.5 * 1.2816 ** 2) / (math.sqrt(2 * math.pi) * std)
    se_q = np.sqrt(0.1 * 0.9 / ess) / dens
    return mean, std, q, se_mean, se_logstd, se_q, ess


def _assert_same_law(ours, ref):
    """Per pixel: mean, log std and 10 % quantile within 4.5 combined Monte Carlo standard
    errors; the pixel-averaged log variance ratio within 0.045; both sides with min bulk
    ESS > 2000 (the power statement is in the tests' docstrings)."""
    m1, s1, q1, sm1, sl1, sq1, e1 = _moments(ours)
    m2, s2, q2, sm2, sl2, sq2, e2 = _moments(ref)
    assert e1.min() > 2000 and e2.min() > 2000, (e1.min(), e2.min())
    z_mean = (m1 - m2) / np.hypot(sm1, sm2)
    z_std = np.log(s1 / s2) / np.hypot(sl1, sl2)
    z_q = (q1 - q2) / np.hypot(sq1, sq2)
    for name, z in (("mean", z_mean), ("log std", z_std), ("10% quantile", z_q)):
        assert np.max(np.abs(z)) < 4.5, (name, np.round(z, 2))
    avg_logvar = float(np.mean(2 * np.log(s1 / s2)))
    assert abs(avg_logvar) < 0.045, avg_logvar


@pytest.mark.slow
@pytest.mark.parametrize("kind,options", [
    ("tv-iso", {}),
    ("tv-aniso", {}),
    ("l1-haar", {}),
    ("tv-iso-loose", {"tol": 0.05, "dense_max": 0}),
    ("tv-iso-hmc", {"hmc_moves": 1}),
])
def test_gsm_matches_an_independent_nuts_reference(kind, options):
    """GSM draws vs 32,000 numpyro NUTS draws (float64, independent log density).

    Per pixel: mean, log std and 10 % quantile within 4.5 combined Monte Carlo standard
    errors; and the pixel-averaged log variance ratio within 0.045. Power: with ~15,000
    effective draws per side the per-pixel s.e. of a log variance ratio is ~0.017, so a
    10 % variance error (log ratio 0.095) fails the averaged check by > 3 s.e. even if
    all 16 pixels were perfectly correlated. Checked by hand: scaling the GSM deviations
    to 0.9x / 1.1x the variance fails (worst per-pixel log-std z = 10.2 / 9.4).
    ``tv-iso-loose`` solves to a relative residual of 0.05, far from a PO draw: with the
    Metropolis test removed (always accept) the test fails. The other cases form
    ``A^T A`` densely (16 pixels <= ``dense_max``); ``tv-iso-loose`` applies the operator
    pair in every CG step (``dense_max=0``), so both paths are checked. ``tv-iso-hmc``
    adds one HMC move per sweep (option ``hmc_moves``) through the public entry point,
    with its warmup tuning; it catches gross wiring faults (checked: keeping the HMC
    proposal without its Metropolis test makes the chain diverge and the test fail) but
    not subtle ones at the default smoothing (the moves alone are tested below, with a
    smoothing large enough to see a wrong energy).
    """
    base = "tv-iso" if kind.startswith("tv-iso") else kind
    M, y, sigma = _problem()
    weight = 2.0
    ref = _cached_nuts_reference(base, weight)
    post = _uqrecon_posterior(base, M, y, sigma, weight)
    res = uqrecon.sample(post, method="gsm", num_chains=4, num_samples=8_000,
                         num_warmup=500, seed=1, progress=False, **options)
    ours = np.asarray(res.draws, np.float64)
    _assert_same_law(ours, ref)
    if kind == "tv-iso-loose":
        assert res.diagnostics["acceptance_rate"] < 0.9   # the correction was needed


@functools.partial(jax.jit, static_argnums=(4, 5))
def _hmc_chain(params, key, x0, anchor, num_warmup, num_draws):
    """One chain of the GSM sampler's HMC moves alone (no PO move): ``num_warmup`` moves
    tuning the step, then ``num_draws`` at the frozen step, metric of the fixed
    ``anchor``."""
    post = params.posterior
    tau = post.likelihood.noise_precision.astype(x0.dtype)
    state = gsm.gsm_init(key, x0, params)

    def body(state, k):
        x, step, da, acc, _ = gsm._hmc_moves(k, state.x, anchor, state, post, params, tau)
        return state._replace(x=x, hmc_step=step, hmc_da=da, hmc_accept=acc), (x, acc)

    k1, k2 = jax.random.split(key)
    state, _ = jax.lax.scan(body, state, jax.random.split(k1, num_warmup))
    state = gsm.gsm_finish_warmup(state, params)
    _, (xs, acc) = jax.lax.scan(body, state, jax.random.split(k2, num_draws))
    return xs, acc


@pytest.mark.slow
@pytest.mark.parametrize("kind,smoothing", [("tv-iso", 0.6), ("tv-aniso", 0.3),
                                            ("l1-haar", 0.3)])
def test_hmc_moves_alone_match_the_independent_nuts_reference(kind, smoothing):
    """The HMC moves GSM can add (``hmc_moves``), run alone, vs the NUTS reference.

    Their trajectories follow the gradient of a Huber-smoothed penalty and only the
    Metropolis test sees the exact one. The smoothing here (0.3-0.6, against differences
    of order 0.3) is far larger than the default (0.005 at weight 2) so that the
    smoothed model differs clearly from the exact one: if the test used the surrogate's
    energy, the chain would sample the Huber posterior. Checked by hand with
    ``_exact_potential`` returning the surrogate potential: the test fails in all three
    cases (worst per-pixel |z| of mean / log std / quantile: 10.2 / 14.2 / 10.8 for
    tv-iso, 5.6 / 7.0 / 7.7 for tv-aniso, 4.7 / 6.3 / 5.6 for l1-haar), while the exact
    version's worst |z| is 2.8, 2.2 and 2.3 (same seeds). Larger smoothing makes the
    exact chain sticky (tv-aniso at 0.6: min ESS 176). Same criteria and power as the
    test above: a 10 % variance error fails the averaged check by > 3 s.e.
    """
    M, y, sigma = _problem()
    weight = 2.0
    ref = _cached_nuts_reference(kind, weight)
    post = _uqrecon_posterior(kind, M, y, sigma, weight)
    params, _ = gsm.gsm_params(post, 1e-4, 100, hmc_moves=2, hmc_smoothing=smoothing,
                               hmc_step_size=0.5)
    anchor = jnp.asarray(ref.mean(axis=(0, 1)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    x0 = jnp.asarray(ref[:, 0], jnp.float32)
    xs, acc = jax.vmap(_hmc_chain, (None, 0, 0, None, None, None))(
        params, keys, x0, anchor, 1000, 8000)
    ours = np.asarray(xs, np.float64)
    assert 0.3 < float(acc.mean()) < 0.95, float(acc.mean())
    _assert_same_law(ours, ref)


# --------------------------------------------------------------------------------------
# simulation-based calibration
# --------------------------------------------------------------------------------------
SBC_SHAPE = (2, 3)


def _sbc_prior_draws(rng, num, alpha, weight):
    """Exact draws of ``p(x) ∝ exp(-alpha/2 ||x||^2 - weight TV(x))`` (isotropic TV,
    Neumann): Gaussian proposals accepted with probability ``exp(-weight TV(x)) <= 1``."""
    out = []
    while sum(len(o) for o in out) < num:
        x = rng.normal(size=(200_000, *SBC_SHAPE)) / math.sqrt(alpha)
        dx = np.concatenate([x[:, 1:] - x[:, :-1], np.zeros((len(x), 1, SBC_SHAPE[1]))], 1)
        dy = np.concatenate([x[:, :, 1:] - x[:, :, :-1], np.zeros((len(x), SBC_SHAPE[0], 1))],
                            2)
        tv = np.sqrt(dx ** 2 + dy ** 2).sum((1, 2))
        out.append(x[rng.uniform(size=len(x)) < np.exp(-weight * tv)])
    return np.concatenate(out)[:num]


@jax.jit
def _sbc_chains(params, keys, x0):
    """For each replicate (params batched): 100 warmup sweeps, then 1,000 sweeps thinned
    by 10. The kernel is called directly: params are a pytree, so replicates vmap."""
    def one(p, key, x):
        state = gsm.gsm_init(key, x, p)

        def sweep(st, k):
            return gsm.gsm_step(k, st, p)[0], None

        k_w, k_s = jax.random.split(key)
        state, _ = jax.lax.scan(sweep, state, jax.random.split(k_w, 100))
        state = gsm.gsm_finish_warmup(state, p)

        def thinned(st, k):
            st, _ = jax.lax.scan(sweep, st, jax.random.split(k, 10))
            return st, st.x

        _, xs = jax.lax.scan(thinned, state, jax.random.split(k_s, 100))
        return xs

    return jax.vmap(one)(params, keys, x0)


def _ranks(draws, truth, rng):
    """Randomised normalised ranks ``u`` of ``truth`` among ``draws`` (axis 1): exactly
    uniform on (0, 1) when the draws are independent draws of the posterior."""
    L = draws.shape[1]
    below = (draws < truth[:, None]).sum(1)
    ties = (draws == truth[:, None]).sum(1)
    return (below + rng.uniform(size=below.shape) * (ties + 1)) / (L + 1)


def _sbc_z(draws, truth, centre, rng):
    """Two SBC statistics, each a z-score with an exact null (u uniform, replicates
    independent): per pixel, the mean rank of the truth (location); and the mean rank of
    the spread ``f(x) = ||x - centre(y)||^2`` about a fixed function of the data (too-wide
    draws make the truth's f rank low, z < 0; too narrow, z > 0)."""
    R = len(truth)
    se = math.sqrt(1 / 12 / R)
    u_pix = _ranks(draws, truth, rng).reshape(R, -1)
    z_loc = (u_pix.mean(0) - 0.5) / se
    f_draws = ((draws - centre[:, None]) ** 2).reshape(R, draws.shape[1], -1).sum(-1)
    f_true = ((truth - centre) ** 2).reshape(R, -1).sum(-1)
    z_spread = (_ranks(f_draws, f_true, rng).mean() - 0.5) / se
    return z_loc, z_spread


@pytest.mark.slow
def test_gsm_simulation_based_calibration_detects_ten_percent_variance_errors():
    """SBC over 3,000 replicates of a 2x3 TV model (proper prior: TV + weak Gaussian,
    drawn exactly by rejection), 100 draws each (thinned by 10; CG tolerance 1e-3, so the
    Metropolis correction is active: acceptance ~0.9).

    Passes when every pixel's location z is below 4 and the spread z below 3.5 in
    absolute value. Power, checked *in this test* on the same draws: the draws rescaled
    about their replicate mean to 0.9x and 1.1x the variance must both give |z| > 3.5
    (measured with 4,000 replicates: z = +6.6 and -7.8, i.e. ~ +5.7 / -6.7 expected at
    3,000, so a 10 % variance error is detected with probability > 0.95). The former
    SBC test, a per-pixel rank histogram, rejected x0.9 / x1.1 variances in < 1 % of runs.
    """
    rng = np.random.default_rng(0)
    R, alpha, weight, sigma = 3000, 1.0, 1.5, 0.5
    truth = _sbc_prior_draws(rng, R, alpha, weight)
    M = rng.normal(size=(4, math.prod(SBC_SHAPE))) / math.sqrt(math.prod(SBC_SHAPE))
    A = MatrixOperator(np.asarray(M, np.float32), SBC_SHAPE)
    ys = truth.reshape(R, -1) @ M.T + sigma * rng.normal(size=(R, 4))

    def posterior(y):
        lik = Gaussian(A, jnp.asarray(y, jnp.float32), sigma=sigma)
        return Posterior(lik, [TV(SBC_SHAPE, weight), GaussianPrior(SBC_SHAPE, alpha)])

    # one set of params, the data leaf swapped for the stacked replicates' data
    template, _ = gsm.gsm_params(posterior(ys[0]), 1e-3, 100)
    data = template.posterior.likelihood.data
    leaves, treedef = jax.tree_util.tree_flatten(template)
    leaves = [jnp.asarray(ys, jnp.float32) if leaf is data else
              jnp.broadcast_to(leaf, (R, *jnp.shape(leaf))) for leaf in leaves]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    keys = jax.random.split(jax.random.PRNGKey(3), R)
    draws = np.asarray(_sbc_chains(params, keys, jnp.zeros((R, *SBC_SHAPE), jnp.float32)),
                       np.float64)
    # centre: the mean of the Gaussian part of the model (a fixed function of y)
    P = M.T @ M / sigma ** 2 + alpha * np.eye(M.shape[1])
    centre = np.linalg.solve(P, M.T @ ys.T / sigma ** 2).T.reshape(R, *SBC_SHAPE)
    z_loc, z_spread = _sbc_z(draws, truth, centre, rng)
    assert np.max(np.abs(z_loc)) < 4.0, z_loc
    assert abs(z_spread) < 3.5, z_spread
    mean = draws.mean(1, keepdims=True)
    for factor in (0.9, 1.1):
        scaled = mean + math.sqrt(factor) * (draws - mean)
        zf = _sbc_z(scaled, truth, centre, rng)[1]
        assert abs(zf) > 3.5, (factor, zf)   # the test has the power it claims


def test_gsm_second_call_on_other_data_compiles_nothing():
    """Compile once: a second ``sample(method="gsm")`` on a same-shaped posterior with
    other data and another noise level builds no XLA executable (catches a kernel that
    closes over the posterior or a jit built inside the call)."""
    from uqrecon.inference.accounting import CompileMonitor
    M, y, sigma = _problem()
    kw = dict(method="gsm", num_chains=2, num_samples=20, num_warmup=10, progress=False)
    uqrecon.sample(_uqrecon_posterior("tv-iso", M, y, sigma, 2.0), **kw)
    other = _uqrecon_posterior("tv-iso", M, y + 0.3, 0.7 * sigma, 3.0)
    with CompileMonitor() as mon:
        res = uqrecon.sample(other, seed=4, **kw)
    assert mon.num_compiles == 0, mon.names
    assert res.diagnostics["num_compiles"] == 0


def test_dense_normal_matrix_is_the_operator_pair():
    """The dense ``A^T A`` that small images use (``dense_max``) is the operator pair's
    matrix: one GSM precision product agrees with the projector path to float32
    rounding on a 16x16 sparse-view CT. Catches a transposed, unsymmetrised or
    mis-scaled dense matrix (e.g. ``A A^T`` or a missing noise precision)."""
    from uqrecon import make_problem

    prob = make_problem("sparse_view_ct", size=16, num_angles=12)
    post = Posterior(Gaussian(prob.operator, prob.data, sigma=prob.sigma), TV((16, 16), 5.0))
    dense, _ = gsm.gsm_params(post, 1e-4, 100)
    pair, _ = gsm.gsm_params(post, 1e-4, 100, dense_max=0)
    assert dense.normal is not None and pair.normal is None
    key = jax.random.PRNGKey(0)
    lam = gsm._draw_lam(key, post, jnp.asarray(prob.truth, jnp.float32))
    v = jax.random.normal(jax.random.PRNGKey(1), (16, 16))
    a = gsm._precision(post, lam, v, dense.normal)
    b = gsm._precision(post, lam, v, None)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(b))))

"""Metrics against closed forms, dense formulas, scipy and scikit-image."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

from uqrecon.result import Result  # noqa: E402
from uqrecon.uq import metrics as M  # noqa: E402


def _binomial_tol(p, n, k=4.0):
    return k * np.sqrt(p * (1 - p) / n)


# -- image quality ----------------------------------------------------------------------
def test_relative_error_psnr_closed_forms():
    """Hand-derived values (||(3, 4)|| = 5; MSE 0.25 on a range of 11): catches a relative
    error normalised by ||a|| instead of ||b||, a PSNR without the square on R or with an
    n - 1 MSE, and missing shape / all-zero-reference checks."""
    b = np.arange(12.0).reshape(3, 4)
    a = b + np.array([3.0, 4.0] + [0.0] * 10).reshape(3, 4)
    assert M.relative_error(a, b) == pytest.approx(5.0 / np.linalg.norm(b), rel=1e-12)
    x = b + 0.5                                          # MSE 0.25, range 11
    assert M.psnr(x, b) == pytest.approx(10 * np.log10(121 / 0.25), rel=1e-12)
    assert M.psnr(x, b, data_range=1.0) == pytest.approx(10 * np.log10(4.0), rel=1e-12)
    with pytest.raises(ValueError, match="'b'"):
        M.relative_error(a, np.zeros_like(a))
    with pytest.raises(ValueError, match="shape"):
        M.relative_error(a, b.T)


def test_ssim_matches_skimage():
    """scikit-image's Gaussian-window SSIM as independent reference (rel 1e-10) on a noisy
    and an affinely distorted image: catches wrong constants (K2 = K1 changes the value by
    ~1e-3), an off-by-one border crop, and a missing minimum-size check."""
    rng = np.random.default_rng(0)
    ref = rng.random((40, 33))
    for noisy in (ref + 0.1 * rng.normal(size=ref.shape), 0.5 * ref + 0.2):
        want = structural_similarity(noisy, ref, data_range=1.0, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        assert M.ssim(noisy, ref, data_range=1.0) == pytest.approx(want, rel=1e-10)
    assert M.ssim(ref, ref) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'x'"):
        M.ssim(ref[:8, :8], ref[:8, :8])


# -- calibration -------------------------------------------------------------------------
def test_gaussian_coverage_is_nominal():
    """Truth drawn from the stated N(m, s^2) per pixel (independent): every level of the
    default grid (also asserted) is covered within 4 binomial SE (n = 65536 pixels).
    Power, measured over seeds with the Gaussian-interval width mis-scaled: false alarm
    1/1200 seeds with the correct variance; variance x0.97: fails 87 % of 200 seeds;
    x0.95, x0.9025 (z x0.95), x0.9, x0.8 and x1/0.9: 100 % of 200 seeds. (At the former
    64x64 size a 10 % variance error failed only 72-76 % of seeds and slipped through at
    this seed.) Also: closed intervals (a truth on a bound is covered; a point-mass pixel
    of a non-negative image, lo = hi = truth = 0, counts), and the exact value of
    ``coverage``."""
    rng = np.random.default_rng(1)
    shape = (256, 256)
    m, s = rng.normal(size=shape), rng.uniform(0.1, 2.0, size=shape)
    truth = m + s * rng.normal(size=shape)              # truth ~ N(m, s^2), pixels independent
    res = Result(m, s ** 2)                             # no draws: Gaussian intervals
    levels, cov = M.calibration_curve(res, truth)
    np.testing.assert_allclose(levels, np.r_[np.arange(1, 20) * 0.05, 0.99])
    n = truth.size
    assert np.all(np.abs(cov - levels) <= _binomial_tol(levels, n))
    # a result that is 2x over-confident covers far less
    _, cov_bad = M.calibration_curve(Result(m, s ** 2 / 4), truth, levels=[0.9])
    assert cov_bad[0] < 0.9 - 10 * _binomial_tol(0.9, n)
    lo, hi = res.interval(0.9)
    assert M.coverage(lo, hi, truth) == pytest.approx(np.mean((lo <= truth) & (truth <= hi)))
    # intervals are closed: truths on a bound (incl. lo = hi = truth) are covered
    assert M.coverage([0.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0, 3.5]) == 0.75


def test_draw_intervals_coverage():
    """Draw-based calibration: the one-pass quantile path of ``calibration_curve`` equals
    level-by-level ``coverage(*interval(a))`` exactly (catches mispaired or reversed
    quantiles), ``credible_interval`` equals numpy's type-7 quantile (catches another
    quantile method), and a calibrated 1000-draw result covers 90 % within 5 binomial SE
    (n = 1024: +/-0.047; a smoke check only: it catches gross errors such as std x0.8,
    coverage 0.81, not small ones -- the exact checks above carry the definitions)."""
    rng = np.random.default_rng(2)
    shape = (32, 32)
    m, s = rng.normal(size=shape), rng.uniform(0.5, 1.5, size=shape)
    draws = m + s * rng.normal(size=(2, 500, *shape))
    truth = m + s * rng.normal(size=shape)
    res = Result.from_draws(draws)
    levels, cov = M.calibration_curve(res, truth, levels=[0.5, 0.9])
    want = [M.coverage(*res.interval(a), truth) for a in levels]   # same as level by level
    np.testing.assert_array_equal(cov, want)
    lo, hi = M.credible_interval(draws.reshape(-1, *shape), 0.9)
    np.testing.assert_allclose(lo, np.quantile(draws.reshape(-1, *shape), 0.05, axis=0), rtol=1e-12)
    # quantiles estimated from 1000 draws add a little spread: 5 SE
    assert abs(M.coverage(lo, hi, truth) - 0.9) <= _binomial_tol(0.9, truth.size, 5)


def test_mse_ball_coverage():
    """MSE-ball coverage over replicates. Exact: each replicate's hit equals
    ``||truth - mean||^2 <= np.quantile(||draw - mean||^2, a)`` computed here (catches a
    radius scaled by 0.9, a dropped replicate, a (1 + a) / 2 quantile), and Gaussian results
    are drawn with key ``fold_in(PRNGKey(seed), i)`` as documented (catches an ignored seed
    or replicate index). Statistical: 2000 calibrated replicates cover within 5 binomial
    SE (+/-0.056 at 0.5, +/-0.034 at 0.9); power measured over seeds: false alarm 0/300;
    draw variance x0.9 or x1/0.9: fails 99/100 seeds; x0.95: 17/100 (at the former 200
    replicates x0.9 failed 2 % and x0.8 79 % of seeds). A 2x over-confident result covers
    > 0.2 less."""
    rng = np.random.default_rng(3)
    shape, reps = (3, 3), 2000
    results, truths, over = [], [], []
    for _ in range(reps):
        m, s = rng.normal(size=shape), rng.uniform(0.5, 1.0, size=shape)
        draws = m + s * rng.normal(size=(1, 400, *shape))
        results.append(Result.from_draws(draws))
        truths.append(m + s * rng.normal(size=shape))
        over.append(Result.from_draws(m + 0.5 * s * rng.normal(size=(1, 400, *shape))))
    levels, cov = M.mse_ball_coverage(results, truths, levels=[0.5, 0.9])
    assert np.all(np.abs(cov - levels) <= _binomial_tol(levels, reps, 5))
    # the definition, replicate by replicate, on a fine grid of levels
    fine = np.arange(1, 100) / 100
    want = np.mean([np.sum((t - r.mean) ** 2)
                    <= np.quantile(np.sum((r.pooled_draws() - r.mean) ** 2, axis=(1, 2)), fine)
                    for r, t in zip(results[:300], truths[:300])], axis=0)
    np.testing.assert_array_equal(M.mse_ball_coverage(results[:300], truths[:300], fine)[1],
                                  want)
    _, cov_over = M.mse_ball_coverage(over, truths, levels=[0.5, 0.9])
    assert np.all(cov_over < levels - 0.2)
    g = [Result.from_gaussian({"kind": "diag", "mean": r.mean, "diag": r.variance})
         for r in results[:2]]                          # Gaussian results: drawn on demand
    a = M.mse_ball_coverage(g, truths[:2], seed=7)[1]
    np.testing.assert_array_equal(a, M.mse_ball_coverage(g, truths[:2], seed=7)[1])
    # ... with the documented keys: replicate i from fold_in(PRNGKey(seed), i)
    import jax
    g = [Result.from_gaussian({"kind": "diag", "mean": r.mean, "diag": r.variance})
         for r in results[:20]]
    want = np.mean([np.sum((t - r.mean) ** 2) <= np.quantile(
        np.sum((np.asarray(r.sample(jax.random.fold_in(jax.random.PRNGKey(7), i), 50),
                           np.float64) - r.mean) ** 2, axis=(1, 2)), fine)
        for i, (r, t) in enumerate(zip(g, truths[:20]))], axis=0)
    np.testing.assert_array_equal(
        M.mse_ball_coverage(g, truths[:20], fine, seed=7, num_draws=50)[1], want)
    with pytest.raises(ValueError, match="truths"):
        M.mse_ball_coverage(results, truths[:-1])


def test_error_uncertainty_and_sparsification():
    """Correlations against scipy, on continuous data and on data with ties (zero errors
    of exact pixels: catches ordinal instead of average ranks); sparsification by hand
    (catches removing the least uncertain pixels, dividing by n instead of the remaining
    count, rounding the removed count up when f n is not whole), its AUSE as the
    trapezoid area (hand value 0.2: catches a plain mean, 0.4), and the removed counts at the default fractions for n = 100 against a loop (catches a
    floor without the rounding guard: 0.29 * 100 = 28.999...)."""
    rng = np.random.default_rng(4)
    err = rng.random(1000)
    unc = err + 0.3 * rng.random(1000)
    c = M.error_uncertainty_correlation(err, unc)
    assert c["pearson"] == pytest.approx(stats.pearsonr(err, unc)[0], rel=1e-12)
    assert c["spearman"] == pytest.approx(stats.spearmanr(err, unc)[0], rel=1e-12)
    perfect = M.sparsification(err, err)
    assert perfect["ause"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(perfect["curve"][0], 1.0)
    rand = M.sparsification(err, rng.random(1000))
    good = M.sparsification(err, unc)
    assert 0 < good["ause"] < rand["ause"]
    assert np.all(rand["oracle"] <= rand["curve"] + 1e-12)
    # hand example: errors 4,3,2,1; removing half by uncertainty order [1,2,3,4] leaves 4,3
    s = M.sparsification([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], fractions=[0.0, 0.5])
    np.testing.assert_allclose(s["curve"], [1.0, 3.5 / 2.5])
    np.testing.assert_allclose(s["oracle"], [1.0, 1.5 / 2.5])
    # AUSE = trapezoid area: 0.5 * (0 + (3.5 - 1.5) / 2.5) * 0.5 = 0.2
    assert s["ause"] == pytest.approx(0.2, rel=1e-12)
    # f n not whole: floor(0.5 * 3) = 1 pixel removed (the largest u), as documented;
    # remaining errors (2, 3) over the mean 2 -> 1.25 (rounding up would give 1.5)
    s3 = M.sparsification([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], fractions=[0.0, 0.5])
    np.testing.assert_allclose(s3["curve"], [1.0, 1.25])
    # ties: exactly recovered pixels have error 0 (average ranks, as scipy)
    tied_e, tied_u = np.r_[np.zeros(50), err[:50]], np.r_[unc[:25], np.ones(25), unc[50:100]]
    c = M.error_uncertainty_correlation(tied_e, tied_u)
    assert c["spearman"] == pytest.approx(stats.spearmanr(tied_e, tied_u)[0], rel=1e-12)
    # default fractions k / 100 with n = 100: exactly k pixels removed, largest u first
    e100, u100 = err[:100], unc[:100]
    order = np.argsort(-u100, kind="stable")
    want = [np.mean(e100[order[k:]]) / np.mean(e100) for k in range(100)]
    np.testing.assert_allclose(M.sparsification(e100, u100)["curve"], want, rtol=1e-12)


# -- Gaussian distances --------------------------------------------------------------------
def _random_lowrank(rng, n, k):
    return {"kind": "lowrank", "mean": rng.normal(size=n), "diag": rng.uniform(0.1, 1.0, n),
            "factor": rng.normal(size=(n, k)) * 0.7}


def _as_dense(g):
    f = g.get("factor", np.zeros((g["mean"].size, 0)))
    return {"kind": "dense", "mean": g["mean"], "cov": np.diag(g["diag"]) + f @ f.T}


def _kl_dense_reference(m1, s1, m2, s2):
    inv2 = np.linalg.inv(s2)
    n = m1.size
    return 0.5 * (np.trace(inv2 @ s1) + (m2 - m1) @ inv2 @ (m2 - m1) - n
                  + np.linalg.slogdet(s2)[1] - np.linalg.slogdet(s1)[1])


def test_gaussian_w2_kl_closed_forms():
    """1-D and commuting-covariance closed forms (derived in the comments) on the diag and
    dense paths: catches a W2 cross term without its factor 2, variances in place of stds
    in the diagonal W2, a swapped log-det sign and a halved Mahalanobis term in KL."""
    # 1-D: W2^2 = (m1-m2)^2 + (s1-s2)^2; KL = log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2
    a = {"kind": "diag", "mean": np.array([1.0]), "diag": np.array([4.0])}
    b = {"kind": "diag", "mean": np.array([-2.0]), "diag": np.array([0.25])}
    assert M.gaussian_w2(a, b) == pytest.approx(np.sqrt(9 + 1.5 ** 2), rel=1e-12)
    kl = np.log(0.5 / 2) + (4 + 9) / (2 * 0.25) - 0.5
    assert M.gaussian_kl(a, b) == pytest.approx(kl, rel=1e-12)
    assert M.gaussian_kl(_as_dense(a), _as_dense(b)) == pytest.approx(kl, rel=1e-12)
    assert M.gaussian_w2(_as_dense(a), _as_dense(b)) == pytest.approx(np.sqrt(11.25), rel=1e-10)
    # commuting covariances (same eigenvectors): W2^2 = |dm|^2 + sum (sqrt l1 - sqrt l2)^2
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    l1, l2 = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    m1, m2 = rng.normal(size=7), rng.normal(size=7)
    g1 = {"kind": "dense", "mean": m1, "cov": (q * l1) @ q.T}
    g2 = {"kind": "dense", "mean": m2, "cov": (q * l2) @ q.T}
    w2 = np.sqrt(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2))
    assert M.gaussian_w2(g1, g2) == pytest.approx(w2, rel=1e-9)
    kl = 0.5 * np.sum(l1 / l2 + (q.T @ (m2 - m1)) ** 2 / l2 - 1 + np.log(l2 / l1))
    assert M.gaussian_kl(g1, g2) == pytest.approx(kl, rel=1e-9)


def test_lowrank_and_diag_agree_with_dense():
    """Woodbury / determinant-lemma KL and low-rank W2 against dense numpy (inverse,
    slogdet) and scipy's sqrtm: catches a log det of the capacitance matrix without its
    factor 2, a dropped Woodbury correction in tr(S2^-1 F1 F1^T), and the W2 / KL errors
    above on the low-rank path; also zero self-distance and the size / dimension checks."""
    rng = np.random.default_rng(6)
    n = 30
    g1, g2 = _random_lowrank(rng, n, 4), _random_lowrank(rng, n, 6)
    d1 = {"kind": "diag", "mean": g1["mean"], "diag": g1["diag"]}
    s = {k: _as_dense(g) for k, g in (("g1", g1), ("g2", g2), ("d1", d1))}
    for x, y, dx, dy in ((g1, g2, s["g1"], s["g2"]), (d1, g2, s["d1"], s["g2"]),
                         (g2, d1, s["g2"], s["d1"])):
        want = _kl_dense_reference(dx["mean"], dx["cov"], dy["mean"], dy["cov"])
        assert M.gaussian_kl(x, y) == pytest.approx(want, rel=1e-9)    # Woodbury path
        assert M.gaussian_kl(dx, dy) == pytest.approx(want, rel=1e-9)  # dense path
        assert M.gaussian_w2(x, y) == pytest.approx(M.gaussian_w2(dx, dy), rel=1e-9)
    # scipy's sqrtm as an independent reference for the W2 trace term
    from scipy.linalg import sqrtm
    c1, c2 = s["g1"]["cov"], s["g2"]["cov"]
    r2 = sqrtm(c2).real
    w2sq = (np.sum((g1["mean"] - g2["mean"]) ** 2) + np.trace(c1) + np.trace(c2)
            - 2 * np.trace(sqrtm(r2 @ c1 @ r2).real))
    assert M.gaussian_w2(g1, g2) == pytest.approx(np.sqrt(w2sq), rel=1e-7)
    assert M.gaussian_kl(g1, g1) == pytest.approx(0.0, abs=1e-9)
    assert M.gaussian_w2(g1, g1) < 1e-6 * np.sqrt(np.trace(c1))
    with pytest.raises(ValueError, match="max_dense"):
        M.gaussian_w2(g1, g2, max_dense=10)
    with pytest.raises(ValueError, match="dimension"):
        M.gaussian_kl(g1, _random_lowrank(rng, n + 1, 2))


# -- marginal W1 ----------------------------------------------------------------------------
def test_w1_empirical_matches_scipy():
    """Per-pixel W1 against scipy.stats.wasserstein_distance with unequal sample sizes
    (50 vs 73) and the sorted-sample formula with equal ones: catches cells weighted
    equally instead of by width (the quantile-cell midpoint vs left-end choice is
    equivalent by construction and cannot be caught)."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(50, 2, 3)), rng.gamma(2.0, size=(73, 2, 3))
    got = M.w1_empirical(a, b)
    want = [stats.wasserstein_distance(a[:, i, j], b[:, i, j]) for i in range(2) for j in range(3)]
    np.testing.assert_allclose(got.ravel(), want, rtol=1e-12)
    c = rng.normal(size=(50, 2, 3))                     # equal sizes: sorted-sample formula
    np.testing.assert_allclose(
        M.w1_empirical(a, c), np.mean(np.abs(np.sort(a, 0) - np.sort(c, 0)), axis=0), rtol=1e-12)


def test_w1_gaussian_forms():
    """Gaussian W1s against the Gaussian replaced by 200000 midpoint quantiles (rtol 1e-4;
    discretisation error ~1e-5): catches a sign error in the upper cell integral, a wrong
    folded-normal constant (sqrt(1/pi) for sqrt(2/pi)), a std mis-scaled by 0.9, and a
    point-mass W1 other than mean |x - mu|."""
    rng = np.random.default_rng(8)
    mu, sd = rng.normal(size=4), rng.uniform(0.2, 1.5, 4)
    x = rng.normal(size=(40, 4))
    # reference: the Gaussian replaced by its quantiles on a fine midpoint grid
    k = 200_000
    grid = stats.norm.ppf((np.arange(k) + 0.5) / k)[:, None]
    np.testing.assert_allclose(M.w1_gaussian_empirical(mu, sd, x),
                               M.w1_empirical(mu + sd * grid, x), rtol=1e-4)
    m2, s2 = rng.normal(size=4), rng.uniform(0.2, 1.5, 4)
    np.testing.assert_allclose(M.w1_gaussian(mu, sd, m2, s2),
                               M.w1_empirical(mu + sd * grid, m2 + s2 * grid), rtol=1e-4)
    # point masses
    np.testing.assert_allclose(M.w1_gaussian(mu, sd * 0, mu + 2, sd * 0), 2.0)
    np.testing.assert_allclose(M.w1_gaussian_empirical(mu, 0 * sd, x),
                               np.mean(np.abs(x - mu), axis=0), rtol=1e-12)

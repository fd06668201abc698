"""Conformal calibration (issue 12 item 2): the Hoeffding-Bentkus bound, the (n+1)
corrections, and the guarantees checked on fresh replicates for a calibrated and for
over-confident methods (exact std x0.5; mean-field VI on a correlated CT posterior).

Statistical tests use fixed seeds; their size and power were measured in a scratch
script by repeating them with 20 (RCPS: 10) other seeds (numbers in each docstring).
"""

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import optimize, stats  # noqa: E402

from uqrecon.models import GMRF, Gaussian, Posterior  # noqa: E402
from uqrecon.operators.tomo import sparse_view  # noqa: E402
from uqrecon.uq.calibration import run_replicates, summarize_calibration  # noqa: E402
from uqrecon.uq.conformal import (fit_error_bound, fit_rcps,  # noqa: E402
                                  hoeffding_bentkus_bound, min_calibration_size,
                                  rcps_max_empirical_risk, repeated_split_check,
                                  uncovered_fraction, conformity_scores)

N = 16


@pytest.fixture(scope="module")
def model():
    op = sparse_view((N, N), 12)
    return Posterior(Gaussian(op, np.zeros(op.range_shape, np.float32), sigma=0.05),
                     GMRF((N, N), delta=20.0))


# --------------------------------------------------------------------------------------
# Hoeffding-Bentkus bound
# --------------------------------------------------------------------------------------
def _invert(log_pvalue, r, delta):
    """Largest mu in [r, 1) whose p-value is >= delta (independent bisection)."""
    f = lambda mu: log_pvalue(mu) - math.log(delta)  # noqa: E731
    return 1.0 if f(1 - 1e-12) >= 0 else optimize.brentq(f, r, 1 - 1e-12, xtol=1e-14)


@pytest.mark.parametrize("r,n,delta", [(0.0, 100, 0.1), (0.0, 30, 0.05), (0.02, 200, 0.1),
                                       (0.1, 100, 0.1), (0.3, 50, 0.01), (0.45, 1000, 0.2),
                                       (0.0137, 300, 0.1), (0.105, 100, 0.1)])
def test_hb_bound_is_the_smaller_of_hoeffding_and_bentkus(r, n, delta):
    """Against independent inversions of each term (Bates et al. 2021): Hoeffding's
    ``exp(-n KL(r || mu))`` and Bentkus' ``e P(Binom(n, mu) <= ceil(n r))``; the HB bound
    is their minimum. At ``r = 0`` it is ``1 - delta^(1/n)`` in closed form. Catches a
    dropped Hoeffding term (Bentkus alone gives ``1 - (delta/e)^(1/n)`` at ``r = 0``),
    a dropped Bentkus term (larger at r = 0.1, n = 100), a wrong ``delta`` side. The last
    two cases have a non-integer ``n r`` (as the pooled pixel fractions RCPS feeds in
    always do): they catch ``floor(n r)`` in place of ``ceil(n r)`` in the Bentkus term
    (anti-conservative), which every integer ``n r`` case lets through."""
    kl = lambda p, q: (p * math.log(p / q) if p > 0 else 0.0) + (  # noqa: E731
        (1 - p) * math.log((1 - p) / (1 - q)) if p < 1 else 0.0)
    hoeffding = _invert(lambda mu: -n * kl(min(r, mu), mu), r, delta)
    bentkus = _invert(lambda mu: 1 + stats.binom.logcdf(math.ceil(n * r - 1e-9), n, mu),
                      r, delta)
    got = hoeffding_bentkus_bound(r, n, delta)
    assert got == pytest.approx(min(hoeffding, bentkus), abs=1e-9)
    assert r <= got <= r + math.sqrt(math.log(1 / delta) / (2 * n)) + 1e-12
    if r == 0:
        assert got == pytest.approx(1 - delta ** (1 / n), abs=1e-12)
    if (r, n) == (0.1, 100):
        assert bentkus < hoeffding          # the Bentkus term matters here


def test_hb_bound_covers_the_true_risk_in_simulation():
    """1000 samples of 50 Bernoulli(0.2) losses: the bound falls below the true mean in
    at most delta = 10 % of them (measured ~3 %; the 99.9 % binomial allowance for a
    valid bound is 13 %). With the bound replaced by the empirical risk itself ("no
    Hoeffding, no Bentkus") the rate is ~45 %: this test fails (size 0/20 seeds failed;
    power 20/20)."""
    rng = np.random.default_rng(0)
    S, n, mu, delta = 1000, 50, 0.2, 0.1
    risks = (rng.random((S, n)) < mu).mean(axis=1)
    misses = np.mean([hoeffding_bentkus_bound(float(r), n, delta) < mu for r in risks])
    assert misses <= stats.binom.ppf(0.999, S, delta) / S
    # monotone in the empirical risk: the threshold form of the RCPS scan is exact
    grid = np.linspace(0, 0.5, 60)
    ucb = [hoeffding_bentkus_bound(float(g), n, delta) for g in grid]
    assert np.all(np.diff(ucb) >= -1e-12)
    r_max = rcps_max_empirical_risk(n, 0.35, delta)
    assert hoeffding_bentkus_bound(r_max, n, delta) < 0.35
    assert hoeffding_bentkus_bound(r_max + 1e-6, n, delta) >= 0.35 - 1e-9


# --------------------------------------------------------------------------------------
# (n + 1) corrections, on synthetic scores (exact expected coverages are known)
# --------------------------------------------------------------------------------------
def _synthetic(rng, reps, n, pixels, correlated):
    """Truth errors x - mean = c * std: one c per image (perfectly correlated pixels,
    the worst case for pooling) or one per pixel (independent)."""
    shape = (reps, n, pixels)
    c = rng.standard_t(3, size=(reps, n, 1) if correlated else shape)
    std = rng.uniform(0.5, 2.0, size=shape)
    return np.broadcast_to(c, shape) * std, np.zeros(shape), std


def test_error_bound_image_level_correction_holds_with_correlated_pixels():
    """One lambda for all pixels (conformal risk control, loss = fraction of uncovered
    pixels): with fully correlated pixels pooling gains nothing and the image-level
    ``(n+1)`` correction is what makes ``P(covered) >= 1 - alpha``. n = 10, alpha = 0.2:
    expected coverage 9/11 = 0.818 with the correction; dropping it (pooled (1-alpha)
    quantile) gives 8/11 = 0.727 and this test fails (size 0/20 seeds failed; power
    20/20). 3000
    calibrations, each scored on a fresh image."""
    rng = np.random.default_rng(1)
    reps, n, alpha = 3000, 10, 0.2
    x, m, s = _synthetic(rng, reps, n + 1, 64, correlated=True)
    covered = []
    for i in range(reps):
        eb = fit_error_bound(x[i, :n], m[i, :n], s[i, :n], alpha)
        covered.append(1 - uncovered_fraction(np.abs(x[i, n:] / s[i, n:]), eb.scale)[0])
    cov, se = np.mean(covered), np.std(covered) / math.sqrt(reps)
    assert cov >= 1 - alpha - 3 * se
    assert cov <= 1 - alpha + 1 / (n + 1) + 3 * se
    assert "fresh replicate" in eb.guarantee and not eb.per_pixel


def test_error_bound_is_tight_with_independent_pixels_and_per_pixel_mode():
    """Independent pixels: pooled lambda gives coverage within 1/(n+1) of 1 - alpha
    (measured 0.9002 at n = 50); per-pixel lambda_j (the ceil((n+1)(1-alpha))-th score)
    gives exactly k/(n+1) = 10/11 at n = 10, alpha = 0.1 at every pixel; the rank without
    the +1 (9/11) fails it (per-pixel part: size 0/20 seeds failed, power 20/20)."""
    rng = np.random.default_rng(2)
    x, m, s = _synthetic(rng, 400, 51, 64, correlated=False)
    cov = [np.mean(fit_error_bound(x[i, :50], m[i, :50], s[i, :50], 0.1)
                   .coverage(x[i, 50:], m[i, 50:], s[i, 50:])) for i in range(400)]
    assert 0.9 - 0.006 <= np.mean(cov) <= 0.9 + 1 / 51
    x, m, s = _synthetic(rng, 3000, 11, 16, correlated=False)
    hits = np.array([fit_error_bound(x[i, :10], m[i, :10], s[i, :10], 0.1, per_pixel=True)
                     .coverage(x[i, 10:], m[i, 10:], s[i, 10:])[0] for i in range(3000)])
    se = hits.std() / math.sqrt(hits.size)        # pixels independent here
    assert abs(hits.mean() - 10 / 11) < 4 * se + 1e-3


def _brute_force_scores(x, m, lo, up):
    """Scores by their definition: the smallest lambda with x in [m - lambda lo, m + lambda up]."""
    return np.where(x >= m, (x - m) / up, (m - x) / lo)


@pytest.mark.parametrize("seed,n,alpha,delta", [(3, 40, 0.1, 0.1), (4, 60, 0.2, 0.05),
                                                (5, 25, 0.15, 0.2)])
def test_lambdas_equal_their_definitions_by_brute_force_scan(seed, n, alpha, delta):
    """Both fitted factors against a literal scan over every candidate (each pooled
    calibration score), on asymmetric intervals (``lower != upper``, skewed errors):

    * error bound: the smallest candidate with ``(n R_n(lambda) + 1)/(n + 1) <= alpha``,
      ``R_n`` the mean over images of the per-image uncovered fraction;
    * per-pixel bound: the ``ceil((n+1)(1-alpha))``-th smallest score at each pixel;
    * RCPS: scanning from the largest candidate down, the last one before the first
      whose Hoeffding-Bentkus bound (tested above against independent inversions) is
      ``>= alpha``.

    Exact equality, so it catches what the statistical tests cannot resolve: a pooled
    index off by one pixel (in ``fit_error_bound`` or ``_select_lambda``), the score
    direction swapped (``lower`` used above the mean), a wrong ``delta`` in the RCPS
    threshold. Deterministic: no size or power to state."""
    rng = np.random.default_rng(seed)
    p = 30
    m = rng.normal(size=(n, 5, 6))
    lo = rng.uniform(0.2, 1.0, size=m.shape)
    up = rng.uniform(1.0, 3.0, size=m.shape)
    x = m + rng.gamma(2.0, 1.0, size=m.shape) - 1.5          # skewed errors
    scores = _brute_force_scores(x, m, lo, up)
    np.testing.assert_allclose(conformity_scores(x, m, lo, up), scores, rtol=1e-15)
    risk = lambda lam: np.mean((scores > lam).reshape(n, p).mean(axis=1))  # noqa: E731
    cands = np.sort(np.unique(scores))

    eb = fit_error_bound(x, m, lo, alpha)        # symmetric: std = lo
    s_sym = np.abs(x - m) / lo
    risk_sym = lambda lam: np.mean((s_sym > lam).reshape(n, p).mean(axis=1))  # noqa: E731
    ok = [c for c in np.sort(s_sym.ravel()) if (n * risk_sym(c) + 1) / (n + 1) <= alpha + 1e-12]
    assert eb.scale == ok[0]

    k = math.ceil((n + 1) * (1 - alpha) - 1e-12)
    pp = fit_error_bound(x, m, lo, alpha, per_pixel=True)
    np.testing.assert_array_equal(pp.scale, np.sort(s_sym, axis=0)[k - 1])

    rc = fit_rcps(x, m, lo, up, alpha=alpha, delta=delta)
    lam = None
    for c in cands[::-1]:
        if hoeffding_bentkus_bound(float(risk(c)), n, delta) >= alpha:
            break
        lam = c
    assert lam is not None and rc.lam == lam
    assert rc.empirical_risk == pytest.approx(risk(lam), abs=1e-12)
    assert rc.upper_bound < alpha
    np.testing.assert_allclose(rc.risk(x, m, lo, up), (scores > lam).reshape(n, p).mean(1))


# --------------------------------------------------------------------------------------
# Guarantees on CT replicates
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pools(model):
    """For the exact method and for it with its std halved: 30 x 50 calibration
    replicates and 250 test replicates, all independent (one seeded run, split into
    disjoint sets)."""
    return {s: run_replicates(model, "exact", num_replicates=30 * 50 + 250, seed=1000,
                              std_scale=s, num_draws=100, batch_size=250)
            for s in (1.0, 0.5)}


@pytest.mark.parametrize("std_scale", [1.0, 0.5])
def test_rcps_and_error_bound_hold_on_fresh_replicates(pools, std_scale):
    """30 independent calibration sets of 50 replicates, each evaluated on the same 250
    fresh test replicates, alpha = delta = 0.1, for the exact method and for it with
    its std halved (over-confident: its own 90 % intervals miss ~41 % of pixels).

    RCPS: realised risk > alpha in at most the 95 % binomial allowance for delta (measured
    0/30 in both cases: HB is conservative); the error bound: mean realised risk <= alpha
    plus its allowance. Catches the bound replaced by the empirical risk (violations
    ~50 %), a scan in the wrong direction, a lambda not applied to the method's own
    interval. Over 10 other seeds and both scales: size 0/10 failed; power against
    "no bound" 10/10. The exact recomputation of three repetitions catches what the
    statistical part lets through (it passed with them): RCPS fitted on the std instead
    of the interval it is applied to, the error bound's risk measured on the interval
    instead of the std."""
    pool = pools[std_scale]
    cal = [pool.subset(np.arange(50 * k, 50 * (k + 1))) for k in range(30)]
    test = pool.subset(np.arange(1500, 1750))
    chk = repeated_split_check(cal, test, alpha=0.1, delta=0.1, label=f"x{std_scale}")
    assert chk.independent and chk.num_splits == 30 and chk.num_test == 250
    assert chk.rcps_violation_rate <= chk.rcps_violation_band()
    assert np.mean(chk.bound_risk) <= chk.bound_mean_risk_band()
    if std_scale == 0.5:
        assert chk.raw_risk.mean() > 0.3                 # conformal had something to repair
        assert np.median(chk.rcps_lam) > 1.5 and np.median(chk.bound_scale) > 2.5
    else:
        assert chk.raw_risk.mean() == pytest.approx(0.1, abs=0.01)
    assert "| x" in chk.table_row() and chk.table_header().count("|") > 10
    # each repetition's figures equal an independent recomputation: the error bound is
    # fitted on and applied to the std, RCPS on and to the method's own interval
    s_std = np.abs(test.truths - test.means) / test.stds
    s_int = _brute_force_scores(test.truths, test.means, test.lower, test.upper)
    for k in (0, 17, 29):
        c = cal[k]
        eb = fit_error_bound(c.truths, c.means, c.stds, 0.1)
        rc = fit_rcps(c.truths, c.means, c.lower, c.upper, alpha=0.1, delta=0.1)
        assert chk.bound_scale[k] == eb.scale and chk.rcps_lam[k] == rc.lam
        assert chk.bound_risk[k] == pytest.approx(np.mean(s_std > eb.scale), abs=1e-12)
        assert chk.rcps_risk[k] == pytest.approx(np.mean(s_int > rc.lam), abs=1e-12)
        assert chk.bound_width[k] == pytest.approx(2 * eb.scale * test.stds.mean(), rel=1e-12)
    np.testing.assert_allclose(chk.raw_risk, (s_int > 1).reshape(250, -1).mean(axis=1))


def test_conformal_repairs_meanfield_vi(model):
    """Mean-field VI on a correlated CT posterior: std 1/sqrt(P_ii), too small; replicated
    calibration shows the under-coverage (measured: 0.875 at 90 %, MSE-ball 0.35 at 90 %),
    and the std-based error bound fitted on 25 of 50 replicates restores >= 90 % on the
    other 25 (mean over 50 random splits); RCPS on 25 replicates covers > 90 % of the
    other 25. Catches a bound that does not rescale (coverage stays ~0.875). Not repeated
    over seeds (mean-field VI costs ~0.2 s per replicate)."""
    rep = run_replicates(model, "meanfield", truths="prior", num_replicates=50, seed=11,
                         num_draws=200)
    report = summarize_calibration(rep)
    assert report.coverage_at(0.9) < 0.89 and not report.check()["pixel"]
    chk = repeated_split_check(rep, alpha=0.1, delta=0.1, num_splits=50, num_calibration=25)
    assert not chk.independent
    assert np.mean(chk.bound_risk) <= chk.bound_mean_risk_band()
    assert np.median(chk.bound_scale) > 1.645
    rc = fit_rcps(rep.truths[:25], rep.means[:25], rep.lower[:25], rep.upper[:25],
                  alpha=0.1, delta=0.1)
    assert rc.upper_bound < 0.1 and rc.lam > 1.0
    lo, hi = rc.interval(rep.means[25:], rep.lower[25:], rep.upper[25:])
    assert np.mean((lo <= rep.truths[25:]) & (rep.truths[25:] <= hi)) > 0.9


def test_bad_input_is_refused_with_the_argument_named():
    """Each invalid argument raises with its name in the message, and the minimum
    calibration sizes are the derived ones (``ceil(1/alpha) - 1``; the smallest ``n``
    with ``1 - delta^(1/n) < alpha``: 22 at alpha = delta = 0.1). Catches a dropped or
    misnamed validation and an off-by-one minimum size."""
    x = np.zeros((30, 4, 4))
    with pytest.raises(ValueError, match="'alpha'"):
        fit_error_bound(x, x, x + 1, alpha=1.0)
    with pytest.raises(ValueError, match="'means'"):
        fit_error_bound(x, np.zeros((30, 4, 5)), x + 1)
    with pytest.raises(ValueError, match="'lower'"):
        fit_rcps(x, x, x - 1)
    with pytest.raises(ValueError, match="'truths'.*too few.*at least 9"):
        fit_error_bound(x[:5], x[:5], x[:5] + 1, alpha=0.1)
    with pytest.raises(ValueError, match="'truths'.*too few.*at least 22"):
        fit_rcps(x[:21], x[:21], x[:21] + 1, alpha=0.1, delta=0.1)
    with pytest.raises(ValueError, match="'delta'"):
        fit_rcps(x, x, x + 1, alpha=0.1, delta=0.0)
    with pytest.raises(ValueError, match="'risk_hat'"):
        hoeffding_bentkus_bound(1.5, 10, 0.1)
    with pytest.raises(ValueError, match="'n'"):
        hoeffding_bentkus_bound(0.1, 0, 0.1)
    with pytest.raises(ValueError, match="'truths'"):
        conformity_scores(np.zeros(4), np.zeros(4), np.ones(4))
    assert min_calibration_size(0.1, 0.1) == 22 and min_calibration_size(0.05) == 19
    # 22 replicates suffice exactly when the error is zero everywhere
    rc = fit_rcps(x[:22], x[:22], x[:22] + 1, alpha=0.1, delta=0.1)
    assert rc.empirical_risk == 0.0 and rc.upper_bound < 0.1


def test_counts_survive_float_round_off():
    """Counts written as float products are floored with a round-off guard
    (``uq._counts.whole_count``): at n = 24 replicates of 4 pixels and alpha = 0.29 the
    pooled bound may leave 4 (0.29 * 25 - 1) = 25 pixels uncovered, computed as
    24.999999999999996; RCPS's selection at risk 0.29 of 100 scores allows 29
    (28.999999999999996). Catches a plain ``floor`` at either site (one more score
    kept above lambda: lambda moves one order statistic up)."""
    from uqrecon.uq._counts import whole_count
    from uqrecon.uq.conformal import _select_lambda

    assert whole_count(0.29 * 100) == 29 and isinstance(whole_count(2.5), int)
    assert whole_count(np.array([0.29 * 100, 2.5])).tolist() == [29, 2]
    rng = np.random.default_rng(0)
    truths = rng.normal(size=(24, 2, 2))
    bound = fit_error_bound(truths, np.zeros_like(truths), np.ones_like(truths),
                            alpha=0.29)
    assert bound.scale == np.sort(np.abs(truths).ravel())[96 - 1 - 25]
    assert _select_lambda(np.arange(100.0), 10, 0.29) == 70.0

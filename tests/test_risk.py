"""Downstream risk (uqrecon.uq.risk), issue 12 item 5: ROI quantity posteriors, double
sampling of deep-UQ results, the reliability score and the abstention rule."""

import math

import numpy as np
import pytest
from scipy import special

from uqrecon.result import Result
from uqrecon.uq.risk import (Quantity, abstain, area_above, auroc, double_sampling,
                             evaluate_abstention, evaluate_quantity, reliability_score,
                             ring_around, roi_contrast, roi_mean, roi_posterior,
                             threshold_for_error, threshold_for_flag_rate)

SHAPE = (6, 6)


def _mask():
    m = np.zeros(SHAPE, bool)
    m[2:4, 2:4] = True
    return m


def _gaussian(seed=0, n=36, rank=5):
    """A correlated Gaussian (dense SPD covariance with strong off-diagonal structure)."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, rank))
    d = rng.uniform(0.05, 0.2, n)
    cov = np.diag(d) + f @ f.T * 0.1
    mean = rng.normal(size=n)
    return mean.reshape(SHAPE), d, f * math.sqrt(0.1), cov


def test_quantities_evaluate_as_defined():
    """Mean, contrast and area on hand-made images (exact arithmetic): catches a wrong
    normalisation, ring (4- instead of 8-neighbourhood) or threshold comparison (a pixel
    equal to the threshold does not exceed it: catches >=), an ignored pixel area, and
    weights applied in the wrong pixel order (an off-centre region on a ramp image; the
    centred 2x2 mask alone is symmetric under flips and transposes)."""
    m = _mask()
    ring = ring_around(m, 1)
    assert ring.sum() == 16 - 4 and not np.any(ring & m)
    img = np.where(m, 3.0, 0.0) + np.where(ring, 1.0, 0.0)
    assert evaluate_quantity(roi_mean(m), img) == pytest.approx(3.0)
    assert evaluate_quantity(roi_contrast(m, ring_width=1), img) == pytest.approx(2.0)
    area = area_above(0.5, shape=SHAPE, pixel_area=0.25)
    assert evaluate_quantity(area, img) == pytest.approx(0.25 * (4 + 12))
    # pixels equal to the threshold do not count: ring pixels are exactly 1.0
    assert evaluate_quantity(area_above(1.0, shape=SHAPE), img) == pytest.approx(4.0)
    ramp = np.arange(36.0).reshape(SHAPE)
    off = np.zeros(SHAPE, bool)
    off[0:2, 1:4] = True                       # values 1, 2, 3, 7, 8, 9: mean 5
    assert evaluate_quantity(roi_mean(off), ramp) == pytest.approx(5.0)
    batch = np.stack([img, 2 * img])
    np.testing.assert_allclose(evaluate_quantity(roi_mean(m), batch[None]), [[3.0, 6.0]])


@pytest.mark.parametrize("kind", ["diag", "lowrank", "dense"])
def test_linear_quantity_on_a_gaussian_result_is_exact(kind):
    """``w . m`` and ``w^T C w`` from each factor kind equal the dense computation; the
    contrast's variance differs from the diagonal-only sum by > 20 % (asserted), so
    ignoring correlations (or the low-rank factor) fails."""
    mean, d, f, cov = _gaussian()
    g = {"diag": {"kind": "diag", "mean": mean, "diag": np.diag(cov).reshape(SHAPE)},
         "lowrank": {"kind": "lowrank", "mean": mean, "diag": d.reshape(SHAPE), "factor": f},
         "dense": {"kind": "dense", "mean": mean, "cov": cov}}[kind]
    res = Result.from_gaussian(g)
    full = cov if kind != "diag" else np.diag(np.diag(cov))
    for q in (roi_mean(_mask()), roi_contrast(_mask())):
        p = roi_posterior(res, q, level=0.9, num_draws=50)[q.name]
        w = q.weights.ravel()
        assert p.method == "gaussian_exact"
        assert p.mean == pytest.approx(w @ mean.ravel(), rel=1e-6, abs=1e-9)
        assert p.std == pytest.approx(math.sqrt(w @ full @ w), rel=1e-5)
        z = special.ndtri(0.95)
        assert p.interval == pytest.approx((p.mean - z * p.std, p.mean + z * p.std))
        assert p.draws.shape == (50,)
    w = roi_contrast(_mask()).weights.ravel()
    assert abs(w @ cov @ w / (w ** 2 @ np.diag(cov)) - 1) > 0.2


def test_draws_path_agrees_with_the_closed_form():
    """20000 exact draws of the same Gaussian, kept as Result draws: the ROI-mean and
    contrast posteriors from the draws match the closed form, mean within 4.5 standard
    errors and std within ``1 +/- 4.5 sqrt(1/(2N)) = 1 +/- 0.023`` (false alarm < 1e-4
    per check). Power: a draws path that dropped correlations (contrast std off by
    > 20 %, see the test above) or evaluated the quantity on the wrong axis fails."""
    mean, _, _, cov = _gaussian(1)
    N = 20000
    rng = np.random.default_rng(2)
    draws = mean.ravel() + rng.normal(size=(N, 36)) @ np.linalg.cholesky(cov).T
    gauss = Result.from_gaussian({"kind": "dense", "mean": mean, "cov": cov})
    sampled = Result.from_draws(draws.reshape(1, N, *SHAPE))
    for q in (roi_mean(_mask()), roi_contrast(_mask())):
        exact = roi_posterior(gauss, q)[q.name]
        emp = roi_posterior(sampled, q)[q.name]
        assert emp.method == "draws" and emp.draws.shape == (N,)
        assert abs(emp.mean - exact.mean) < 4.5 * exact.std / math.sqrt(N)
        assert abs(emp.std / exact.std - 1) < 4.5 * math.sqrt(1 / (2 * N))
        # and the interval agrees to Monte Carlo accuracy
        assert emp.interval == pytest.approx(exact.interval, abs=0.05 * exact.std)


def test_area_above_threshold_from_gaussian_draws():
    """Nonlinear quantity on a diagonal Gaussian Result (no draws kept: exact draws from
    the factors): E[area] = sum_i Phi((m_i - t)/s_i), within 4.5 standard errors of the
    4000-draw mean (SE from the independent-Bernoulli variance). A flipped comparison
    (x < t) or a region ignored fails by many standard errors (asserted)."""
    rng = np.random.default_rng(3)
    mean = rng.uniform(0, 1, SHAPE)
    std = rng.uniform(0.05, 0.3, SHAPE)
    res = Result.from_gaussian({"kind": "diag", "mean": mean, "diag": std ** 2})
    region = np.zeros(SHAPE, bool)
    region[1:5, :4] = True
    q = area_above(0.5, region=region)
    p = roi_posterior(res, q, key=0, num_draws=4000)[q.name]
    prob = special.ndtr((mean - 0.5) / std)[region]
    se = math.sqrt(np.sum(prob * (1 - prob)) / 4000)
    assert p.method == "gaussian_draws"
    assert abs(p.mean - prob.sum()) < 4.5 * se
    assert abs(p.std ** 2 / np.sum(prob * (1 - prob)) - 1) < 0.15
    assert abs((region.sum() - prob.sum()) - prob.sum()) > 10 * se    # flipped test fails
    assert abs(special.ndtr((mean - 0.5) / std).sum() - prob.sum()) > 10 * se


def _mixture(seed=4, members=8):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(members, *SHAPE)) * 0.3 + 1.0
    variances = rng.uniform(0.01, 0.2, (members, *SHAPE))
    return means, variances


def test_double_sampling_splits_total_variance_into_epistemic_plus_aleatoric():
    """S = 8 Gaussian members, ROI mean (linear): closed forms ``epistemic = Var_s w.m_s``
    and ``aleatoric = mean_s sum w^2 v_s``. With 4000 inner draws per member both
    estimates are within 8 % (aleatoric: SE ~1.1 % per the chi-square of 32000 draws;
    epistemic: its inner-sample inflation aleatoric/K is < 0.1 %), and total = sum
    exactly. Ignoring the epistemic part (all members at one mean) gives epistemic 0,
    ignoring the aleatoric part gives aleatoric 0: both fail (each part > 20 % of the
    total, asserted)."""
    means, variances = _mixture()
    q = roi_mean(_mask())
    w = q.weights.ravel()
    ep_true = float(np.var(means.reshape(8, -1) @ w))
    al_true = float(np.mean(variances.reshape(8, -1) @ w ** 2))
    assert min(ep_true, al_true) > 0.2 * (ep_true + al_true)
    p = double_sampling(q, means, variances, key=0, num_inner=4000)[q.name]
    assert p.method == "double_sampling"
    assert p.epistemic == pytest.approx(ep_true, rel=0.08)
    assert p.aleatoric == pytest.approx(al_true, rel=0.08)
    assert p.std ** 2 == pytest.approx(p.epistemic + p.aleatoric, rel=1e-9)
    assert p.mean == pytest.approx(float(np.mean(means.reshape(8, -1) @ w)), abs=0.01)


def test_deep_result_draws_are_split_like_uqrecon_deep_stores_them():
    """A deep-UQ Result built by ``uqrecon.deep.uq.to_result`` (the storage contract:
    draws grouped (per member, members), ``num_members``): ``roi_posterior`` recovers the
    same closed-form split within 10 %. Fails if deep changes its draw layout (grouping
    by the wrong axis mixes members: the epistemic estimate collapses to ~aleatoric/K).
    Power, measured over 100 other draw keys: false alarm 0/100; a sample (ddof=1)
    epistemic variance over the 8 members (x8/7) fails 100/100."""
    import jax
    from uqrecon.deep.uq import Predictions, to_result
    means, variances = _mixture(5)
    res = to_result(Predictions(means.astype(np.float32), variances.astype(np.float32)),
                    jax.random.PRNGKey(0), method="ensemble", num_draws=8 * 3000)
    q = roi_mean(_mask())
    w = q.weights.ravel()
    ep_true = float(np.var(means.reshape(8, -1) @ w))
    al_true = float(np.mean(variances.reshape(8, -1) @ w ** 2))
    p = roi_posterior(res, q)[q.name]
    assert p.method == "draws"
    assert p.epistemic == pytest.approx(ep_true, rel=0.1)
    assert p.aleatoric == pytest.approx(al_true, rel=0.1)


def test_abstention_evaluation_tells_noise_from_an_informative_score():
    """2000 images, 20 % bad (error above its 80th percentile). A score independent of
    the error has AUROC 0.5 +/- 0.05 (3 standard errors: SE = 0.016) and precision near
    the base rate; a score = error x lognormal noise has AUROC > 0.75 and precision >
    0.5. An evaluation that ignored the scores, or compared them with the wrong labels,
    cannot produce both."""
    rng = np.random.default_rng(6)
    err = rng.lognormal(0.0, 0.5, 2000)
    cutoff = np.quantile(err, 0.8)
    noise_score = rng.normal(size=2000)
    informative = err * rng.lognormal(0.0, 0.3, 2000)
    for score, informative_ in ((noise_score, False), (informative, True)):
        thr = threshold_for_flag_rate(score[:1000], 0.2)
        ev = evaluate_abstention(score[1000:], err[1000:], thr, cutoff)
        assert abs(ev["flag_rate"] - 0.2) < 0.05          # binomial SE 0.013 + quantile noise
        if informative_:
            assert ev["auroc"] > 0.75 and ev["precision"] > 0.5 and ev["spearman"] > 0.5
            assert ev["accepted_error"] < ev["all_error"]
        else:
            assert abs(ev["auroc"] - 0.5) < 0.05 and abs(ev["precision"] - ev["bad_rate"]) < 0.1


def test_abstention_rules_on_a_small_example():
    """Exact values: AUROC with ties, precision/recall, the flag-rate quantile and the
    selective-risk threshold (largest threshold whose accepted mean error <= target).
    Catches: a flag-rate threshold that flags other than floor(rate n) images (the former
    quantile rule flagged 0 of 2 at rate 0.5 and 0 of 4 at 0.3), ties ranked ordinally,
    precision over the bad count, numpy's linear quantile, tie groups split, a strict ``< max_error`` (target met with equality: 1.0), an error
    equal to the cutoff counted as bad ("exceeds"), and Pearson in place of Spearman
    (errors with ties: rho = 0.6375 vs Pearson 0.7071)."""
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    errors = np.array([1.0, 1.0, 2.0, 5.0, 1.0, 9.0])
    assert auroc(scores, errors > 3) == pytest.approx(7 / 8)
    assert auroc(np.ones(4), [True, False, True, False]) == 0.5
    ev = evaluate_abstention(scores, errors, 0.35, 3.0)
    assert (ev["flag_rate"], ev["precision"], ev["recall"]) == (0.5, 2 / 3, 1.0)
    np.testing.assert_array_equal(abstain(scores, 0.35), scores > 0.35)
    # flag rate: the floor(rate n) largest scores lie above the threshold (numpy's
    # "higher" 1 - rate quantile, used before, gave 0.4 here and flagged 2 of 6)
    assert threshold_for_flag_rate(scores, 0.5) == 0.3
    for s_, rate, flagged in (([1.0, 2.0], 0.5, 1), ([1.0, 2.0, 3.0, 4.0], 0.3, 1),
                              (np.arange(1, 11) / 10, 0.3, 3), ([5.0, 1.0, 3.0], 0.2, 0),
                              (np.arange(100.0), 0.29, 29)):   # 0.29 * 100 < 29 in floats
        assert int(np.sum(abstain(s_, threshold_for_flag_rate(s_, rate)))) == flagged
    assert threshold_for_error(scores, errors, 1.5) == 0.3      # mean(1, 1, 2) = 1.33
    assert threshold_for_error(scores, errors, 0.5) == -math.inf
    assert threshold_for_error(scores, errors, 1.0) == 0.2      # mean(1, 1) = 1.0 <= 1.0
    # cutoff equal to an error: 5.0 does not exceed 5.0, only the 9.0 image is bad
    ev5 = evaluate_abstention(scores, errors, 0.35, 5.0)
    assert (ev5["bad_rate"], ev5["precision"], ev5["recall"]) == (1 / 6, 1 / 3, 1.0)
    # Spearman with average ranks: scores ranks 1..6, errors ranks (2, 2, 4, 5, 2, 6)
    r_s, r_e = np.arange(1.0, 7.0), np.array([2.0, 2.0, 4.0, 5.0, 2.0, 6.0])
    rho = np.corrcoef(r_s, r_e)[0, 1]
    assert ev["spearman"] == pytest.approx(rho, rel=1e-12)
    assert abs(np.corrcoef(scores, errors)[0, 1] - rho) > 0.05     # Pearson differs
    # a tie is accepted or flagged together: alone, the first 1.0 (error 1) would pass
    assert threshold_for_error([1.0, 1.0, 2.0], [1.0, 3.0, 3.0], 1.5) == -math.inf


def test_reliability_scores():
    """Expected error = sqrt(mean variance); relative contrast std from the posterior.
    Catches the mean of the stds (smaller than the RMS by Jensen; the pixel variances here
    vary) and a variance in place of the contrast's std."""
    mean, _, _, cov = _gaussian(7)
    res = Result.from_gaussian({"kind": "dense", "mean": mean, "cov": cov})
    assert reliability_score(res) == pytest.approx(math.sqrt(np.mean(np.diag(cov))), rel=1e-6)
    q = roi_contrast(_mask())
    p = roi_posterior(res, q)[q.name]
    assert reliability_score(res, "relative_contrast_std", q) == pytest.approx(
        p.std / abs(p.mean), rel=1e-6)


def test_prefer_and_key_select_the_draws():
    """``prefer='draws'`` takes a linear quantity from exact Gaussian draws drawn with
    ``key`` (equal to ``evaluate_quantity`` on ``Result.sample(key, n)``), the same key
    gives the same draws and another key other draws; ``prefer='gaussian'`` without factors
    is refused. Catches an ignored ``prefer`` or an ignored ``key``."""
    mean, _, _, cov = _gaussian(8)
    res = Result.from_gaussian({"kind": "dense", "mean": mean, "cov": cov})
    q = roi_contrast(_mask())
    p = roi_posterior(res, q, prefer="draws", key=3, num_draws=64)[q.name]
    want = evaluate_quantity(q, res.sample(3, 64))
    assert p.method == "gaussian_draws"
    np.testing.assert_allclose(p.draws, want, rtol=1e-12)
    assert p.mean == pytest.approx(np.mean(want), rel=1e-12)
    assert p.std == pytest.approx(np.std(want), rel=1e-12)
    other = roi_posterior(res, q, prefer="draws", key=4, num_draws=64)[q.name]
    assert not np.allclose(other.draws, p.draws)
    with pytest.raises(ValueError, match="prefer='gaussian'"):
        roi_posterior(Result.from_draws(np.zeros((1, 3, *SHAPE))), q, prefer="gaussian")


def test_bad_input_names_the_argument():
    """Each invalid argument raises with its name in the message (catches a missing
    validation or a message naming another argument)."""
    res = Result(np.zeros(SHAPE), np.ones(SHAPE))
    with pytest.raises(ValueError, match="draws nor Gaussian"):
        roi_posterior(res, roi_mean(_mask()))
    with pytest.raises(ValueError, match="mask"):
        roi_mean(np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="level"):
        roi_posterior(Result.from_draws(np.zeros((1, 3, *SHAPE))), roi_mean(_mask()), level=1.5)
    with pytest.raises(ValueError, match="shape"):
        roi_posterior(Result.from_draws(np.zeros((1, 3, 4, 4))), roi_mean(_mask()))
    with pytest.raises(TypeError, match="quantities"):
        roi_posterior(Result.from_draws(np.zeros((1, 3, *SHAPE))), ["mean"])
    with pytest.raises(ValueError, match="variances"):
        double_sampling(roi_mean(_mask()), np.zeros((2, *SHAPE)), np.zeros((3, *SHAPE)))
    with pytest.raises(ValueError, match="rate"):
        threshold_for_flag_rate([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="errors"):
        evaluate_abstention([1.0, 2.0], [1.0], 0.5, 1.0)
    with pytest.raises(ValueError, match="kind"):
        reliability_score(Result.from_draws(np.zeros((1, 3, *SHAPE))), "entropy")
    with pytest.raises(ValueError, match="overlap"):
        roi_contrast(_mask(), background=_mask())
    assert isinstance(roi_mean(_mask()), Quantity)

"""compare / compare_table: values against the metric definitions and known cases."""

import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from uqrecon.result import Result  # noqa: E402
from uqrecon.uq import compare, compare_table  # noqa: E402
from uqrecon.uq import metrics as M  # noqa: E402

SHAPE = (12, 12)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n = SHAPE[0] * SHAPE[1]
    g = {"kind": "lowrank", "mean": rng.random(SHAPE), "diag": rng.uniform(0.01, 0.02, n),
         "factor": 0.1 * rng.normal(size=(n, 3))}
    ref = Result.from_gaussian(g, provenance={"method": "exact"})
    truth = ref.sample(jax.random.PRNGKey(0), 1)[0].astype(np.float64)
    draws = ref.sample(jax.random.PRNGKey(1), 2000).reshape(4, 500, *SHAPE)
    mc = Result.from_draws(draws, provenance={"method": "mcmc"},
                           diagnostics={"ess_bulk": np.full(SHAPE, 300.0),
                                        "rhat": np.full(SHAPE, 1.001), "num_grad_evals": 5000},
                           timings={"compile_s": 2.0, "run_s": 4.0})
    return ref, mc, truth


def test_self_comparison(problem):
    """A Gaussian against itself: zero errors / KL / W1, unit std ratio, exact nominal
    reference mass in its own intervals (catches a reference-mass formula with a std
    mis-scaled by 0.95, a W1 or marginals built from variances, a W2 cross term without
    its factor 2), truth error and SSIM with the right arguments (catches the truth
    replaced by the reference mean, or SSIM's arguments swapped)."""
    ref, _, truth = problem
    c = compare(ref, ref, truth)
    assert c["mean_error"] == 0 and c["std_error"] == 0 and c["std_ratio"] == 1
    assert c["kl"] == pytest.approx(0.0, abs=1e-9) and c["w1_marginal"] == 0
    assert c["w2"] < 1e-5
    for a in (50, 90, 95):                    # exact Gaussian mass inside its own intervals
        assert c[f"ref_coverage_{a}"] == pytest.approx(a / 100, abs=1e-9)
    assert c["truth_error"] == pytest.approx(np.linalg.norm(ref.mean - truth)
                                             / np.linalg.norm(truth))
    assert c["ssim"] == pytest.approx(M.ssim(ref.mean, truth))


def test_sampled_result_against_gaussian_reference(problem):
    """2000 exact draws against their Gaussian. Exact checks: mean error relative to the
    reference, W1 against scipy (rel 0.02), truth coverage of the draws' own quantiles,
    PSNR / Pearson / Spearman / AUSE of |mean - truth| against the result's std computed
    here (catches signed errors, variance for std, PSNR with swapped arguments, AUSE
    ranked by the reference's std), convergence and ESS per run second (catches dividing
    by compile + run time), and reference draws inside a Gaussian interval (catches
    coverage measured on the result itself). Statistical: reference mass in the draws'
    intervals within 0.02 of nominal; measured over 400 other draw keys: false alarm 0/400;
    a sampler with std x0.95 fails 155/200 keys, x0.9 and x0.8 200/200."""
    ref, mc, truth = problem
    c = compare(mc, ref, truth)
    assert c["w2"] is None and c["kl"] is None       # the MCMC result has no factors
    assert c["mean_error"] == pytest.approx(np.linalg.norm(mc.mean - ref.mean)
                                            / np.linalg.norm(ref.mean))
    # 2000 exact draws: marginal quantiles are close, so intervals hold ~nominal mass
    for a in (50, 90, 95):
        assert abs(c[f"ref_coverage_{a}"] - a / 100) < 0.02
    # W1 of each pixel's draws to its exact Gaussian marginal: scipy's empirical W1 to
    # the Gaussian's quantiles at the midpoints of 20000 equal-mass bins
    from scipy import special, stats
    d = mc.pooled_draws().reshape(-1, SHAPE[0] * SHAPE[1])
    q = special.ndtri((np.arange(20000) + 0.5) / 20000)
    mu, sd = ref.mean.ravel(), ref.std.ravel()
    want = np.mean([stats.wasserstein_distance(d[:, i], mu[i] + sd[i] * q)
                    for i in range(d.shape[1])])
    assert c["w1_marginal"] == pytest.approx(want, rel=0.02)
    lo = np.quantile(d, 0.05, axis=0).reshape(SHAPE)
    hi = np.quantile(d, 0.95, axis=0).reshape(SHAPE)
    assert c["coverage_90"] == pytest.approx(np.mean((lo <= truth) & (truth <= hi)),
                                             abs=1.5 / truth.size)
    # truth-based entries, from their definitions (|error| against the result's std)
    from scipy import stats as sstats
    err, sd = np.abs(mc.mean - truth).ravel(), mc.std.ravel()
    assert c["psnr"] == pytest.approx(
        10 * np.log10(np.ptp(truth) ** 2 / np.mean((mc.mean - truth) ** 2)), rel=1e-9)
    assert c["pearson"] == pytest.approx(sstats.pearsonr(err, sd)[0], rel=1e-9)
    assert c["spearman"] == pytest.approx(sstats.spearmanr(err, sd)[0], rel=1e-9)
    assert c["ause"] == pytest.approx(M.sparsification(err, sd)["ause"], rel=1e-12)
    assert c["ause"] != pytest.approx(M.sparsification(err, ref.std)["ause"], rel=1e-3)
    assert c["ess_bulk_min"] == 300 and c["rhat_max"] == 1.001
    assert c["ess_min_per_s"] == pytest.approx(75.0) and c["num_grad_evals"] == 5000
    # reference with draws: fraction of reference draws x pixels inside
    c2 = compare(ref, mc)
    d = mc.pooled_draws()
    lo, hi = ref.interval(0.5)
    assert c2["ref_coverage_50"] == np.mean((lo <= d) & (d <= hi))


def test_diagonal_gaussians_closed_forms(problem):
    """Diagonal pair with mean shift 0.1 and std x2: std ratio 2, W2 and KL closed forms
    (derived in the comments) and W1 by 40000-point quantile integration (rel 1e-3):
    catches the KL direction swapped, the diagonal W2 on variances, a wrong folded-normal
    constant or std in W1, the pixel mean of W1 replaced by a median; with max_dense=10
    the dense W2 is skipped with a note while KL (Woodbury) still matches the dense form."""
    ref, _, _ = problem
    a = Result.from_gaussian({"kind": "diag", "mean": ref.mean, "diag": ref.variance})
    b = Result.from_gaussian({"kind": "diag", "mean": ref.mean + 0.1, "diag": 4 * ref.variance})
    c = compare(b, a)
    assert c["std_ratio"] == pytest.approx(2.0)
    w2 = np.sqrt(np.sum(0.01 + ref.variance))          # |dm|^2 + sum (2s - s)^2
    assert c["w2"] == pytest.approx(w2, rel=1e-10)
    kl = 0.5 * np.sum(4 + 0.01 / ref.variance - 1 - np.log(4))
    assert c["kl"] == pytest.approx(kl, rel=1e-10)
    # W1 between N(m1, s1^2) and N(m0, s0^2) by numerical quantile integration
    from scipy import special
    u = (np.arange(40000) + 0.5) / 40000
    z = special.ndtri(u)[:, None]
    w1 = np.mean(np.abs((b.mean.ravel() + b.std.ravel() * z)
                        - (a.mean.ravel() + a.std.ravel() * z)), axis=0)
    assert c["w1_marginal"] == pytest.approx(np.mean(w1), rel=1e-3)
    # too large for dense W2 with a low-rank side: reported as None with a note
    c3 = compare(ref, a, max_dense=10)
    assert c3["w2"] is None and any("max_dense" in n for n in c3.notes)
    assert c3["kl"] == pytest.approx(_dense_kl(ref.gaussian, a.gaussian), rel=1e-8)


# -- independent dense references (numpy / scipy), not the package's metric code -------
def _dense(g):
    """Mean and dense covariance of Gaussian factors, in float64 numpy."""
    m = np.asarray(g["mean"], np.float64).ravel()
    if g["kind"] == "dense":
        return m, np.asarray(g["cov"], np.float64)
    C = np.diag(np.asarray(g["diag"], np.float64).ravel())
    if g["kind"] == "lowrank":
        F = np.asarray(g["factor"], np.float64)
        C = C + F @ F.T
    return m, C


def _dense_kl(g0, g1):
    """KL(N0 || N1) = (tr(S1^-1 S0) + dm^T S1^-1 dm - n + log det S1 - log det S0) / 2."""
    m0, S0 = _dense(g0)
    m1, S1 = _dense(g1)
    dm = m1 - m0
    S1inv = np.linalg.inv(S1)
    return 0.5 * (np.trace(S1inv @ S0) + dm @ S1inv @ dm - m0.size
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


def _dense_w2(g0, g1):
    """W2^2 = |dm|^2 + tr(S0 + S1 - 2 (S1^1/2 S0 S1^1/2)^1/2), by scipy's sqrtm."""
    import scipy.linalg
    m0, S0 = _dense(g0)
    m1, S1 = _dense(g1)
    r1 = np.real(scipy.linalg.sqrtm(S1))
    cross = np.real(scipy.linalg.sqrtm(r1 @ S0 @ r1))
    return float(np.sqrt(np.sum((m0 - m1) ** 2) + np.trace(S0 + S1 - 2 * cross)))


def _random_gaussian(kind, rng, n, shape, rank=4):
    m = rng.normal(size=shape)
    if kind == "diag":
        return {"kind": "diag", "mean": m, "diag": rng.uniform(0.01, 0.05, n)}
    if kind == "lowrank":
        return {"kind": "lowrank", "mean": m, "diag": rng.uniform(0.01, 0.05, n),
                "factor": 0.1 * rng.normal(size=(n, rank))}
    B = rng.normal(size=(n, n)) / np.sqrt(n)
    return {"kind": "dense", "mean": m, "cov": 0.05 * B @ B.T + 0.01 * np.eye(n)}


@pytest.mark.parametrize("kinds", [("lowrank", "lowrank"), ("diag", "lowrank"),
                                   ("lowrank", "diag"), ("dense", "lowrank"),
                                   ("diag", "dense")])
def test_w2_and_kl_against_dense_closed_forms(kinds):
    """KL(result || reference) and W2 against formulas evaluated here with dense numpy /
    scipy matrices (the package uses Woodbury, determinant-lemma and eigen routes)."""
    shape = (6, 5)
    n = 30
    rng = np.random.default_rng(11)
    g0 = _random_gaussian(kinds[0], rng, n, shape)
    g1 = _random_gaussian(kinds[1], rng, n, shape)
    c = compare(Result.from_gaussian(g0), Result.from_gaussian(g1))
    assert c["kl"] == pytest.approx(_dense_kl(g0, g1), rel=1e-8)
    assert c["w2"] == pytest.approx(_dense_w2(g0, g1), rel=1e-6)


@pytest.mark.parametrize("scale", [0.6, 1.7])
def test_scaled_gaussian_std_ratio_w2_kl_are_the_closed_forms(problem, scale):
    """A result that is the reference with every std multiplied by s: std_ratio = s,
    std_error = |s - 1|, mean_error = 0, W2 = |1 - s| sqrt(tr S),
    KL = n (s^2 - 1 - log s^2) / 2, and the truth coverage is that of the *result's*
    intervals m -/+ z s std (catches coverage taken from the reference's intervals, the
    KL direction swapped, errors normalised by the result, RMS std in the ratio)."""
    ref, _, truth = problem
    g = ref.gaussian
    scaled = Result.from_gaussian({"kind": "lowrank", "mean": g["mean"],
                                   "diag": scale ** 2 * g["diag"],
                                   "factor": scale * g["factor"]})
    c = compare(scaled, ref, truth)
    n = ref.mean.size
    from scipy import special
    for a in (50, 90, 95):
        half = special.ndtri((1 + a / 100) / 2) * scale * ref.std
        assert c[f"coverage_{a}"] == np.mean(np.abs(truth - ref.mean) <= half)
    tr = float(np.sum(ref.variance))
    assert c["std_ratio"] == pytest.approx(scale, rel=1e-6)
    assert c["std_error"] == pytest.approx(abs(scale - 1), rel=1e-6)
    assert c["mean_error"] == 0
    assert c["w2"] == pytest.approx(abs(1 - scale) * np.sqrt(tr), rel=1e-5)
    assert c["kl"] == pytest.approx(0.5 * n * (scale ** 2 - 1 - np.log(scale ** 2)), rel=1e-6)


def test_coverage_of_draws_and_truth_by_the_distribution_itself_is_nominal():
    """The result IS the distribution the reference draws (and the truth) come from.
    Independent pixels (diagonal covariance), so each count is binomial: the observed
    coverage must be within 4 binomial standard deviations of the nominal level."""
    shape = (64, 64)
    n = shape[0] * shape[1]
    rng = np.random.default_rng(12)
    g = {"kind": "diag", "mean": rng.normal(size=shape), "diag": rng.uniform(0.1, 2.0, n)}
    gauss = Result.from_gaussian(g, provenance={"method": "exact"})
    sd = np.sqrt(g["diag"]).reshape(shape)
    num = 200
    draws = g["mean"] + sd * rng.normal(size=(2, num // 2, *shape))
    truth = g["mean"] + sd * rng.normal(size=shape)
    c = compare(gauss, Result.from_draws(draws), truth)
    for a in (50, 90, 95):
        p = a / 100
        assert abs(c[f"ref_coverage_{a}"] - p) < 4 * np.sqrt(p * (1 - p) / (num * n))
        assert abs(c[f"coverage_{a}"] - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_outputs_and_table(problem):
    """JSON / markdown layout, row order and names of compare_table, and that its keyword
    arguments reach compare (levels=(0.8,) adds coverage_80: catches dropped kwargs)."""
    ref, mc, truth = problem
    c = compare(mc, ref, truth)
    d = json.loads(c.to_json())["metrics"]
    assert d["method"] == "mcmc" and d["reference"] == "exact" and d["w2"] is None
    assert "| coverage_90 |" in str(c) and dict(c) == c.to_dict() | {"w2": None, "kl": None}
    t = compare_table({"mc": mc, "ref": ref}, ref, truth, reference_name="gold")
    md = t.to_markdown().splitlines()
    assert md[0].startswith("| method | reference |") and md[2].startswith("| mc | gold |")
    assert len(t.rows) == 2 and "run_s" in t.columns
    rows = json.loads(t.to_json())["rows"]
    assert rows[1]["mean_error"] == 0.0
    assert compare_table([mc], ref).rows[0]["method"] == "mcmc"
    t8 = compare_table([mc], ref, truth, levels=(0.8,))
    assert "coverage_80" in t8.columns and "coverage_90" not in t8.columns


def test_bad_inputs(problem):
    """Type, shape and empty-input errors name the argument; a point-estimate reference
    (std 0) gives None for std_error / std_ratio with a note (catches 1.0 or inf)."""
    ref, mc, truth = problem
    with pytest.raises(TypeError, match="result"):
        compare(ref.mean, ref)
    with pytest.raises(ValueError, match="shape"):
        compare(Result(np.zeros((3, 3)), np.ones((3, 3))), ref)
    with pytest.raises(ValueError, match="truth"):
        compare(mc, ref, truth[:5])
    with pytest.raises(ValueError, match="results"):
        compare_table({}, ref)
    point = Result(ref.mean, np.zeros(SHAPE))           # a point estimate as reference
    c = compare(mc, point)
    assert c["std_error"] is None and c["std_ratio"] is None and c["mean_error"] > 0
    assert any("std" in n for n in c.notes)

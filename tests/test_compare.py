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
    ref, _, truth = problem
    c = compare(ref, ref, truth)
    assert c["mean_error"] == 0 and c["std_error"] == 0 and c["std_ratio"] == 1
    assert c["kl"] == pytest.approx(0.0, abs=1e-9) and c["w1_marginal"] == 0
    assert c["w2"] < 1e-5
    for a in (50, 90, 95):                    # exact Gaussian mass inside its own intervals
        assert c[f"ref_coverage_{a}"] == pytest.approx(a / 100, abs=1e-9)
    assert c["truth_error"] == pytest.approx(M.relative_error(ref.mean, truth))
    assert c["ssim"] == pytest.approx(M.ssim(ref.mean, truth))


def test_sampled_result_against_gaussian_reference(problem):
    ref, mc, truth = problem
    c = compare(mc, ref, truth)
    assert c["w2"] is None and c["kl"] is None       # the MCMC result has no factors
    assert c["mean_error"] == pytest.approx(M.relative_error(mc.mean, ref.mean))
    # 2000 exact draws: marginal quantiles are close, so intervals hold ~nominal mass
    for a in (50, 90, 95):
        assert abs(c[f"ref_coverage_{a}"] - a / 100) < 0.02
    want = np.mean(M.w1_gaussian_empirical(ref.mean, ref.std, mc.pooled_draws()))
    assert c["w1_marginal"] == pytest.approx(want)
    lo, hi = mc.interval(0.9)
    assert c["coverage_90"] == M.coverage(lo, hi, truth)
    assert c["ess_bulk_min"] == 300 and c["rhat_max"] == 1.001
    assert c["ess_min_per_s"] == pytest.approx(75.0) and c["num_grad_evals"] == 5000
    # reference with draws: fraction of reference draws x pixels inside
    c2 = compare(ref, mc)
    d = mc.pooled_draws()
    lo, hi = ref.interval(0.5)
    assert c2["ref_coverage_50"] == np.mean((lo <= d) & (d <= hi))


def test_diagonal_gaussians_closed_forms(problem):
    ref, _, _ = problem
    a = Result.from_gaussian({"kind": "diag", "mean": ref.mean, "diag": ref.variance})
    b = Result.from_gaussian({"kind": "diag", "mean": ref.mean + 0.1, "diag": 4 * ref.variance})
    c = compare(b, a)
    assert c["std_ratio"] == pytest.approx(2.0)
    w2 = np.sqrt(np.sum(0.01 + ref.variance))          # |dm|^2 + sum (2s - s)^2
    assert c["w2"] == pytest.approx(w2, rel=1e-10)
    kl = 0.5 * np.sum(4 + 0.01 / ref.variance - 1 - np.log(4))
    assert c["kl"] == pytest.approx(kl, rel=1e-10)
    assert c["w1_marginal"] == pytest.approx(np.mean(M.w1_gaussian(b.mean, b.std, a.mean, a.std)))
    # too large for dense W2 with a low-rank side: reported as None with a note
    c3 = compare(ref, a, max_dense=10)
    assert c3["w2"] is None and any("max_dense" in n for n in c3.notes)
    assert c3["kl"] == pytest.approx(M.gaussian_kl(ref.gaussian, a.gaussian))  # Woodbury


def test_outputs_and_table(problem):
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


def test_bad_inputs(problem):
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

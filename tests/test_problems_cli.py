"""Seeded reference problems and the main job (smoke run at a tiny size)."""

import json
import os

import numpy as np
import pytest

from uqrecon import cli
from uqrecon.problems import make_problem
from uqrecon.result import Result


def test_problem_is_reproducible_and_noise_level_is_relative():
    a = make_problem("sparse_view_ct", size=16, num_angles=8, noise_level=0.05, seed=3)
    b = make_problem("sparse_view_ct", size=16, num_angles=8, noise_level=0.05, seed=3)
    c = make_problem("sparse_view_ct", size=16, num_angles=8, noise_level=0.05, seed=4)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    assert not np.array_equal(np.asarray(a.data), np.asarray(c.data))
    clean = np.asarray(a.operator(a.truth))
    assert a.sigma == pytest.approx(0.05 * np.abs(clean).max(), rel=1e-6)
    resid = np.asarray(a.data) - clean
    assert np.std(resid) == pytest.approx(a.sigma, rel=0.2)
    assert a.baseline().shape == (16, 16)


def test_mri_problem_has_complex_data_and_zero_filled_baseline():
    p = make_problem("mri", size=16, acceleration=2, center_fraction=0.25, seed=0)
    assert np.iscomplexobj(np.asarray(p.data))
    assert p.baseline().shape == (16, 16)


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 2}, "'size'"),
    ({"noise_level": -0.1}, "'noise_level'"),
    ({"noise_level": float("nan")}, "'noise_level'"),
    ({"phantom": "cat"}, "'phantom'"),
])
def test_problem_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_problem("sparse_view_ct", **{"size": 16, "num_angles": 4, **kwargs})


def test_unknown_problem_name():
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("pet")


def test_main_job_writes_report(tmp_path):
    out = tmp_path / "report"
    cli.main(["--size", "16", "--num-angles", "12", "--priors", "gmrf",
              "--methods", "laplace,exact", "--num-samples", "50", "--keep-draws", "20",
              "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    saved = Result.load(out / "gmrf" / "result_exact.npz")    # lean: thinned draws
    assert saved.draws.shape[1] == 17 and saved.provenance["saved_draws"] == {
        "kept_per_chain": 17, "of": 50, "stride": 3}
    model = summary["models"]["gmrf"]
    assert model["reference"] == "exact"
    rows = {r["method"]: r for r in model["comparison"]["rows"]}
    # the exact sampler agrees with the exact posterior up to Monte Carlo error
    assert rows["exact"]["mean_error"] < 0.1
    for name in ("panels_laplace.png", "calibration.png", "comparison.md"):
        assert os.path.getsize(out / "gmrf" / name) > 0
    assert (out / "summary.md").read_text().startswith("# uqrecon report")
    # the trust section ran on the run's own model: the exact posterior is calibrated over
    # prior-drawn replicates, mean-field VI is not, conformal brings VI's risk to alpha,
    # and the structure tests never confirm an absent or hallucinated lesion (catches a
    # section wired to the wrong method/posterior, or a report that drops it)
    trust = summary["trust"]
    verdict = {c["setting"]: c["calibrated"] for c in trust["calibration"]}
    assert verdict == {"exact / prior": True, "exact / ellipses": False,
                       "meanfield / prior": False}
    conf = trust["conformal"]
    assert conf["raw_risk"] > 0.2 and conf["bound_risk_mean"] <= conf["bound_risk_band"]
    for row in trust["structure"]:
        if row["h0_true"]:
            assert not row["buqo_gmrf"] and not row["buqo_tv"] and not row["sampling_gmrf"]
    assert {r["case"] for r in trust["structure"] if r["sampling_gmrf"]} == {"present", "faint"}
    for name in ("trust.md", "calibration.png", "structure.png"):
        assert os.path.getsize(out / "trust" / name) > 0
    assert "## Trust" in (out / "summary.md").read_text()
    page = (out / "index.html").read_text()
    trust_html = page[page.index("id='trust'"):]
    assert "meanfield / prior" in trust_html and "NOT calibrated" in trust_html
    assert trust_html.count("data:image/png;base64,") >= 2    # both figures embedded


def test_main_job_rejects_unknown_prior(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["--size", "16", "--priors", "gauss", "--out", str(tmp_path)])


def test_main_job_grades_tv_and_huber_tv_against_their_own_references(tmp_path):
    """TV is graded against the exact GSM sampler, Huber-TV against its HMC reference,
    and the TV reference sits in the Huber-TV table as a labelled model change (catches a
    main job that grades a surrogate's approximations against another model's
    reference, or hides an unconverged reference)."""
    out = tmp_path / "report"
    with pytest.warns(Warning):  # a 40-draw, one-round reference cannot meet the criteria
        cli.main(["--size", "12", "--num-angles", "10", "--priors", "tv,huber_tv",
                  "--methods", "myula", "--num-samples", "40", "--reference-rounds", "1",
                  "--reference-samples", "40", "--out", str(out), "--no-trust",
                  "--cache-dir", str(tmp_path / "cache")])
    summary = json.loads((out / "summary.json").read_text())
    tv, huber = summary["models"]["tv"], summary["models"]["huber_tv"]
    assert tv["reference"] == "gsm reference" and huber["reference"] == "hmc reference"
    assert tv["reference_exactness"] == "asymptotically exact"
    assert tv["reference_convergence"]["converged"] is False
    assert "NOT met" in (out / "summary.md").read_text()
    assert set(r["method"] for r in tv["comparison"]["rows"]) == {"gsm reference", "myula"}
    assert set(r["method"] for r in huber["comparison"]["rows"]) == {
        "hmc reference", "myula", "tv model (model change)"}


def test_main_job_refuses_a_surrogate_method_on_the_tv_model(tmp_path):
    with pytest.raises(SystemExit, match="huber_tv"):
        cli.main(["--size", "12", "--num-angles", "10", "--priors", "tv",
                  "--methods", "laplace", "--reference-rounds", "1",
                  "--reference-samples", "20", "--out", str(tmp_path / "r"),
                  "--cache-dir", str(tmp_path / "cache")])


def test_lean_result_keeps_the_moments_of_all_draws():
    """Thinning for saving keeps mean/variance (of all draws), keeps at most N draws per
    chain, says so in the provenance, and refuses a bad count. Catches recomputing the
    moments from the kept draws, or an off-by-one stride that keeps N + 1."""
    draws = np.random.default_rng(0).normal(size=(2, 50, 3, 3)).astype(np.float32)
    full = Result.from_draws(draws, provenance={"method": "x"})
    thin = cli.lean(full, 10)
    assert thin.draws.shape == (2, 10, 3, 3)
    np.testing.assert_array_equal(thin.draws, draws[:, ::5])
    np.testing.assert_array_equal(thin.mean, full.mean)
    np.testing.assert_array_equal(thin.variance, full.variance)
    assert thin.provenance == {"method": "x", "saved_draws": {"kept_per_chain": 10,
                                                              "of": 50, "stride": 5}}
    assert cli.lean(full, "all") is full and cli.lean(full, 50) is full
    assert cli.lean(full, 7).draws.shape[1] == 7            # stride 8: 7 draws
    for bad in (0, -3, "many"):
        with pytest.raises(ValueError, match="'keep_draws'"):
            cli.lean(full, bad)
    with pytest.raises(SystemExit, match="--keep-draws"):
        cli.main(["--keep-draws", "0"])

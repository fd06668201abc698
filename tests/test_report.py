"""Report figures and the written comparison (small images)."""

import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from uqrecon.report import plot_panels, write_report  # noqa: E402
from uqrecon.result import Result  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == PNG and os.path.getsize(path) > 1000


def test_write_report(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16))
    draws = truth + 0.1 * rng.normal(size=(2, 50, 16, 16))
    results = {
        "exact": Result.from_gaussian({"kind": "diag", "mean": truth + 0.01,
                                       "diag": np.full(256, 0.01)}),
        "nuts/mcmc": Result.from_draws(draws),
    }
    out = write_report(tmp_path / "rep", results, truth, baseline=truth + 0.2,
                       reference_name="exact")
    for p in [*out["panels"].values(), *out["scatter"].values(), out["calibration"]]:
        assert _png(p), p
    assert os.path.basename(out["panels"]["nuts/mcmc"]) == "panels_nuts_mcmc.png"
    md = open(out["markdown"]).read()
    assert "| exact | exact |" in md and "| nuts/mcmc | exact |" in md
    data = json.load(open(out["json"]))
    assert data["reference"] == "exact" and len(data["rows"]) == 2
    assert len(data["calibration"]["exact"]["levels"]) == 20
    with pytest.raises(ValueError, match="reference_name"):
        write_report(tmp_path / "x", results, truth, reference_name="nope")


def test_panels_validation(tmp_path):
    r = Result(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="truth"):
        plot_panels(tmp_path / "p.png", r, np.zeros((8, 9)))
    with pytest.raises(ValueError, match="baseline"):
        plot_panels(tmp_path / "p.png", r, np.zeros((8, 8)), baseline=np.zeros(64))
    assert _png(plot_panels(tmp_path / "p.png", r, np.zeros((8, 8))))   # no baseline: n/a panel

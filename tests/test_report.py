"""Report: figures, verdicts, the self-contained HTML page and the saved-state sub-commands
(16x16 images, hand-made Results: no inference runs here)."""

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from uqrecon import cli, report  # noqa: E402
from uqrecon.report import (COLUMN_ORDER, assess, ordered_columns, plot_panels,  # noqa: E402
                            table_markdown, write_report)
from uqrecon.report_html import (result_path, save_problem_state,  # noqa: E402
                                 write_index_html)
from uqrecon.result import Result  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
N = 16


def _png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == PNG and os.path.getsize(path) > 1000


def _toy_results(rng):
    """Truth, a converged reference (exact Gaussian), a converged sampler (independent
    draws around the truth; 4 x 400 so that max split R-hat over 256 pixels stays below
    1.01 -- at 4 x 100 even independent draws reach 1.02-1.03) and a stuck sampler (four chains frozen at different
    offsets: R-hat in the tens, bulk ESS ~ 4)."""
    truth = rng.random((N, N))
    ref = Result.from_gaussian({"kind": "diag", "mean": truth + 0.01,
                                "diag": np.full(N * N, 0.01)},
                               provenance={"method": "exact_gaussian"})
    good = Result.from_draws(truth + 0.1 * rng.normal(size=(4, 400, N, N)),
                             provenance={"method": "nuts", "exactness": "asymptotically exact"})
    offsets = np.array([-0.3, -0.1, 0.1, 0.3])[:, None, None, None]
    stuck = Result.from_draws(truth + offsets + 1e-3 * rng.normal(size=(4, 100, N, N)),
                              provenance={"method": "myula", "exactness": "biased"})
    return truth, {"exact": ref, "nuts": good, "myula stuck": stuck}


class _Page(HTMLParser):
    """Collects <img> sources, tables by id, row texts and any external reference."""

    def __init__(self):
        super().__init__()
        self.images, self.table_ids, self.external = [], [], []
        self.rows, self._row, self._in_row = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table" and attrs.get("id"):
            self.table_ids.append(attrs["id"])
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)
        for key in ("href", "src"):
            v = attrs.get(key) or ""
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)
        if tag == "tr":
            self._in_row, self._row = True, []

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(" ".join(self._row))
            self._in_row = False

    def handle_data(self, data):
        if self._in_row:
            self._row.append(data.strip())


def _run_folder(tmp_path, rng):
    """A run folder as the main job writes it (summary.json, problem.npz, one model
    folder with its report and saved Results)."""
    truth, results = _toy_results(rng)
    out = tmp_path / "run"
    info = {"name": "sparse_view_ct", "kind": "ct", "config": {"num_angles": 30,
                                                               "phantom": "toy"},
            "shape": [N, N], "sigma": 0.005, "noise_level": 0.01, "seed": 0,
            "dtype": "float32", "baseline_name": "FBP", "extent": [-1, 1, -1, 1],
            "axis_unit": "domain units"}
    save_problem_state(out, truth, truth + 0.2, info)
    written = write_report(out / "toy", results, truth, truth + 0.2, reference_name="exact",
                           extent=info["extent"], axis_unit="domain units")
    for name, res in results.items():
        res.save(result_path(out / "toy", name))
    summary = {"problem": "toy problem", "dtype": "float32", "seed": 0,
               "baseline": {"name": "FBP", "psnr": 20.0},
               "models": {"toy": {"prior": {"name": "gmrf", "delta": 100.0},
                                  "map": {"psnr": 30.0, "iterations": 5, "converged": True},
                                  "reference": "exact", "reference_exactness": "exact",
                                  "timings": {"exact": 1.0, "nuts": 2.0, "myula stuck": 3.0},
                                  "comparison": json.load(open(written["json"])),
                                  "report": written["markdown"]}},
               "total_seconds": 6.0}
    with open(out / "summary.json", "w") as fh:
        json.dump(summary, fh)
    return out, truth, results, summary


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """One toy run folder for the module (writing a report costs seconds), with the
    legend entries (text, colour, line style) of every figure saved while writing it."""
    figures = {}
    real_save = report._save

    def capture(fig, path):
        figures[os.path.basename(os.fspath(path))] = [
            (t.get_text(), line.get_color(), line.get_linestyle())
            for ax in fig.axes if ax.get_legend()
            for t, line in zip(ax.get_legend().get_texts(), ax.get_legend().get_lines())]
        return real_save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_save", capture)
        out, truth, results, summary = _run_folder(tmp_path_factory.mktemp("report"),
                                                   np.random.default_rng(0))
    return out, summary, figures


def test_unconverged_method_is_flagged_everywhere(run_folder):
    """One converged and one stuck sampler: the stuck one is flagged NOT CONVERGED in the
    markdown (verdict and metrics tables), in the calibration legend (grey, dashed,
    "(not converged)") and in the HTML (verdict, metrics and timings rows, badge, greyed
    rows); the converged ones are not. Catches: a verdict that ignores R-hat/ESS, a table
    or legend that drops the flag, a figure that plots the stuck chain like a result."""
    out, summary, figures = run_folder
    md = open(out / "toy" / "comparison.md").read()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    stuck_rows = [r for r in rows if "myula stuck" in r]
    assert len(stuck_rows) == 2 and all("NOT CONVERGED" in r for r in stuck_rows), stuck_rows
    assert all("NOT CONVERGED" not in r for r in rows if r.startswith(("| nuts", "| exact")))
    assert "max R-hat" in stuck_rows[0] and "biased" in stuck_rows[0]

    legend = {text: (color, style) for text, color, style in figures["calibration.png"]}
    stuck = [t for t in legend if t.startswith("myula stuck")]
    assert stuck == ["myula stuck (not converged, biased sampler)"], legend
    assert legend[stuck[0]] == (report.GREY, "--")
    assert legend["nuts"][0] != report.GREY and legend["nuts"][1] == "-"

    page = open(write_index_html(out, summary), encoding="utf-8").read()
    parser = _Page()
    parser.feed(page)
    assert "verdicts" in parser.table_ids
    html_stuck = [r for r in parser.rows if r.startswith("myula stuck")]
    assert len(html_stuck) == 3, html_stuck          # verdicts, metrics, timings
    assert all("not converged" in r.lower() for r in html_stuck)
    assert 'class="not-converged"' in page
    assert all("NOT CONVERGED" not in r for r in parser.rows if r.startswith(("nuts", "exact")))


def test_html_is_self_contained(run_folder):
    """index.html loads nothing from outside: every <img> is a data: URI that decodes to a
    valid PNG (matplotlib reads it back at a plausible size), no script, stylesheet link or
    external URL; the verdict table, the problem table and a human-readable model header
    are there. Catches: figures linked by path instead of embedded, a broken encoding, a
    page without the verdict table, dict reprs as headers."""
    import matplotlib.image as mpimg

    out, summary, _ = run_folder
    page = open(write_index_html(out, summary), encoding="utf-8").read()
    parser = _Page()
    parser.feed(page)
    assert parser.external == []
    assert len(parser.images) == 3              # maps, calibration, std vs error
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        img = mpimg.imread(io.BytesIO(data), format="png")
        assert img.ndim == 3 and min(img.shape[:2]) > 200
    assert "verdicts" in parser.table_ids
    assert "GMRF prior (delta = 100)" in page and "{'name'" not in page
    assert "parallel-beam ray transform, 30 views" in page


def test_verdict_words():
    """The verdict reads the comparison row and the Result: over/under-confidence from
    std_ratio and reference coverage, a model change, Laplace's mode label and its
    variance-ratio bound, VI's convergence flag. Catches: swapped over/under wording, a
    silent model change, a hidden Laplace bound, an unconverged VI read as converged."""
    m = np.zeros((4, 4))
    r = Result(m, np.ones((4, 4)), provenance={"method": "meanfield"},
               diagnostics={"converged": False, "reason": "max_iter reached"})
    v = assess("vi", r, {"std_ratio": 0.5, "ref_coverage_90": 0.6, "same_model": True,
                         "mean_error": 0.01, "std_error": 0.5})
    assert v.status == report.NOT_CONVERGED and "OVERCONFIDENT" in v.confidence
    assert v.exactness == "biased (Gaussian approximation)"
    assert "max_iter" in v.sentence()
    lap = Result(m, np.ones((4, 4)), provenance={"method": "laplace"},
                 diagnostics={"truncation": {"variance_ratio_bound": 5.1, "kind": "ritz"}})
    v = assess("laplace", lap, {"std_ratio": 2.1, "ref_coverage_90": 0.99,
                                "same_model": False})
    assert v.converged and "UNDERCONFIDENT" in v.confidence
    assert v.mean_label.startswith("mode") and "mode" in v.sentence()
    assert "5.1x" in v.sentence() and "DIFFERENT MODEL" in v.sentence()
    assert "model change" in v.tags
    ok = assess("x", Result(m, np.ones((4, 4))), {"std_ratio": 1.0, "ref_coverage_90": 0.9})
    assert ok.status == report.UNCHECKED and "about right" in ok.confidence


def test_same_column_order_in_every_table():
    """Tables with different column sets (a sampler's timing columns, all-empty W2/KL) come
    out in COLUMN_ORDER, with status and exactness right after the method and the all-empty
    columns listed, not shown. Catches: column order taken from row insertion order."""
    a = [{"method": "m", "ess_min_per_s": 1.0, "psnr": 3.0, "mean_error": 0.1, "w2": None,
          "status": "converged", "exactness": "exact"}]
    b = [{"exactness": "biased", "psnr": 2.0, "method": "n", "status": "NOT CONVERGED",
          "mean_error": 0.2, "w2": None}]
    ca, empty = ordered_columns(a)
    cb, _ = ordered_columns(b)
    assert ca[:3] == ["method", "status", "exactness"] and empty == ["w2"]
    assert cb == [c for c in ca if c != "ess_min_per_s"]
    assert ca == sorted(ca, key=COLUMN_ORDER.index)
    md = table_markdown(b)
    assert md.splitlines()[0] == "| method | status | exactness | mean_error | psnr |"
    assert "**NOT CONVERGED**" in md and "w2" in md.splitlines()[-1]


def test_report_subcommand_regenerates_from_saved_results(run_folder, tmp_path):
    """``uqrecon report RUN_DIR`` rebuilds index.html, summary.md and each model's tables
    from the saved result_*.npz and problem.npz alone (the figures are deleted first and
    come back); the stuck chain is still flagged. ``main`` without a sub-command still
    parses the main job's options. Catches: a sub-command that needs the live run, loses
    the flag, or breaks the default command line."""
    out = tmp_path / "run"
    shutil.copytree(run_folder[0], out)
    for f in ("maps.png", "calibration.png", "comparison.md"):
        os.remove(out / "toy" / f)
    assert cli.main(["report", str(out)]) == 0
    page = open(out / "index.html", encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 3 and "NOT CONVERGED" in page
    assert "Regenerated from the saved Results" in page
    summary_md = open(out / "summary.md").read()
    assert "index.html" in summary_md and "## GMRF prior (delta = 100)" in summary_md
    assert "**NOT CONVERGED**" in open(out / "toy" / "comparison.md").read()
    assert _png(out / "toy" / "maps.png")
    args = cli._parser().parse_args([])          # the default run is untouched
    assert args.size == 32 and args.out == os.path.join("out", "demo")
    with pytest.raises(SystemExit, match="--size"):
        cli.main(["--size", "4"])                # falls through to the main job's checks
    with pytest.raises(SystemExit, match="summary.json"):
        cli.main(["report", str(tmp_path / "nowhere")])


def test_compare_subcommand(tmp_path, capsys):
    """``uqrecon compare A.npz B.npz --truth T`` prints the verdicts and the metrics table
    of saved Results against the first one (the stuck chain flagged), and ``--json`` the
    same as JSON. Catches: a compare command that ignores the reference, drops the truth
    columns or the convergence flag."""
    rng = np.random.default_rng(3)
    truth, results = _toy_results(rng)
    paths = [Result.save(r, tmp_path / f"result_{n.replace(' ', '_')}.npz")
             for n, r in results.items()]
    np.save(tmp_path / "truth.npy", truth)
    assert cli.main(["compare", *paths, "--truth", str(tmp_path / "truth.npy")]) == 0
    text = capsys.readouterr().out
    assert "Comparison against `exact`" in text
    table = [line for line in text.splitlines() if line.startswith("| method | status | exactness | reference")]
    assert table and "coverage_90" in table[0]
    stuck = [line for line in text.splitlines() if line.startswith(("| myula_stuck",
                                                                    "| **myula_stuck"))]
    assert len(stuck) == 2 and all("NOT CONVERGED" in s for s in stuck)
    assert cli.main(["compare", paths[1], paths[2], "--reference", paths[0], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reference"] == "exact" and [r["method"] for r in data["rows"]] == [
        "nuts", "myula_stuck"]
    assert [v["status"] for v in data["verdicts"]] == ["converged", "not converged"]


def test_write_report(tmp_path):
    """write_report writes every figure as a PNG, the markdown with one row per method in
    COLUMN_ORDER and the JSON (rows, calibration, verdicts); an unknown reference is
    refused. Catches: missing outputs, changed file names the README documents."""
    rng = np.random.default_rng(0)
    truth = rng.random((N, N))
    draws = truth + 0.1 * rng.normal(size=(2, 50, N, N))
    results = {
        "exact": Result.from_gaussian({"kind": "diag", "mean": truth + 0.01,
                                       "diag": np.full(N * N, 0.01)}),
        "nuts/mcmc": Result.from_draws(draws),
    }
    out = write_report(tmp_path / "rep", results, truth, baseline=truth + 0.2,
                       reference_name="exact")
    for p in [*out["panels"].values(), *out["scatter"].values(), out["calibration"],
              out["maps"], out["std_vs_error"]]:
        assert _png(p), p
    assert os.path.basename(out["panels"]["nuts/mcmc"]) == "panels_nuts_mcmc.png"
    md = open(out["markdown"]).read()
    assert "| method | status | exactness | reference |" in md
    data = json.load(open(out["json"]))
    assert data["reference"] == "exact" and len(data["rows"]) == 2
    assert len(data["calibration"]["exact"]["levels"]) == 20
    assert set(data["verdicts"]) == {"exact", "nuts/mcmc"}
    with pytest.raises(ValueError, match="reference_name"):
        write_report(tmp_path / "x", results, truth, reference_name="nope")


def test_panels_validation(tmp_path):
    """plot_panels refuses a truth or baseline of the wrong shape and draws "n/a" without a
    baseline. Catches: silently broadcast images."""
    r = Result(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="truth"):
        plot_panels(tmp_path / "p.png", r, np.zeros((8, 9)))
    with pytest.raises(ValueError, match="baseline"):
        plot_panels(tmp_path / "p.png", r, np.zeros((8, 8)), baseline=np.zeros(64))
    assert _png(plot_panels(tmp_path / "p.png", r, np.zeros((8, 8))))   # no baseline: n/a panel

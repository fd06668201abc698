"""Report figures (matplotlib, Agg backend), verdicts in words, and the written comparison.

``write_report(folder, results, truth, baseline, reference_name)`` writes, for one model:

* a verdict per method (:func:`assess`): converged or not (R-hat / ESS / divergences of
  samplers, the reference criteria of gold standards, VI's convergence flag, Laplace's
  variance-ratio bound), the exactness class (exact / asymptotically exact / biased),
  whether it is the reference's model, how far it is from the reference and whether it is
  over- or under-confident;
* ``maps.png``: every method's mean (Laplace: the mode), std and |error| maps, one colour
  scale per quantity, axes in the problem's units; unconverged rows hatched and labelled;
* ``calibration.png`` (coverage of the truth against the nominal level) and
  ``std_vs_error.png`` (small multiples), unconverged methods grey and dashed, labelled
  "(not converged)";
* the per-method ``panels_<method>.png`` and ``std_vs_error_<method>.png`` (same scales
  and labels);
* ``comparison.md`` (verdict table, then the comparison table) and ``comparison.json``
  (the rows of :func:`uqrecon.uq.compare.compare_table`, the calibration curves, the
  verdicts and the column order).

Every table uses one column order (:data:`COLUMN_ORDER`), with ``status`` and
``exactness`` beside the method name, so an unconverged or biased row is never read as a
plain result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Mapping, Sequence

# No matplotlib.use("Agg") here: selecting a backend on import silently took the
# inline figures away from every notebook that imported uqrecon.report. Headless,
# matplotlib falls back to Agg by itself; figures are only ever saved and closed.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from uqrecon.result import Result  # noqa: E402
from uqrecon.uq.compare import compare_table  # noqa: E402
from uqrecon.uq.metrics import calibration_curve  # noqa: E402

__all__ = ["plot_panels", "plot_maps", "plot_calibration", "plot_std_vs_error",
           "plot_std_vs_error_grid", "write_report", "assess", "Verdict",
           "convergence_status", "exactness_class", "mean_label", "model_title",
           "ordered_columns", "table_markdown", "verdict_markdown", "COLUMN_ORDER",
           "CONVERGED", "NOT_CONVERGED", "UNCHECKED"]

# Convergence thresholds for samplers that are not gold standards (Vehtari et al. 2021,
# the same as uqrecon.diagnostics.check_convergence); gold standards are judged by the
# stricter reference criteria recorded in their provenance.
RHAT_MAX = 1.01
MIN_ESS_BULK = 100.0
# Laplace's variance-ratio bound above which the verdict warns (approximate variances
# may then exceed the posterior's by more than 50 %).
LAPLACE_BOUND_WARN = 1.5
# std_ratio outside [1/CONFIDENCE_BAND, CONFIDENCE_BAND] reads as over/under-confident.
CONFIDENCE_BAND = 1.1

CONVERGED = "converged"
NOT_CONVERGED = "not converged"
UNCHECKED = "unchecked"

APPROXIMATIONS = ("meanfield", "lowrank", "laplace")

# One column order for every table (markdown, HTML, every model).
COLUMN_ORDER = (
    "method", "status", "exactness", "reference", "same_model",
    "mean_error", "std_error", "std_ratio",
    "ref_coverage_50", "ref_coverage_90", "ref_coverage_95", "w1_marginal", "w2", "kl",
    "truth_error", "psnr", "ssim", "coverage_50", "coverage_90", "coverage_95",
    "pearson", "spearman", "ause",
    "rhat_max", "rhat_median", "ess_bulk_min", "ess_bulk_median",
    "num_grad_evals", "compile_s", "run_s", "ess_min_per_s",
)

GREY = "0.55"


# --------------------------------------------------------------------------------------
# Verdicts: pure functions of a Result and its comparison row
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a reader must know about one row before reading its numbers.

    Attributes:
        method: the row's name.
        role: ``'reference'``, ``'model change'`` (a result of another model, graded
            against this one) or ``'method'``.
        status: :data:`CONVERGED`, :data:`NOT_CONVERGED` or :data:`UNCHECKED`.
        reasons: why (e.g. ``'max R-hat 3.33 > 1.01'``).
        exactness: ``'exact'``, ``'asymptotically exact'``, ``'biased'``,
            ``'biased (Gaussian approximation)'`` or ``'unknown'``.
        same_model: ``compare``'s ``same_model`` (True/False/None).
        accuracy: distance to the reference, in words.
        confidence: over/under-confidence against the reference, in words.
        warnings: other caveats (e.g. Laplace's variance-ratio bound).
        mean_label: what the "mean" image is (``'posterior mean'`` or the Laplace mode).
    """

    method: str
    role: str
    status: str
    reasons: tuple
    exactness: str
    same_model: bool | None
    accuracy: str
    confidence: str
    warnings: tuple
    mean_label: str

    @property
    def converged(self) -> bool:
        """True only for a row whose convergence was checked and passed."""
        return self.status == CONVERGED

    @property
    def biased(self) -> bool:
        """True for a biased sampler or a Gaussian approximation."""
        return self.exactness.startswith("biased")

    @property
    def tags(self) -> tuple:
        """Short labels for legends and titles, most important first."""
        tags = []
        if self.status == NOT_CONVERGED:
            tags.append("not converged")
        elif self.status == UNCHECKED:
            tags.append("convergence unchecked")
        if self.exactness == "biased":
            tags.append("biased sampler")
        elif self.exactness.startswith("biased"):
            tags.append("approximation")
        if self.same_model is False and "model change" not in self.method:
            tags.append("model change")
        return tuple(tags)

    @property
    def label(self) -> str:
        """The method name with its tags, e.g. ``'myula (not converged, biased sampler)'``."""
        return self.method + (f" ({', '.join(self.tags)})" if self.tags else "")

    @property
    def headline(self) -> str:
        """One short status word for tables: 'NOT CONVERGED', 'converged', ..."""
        if self.status == NOT_CONVERGED:
            return "NOT CONVERGED"
        return self.status

    def sentence(self) -> str:
        """The verdict in words (one paragraph)."""
        if self.status == NOT_CONVERGED:
            lead = (f"NOT CONVERGED ({'; '.join(self.reasons)}): its mean and std are not "
                    "posterior estimates; the numbers below are for diagnosis only.")
        elif self.status == UNCHECKED:
            lead = "Convergence unchecked (no diagnostics recorded); read with care."
        else:
            lead = f"Converged ({'; '.join(self.reasons)})." if self.reasons else "Converged."
        parts = [lead, f"Exactness: {self.exactness}."]
        if self.role == "reference":
            parts.append("This is the gold standard the other rows are graded against.")
        else:
            if self.same_model is False:
                parts.append("A DIFFERENT MODEL from the reference's: its errors mix the "
                             "model change with approximation error.")
            elif self.same_model is None:
                parts.append("Whether it is the reference's model is not recorded.")
            parts += [self.accuracy, self.confidence]
        if self.mean_label != "posterior mean":
            parts.append(f"Its 'mean' image is the {self.mean_label}.")
        parts += list(self.warnings)
        return " ".join(p for p in parts if p)

    def to_dict(self) -> dict:
        """JSON-ready dict (with ``label``, ``headline`` and ``sentence``)."""
        d = dataclasses.asdict(self)
        d.update(reasons=list(self.reasons), warnings=list(self.warnings),
                 tags=list(self.tags), label=self.label, headline=self.headline,
                 sentence=self.sentence())
        return d


def _scalar(value):
    """A float from a number or a one-element array; None otherwise."""
    if value is None:
        return None
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(a.sum()) if a.size else None


def _pixel_extreme(diag: Mapping, summary_key: str, array_key: str, fn):
    v = _scalar(diag.get(summary_key))
    if v is None and array_key in diag:
        a = np.asarray(diag[array_key], dtype=np.float64)
        a = a[np.isfinite(a)]
        v = float(fn(a)) if a.size else None
    return v


def convergence_status(result: Result) -> tuple[str, tuple]:
    """Whether ``result`` is converged, and why, from its diagnostics and provenance.

    Rules: a gold standard's recorded reference criteria (split R-hat < 1.01, bulk and
    tail ESS >= 400, no divergences); exact computations and exact independent draws are
    converged; a sampler's chains need max R-hat <= :data:`RHAT_MAX`, min bulk ESS >=
    :data:`MIN_ESS_BULK`, no divergent transitions and no non-finite chain (R-hat and
    ESS are computed from the draws when the diagnostics lack them); VI uses its
    ``converged`` flag; Laplace its mode's. Anything else is :data:`UNCHECKED`.

    Args:
        result: a :class:`~uqrecon.result.Result`.

    Returns:
        ``(status, reasons)``: one of :data:`CONVERGED`, :data:`NOT_CONVERGED`,
        :data:`UNCHECKED`, and a tuple of short strings.
    """
    diag, prov = result.diagnostics, result.provenance
    if "converged" in prov and ("reference" in prov or "gold_method" in prov):
        if prov.get("gold_method") == "exact" or prov.get("reference") == "exact":
            return CONVERGED, ("exact computation",)
        ok = bool(prov.get("converged"))
        detail = []
        if prov.get("max_rhat") is not None:
            detail.append(f"max R-hat {float(prov['max_rhat']):.3f}")
        if prov.get("min_ess_bulk") is not None:
            detail.append(f"min bulk ESS {float(prov['min_ess_bulk']):.0f}")
        if prov.get("min_ess_tail") is not None:
            detail.append(f"min tail ESS {float(prov['min_ess_tail']):.0f}")
        if prov.get("divergences") is not None:
            detail.append(f"{int(prov['divergences'])} divergences")
        head = "reference criteria met" if ok else "reference criteria NOT met"
        return (CONVERGED if ok else NOT_CONVERGED), (", ".join([head, *detail]),)
    if prov.get("method") == "exact_gaussian" or (
            prov.get("exactness") == "exact" and result.gaussian is not None):
        return CONVERGED, ("exact computation",)
    if prov.get("exactness") == "exact":
        return CONVERGED, ("exact independent draws",)
    rhat = _pixel_extreme(diag, "rhat_max", "rhat", np.max)
    ess = _pixel_extreme(diag, "ess_bulk_min", "ess_bulk", np.min)
    if (rhat is None and ess is None and result.draws is not None
            and result.num_draws >= 4):
        from uqrecon.diagnostics import diagnose
        d = diagnose(result.draws)
        finite_rhat = d["rhat"][np.isfinite(d["rhat"])]
        rhat = float(finite_rhat.max()) if finite_rhat.size and result.num_chains > 1 else None
        ess = float(np.nanmin(d["ess_bulk"]))
    if rhat is not None or ess is not None:
        bad, good = [], []
        if rhat is not None and not math.isnan(rhat):
            (bad if rhat > RHAT_MAX else good).append(
                f"max R-hat {rhat:.3g}" + (f" > {RHAT_MAX}" if rhat > RHAT_MAX else ""))
        if ess is not None:
            (bad if not ess >= MIN_ESS_BULK else good).append(
                f"min bulk ESS {ess:.0f}" + (f" < {MIN_ESS_BULK:.0f}"
                                             if not ess >= MIN_ESS_BULK else ""))
        div = _scalar(diag.get("divergences"))
        if div:
            bad.append(f"{int(div)} divergent transitions")
        nonfinite = diag.get("nonfinite_chains")
        if nonfinite is not None and np.asarray(nonfinite).size:
            bad.append(f"{np.asarray(nonfinite).size} chain(s) went non-finite")
        return (NOT_CONVERGED, tuple(bad)) if bad else (CONVERGED, tuple(good))
    if "converged" in diag:
        ok = bool(diag["converged"])
        reason = str(diag.get("reason", ""))
        what = "optimiser converged" if ok else "optimiser did NOT converge"
        return (CONVERGED if ok else NOT_CONVERGED), (what + (f": {reason}" if reason else ""),)
    if "truncation" in diag:   # Laplace: deterministic given its mode
        mode = diag.get("map") if isinstance(diag.get("map"), Mapping) else {}
        if mode.get("converged") is False:
            return NOT_CONVERGED, ("its mode (MAP) did NOT converge",)
        return CONVERGED, ("deterministic given the mode",)
    return UNCHECKED, ("no convergence diagnostics recorded",)


def exactness_class(result: Result) -> str:
    """The exactness class from provenance: 'exact', 'asymptotically exact', 'biased',
    'biased (Gaussian approximation)' for VI/Laplace, else 'unknown'.

    Args:
        result: a :class:`~uqrecon.result.Result`.

    Returns:
        The class as a string.
    """
    prov = result.provenance
    if prov.get("exactness"):
        return str(prov["exactness"])
    method = str(prov.get("method", ""))
    if method == "exact_gaussian":
        return "exact"
    if method in APPROXIMATIONS:
        return "biased (Gaussian approximation)"
    return "unknown"


def mean_label(result: Result) -> str:
    """What the result's ``mean`` image is: the Laplace approximation is centred at the
    MAP, so its "mean" is the mode.

    Args:
        result: a :class:`~uqrecon.result.Result`.

    Returns:
        ``'posterior mean'`` or ``'mode (MAP; Laplace centre)'``.
    """
    if result.provenance.get("method") == "laplace" or "truncation" in result.diagnostics:
        return "mode (MAP; Laplace centre)"
    return "posterior mean"


def _percent(x) -> str:
    return f"{100 * x:.2g} %" if x < 0.1 else f"{100 * x:.0f} %"


def _accuracy_words(row: Mapping) -> str:
    me, se = row.get("mean_error"), row.get("std_error")
    parts = []
    if me is not None:
        parts.append(f"mean {_percent(me)} from the reference's")
    if se is not None:
        parts.append(f"std map {_percent(se)} from the reference's")
    if not parts:
        return "Distance to the reference: not computed."
    return "Distance to the reference (relative L2): " + ", ".join(parts) + "."


def _confidence_words(row: Mapping) -> str:
    ratio, cov = row.get("std_ratio"), row.get("ref_coverage_90")
    if ratio is None:
        return "Over/under-confidence: not computed."
    detail = f"mean std {ratio:.2f}x the reference's"
    if cov is not None:
        detail += f"; its 90 % intervals hold {100 * cov:.0f} % of the reference mass"
    if cov is not None and cov < 0.85 and ratio >= 1 / CONFIDENCE_BAND:
        return (f"MISCALIBRATED: its 90 % intervals hold only {100 * cov:.0f} % of the "
                f"reference mass although its mean std is {ratio:.2f}x the reference's "
                "(intervals in the wrong place).")
    if ratio < 1 / CONFIDENCE_BAND or (cov is not None and cov < 0.85):
        return f"OVERCONFIDENT ({detail})."
    if ratio > CONFIDENCE_BAND or (cov is not None and cov > 0.95):
        return f"UNDERCONFIDENT ({detail})."
    return f"Uncertainty about right ({detail})."


def _warnings(result: Result) -> tuple:
    out = []
    trunc = result.diagnostics.get("truncation")
    if isinstance(trunc, Mapping):
        bound = _scalar(trunc.get("variance_ratio_bound"))
        if bound is not None and (math.isinf(bound) or bound > LAPLACE_BOUND_WARN):
            out.append(f"Laplace truncation: its pixel variances may be up to {bound:.3g}x "
                       f"those of the full-rank Laplace approximation "
                       f"(variance-ratio bound, {trunc.get('kind', 'estimate')}); raise "
                       "the rank to tighten it.")
    saved = result.provenance.get("saved_draws")
    if isinstance(saved, Mapping):
        out.append(f"Saved with {saved.get('kept_per_chain')} of {saved.get('of')} draws "
                   "per chain (mean and variance use all draws).")
    return tuple(out)


def assess(name: str, result: Result, row: Mapping, *, is_reference: bool = False) -> Verdict:
    """The verdict on one method: convergence, exactness, model, accuracy, confidence.

    Args:
        name: the row's name.
        result: its :class:`~uqrecon.result.Result`.
        row: its :func:`uqrecon.uq.compare.compare` row (a mapping).
        is_reference: whether it is the reference the table grades against.

    Returns:
        A :class:`Verdict`.
    """
    status, reasons = convergence_status(result)
    same = row.get("same_model")
    role = "reference" if is_reference else ("model change" if same is False else "method")
    return Verdict(method=str(name), role=role, status=status, reasons=tuple(reasons),
                   exactness=exactness_class(result), same_model=same,
                   accuracy=_accuracy_words(row), confidence=_confidence_words(row),
                   warnings=_warnings(result), mean_label=mean_label(result))


def model_title(prior: Mapping) -> str:
    """A human-readable model header from the main job's prior settings.

    Args:
        prior: e.g. ``{'name': 'gmrf', 'delta': 100.0}``.

    Returns:
        e.g. ``'GMRF prior (delta = 100)'`` or ``'Huber-TV prior (weight 10, Huber eps 0.01)'``.
    """
    names = {"gmrf": "GMRF", "tv": "TV", "huber_tv": "Huber-TV"}
    keys = {"delta": "delta", "weight": "weight", "huber_eps": "Huber eps"}
    name = str(prior.get("name", "model"))
    params = [f"{keys.get(k, k)} {v:g}" if isinstance(v, (int, float)) else f"{keys.get(k, k)} {v}"
              for k, v in prior.items() if k != "name"]
    if name == "gmrf" and "delta" in prior:
        params = [f"delta = {prior['delta']:g}"]
    return f"{names.get(name, name)} prior" + (f" ({', '.join(params)})" if params else "")


# --------------------------------------------------------------------------------------
# Tables: one column order everywhere
# --------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table_rows(rows: Sequence[Mapping], verdicts: Sequence[Verdict]) -> list[dict]:
    """Comparison rows with ``status`` (headline) and ``exactness`` added from the
    verdicts (same order).

    Args:
        rows: ``ComparisonTable.to_dict()['rows']``.
        verdicts: one :class:`Verdict` per row.

    Returns:
        A list of dicts.
    """
    return [{**dict(r), "status": v.headline, "exactness": v.exactness}
            for r, v in zip(rows, verdicts)]


def ordered_columns(rows: Sequence[Mapping]) -> tuple[list, list]:
    """Columns in :data:`COLUMN_ORDER` (then any others), without the all-empty ones.

    Args:
        rows: table rows (dicts).

    Returns:
        ``(columns, empty)``: the columns to show and those empty in every row.
    """
    present = [c for c in COLUMN_ORDER if any(c in r for r in rows)]
    for r in rows:
        present += [c for c in r if c not in present]
    empty = [c for c in present if all(r.get(c) is None for r in rows)]
    return [c for c in present if c not in empty], empty


def table_markdown(rows: Sequence[Mapping], notes: Mapping | None = None) -> str:
    """The comparison table in markdown, columns in :data:`COLUMN_ORDER`.

    Args:
        rows: :func:`table_rows` output.
        notes: method -> list of notes (``ComparisonTable.to_dict()['notes']``).

    Returns:
        Markdown text (the table, then the empty columns and notes).
    """
    cols, empty = ordered_columns(rows)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r.get(c)) for c in cols]
        if r.get("status") == "NOT CONVERGED":
            cells[0] = f"**{cells[0]}**"
            cells[cols.index("status")] = "**NOT CONVERGED**"
        out.append("| " + " | ".join(cells) + " |")
    if empty:
        out += ["", f"_Columns empty in every row (not applicable or not computable here; "
                    f"see the notes): {', '.join(empty)}._"]
    for method, ns in (notes or {}).items():
        out += [f"_{method}: {n}_" for n in ns]
    return "\n".join(out)


def verdict_markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdict table in markdown: method, status, exactness, same model, in words.

    Args:
        verdicts: :class:`Verdict` per row.

    Returns:
        Markdown text.
    """
    out = ["| method | status | exactness | same model as reference | verdict |",
           "|---|---|---|---|---|"]
    for v in verdicts:
        status = f"**{v.headline}**" if v.status == NOT_CONVERGED else v.headline
        same = {True: "yes", False: "NO (model change)", None: "unknown"}[v.same_model]
        out.append(f"| {v.label} | {status} | {v.exactness} | {same} | "
                   f"{v.sentence().replace('|', '/')} |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
def _check_image(x, name, shape=None):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"'{name}' must be a 2-D image, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"'{name}' has shape {a.shape}, expected {tuple(shape)}")
    return a


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # constrained-layout figures are laid out already: "tight" would draw them twice
    fig.savefig(path, dpi=100, bbox_inches=None if fig.get_layout_engine() else "tight")
    plt.close(fig)
    return os.fspath(path)


def _axes_setup(extent, axis_unit):
    """imshow extent and axis labels: physical units when known, else pixels."""
    if extent is None:
        return None, "x (pixels)", "y (pixels)"
    unit = f" ({axis_unit})" if axis_unit else ""
    return tuple(float(e) for e in extent), f"x{unit}", f"y{unit}"


def _show(ax, img, cmap, vmin, vmax, extent, xlabel, ylabel, labels=True):
    # images use ODL's layout x[i, j] = f(x_i, y_j): show x to the right, y up
    im = ax.imshow(np.asarray(img, np.float64).T, cmap=cmap, vmin=vmin, vmax=vmax,
                   origin="lower", extent=extent, interpolation="nearest")
    ax.tick_params(labelsize=7)
    ax.locator_params(nbins=4)             # few ticks: readable, and cheaper to draw
    if labels:
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
    return im


def _hatch(ax, text="NOT CONVERGED"):
    """Grey hatching and a stamp over an axes: the image is not a result."""
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, hatch="///",
                           edgecolor=GREY, linewidth=0, zorder=5))
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=8, color="white", weight="bold", zorder=6,
            bbox=dict(facecolor="0.3", alpha=0.8, edgecolor="none"))


def _default_verdict(name: str, result: Result) -> Verdict:
    return assess(name, result, {})


def _trusted_max(values: Mapping, verdicts: Mapping) -> float:
    """Colour-scale top: max over converged rows (all rows if none), so a wild
    unconverged map cannot flatten every other panel."""
    trusted = [v for n, v in values.items() if verdicts[n].converged]
    pool = trusted or list(values.values())
    top = max(float(np.max(v)) for v in pool) if pool else 1.0
    return top if top > 0 else 1.0


def plot_panels(path, result: Result, truth, baseline=None, title: str | None = None,
                baseline_name: str = "baseline", *, verdict: Verdict | None = None,
                scales: Mapping | None = None, extent=None, axis_unit: str | None = None) -> str:
    """Six panels: truth, baseline, mean (Laplace: mode), std, 90 % interval width, |error|.

    Args:
        path: PNG to write.
        result: the :class:`~uqrecon.result.Result`.
        truth: true image.
        baseline: classical reconstruction (or None: an "n/a" panel).
        title: figure title (default: the verdict's label).
        baseline_name: label of the baseline panel.
        verdict: its :class:`Verdict` (default: :func:`assess` without a comparison row);
            an unconverged result's uncertainty panels are hatched and labelled.
        scales: shared colour-scale tops ``{'std', 'width', 'error'}`` (default: this
            result's own maxima).
        extent: ``(xmin, xmax, ymin, ymax)`` of the image in physical units (None: pixels).
        axis_unit: unit name for the axis labels.

    Returns:
        ``path``.
    """
    truth = _check_image(truth, "truth", result.shape)
    base = None if baseline is None else _check_image(baseline, "baseline", result.shape)
    verdict = verdict or _default_verdict(title or "result", result)
    lo, hi = result.interval(0.9)
    width = np.asarray(hi, np.float64) - lo
    std = result.std.astype(np.float64)
    err = np.abs(result.mean - truth)
    scales = dict(scales or {})
    vmin, vmax = float(truth.min()), float(truth.max())
    ext, xl, yl = _axes_setup(extent, axis_unit)
    panels = [
        ("truth", truth, "gray", (vmin, vmax), False),
        (baseline_name, base, "gray", (vmin, vmax), False),
        (verdict.mean_label, result.mean, "gray", (vmin, vmax), False),
        ("posterior std", std, "viridis", (0, scales.get("std") or float(std.max()) or 1.0), True),
        ("90% interval width", width, "viridis",
         (0, scales.get("width") or float(width.max()) or 1.0), True),
        ("|mean - truth|" if verdict.mean_label == "posterior mean" else "|mode - truth|",
         err, "magma", (0, scales.get("error") or float(err.max()) or 1.0), False),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.8), layout="constrained", sharex=True,
                             sharey=True)
    flagged = verdict.status == NOT_CONVERGED
    for k, (ax, (name, img, cmap, (a, b), is_uq)) in enumerate(zip(axes.ravel(), panels)):
        ax.set_title(name, fontsize=10)
        if img is None:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            ax.tick_params(left=False, bottom=False)
            continue
        im = _show(ax, img, cmap, a, b, ext, xl, yl, labels=False)
        if k >= 3:
            ax.set_xlabel(xl, fontsize=8)
        if k % 3 == 0:
            ax.set_ylabel(yl, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if flagged and name not in ("truth", baseline_name):
            _hatch(ax)
    head = title or verdict.method
    if verdict.tags:
        head = f"{head} ({', '.join(verdict.tags)})"
    fig.suptitle(head, color="firebrick" if flagged else "black")
    return _save(fig, path)


def plot_maps(path, results: Mapping[str, Result], verdicts: Mapping[str, Verdict], truth,
              baseline=None, baseline_name: str = "baseline", *, extent=None,
              axis_unit: str | None = None, title: str | None = None) -> str:
    """All methods on one page: a row per method with its mean (Laplace: mode), std and
    |error|; one colour scale per column (scaled to the converged rows), the truth and
    baseline on top. Unconverged rows are hatched and their titles say so.

    Args:
        path: PNG to write.
        results: name -> :class:`~uqrecon.result.Result` (rows in this order).
        verdicts: name -> :class:`Verdict`.
        truth: true image.
        baseline: classical reconstruction (optional).
        baseline_name: its label.
        extent: ``(xmin, xmax, ymin, ymax)`` in physical units (None: pixels).
        axis_unit: unit name for the axis labels.
        title: figure title.

    Returns:
        ``path``.
    """
    names = list(results)
    truth = _check_image(truth, "truth", results[names[0]].shape)
    base = None if baseline is None else _check_image(baseline, "baseline", truth.shape)
    std = {n: results[n].std.astype(np.float64) for n in names}
    err = {n: np.abs(results[n].mean.astype(np.float64) - truth) for n in names}
    std_top, err_top = _trusted_max(std, verdicts), _trusted_max(err, verdicts)
    vmin, vmax = float(truth.min()), float(truth.max())
    ext, xl, yl = _axes_setup(extent, axis_unit)
    nrows = len(names) + 1
    fig, axes = plt.subplots(nrows, 3, figsize=(9.6, 2.75 * nrows + 0.6), squeeze=False,
                             layout="constrained", sharex=True, sharey=True)
    _show(axes[0, 0], truth, "gray", vmin, vmax, ext, xl, yl, labels=False)
    axes[0, 0].set_title("truth", fontsize=9)
    if base is not None:
        _show(axes[0, 1], base, "gray", vmin, vmax, ext, xl, yl, labels=False)
        axes[0, 1].set_title(baseline_name, fontsize=9)
    else:
        axes[0, 1].set_axis_off()
    axes[0, 2].set_axis_off()
    axes[0, 2].text(0, 0.5, "one colour scale per column\n(std and |error| scaled to the\n"
                    "converged rows; brighter beyond)\n\nhatched: NOT CONVERGED,\n"
                    "not a posterior estimate", fontsize=8, va="center")
    ims = [None, None, None]
    for i, n in enumerate(names, start=1):
        v = verdicts[n]
        flagged = v.status == NOT_CONVERGED
        color = "firebrick" if flagged else "black"
        cols = [(v.mean_label, results[n].mean, "gray", vmin, vmax),
                ("std", std[n], "viridis", 0.0, std_top),
                ("|mean - truth|" if v.mean_label == "posterior mean" else "|mode - truth|",
                 err[n], "magma", 0.0, err_top)]
        for j, (what, img, cmap, a, b) in enumerate(cols):
            ax = axes[i, j]
            ims[j] = _show(ax, img, cmap, a, b, ext, xl, yl, labels=False)
            ax.set_title(f"{v.label}\n{what}", fontsize=8, color=color)
            if flagged:
                _hatch(ax)
    for ax in axes[-1, :]:
        ax.set_xlabel(xl, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(yl, fontsize=8)
    for j, (im, what) in enumerate(zip(ims, ("value (truth's range)", "posterior std",
                                             "|error|"))):
        if im is not None:
            cb = fig.colorbar(im, ax=axes[1:, j].tolist(), location="bottom", shrink=0.85,
                              aspect=25, extend="max" if j else "neither")
            cb.set_label(what, fontsize=8)
            cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _line_style(verdict: Verdict) -> dict:
    if verdict.status != CONVERGED:
        return {"color": GREY, "ls": "--", "marker": "x", "alpha": 0.9}
    if verdict.exactness == "biased":
        return {"ls": ":", "marker": "s"}
    if verdict.same_model is False:
        return {"ls": "-.", "marker": "^"}
    return {"ls": "-", "marker": "o"}


def plot_calibration(path, curves: Mapping[str, tuple],
                     verdicts: Mapping[str, Verdict] | None = None) -> str:
    """Coverage of the truth against the nominal level, one line per method.

    Args:
        path: PNG to write.
        curves: name -> ``(levels, coverage)``.
        verdicts: name -> :class:`Verdict` (optional): unconverged methods are drawn
            grey and dashed and labelled "(not converged)" in the legend; biased and
            model-change rows get their own line styles and labels.

    Returns:
        ``path``.
    """
    if not curves:
        raise ValueError("'curves' is empty")
    verdicts = verdicts or {}
    fig, ax = plt.subplots(figsize=(5.2, 4.8), layout="constrained")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    # converged rows on top, drawn last
    order = sorted(curves, key=lambda n: n in verdicts and verdicts[n].converged)
    for name in order:
        levels, cov = curves[name]
        v = verdicts.get(name)
        style = _line_style(v) if v else {"ls": "-", "marker": "o"}
        label = v.label if v else str(name)
        ax.plot(levels, cov, ms=3, lw=1.3, label=label, **style)
    ax.set_xlabel("nominal level of the pixelwise credible interval")
    ax.set_ylabel("fraction of pixels whose true value is inside")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    ax.set_title("calibration against the truth (below the diagonal: overconfident)",
                 fontsize=9)
    return _save(fig, path)


def plot_std_vs_error(path, result: Result, truth, title: str | None = None,
                      max_points: int = 20000, verdict: Verdict | None = None) -> str:
    """Scatter of pixel std against |mean - truth| (a random subset of at most
    ``max_points`` pixels, fixed seed), with the 1:1 line.

    Args:
        path: PNG to write.
        result: the :class:`~uqrecon.result.Result`.
        truth: true image.
        title: axes title (default "error vs uncertainty").
        max_points: most pixels shown.
        verdict: its :class:`Verdict`; an unconverged result is drawn grey, titled so.

    Returns:
        ``path``.
    """
    truth = _check_image(truth, "truth", result.shape)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    _scatter(ax, result, truth, max_points, verdict)
    head = title or "error vs uncertainty"
    if verdict is not None and verdict.tags:
        head += f" ({', '.join(verdict.tags)})"
    ax.set_title(head, fontsize=9,
                 color="firebrick" if verdict and verdict.status == NOT_CONVERGED else "black")
    return _save(fig, path)


def _scatter(ax, result, truth, max_points, verdict, top=None):
    """Pixel std against |error| on log-log axes: the errors (up to the phantom's edges)
    and the stds (a few % of them) differ by an order of magnitude, and on linear axes
    every std sat in a thin line at the left. Errors below ``1e-4`` of the largest are
    drawn at that floor (log axes cannot show zero)."""
    err = np.abs(result.mean - truth).ravel().astype(np.float64)
    std = result.std.astype(np.float64).ravel()
    if err.size > max_points:
        idx = np.random.default_rng(0).choice(err.size, max_points, replace=False)
        err, std = err[idx], std[idx]
    flagged = verdict is not None and verdict.status != CONVERGED
    top = top or float(max(std.max(), err.max())) or 1.0
    floor = 1e-4 * top
    ax.scatter(np.maximum(std, floor), np.maximum(err, floor), s=3, alpha=0.5,
               color=GREY if flagged else "C0")
    ax.plot([floor, top], [floor, top], "k--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("posterior std", fontsize=8)
    ax.set_ylabel("|mean - truth|", fontsize=8)
    ax.tick_params(labelsize=7)
    if flagged:
        _hatch(ax, verdict.headline)


def plot_std_vs_error_grid(path, results: Mapping[str, Result],
                           verdicts: Mapping[str, Verdict], truth,
                           max_points: int = 20000) -> str:
    """Small multiples of :func:`plot_std_vs_error`, one per method, shared axes.

    Args:
        path: PNG to write.
        results: name -> :class:`~uqrecon.result.Result`.
        verdicts: name -> :class:`Verdict`.
        truth: true image.
        max_points: most pixels per panel.

    Returns:
        ``path``.
    """
    names = list(results)
    truth = _check_image(truth, "truth", results[names[0]].shape)
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    top = max(max(float(results[n].std.max()), float(np.abs(results[n].mean - truth).max()))
              for n in names if verdicts[n].converged) if any(
        verdicts[n].converged for n in names) else None
    for ax, n in zip(axes.ravel(), names):
        v = verdicts[n]
        _scatter(ax, results[n], truth, max_points, v, top)
        ax.set_title(v.label, fontsize=8,
                     color="firebrick" if v.status == NOT_CONVERGED else "black")
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    if top:
        axes[0, 0].set_xlim(1e-4 * top / 1.5, 1.5 * top)
        axes[0, 0].set_ylim(1e-4 * top / 1.5, 1.5 * top)
    fig.suptitle("|error| against std per pixel, log-log (dashed: 1:1)", fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# write_report
# --------------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "method"


def _with_diagnostics(result: Result) -> Result:
    """Add R-hat/ESS computed from the draws when a sampler's Result lacks them (so
    the table shows them and the verdict can judge them)."""
    d = result.diagnostics
    if ("rhat" in d or "ess_bulk" in d or result.draws is None or result.num_draws < 4
            or result.provenance.get("exactness") == "exact"):
        return result
    from uqrecon.diagnostics import add_diagnostics
    return add_diagnostics(result)


def write_report(folder, results: Mapping[str, Result], truth, baseline=None,
                 reference_name: str | None = None, baseline_name: str = "FBP", *,
                 extent=None, axis_unit: str | None = None, title: str | None = None) -> dict:
    """Write figures, verdicts and the comparison table for ``results`` (name -> Result).

    Args:
        folder: output folder (created).
        results: name -> :class:`~uqrecon.result.Result`; the rows, in this order.
        truth: the true image.
        baseline: the classical reconstruction (optional).
        reference_name: the reference among ``results`` (default: the first).
        baseline_name: label of the baseline.
        extent: ``(xmin, xmax, ymin, ymax)`` of the image in physical units (None:
            axes in pixels).
        axis_unit: unit name for the axis labels.
        title: title of the model (figures).

    Returns:
        Paths written (``panels``/``scatter`` per method, ``maps``, ``std_vs_error``,
        ``calibration``, ``markdown``, ``json``) and ``verdicts`` (name -> Verdict).
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("'results' must be a non-empty dict name -> Result")
    if reference_name is None:
        reference_name = next(iter(results))
    if reference_name not in results:
        raise ValueError(f"'reference_name' {reference_name!r} is not among results "
                         f"{list(results)}")
    os.makedirs(folder, exist_ok=True)
    results = {str(n): _with_diagnostics(r) for n, r in results.items()}
    reference_name = str(reference_name)
    table = compare_table(dict(results), results[reference_name], truth,
                          reference_name=reference_name)
    payload = table.to_dict()
    verdicts = {n: assess(n, r, row, is_reference=(n == reference_name))
                for (n, r), row in zip(results.items(), payload["rows"])}
    std_top = _trusted_max({n: r.std for n, r in results.items()}, verdicts)
    err_top = _trusted_max({n: np.abs(r.mean - np.asarray(truth)) for n, r in results.items()},
                           verdicts)
    width_top = _trusted_max({n: np.subtract(*r.interval(0.9)[::-1])
                              for n, r in results.items()}, verdicts)
    scales = {"std": std_top, "error": err_top, "width": width_top}
    written = {"panels": {}, "scatter": {}}
    curves = {}
    for name, res in results.items():
        slug = _slug(name)
        written["panels"][name] = plot_panels(
            os.path.join(folder, f"panels_{slug}.png"), res, truth, baseline,
            title=name, baseline_name=baseline_name, verdict=verdicts[name], scales=scales,
            extent=extent, axis_unit=axis_unit)
        written["scatter"][name] = plot_std_vs_error(
            os.path.join(folder, f"std_vs_error_{slug}.png"), res, truth, title=name,
            verdict=verdicts[name])
        curves[name] = calibration_curve(res, truth)
    written["calibration"] = plot_calibration(os.path.join(folder, "calibration.png"),
                                              curves, verdicts)
    written["maps"] = plot_maps(os.path.join(folder, "maps.png"), results, verdicts, truth,
                                baseline, baseline_name, extent=extent, axis_unit=axis_unit,
                                title=title)
    written["std_vs_error"] = plot_std_vs_error_grid(
        os.path.join(folder, "std_vs_error.png"), results, verdicts, truth)
    rows = table_rows(payload["rows"], list(verdicts.values()))
    columns, empty = ordered_columns(rows)
    md = os.path.join(folder, "comparison.md")
    with open(md, "w") as fh:
        fh.write(f"# Comparison against `{reference_name}`\n\n"
                 f"### Verdicts\n\n{verdict_markdown(list(verdicts.values()))}\n\n"
                 f"### Metrics\n\n{table_markdown(rows, payload['notes'])}\n")
    js = os.path.join(folder, "comparison.json")
    payload["calibration"] = {str(n): {"levels": lv.tolist(), "coverage": cv.tolist()}
                              for n, (lv, cv) in curves.items()}
    payload["verdicts"] = {n: v.to_dict() for n, v in verdicts.items()}
    payload["columns"], payload["empty_columns"] = columns, empty
    payload["table"] = rows
    payload["figures"] = {k: os.path.basename(written[k])
                          for k in ("maps", "calibration", "std_vs_error")}
    payload["extent"] = None if extent is None else [float(e) for e in extent]
    payload["axis_unit"] = axis_unit
    with open(js, "w") as fh:
        json.dump(payload, fh, indent=2, default=_json_default)
    written["markdown"], written["json"] = md, js
    written["verdicts"] = verdicts
    return written


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

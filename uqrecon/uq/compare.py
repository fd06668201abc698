"""Compare a :class:`~uqrecon.result.Result` with a reference result (and the truth).

``compare(result, reference, truth)`` returns a :class:`Comparison`: a read-only mapping
of metric name to value (float, or None where a metric does not apply), printable as a
markdown table and exportable as JSON. ``compare_table`` does the same for many methods.

Each side's pixel marginals are taken from its Gaussian factors when it has them (exact),
else from its draws, else from ``N(mean, std^2)`` -- the same convention as
``Result.interval`` for results without draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Sequence

import numpy as np
from scipy import special

from uqrecon.linalg import full_precision
from uqrecon.result import Result
from uqrecon.uq import metrics as M
from uqrecon.diagnostics import summarize

__all__ = ["Comparison", "ComparisonTable", "compare", "compare_table", "same_model"]

COVERAGE_LEVELS = (0.5, 0.9, 0.95)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _plain(v):
    """JSON-safe value: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Comparison(Mapping):
    """Metrics of one result against a reference: a read-only ordered mapping."""

    def __init__(self, entries: dict, notes: Sequence[str] = ()):
        self._d = dict(entries)
        self.notes = list(notes)

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def to_dict(self) -> dict:
        """Plain dict (numpy scalars converted; NaN/inf become None).

        Returns:
            A dict, metric name -> value.
        """
        return {k: _plain(v) for k, v in self._d.items()}

    def to_json(self, **kwargs) -> str:
        """The metrics and notes as a JSON string.

        Args:
            **kwargs: passed to :func:`json.dumps` (e.g. ``indent``).

        Returns:
            A JSON string.
        """
        return json.dumps({"metrics": self.to_dict(), "notes": self.notes}, **kwargs)

    def to_markdown(self) -> str:
        """The metrics as a two-column markdown table, then the notes.

        Returns:
            A markdown string.
        """
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self._d.items()]
        lines += [f"\n_note: {n}_" for n in self.notes]
        return "\n".join(lines)

    __str__ = to_markdown

    def __repr__(self):
        return f"Comparison({self._d!r})"


class ComparisonTable:
    """Several :class:`Comparison` rows against one reference (markdown / JSON)."""

    def __init__(self, rows: Sequence[Comparison], reference_name: str):
        self.rows = list(rows)
        self.reference_name = reference_name

    @property
    def columns(self) -> list:
        cols = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        return cols

    def to_markdown(self) -> str:
        """One markdown row per compared result.

        Returns:
            A markdown string.
        """
        cols = self.columns
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in self.rows]
        notes = [f"_{r.get('method')}: {n}_" for r in self.rows for n in r.notes]
        return "\n".join(out + ([""] + notes if notes else []))

    __str__ = to_markdown

    def to_dict(self) -> dict:
        """Plain dict of the rows (as :meth:`Comparison.to_dict`) and the reference name.

        Returns:
            A dict.
        """
        return {"reference": self.reference_name,
                "rows": [r.to_dict() for r in self.rows],
                "notes": {str(r.get("method")): r.notes for r in self.rows if r.notes}}

    def to_json(self, **kwargs) -> str:
        """The table as a JSON string.

        Args:
            **kwargs: passed to :func:`json.dumps`.

        Returns:
            A JSON string.
        """
        return json.dumps(self.to_dict(), **kwargs)


def _marginals(r: Result):
    """('gauss', mean, std) or ('draws', pooled draws) describing pixel marginals."""
    if r.gaussian is not None:
        return ("gauss", r.gaussian["mean"], r.std)
    if r.draws is not None:
        return ("draws", r.pooled_draws())
    return ("gauss", r.mean, r.std)


def _mean_w1(a, b) -> float:
    if a[0] == "draws" and b[0] == "draws":
        w = M.w1_empirical(a[1], b[1])
    elif a[0] == "gauss" and b[0] == "gauss":
        w = M.w1_gaussian(a[1], a[2], b[1], b[2])
    else:
        g, d = (a, b) if a[0] == "gauss" else (b, a)
        w = M.w1_gaussian_empirical(g[1], g[2], d[1])
    return float(np.mean(w))


def _reference_coverage(lo, hi, ref) -> float:
    """Fraction of reference mass (draws x pixels, or exact Gaussian mass) in [lo, hi]."""
    if ref[0] == "draws":
        d = ref[1]
        return float(np.mean((lo <= d) & (d <= hi)))
    m, s = ref[1].astype(np.float64), ref[2].astype(np.float64)
    safe = np.where(s > 0, s, 1.0)
    mass = special.ndtr((hi - m) / safe) - special.ndtr((lo - m) / safe)
    point = ((lo <= m) & (m <= hi)).astype(float)
    return float(np.mean(np.where(s > 0, mass, point)))


def _name(r: Result, default: str) -> str:
    return str(r.provenance.get("method", default))


def same_model(result: Result, reference: Result):
    """Whether two Results describe the same posterior: ``True``/``False`` from the
    ``posterior_hash`` in their provenance (recorded by every sampler, approximation and
    gold standard built on a Posterior), ``None`` when either lacks one (deep UQ, FBP,
    results saved before the hash was recorded).

    Args:
        result: a Result.
        reference: another Result.

    Returns:
        True, False or None (unknown).
    """
    a = result.provenance.get("posterior_hash")
    b = reference.provenance.get("posterior_hash")
    if a is None or b is None:
        return None
    return a == b


def _model_label(r: Result) -> str:
    return str(r.provenance.get("model", "an unrecorded model"))


@full_precision
def compare(result: Result, reference: Result, truth=None, *, max_dense: int = 4096,
            levels: Sequence[float] = COVERAGE_LEVELS, name: str | None = None,
            reference_name: str | None = None,
            require_same_model: bool = False) -> Comparison:
    """Metrics of ``result`` against ``reference`` (and ``truth`` when given).

    Entries: ``mean_error``, ``std_error`` (relative errors of mean and std),
    ``std_ratio`` (mean std / reference mean std), ``w2`` and ``kl`` = KL(result ||
    reference) when both have Gaussian factors, ``w1_marginal`` (mean over pixels of the
    marginal W1), ``ref_coverage_XX`` (reference mass inside the result's XX % intervals)
    and, with ``truth``: ``truth_error``, ``psnr``, ``ssim``, ``coverage_XX``,
    ``pearson``/``spearman`` (``|error|`` vs std), ``ause``. Convergence and timing figures
    are copied from the result when present. Complex-image Results (and a complex
    ``truth``) are compared coordinate by coordinate in ``(Re x, Im x)``
    (:meth:`Result.real_coordinates`). ``name``/``reference_name`` label the
    rows (default: ``provenance['method']``).

    ``same_model`` (first entry after the names) says whether ``result`` approximates the
    posterior ``reference`` was drawn from (:func:`same_model`). When it does not (e.g.
    Huber-TV VI against an exact-TV reference), every error mixes the model change with
    the approximation error: the comparison says so in a note, and
    ``require_same_model=True`` refuses it instead (``ValueError``). ``None`` means the
    provenance cannot tell (no hash recorded): grade such rows with care.

    Args:
        result: the :class:`~uqrecon.result.Result` to grade.
        reference: the reference :class:`~uqrecon.result.Result` (e.g. a gold standard).
        truth: the true image, if known (adds the truth-based entries).
        max_dense: largest pixel count for which dense Gaussian covariances are formed (W2,
            KL).
        levels: credible levels of the coverage entries.
        name: label of the result (None: its method).
        reference_name: label of the reference (None: its method).
        require_same_model: raise ValueError when the two do not describe the same
            posterior.

    Returns:
        A :class:`Comparison`.
    """
    for arg, val in (("result", result), ("reference", reference)):
        if not isinstance(val, Result):
            raise TypeError(f"'{arg}' must be a uqrecon Result, got {type(val).__name__}")
    # complex images are compared coordinate by coordinate, in (Re x, Im x)
    result, reference = result.real_coordinates(), reference.real_coordinates()
    if truth is not None and np.iscomplexobj(truth):
        truth = np.stack([np.real(truth), np.imag(truth)])
    if result.shape != reference.shape:
        raise ValueError(f"'result' has shape {result.shape} but 'reference' has "
                         f"{reference.shape}")
    notes = []
    d: dict = {"method": name or _name(result, "result"),
               "reference": reference_name or _name(reference, "reference")}
    d["same_model"] = same_model(result, reference)
    if d["same_model"] is False:
        msg = (f"model change: the result is of {_model_label(result)!r}, the reference of "
               f"{_model_label(reference)!r}; its errors mix the model change with "
               "approximation error")
        if require_same_model:
            raise ValueError(f"compare(require_same_model=True): {msg}")
        notes.append(msg)
    for key, a, b in (("mean_error", result.mean, reference.mean),
                      ("std_error", result.std, reference.std)):
        if np.any(b != 0):
            d[key] = M.relative_error(a, b)
        else:
            d[key] = None
            notes.append(f"{key} undefined: the reference's {key[:-6]} is zero everywhere")
    ref_std = float(np.mean(reference.std, dtype=np.float64))
    d["std_ratio"] = float(np.mean(result.std, dtype=np.float64)) / ref_std if ref_std else None
    d["w2"] = d["kl"] = None
    if result.gaussian is not None and reference.gaussian is not None:
        for key, fn in (("w2", M.gaussian_w2), ("kl", M.gaussian_kl)):
            try:
                d[key] = fn(result.gaussian, reference.gaussian, max_dense)
            except ValueError as e:  # too large for dense algebra: skip, say why
                notes.append(f"{key}: {e}")
            except np.linalg.LinAlgError as e:
                notes.append(f"{key} failed: {e}")
    mr, mref = _marginals(result), _marginals(reference)
    if mr[0] == "gauss" and result.gaussian is None:
        notes.append("result has neither draws nor Gaussian factors: marginals taken as "
                     "N(mean, std^2)")
    d["w1_marginal"] = _mean_w1(mr, mref)
    intervals = {a: result.interval(a) for a in levels}
    for a, (lo, hi) in intervals.items():
        d[f"ref_coverage_{round(100 * a)}"] = _reference_coverage(lo, hi, mref)
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != result.shape:
            raise ValueError(f"'truth' has shape {truth.shape}, expected {result.shape}")
        d["truth_error"] = M.relative_error(result.mean, truth)
        if np.ptp(truth) > 0:
            d["psnr"] = M.psnr(result.mean, truth)
            d["ssim"] = (M.ssim(result.mean, truth) if truth.ndim == 2 and min(truth.shape) >= 11
                         else None)
        for a, (lo, hi) in intervals.items():
            d[f"coverage_{round(100 * a)}"] = M.coverage(lo, hi, truth)
        err = np.abs(result.mean.astype(np.float64) - truth)
        d.update(M.error_uncertainty_correlation(err, result.std))
        d["ause"] = M.sparsification(err, result.std)["ause"] if err.sum() > 0 else None
    diag = result.diagnostics
    if "ess_bulk" in diag or "rhat" in diag:
        d.update(summarize(diag.get("ess_bulk"), diag.get("rhat")))
    if "num_grad_evals" in diag:
        d["num_grad_evals"] = _plain(np.asarray(diag["num_grad_evals"]).sum().item())
    for k in ("compile_s", "run_s"):
        if k in result.timings:
            d[k] = float(result.timings[k])
    if "ess_bulk_min" in d and result.timings.get("run_s"):
        d["ess_min_per_s"] = d["ess_bulk_min"] / float(result.timings["run_s"])
    return Comparison(d, notes)


def compare_table(results, reference: Result, truth=None, *,
                  reference_name: str | None = None, **kwargs) -> ComparisonTable:
    """One :func:`compare` row per result. ``results``: dict name -> Result, or a list
    (names from ``provenance['method']``).

    Args:
        results: dict name -> Result, or a list of Results.
        reference: the reference :class:`~uqrecon.result.Result`.
        truth: the true image, if known.
        reference_name: label of the reference (None: its method).
        **kwargs: passed to :func:`compare`.

    Returns:
        A :class:`ComparisonTable`.
    """
    if isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, (list, tuple)):
        items = [(_name(r, f"result{i}"), r) for i, r in enumerate(results)]
    else:
        raise TypeError(f"'results' must be a dict or list of Results, got {type(results).__name__}")
    if not items:
        raise ValueError("'results' is empty")
    ref_name = reference_name or _name(reference, "reference")
    rows = [compare(r, reference, truth, name=str(n), reference_name=ref_name, **kwargs)
            for n, r in items]
    return ComparisonTable(rows, ref_name)

"""Report figures (matplotlib, Agg backend) and a written comparison report.

``write_report(folder, results, truth, baseline, reference_name)`` writes, for every
method, a six-panel figure (truth, baseline, posterior mean, std, 90 % interval width,
|error|) and a std-vs-|error| scatter; one calibration-curve plot for all methods; and
the comparison table against the reference as ``comparison.md`` and ``comparison.json``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from uqrecon.result import Result  # noqa: E402
from uqrecon.uq.compare import compare_table  # noqa: E402
from uqrecon.uq.metrics import calibration_curve  # noqa: E402

__all__ = ["plot_panels", "plot_calibration", "plot_std_vs_error", "write_report"]


def _check_image(x, name, shape=None):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"'{name}' must be a 2-D image, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"'{name}' has shape {a.shape}, expected {tuple(shape)}")
    return a


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_panels(path, result: Result, truth, baseline=None, title: str | None = None,
                baseline_name: str = "baseline") -> str:
    """Six panels: truth, baseline, posterior mean, std, 90 % interval width, |error|.

    Truth, baseline and mean share one grey scale (the truth's range); the uncertainty
    panels have their own colour bars. Returns ``path``.
    """
    truth = _check_image(truth, "truth", result.shape)
    base = None if baseline is None else _check_image(baseline, "baseline", result.shape)
    lo, hi = result.interval(0.9)
    width = np.asarray(hi, np.float64) - lo
    std = result.std.astype(np.float64)
    vmin, vmax = float(truth.min()), float(truth.max())
    panels = [
        ("truth", truth, "gray", (vmin, vmax)),
        (baseline_name, base, "gray", (vmin, vmax)),
        ("posterior mean", result.mean, "gray", (vmin, vmax)),
        ("posterior std", std, "viridis", (0, None)),
        ("90% interval width", width, "viridis", (0, None)),
        ("|mean - truth|", np.abs(result.mean - truth), "magma", (None, None)),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for ax, (name, img, cmap, (a, b)) in zip(axes.ravel(), panels):
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
        if img is None:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            continue
        # images use ODL's layout x[i, j] = f(x_i, y_j): show x to the right, y up
        im = ax.imshow(np.asarray(img).T, cmap=cmap, vmin=a, vmax=b, origin="lower")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_calibration(path, curves: Mapping[str, tuple]) -> str:
    """Coverage against nominal level, one line per method; ``curves[name] = (levels,
    coverage)``. The diagonal is perfect calibration."""
    if not curves:
        raise ValueError("'curves' is empty")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for name, (levels, cov) in curves.items():
        ax.plot(levels, cov, "o-", ms=3, label=str(name))
    ax.set_xlabel("nominal level")
    ax.set_ylabel("empirical coverage of the truth")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("calibration")
    return _save(fig, path)


def plot_std_vs_error(path, result: Result, truth, title: str | None = None,
                      max_points: int = 20000) -> str:
    """Scatter of pixel std against |mean - truth| (a random subset of at most
    ``max_points`` pixels, fixed seed), with the 1:1 line."""
    truth = _check_image(truth, "truth", result.shape)
    err = np.abs(result.mean - truth).ravel()
    std = result.std.astype(np.float64).ravel()
    if err.size > max_points:
        idx = np.random.default_rng(0).choice(err.size, max_points, replace=False)
        err, std = err[idx], std[idx]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(std, err, s=2, alpha=0.4)
    top = float(max(std.max(), err.max())) or 1.0
    ax.plot([0, top], [0, top], "k--", lw=1)
    ax.set_xlabel("posterior std")
    ax.set_ylabel("|mean - truth|")
    ax.set_title(title or "error vs uncertainty")
    return _save(fig, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "method"


def write_report(folder, results: Mapping[str, Result], truth, baseline=None,
                 reference_name: str | None = None, baseline_name: str = "FBP") -> dict:
    """Write figures and the comparison table for ``results`` (name -> Result).

    ``reference_name`` picks the reference among ``results`` (default: the first).
    Returns a dict of the written paths.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("'results' must be a non-empty dict name -> Result")
    if reference_name is None:
        reference_name = next(iter(results))
    if reference_name not in results:
        raise ValueError(f"'reference_name' {reference_name!r} is not among results "
                         f"{list(results)}")
    os.makedirs(folder, exist_ok=True)
    written = {"panels": {}, "scatter": {}}
    curves = {}
    for name, res in results.items():
        slug = _slug(name)
        written["panels"][name] = plot_panels(
            os.path.join(folder, f"panels_{slug}.png"), res, truth, baseline,
            title=str(name), baseline_name=baseline_name)
        written["scatter"][name] = plot_std_vs_error(
            os.path.join(folder, f"std_vs_error_{slug}.png"), res, truth, title=str(name))
        curves[name] = calibration_curve(res, truth)
    written["calibration"] = plot_calibration(os.path.join(folder, "calibration.png"), curves)
    table = compare_table(dict(results), results[reference_name], truth,
                          reference_name=str(reference_name))
    md = os.path.join(folder, "comparison.md")
    with open(md, "w") as fh:
        fh.write(f"# Comparison against `{reference_name}`\n\n{table.to_markdown()}\n")
    js = os.path.join(folder, "comparison.json")
    payload = table.to_dict()
    payload["calibration"] = {str(n): {"levels": lv.tolist(), "coverage": cv.tolist()}
                              for n, (lv, cv) in curves.items()}
    with open(js, "w") as fh:
        json.dump(payload, fh, indent=2)
    written["markdown"], written["json"] = md, js
    return written

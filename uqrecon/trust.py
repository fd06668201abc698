"""The main job's trust section: can the uncertainty of this problem's model be trusted,
and what does it decide?

For the run's own operator, noise level and GMRF model (the model whose exact posterior is
cheap to recompute for new data), three questions, each answered over replicated
experiments rather than one image:

1. **Calibration.** Exact posterior draws under truths drawn from the prior (well
   specified: must be calibrated) and random-ellipse truths (misspecified), and mean-field
   VI (over-confident: its std ignores pixel correlations), with pixel coverage and
   MSE-ball curves (:mod:`uqrecon.uq.calibration`).
2. **Conformal repair.** Both conformal calibrations of :mod:`uqrecon.uq.conformal` (a
   std-scaled error bound by conformal risk control; RCPS with the Hoeffding-Bentkus
   bound) fitted on half of mean-field VI's replicates and scored on the other half, over
   resampled splits: the realised risk of the repaired intervals against alpha.
3. **Is this structure real?** Planted lesions (present, faint, absent, and a disc
   hallucinated onto the candidate reconstruction) seen through the run's operator: BUQO
   (no sampling) under the GMRF and TV models, and the sampling test from the exact GMRF
   posterior, against the naive rule that trusts the picture (:mod:`uqrecon.uq.structure`).

Writes ``trust.md``, ``trust.json``, ``calibration.png`` and ``structure.png`` in its
folder and returns the summary. Dense exact algebra makes it a small-image section: it is
skipped (and says so) above 4096 pixels or for complex (MRI) images.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["run_trust_section", "TRUST_MAX_PIXELS"]

TRUST_MAX_PIXELS = 4096


def _structure_rows(problem, gmrf_post, tv_post, seed: int, alpha: float):
    """BUQO (GMRF and TV) and the exact sampling test (GMRF) on one planted-lesion seed."""
    from .gold import exact_gaussian
    from .map import map_estimate
    from .models import Posterior
    from .noise import relative_gaussian_noise
    from .uq.lesions import CASES, hallucinated_candidate, planted_lesion
    from .uq.structure import buqo_test, contrast, sampling_test

    op = problem.operator
    shape = tuple(problem.shape)
    rows, example = [], None
    key = jax.random.PRNGKey(seed)
    # the benchmark's lesion at 32x32 (radius 2.5 px, ring 2 px), scaled with the image
    scale = min(shape) / 32
    radius, ring = max(1.5, 2.5 * scale), max(1.0, 2.0 * scale)
    for i, case in enumerate(CASES):
        lesion = planted_lesion(seed, case, shape, radius=radius, ring_width=ring)
        clean = op(jnp.asarray(lesion.truth, jnp.float32))
        y, sigma = relative_gaussian_noise(jax.random.fold_in(key, i), clean,
                                           problem.noise_level)
        lik = type(gmrf_post.likelihood)(op, y, sigma=float(sigma))
        gp, tp = Posterior(lik, gmrf_post.priors), Posterior(lik, tv_post.priors)
        s = lesion.structure
        row = {"case": case, "true_contrast": float(contrast(s, lesion.truth)),
               "h0_true": case in ("absent", "hallucinated")}
        tv_map, _ = map_estimate(tp)
        candidate = (hallucinated_candidate(lesion, np.asarray(tv_map))
                     if case == "hallucinated" else np.asarray(tv_map))
        row["naive_rejects"] = bool(contrast(s, candidate) > s.threshold)
        exact = exact_gaussian(gp)            # its mean is the GMRF MAP
        for name, post, x_map in (("gmrf", gp, exact.mean), ("tv", tp, tv_map)):
            b = buqo_test(post, s, alpha=alpha, x_map=jnp.asarray(x_map, jnp.float32))
            row[f"buqo_{name}"] = b.rejected
            row[f"buqo_{name}_ratio"] = float(b.ratio)
            if name == "tv" and case == "present":
                example = (lesion.truth, candidate, np.asarray(b.structure_free_image), s)
        t = sampling_test(exact, s, alpha=alpha)
        row["sampling_gmrf"] = t.rejected
        row["p_absent_gmrf"] = float(t.prob_absent)
        rows.append(row)
    return rows, example


def _structure_figure(example, path):
    import matplotlib.pyplot as plt

    truth, candidate, free, s = example
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6))
    lo, hi = float(np.min(truth)), float(np.max(truth))
    for ax, img, title in zip(axes, (truth, candidate, free),
                              ("truth (lesion present)", "TV MAP",
                               "closest structure-free image\n(BUQO, TV model)")):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.contour(np.asarray(s.region, float), levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("pixel")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _fmt_decision(v) -> str:
    return "undecided" if v is None else ("rejects" if v else "keeps H0")


def run_trust_section(problem, gmrf_post, tv_post, folder: str, *, seed: int = 0,
                      num_replicates: int = 100, num_meanfield: int = 40,
                      alpha: float = 0.1, log=print) -> dict:
    """Run the trust section for ``problem`` and write its outputs to ``folder``.

    Args:
        problem: the run's :class:`~uqrecon.problems.Problem` (its operator and noise
            level define the replicated experiments).
        gmrf_post: the run's GMRF posterior (its prior is the well-specified truth law).
        tv_post: the run's TV posterior (BUQO under the TV model).
        folder: output folder (created).
        seed: seed of every replicate set (same seed, same section).
        num_replicates: replicates of the exact method (each set: prior and ellipses).
        num_meanfield: replicates of mean-field VI (run per replicate; half calibrate the
            conformal steps, half test them).
        alpha: level of the conformal risk (and delta) and of the structure tests.
        log: progress printer.

    Returns:
        The summary dict written to ``trust.json`` (``skipped`` with the reason when the
        section does not apply).
    """
    from .uq.calibration import calibration_figure, calibration_table, replicated_calibration
    from .uq.conformal import ConformalCheck, min_calibration_size, repeated_split_check

    os.makedirs(folder, exist_ok=True)
    n = int(np.prod(problem.shape))
    if problem.kind == "mri" or n > TRUST_MAX_PIXELS:
        reason = ("complex (MRI) images: the replicated-calibration tools are real-only"
                  if problem.kind == "mri" else
                  f"{n} pixels > {TRUST_MAX_PIXELS}: the section's exact replicates use "
                  "dense algebra")
        summary = {"skipped": reason}
        with open(os.path.join(folder, "trust.md"), "w") as fh:
            fh.write(f"# Trust\n\nSkipped: {reason}.\n")
        with open(os.path.join(folder, "trust.json"), "w") as fh:
            json.dump(summary, fh, indent=2)
        return summary

    t0 = time.perf_counter()
    timings = {}
    reports = []
    for method, truths, R in (("exact", "prior", num_replicates),
                              ("exact", "ellipses", num_replicates),
                              ("meanfield", "prior", num_meanfield)):
        t = time.perf_counter()
        rep = replicated_calibration(gmrf_post, method, truths=truths, num_replicates=R,
                                     seed=seed, num_draws=2000 if method == "exact" else 500)
        timings[f"{method}/{truths}"] = time.perf_counter() - t
        log(f"  trust: {rep.label}, {R} replicates, cov90 {rep.coverage_at(0.9):.3f} "
            f"({timings[f'{method}/{truths}']:.1f} s)")
        reports.append(rep)
    calibration_figure(reports, os.path.join(folder, "calibration.png"))
    mf = reports[-1].replicates
    t = time.perf_counter()
    n_cal = max(mf.num_replicates // 2, min_calibration_size(alpha, alpha))
    conformal = repeated_split_check(mf, alpha=alpha, delta=alpha, num_splits=100,
                                     num_calibration=n_cal, seed=seed,
                                     label="meanfield / prior (resampled splits)")
    timings["conformal"] = time.perf_counter() - t

    t = time.perf_counter()
    rows, example = _structure_rows(problem, gmrf_post, tv_post, seed, alpha=0.05)
    timings["structure"] = time.perf_counter() - t
    if example is not None:
        _structure_figure(example, os.path.join(folder, "structure.png"))
    log(f"  trust: structure tests on planted lesions ({timings['structure']:.1f} s)")

    verdicts = {r.label: r.check() for r in reports}
    summary = {
        "calibration": [{"setting": r.label, "replicates": r.replicates.num_replicates,
                         "coverage_90": r.coverage_at(0.9), "ece_pixel": r.ece_pixel,
                         "calibrated": bool(verdicts[r.label]["calibrated"]),
                         "unconverged_replicates": len(
                             r.replicates.info.get("unconverged_replicates", []))}
                        for r in reports],
        "conformal": conformal.summary(),
        "structure": rows,
        "timings": timings,
        "total_seconds": time.perf_counter() - t0,
    }
    lines = [
        "# Trust: calibration over replicated experiments, conformal repair, structure tests",
        "",
        f"The run's operator and noise level with its GMRF model; seed {seed}. Well "
        "specified: truths drawn from the GMRF prior (an exact method must be calibrated); "
        "misspecified: random-ellipse truths. Pixel coverage is pooled over pixels and "
        "replicates (band: 95 % over replicates); MSE-ball: fraction of replicates with "
        "||x - mean||^2 below the method's level-a quantile of ||draw - mean||^2.", "",
        calibration_table(reports), "",
    ]
    for r in reports:
        v = verdicts[r.label]
        short = len(r.replicates.info.get("unconverged_replicates", []))
        lines.append(f"- **{r.label}**: {'calibrated' if v['calibrated'] else 'NOT calibrated'}"
                     f" (pixel {'pass' if v['pixel'] else 'fail'}, MSE-ball "
                     f"{'pass' if v['mse_ball'] else 'fail'})"
                     + (f"; the method did not converge on {short} replicates" if short else ""))
    lines += [
        "", "![calibration](calibration.png)", "",
        "## Conformal repair of an over-confident method", "",
        f"alpha = delta = {alpha:g}: fitted on {n_cal} of mean-field VI's "
        f"{mf.num_replicates} replicates, scored on the rest, over 100 resampled splits (the splits share replicates, so the band "
        "is approximate). *raw*: VI's own 90 % interval; *std-bound*: |x - mean| <= lambda "
        "std (conformal risk control: E[uncovered fraction] <= alpha); *RCPS*: "
        "P(risk > alpha) <= delta (Hoeffding-Bentkus).", "",
        ConformalCheck.table_header(), conformal.table_row(), "",
        "## Is this structure real? (planted lesion, one seed)", "",
        "H0: the disc is absent (its contrast against the surrounding ring <= 0); level "
        "0.05. BUQO needs no sampling (conservative HPD region); the sampling test uses the "
        "exact GMRF posterior; the naive rule trusts the picture (TV MAP, with the disc "
        "painted on in the hallucinated case).", "",
        "| case | true contrast | H0 true | naive rule | BUQO GMRF (ratio) | BUQO TV (ratio) "
        "| sampling GMRF (P(absent)) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['true_contrast']:.3f} | {r['h0_true']} | "
            f"{_fmt_decision(r['naive_rejects'])} | {_fmt_decision(r['buqo_gmrf'])} "
            f"({r['buqo_gmrf_ratio']:.2f}) | {_fmt_decision(r['buqo_tv'])} "
            f"({r['buqo_tv_ratio']:.2f}) | {_fmt_decision(r['sampling_gmrf'])} "
            f"({r['p_absent_gmrf']:.3f}) |")
    lines += ["", "![structure](structure.png)", "",
              f"Section time {summary['total_seconds']:.0f} s. Size and power over many "
              "replicates: `benchmarks/trust_structure.py`, `benchmarks/trust_calibration.py`."]
    with open(os.path.join(folder, "trust.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "trust.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    return summary

"""Can we trust the uncertainty? Replicated calibration and conformal repair (issue 12).

Sparse-view parallel-beam CT with a GMRF prior. For exact / Laplace / mean-field VI:
replicated calibration, well specified (truths drawn from the GMRF prior) and
misspecified (random-ellipse truths). Then conformal calibration (std-based error bound
by conformal risk control; RCPS with the Hoeffding-Bentkus bound) repeated over many
independent calibration sets and scored on fresh test replicates, for the exact method,
for it with its std halved (over-confident) and under misspecification; plus mean-field
VI on resampled splits of its replicates.

Writes ``benchmarks/results/trust_calibration.md`` and ``trust_calibration.png``.

    python benchmarks/trust_calibration.py                 # defaults: a few minutes, 2 cores
    python benchmarks/trust_calibration.py --size 64 --replicates 200
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uqrecon.models import GMRF, Gaussian, Posterior  # noqa: E402
from uqrecon.operators.tomo import sparse_view  # noqa: E402
from uqrecon.phantoms import shepp_logan  # noqa: E402
from uqrecon.uq.calibration import (calibration_figure, calibration_table,  # noqa: E402
                                    replicated_calibration, run_replicates)
from uqrecon.uq.conformal import ConformalCheck, repeated_split_check  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build_model(size, num_angles, noise_level, delta):
    op = sparse_view((size, size), num_angles)
    sigma = noise_level * float(jnp.max(jnp.abs(op(shepp_logan((size, size))))))
    post = Posterior(Gaussian(op, np.zeros(op.range_shape, np.float32), sigma=sigma),
                     GMRF((size, size), delta=delta))
    return post, sigma


def conformal_fresh(post, truths, std_scale, args, label):
    """Independent calibration sets (one seeded run split into disjoint sets) and one
    fresh test set."""
    n_cal, S, n_test = args.n_cal, args.splits, args.n_test
    pool = run_replicates(post, "exact", truths=truths, num_replicates=S * n_cal + n_test,
                          seed=10_000 + int(100 * std_scale), std_scale=std_scale,
                          num_draws=100, batch_size=250)
    cal = [pool.subset(np.arange(n_cal * k, n_cal * (k + 1))) for k in range(S)]
    test = pool.subset(np.arange(S * n_cal, S * n_cal + n_test))
    return repeated_split_check(cal, test, alpha=args.alpha, delta=args.delta, label=label)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--angles", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.02, help="sigma as a fraction of "
                   "max|A x| for the Shepp-Logan phantom")
    p.add_argument("--delta-prior", type=float, default=20.0, help="GMRF weight")
    p.add_argument("--replicates", type=int, default=200, help="exact method")
    p.add_argument("--replicates-laplace", type=int, default=20,
                   help="Laplace (run per replicate; ~5 s each at 32x32 on 2 cores)")
    p.add_argument("--replicates-meanfield", type=int, default=50,
                   help="mean-field VI (run per replicate; ~1 s each at 32x32)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--splits", type=int, default=100, help="independent calibrations")
    p.add_argument("--n-cal", type=int, default=100)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(HERE, "results", "trust_calibration.md"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    post, sigma = build_model(args.size, args.angles, args.noise, args.delta_prior)
    shape = f"{args.size}x{args.size}"
    print(f"model: {shape}, {args.angles} angles, sigma={sigma:.4g}, GMRF delta="
          f"{args.delta_prior}, dtype {jnp.dtype(post.dtype).name}", flush=True)

    reports, times = [], {}
    for truths in ("prior", "ellipses"):
        for method, R in (("exact", args.replicates), ("laplace", args.replicates_laplace),
                          ("meanfield", args.replicates_meanfield)):
            t = time.perf_counter()
            rep = replicated_calibration(post, method, truths=truths, num_replicates=R,
                                         seed=1 if truths == "prior" else 2,
                                         num_draws=1000 if method != "exact" else 4000)
            times[(method, truths)] = time.perf_counter() - t
            reports.append(rep)
            print(f"  {rep.label}: {R} replicates in {times[(method, truths)]:.1f} s; "
                  f"cov90 {rep.coverage_at(0.9):.3f}, ECE {rep.ece_pixel:.3f}, "
                  f"calibrated={rep.check()['calibrated']}", flush=True)
    miscaled = replicated_calibration(post, "exact", truths="prior", num_replicates=args.replicates,
                                      seed=3, std_scale=0.9, num_draws=4000)
    reports.insert(1, miscaled)

    checks = []
    for truths, scale, label in (("prior", 1.0, "exact / prior"),
                                 ("prior", 0.5, "exact std x0.5 / prior"),
                                 ("ellipses", 1.0, "exact / ellipses")):
        t = time.perf_counter()
        checks.append(conformal_fresh(post, truths, scale, args, label))
        print(f"  conformal {label}: {time.perf_counter() - t:.1f} s; "
              f"{checks[-1].summary()}", flush=True)
    mf = next(r for r in reports if r.replicates.info["method"] == "meanfield"
              and r.replicates.info["truths"] == "prior").replicates
    if mf.num_replicates >= 2 * 22:
        checks.append(repeated_split_check(mf, alpha=args.alpha, delta=args.delta,
                                           num_splits=200,
                                           num_calibration=mf.num_replicates // 2,
                                           label="meanfield / prior"))

    fig_path = os.path.splitext(args.out)[0] + ".png"
    calibration_figure([r for r in reports if r.replicates.info["truths"] == "prior"]
                       + [r for r in reports if r.replicates.info["truths"] == "ellipses"
                          and r.replicates.info["method"] == "exact"], fig_path)
    total = time.perf_counter() - t_start
    cmd = "python benchmarks/trust_calibration.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    lines = [
        "# Trust: replicated calibration and conformal repair (issue 12 items 1-2)", "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='minutes')}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, JAX "
        f"{jax.__version__} on {jax.devices()[0].platform}; a shared machine (other jobs "
        f"were running), so times are indicative only. Total {total:.0f} s.", "",
        f"Model: sparse-view parallel-beam CT {shape}, {args.angles} angles over [0, pi), "
        f"Gaussian noise sigma = {sigma:.4g} ({args.noise:g} of max|A x| of Shepp-Logan), "
        f"GMRF prior delta = {args.delta_prior:g} (zero boundary, proper), float32.", "",
        "## Replicated calibration", "",
        "Well specified: truths are exact GMRF prior draws (an exact method must be "
        "calibrated). Misspecified: random-ellipse truths. `cov a %`: pooled pixel coverage "
        "of the a % equal-tailed interval (band: 95 % over replicates, honest under pixel "
        "correlation); MSE-ball: fraction of replicates with ||x - mean||^2 below the "
        "level-a quantile of ||draw - mean||^2; ECE: mean |coverage(a) - a| over the levels "
        "0.05, ..., 0.95, 0.99; width in image units; RMSE of the mean.", "",
        calibration_table(reports), "",
        "Calibration verdicts (`CalibrationReport.check()`: pixel coverage within 2 % plus a "
        "Bonferroni allowance at every level, MSE-ball curve inside its 99 % simultaneous "
        "band):", "",
    ]
    for r in reports:
        v = r.check()
        lines.append(f"- {r.label}: pixel {'pass' if v['pixel'] else 'FAIL'} (worst "
                     f"{v['worst_pixel_deviation']:.3f} at {v['worst_pixel_level']:.2f}), "
                     f"MSE-ball {'pass' if v['mse_ball'] else 'FAIL'} (worst "
                     f"{v['worst_mse_deviation']:.3f}, allowance {v['mse_allowance']:.3f}); "
                     f"{times.get((r.replicates.info['method'], r.replicates.info['truths']), 0):.0f} s"
                     if r is not miscaled else
                     f"- {r.label}: pixel {'pass' if v['pixel'] else 'FAIL'}, MSE-ball "
                     f"{'pass' if v['mse_ball'] else 'FAIL'} (deliberately mis-scaled: must fail)")
    lines += ["", f"Figure: `{os.path.basename(fig_path)}`.", "",
              "Per-level table of the well-specified exact method:", "", reports[0].table(),
              "## Conformal calibration", "",
              f"alpha = {args.alpha:g}, delta = {args.delta:g}. Each repetition fits on its own "
              "calibration replicates and is scored on the fresh test replicates. "
              "*std-bound*: |x - mean| <= lambda std with one lambda by conformal risk control "
              "(guarantee: E[fraction of uncovered pixels] <= alpha over calibration and test; "
              "allowance: alpha + 1.645 standard errors of the mean over repetitions). *RCPS*: "
              "[mean - lambda l, mean + lambda u] from the method's 90 % interval, lambda by "
              "the Hoeffding-Bentkus scan (guarantee: P(realised risk > alpha) <= delta over "
              "calibration sets; band: the 95 % quantile of Binomial(repetitions, delta) / "
              "repetitions, exact for independent repetitions). *raw*: the method's own 90 % "
              "interval, no conformal step. Mean-field VI is checked on resampled splits of its "
              "replicates (repetitions share replicates: the band is approximate, and its test "
              "sets are small).", "",
              ConformalCheck.table_header()]
    lines += [c.table_row() for c in checks]
    lines += ["", "Reading (for the default settings; check the table after a rerun): the "
              "exact method under a well-specified model is calibrated at every level, and "
              "a 10 % std error is caught by both criteria. Mean-field VI under-covers badly "
              "(its std 1/sqrt(P_ii) ignores pixel correlations). Laplace at its default "
              "rank 50 over-covers: the truncated low-rank update of the prior covariance "
              "leaves too much prior variance on a problem with ~900 informed directions. "
              "Random-ellipse truths (misspecified GMRF) are under-covered by the exact "
              "posterior and the MSE-ball curve collapses. Conformal calibration restores "
              "the target risk in every case; RCPS (high-probability guarantee, conservative "
              "HB bound: realised risk ~0.04 for alpha 0.1) pays with wider sets than the "
              "std-bound (guarantee in expectation, realised risk ~0.09).", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out} and {fig_path} ({total:.0f} s)")


if __name__ == "__main__":
    main()

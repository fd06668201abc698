"""Can we trust the uncertainty? Equivariant bootstrap and downstream risk (issue 12, items 3, 5).

Problem: sparse-view parallel-beam CT at 32x32 with 9 views (an odd number: rotations by
90 degrees put the rotated views halfway between the measured ones, so they move the
operator's null space), random-ellipse truths, Gaussian noise, GMRF prior (zero
boundary, delta = DELTA). Everything linear is done with dense float64 matrices (the
operator, its Hann-filtered FBP, the MAP map ``M = P^-1 tau A^T`` and the exact posterior
``N(M y, P^-1)``); the bootstrap itself runs through ``uqrecon.uq.bootstrap`` in float32.

(a) Equivariant vs naive bootstrap of FBP and of the MAP over ``--replicates`` truths
    (2 % noise): MSE-ball coverage curve (Tachella & Pereyra's criterion: the fraction
    of replicates whose ``||x - x_hat||^2`` is below the level-a quantile of the bootstrap
    ``||x_i - x_hat||^2``, ``uqrecon.uq.metrics.mse_ball_coverage``), the exact
    posterior's ball around its mean for comparison, pixel coverage of 90 % intervals,
    and the joint null-space dimension of ``A`` stacked with ``A T_g`` per group element.
(b) ROI risk and abstention over ``--risk-replicates`` truths with a noise level drawn
    log-uniformly in [0.5 %, 8 %] (so data quality, and the posterior spread, vary): the
    exact posterior, mean-field VI (for a Gaussian target its optimum is exactly
    ``N(mean, diag(1 / P_ii))``; checked against ``uqrecon.approximate(...,
    'meanfield')`` once with ``--check-vi``) and the exact posterior with its std halved.
    Per method: 90 % credible-interval coverage and width of three ROI quantities; the
    abstention rule (score = posterior expected RMS error) with thresholds calibrated on
    the first half of the replicates (target flag rate 20 %; target accepted error) and
    the nominal rule "flag when the predicted RMS error exceeds the error cutoff",
    evaluated on the second half: flag rate, precision, recall, AUROC.

Usage: ``python benchmarks/trust_bootstrap.py [--replicates 60] [--risk-replicates 80]
[--resamples 100] [--out benchmarks/results]``; writes ``trust_bootstrap.md`` and
``trust_bootstrap.png``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from uqrecon import phantoms
from uqrecon.models import GMRF
from uqrecon.operators import MatrixOperator
from uqrecon.operators.tomo import sparse_view
from uqrecon.result import Result
from uqrecon.uq import risk
from uqrecon.uq.bootstrap import (FBPReconstruction, LinearReconstruction,
                                  equivariant_bootstrap, image_group, response_matrix)
from uqrecon.uq.metrics import DEFAULT_LEVELS, coverage, mse_ball_coverage

N = 32
NUM_ANGLES = 9
DELTA = 20.0
NOISE = 0.02
GROUPS = ("identity", "rot90", "rotate")


# --------------------------------------------------------------------------------------
# Dense problem
# --------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("shape",))
def _ellipses(keys, shape):
    """Random-ellipse truths for a batch of keys (jitted once, module level)."""
    return jax.vmap(lambda k: phantoms.random_ellipses(k, shape))(keys)


def dense_problem():
    """Operator, dense A, dense Hann FBP B, GMRF precision Q (delta = 1)."""
    op = sparse_view((N, N), NUM_ANGLES)
    A = np.asarray(op.to_dense(jnp.float32), np.float64)
    m = A.shape[0]
    unit = jnp.eye(m, dtype=jnp.float32).reshape(m, *op.range_shape)
    B = np.asarray(response_matrix(FBPReconstruction(op, "hann"), unit),
                   np.float64).reshape(m, N * N).T
    prior = GMRF((N, N), delta=1.0)
    Q = np.asarray(jax.vmap(prior.precision)(jnp.eye(N * N, dtype=jnp.float32).reshape(-1, N, N)),
                   np.float64).reshape(N * N, N * N)
    return op, A, B, 0.5 * (Q + Q.T)


def truths(kind, count, offset, Q):
    """``count`` truths: random ellipses (misspecified for the GMRF) or GMRF prior draws
    ``x = (DELTA Q)^-1/2 z`` (well specified: the exact posterior must be calibrated)."""
    if kind == "ellipses":
        keys = jax.random.split(jax.random.PRNGKey(offset), count)
        return np.asarray(_ellipses(keys, (N, N)), np.float64)
    chol = np.linalg.cholesky(DELTA * Q)
    z = np.random.default_rng(offset).standard_normal((N * N, count))
    return linalg.solve_triangular(chol, z, lower=True, trans="T").T.reshape(count, N, N)


def posterior(A, Q, sigma):
    """Cholesky of P = A^T A / sigma^2 + DELTA Q and the MAP matrix M = P^-1 A^T / sigma^2."""
    P = A.T @ A / sigma ** 2 + DELTA * Q
    chol = linalg.cho_factor(P, lower=True)
    M = linalg.cho_solve(chol, A.T / sigma ** 2)
    return P, chol, M


def null_space_dims(A):
    """Joint null-space dimension of A stacked with A T_g, per group element."""
    n = N * N
    eye = np.eye(n).reshape(n, N, N)

    def T(fn):
        return np.stack([fn(e) for e in eye]).reshape(n, n).T

    s0 = np.linalg.svd(A, compute_uv=False)
    tol = s0[0] * 1e-6
    rows = [("A alone", A)]
    for name, fn in [("flip (axis 0)", np.flipud), ("rot90", np.rot90),
                     ("transpose", lambda a: a.T), ("shift by 1 pixel", lambda a: np.roll(a, 1, 0))]:
        rows.append((f"A and A T_g, g = {name}", np.vstack([A, A @ T(fn)])))
    return [(name, n - int(np.sum(np.linalg.svd(M, compute_uv=False) > tol))) for name, M in rows]


# --------------------------------------------------------------------------------------
# (a) bootstrap calibration
# --------------------------------------------------------------------------------------
def part_a(op, A, B, Q, kind, replicates, resamples, seed):
    rng = np.random.default_rng(seed)
    xs = truths(kind, replicates, 1000 + seed, Q)
    clean = xs.reshape(replicates, -1) @ A.T
    sigma = NOISE * float(np.abs(clean).max())
    P, chol, M = posterior(A, Q, sigma)
    dense_op = MatrixOperator(jnp.asarray(A, jnp.float32), domain_shape=(N, N),
                              range_shape=op.range_shape)
    zero = jnp.zeros((N, N), jnp.float32)
    estimators = {"FBP": LinearReconstruction(jnp.asarray(B, jnp.float32), zero),
                  "MAP": LinearReconstruction(jnp.asarray(M, jnp.float32), zero)}
    # exact posterior: the covariance P^-1 does not depend on y (fixed sigma)
    z = rng.standard_normal((N * N, 2000))
    post_dev = linalg.solve_triangular(chol[0], z, lower=True, trans="T").T   # P^-1/2 z
    post_radii = np.sum(post_dev ** 2, axis=1)
    post_std = np.sqrt(np.sum(linalg.cho_solve(chol, np.eye(N * N)) * np.eye(N * N), axis=0))
    rows, curves = [], {}
    post_hits = np.zeros((replicates, DEFAULT_LEVELS.size), bool)
    post_pix = []
    results = {(e, g): [] for e in estimators for g in GROUPS}
    timing = {k: 0.0 for k in results}
    for r in range(replicates):
        y = clean[r] + sigma * rng.standard_normal(clean.shape[1])
        yj = jnp.asarray(y.reshape(op.range_shape), jnp.float32)
        mean = (M @ y).reshape(N, N)
        post_hits[r] = np.sum((xs[r] - mean) ** 2) <= np.quantile(post_radii, DEFAULT_LEVELS)
        post_pix.append(coverage(mean - 1.645 * post_std.reshape(N, N),
                                 mean + 1.645 * post_std.reshape(N, N), xs[r]))
        for e, rec in estimators.items():
            for g in GROUPS:
                t0 = time.perf_counter()
                res = equivariant_bootstrap(rec, dense_op, yj, sigma, 10 * r + 1,
                                            group=image_group(g, max_angle=10.0),
                                            num_resamples=resamples, batch_size=resamples // 4)
                timing[(e, g)] += time.perf_counter() - t0
                results[(e, g)].append(res)
    for (e, g), res_list in results.items():
        levels, cov = mse_ball_coverage(res_list, list(xs), levels=DEFAULT_LEVELS)
        curves[(e, g)] = cov
        true = np.array([np.sum((x - r_.mean) ** 2) for x, r_ in zip(xs, res_list)])
        boot = np.array([np.median(r_.diagnostics["bootstrap_sq_errors"]) for r_ in res_list])
        pix = np.mean([coverage(*r_.interval(0.9), x) for x, r_ in zip(xs, res_list)])
        std_ratio = (np.mean([np.mean(r_.std) for r_ in res_list]) / np.mean(post_std)
                     if e == "MAP" else float("nan"))
        rows.append((kind, e, g, cov[levels == 0.5][0], cov[levels == 0.9][0], cov[levels == 0.99][0],
                     float(np.median(true / boot)), pix, std_ratio, timing[(e, g)] / replicates))
    curves[("exact posterior", "-")] = post_hits.mean(0)
    rows.append((kind, "exact posterior", "-", *(post_hits.mean(0)[DEFAULT_LEVELS == a][0]
                                          for a in (0.5, 0.9, 0.99)),
                 float(np.median([np.sum((x - (M @ (A @ x.ravel())).reshape(N, N)) ** 2)
                                  for x in xs]) / np.median(post_radii)),
                 float(np.mean(post_pix)), 1.0, float("nan")))
    return rows, curves, sigma


# --------------------------------------------------------------------------------------
# (b) ROI risk and abstention
# --------------------------------------------------------------------------------------
def roi_quantities():
    g = np.linspace(-1, 1, N)
    X, Y = np.meshgrid(g, g, indexing="ij")
    lesion = (X - 0.15) ** 2 + (Y + 0.1) ** 2 < 0.3 ** 2
    organ = X ** 2 + Y ** 2 < 0.7 ** 2
    return [risk.roi_mean(lesion, "roi_mean"), risk.roi_contrast(lesion, ring_width=2),
            risk.area_above(0.5, region=organ, pixel_area=(2.0 / N) ** 2, name="area>0.5")]


def part_b(op, A, Q, kind, replicates, draws, seed, check_vi):
    rng = np.random.default_rng(seed + 1)
    xs = truths(kind, replicates, 5000 + seed, Q)
    clean = xs.reshape(replicates, -1) @ A.T
    scale = float(np.abs(clean).max())
    levels = np.exp(rng.uniform(math.log(0.005), math.log(0.08), replicates))
    quantities = roi_quantities()
    methods = ("exact posterior", "mean-field VI", "exact, std x 0.5")
    per = {m: {"scores": [], "errors": [], "hits": {q.name: [] for q in quantities},
               "width": {q.name: [] for q in quantities}} for m in methods}
    vi_check = None
    for r in range(replicates):
        sigma = levels[r] * scale
        y = clean[r] + sigma * rng.standard_normal(clean.shape[1])
        P, chol, M = posterior(A, Q, sigma)
        mean = (M @ y).reshape(N, N)
        cov = linalg.cho_solve(chol, np.eye(N * N))
        dev = linalg.solve_triangular(chol[0], rng.standard_normal((N * N, draws)), lower=True,
                                      trans="T").T.reshape(draws, N, N)
        diag_mf = 1.0 / np.diag(P)
        z = rng.standard_normal((draws, N, N))
        res = {
            "exact posterior": Result(mean, np.diag(cov).reshape(N, N),
                                      draws=(mean + dev)[None],
                                      gaussian={"kind": "dense", "cov": cov}),
            "mean-field VI": Result(mean, diag_mf.reshape(N, N),
                                    draws=(mean + np.sqrt(diag_mf).reshape(N, N) * z)[None],
                                    gaussian={"kind": "diag", "diag": diag_mf}),
            "exact, std x 0.5": Result(mean, 0.25 * np.diag(cov).reshape(N, N),
                                       draws=(mean + 0.5 * dev)[None],
                                       gaussian={"kind": "dense", "cov": 0.25 * cov}),
        }
        if check_vi and r == 0:
            vi_check = check_meanfield(op, y, sigma, mean, diag_mf)
        err = float(np.sqrt(np.mean((mean - xs[r]) ** 2)))
        for m, result in res.items():
            post = risk.roi_posterior(result, quantities, level=0.9)
            for q in quantities:
                truth_q = float(risk.evaluate_quantity(q, xs[r]))
                lo, hi = post[q.name].interval
                per[m]["hits"][q.name].append(lo <= truth_q <= hi)
                per[m]["width"][q.name].append(hi - lo)
            per[m]["scores"].append(risk.reliability_score(result))
            per[m]["errors"].append(err)
    half = replicates // 2
    roi_rows, abst_rows = [], []
    for m in methods:
        d = per[m]
        for q in quantities:
            roi_rows.append((kind, m, q.name, float(np.mean(d["hits"][q.name][half:])),
                             float(np.mean(d["width"][q.name][half:]))))
        s, e = np.array(d["scores"]), np.array(d["errors"])
        cutoff = float(np.quantile(e[:half], 0.8))
        rules = {"flag rate 20 % (calibrated)": risk.threshold_for_flag_rate(s[:half], 0.2),
                 "accepted error <= median (calibrated)":
                     risk.threshold_for_error(s[:half], e[:half], float(np.median(e[:half]))),
                 "predicted RMS error > cutoff (nominal)": cutoff}
        for name, thr in rules.items():
            ev = risk.evaluate_abstention(s[half:], e[half:], thr, cutoff)
            abst_rows.append((kind, m, name, ev["flag_rate"], ev["bad_rate"], ev["precision"],
                              ev["recall"], ev["auroc"], ev["accepted_error"], ev["all_error"]))
    return roi_rows, abst_rows, vi_check, per, half


def check_meanfield(op, y, sigma, mean, diag_mf):
    """Relative error of uqrecon's mean-field VI std against the closed form 1/sqrt(P_ii)."""
    from uqrecon.inference.approximate import approximate
    from uqrecon.models import Gaussian, Posterior
    post = Posterior(Gaussian(op, jnp.asarray(y.reshape(op.range_shape), jnp.float32),
                              sigma=sigma), GMRF((N, N), delta=DELTA))
    vi = approximate(post, "meanfield", seed=0)
    std = np.sqrt(diag_mf).reshape(N, N)
    return (float(np.linalg.norm(vi.std - std) / np.linalg.norm(std)),
            float(np.linalg.norm(vi.mean - mean) / np.linalg.norm(mean)))


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def fmt(v, digits=3):
    if isinstance(v, str):
        return v
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def figure(path, curves, pers, half, replicates):
    """Row per truth distribution: MSE-ball curves (FBP, MAP) and score vs error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(curves)
    fig, axes = plt.subplots(len(kinds), 3, figsize=(15, 4.3 * len(kinds)), squeeze=False)
    band = 1.96 * np.sqrt(DEFAULT_LEVELS * (1 - DEFAULT_LEVELS) / replicates)
    for row, kind in zip(axes, kinds):
        for k, est in enumerate(("FBP", "MAP")):
            a = row[k]
            a.fill_between(DEFAULT_LEVELS, DEFAULT_LEVELS - band, DEFAULT_LEVELS + band,
                           color="0.85", label="binomial 95 % band")
            a.plot([0, 1], [0, 1], "k:", lw=1)
            for g, style in zip(GROUPS, ("-o", "-s", "-^")):
                a.plot(DEFAULT_LEVELS, curves[kind][(est, g)], style, ms=3,
                       label=("naive" if g == "identity" else f"equivariant ({g})"))
            a.plot(DEFAULT_LEVELS, curves[kind][("exact posterior", "-")], "k-", lw=2,
                   label="exact posterior (ball around its mean)")
            a.set(title=f"{kind} truths: MSE-ball coverage, bootstrap of {est}",
                  xlabel="level a", ylabel="fraction of replicates covered", xlim=(0, 1),
                  ylim=(-0.02, 1.02))
            a.legend(fontsize=7)
        a = row[2]
        per = pers[kind]
        for m, mk in zip(per, ("o", "s", "^")):
            a.scatter(per[m]["errors"][half:], per[m]["scores"][half:], s=12, marker=mk, label=m)
        lim = max(max(per[m]["errors"]) for m in per)
        a.plot([0, lim], [0, lim], "k:", lw=1)
        a.set(title=f"{kind} truths: score vs true RMS error (test replicates)",
              xlabel="true RMS error of the mean", ylabel="predicted RMS error (score)")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=60)
    ap.add_argument("--risk-replicates", type=int, default=80)
    ap.add_argument("--resamples", type=int, default=100)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-vi", action="store_true")
    ap.add_argument("--truths", nargs="+", default=["gmrf", "ellipses"],
                    choices=["gmrf", "ellipses"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    op, A, B, Q = dense_problem()
    nulls = null_space_dims(A)
    rows_a, roi_rows, abst_rows, curves, pers = [], [], [], {}, {}
    vi_check = None
    for kind in args.truths:
        rows, curves[kind], _ = part_a(op, A, B, Q, kind, args.replicates, args.resamples,
                                       args.seed)
        rows_a += rows
        roi, abst, vi, pers[kind], half = part_b(op, A, Q, kind, args.risk_replicates,
                                                 args.draws, args.seed,
                                                 args.check_vi and vi_check is None)
        roi_rows += roi
        abst_rows += abst
        vi_check = vi_check or vi
    total = time.perf_counter() - t_start
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "trust_bootstrap.png")
    figure(png, curves, pers, half, args.replicates)
    cmd = "python benchmarks/trust_bootstrap.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    md = [
        "# Equivariant bootstrap and downstream risk (issue 12, items 3 and 5)",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {datetime.date.today().isoformat()}; {platform.node() or 'host'} "
        f"({os.cpu_count()} CPUs, shared), JAX {jax.__version__} on "
        f"{jax.devices()[0].platform}; total {total:.0f} s.",
        "",
        f"Problem: sparse-view parallel-beam CT {N}x{N}, {NUM_ANGLES} views over [0, pi), "
        f"random-ellipse truths, GMRF prior (zero boundary, delta = {DELTA:g}); FBP with "
        "the Hann filter. Dense float64 linear algebra; bootstrap in float32 "
        f"(`uqrecon.uq.bootstrap`), {args.resamples} resamples per replicate.",
        "",
        "## Which group elements move the null space",
        "",
        "Joint null-space dimension of the operator stacked with the operator composed "
        "with one transform (SVD, relative tolerance 1e-6). Only elements that shrink it "
        "give the bootstrap information the naive one lacks: with an odd number of views "
        "90-degree rotations (and transposes) do, flips never do.",
        "",
        table(["operators", "null-space dimension"], nulls),
        "",
        f"## (a) MSE-ball coverage over {args.replicates} replicates (noise {100 * NOISE:g} %)",
        "",
        "Coverage at level a: fraction of replicates with `||x - x_hat||^2` below the "
        "a-quantile of the bootstrap `||x_i - x_hat||^2` (exact posterior: of "
        "`||draw - mean||^2`, 2000 exact draws). Calibrated = a, within the binomial band "
        f"+/- {1.96 * math.sqrt(0.9 * 0.1 / args.replicates):.2f} at a = 0.9. "
        "'true/boot' is the median over replicates of the true squared error over the "
        "bootstrap median squared error (1 = right size). 'pixel cov 90' is the pixel "
        "coverage of 90 % intervals; 'std / exact' the mean bootstrap std over the exact "
        "posterior mean std (MAP only). 'rotate' = continuous rotations up to 10 degrees.",
        "",
        table(["truths", "estimator", "group", "cov 0.5", "cov 0.9", "cov 0.99", "true/boot",
               "pixel cov 90", "std / exact", "s / replicate"], rows_a),
        "",
        f"## (b) ROI risk over {args.risk_replicates} replicates (noise 0.5-8 %, "
        "log-uniform)",
        "",
        f"Quantities: mean intensity of a disc ROI (radius 0.3), its contrast against a "
        f"2-pixel ring, and the area above 0.5 inside the central disc (radius 0.7). "
        f"Coverage of 90 % credible intervals and mean width on the {args.risk_replicates - half} "
        "test replicates. Mean-field VI is the exact KL(q||p) mean-field optimum of the "
        "Gaussian posterior, N(mean, diag(1/P_ii)).",
        "",
        table(["truths", "method", "quantity", "coverage 90", "mean width"], roi_rows),
        "",
        "### Abstention",
        "",
        "Score: posterior expected RMS error `sqrt(mean pixel variance)`. An image is bad "
        "when its true RMS error exceeds the 80th percentile of the calibration "
        f"replicates' errors (calibration: first {half}, test: the other "
        f"{args.risk_replicates - half}). The nominal rule uses the score at face value "
        "(flag when the predicted RMS error exceeds the cutoff); the calibrated rules pick "
        "the threshold on calibration replicates.",
        "",
        table(["truths", "method", "rule", "flag rate", "bad rate", "precision", "recall", "AUROC",
               "accepted RMS err", "all RMS err"], abst_rows),
        "",
    ]
    if vi_check is not None:
        md += [f"Check: `uqrecon.approximate(post, 'meanfield')` on replicate 0 has std relative "
               f"error {vi_check[0]:.3g} and mean relative error {vi_check[1]:.3g} against "
               "the closed-form mean-field optimum.", ""]
    md += ["![coverage and scores](trust_bootstrap.png)", ""]
    text = "\n".join(md)
    with open(os.path.join(args.out, "trust_bootstrap.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()

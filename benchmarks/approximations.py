"""Approximate posteriors against the exact one on the default sparse-view CT problem.

Problem: modified Shepp-Logan, 30 parallel-beam angles, 1 % noise, GMRF prior
(delta = 100, the main job's default). Prints and writes markdown tables:

1. Laplace rank sweep at the smallest size: relative error of the pixel std (and mean)
   against the exact posterior (dense Cholesky, ``uqrecon.gold.exact_gaussian``) as a
   function of the rank -- the convergence curve -- with run times, for both bases of
   the low-rank update: the prior covariance ('prior') and the Hessian diagonal ('diag').
2. Mean-field vs low-rank VI at the smallest size: mean and std errors, the ratio of
   mean std to the exact mean std (under-dispersion), steps, time.
3. ``--rank-rule``: the rank rule ``rank='auto'`` (grow the eigensolve until the dropped
   pairs change the variance by less than ``rank_tol``): at the smallest size the rank
   it picks, its stated variance bound and the std error against the exact posterior,
   next to fixed ranks; at every size its run time, rank, eigensolver steps and
   gradient-equivalent products.
4. Timings at every size (64/128/256 by default) of low-rank Laplace (rank 50) and
   mean-field VI, as a ratio to one evaluation of the potential's gradient (a baseline
   measured in the same process, since absolute times on shared machines drift).

Usage: ``python benchmarks/approximations.py [--sizes 64 128 256] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import jax
import numpy as np

from uqrecon.gold import exact_gaussian
from uqrecon.inference.approximate import approximate
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.problems import sparse_view_ct

DELTA = 100.0


def posterior(size, seed=0):
    prob = sparse_view_ct(size=size, num_angles=30, noise_level=0.01, seed=seed)
    post = Posterior(Gaussian(prob.operator, prob.data, prob.sigma),
                     GMRF(prob.shape, delta=DELTA))
    return post, prob


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def grad_time(post, reps=20):
    """Seconds per gradient of the smooth potential (compiled), the unit of cost."""
    g = jax.jit(post.grad_smooth_potential)
    x = np.zeros(post.shape, np.float32)
    g(x).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        g(x).block_until_ready()
    return (time.perf_counter() - t0) / reps


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--ranks", type=int, nargs="+", default=[25, 100, 400, 1600, 4096])
    ap.add_argument("--vi-rank", type=int, default=10)
    ap.add_argument("--vi-max-iter", type=int, default=6000)
    ap.add_argument("--skip-vi-large", action="store_true",
                    help="time mean-field VI only at the smallest size")
    ap.add_argument("--timings-only", action="store_true", help="skip tables 1 and 2")
    ap.add_argument("--accuracy-only", action="store_true", help="skip table 3")
    ap.add_argument("--rank-rule", action="store_true",
                    help="only the rank='auto' table (3)")
    ap.add_argument("--rank-tols", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dev = jax.devices()[0]
    out_md = [f"# Approximate posteriors vs exact (sparse-view CT, GMRF delta={DELTA:g})",
              f"device: {dev.platform} ({os.cpu_count()} CPUs), float32, jax {jax.__version__}"]
    record = {"device": str(dev), "delta": DELTA}

    if args.rank_rule:
        out_md += rank_rule_tables(args, record)
    else:
        if not args.timings_only:
            out_md += accuracy_tables(args, record)
        if not args.accuracy_only:
            out_md += timing_table(args, record)
    text = "\n".join(out_md) + "\n"
    print("\n" + text)
    name = "approximations" + ("_timings" if args.timings_only else "") + (
        "_accuracy" if args.accuracy_only else "") + ("_rank_rule" if args.rank_rule else "")
    with open(os.path.join(args.out, name + ".md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(args.out, name + ".json"), "w") as fh:
        json.dump(record, fh, indent=1, default=str)


def accuracy_tables(args, record):
    """Tables 1 and 2 at the smallest size, against the exact posterior."""
    out_md = []
    size = min(args.sizes)
    post, prob = posterior(size)
    ref, t_ref = timed(lambda: exact_gaussian(post))
    print(f"[{size}x{size}] exact posterior (dense Cholesky): {t_ref:.1f} s")
    rows = []
    n = size * size
    for r in args.ranks:
        for base in ("prior", "diag"):
            if r > n or (r == n and base == "diag"):
                continue
            res, t = timed(lambda: approximate(post, "laplace", rank=r, seed=0,
                                               preconditioner=base))
            rows.append([r, base, f"{rel(res.std, ref.std):.4f}",
                         f"{rel(res.mean, ref.mean):.1e}",
                         f"{res.std.mean() / ref.std.mean():.3f}", f"{t:.1f}"])
            print(f"  laplace rank {r} {base}: std err {rows[-1][2]}, {t:.1f} s", flush=True)
    sweep = table(["rank", "base", "rel. std error", "rel. mean error", "mean std / exact",
                   "time s"], rows)
    out_md += [f"\n## Low-rank Laplace: error vs exact as a function of rank ({size}x{size},"
               f" exact took {t_ref:.1f} s)", sweep]
    record["laplace_sweep"] = rows

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method, cfg in (("meanfield", {}), ("lowrank", {"rank": args.vi_rank})):
            res, t = timed(lambda: approximate(post, method, seed=0,
                                               max_iter=args.vi_max_iter, **cfg))
            rows.append([method + (f" (rank {args.vi_rank})" if cfg else ""),
                         f"{rel(res.mean, ref.mean):.4f}", f"{rel(res.std, ref.std):.4f}",
                         f"{res.std.mean() / ref.std.mean():.3f}",
                         res.diagnostics["num_steps"], res.diagnostics["converged"],
                         f"{t:.1f}"])
            print(f"  {rows[-1]}", flush=True)
    vi = table(["method", "rel. mean error", "rel. std error", "mean std / exact",
                "steps", "converged", "time s"], rows)
    out_md += [f"\n## VI: mean-field vs low-rank ({size}x{size})", vi]
    record["vi"] = rows

    return out_md


def rank_rule_tables(args, record):
    """Table 3: rank='auto' against fixed ranks and the exact posterior."""
    out_md, rows = [], []
    size = min(args.sizes)
    post, _ = posterior(size)
    ref, t_ref = timed(lambda: exact_gaussian(post))
    print(f"[{size}x{size}] exact posterior (dense Cholesky): {t_ref:.1f} s", flush=True)
    runs = [("fixed", r, {"rank": r}) for r in args.ranks if r <= size * size]
    runs += [("auto", tol, {"rank": "auto", "rank_tol": tol, "max_rank": size * size})
             for tol in args.rank_tols]
    for kind, label, cfg in runs:
        res, t = timed(lambda: approximate(post, "laplace", seed=0, **cfg))
        d = res.diagnostics
        ratio = res.variance / ref.variance
        rows.append([kind, label, d["rank"], f"{d['truncation']['departure']:.3f}",
                     f"{d['truncation']['variance_ratio_bound']:.3f}",
                     f"{ratio.max():.3f}", f"{rel(res.std, ref.std):.4f}",
                     f"{res.std.mean() / ref.std.mean():.3f}", d["num_grad_evals"],
                     f"{t:.1f}"])
        print(f"  {rows[-1]}", flush=True)
    out_md += [f"\n## Laplace rank rule vs fixed ranks ({size}x{size}, exact posterior by "
               "dense Cholesky)", table(
                   ["rule", "rank / rank_tol", "rank used", "dropped departure",
                    "stated var. ratio bound", "max var. ratio vs exact",
                    "rel. std error", "mean std / exact", "grad evals", "time s"], rows)]
    record["rank_rule_accuracy"] = rows
    rows = []
    for size in args.sizes:
        post, _ = posterior(size)
        tg = grad_time(post)
        for tol in args.rank_tols[:1]:
            res, t = timed(lambda: approximate(post, "laplace", seed=0, rank="auto",
                                               rank_tol=tol))
            d = res.diagnostics
            rule = d["rank_rule"]
            rows.append([f"{size}x{size}", tol, d["rank"], rule["steps"],
                         rule["stopped_by"], f"{d['truncation']['variance_ratio_bound']:.3f}",
                         d["num_grad_evals"], f"{t:.1f}", f"{t / tg:.0f}"])
            print(f"  {rows[-1]}", flush=True)
    out_md += ["\n## rank='auto': cost per size (compile included)", table(
        ["size", "rank_tol", "rank used", "eigensolver steps", "stopped by",
         "stated var. ratio bound", "grad evals", "time s", "time / grad"], rows)]
    record["rank_rule_timings"] = rows
    return out_md


def timing_table(args, record):
    """Table 3: run times at every size."""
    rows = []
    for size in args.sizes:
        post, _ = posterior(size)
        tg = grad_time(post)
        res, t_lap = timed(lambda: approximate(post, "laplace", rank=50, seed=0))
        est = res.diagnostics["variance_estimator"]
        row = [f"{size}x{size}", f"{tg * 1e3:.2f}", f"{t_lap:.1f}", f"{t_lap / tg:.0f}",
               "exact" if est == "exact" else "sampled (rel. SE "
               f"{res.diagnostics['variance_rel_se']:.2f})"]
        if size == min(args.sizes) or not args.skip_vi_large:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mf, t_mf = timed(lambda: approximate(post, "meanfield", seed=0,
                                                     max_iter=args.vi_max_iter))
            row += [f"{t_mf:.1f}", mf.diagnostics["num_steps"], mf.diagnostics["converged"]]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
        print(f"  {row}", flush=True)
    timing = table(["size", "grad ms", "laplace r=50 s", "laplace / grad",
                    "pixel variances", "meanfield s", "VI steps", "converged"], rows)
    record["timings"] = rows
    return ["\n## Timings (compile included)", timing]


if __name__ == "__main__":
    main()

"""Structured whitening for the gradient samplers (issue 11, item 4): NUTS with the dense
Cholesky factor vs the circulant (Fourier) model of the Hessian corrected by Lanczos vs
Lanczos alone, on the README's sparse-view CT GMRF posterior.

Per preconditioner: the condition number of the whitened Hessian (``C^T H C``, formed
densely from ``n`` products: sizes up to 64x64), set-up seconds, NUTS leapfrog steps per
sampling iteration, seconds per gradient in the sampling phase, min bulk ESS and min-ESS
per second counting set-up, compilation and warm-up. One run of ``uqrecon.sample`` per
row, all in one process (ratios within a run are what to read; the machine load is
printed).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/whitening.py --size 64 \
        --preconditioners dense circulant lowrank
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import uqrecon
from uqrecon.inference.methods.common import NegLogUnconstrained as _NegLogUnconstrained
from uqrecon.inference.sample import METHODS
from uqrecon.models import GMRF, TV, Gaussian
from uqrecon.operators import sparse_view
from uqrecon.phantoms import shepp_logan


def readme_posterior(size, prior="gmrf"):
    """The README's library example: 30 views, 1 % noise, GMRF delta = 100; or the main
    job's Huber-TV (weight 10, smoothing 0.01) on the same data."""
    A = sparse_view((size, size), num_angles=30)
    x_true = shepp_logan((size, size))
    y_clean = A(x_true)
    sigma = 0.01 * float(abs(y_clean).max())
    y = y_clean + sigma * jax.random.normal(jax.random.PRNGKey(0), y_clean.shape)
    term = (GMRF((size, size), delta=100.0) if prior == "gmrf"
            else TV((size, size), weight=10.0).smoothed(0.01))
    return uqrecon.Posterior(Gaussian(A, y, sigma=sigma), term)


@partial(jax.jit, static_argnames=("n",))
def _whitened_columns(pc, post, n):
    """``C^T H C`` column by column (C: the preconditioner's linear part, H the Hessian of
    the potential at ``pc.u0``); jitted once per posterior structure, the posterior and
    the preconditioner are arguments."""
    grad = jax.grad(_NegLogUnconstrained(post))
    zero = jnp.zeros_like(pc.u0)
    _, vjp = jax.vjp(pc, zero)                  # C^T w: the VJP of the linear map z -> pc(z)

    def col(e):
        c = pc(e.reshape(pc.u0.shape)) - pc(zero)
        hc = jax.jvp(grad, (pc.u0,), (c,))[1]
        return vjp(hc)[0].ravel()
    return jax.lax.map(col, jnp.eye(n, dtype=pc.u0.dtype), batch_size=64)


def whitened_condition(post, pc):
    """``(cond, smallest, largest eigenvalue)`` of the whitened Hessian."""
    M = np.asarray(_whitened_columns(pc, post, pc.u0.size), np.float64)
    ev = np.linalg.eigvalsh(0.5 * (M + M.T))
    return float(ev[-1] / ev[0]), float(ev[0]), float(ev[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--prior", choices=("gmrf", "huber_tv"), default="gmrf")
    ap.add_argument("--preconditioners", nargs="+", default=["dense", "circulant", "lowrank"])
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--no-condition", action="store_true")
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    args = ap.parse_args()
    post = readme_posterior(args.size, args.prior)
    rows = []
    print(f"# NUTS whitening, {args.size}x{args.size} sparse-view CT {args.prior}, {args.chains} "
          f"chains x ({args.warmup} + {args.samples}); load {os.getloadavg()}", flush=True)
    for name in args.preconditioners:
        opts = {"preconditioner": name}
        if name in ("lowrank", "circulant"):
            opts["rank"] = args.rank
        if not args.no_condition:
            built = METHODS["nuts"](post, jax.random.PRNGKey(0), dict(opts), 1, jnp.float32)
            cond = whitened_condition(post, built.params.target.preconditioner)
        else:
            cond = (float("nan"),) * 3
        t0 = time.perf_counter()
        r = uqrecon.sample(post, method="nuts", num_chains=args.chains,
                           num_warmup=args.warmup, num_samples=args.samples, seed=0,
                           progress=False, **opts)
        wall = time.perf_counter() - t0
        d, t = r.diagnostics, r.timings
        its = args.chains * args.samples
        row = {"preconditioner": name, "rank": opts.get("rank"), "cond": cond[0],
               "eig_min": cond[1], "eig_max": cond[2], "setup_s": t["setup_s"],
               "compile_s": t["compile_s"], "run_s": t["run_s"], "wall_s": wall,
               "steps_per_iter": d["num_grad_evals"] / its,
               "s_per_grad": t["run_s"] / (d["num_grad_evals"] + d["num_grad_evals_warmup"]),
               "ess_bulk_min": float(np.min(d["ess_bulk"])),
               "rhat_max": float(np.max(d["rhat"])),
               "ess_min_per_s": float(np.min(d["ess_bulk"])) / wall,
               "max_depth_fraction": d.get("max_depth_fraction")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| preconditioner | cond(C^T H C) | set-up s | steps/iter | ms/grad | min ESS "
          "| max R-hat | min ESS/s (all in) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preconditioner']} | {r['cond']:.3g} | {r['setup_s']:.1f} | "
              f"{r['steps_per_iter']:.1f} | {1e3 * r['s_per_grad']:.2f} | "
              f"{r['ess_bulk_min']:.0f} | {r['rhat_max']:.3f} | {r['ess_min_per_s']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"size": args.size, "load": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""NUTS vs MCLMC vs MAMS vs ChEES-HMC on the CT GMRF posterior (issue 11, item 5); not run
in tests.

Posterior: ``size x size`` modified Shepp-Logan, parallel beam (``size // 2`` angles),
1 % noise, GMRF delta = 10 (or the main job's Huber-TV, ``--model huber_tv``), all on
``sample``'s default whitening (dense up to 64x64, low-rank above). Per method, in one process:
min bulk ESS over pixels, ESS per gradient evaluation counting warmup/tuning (NUTS's
warmup, MCLMC/MAMS/ChEES's tuning in the set-up) and set-up gradients, and ESS per second
counting set-up + warmup/tuning + sampling (compilation reported apart), and the
relative error of the pixel std against the exact posterior (float64 dense inverse).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/mclmc.py --size 32 \
        --out benchmarks/results/mclmc.md
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.inference import sample
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view
from uqrecon.phantoms import shepp_logan


def problem(size, model="gmrf"):
    """The posterior and its exact pixel std (dense float64; None for Huber-TV, which
    has no closed form: there the std error column is left empty)."""
    op = sparse_view((size, size), size // 2)
    clean = np.asarray(op(shepp_logan((size, size))))
    sigma = 0.01 * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(0).normal(size=clean.shape)
    likelihood = Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma)
    if model == "huber_tv":     # the main job's Huber-TV model (weight 10, eps 0.01)
        return Posterior(likelihood, TV((size, size), weight=10.0).smoothed(0.01)), None
    post = Posterior(likelihood, GMRF((size, size), delta=10.0))
    n = size * size
    A = np.asarray(op.to_dense(), np.float64)
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, size, size)
    Q = np.asarray(jax.lax.map(post.gaussian_form().prior_precision, eye, batch_size=256),
                   np.float64).reshape(n, n)
    cov = np.linalg.inv(A.T @ A / sigma ** 2 + Q)
    return post, np.sqrt(np.diag(cov)).reshape(size, size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-chains", type=int, default=4)
    ap.add_argument("--num-warmup", type=int, default=300)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--methods", default="nuts,mclmc,mams,chees")
    ap.add_argument("--model", default="gmrf", choices=["gmrf", "huber_tv"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    post, std = problem(args.size, args.model)
    rows, whitening = [], set()
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sample(post, method=method, num_chains=args.num_chains,
                       num_warmup=args.num_warmup, num_samples=args.num_samples, seed=0,
                       progress=False)
        wall = time.perf_counter() - t0
        d, t = r.diagnostics, r.timings
        whitening.add(str(r.provenance["config"].get("preconditioner", "?")))
        ess = float(np.min(d["ess_bulk"]))
        grads = d["num_grad_evals"] + d["num_grad_evals_warmup"] + d["num_grad_evals_setup"]
        secs = t["setup_s"] + t["run_s"]
        rel = np.abs(r.std / std - 1) if std is not None else np.full(r.std.shape, np.nan)
        rows.append((method, r.provenance["exactness"], ess, grads, ess / grads * 1e3,
                     secs, ess / secs, t["compile_s"], wall, float(np.median(rel)),
                     d["acceptance_rate"]))
        print(rows[-1], flush=True)
    head = ("| method | exactness | min ESS | gradients (all) | ESS / 1000 grads | "
            "set-up + warmup + run s | ESS / s | compile s | wall s | median rel. std err "
            "| acceptance |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {m} | {e} | {ess:.0f} | {g} | {eg:.2f} | {s:.1f} | {es:.0f} | "
                   f"{c:.1f} | {w:.1f} | {'-' if np.isnan(rel) else f'{rel:.3f}'} | {a:.2f} |\n"
                   for m, e, ess, g, eg, s, es, c, w, rel, a in rows)
    table = head + body
    print(table)
    if args.out:
        load = os.getloadavg()
        Path(args.out).write_text(
            f"# {' vs '.join(m.upper() for m in args.methods.split(','))}, "
            f"{args.size}x{args.size} CT {'GMRF' if args.model == 'gmrf' else 'Huber-TV'} "
            f"({' / '.join(sorted(whitening))} whitening)\n\n"
            f"Command: `JAX_PLATFORMS=cpu .venv/bin/python benchmarks/mclmc.py --size "
            f"{args.size} --num-chains {args.num_chains} --num-warmup {args.num_warmup} "
            f"--num-samples {args.num_samples} --methods {args.methods} --model "
            f"{args.model}`\n\n"
            f"Machine: {os.cpu_count()} CPU cores, load average at the end "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min), JAX {jax.__version__} on {jax.devices()[0].platform}."
            f"\n\nGradients count set-up (reference image, whitening), warmup "
            f"(NUTS: dual averaging in the runner; MCLMC/MAMS/ChEES: blackjax's tuners in "
            f"the set-up, {args.num_warmup} steps per chain) and sampling; seconds likewise, compilation "
            f"apart.\n\n" + table)


if __name__ == "__main__":
    main()

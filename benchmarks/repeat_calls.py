"""Repeated-call overhead (issue 11): a second call on a same-shaped posterior (other
data, other noise level) should cost only its run, never a compilation.

Every method's Result reports its timings the same way (``uqrecon.inference.accounting``):
``total_s``, ``compile_s`` (tracing, lowering and XLA compiling that happened in the call)
and ``diagnostics['num_compiles']``. This script calls each method twice, one process, one
after the other, and tabulates first vs second call.

Usage: ``JAX_PLATFORMS=cpu python benchmarks/repeat_calls.py [--size 32] [--out FILE]``
"""

from __future__ import annotations

import argparse
import platform
import warnings

import jax.numpy as jnp
import numpy as np

from uqrecon import approximate, gold
from uqrecon.inference import sample
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view


def posterior(size, seed, noise):
    op = sparse_view((size, size), 20)
    g = np.linspace(-1, 1, size)
    X, Y = np.meshgrid(g, g, indexing="ij")
    clean = np.asarray(op(jnp.asarray(((X ** 2 + Y ** 2) < 0.5).astype(np.float32))))
    sigma = noise * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    return Posterior(Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma),
                     GMRF((size, size), delta=10.0))


CALLS = {
    "sample exact (4 x 200)": lambda p: sample(p, method="exact", num_chains=4,
                                               num_samples=200, progress=False),
    "sample mala (4 x 200 + 500)": lambda p: sample(p, method="mala", num_chains=4,
                                                    num_warmup=200, num_samples=500,
                                                    progress=False),
    "sample nuts (4 x 100 + 100)": lambda p: sample(p, method="nuts", num_chains=4,
                                                    num_warmup=100, num_samples=100,
                                                    progress=False),
    "approximate meanfield": lambda p: approximate(p, method="meanfield", seed=0),
    "approximate lowrank (rank 5)": lambda p: approximate(p, method="lowrank", rank=5,
                                                          seed=0),
    "approximate laplace (rank 20)": lambda p: approximate(p, method="laplace", rank=20,
                                                           seed=0),
    "gold.exact_gaussian (dense)": lambda p: gold.exact_gaussian(p),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    first_post, second_post = posterior(args.size, 0, 0.01), posterior(args.size, 1, 0.02)
    rows = []
    for name, call in CALLS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # short runs: convergence is not measured
            r1, r2 = call(first_post), call(second_post)
        t1, t2 = r1.timings, r2.timings
        rows.append((name, t1["total_s"], t1["compile_s"], r1.diagnostics["num_compiles"],
                     t2["total_s"], t2["compile_s"], r2.diagnostics["num_compiles"]))
        print(f"{name:32s} first {t1['total_s']:7.2f} s (compile {t1['compile_s']:6.2f}, "
              f"{r1.diagnostics['num_compiles']} programs)  second {t2['total_s']:7.2f} s "
              f"(compile {t2['compile_s']:5.2f}, {r2.diagnostics['num_compiles']})",
              flush=True)
    lines = [f"# Repeated-call overhead, {args.size}x{args.size} sparse-view CT (20 views), "
             "GMRF, float32",
             "",
             f"One process on {platform.processor() or platform.machine()}; the second call "
             "runs on other data with another noise level (same shapes).",
             "",
             "| method | first call s | of which compiling | programs compiled | second call s "
             "| of which compiling | programs compiled | second / first |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a, ac, an, b, bc, bn in rows:
        lines.append(f"| {name} | {a:.2f} | {ac:.2f} | {an} | {b:.2f} | {bc:.2f} | {bn} | "
                     f"{b / a:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()

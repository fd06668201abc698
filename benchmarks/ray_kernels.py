"""The two ways of applying a ray transform: stored sparse matrix vs on-the-fly kernels.

``RayTransform(kernel="sparse")`` stores the matrix and its transpose as ELL tables
(one gather and one reduction per call); ``kernel="on_the_fly"`` evaluates the Joseph
(parallel) or line-length (fan) weights inside every call. For each geometry and size
this measures, in one process and in interleaved rounds (median, jitted,
``block_until_ready``):

- set-up: constructing the operator (the sparse one builds its tables in numpy);
- the tables' memory;
- forward, adjoint, and the gradient of the Gaussian data term
  ``Gaussian(A, y, sigma).potential`` (forward + adjoint, as every sampler takes it),
  for one image and for 4 images under ``vmap`` (vectorised chains);

and the largest relative difference between the two kernels' outputs (same matrix to
float rounding). Ratios on-the-fly / sparse within a row are the figures to compare.

    python benchmarks/ray_kernels.py [--cases 64/30 128/30 256/60] [--reps 15]
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from _ct import ct_operator, run_cases
from uqrecon.models.likelihoods import Gaussian

CASES = ["64/30", "128/30", "256/60"]
KERNELS = ("sparse", "on_the_fly")


# module-level jits: the operator and the likelihood are arguments
_fwd = jax.jit(lambda op, x: op(x))
_adj = jax.jit(lambda op, y: op.adjoint(y))
_grad = jax.jit(jax.grad(lambda x, lik: lik.potential(x)))
_fwd4 = jax.jit(lambda op, x: jax.vmap(op)(x))
_adj4 = jax.jit(lambda op, y: jax.vmap(op.adjoint)(y))
_grad4 = jax.jit(jax.vmap(jax.grad(lambda x, lik: lik.potential(x)), in_axes=(0, None)))


def _time(fn, *args):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def bench_case(kind, n, views, reps, args=None):
    ops, setup = {}, {}
    for k in KERNELS:
        t = time.perf_counter()
        ops[k] = ct_operator(kind, n, views, k)
        setup[k] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((n, n)), jnp.float32)
    y = ops["sparse"](x) + 0.01 * jnp.asarray(rng.standard_normal(ops["sparse"].range_shape),
                                              jnp.float32)
    x4 = x[None] * jnp.asarray(rng.uniform(0.5, 1.5, (4, 1, 1)), jnp.float32)
    y4 = jnp.stack([y] * 4)
    liks = {k: Gaussian(ops[k], y, 0.01) for k in KERNELS}
    calls = {
        "forward": lambda k: (_fwd, ops[k], x), "adjoint": lambda k: (_adj, ops[k], y),
        "gradient": lambda k: (_grad, x, liks[k]),
        "forward x4": lambda k: (_fwd4, ops[k], x4), "adjoint x4": lambda k: (_adj4, ops[k], y4),
        "gradient x4": lambda k: (_grad4, x4, liks[k]),
    }
    diffs = []
    for name, c in calls.items():
        outs = [np.asarray(c(k)[0](*c(k)[1:])) for k in KERNELS]      # also compiles
        diffs.append(float(np.max(np.abs(outs[0] - outs[1])) / np.max(np.abs(outs[1]))))
    times = {(name, k): [] for name in calls for k in KERNELS}
    for rep in range(reps):
        for name, c in calls.items():
            # alternate which kernel goes first: the second of two calls finds warmer caches
            for k in (KERNELS if rep % 2 == 0 else KERNELS[::-1]):
                fn, *args = c(k)
                times[(name, k)].append(_time(fn, *args))
    ell = ops["sparse"].ell
    mem = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(ell)) / 2 ** 20
    row = {"geometry": kind, "size": n, "views": views,
           "set-up s (sparse / on the fly)": f"{setup['sparse']:.2f} / {setup['on_the_fly']:.2f}",
           "tables MB": f"{mem:.0f}"}
    for name in calls:
        s, f = (1e3 * statistics.median(times[(name, k)]) for k in KERNELS)
        row[f"{name} ms (sparse / on the fly)"] = f"{s:.2f} / {f:.2f} = **{f / s:.2f}x**"
    row["max rel. diff"] = f"{max(diffs):.1e}"
    return row


def table(rows, reps) -> str:
    cols = list(rows[0])
    load = os.getloadavg()[0]
    lines = [f"Ray transform kernels (median of {reps} interleaved rounds, float32, jax "
             f"{jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs, load at the "
             f"end {load:.1f}); ratio = on the fly / sparse", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    run_cases(__doc__.splitlines()[0], bench_case, table, cases=CASES, reps=15,
              out="out/ray_kernels.md", argv=argv)


if __name__ == "__main__":
    main()

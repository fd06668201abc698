"""Speed of the JAX ray transforms against ODL's astra_cpu and skimage backends.

For each geometry (parallel and fan beam) and size (64x64/30 views, 256x256/60,
256x256/180, 512x512/360) it times, in one process: forward and adjoint of the jitted
JAX operator (median of ``--reps`` runs with ``block_until_ready``; compile time
separately), a batch of 8 images through the vmapped forward, and ODL's
``RayTransform`` with ``impl='astra_cpu'`` and (parallel only) ``'skimage'``. Backends are
timed in interleaved rounds, so load from other processes hits them alike; ratios to
astra_cpu are the figures to compare across machines. Also prints the JAX adjoint's
mismatch (adjoint identity, float32). Writes a markdown table to ``--out``
(default ``out/operators.md``). ``--kernel`` picks how the JAX operator applies its
matrix (``RayTransform``'s ``kernel``; default ``auto``: the stored sparse matrix on CPU).

    python benchmarks/operators.py [--cases 64/30 256/180] [--reps 7] [--kernel K] [--out PATH]
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import odl

from _ct import ct_operator, run_cases
from uqrecon.operators.base import adjoint_mismatch
from uqrecon.operators.tomo import KERNELS

CASES = ["64/30", "256/60", "256/180", "512/360"]
BATCH = 8


# module-level jits, the operator an argument; each case still compiles afresh (its own
# shapes), which ``bench_case`` times through ``lower(...).compile()``
_fwd = jax.jit(lambda o, v: o(v))
_adj = jax.jit(lambda o, v: o.adjoint(v))
_mismatch = jax.jit(adjoint_mismatch)


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_case(kind, n, views, reps, args=None):
    op = ct_operator(kind, n, views, kernel=getattr(args, "kernel", "auto"))
    rng = np.random.default_rng(0)
    x_np = np.array(odl.core.phantom.shepp_logan(op.space, modified=True).data, np.float32)
    x = jnp.asarray(x_np)
    xb = jnp.asarray(np.stack([x_np] * BATCH) * rng.uniform(0.5, 1.5, (BATCH, 1, 1))
                     .astype(np.float32))

    t = time.perf_counter()
    fwd_c = _fwd.lower(op, x).compile()
    t_cf = time.perf_counter() - t
    y = fwd_c(op, x).block_until_ready()
    t = time.perf_counter()
    adj_c = _adj.lower(op, y).compile()
    t_ca = time.perf_counter() - t
    batch_c = _fwd.lower(op, xb).compile()
    mismatch = float(_mismatch(op, jax.random.PRNGKey(0)))

    impls = {"jax": (lambda: fwd_c(op, x).block_until_ready(),
                     lambda: adj_c(op, y).block_until_ready())}
    backends = ["astra_cpu"] + (["skimage"] if kind == "parallel" else [])
    for impl in backends:
        odl_op = op.odl_operator(impl)
        xe = odl_op.domain.element(x_np.copy())
        ye = odl_op.range.element(np.array(y))
        impls[impl] = ((lambda o=odl_op, e=xe: o(e)), (lambda o=odl_op, e=ye: o.adjoint(e)))
    times = {k: ([], []) for k in impls}
    batch_times = []
    for fns in impls.values():          # warm-up (caches, first-call setup)
        fns[0](), fns[1]()
    batch_c(op, xb).block_until_ready()
    for _ in range(reps):               # interleaved rounds
        for k, (f, a) in impls.items():
            times[k][0].append(_timed(f))
            times[k][1].append(_timed(a))
        batch_times.append(_timed(lambda: batch_c(op, xb).block_until_ready()))

    rows = []
    ref = times["astra_cpu"]
    ref_f, ref_a = statistics.median(ref[0]), statistics.median(ref[1])
    for k, (tf, ta) in times.items():
        mf, ma = statistics.median(tf), statistics.median(ta)
        rows.append({
            "geometry": kind, "size": f"{n}x{n}", "views": views, "impl": k,
            "compile_s": f"{t_cf:.2f} / {t_ca:.2f}" if k == "jax" else "-",
            "fwd_ms": mf * 1e3, "adj_ms": ma * 1e3, "sum_ms": (mf + ma) * 1e3,
            "fwd_ratio": mf / ref_f, "adj_ratio": ma / ref_a,
            "sum_ratio": (mf + ma) / (ref_f + ref_a),
            "batch8_ms": statistics.median(batch_times) * 1e3 if k == "jax" else None,
            "adj_mismatch": mismatch if k == "jax" else None,
        })
    return rows


COLS = [("geometry", "geometry"), ("size", "size"), ("views", "views"), ("impl", "impl"),
        ("compile_s", "compile s fwd/adj"), ("fwd_ms", "fwd ms"), ("adj_ms", "adj ms"),
        ("sum_ms", "fwd+adj ms"), ("fwd_ratio", "fwd / astra"), ("adj_ratio", "adj / astra"),
        ("sum_ratio", "fwd+adj / astra"), ("batch8_ms", f"batch {BATCH} fwd ms (vmap)"),
        ("adj_mismatch", "adjoint mismatch")]


def _fmt(key, v):
    if v is None:
        return "-"
    if key == "adj_mismatch":
        return f"{v:.1e}"
    if key.endswith("ratio"):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _fmt_row(row):
    return "| " + " | ".join(_fmt(k, row.get(k)) for k, _ in COLS) + " |"


def table(rows, reps) -> str:
    info = (f"Ray transform timings (median of {reps} interleaved rounds, wall clock, "
            f"float32, {os.cpu_count()} CPUs, jax {jax.__version__}, "
            f"device {jax.devices()[0].platform}, load average at the end "
            f"{os.getloadavg()[0]:.1f}). Ratios < 1: JAX faster than astra_cpu.\n\n")
    lines = ["| " + " | ".join(h for _, h in COLS) + " |", "|" + "---|" * len(COLS)]
    return info + "\n".join(lines + [_fmt_row(r) for r in rows]) + "\n"


def main(argv=None):
    run_cases(__doc__.splitlines()[0], bench_case, table, cases=CASES, reps=7,
              out="out/operators.md", argv=argv,
              extra=lambda p: p.add_argument("--kernel", default="auto", choices=KERNELS))


if __name__ == "__main__":
    main()

"""The sliced-ELL product on CPU: the native kernel (``_ell_native.cc``) against XLA's gathers.

Both compute ``A x`` from the same tables (``RayTransform(kernel="sparse")``); the choice
is made when a function is lowered, so each setting runs in its own process
(``UQRECON_NATIVE_KERNELS=1`` / ``0``), one after the other, alternating, and the table
gives each figure's median over the processes. Per case (size / views, parallel beam):

- a normal product ``A^T A x`` per image inside a ``fori_loop`` (as samplers call it),
  for one image and for 4 images under ``vmap`` (vectorised chains);
- seconds per 4-chain sweep of the TV gold standard's sampler (GSM with the five HMC
  moves that ``gold.reference`` adds, ``vmap`` over the chains, one BLAS thread as the
  runner sets; ``gold_tv.vmapped_sweep_seconds``: 3 warmup sweeps from the truth, then
  the mean of ``--sweeps`` sweeps, the same keys in both settings; ``--sweeps 0`` skips
  it).

    python benchmarks/ell_native.py [--cases 64/30 128/30 256/60] [--rounds 2] [--sweeps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

LOOP = 20

import jax  # noqa: E402  (after JAX_PLATFORMS)
import jax.numpy as jnp  # noqa: E402

from gpu import _median_ms  # noqa: E402
from uqrecon.inference.samplers import gsm  # noqa: E402


def _looped(x, pair):
    """``LOOP`` normal products ``A^T A x`` in a ``fori_loop`` (as samplers call them)."""
    return jax.lax.fori_loop(
        0, LOOP, lambda i, v: pair.rmatvec(pair.matvec(v)) / jnp.linalg.norm(v), x)


# module-level jits, the operator an argument (one process per setting: the native
# kernel is chosen when lowering)
_ONE = jax.jit(_looped)
_FOUR = jax.jit(jax.vmap(_looped, in_axes=(0, None)))


def measure(size: int, views: int, sweeps: int) -> dict:
    """The figures of one setting (this process's UQRECON_NATIVE_KERNELS), in ms / s."""
    from gold_tv import tv_posterior, vmapped_sweep_seconds
    from uqrecon.operators import _ell_native

    prob, post = tv_posterior(size, views)
    pair = post.likelihood.operator.ell
    x = jax.random.normal(jax.random.PRNGKey(0), (pair.adj.num_rows,))
    X = jnp.stack([x, -x, 2 * x, x * x])

    hlo = _ONE.lower(x, pair).compile().as_text()
    out = {"native_calls": hlo.count(_ell_native.TARGET),
           "normal_ms": _median_ms(_ONE, x, pair, repeat=5) / LOOP,
           "normal_x4_ms_per_image": _median_ms(_FOUR, X, pair, repeat=5) / LOOP / 4}
    if sweeps:
        params, _ = gsm.gsm_params(post, gsm.default_tol(jnp.float32), 5000, dense_max=0,
                                   hmc_moves=5)
        out["sweep_s"], its = vmapped_sweep_seconds(params, prob.truth, 4, burn=3,
                                                    sweeps=sweeps)
        out["cg_iterations"] = its[-1].tolist()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["64/30", "128/30", "256/60"])
    ap.add_argument("--rounds", type=int, default=2,
                    help="processes per setting and case (alternating)")
    ap.add_argument("--sweeps", type=int, default=3, help="timed GSM sweeps per process")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size, views = (int(v) for v in args.child.split("/"))
        print(json.dumps(measure(size, views, args.sweeps)))
        return
    rows = []
    for case in args.cases:
        runs = {"1": [], "0": []}
        for _ in range(args.rounds):
            for flag in ("0", "1"):
                env = {**os.environ, "UQRECON_NATIVE_KERNELS": flag}
                proc = subprocess.run([sys.executable, __file__, "--child", case,
                                       "--sweeps", str(args.sweeps)],
                                      env=env, capture_output=True, text=True, check=True)
                runs[flag].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(case, "native" if flag == "1" else "xla", runs[flag][-1], flush=True)
        med = {f: {k: statistics.median(r[k] for r in runs[f]) for k in runs[f][0]
                   if k not in ("cg_iterations",)} for f in runs}
        rows.append((case, med, runs["1"][0].get("cg_iterations")))
    print("\n| size / views | native kernel in the program | normal product, 1 image, ms "
          "(XLA / native) | normal product, 4 images vmapped, ms per image (XLA / native) | "
          "GSM 4-chain sweep, s (XLA / native) |")
    print("|---|---|---|---|---|")
    for case, m, _ in rows:
        x, n = m["0"], m["1"]
        sweep = (f"{x['sweep_s']:.3f} / {n['sweep_s']:.3f} = **{x['sweep_s'] / n['sweep_s']:.2f}x**"
                 if "sweep_s" in x else "-")
        print(f"| {case} | {int(n['native_calls'])} calls (XLA run: {int(x['native_calls'])}) | "
              f"{x['normal_ms']:.3f} / {n['normal_ms']:.3f} = **{x['normal_ms'] / n['normal_ms']:.2f}x** | "
              f"{x['normal_x4_ms_per_image']:.3f} / {n['normal_x4_ms_per_image']:.3f} = "
              f"**{x['normal_x4_ms_per_image'] / n['normal_x4_ms_per_image']:.2f}x** | {sweep} |")


if __name__ == "__main__":
    main()

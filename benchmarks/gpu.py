"""GPU figures in one run: projector throughput, GSM's exact TV sweep, TV gold standards
at 128x128 and 256x256 with many batched chains, and many-chain GMRF sampling.

Made for a short lease of a GPU machine: every part writes its rows to ``--out`` (JSON)
as soon as it ends, a part that fails is reported and the next one runs, and parts are
skipped once ``--budget`` seconds have passed. The same script runs on a CPU (then the
"gpu" columns are that CPU's).

Parts (``--parts``, comma-separated):

* ``projector``: the parallel-beam ray transform (``uqrecon.operators.sparse_view``,
  180 views) forward and adjoint, median ms over ``--repeat`` calls, one image and a
  ``vmap`` batch of 32, at 128/256/512 px, on the default device and on the host CPU of
  the same machine (the ratio's baseline, measured in the same run).
* ``gsm-cg``: CG iterations and seconds per GSM sweep (one chain, one- and two-level
  preconditioner) at 128 (30 views), 256 (60) and 512 (120): ``gold_tv.gsm_sweep_cost``.
* ``gold``: ``uqrecon.gold.reference`` on the TV posterior (sparse-view CT, 1 % noise,
  TV weight 10, as ``gold_tv.py``) with ``--gold-chains`` vectorized chains, run to
  posteriordb's criteria; wall time, rounds, min bulk/tail ESS, max R-hat. At 128x128
  SK-ROCK (default step, as many chains) runs in the same process for the ratio.
* ``chains``: MALA, HMC and NUTS on the 64x64 GMRF reference problem
  (``samplers.py``), 4 and ``--many`` chains, vectorized: min bulk ESS per second
  (counting compile and warm-up) and the mean/std error against the exact posterior.

Run: ``python benchmarks/gpu.py --out gpu.json`` (``JAX_PLATFORMS=cpu`` for the CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gold_tv  # noqa: E402  (benchmarks/gold_tv.py: the TV posterior and GSM sweep cost)

import uqrecon  # noqa: E402


@jax.jit
def _forward(A, x):
    return A(x)


@jax.jit
def _adjoint(A, y):
    return A.adjoint(y)


@jax.jit
def _forward_batch(A, xs):
    return jax.vmap(A)(xs)


@jax.jit
def _adjoint_batch(A, ys):
    return jax.vmap(A.adjoint)(ys)


def _median_ms(fn, *args, repeat):
    jax.block_until_ready(fn(*args))                # compile
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def projector(sizes, views, batch, repeat):
    """Median ms of the ray transform's forward and adjoint, single and batched, on the
    default device and on the host CPU (arrays committed there run there)."""
    from uqrecon.operators import sparse_view
    from uqrecon.phantoms import shepp_logan
    devices = {"default": jax.devices()[0], "host_cpu": jax.devices("cpu")[0]}
    rows = []
    for n in sizes:
        A0 = sparse_view((n, n), num_angles=views)
        x0 = jnp.asarray(shepp_logan((n, n)), jnp.float32)
        key = jax.random.PRNGKey(n)
        xs0 = x0[None] * (1.0 + 0.1 * jax.random.normal(key, (batch, n, n)))
        for label, dev in devices.items():
            # the host CPU is slow at 256+ px: fewer repeats, no batch there
            cpu_big = label == "host_cpu" and n > 128
            rep = 3 if cpu_big else repeat
            A, x, xs = jax.device_put((A0, x0, xs0), dev)
            y = _forward(A, x)
            row = {"size": n, "views": views, "device": f"{label} ({dev.platform})",
                   "forward_ms": _median_ms(_forward, A, x, repeat=rep),
                   "adjoint_ms": _median_ms(_adjoint, A, y, repeat=rep)}
            if not cpu_big:
                ys = _forward_batch(A, xs)
                row[f"forward_x{batch}_ms"] = _median_ms(_forward_batch, A, xs, repeat=rep)
                row[f"adjoint_x{batch}_ms"] = _median_ms(_adjoint_batch, A, ys, repeat=rep)
            # the same norm on both devices: a check that both ran the same operator
            row["forward_norm"] = float(jnp.linalg.norm(y))
            rows.append(row)
            print(row, flush=True)
    return rows


def gsm_cg(sizes, sweeps):
    rows = []
    for n in sizes:
        rows += gold_tv.gsm_sweep_cost(n, n * 30 // 128, sweeps)
    return rows


def _summary(name, res, wall, extra=None):
    """``gold_tv.summarize``'s row (ESS/R-hat from the Result's diagnostics) plus
    ``extra``."""
    return {**gold_tv.summarize(name, res, wall), **(extra or {})}


def gold(sizes, chains, skrock_samples, warmup=300, samples=200, rounds=3, seed=0,
         cache=None):
    """``gold.reference`` at each size (cache off unless ``cache``: a folder where each
    reference's rounds are kept as they complete, so that a run cut short goes on from
    there when started again, and the finished reference is stored)."""
    rows = []
    for n in sizes:
        _, post = gold_tv.tv_posterior(n, n * 30 // 128)
        t = time.perf_counter()
        ref = uqrecon.gold.reference(post, seed=seed, num_chains=chains,
                                     num_samples=samples, num_warmup=warmup,
                                     max_rounds=rounds, use_cache=cache is not None,
                                     cache_dir=cache)
        wall = time.perf_counter() - t
        prov = ref.provenance
        hit = bool((prov.get("cache") or {}).get("hit"))
        rows.append(_summary(f"gsm gold.reference {n}x{n}", ref, wall,
                             {"size": n, "converged": bool(prov.get("converged")),
                              "rounds": prov.get("rounds"),
                              # rounds read back from an earlier, cut-short run: the
                              # wall time then covers the remaining rounds only
                              "rounds_loaded": prov.get("rounds_loaded"),
                              "cache_hit": hit,
                              # a loaded reference was not timed
                              **({"wall_s": None, "min_ess_per_s": None} if hit else {})}))
        print(rows[-1], flush=True)
        del ref
        if n == 128 and skrock_samples:
            t = time.perf_counter()
            res = uqrecon.sample(post, method="skrock", num_chains=chains, num_warmup=200,
                                 num_samples=skrock_samples, seed=seed, progress=False)
            rows.append(_summary(f"skrock (default step) {n}x{n}", res,
                                 time.perf_counter() - t, {"size": n}))
            print(rows[-1], flush=True)
    return rows


def chains_table(many, num_warmup, num_samples, methods=("mala", "hmc", "nuts")):
    import samplers
    op, truth, lik, sigma, data = samplers.reference_problem()
    from uqrecon.models import GMRF, Posterior
    post = Posterior(lik, GMRF(op.domain_shape, 10.0))
    exact = uqrecon.gold.reference(post)           # exact Gaussian: mean and std
    mean, std = np.asarray(exact.mean), np.asarray(exact.std)
    rows = []
    for method in methods:
        for k in (4, many):
            t = time.perf_counter()
            res = uqrecon.sample(post, method=method, num_chains=k, num_warmup=num_warmup,
                                 num_samples=num_samples, seed=0, progress=False,
                                 chain_method="vectorized")
            wall = time.perf_counter() - t
            rows.append(_summary(method, res, wall, {
                "mean_rel_err": float(np.linalg.norm(res.mean - mean) / np.linalg.norm(mean)),
                "std_rel_err": float(np.linalg.norm(res.std - std) / np.linalg.norm(std)),
                "grads_per_chain_iter": float(res.diagnostics.get("num_grad_evals", 0))
                / (k * num_samples)}))
            print(rows[-1], flush=True)
            del res
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="projector,gsm-cg,gold,chains")
    ap.add_argument("--sizes", default="128,256,512", help="projector and gsm-cg sizes")
    ap.add_argument("--gold-sizes", default="128,256")
    ap.add_argument("--gold-chains", type=int, default=16)
    ap.add_argument("--gold-warmup", type=int, default=300,
                    help="GSM sweeps discarded (100 left 16 chains' starts unforgotten)")
    ap.add_argument("--gold-samples", type=int, default=200, help="draws per chain, round 1")
    ap.add_argument("--gold-rounds", type=int, default=3)
    ap.add_argument("--gold-cache", default=None,
                    help="folder for the references' rounds and results: a run cut short "
                         "goes on from there (default: no cache; a cached reference is "
                         "loaded, not timed)")
    ap.add_argument("--gold-seed", type=int, default=0,
                    help="seed of the references (another seed: the run-to-run spread)")
    ap.add_argument("--skrock-samples", type=int, default=1000)
    ap.add_argument("--many", type=int, default=256, help="chains of the many-chain rows")
    ap.add_argument("--num-warmup", type=int, default=300)
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=420.0,
                    help="seconds after which the remaining parts are skipped")
    ap.add_argument("--out", default="out/gpu.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    sizes = [int(s) for s in a.sizes.split(",") if s]
    out = {"jax": jax.__version__, "backend": jax.default_backend(),
           "devices": [f"{d} ({getattr(d, 'device_kind', '')})" for d in jax.devices()],
           "parts": {}}
    print(out, flush=True)
    runs = {"projector": lambda: projector(sizes, 180, 32, a.repeat),
            "gsm-cg": lambda: gsm_cg(sizes, a.sweeps),
            "gold": lambda: gold([int(s) for s in a.gold_sizes.split(",") if s],
                                 a.gold_chains, a.skrock_samples, a.gold_warmup,
                                 a.gold_samples, a.gold_rounds, seed=a.gold_seed,
                                 cache=a.gold_cache),
            "chains": lambda: chains_table(a.many, a.num_warmup, a.num_samples)}
    for part in a.parts.split(","):
        elapsed = time.perf_counter() - t0
        if elapsed > a.budget:
            out["parts"][part] = {"skipped": f"budget: {elapsed:.0f} s > {a.budget:.0f} s"}
            continue
        t = time.perf_counter()
        try:
            out["parts"][part] = {"rows": runs[part]()}
        except Exception as exc:            # report and go on: a lease is short
            traceback.print_exc()
            out["parts"][part] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        out["parts"][part]["part_s"] = time.perf_counter() - t
        print(f"== {part}: {out['parts'][part]['part_s']:.1f} s", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

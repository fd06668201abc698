"""Check a GPU install of uqrecon (run after ``pip install -e .[cuda]``).

Prints the JAX devices, fails clearly when JAX has no GPU backend, then times on the
GPU and, in a subprocess restricted to the CPU, the same work through the public API:

* a parallel-beam ray transform (``uqrecon.operators.sparse_view``, default 128x128)
  forward and adjoint, with the adjoint test as a correctness check;
* a batched many-chain MALA run (``uqrecon.sample(..., method="mala")``, default 256
  chains, vectorized) on a small GMRF posterior, with its acceptance rate and the
  distance of its mean to the exact posterior mean as sanity checks.

Usage::

    python scripts/check_gpu.py                 # on a GPU machine
    python scripts/check_gpu.py --allow-cpu     # anywhere: CPU timings only

Exit status: 0 when every check passed, 1 when a sanity check failed, 2 when no GPU
backend is available (and ``--allow-cpu`` was not given).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="projector image side (pixels)")
    p.add_argument("--views", type=int, default=180, help="projector views")
    p.add_argument("--repeat", type=int, default=20, help="timed projector calls")
    p.add_argument("--post-size", type=int, default=32, help="posterior image side (pixels)")
    p.add_argument("--chains", type=int, default=256, help="MALA chains")
    p.add_argument("--num-warmup", type=int, default=200, help="MALA warm-up iterations")
    p.add_argument("--num-samples", type=int, default=200, help="MALA sampling iterations")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run without a GPU (CPU timings only; for testing the script)")
    p.add_argument("--no-cpu-baseline", action="store_true",
                   help="on a GPU, skip the CPU comparison run")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _median_ms(fn, arg, repeat):
    fn(arg).block_until_ready()                 # compile
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn(arg).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


@functools.lru_cache(maxsize=None)
def _projector_pair():
    """``(forward, adjoint)`` jitted once per process on the operator pytree (not a new
    jit of a closure per call; jax is imported lazily so ``--help`` stays fast)."""
    import jax
    return jax.jit(lambda A, v: A(v)), jax.jit(lambda A, v: A.adjoint(v))


def bench_projector(args):
    """Median forward/adjoint time (ms) of a parallel-beam ray transform, and its adjoint
    test."""
    import jax

    from uqrecon.operators import adjoint_mismatch, sparse_view
    from uqrecon.phantoms import shepp_logan

    n = args.size
    A = sparse_view((n, n), num_angles=args.views)
    x = shepp_logan((n, n))
    y = A(x)
    forward, adjoint = _projector_pair()
    fwd, adj = functools.partial(forward, A), functools.partial(adjoint, A)
    mismatch = float(adjoint_mismatch(A, jax.random.PRNGKey(0)))
    return {"projector_shape": [n, n], "projector_views": args.views,
            "forward_ms": _median_ms(fwd, x, args.repeat),
            "adjoint_ms": _median_ms(adj, y, args.repeat),
            "adjoint_mismatch": mismatch}


def bench_mala(args):
    """A vectorized many-chain MALA run on a small GMRF posterior (public API)."""
    import jax
    import numpy as np

    import uqrecon
    from uqrecon.models import GMRF, Gaussian
    from uqrecon.operators import sparse_view
    from uqrecon.phantoms import shepp_logan

    m = args.post_size
    A = sparse_view((m, m), num_angles=max(4, m // 2))
    x_true = shepp_logan((m, m))
    y_clean = A(x_true)
    sigma = 0.01 * float(abs(y_clean).max())
    y = y_clean + sigma * jax.random.normal(jax.random.PRNGKey(1), y_clean.shape)
    post = uqrecon.Posterior(Gaussian(A, y, sigma=sigma), GMRF((m, m), delta=100.0))
    t0 = time.perf_counter()
    res = uqrecon.sample(post, method="mala", num_chains=args.chains,
                         num_samples=args.num_samples, num_warmup=args.num_warmup,
                         seed=0, progress=False, chain_method="vectorized", keep_draws=False)
    wall = time.perf_counter() - t0
    exact_mean = np.asarray(post.gaussian_form().mean_cg())
    mean_error = float(np.linalg.norm(res.mean - exact_mean) / np.linalg.norm(exact_mean))
    acc = res.diagnostics.get("acceptance_rate")
    iters = args.chains * (args.num_warmup + args.num_samples)
    run_s = float(res.timings.get("run_s", wall))
    return {"posterior_shape": [m, m], "chains": args.chains,
            "num_warmup": args.num_warmup, "num_samples": args.num_samples,
            "mala_wall_s": wall, "mala_compile_s": float(res.timings.get("compile_s", 0.0)),
            "mala_run_s": run_s, "mala_us_per_chain_step": 1e6 * run_s / iters,
            "mala_acceptance": None if acc is None else float(np.mean(acc)),
            "mala_mean_rel_error": mean_error}


def run_here(args):
    import jax

    out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    out.update(bench_projector(args))
    out.update(bench_mala(args))
    return out


def run_cpu_subprocess(argv):
    """The same benchmarks in a fresh process that sees only the CPU."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"CPU baseline run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sanity(res, label):
    """Problems with a benchmark's results (empty when fine)."""
    bad = []
    if not res["adjoint_mismatch"] < 1e-3:
        bad.append(f"{label}: adjoint test {res['adjoint_mismatch']:.2e} (expected < 1e-3)")
    acc = res["mala_acceptance"]
    if acc is None or not 0.2 < acc < 0.95:
        bad.append(f"{label}: MALA acceptance rate {acc} (expected in (0.2, 0.95))")
    if not res["mala_mean_rel_error"] < 0.1:
        bad.append(f"{label}: MALA mean differs from the exact mean by "
                   f"{res['mala_mean_rel_error']:.3f} (relative; expected < 0.1)")
    return bad


ROWS = [("forward_ms", "projector forward (ms, median)"),
        ("adjoint_ms", "projector adjoint (ms, median)"),
        ("adjoint_mismatch", "adjoint test (relative)"),
        ("mala_compile_s", "MALA compile (s)"),
        ("mala_run_s", "MALA run (s)"),
        ("mala_us_per_chain_step", "MALA per chain-step (us)"),
        ("mala_acceptance", "MALA acceptance"),
        ("mala_mean_rel_error", "MALA mean vs exact (relative)")]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import jax

    if args.worker:
        print(json.dumps(run_here(args)))
        return 0
    print(f"jax {jax.__version__}, default backend: {jax.default_backend()}")
    print("devices:", ", ".join(f"{d} ({d.platform})" for d in jax.devices()))
    has_gpu = jax.default_backend() == "gpu"
    if not has_gpu and not args.allow_cpu:
        print("ERROR: JAX has no GPU backend. Install the CUDA build with "
              "`pip install -e .[cuda]` (needs an NVIDIA driver for CUDA 12), check "
              "`nvidia-smi`, and unset JAX_PLATFORMS if it is set to cpu. "
              "(--allow-cpu runs this check on the CPU only.)", file=sys.stderr)
        return 2
    print(f"projector {args.size}x{args.size}, {args.views} views; MALA {args.chains} chains "
          f"x ({args.num_warmup} + {args.num_samples}) on {args.post_size}x{args.post_size}")
    here = run_here(args)
    results = {jax.default_backend(): here}
    if has_gpu and not args.no_cpu_baseline:
        results["cpu"] = run_cpu_subprocess([a for a in argv if a != "--worker"])
    cols = list(results)
    header = "| quantity | " + " | ".join(cols) + (" | cpu / gpu |" if len(cols) > 1 else " |")
    print(header)
    print("|---" * (len(cols) + 1 + (len(cols) > 1)) + "|")
    for key, label in ROWS:
        vals = [results[c][key] for c in cols]
        cells = ["n/a" if v is None else f"{v:.4g}" for v in vals]
        if len(cols) > 1:
            ratio = (f"{vals[1] / vals[0]:.3g}" if key in ("forward_ms", "adjoint_ms",
                     "mala_run_s", "mala_us_per_chain_step") and vals[0] else "")
            cells.append(ratio)
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    problems = [p for c in cols for p in sanity(results[c], c)]
    for p in problems:
        print("FAILED:", p, file=sys.stderr)
    print("OK" if not problems else "sanity checks failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

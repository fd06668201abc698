"""Leapfrog steps per NUTS iteration on the README's 64x64 CT GMRF posterior (issue 11).

One chain of whitened NUTS (dense preconditioner, as ``sample(method="nuts")`` builds it),
``--warmup`` step-size-tuning iterations then ``--samples`` frozen ones, stepped one
iteration at a time so every iteration's leapfrog count is recorded. Prints, per
setting: mean steps per sampling iteration, the distribution, how many iterations ran to
the maximum depth (``2**max_num_doublings - 1`` steps) and the final step size.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/nuts_uturn.py --seeds 0 1 \
        --settings "jitter=0" "jitter=0.2" "depth=6"
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import uqrecon
from uqrecon.inference.sample import METHODS
from uqrecon.models import GMRF, Gaussian
from uqrecon.operators import sparse_view
from uqrecon.phantoms import shepp_logan


def readme_posterior(size=64):
    """The README's library example: 30 views, 1 % noise, GMRF delta = 100."""
    A = sparse_view((size, size), num_angles=30)
    x_true = shepp_logan((size, size))
    y_clean = A(x_true)
    sigma = 0.01 * float(abs(y_clean).max())
    y = y_clean + sigma * jax.random.normal(jax.random.PRNGKey(0), y_clean.shape)
    return uqrecon.Posterior(Gaussian(A, y, sigma=sigma), GMRF((size, size), delta=100.0))


@partial(jax.jit, static_argnames=("sampler", "n"))
def _steps(params, state, key, t0, *, sampler, n):
    def body(state, t):
        state, info = sampler.step(jax.random.fold_in(key, t), state, params)
        return state, (info.num_grad_evals, info.acceptance)
    return jax.lax.scan(body, state, t0 + jnp.arange(n))


def run(post, seed, warmup, samples, **options):
    """``(steps per warmup iteration, steps per sampling iteration, final step size)``."""
    key = jax.random.PRNGKey(seed)
    built = METHODS["nuts"](post, key, dict(options), 1, jnp.float32)
    sampler, params = built.sampler, built.params
    state = sampler.init(jax.random.fold_in(key, 1), built.init_positions[0], params)
    state, (w, _) = _steps(params, state, key, 0, sampler=sampler, n=warmup)
    state = sampler.finish_warmup(state, params)
    state, (s, acc) = _steps(params, state, key, warmup, sampler=sampler, n=samples)
    return np.asarray(w), np.asarray(s), float(state.step_size), float(np.mean(acc))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--settings", nargs="+", default=["jitter=0"],
                    help="jitter=J and/or depth=D, comma separated, e.g. jitter=0.2,depth=6")
    args = ap.parse_args()
    post = readme_posterior(args.size)
    for setting in args.settings:
        opts = {}
        for item in filter(None, setting.split(",")):
            k, v = item.split("=")
            if k == "jitter":
                opts["step_size_jitter"] = float(v)
            elif k == "depth":
                opts["max_num_doublings"] = int(v)
        depth = opts.get("max_num_doublings", 10)
        for seed in args.seeds:
            t = time.perf_counter()
            w, s, eps, acc = run(post, seed, args.warmup, args.samples, **opts)
            cap = 2 ** depth - 1
            print(f"{setting:24s} seed {seed}: sampling {s.mean():6.1f} steps/it "
                  f"(median {np.median(s):.0f}, max {s.max()}, at max depth "
                  f"{int(np.sum(s >= cap))}/{len(s)}), warmup {w.mean():6.1f} steps/it, "
                  f"eps {eps:.3f}, acc {acc:.2f}, {time.perf_counter() - t:.1f} s",
                  flush=True)
            print("   sampling steps:", np.bincount(s)[np.bincount(s) > 0].tolist(),
                  "at", np.flatnonzero(np.bincount(s)).tolist(), flush=True)


if __name__ == "__main__":
    main()

"""Gradient of a CT data term: autodiff through the projector vs its explicit adjoint.

The Gaussian, Poisson-transmission and Poisson-emission likelihoods differentiate their
potential through :func:`uqrecon.operators.base.through_operator`: ``A^T grad phi(A x)``
with the ray transform's gather-only adjoint, where plain autodiff would transpose the
forward kernel (a scatter-add). For each case this times, in interleaved rounds (median,
jitted, ``block_until_ready``):

- ``autodiff``: ``jax.grad`` of ``0.5 tau ||A x - y||^2`` written as a plain composition;
- ``likelihood``: ``jax.grad`` of ``Gaussian(A, y, sigma).potential`` (through_operator);
- ``explicit``: ``tau A^T (A x - y)`` written by hand (the floor);

for one image and for 4 images under ``vmap`` (vectorised chains). The ratio
autodiff / likelihood is the figure (both measured in the same rounds).

    python benchmarks/likelihood_gradient.py [--cases 64/30 128/30 256/60] [--reps 15]
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


def _time(fn, arg):
    t = time.perf_counter()
    jax.block_until_ready(fn(arg))
    return time.perf_counter() - t


def _autodiff_potential(x, lik):
    """The Gaussian data term as a plain composition: autodiff transposes the forward."""
    return 0.5 * lik.noise_precision * jnp.sum((lik.operator(x) - lik.data) ** 2)


def _likelihood_potential(x, lik):
    return lik.potential(x)          # through_operator: the hand-written adjoint


def _explicit_gradient(x, lik):
    return lik.noise_precision * lik.operator.adjoint(lik.operator(x) - lik.data)


# module level, on the likelihood pytree: one compilation per variant and shape
_ONE = {"autodiff": jax.jit(jax.grad(_autodiff_potential)),
        "likelihood": jax.jit(jax.grad(_likelihood_potential)),
        "explicit": jax.jit(_explicit_gradient)}
FNS = {**_ONE, **{k + "_vmap": jax.jit(jax.vmap(f, in_axes=(0, None)))
                  for k, f in _ONE.items()}}


def bench(kind, n, views, reps, args=None, batch=4):
    # the on-the-fly kernels: autodiff transposes their forward pass (a scatter-add); the
    # stored matrix's transpose is a gather either way (``ray_kernels.py`` times that)
    op = ct_operator(kind, n, views, kernel="on_the_fly")
    rng = np.random.default_rng(0)
    y = op(jnp.asarray(rng.random((n, n)), jnp.float32))
    lik = Gaussian(op, y, sigma=0.01)
    fns = {k: (lambda x, f=f: f(x, lik)) for k, f in FNS.items()}
    x = jnp.asarray(rng.random((n, n)), jnp.float32)
    xb = jnp.asarray(rng.random((batch, n, n)), jnp.float32)
    args = {k: (xb if k.endswith("_vmap") else x) for k in fns}
    ref = np.asarray(fns["explicit"](x))
    err = float(np.max(np.abs(np.asarray(fns["likelihood"](x)) - ref)) / np.max(np.abs(ref)))
    for k in fns:                                    # compile
        jax.block_until_ready(fns[k](args[k]))
    times = {k: [] for k in fns}
    for _ in range(reps):                            # interleaved rounds
        for k in fns:
            times[k].append(_time(fns[k], args[k]))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"geometry": kind, "size": n, "views": views, "rel_diff": err, **ms}


def table(rows, reps):
    head = (f"Gradient of the Gaussian data term (median of {reps} interleaved rounds, ms, "
            f"float32, jax {jax.__version__}, {jax.devices()[0].platform}, "
            f"{os.cpu_count()} CPUs, load at the end {os.getloadavg()[0]:.1f})\n\n"
            "| geometry | size | views | autodiff | likelihood | explicit | autodiff / "
            "likelihood | autodiff x4 vmap | likelihood x4 vmap | explicit x4 vmap | "
            "ratio x4 | max rel. diff likelihood vs explicit |\n" + "|---" * 13 + "|\n")
    lines = [f"| {r['geometry']} | {r['size']} | {r['views']} | {r['autodiff']:.2f} | "
             f"{r['likelihood']:.2f} | {r['explicit']:.2f} | "
             f"{r['autodiff'] / r['likelihood']:.2f} | {r['autodiff_vmap']:.2f} | "
             f"{r['likelihood_vmap']:.2f} | {r['explicit_vmap']:.2f} | "
             f"{r['autodiff_vmap'] / r['likelihood_vmap']:.2f} | {r['rel_diff']:.1e} |"
             for r in rows]
    return head + "\n".join(lines) + "\n"


def main(argv=None):
    run_cases(__doc__.splitlines()[0], bench, table, cases=CASES, reps=15,
              out="out/likelihood_gradient.md", argv=argv)


if __name__ == "__main__":
    main()

"""Gaussian VI on an ill-conditioned limited-angle CT posterior: accuracy against the
closed-form mean-field optimum, honesty of the convergence flag, and the cost of a
first call against a second one (compile once).

Problem: Shepp-Logan, parallel-beam views over [0, pi/2) only (one view per pixel row),
1 % noise, a weak GMRF prior (``--delta``): the missing wedge of frequencies is held by
the prior alone, so the precision ``P`` is ill-conditioned (cond ~4.5e4 at 32x32 with
``delta = 10``). For this Gaussian target the mean-field optimum is known: mean
``P^{-1} b``, variances ``1 / P_ii`` (dense float64 reference, computed here).

For each method: first call (compile included), a second call on other data with
another noise level (same shapes: must compile nothing), and an identical repeat; the
errors of the first call's mean (relative l2) and variances (max relative error against
``1/P_ii``, mean-field only), steps, gradient-equivalents, and the convergence flag
with its reason.

Usage: ``python benchmarks/vi_convergence.py [--size 32] [--delta 10] [--out DIR]``
(``--matrix`` uses the ray transform's dense system matrix instead of the native JAX
projector: quicker to compile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.inference.approximate import approximate
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.operators.tomo import limited_angle
from uqrecon.phantoms import shepp_logan


def posterior(size, delta, seed, noise, matrix):
    op = limited_angle((size, size), num_angles=size)
    A = np.asarray(op.to_dense(jnp.float32), np.float64)
    truth = np.asarray(shepp_logan((size, size)), np.float64)
    clean = A @ truth.ravel()
    sigma = noise * np.abs(clean).max()
    data = (clean + sigma * np.random.default_rng(seed).normal(size=clean.shape))
    if matrix:
        op = MatrixOperator(A.astype(np.float32), domain_shape=(size, size),
                            range_shape=tuple(op.range_shape))
    data = jnp.asarray(data.reshape(op.range_shape), jnp.float32)
    return Posterior(Gaussian(op, data, sigma), GMRF((size, size), delta=delta))


def reference(post):
    form = post.gaussian_form()
    P = np.asarray(form.precision_matrix(), np.float64)
    P = 0.5 * (P + P.T)
    return P, np.linalg.solve(P, np.asarray(form.rhs, np.float64).ravel())


@contextlib.contextmanager
def compiles():
    names = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def timed(post, method, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with compiles() as names:
            t0 = time.perf_counter()
            res = approximate(post, method, seed=0, **cfg)
            dt = time.perf_counter() - t0
    return res, dt, len(names)


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def reverse_kl(result, mean, P):
    """``KL(q || p)`` in nats, float64, of a Gaussian Result ``q`` (diag or low-rank
    factors) against the exact posterior ``N(mean, P^{-1})``: lower is a better fit."""
    g = result.gaussian
    cov = np.diag(g["diag"].ravel().astype(np.float64))
    if g.get("factor") is not None:
        F = g["factor"].astype(np.float64)
        cov = cov + F @ F.T
    dm = g["mean"].ravel().astype(np.float64) - mean
    n = mean.size
    _, logdet_cov = np.linalg.slogdet(cov)
    _, logdet_p = np.linalg.slogdet(P)
    return 0.5 * (np.trace(P @ cov) + dm @ P @ dm - n - logdet_cov - logdet_p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--delta", type=float, default=10.0)
    ap.add_argument("--matrix", action="store_true")
    ap.add_argument("--lowrank-max-iter", type=int, default=4000)
    ap.add_argument("--adam-max-iter", type=int, default=4000)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    first = posterior(args.size, args.delta, 0, 0.01, args.matrix)
    second = posterior(args.size, args.delta, 1, 0.02, args.matrix)   # other data, sigma
    P, mean = reference(first)
    eig = np.linalg.eigvalsh(P)
    cond = eig[-1] / eig[0]
    print(f"{args.size}x{args.size}, delta={args.delta:g}: cond(P) = {cond:.3g}",
          flush=True)
    methods = [("meanfield", "meanfield (newton)", {}),
               ("meanfield", "meanfield (adam)", {"optimizer": "adam",
                                                  "max_iter": args.adam_max_iter}),
               ("lowrank", "lowrank (rank 10, adam)", {"rank": 10, "optimizer": "adam",
                                                        "max_iter": args.lowrank_max_iter}),
               ("lowrank", "lowrank (rank 10, lbfgs)", {"rank": 10, "optimizer": "lbfgs"})]
    rows, record = [], {"size": args.size, "delta": args.delta, "cond": cond,
                        "operator": "matrix" if args.matrix else "native",
                        "device": str(jax.devices()[0]), "cpus": os.cpu_count()}
    for method, label, cfg in methods:
        r1, t1, c1 = timed(first, method, cfg)
        _, t2, c2 = timed(second, method, cfg)
        _, t3, c3 = timed(first, method, cfg)
        d = r1.diagnostics
        var_err = (np.abs(r1.variance.ravel() * np.diag(P) - 1).max()
                   if method == "meanfield" else float("nan"))
        kl = reverse_kl(r1, mean, P)
        rows.append([label, f"{t1:.1f} ({r1.timings['compile_s']:.1f})", c1,
                     f"{t2:.1f}", c2, f"{t3:.1f}", c3, f"{rel(r1.mean, mean):.1e}",
                     f"{var_err:.1e}", f"{kl:.2f}", d["num_steps"], d["num_grad_evals"],
                     d["converged"]])
        record[label] = {"first_s": t1, "first_compile_s": r1.timings["compile_s"],
                         "first_compiles": c1, "second_s": t2, "second_compiles": c2,
                         "repeat_s": t3, "repeat_compiles": c3,
                         "mean_err": rel(r1.mean, mean), "var_max_err": var_err,
                         "kl": kl, "steps": d["num_steps"],
                         "grad_evals": d["num_grad_evals"],
                         "converged": d["converged"], "reason": d["reason"]}
        print(f"  {rows[-1]}\n    {d['reason']}", flush=True)
    md = [f"# Gaussian VI on an ill-conditioned posterior ({args.size}x{args.size} "
          f"limited-angle CT, GMRF delta={args.delta:g}, cond(P) = {cond:.2g})",
          f"{record['operator']} ray transform, float32, {record['device']}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__}; times in seconds (first call: "
          "compile time in brackets); compiles = XLA compilations in the call.",
          table(["method", "first call s", "compiles", "second call (other data, "
                 "sigma) s", "compiles", "identical repeat s", "compiles",
                 "mean rel. err", "max var err vs 1/P_ii", "KL(q || p)", "steps",
                 "grad evals",
                 "converged"], rows), "",
          "Reasons: " + "; ".join(f"{k}: {record[k]['reason']}" for _, k, _ in methods)]
    text = "\n".join(md) + "\n"
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    name = f"vi_convergence_{args.size}"
    with open(os.path.join(args.out, name + ".md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(args.out, name + ".json"), "w") as fh:
        json.dump(record, fh, indent=1, default=str)


if __name__ == "__main__":
    main()

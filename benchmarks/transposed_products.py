"""Transposed matrix products on XLA's CPU backend: ``M.T @ v`` against ``v @ M``.

With ``M`` a jit argument (as every operator and preconditioner array is: they travel as
pytrees), XLA's CPU backend copies the transposed matrix before the product on every
call, so ``M.T @ v`` costs a full matrix copy where ``v @ M`` (the same numbers) reads
``M`` once. This measures each place uqrecon had the slow form, old against new, in one
run (interleaved rounds, best of each), with the shapes the library meets:

* ``MatrixOperator.adjoint`` of a 64x64 CT system matrix (2730 x 4096), real and complex;
* the low-rank / circulant whitening's ``basis.T @ z`` (16384 x 64, twice per gradient);
* Lanczos's full reorthogonalisation (64 steps at n = 16384);
* the dense whitening factor (4096 x 4096), for scale.

    JAX_PLATFORMS=cpu python benchmarks/transposed_products.py [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp


def best_ms(fn, args, calls, rounds=5):
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / calls * 1e3)
    return best


# old and new forms, jitted once at module level (the matrix is an argument, as in uqrecon)
@jax.jit
def _old_product(M, v):
    return M.T @ v


@jax.jit
def _new_product(M, v):
    return v @ M


@jax.jit
def _old_adjoint_complex(M, v):
    return jnp.conj(M.T @ jnp.conj(v))


@jax.jit
def _new_adjoint_complex(M, v):
    return jnp.conj(jnp.conj(v) @ M)


@jax.jit
def _old_lanczos_reorth(V, w, mask):
    for _ in range(2):
        w = w - V.T @ ((V @ w) * mask)
    return w


@jax.jit
def _new_lanczos_reorth(V, w, mask):
    for _ in range(2):
        w = w - ((V @ w) * mask) @ V
    return w


def cases():
    """``(name, old, new, operands, calls per timing)`` for each site."""
    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    A = jax.random.normal(k1, (2730, 4096))
    Ac = (A + 1j * jax.random.normal(k2, A.shape)).astype(jnp.complex64)
    y, yc = jnp.ones(2730), jnp.ones(2730, jnp.complex64)
    basis, z = jnp.linalg.qr(jax.random.normal(k1, (16384, 64)))[0], jnp.ones(16384)
    V = jnp.linalg.qr(jax.random.normal(k2, (16384, 65)))[0].T   # orthonormal rows
    W, w = jax.random.normal(k2, (4096, 4096)), jnp.ones(4096)
    return [
        ("MatrixOperator adjoint, 2730 x 4096 real", _old_product, _new_product, (A, y), 50),
        ("MatrixOperator adjoint, 2730 x 4096 complex", _old_adjoint_complex,
         _new_adjoint_complex, (Ac, yc), 10),
        ("whitening basis.T @ z, 16384 x 64", _old_product, _new_product, (basis, z), 200),
        ("Lanczos reorthogonalisation, 65 x 16384 (one step)", _old_lanczos_reorth,
         _new_lanczos_reorth, (V, z, jnp.ones(65)), 50),
        ("dense factor W.T @ v, 4096 x 4096", _old_product, _new_product, (W, w), 20),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    rows = []
    for name, old, new, operands, calls in cases():
        ref = old(*operands)
        diff = float(jnp.max(jnp.abs(ref - new(*operands))) / jnp.max(jnp.abs(ref)))
        t_old, t_new = [], []
        for _ in range(3):   # interleaved rounds
            t_old.append(best_ms(old, operands, calls))
            t_new.append(best_ms(new, operands, calls))
        rows.append((name, min(t_old), min(t_new), diff))
        print(f"{name}: {min(t_old):.3f} ms -> {min(t_new):.3f} ms "
              f"({min(t_old) / min(t_new):.1f}x), relative difference {diff:.1e}", flush=True)
    lines = ["| product | `M.T @ v` ms | `v @ M` ms | ratio | max difference / max value |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {a:.3f} | {b:.3f} | {a / b:.1f}x | {d:.1e} |" for n, a, b, d in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()

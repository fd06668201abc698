"""Matrix-vector products with a large matrix argument are written ``v @ M``, not ``M.T @ v``.

XLA's CPU backend copies a transposed matrix argument on every call before the product:
``M.T @ v`` with a 4096 x 4096 ``M`` took 46 ms against 2 ms for ``v @ M`` (same numbers;
``benchmarks/results/transposed_products.md``). The jaxpr shows the copy as a ``transpose``
equation on the matrix, which is what these tests look for.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_walk import equations

from uqrecon.inference.samplers.hmc import (CirculantPreconditioner, DensePreconditioner,
                                            LowRankPreconditioner)
from uqrecon.linalg import lanczos_eigh
from uqrecon.operators import MatrixOperator


def _transposes_matrix(fn, args, matrix_shape):
    """Input shapes of the ``transpose`` equations of ``fn``'s jaxpr that transpose a
    matrix of ``matrix_shape`` (either orientation)."""
    shapes = [tuple(e.invars[0].aval.shape) for e in equations(jax.make_jaxpr(fn)(*args))
              if e.primitive.name == "transpose"]
    return [s for s in shapes if sorted(s) == sorted(matrix_shape)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_matrix_operator_adjoint_does_not_transpose_the_matrix(dtype):
    """Catches ``A.T @ y`` in ``MatrixOperator._adjoint`` (a 45x slower adjoint at
    2730 x 4096 on CPU); the adjoint's values are checked against numpy so that a rewrite
    that drops the conjugation fails too."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(30, 40))
    if dtype == jnp.complex64:
        M = M + 1j * rng.normal(size=(30, 40))
    A = MatrixOperator(M.astype(dtype), (5, 8))
    y = jnp.asarray(rng.normal(size=30)).astype(dtype)
    assert _transposes_matrix(lambda op, v: op.adjoint(v), (A, y), (30, 40)) == []
    np.testing.assert_allclose(np.asarray(A.adjoint(y)).ravel(),
                               np.conj(M).T @ np.asarray(y), rtol=1e-4, atol=1e-4)


def test_whitening_factors_are_not_transposed_per_gradient():
    """Catches ``basis.T @ z`` in the low-rank and circulant whitenings (applied twice per
    gradient: 2.2x slower at 16384 x 64) and ``chol.T @ u`` in the dense one's inverse."""
    n, r = 12 * 12, 6
    key = jax.random.PRNGKey(0)
    V = jnp.linalg.qr(jax.random.normal(key, (n, r)))[0]
    u0, z = jnp.zeros((12, 12)), jax.random.normal(key, (12, 12))
    pcs = [LowRankPreconditioner(u0, V, jnp.full(r, 0.5), jnp.asarray(0.3)),
           CirculantPreconditioner(u0, jnp.full((12, 12), 0.7), V, jnp.full(r, 0.5),
                                   jnp.asarray(0.3))]
    for pc in pcs:
        def both(pc, z):
            out, vjp = jax.vjp(pc, z)
            return out, vjp(z)[0], pc.inverse(z)
        assert _transposes_matrix(both, (pc, z), (n, r)) == []
        np.testing.assert_allclose(pc.inverse(pc(z)), z, rtol=1e-4, atol=1e-4)
    chol = jnp.linalg.cholesky(V @ V.T + jnp.eye(n))
    dense = DensePreconditioner(u0, chol, jnp.linalg.inv(chol).T)
    assert _transposes_matrix(lambda pc, u: pc.inverse(u), (dense, z), (n, n)) == []
    np.testing.assert_allclose(dense.inverse(dense(z)), z, rtol=1e-4, atol=1e-4)


def test_lanczos_reorthogonalisation_does_not_transpose_the_basis():
    """Catches ``V.T @ w`` in Lanczos's full reorthogonalisation (3.2x slower for 64
    steps at n = 16384); the Ritz values are checked too: a diagonal matrix with ``m``
    distinct eigenvalues, each repeated, has a Krylov space of dimension ``m``, so ``m``
    steps find every eigenvalue."""
    n, m = 50, 10
    values = jnp.arange(1.0, m + 1.0)
    d = jnp.repeat(values, n // m)
    fn = lambda v: lanczos_eigh(lambda x: d * x, v, m).values
    v0 = jnp.ones(n)
    assert _transposes_matrix(fn, (v0,), (m + 1, n)) == []
    np.testing.assert_allclose(np.sort(fn(v0)), values, rtol=1e-4)

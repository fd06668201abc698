"""Matrix-free symmetric eigensolvers for Hessians: Lanczos and randomized (Halko).

Both solve the generalized problem ``H v = theta M v`` for a symmetric ``H`` and a
symmetric positive definite ``M`` (``M = I`` by default), given only products with
``H``, ``M`` and ``M^{-1}``. Eigenvectors come back ``M``-orthonormal
(``V^T M V = I``), which is what the low-rank posterior update
``Gamma_post = Gamma_pr - V diag(theta / (1 + theta)) V^T`` needs when ``M`` is the prior
precision (Spantini et al. 2015). All vectors are flat (length ``n``); callers reshape.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Eigh", "lanczos_eigh", "randomized_eigh", "cg_solve"]

Matvec = Callable[[jax.Array], jax.Array]


class Eigh(NamedTuple):
    """Ritz pairs: ``values`` (k,) in descending order, ``vectors`` (n, k); for Lanczos
    also ``residuals`` (k,): ``||M^{-1} H v - theta v||_M = |beta_k s_ki|``, a bound on the
    distance from each Ritz value to the nearest eigenvalue (``None`` where unknown)."""

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array | None = None


def _identity(v):
    return v


def lanczos_eigh(matvec: Matvec, v0: jax.Array, num_steps: int, *,
                 mass: Matvec | None = None, mass_solve: Matvec | None = None) -> Eigh:
    """All ``num_steps`` Ritz pairs of the pencil ``(H, M)`` from Lanczos.

    Runs Lanczos on ``M^{-1} H`` in the ``M`` inner product with full
    reorthogonalisation (twice per step), so ``num_steps`` may go up to ``n`` and then
    recovers the whole spectrum. On breakdown (an invariant subspace was found) the
    recursion restarts from a fresh vector orthogonal to the basis, with a zero
    off-diagonal entry, so the tridiagonal matrix stays exact.
    """
    n = v0.shape[0]
    m = int(num_steps)
    if not 1 <= m <= n:
        raise ValueError(f"lanczos_eigh: 'num_steps' must be in [1, {n}], got {num_steps}")
    mass = mass or _identity
    mass_solve = mass_solve or _identity
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 10

    def m_normalise(w):
        mw = mass(w)
        nrm = jnp.sqrt(jnp.maximum(jnp.vdot(w, mw), 0.0))
        return w / nrm, mw / nrm, nrm

    def reorth(w, V, MV, j):
        mask = (jnp.arange(m + 1) <= j).astype(dtype)
        for _ in range(2):
            w = w - V.T @ ((MV @ w) * mask)
        return w

    q0, mq0, _ = m_normalise(v0)
    V = jnp.zeros((m + 1, n), dtype).at[0].set(q0)
    MV = jnp.zeros((m + 1, n), dtype).at[0].set(mq0)
    alpha = jnp.zeros(m, dtype)
    beta = jnp.zeros(m + 1, dtype)
    restarts = jax.random.normal(jax.random.PRNGKey(0), (m, n), dtype)

    def body(j, carry):
        V, MV, alpha, beta = carry
        q = V[j]
        h = matvec(q)
        a = jnp.vdot(q, h)
        w = mass_solve(h) - a * q - beta[j] * V[jnp.maximum(j - 1, 0)]
        w = reorth(w, V, MV, j)
        b = jnp.sqrt(jnp.maximum(jnp.vdot(w, mass(w)), 0.0))
        scale = jnp.maximum(jnp.abs(a), jnp.max(jnp.abs(alpha)))
        broke = b <= tiny * jnp.maximum(scale, tiny)
        # restart from a random vector M-orthogonal to the basis (beta = 0 there)
        w = jnp.where(broke, reorth(restarts[j], V, MV, j), w)
        qn, mqn, _ = m_normalise(w)
        V = V.at[j + 1].set(qn)
        MV = MV.at[j + 1].set(mqn)
        return V, MV, alpha.at[j].set(a), beta.at[j + 1].set(jnp.where(broke, 0.0, b))

    V, MV, alpha, beta = jax.lax.fori_loop(0, m, body, (V, MV, alpha, beta))
    off = beta[1:m]
    T = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, S = jnp.linalg.eigh(T)
    order = jnp.argsort(-theta)
    residuals = jnp.abs(beta[m] * S[m - 1, order])
    return Eigh(theta[order], V[:m].T @ S[:, order], residuals)


def randomized_eigh(matvec: Matvec, key: jax.Array, n: int, num_vectors: int, *,
                    dtype=jnp.float32, power_iters: int = 1,
                    mass: Matvec | None = None, mass_solve: Matvec | None = None) -> Eigh:
    """Randomized eigendecomposition of the pencil ``(H, M)`` (Halko et al. 2011;
    generalized form of Saibaba, Lee and Kitanidis 2016).

    ``num_vectors`` random probes (use the wanted rank plus ~10 oversampling) go through
    ``M^{-1} H`` (``power_iters`` extra times), are ``M``-orthonormalised, and ``H`` is
    projected onto their span. Products with the block are ``vmap``-ed.
    """
    if not 1 <= num_vectors <= n:
        raise ValueError(f"randomized_eigh: 'num_vectors' must be in [1, {n}], got {num_vectors}")
    mass = mass or _identity
    mass_solve = mass_solve or _identity
    op = jax.vmap(lambda v: mass_solve(matvec(v)), in_axes=1, out_axes=1)
    bmass = jax.vmap(mass, in_axes=1, out_axes=1)
    bmatvec = jax.vmap(matvec, in_axes=1, out_axes=1)

    def m_orth(Y):
        # Householder QR for stability, then Cholesky QR (twice) in the M inner product
        Y, _ = jnp.linalg.qr(Y)
        for _ in range(2):
            G = Y.T @ bmass(Y)
            R = jnp.linalg.cholesky(0.5 * (G + G.T))
            Y = jax.scipy.linalg.solve_triangular(R, Y.T, lower=True).T
        return Y

    Y = op(jax.random.normal(key, (n, num_vectors), dtype))
    Q = m_orth(Y)
    for _ in range(power_iters):
        Q = m_orth(op(Q))
    B = Q.T @ bmatvec(Q)
    theta, S = jnp.linalg.eigh(0.5 * (B + B.T))
    order = jnp.argsort(-theta)
    return Eigh(theta[order], Q @ S[:, order])


def cg_solve(matvec: Matvec, b: jax.Array, *, x0=None, tol: float = 1e-6,
             maxiter: int = 1000) -> tuple[jax.Array, jax.Array]:
    """Conjugate gradients for an SPD ``matvec``; returns ``(x, relative residual)``.

    The solver is :func:`uqrecon.inference.exact.cg` (one CG in the package); with
    ``x0`` it solves for the correction ``A d = b - A x0`` to the same absolute
    tolerance ``tol ||b||``. The residual ``||b - A x|| / ||b||`` is recomputed after
    the solve so callers can report how well the system was actually solved.
    """
    from .exact import cg

    bn = jnp.linalg.norm(b.ravel())
    if x0 is None:
        x, _, _ = cg(matvec, b, tol, maxiter)
    else:
        r0 = b - matvec(x0)
        rn = jnp.linalg.norm(r0.ravel())
        rel = tol * bn / jnp.where(rn > 0, rn, 1.0)
        d, _, _ = cg(matvec, r0, rel, maxiter)
        x = x0 + d
    res = jnp.linalg.norm((b - matvec(x)).ravel()) / jnp.where(bn > 0, bn, 1.0)
    return x, res

"""Numerical ground floor shared by every layer: solvers, eigensolvers, dense matrices.

Pure functions of arrays and callables, importable from any layer: this module imports
only jax and numpy, never another uqrecon module. Each routine exists here once and every
layer calls it from here:

- :func:`pcg`: (preconditioned) conjugate gradients with the package's one default
  tolerance rule (:func:`default_tol`) and stagnation detection;
- :func:`circulant_symbol` and :func:`circulant_solve`: a Fourier (circulant) model of a
  nearly shift-invariant SPD operator, measured from its point-spread function, and the
  preconditioner it gives;
- :func:`largest_eigenvalue`: power iteration (operator norms, Lipschitz constants);
- :func:`lanczos_eigh` and :func:`randomized_eigh`: matrix-free symmetric eigensolvers
  for a pencil ``(H, M)``;
- :func:`dense_from_matvec`: the matrix of a linear map, built once from its products
  with unit vectors;
- :func:`psd_factor` (numpy) and :func:`eigh_sqrt` (JAX): square-root factors of
  positive semi-definite matrices;
- :func:`full_precision`: the decorator of the entry points that compute posteriors,
  so that float32 matrix products are not silently TF32 on NVIDIA GPUs.

Matrix-free arguments are callables ``v -> A v``; eigensolver vectors are flat.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["identity", "default_tol", "CGResult", "pcg", "CIRCULANT_FLOOR",
           "circulant_symbol", "circulant_solve", "largest_eigenvalue", "Eigh",
           "lanczos_eigh", "randomized_eigh", "dense_from_matvec", "psd_factor",
           "eigh_sqrt", "full_precision", "full_precision_products", "matmul_precision"]

Matvec = Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------
# Matrix-product precision
# --------------------------------------------------------------------------------------
def full_precision(fn):
    """Decorator: run ``fn`` with float32 matrix products at full precision.

    On NVIDIA GPUs JAX's default float32 matrix product is TF32 (a 10-bit mantissa).
    That is fine for networks and wrong for posteriors: measured on an H200, the exact
    Gaussian posterior mean of the 64x64 sparse-view CT reference problem
    (``benchmarks/samplers.py``) came out 4.6 % away from a float64 CPU Cholesky, and
    0.04 % with full precision (256 HMC chains showed no effect: 0.25 % both ways).
    Every entry point that computes a posterior (``sample``, ``approximate``,
    ``map_estimate``, ``gold.reference``, ``compare``, the replicated calibration, BUQO
    and bootstrap functions of ``uqrecon.uq``; ``Result.sample`` uses the context
    directly) is traced under ``jax.default_matmul_precision("highest")`` -- unless the
    user has set ``jax_default_matmul_precision``, which then wins. CPUs compute float32
    products in full precision either way.

    Args:
        fn: the function to wrap.

    Returns:
        The wrapped function.
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with full_precision_products():
            return fn(*args, **kwargs)
    wrapped.full_precision = True          # tests list the wrapped entry points by this
    return wrapped


def matmul_precision() -> str:
    """The float32 matrix-product precision in force (``"default"`` when unset), as Results
    and cache keys record it.

    Returns:
        A string.
    """
    return str(jax.config.jax_default_matmul_precision or "default")


def full_precision_products():
    """The context :func:`full_precision` runs its function in:
    ``jax.default_matmul_precision("highest")``, or nothing when the user has set a
    precision.

    Returns:
        A context manager.
    """
    if jax.config.jax_default_matmul_precision is not None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision("highest")


# --------------------------------------------------------------------------------------
# Conjugate gradients
# --------------------------------------------------------------------------------------
def identity(r):
    """The trivial preconditioner.

    Args:
        r: a residual.

    Returns:
        ``r`` unchanged.
    """
    return r


def default_tol(dtype) -> float:
    """The package's one default CG tolerance: ``1e-8`` in double precision (float64,
    complex128), ``1e-5`` in single precision.

    The relative residual ``||b - A x|| / ||b||`` of a solve of a posterior system then
    keeps the solve error well below Monte Carlo error, and stays above the rounding floor
    of the residual in that precision (about ``eps * cond``), so the tolerance is
    attainable for the conditioning of imaging posteriors.

    Args:
        dtype: the dtype of the system (real or complex).

    Returns:
        The relative tolerance, a Python float.
    """
    return 1e-8 if jnp.finfo(jnp.dtype(dtype)).bits == 64 else 1e-5


class CGResult(NamedTuple):
    """What :func:`pcg` returns.

    ``x``: the solution; ``iterations``: CG iterations (one product with ``A`` each);
    ``matvecs``: all products with ``A`` (the iterations, one per true-residual check --
    usually one per solve -- and one for a given ``x0``): the cost to report; ``relres``: the
    true relative residual ``||b - A x|| / ||b||`` at exit; ``stagnated``: True when the
    solve stopped before ``maxiter`` because the residual stopped decreasing (the
    tolerance lies below what this precision can attain), with ``relres > tol``.
    """

    x: jax.Array
    iterations: jax.Array
    relres: jax.Array
    stagnated: jax.Array
    matvecs: jax.Array


def _dot(a, b):
    return jnp.vdot(a, b).real


# a restart must shrink ||r||^2 by this factor (the residual norm by half) or the solve
# is at its rounding floor
_RESTART_SHRINK = 0.25


def pcg(matvec: Callable, b: jax.Array, precond: Callable = identity, tol=None,
        maxiter=1000, x0: jax.Array | None = None) -> CGResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` by preconditioned CG.

    The stopping rule is the relative residual ``||b - A x|| <= tol ||b||``. CG's
    recursively updated residual drifts from the true one once it nears the rounding
    floor (in float32 it keeps shrinking geometrically while the true residual has
    stopped at about ``eps * cond(A)``). So when the recursive residual meets the
    tolerance the true residual is computed (one product with ``A``): if it meets the
    tolerance too the solve has converged; if not, CG restarts from it. A restart that
    does not halve the true residual means the residual has stopped decreasing: the
    solve stops and reports ``stagnated``, instead of running on to ``maxiter``.

    Args:
        matvec: ``v -> A v`` (any array shape; inner products over all entries).
        b: right-hand side.
        precond: ``r -> M^{-1} r`` for an SPD preconditioner ``M ~ A``.
        tol: relative residual tolerance (may be a traced scalar); default
            :func:`default_tol` of ``b``'s dtype.
        maxiter: cap on CG iterations (may be a traced integer).
        x0: starting point (default zero); the tolerance stays relative to ``||b||``,
            so a warm start solves to the same absolute accuracy.

    Returns:
        :class:`CGResult` ``(x, iterations, relres, stagnated, matvecs)``: ``relres > tol``
        means the solve stopped short, ``stagnated`` says whether at its rounding floor
        (else at ``maxiter``).
    """
    if tol is None:
        tol = default_tol(b.dtype)
    bnorm2 = _dot(b, b)
    thresh = (jnp.asarray(tol, bnorm2.dtype) ** 2) * bnorm2
    start = x0
    if x0 is None:
        x0, r0 = jnp.zeros_like(b), b
    else:
        r0 = b - matvec(x0)

    def cond(c):
        _, r, _, _, _, k = c
        return (_dot(r, r) > thresh) & (k < maxiter)

    def body(c):
        x, r, z, p, rz, k = c
        ap = matvec(p)
        alpha = rz / _dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        z = precond(r)
        rz_new = _dot(r, z)
        return x, r, z, z + (rz_new / rz) * p, rz_new, k + 1

    def restart_cond(c):
        _, _, _, k, done, stagnated, _ = c
        return ~done & ~stagnated & (k < maxiter)

    def restart_body(c):
        # CG from the true residual r of x, then the true residual of the result
        x, r, rr, k, _, _, checks = c
        z = precond(r)
        x, _, _, _, _, k = jax.lax.while_loop(cond, body, (x, r, z, z, _dot(r, z), k))
        r_new = b - matvec(x)
        rr_new = _dot(r_new, r_new)
        done = rr_new <= thresh
        # not halved (or NaN): the residual has stopped decreasing
        stagnated = ~done & (k < maxiter) & ~(rr_new <= _RESTART_SHRINK * rr)
        return x, r_new, rr_new, k, done, stagnated, checks + 1

    checks0 = jnp.int32(0 if start is None else 1)
    init = (x0, r0, _dot(r0, r0), jnp.int32(0), jnp.bool_(False), jnp.bool_(False), checks0)
    x, _, rr, k, _, stagnated, checks = jax.lax.while_loop(restart_cond, restart_body, init)
    relres = jnp.sqrt(rr / jnp.where(bnorm2 > 0, bnorm2, 1.0))
    return CGResult(x, k, relres, stagnated, k + checks)


# Floor of the circulant symbol relative to its maximum. Measured (CG iterations to 1e-5
# for one perturbation-optimisation draw, sparse-view CT with a GMRF prior, delta 100;
# none / floor 1e-3 / 1e-2 / 2e-2 / 3e-2 / 0.1): 32x32 20 views 74/103/49/40/39/54,
# 64x64 30 views 78/83/40/-/39/55, 128x128 30 views 101/115/61/-/49/71, 256x256 60 views
# 103/-/43/43/50/-, 64x64 delta 10: 224/274/116/106/109/163. Too low a floor inverts the
# near-zero symbol between the projection angles' spokes and is worse than no
# preconditioner; too high a floor stops modelling the operator.
CIRCULANT_FLOOR = 2e-2


def circulant_symbol(matvec: Callable, shape, dtype,
                     floor: float = CIRCULANT_FLOOR) -> jax.Array:
    """FFT symbol of the circulant matrix whose point-spread function is ``matvec`` applied
    to a unit impulse at the centre of an image of ``shape``: a Fourier model of an SPD
    operator that is nearly shift invariant. For parallel-beam CT ``A^T A`` is close to a
    ``1/|omega|`` filter (with sparse views, a star of spokes); a GMRF's ``D^T D`` is a
    Laplacian; single-coil Cartesian MRI's ``F^H M F`` is exactly circulant. One product
    with ``matvec``.

    Args:
        matvec: ``v -> P v`` on images of ``shape``.
        shape: the image shape.
        dtype: the image dtype (the symbol is real, of the matching real dtype).
        floor: the symbol is floored at ``floor`` times its maximum, so the model stays
            positive definite and does not invert the near-zero symbol between the
            angles of a sparse-view scan (:data:`CIRCULANT_FLOOR`, measured).

    Returns:
        The real symbol, an array of ``shape``.
    """
    delta = jnp.zeros(shape, dtype).at[tuple(s // 2 for s in shape)].set(1.0)
    sym = jnp.real(jnp.fft.fftn(jnp.fft.ifftshift(matvec(delta))))
    sym = sym.astype(jnp.finfo(dtype).dtype)
    return jnp.maximum(sym, floor * jnp.max(sym))


def circulant_solve(symbol: jax.Array) -> Callable:
    """The preconditioner ``r -> C^{-1} r`` of a circulant model (:func:`circulant_symbol`):
    two FFTs. Real residuals stay real; complex images (MRI) keep their imaginary part.

    Args:
        symbol: the positive real FFT symbol of ``C``.

    Returns:
        A callable ``r -> C^{-1} r`` for :func:`pcg`'s ``precond``.
    """
    def solve(r):
        z = jnp.fft.ifftn(jnp.fft.fftn(r) / symbol)
        return (z if jnp.iscomplexobj(r) else jnp.real(z)).astype(r.dtype)
    return solve


# --------------------------------------------------------------------------------------
# Eigenvalues
# --------------------------------------------------------------------------------------
def largest_eigenvalue(matvec, x0, num_iter: int = 100, rtol: float = 1e-6):
    """Largest eigenvalue of a positive semi-definite linear map, by power iteration.

    Used for operator norms and Lipschitz constants.

    Args:
        matvec: ``v -> A v`` for PSD ``A`` (any array shape).
        x0: non-zero starting vector, the shape ``matvec`` takes.
        num_iter: iteration cap.
        rtol: stop when the Rayleigh quotient changes by less than ``rtol`` (relative).

    Returns:
        The last Rayleigh quotient ``v^H A v`` (real scalar array).
    """

    def body(carry):
        i, v, est, _ = carry
        w = matvec(v)
        new = jnp.real(jnp.vdot(v.ravel(), w.ravel()))
        nrm = jnp.linalg.norm(w.ravel())
        return i + 1, w / jnp.where(nrm > 0, nrm, 1.0), new, est

    def cond(carry):
        i, _, est, prev = carry
        return (i < num_iter) & (jnp.abs(est - prev) > rtol * jnp.abs(est))

    v = x0 / jnp.linalg.norm(x0.ravel())
    real = jnp.real(v).dtype
    init = (0, v, jnp.asarray(1.0, real), jnp.asarray(0.0, real))
    return jax.lax.while_loop(cond, body, init)[2]


class Eigh(NamedTuple):
    """Ritz pairs: ``values`` (k,) in descending order, ``vectors`` (n, k); for Lanczos
    also ``residuals`` (k,): ``||M^{-1} H v - theta v||_M = |beta_k s_ki|``, a bound on the
    distance from each Ritz value to the nearest eigenvalue (``None`` where unknown)."""

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array | None = None


def lanczos_eigh(matvec: Matvec, v0: jax.Array, num_steps: int, *,
                 mass: Matvec | None = None, mass_solve: Matvec | None = None) -> Eigh:
    """All ``num_steps`` Ritz pairs of the pencil ``(H, M)`` from Lanczos.

    Solves ``H v = theta M v`` for symmetric ``H`` and SPD ``M`` (``M = I`` by default)
    from products only; eigenvectors come back ``M``-orthonormal (``V^T M V = I``), as
    the low-rank posterior update ``Gamma_pr - V diag(theta / (1 + theta)) V^T`` needs
    when ``M`` is the prior precision (Spantini et al. 2015). Runs Lanczos on
    ``M^{-1} H`` in the ``M`` inner product with full reorthogonalisation (twice per
    step), so ``num_steps`` may go up to ``n`` and then recovers the whole spectrum. On
    breakdown (an invariant subspace was found) the recursion restarts from a fresh vector
    orthogonal to the basis, with a zero off-diagonal entry, so the tridiagonal matrix
    stays exact.

    Args:
        matvec: ``v -> H v`` on flat vectors.
        v0: flat starting vector (length ``n``).
        num_steps: Lanczos steps, in ``[1, n]``.
        mass: ``v -> M v`` (default identity).
        mass_solve: ``v -> M^{-1} v`` (default identity).

    Returns:
        :class:`Eigh` with ``num_steps`` Ritz pairs and their residual bounds.
    """
    n = v0.shape[0]
    m = int(num_steps)
    if not 1 <= m <= n:
        raise ValueError(f"lanczos_eigh: 'num_steps' must be in [1, {n}], got {num_steps}")
    mass = mass or identity
    mass_solve = mass_solve or identity
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 10

    def m_normalise(w):
        mw = mass(w)
        nrm = jnp.sqrt(jnp.maximum(jnp.vdot(w, mw), 0.0))
        return w / nrm, mw / nrm, nrm

    def reorth(w, V, MV, j):
        mask = (jnp.arange(m + 1) <= j).astype(dtype)
        for _ in range(2):
            w = w - ((MV @ w) * mask) @ V
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

    ``num_vectors`` random probes go through ``M^{-1} H`` (``power_iters`` extra times),
    are ``M``-orthonormalised (range finder), and ``H`` is projected onto their span
    (Rayleigh-Ritz). Products with the block are ``vmap``-ed.

    Args:
        matvec: ``v -> H v`` on flat vectors (length ``n``).
        key: PRNG key for the probes.
        n: the dimension.
        num_vectors: probes, in ``[1, n]`` (the wanted rank plus ~10 oversampling).
        dtype: dtype of the probes.
        power_iters: extra passes through ``M^{-1} H``.
        mass: ``v -> M v`` (default identity).
        mass_solve: ``v -> M^{-1} v`` (default identity).

    Returns:
        :class:`Eigh` with ``num_vectors`` pairs, ``M``-orthonormal vectors, no residuals.
    """
    if not 1 <= num_vectors <= n:
        raise ValueError(f"randomized_eigh: 'num_vectors' must be in [1, {n}], got {num_vectors}")
    mass = mass or identity
    mass_solve = mass_solve or identity
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


# --------------------------------------------------------------------------------------
# Dense matrices and square roots
# --------------------------------------------------------------------------------------
def dense_from_matvec(matvec: Callable, n: int, dtype, *, in_shape=None,
                      batch_size: int | None = 256, symmetrize: bool = False) -> jax.Array:
    """The matrix of a linear map from its products with the ``n`` unit vectors.

    The identity is mapped through ``matvec`` once, in chunks of ``batch_size`` (vmapped
    within a chunk, sequential across chunks), so memory stays bounded; small problems
    only (``n`` products, an ``m x n`` result). Call it inside a module-level jit.

    Args:
        matvec: ``v -> A v``; takes arrays of ``in_shape`` (default flat ``(n,)``) and
            returns any shape (flattened to ``m`` rows).
        n: the input dimension, ``prod(in_shape)``.
        dtype: dtype of the unit vectors.
        in_shape: the shape ``matvec`` takes (default ``(n,)``).
        batch_size: unit vectors per vmapped chunk (``min(n, batch_size)``); ``None``
            applies the map to one vector at a time, unbatched (large projectors are
            several times slower vmapped over thousands of unit vectors on CPU).
        symmetrize: return ``(A + A^H) / 2`` (square maps that are symmetric up to
            rounding).

    Returns:
        The ``(m, n)`` matrix whose column ``i`` is ``A e_i``.
    """
    in_shape = (n,) if in_shape is None else tuple(in_shape)
    eye = jnp.eye(n, dtype=dtype).reshape((n, *in_shape))
    if batch_size is None:
        cols = jax.lax.map(matvec, eye)
    else:
        cols = jax.lax.map(matvec, eye, batch_size=min(n, batch_size))
    mat = cols.reshape(n, -1).T
    return 0.5 * (mat + jnp.conj(mat).T) if symmetrize else mat


def psd_factor(cov) -> np.ndarray:
    """A factor ``L`` with ``L L^T = cov`` for a symmetric PSD numpy matrix.

    The Cholesky factor when ``cov`` is numerically positive definite, else the
    eigendecomposition's ``V diag(sqrt(max(w, 0)))`` (singular or rounding-indefinite
    covariances). Computed in numpy, in ``cov``'s precision.

    Args:
        cov: ``(n, n)`` symmetric positive semi-definite array.

    Returns:
        ``(n, n)`` numpy array ``L``.
    """
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        return v * np.sqrt(np.clip(w, 0, None))


def eigh_sqrt(mat: jax.Array, floor=0.0):
    """Square-root and inverse-square-root factors of a symmetric matrix from ``eigh``.

    With ``mat = V diag(lam) V^T`` and ``|lam|`` raised to at least ``floor * max|lam|``
    ("SoftAbs", Betancourt 2013: the identity on a positive definite matrix whose
    condition number is below ``1 / floor``), returns ``S = V |lam|^{1/2}`` and
    ``W = V |lam|^{-1/2}``: ``S S^T`` is the (regularised) matrix, ``W W^T`` its inverse,
    ``W^T S = I``.

    Args:
        mat: ``(n, n)`` symmetric matrix.
        floor: relative eigenvalue floor (may be traced).

    Returns:
        ``(S, W, ok)`` with ``ok`` False when the eigenvalues are not finite or all zero.
    """
    lam, V = jnp.linalg.eigh(mat)
    top = jnp.max(jnp.abs(lam))
    ok = jnp.all(jnp.isfinite(lam)) & (top > 0)
    lam = jnp.maximum(jnp.abs(lam), floor * top)
    return V * jnp.sqrt(lam), V / jnp.sqrt(lam), ok

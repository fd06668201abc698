"""HMC and NUTS (blackjax kernels) with preconditioning for ill-posed imaging posteriors.

A diagonal mass matrix cannot undo the strong pixel correlations of a CT posterior, so we
precondition by a linear change of variables ``u = u0 + C z`` with ``C C^T ≈ H^{-1}``,
``H`` the Hessian of the potential (in the unconstrained space) at a reference point, and
run HMC/NUTS on ``z`` with a unit mass matrix (equivalent to mass matrix ``H``):

- ``"dense"``: ``H = R R^T`` by Cholesky, ``C = R^{-T}`` (exact for linear-Gaussian
  posteriors, O(n^2) per gradient; for n up to a few thousand pixels).
- ``"lowrank"``: Lanczos on ``H`` (Hessian-vector products only); converged Ritz pairs
  ``(mu_i, v_i)`` are whitened exactly and the complement is scaled by ``1/sqrt(mu_c)``,
  ``mu_c`` the largest unconverged Ritz value (the complement's stiffest direction).
- ``"circulant"``: a Fourier model of ``H`` (the FFT symbol of its point-spread function
  at the image centre: :func:`uqrecon.linalg.circulant_symbol`), ``S = C^{-1/2}`` by two
  FFTs, corrected by Lanczos on ``S H S`` as in ``"lowrank"``: ``C = S T`` with ``T`` the
  low-rank-plus-scaled-identity whitening of ``S H S``. O(n log n + n r) per gradient and
  no dense factor, so it scales past the dense limit; for shift-invariant parts of ``H``
  (a GMRF's Laplacian, a Cartesian MRI mask, parallel-beam CT's ``1/|omega|`` filter)
  the circulant model is nearly exact and Lanczos mends the rest (boundaries, the gaps
  between sparse views).
- ``"identity"``: no preconditioning (what plain NUTS sees).
The step size is tuned by dual averaging during warmup (target 0.8) and then frozen.

:data:`HMC` and :data:`NUTS` are :class:`~.base.Sampler` bundles of module-level
functions; the target (a :class:`~.base.Whitened` posterior: posterior + preconditioner,
both pytrees), the step-size settings and the trajectory settings travel in ``params``
(:class:`HMCParams`, :class:`NUTSParams`). blackjax's kernels are built inside the step,
while tracing, from the traced target. NUTS's ``max_num_doublings`` (array sizes) and
HMC's choice between a path length and a step count (the loop's structure) are static
fields of the params; all other settings are arrays, so they never recompile.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from blackjax.mcmc import dynamic_hmc as _dhmc

from ...linalg import CIRCULANT_FLOOR, circulant_symbol, dense_from_matvec, eigh_sqrt, \
    lanczos_eigh
from ...operators.base import operator_dataclass, static_field
from .base import (Sampler, StepInfo, as_float, check_int, check_positive,
                   check_unit_interval, halton_point, tuned_finish_warmup, tuned_init,
                   tuned_step)

__all__ = ["UpperTriangular", "DensePreconditioner", "LowRankPreconditioner",
           "CirculantPreconditioner", "IdentityPreconditioner", "hessian_matrix",
           "dense_preconditioner", "lowrank_preconditioner", "circulant_preconditioner",
           "HMC", "HMCParams", "hmc", "NUTS", "NUTSParams", "nuts"]


class IdentityPreconditioner(NamedTuple):
    """``u = u0 + z``."""

    u0: jax.Array

    def __call__(self, z):
        return self.u0 + z

    def inverse(self, u):
        return u - self.u0


class UpperTriangular(NamedTuple):
    """An upper-triangular matrix kept as its ``k(k+1)/2`` non-zero square blocks.

    A dense matvec with a whitening factor is memory-bound; skipping the zero half reads
    about half the bytes: measured 2.4x faster than the dense matvec for n = 4096
    (single chain, gradient = both products; 1.65x under a 1-chain vmap, 0.85x with 4
    vmapped chains, where the dense product is already a GEMM).
    """

    blocks: jax.Array   # (num_blocks, b, b)
    rows: jax.Array     # (num_blocks,) block row
    cols: jax.Array     # (num_blocks,) block column

    @classmethod
    def from_dense(cls, M: jax.Array, k: int = 8) -> "UpperTriangular":
        return _upper_blocks(M, k)

    def __matmul__(self, v: jax.Array) -> jax.Array:
        num, b, _ = self.blocks.shape
        k = (math.isqrt(8 * num + 1) - 1) // 2
        n = v.shape[0]
        vb = jnp.pad(v, (0, k * b - n)).reshape(k, b)
        prod = jnp.einsum("ibj,ij->ib", self.blocks, vb[self.cols])
        return jax.ops.segment_sum(prod, self.rows, num_segments=k).reshape(-1)[:n]


@partial(jax.jit, static_argnames=("k",))
def _upper_blocks(M: jax.Array, k: int) -> UpperTriangular:
    """The ``k(k+1)/2`` non-zero blocks of an upper-triangular ``M`` (module-level jit:
    the slicing compiles once per size, not once per call)."""
    n = M.shape[0]
    b = -(-n // k)
    Mp = jnp.pad(M, ((0, k * b - n), (0, k * b - n)))
    idx = [(i, j) for i in range(k) for j in range(i, k)]
    blocks = jnp.stack([Mp[i * b:(i + 1) * b, j * b:(j + 1) * b] for i, j in idx])
    return UpperTriangular(blocks, jnp.asarray([i for i, _ in idx], jnp.int32),
                           jnp.asarray([j for _, j in idx], jnp.int32))


class DensePreconditioner(NamedTuple):
    """``u = u0 + R^{-T} z`` with ``H = R R^T`` (R the Cholesky factor, or ``V |L|^{1/2}``
    from an eigendecomposition when ``H`` is indefinite).

    ``R^{-T}`` is formed once (dense, or its non-zero blocks as :class:`UpperTriangular`
    from 1024 pixels): a matrix product per gradient, whereas a triangular solve inside
    every gradient is several times slower on CPU.
    """

    u0: jax.Array
    chol: jax.Array      # R
    factor: object       # R^{-T}: an array or UpperTriangular

    def __call__(self, z):
        return self.u0 + (self.factor @ z.ravel()).reshape(self.u0.shape)

    def inverse(self, u):
        return ((u - self.u0).ravel() @ self.chol).reshape(self.u0.shape)


class LowRankPreconditioner(NamedTuple):
    """``u = u0 + [alpha (I - V V^T) + V diag(s) V^T] z`` with orthonormal V.

    Unconverged Ritz vectors are kept as zero columns (scale 1), so the arrays' shapes
    depend on the requested rank only, not on how many pairs converged: the samplers'
    compiled chunk is reused across problems."""

    u0: jax.Array
    basis: jax.Array      # (n, r)
    scales: jax.Array     # (r,) = mu_i^{-1/2}
    alpha: jax.Array      # complement scale

    def __call__(self, z):
        z = z.ravel()
        c = z @ self.basis   # not basis.T @ z: XLA's CPU backend would copy the transpose
        v = self.alpha * (z - self.basis @ c) + self.basis @ (self.scales * c)
        return self.u0 + v.reshape(self.u0.shape)

    def inverse(self, u):
        d = (u - self.u0).ravel()
        c = d @ self.basis
        z = (d - self.basis @ c) / self.alpha + self.basis @ (c / self.scales)
        return z.reshape(self.u0.shape)


def _fourier_scale(v: jax.Array, symbol: jax.Array) -> jax.Array:
    """``F^{-1} diag(symbol) F v`` for a real image ``v`` and a real, even symbol (the
    circulant operator is then real symmetric, so the real part is exact)."""
    return jnp.real(jnp.fft.ifftn(jnp.fft.fftn(v) * symbol)).astype(v.dtype)


class CirculantPreconditioner(NamedTuple):
    """``u = u0 + S T z``: ``S = F^{-1} diag(symbol^{-1/2}) F`` whitens a circulant model
    of the Hessian, ``T = alpha (I - V V^T) + V diag(s) V^T`` (orthonormal V) the Ritz
    pairs of ``S H S`` (as :class:`LowRankPreconditioner`, zero columns for unconverged
    pairs so shapes depend on the rank only)."""

    u0: jax.Array
    inv_sqrt_symbol: jax.Array   # image shape: symbol^{-1/2}
    basis: jax.Array             # (n, r)
    scales: jax.Array            # (r,)
    alpha: jax.Array

    def __call__(self, z):
        z = z.ravel()
        c = z @ self.basis
        v = self.alpha * (z - self.basis @ c) + self.basis @ (self.scales * c)
        return self.u0 + _fourier_scale(v.reshape(self.u0.shape), self.inv_sqrt_symbol)

    def inverse(self, u):
        d = _fourier_scale(u - self.u0, 1.0 / self.inv_sqrt_symbol).ravel()
        c = d @ self.basis
        z = (d - self.basis @ c) / self.alpha + self.basis @ (c / self.scales)
        return z.reshape(self.u0.shape)


def _hvp(potential: Callable, u0):
    grad = jax.grad(potential)
    return lambda v: jax.jvp(grad, (u0,), (v,))[1]


def hessian_matrix(potential: Callable, u0: jax.Array) -> jax.Array:
    """The dense Hessian of ``potential`` at ``u0`` from n batched HVPs (small n only)."""
    return dense_from_matvec(_hvp(potential, u0), u0.size, u0.dtype, in_shape=u0.shape,
                             symmetrize=True)


@jax.jit
def _cholesky_whitening(hess: jax.Array):
    """``(R, R^{-T}, finite)`` with ``hess = R R^T``."""
    chol = jnp.linalg.cholesky(hess)
    factor = jsl.solve_triangular(chol.T, jnp.eye(hess.shape[0], dtype=chol.dtype),
                                  lower=False)
    return chol, factor, jnp.all(jnp.isfinite(chol))


@jax.jit
def _softabs_whitening(hess: jax.Array, floor):
    """``(V |L|^{1/2}, V |L|^{-1/2}, ok)`` with ``|L| = max(|L|, floor * max|L|)``."""
    return eigh_sqrt(hess, floor)


def dense_preconditioner(hess: jax.Array, u0: jax.Array,
                         floor: float = 1e-6) -> DensePreconditioner:
    """Whitening by the Cholesky factor of the Hessian matrix ``hess`` at ``u0``.

    Away from the mode (or with a constraint's change of variables) the Hessian can be
    indefinite; then the metric is the "SoftAbs"-style ``V max(|L|, floor * max|L|) V^T``
    (Betancourt 2013) from its eigendecomposition: same curvature scales, positive.
    The factorisations are module-level jits (no recompilation on a second call).
    """
    chol, factor, ok = _cholesky_whitening(hess)
    if bool(ok):
        if u0.size >= 1024:   # R^{-T} is upper triangular: store its non-zero blocks
            factor = UpperTriangular.from_dense(factor)
        return DensePreconditioner(u0, chol, factor)
    chol, factor, ok = _softabs_whitening(hess, jnp.asarray(floor, hess.dtype))
    if not bool(ok):
        raise ValueError("preconditioner='dense': the Hessian at the reference point is not "
                         "finite or is zero; use preconditioner='lowrank' or 'identity'")
    return DensePreconditioner(u0, chol, factor)


def _ritz_whitening(matvec, n, dtype, key, rank: int, rtol):
    """``(basis, scales, alpha, kept)`` of the low-rank-plus-scaled-identity whitening of
    the SPD map ``matvec`` from ``rank`` Lanczos steps: converged Ritz pairs (residual
    <= ``rtol mu``, both spectral ends) whitened exactly, the complement scaled by the
    largest unconverged Ritz value (its stiffest direction)."""
    eig = lanczos_eigh(matvec, jax.random.normal(key, (n,), dtype), rank)
    mu, V = eig.values, eig.vectors
    res = jnp.linalg.norm(jax.vmap(matvec, in_axes=1, out_axes=1)(V) - V * mu, axis=0)
    keep = (res <= rtol * jnp.abs(mu)) & (mu > 0)
    # the stiffest direction left in the complement: the largest unconverged Ritz value
    stiff = jnp.where(jnp.any(~keep), jnp.max(jnp.where(keep, -jnp.inf, mu)),
                      jnp.min(jnp.where(keep, mu, jnp.inf)))
    alpha = (1.0 / jnp.sqrt(stiff)).astype(dtype)
    basis = jnp.where(keep, V, 0.0)
    scales = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, mu, 1.0)), 1.0)
    return basis, scales, alpha, jnp.sum(keep)


@partial(jax.jit, static_argnames=("rank",))
def _lowrank_factors(potential, u0, key, rank: int, rtol):
    """Lanczos Ritz pairs of the Hessian of ``potential`` (a pytree callable) at ``u0``,
    the converged ones marked; returns ``(preconditioner, number kept)``."""
    hvp = _hvp(potential, u0)
    shape = u0.shape
    matvec = lambda v: hvp(v.reshape(shape)).ravel()
    basis, scales, alpha, kept = _ritz_whitening(matvec, u0.size, u0.dtype, key, rank, rtol)
    return LowRankPreconditioner(u0, basis, scales, alpha), kept


@partial(jax.jit, static_argnames=("rank",))
def _circulant_factors(potential, u0, key, rank: int, rtol, floor):
    """The circulant model of the Hessian at ``u0`` (one HVP) and the Ritz pairs of the
    Hessian it whitens; returns ``(preconditioner, number kept)``."""
    hvp = _hvp(potential, u0)
    shape = u0.shape
    inv_sqrt = 1.0 / jnp.sqrt(circulant_symbol(hvp, shape, u0.dtype, floor))
    whiten = lambda v: _fourier_scale(v.reshape(shape), inv_sqrt)
    matvec = lambda v: whiten(hvp(whiten(v))).ravel()
    basis, scales, alpha, kept = _ritz_whitening(matvec, u0.size, u0.dtype, key, rank, rtol)
    return CirculantPreconditioner(u0, inv_sqrt.astype(u0.dtype), basis, scales, alpha), kept


def lowrank_preconditioner(potential: Callable, u0: jax.Array, key: jax.Array,
                           rank: int = 64, rtol: float = 1e-2) -> LowRankPreconditioner:
    """Low-rank-plus-scaled-identity inverse Hessian from ``rank`` Lanczos iterations.

    Ritz pairs whose residual is below ``rtol * mu`` are kept (both spectral ends).
    ``potential`` must be a pytree callable (e.g. a NamedTuple with ``__call__``), not a
    closure: it is an argument of a module-level jit, so a second call on a same-shaped
    problem compiles nothing.
    """
    rank = min(int(rank), u0.size)
    pc, kept = _lowrank_factors(potential, u0, key, rank, jnp.asarray(rtol, u0.dtype))
    if int(kept) == 0:
        raise ValueError("preconditioner='lowrank': no converged positive Ritz pair; "
                         "increase 'rank' or use preconditioner='identity'")
    return pc


def circulant_preconditioner(potential: Callable, u0: jax.Array, key: jax.Array,
                             rank: int = 32, rtol: float = 1e-2,
                             floor: float = CIRCULANT_FLOOR) -> CirculantPreconditioner:
    """Circulant (Fourier) whitening of the Hessian at ``u0``, corrected by ``rank``
    Lanczos steps on the Hessian it whitens: O(n log n + n r) per application.

    Real images only. ``potential`` must be a pytree callable (a jit argument, as for
    :func:`lowrank_preconditioner`).

    Args:
        potential: pytree callable ``u -> -log density`` (unconstrained coordinates).
        u0: the reference point (an image).
        key: PRNG key of Lanczos's starting vector.
        rank: Lanczos steps on the circulant-whitened Hessian.
        rtol: a Ritz pair is kept when its residual is below ``rtol`` times its value.
        floor: the circulant symbol's floor relative to its maximum
            (:data:`uqrecon.linalg.CIRCULANT_FLOOR`).

    Returns:
        A :class:`CirculantPreconditioner`.
    """
    if jnp.iscomplexobj(u0):
        raise ValueError("preconditioner='circulant' supports real images only; use "
                         "'dense' or 'lowrank' for a complex image")
    rank = min(int(rank), u0.size)
    pc, _ = _circulant_factors(potential, u0, key, rank, jnp.asarray(rtol, u0.dtype),
                               jnp.asarray(floor, u0.dtype))
    return pc


def _unit_mass(state):
    return jnp.ones(state.position.size, state.position.dtype)


def _nuts_init(key, x, params):
    z = params.target.from_image(x)
    return tuned_init(blackjax.hmc.init(z, params.target.logdensity),
                      params.initial_step_size, params.target_acceptance)


def _hmc_init(key, x, params):
    """blackjax's dynamic-HMC state: the position and the index of the Halton point
    that sets the next trajectory's length (0 at the start of a run)."""
    z = params.target.from_image(x)
    return tuned_init(_dhmc.init(z, params.target.logdensity, jnp.int32(0)),
                      params.initial_step_size, params.target_acceptance)


def _position(state, params):
    return params.target.to_image(state.inner.position)


@operator_dataclass
class HMCParams:
    """HMC's settings. ``use_path`` (static) picks the trajectory rule: integration time
    ``T (1/2 + h_i)`` with ``T = path_length`` (``ceil(t / step)`` leapfrog steps,
    capped at ``max_integration_steps``), else ``ceil(h_i (2L - 1))`` steps with
    ``L = num_integration_steps``; ``h_i`` in [0, 1) is the Halton point of the
    iteration (:func:`~.base.halton_point`)."""

    target: Any
    initial_step_size: jax.Array
    target_acceptance: jax.Array
    num_integration_steps: jax.Array
    path_length: jax.Array
    max_integration_steps: jax.Array
    use_path: bool = static_field(default=False)


def _next_index(i):
    return i + 1


def _steps_along_path(i, path_length, step_size, cap):
    t = path_length * (0.5 + halton_point(i).astype(step_size.dtype))
    return jnp.clip(jnp.ceil(t / step_size), 1, cap).astype(jnp.int32)


def _steps_uniform(i, num_integration_steps):
    h = halton_point(i)
    return jnp.clip(jnp.ceil(h * (2 * num_integration_steps - 1)), 1,
                    2 * num_integration_steps - 1).astype(jnp.int32)


def _hmc_inner(key, state, step_size, params: HMCParams):
    if params.use_path:
        kernel = _dhmc.build_kernel(next_random_arg_fn=_next_index,
                                    integration_steps_fn=_steps_along_path)
        steps_params = (params.path_length.astype(step_size.dtype), step_size,
                        params.max_integration_steps)
    else:
        kernel = _dhmc.build_kernel(next_random_arg_fn=_next_index,
                                    integration_steps_fn=_steps_uniform)
        steps_params = (params.num_integration_steps,)
    new, info = kernel(key, state, params.target.logdensity, step_size, _unit_mass(state),
                       integration_steps_params=steps_params)
    return new, StepInfo(info.acceptance_rate.astype(step_size.dtype),
                         jnp.asarray(info.num_integration_steps).astype(jnp.int32),
                         info.is_divergent, step_size)


def _hmc_step(key, state, params: HMCParams):
    return tuned_step(_hmc_inner, key, state, params, params.target_acceptance)


HMC = Sampler(init=_hmc_init, step=_hmc_step, position=_position,
              finish_warmup=tuned_finish_warmup)


def hmc(target, num_integration_steps: int = 16, initial_step_size: float = 0.5,
        target_acceptance: float = 0.8, dtype=jnp.float32, path_length: float | None = None,
        max_integration_steps: int = 1024):
    """``(HMC, HMCParams)``: blackjax's dynamic HMC on ``target`` (a
    :class:`~.base.Whitened`) with a jittered trajectory length.

    A fixed path resonates with the near-harmonic dynamics of a whitened Gaussian (a path
    near pi returns the chain to where it started), so the length is jittered:

    - ``path_length=None``: ``1..2L-1`` leapfrog steps (mean about ``L =
      num_integration_steps``);
    - ``path_length=T``: integration time in ``[T/2, 3T/2]``, i.e.
      ``ceil(t / step_size)`` steps (capped at ``max_integration_steps``), following the
      step size as it adapts. For a whitened Gaussian target, ``T = pi/2`` is a quarter
      period: the end point is (nearly) independent of the start.

    The jitter is the iteration's Halton point, the same for every chain (as ChEES-HMC
    does, Hoffman, Radul & Sountsov 2021), not a draw per chain: vmapped chains run in
    lockstep, so each iteration costs the longest of the chains' trajectories, and with
    independent jitters that is close to ``3T/2`` for many chains (16 chains: ~1.44x
    the mean; on the 64x64 CT GMRF posterior 16 vmapped chains ran 93.4 s with a jitter
    per chain and 76.9 s with the shared one, ``benchmarks/results/samplers.md``). With
    ``path_length`` the count still follows each chain's own step size: after warmup the
    chains' dual-averaged steps differ by a few %, and so do their counts (16 chains on a
    400-dimensional standard normal: the lockstep maximum 1.05x the mean while sampling,
    1.93x during warmup, when the steps still swing); with ``num_integration_steps`` the
    counts are equal. Each transition still leaves the posterior invariant (the length
    does not depend on the state); the chains stay independent given the shared
    sequence.
    """
    L = check_int("num_integration_steps", num_integration_steps, 1)
    cap = check_int("max_integration_steps", max_integration_steps, 1)
    if path_length is not None:
        path_length = check_positive("path_length", path_length)
    return HMC, HMCParams(
        target, as_float(check_positive("step_size", initial_step_size), dtype),
        as_float(check_unit_interval("target_acceptance", target_acceptance), dtype),
        jnp.asarray(L, jnp.int32), as_float(path_length or 0.0, dtype),
        jnp.asarray(cap, jnp.int32), use_path=path_length is not None)


@operator_dataclass
class NUTSParams:
    """NUTS's settings; ``max_num_doublings`` sizes blackjax's trajectory buffers, so it
    is static."""

    target: Any
    initial_step_size: jax.Array
    target_acceptance: jax.Array
    step_size_jitter: jax.Array
    max_num_doublings: int = static_field(default=10)


def _nuts_inner(key, state, step_size, params: NUTSParams):
    k_eps, k_step = jax.random.split(key)
    jitter = params.step_size_jitter.astype(step_size.dtype)
    eps = step_size * (1.0 + jitter * jax.random.uniform(k_eps, (), step_size.dtype,
                                                         -1.0, 1.0))
    kernel = blackjax.nuts.build_kernel()
    new, info = kernel(k_step, state, params.target.logdensity, eps, _unit_mass(state),
                       params.max_num_doublings)
    capped = ((info.num_trajectory_expansions >= params.max_num_doublings)
              & ~info.is_turning & ~info.is_divergent)
    return new, StepInfo(info.acceptance_rate.astype(step_size.dtype),
                         info.num_integration_steps.astype(jnp.int32),
                         info.is_divergent, step_size, capped)


def _nuts_step(key, state, params: NUTSParams):
    return tuned_step(_nuts_inner, key, state, params, params.target_acceptance)


NUTS = Sampler(init=_nuts_init, step=_nuts_step, position=_position,
               finish_warmup=tuned_finish_warmup)


def nuts(target, max_num_doublings: int = 10, initial_step_size: float = 0.5,
         target_acceptance: float = 0.8, dtype=jnp.float32, step_size_jitter: float = 0.0):
    """``(NUTS, NUTSParams)``: blackjax NUTS on ``target`` (a :class:`~.base.Whitened`);
    counts the leapfrog steps of each trajectory.

    ``step_size_jitter`` draws each iteration's step uniformly in ``eps (1 +/- j)``.

    Note (missed U-turns, issue 11): after exact whitening every direction oscillates
    with the same period, about ``2 pi / eps`` leapfrog steps, and in high dimension the
    trajectory is close to a circle in the plane of ``(z, p)``. For a (sub)trajectory of
    ``m`` steps both of blackjax's U-turn products ``rho . p_left`` and ``rho . p_right``
    are then about ``sum_{n=0..m} cos(n eps)``, negative (a turn) only when
    ``m eps > pi`` and ``(m + 1) eps < 2 pi`` (mod ``2 pi``), and the checks come at
    ``m = 2^k - 1`` only. With ``2 pi / 32 < eps < pi / 15`` (0.196-0.209) there is no
    turn at 16 states (``15 eps < pi``) nor at 32 (they span a full period), so the tree
    doubles on to hundreds of steps; above 0.2094 it stops at 15, between 0.101 and
    0.196 at 31. Measured on the README's 64x64 posterior (``benchmarks/nuts_uturn.py``):
    one chain tuned to eps 0.195 / 0.214 took 31 / 15 steps on every iteration; one
    tuned to 0.198 (depth capped at 5) hit the cap on every iteration (the same seed
    with depth 10 did not finish 100 + 100 iterations in 15 minutes); near the band's
    edges the finite dimension blurs it (a chain at 0.2087 hit the cap 25 times in 500).
    Jitter only averages over the bad band (0.2, 0.4 gave 17-31 steps per draw on 16x16),
    so it is off by default. Stan's extra checks across the subtrees' boundaries would
    catch these turns but blackjax's iterative tree has none; instead ``sample`` caps
    the depth at 5 (31 steps, about one period) with the dense preconditioner, which
    changes nothing in the target (any maximum depth leaves NUTS exact) and costs the
    31-step chains nothing. HMC with a quarter-period path avoids the issue (on the 64x64
    benchmark both reach about the same ESS per gradient).

    Args:
        target: the whitened posterior (``logdensity``, ``to_image``, ``from_image``).
        max_num_doublings: maximum tree depth (``2^depth - 1`` leapfrog steps at most);
            static: it sizes blackjax's buffers.
        initial_step_size: start of the dual-averaging step-size adaptation.
        target_acceptance: the adaptation's target mean acceptance.
        dtype: floating dtype of the step-size settings.
        step_size_jitter: relative half-width ``j`` of the per-iteration step jitter.

    Returns:
        ``(NUTS, NUTSParams)``; each step's :class:`~.base.StepInfo` says in ``capped``
        whether the tree stopped at the maximum depth (no U-turn, no divergence).
    """
    depth = check_int("max_num_doublings", max_num_doublings, 1)
    try:
        jit_ok = 0.0 <= float(step_size_jitter) < 1.0
    except (TypeError, ValueError):
        jit_ok = False
    if not jit_ok:
        raise ValueError(f"'step_size_jitter' must be in [0, 1), got {step_size_jitter!r}")
    return NUTS, NUTSParams(
        target, as_float(check_positive("step_size", initial_step_size), dtype),
        as_float(check_unit_interval("target_acceptance", target_acceptance), dtype),
        as_float(step_size_jitter, dtype), max_num_doublings=depth)

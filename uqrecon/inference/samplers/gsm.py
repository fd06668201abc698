"""Exact sampler for TV and l1-wavelet posteriors: Gaussian scale mixtures + MH-corrected
perturbation-optimisation (method ``"gsm"``).

Target: ``p(x | y) ∝ exp(-tau/2 ||A x - y||^2 - (x-m)^T Q (x-m)/2 - sum_i w_i |(K x)_i|)``
with a Gaussian likelihood, optional Gaussian priors ``Q`` (GMRF, GaussianPrior) and one
norm penalty: isotropic or anisotropic TV (``K`` = finite differences, ``|.|`` the
Euclidean norm of each pixel's gradient or the absolute value of each difference) or l1
on orthonormal wavelet coefficients.

**Augmentation.** A Laplace factor is a Gaussian scale mixture: for a group ``g`` of
dimension ``d`` (1 for l1 / anisotropic TV, 2 for isotropic TV),
``exp(-w ||g||) ∝ ∫ N_d(g; 0, v I) Gamma(v; (d+1)/2, rate w^2/2) dv``. With latent
precisions ``lam_i = 1/v_i`` the joint ``p(x, lam | y)`` has the exact target as its
x-marginal, and both full conditionals are standard:

* ``lam_i | x ~ InverseGaussian(mean w_i / ||g_i||, shape w_i^2)`` (the same law for every
  ``d``), drawn exactly (Michael, Schucany & Haas 1976), independently per group;
* ``x | lam`` is Gaussian with precision ``P = tau A^T A + Q + K^T Λ K``.

**Image step, exact for any solver accuracy.** Drawing ``x | lam`` by
perturbation-optimisation needs ``P^{-1}`` applied once; a CG solve stopped early would
bias the draw. Instead the move is the reversible-jump PO of Gilavert, Moussaoui & Idier
(IEEE TSP 2015) in the form: draw ``ω = P x - b + ξ`` with ``ξ ~ N(0, P)`` (so
``(x, ω)`` has ``x``'s conditional as marginal), propose ``x' = s - x`` where ``s``
approximates ``P^{-1}(b + P x + ξ)`` by preconditioned CG started at zero (``s`` depends on
``ω`` only, so the map is an involution with unit Jacobian), and accept with probability
``min(1, exp(ρ^T (x' - x)))`` where ``ρ`` is the true residual of the solve. An exact
solve gives ``ρ = 0``, acceptance one and the PO draw; an inexact one is corrected by the
Metropolis test, so the chain is exact whatever ``tol`` is -- ``tol`` only trades CG
iterations against acceptance. (Derivation: ``log p(x, ω) = -x^T P x + x^T r0 + c(ω)``
with ``r0 = b + P x + ξ`` fixed by ``ω``; substituting ``x' = s - x`` and ``P s = r0 - ρ``
gives the log ratio ``ρ^T (x' - x)``.)

**Preconditioner.** ``P`` mixes the operator's ill-conditioning (for parallel-beam CT,
``A^T A`` is close to a ``1/|omega|`` filter) with the latent weights, which vary over
orders of magnitude (large where differences are small). For TV the preconditioner is a
circulant model of ``tau A^T A + lam_bar D^T D`` (symbol from the point-spread function of
``A^T A``, measured once at set-up; ``lam_bar`` the geometric mean of ``lam``), scaled on
both sides by the exact diagonal of ``P`` relative to the circulant's
(``M = S^{1/2} C S^{1/2}``). Where the operator pair is applied (large images) that is the
smoother of a two-level preconditioner whose coarse space is piecewise constant on
blocks of pixels (option ``coarse``; see :func:`_two_level`): the latent weights pin the
differences inside flat regions, and modes nearly constant there are what the one-level
preconditioner leaves slow (2.5x fewer CG iterations at 128x128). For orthonormal
wavelets the preconditioner is diagonal in the wavelet domain: ``tau c_j + lam_j`` with
``c_j`` the per-subband diagonal of ``W A^T A W^T``.

**HMC moves (option ``hmc_moves``).** The Gibbs alternation moves edges slowly: where
an edge's position is uncertain, one difference is large (small ``lam``) and its
neighbour near zero (large ``lam``), and ``x | lam`` keeps the pixel with the side it is
pinned to (``benchmarks/results/gold_tv.md``, section 6). After each sweep the sampler can
add HMC trajectories on the image's *marginal* posterior (``lam`` is not part of the
state, so this is a valid kernel on ``x``): whitened by the one-level model of ``P`` at
the anchor's expected latent precisions, driven by the gradient of a Huber-smoothed
penalty, and accepted on the exact (non-smooth) density, which keeps them exact (see
:func:`_exact_potential`). Their step is tuned by dual averaging in warmup.

Noise and Gaussian-prior precisions with Gamma hyperpriors are drawn from their conjugate
conditionals given ``x`` (the augmentation does not change those).

The state keeps only the image (and hyperparameters): ``lam`` is redrawn from ``x`` at the
start of each step, so a Gibbs sweep is ``lam | x`` then ``x | lam``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation

from ...linalg import pcg
from ...operators.base import operator_dataclass, static_field
from .base import Sampler, StepInfo, dual_averaging_final, dual_averaging_update
from .gibbs import gamma_draws

__all__ = ["GSMParams", "GSMState", "gsm_sampler", "gsm_params", "inverse_gaussian",
           "mh_po_move", "coarse_blocks",
           "check_gsm_posterior", "tv_diagonal"]


# --------------------------------------------------------------------------------------
# random variates
# --------------------------------------------------------------------------------------
def inverse_gaussian(key, mean, shape):
    """Inverse-Gaussian(mean, shape) draws (Michael, Schucany & Haas 1976), elementwise.

    Written to stay finite in float32 for means up to ~1e30: the smaller root is
    ``mean * 4 s / (sqrt(z + 4 s) + sqrt(z))^2`` with ``z = mean nu^2``, ``s = shape``
    (algebraically the textbook ``mean + mean^2 nu^2/(2s) - ...``, without its
    cancellation); the larger one, ``mean^2 / root``, is taken with probability
    ``root / (mean + root)``.
    """
    k1, k2 = jax.random.split(key)
    nu = jax.random.normal(k1, mean.shape, mean.dtype)
    z = mean * nu * nu
    root = mean * (4.0 * shape) / (jnp.sqrt(z + 4.0 * shape) + jnp.sqrt(z)) ** 2
    u = jax.random.uniform(k2, mean.shape, mean.dtype)
    return jnp.where(u * (mean + root) <= mean, root, mean * (mean / root))


# --------------------------------------------------------------------------------------
# model pieces
# --------------------------------------------------------------------------------------
def check_gsm_posterior(post):
    """Raise a ValueError naming what is unsupported unless ``post`` has a real Gaussian
    likelihood, one TV or WaveletL1 penalty, and otherwise only Gaussian priors."""
    from ...models.tv import TV
    from ...models.wavelets import WaveletL1

    lik = post.likelihood
    if not getattr(lik, "is_gaussian", False):
        raise ValueError("method='gsm' needs a Gaussian likelihood (the image step is an "
                         f"exact Gaussian draw); got {type(lik).__name__}")
    if jnp.issubdtype(jnp.dtype(post.dtype), jnp.complexfloating):
        raise ValueError("method='gsm' supports real images only")
    if post.constraint is not None:
        raise ValueError("method='gsm' cannot keep a constraint (x | lam would be a truncated "
                         "Gaussian in every pixel); drop the constraint or use "
                         "method='myula'/'skrock' (biased) with it")
    if len(post.nonsmooth) != 1 or not isinstance(post.nonsmooth[0], (TV, WaveletL1)):
        raise ValueError("method='gsm' needs exactly one non-smooth term, a TV or a "
                         f"WaveletL1 prior; got {[type(t).__name__ for t in post.nonsmooth]}")
    others = [p for p in post.smooth_priors if not getattr(p, "is_gaussian", False)]
    if others:
        raise ValueError("method='gsm' allows only Gaussian priors beside the TV/l1 term; "
                         f"got {[type(p).__name__ for p in others]}")


def _penalty(post):
    return post.nonsmooth[0]


def _gaussian_priors(post):
    return tuple(p for p in post.smooth_priors if getattr(p, "is_gaussian", False))


def _lam_apply(term, lam, z):
    """``Λ z`` in K's range: a group's precision multiplies all of its components."""
    return lam[None] * z if term.grouped else lam * z


def tv_diagonal(lam_components):
    """``diag(D^T Λ D)`` for forward differences with the Neumann boundary, given the
    per-component weights ``(ndim, *shape)``: each difference ``x_{p+e} - x_p`` puts its
    weight on both of its pixels; the structurally zero last difference puts none."""
    out = jnp.zeros(lam_components.shape[1:], lam_components.dtype)
    for a in range(lam_components.shape[0]):
        w = jax.lax.slice_in_dim(lam_components[a], 0, lam_components.shape[a + 1] - 1,
                                 axis=a)
        pad_lo = [(0, 0)] * w.ndim
        pad_hi = [(0, 0)] * w.ndim
        pad_lo[a], pad_hi[a] = (1, 0), (0, 1)
        out = out + jnp.pad(w, pad_hi) + jnp.pad(w, pad_lo)
    return out


def _real_differences(shape):
    """``(ndim, *shape)`` mask of the differences that exist: component ``a`` at the last
    index along axis ``a`` is the Neumann boundary's structural zero."""
    mask = np.ones((len(shape), *shape), bool)
    for a, s in enumerate(shape):
        index = [a] + [slice(None)] * len(shape)
        index[a + 1] = s - 1
        mask[tuple(index)] = False
    return mask


def _difference_symbol(shape, dtype):
    """Periodic symbol of ``D^T D`` (the 2*ndim-point Laplacian)."""
    sym = 0.0
    for a, s in enumerate(shape):
        f = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.fft.fftfreq(s))
        sym = sym + f.reshape([-1 if i == a else 1 for i in range(len(shape))])
    return jnp.asarray(sym, dtype)


# --------------------------------------------------------------------------------------
# the two-level preconditioner's coarse space (TV)
# --------------------------------------------------------------------------------------
# Largest coarse space "auto" picks, and the largest one accepted. "auto" also keeps
# at least GSM_COARSE_PIXELS_PER_BLOCK pixels per block: the coarse matrix is factorised
# and inverted in every sweep (O(nc^3), one-threaded LAPACK, chains one after another)
# and its inverse read twice per CG iteration (O(nc^2) per chain), which at nc = 1024
# outweighed the CG iterations it saved below 256x256. Measured 4-chain sweeps with 5
# HMC moves (sparse-view CT, TV 10; benchmarks/gold_tv.py --parts coarse, gold_tv.md 8):
#   64x64:   block 2 (nc 1024) 182 ms, 36 CG its; 4 (256) 56 ms, 41; 5 (169) 53 ms, 44
#   128x128: block 4 (1024) 390 ms, 53;  5 (676) 290-300 ms, 59;  6-8 (484-256) ~300 ms
#   256x256: block 7 (1369) 2289 ms, 73; 8 (1024) 2205 ms, 83; 10 (676) 2544 ms, 88
GSM_COARSE_AUTO = 1024
GSM_COARSE_PIXELS_PER_BLOCK = 24
GSM_COARSE_MAX = 4096


def coarse_blocks(shape, coarse="auto"):
    """Block size per axis of the two-level preconditioner's aggregates, or None (off).

    Args:
        shape: the image shape.
        coarse: ``"auto"`` (the smallest equal block size >= 2 giving at most
            ``min(GSM_COARSE_AUTO, pixels / GSM_COARSE_PIXELS_PER_BLOCK)`` blocks: 5 at
            64x64 and 128x128, 8 at 256x256), a positive int (that block size on every
            axis; edge blocks are cut short), or 0 / None (one-level preconditioner
            only).

    Returns:
        A tuple of block sizes, or None.
    """
    is_int = isinstance(coarse, (int, np.integer)) and not isinstance(coarse, bool)
    if coarse is None or (is_int and coarse == 0):
        return None
    shape = tuple(int(s) for s in shape)
    if isinstance(coarse, str) and coarse == "auto":
        most = min(GSM_COARSE_AUTO, math.prod(shape) // GSM_COARSE_PIXELS_PER_BLOCK)
        b = 2
        while math.prod(-(-s // b) for s in shape) > max(most, 1):
            b += 1
        return (b,) * len(shape)
    if not is_int or coarse < 1:
        raise ValueError(f"'coarse' must be 'auto', 0 (off) or a positive block size, "
                         f"got {coarse!r}")
    nc = math.prod(-(-s // int(coarse)) for s in shape)
    if nc > GSM_COARSE_MAX:
        raise ValueError(f"'coarse'={coarse} gives {nc} coarse blocks for an image of "
                         f"shape {shape}; at most {GSM_COARSE_MAX} (a larger block size)")
    return (int(coarse),) * len(shape)


@functools.lru_cache(maxsize=16)
def _coarse_layout(shape, blocks):
    """Block index of every pixel (flat), the number of blocks, and per axis the TV
    differences that cross a block boundary: ``(flat index in that axis's component,
    block of the first pixel, block of the second)``."""
    counts = tuple(-(-s // b) for s, b in zip(shape, blocks))
    grid = np.indices(shape)
    ids = np.ravel_multi_index(tuple(g // b for g, b in zip(grid, blocks)), counts)
    crossings = []
    for a, (s, b) in enumerate(zip(shape, blocks)):
        p = grid[a]
        cross = (p < s - 1) & ((p + 1) % b == 0)
        first = ids[cross]
        nxt = np.roll(ids, -1, axis=a)[cross]
        crossings.append((np.flatnonzero(cross), first, nxt))
    return ids.reshape(-1), int(np.prod(counts)), tuple(crossings)


def _aggregate(r, blocks):
    """``Z^T r``: the sum of ``r`` over each block (flat, C order), as a reshape-sum of
    ``r`` zero-padded to whole blocks (a scatter is several times slower on CPU)."""
    counts = [-(-s // b) for s, b in zip(r.shape, blocks)]
    r = jnp.pad(r, [(0, c * b - s) for s, c, b in zip(r.shape, counts, blocks)])
    split = [d for cb in zip(counts, blocks) for d in cb]
    return r.reshape(split).sum(tuple(range(1, 2 * len(blocks), 2))).reshape(-1)


def _expand(c, shape, blocks):
    """``Z c``: each block's value on its pixels."""
    counts = [-(-s // b) for s, b in zip(shape, blocks)]
    c = c.reshape([d for n in counts for d in (n, 1)])
    c = jnp.broadcast_to(c, [d for cb in zip(counts, blocks) for d in cb])
    c = c.reshape([n * b for n, b in zip(counts, blocks)])
    return c[tuple(slice(0, s) for s in shape)]


def _circulant(symbol, v):
    """``C v`` for the real circulant with (full FFT) symbol ``symbol``."""
    half = symbol[..., : v.shape[-1] // 2 + 1]
    return jnp.fft.irfftn(jnp.fft.rfftn(v) * half, s=v.shape).astype(v.dtype)


@functools.partial(jax.jit, static_argnames=("blocks",))
def _coarse_circulant(symbol, blocks):
    """``Z^T C Z`` (``nc x nc``) for the circulant ``C`` with ``symbol`` and the block
    aggregates ``Z``: one FFT pair per block, at set-up."""
    shape = tuple(symbol.shape)
    ids, nc, _ = _coarse_layout(shape, blocks)
    ids = jnp.asarray(ids)

    def column(j):
        z = (ids == j).astype(symbol.dtype).reshape(shape)
        return _aggregate(_circulant(symbol, z), blocks)

    cols = jax.lax.map(column, jnp.arange(nc), batch_size=64)
    return 0.5 * (cols + cols.T)


def _coarse_laplacian(lam_c, blocks, nc_dtype):
    """``Z^T D^T Λ D Z`` (``nc x nc``): each TV difference that crosses a block boundary
    couples its two blocks with its weight; differences inside a block cancel."""
    shape = tuple(lam_c.shape[1:])
    _, nc, crossings = _coarse_layout(shape, blocks)
    L = jnp.zeros((nc, nc), nc_dtype)
    for a, (idx, p, q) in enumerate(crossings):
        w = lam_c[a].reshape(-1)[idx].astype(nc_dtype)
        L = L.at[p, p].add(w).at[q, q].add(w).at[p, q].add(-w).at[q, p].add(-w)
    return L


# --------------------------------------------------------------------------------------
# params and state
# --------------------------------------------------------------------------------------
@operator_dataclass
class GSMParams:
    """What one GSM step needs beside its state: the posterior and the preconditioner.

    ``lik_symbol``: real FFT symbol of ``A^T A`` (TV) or, for wavelets, the per-coefficient
    diagonal of ``W A^T A W^T``; ``lik_diag``: the value of ``diag(A^T A)`` used to scale
    the circulant; ``tol`` the CG relative residual, ``maxiter`` its cap; ``normal``: the
    dense ``Re(A^H A)`` (``n x n``) on small images, where one matrix product is several
    times cheaper than a projector pair, else None; ``coarse_circulant``: ``Z^T C Z`` of
    the two-level preconditioner (``C`` the circulant model of ``A^T A``, ``Z`` the block
    aggregates of size ``coarse_blocks``), None for the one-level preconditioner.
    """

    posterior: object
    lik_symbol: jax.Array
    lik_diag: jax.Array
    tol: jax.Array
    maxiter: jax.Array
    normal: jax.Array | None = None
    coarse_circulant: jax.Array | None = None
    hmc_smoothing: jax.Array | None = None
    hmc_step_size: jax.Array | None = None
    kind: str = static_field(default="tv")
    coarse_blocks: tuple | None = static_field(default=None)
    hmc_moves: int = static_field(default=0)
    hmc_steps: int = static_field(default=10)


class GSMState(NamedTuple):
    x: jax.Array
    hypers: dict
    anchor: jax.Array         # CG starts at 2*anchor: the chain's own image in warmup, fixed after
    adapting: jax.Array       # bool: warmup (anchor follows x) or sampling (anchor frozen)
    log_accept: jax.Array     # log acceptance ratio of the last image move
    cg_iterations: jax.Array  # CG iterations of the last image move
    hmc_step: jax.Array       # step size of the HMC moves (whitened units)
    hmc_da: object            # its dual-averaging state (warmup)
    hmc_accept: jax.Array     # mean acceptance probability of the last sweep's HMC moves


def _normal(lik, v):
    """``Re(A^H A v)`` in the image's dtype."""
    g = lik.operator.adjoint(lik.operator(v))
    return jnp.real(g).astype(v.dtype)


def _precision(post, lam, v, normal=None):
    """``P v = tau A^T A v + Q v + K^T Λ K v`` (``A^T A`` from the dense ``normal`` when
    given: the same matrix, formed once at set-up)."""
    lik, term = post.likelihood, _penalty(post)
    K = term.analysis_operator
    ata = (_normal(lik, v) if normal is None
           else (normal @ v.reshape(-1)).reshape(v.shape).astype(v.dtype))
    out = lik.noise_precision.astype(v.dtype) * ata
    for p in _gaussian_priors(post):
        out = out + p.precision(v)
    return out + K.adjoint(_lam_apply(term, lam, K(v))).astype(v.dtype)


def _rhs(post, dtype):
    """``b = tau A^T y + Q m``."""
    lik = post.likelihood
    aty = jnp.real(lik.operator.adjoint(lik.data)).astype(dtype)
    b = lik.noise_precision.astype(dtype) * aty
    for p in _gaussian_priors(post):
        b = b + p.precision(jnp.broadcast_to(p.mean, post.shape).astype(dtype))
    return b


def _perturbation(key, post, lam, dtype):
    """``ξ ~ N(0, P)``: ``sqrt(tau) A^T e1 + sum L^T e2 + K^T Λ^{1/2} e3``."""
    lik, term = post.likelihood, _penalty(post)
    A, K = lik.operator, term.analysis_operator
    k1, k2, k3, k4 = jax.random.split(key, 4)
    e1 = jax.random.normal(k1, A.range_shape, dtype)
    if jnp.issubdtype(jnp.dtype(A.range_dtype), jnp.complexfloating):
        e1 = e1 + 1j * jax.random.normal(k4, A.range_shape, dtype)
    xi = jnp.sqrt(lik.noise_precision.astype(dtype)) * jnp.real(A.adjoint(e1)).astype(dtype)
    for i, p in enumerate(_gaussian_priors(post)):
        L = p.precision_sqrt
        xi = xi + L.adjoint(jax.random.normal(jax.random.fold_in(k2, i), L.range_shape,
                                              dtype)).astype(dtype)
    e3 = jax.random.normal(k3, K.range_shape, dtype)
    return xi + K.adjoint(_lam_apply(term, jnp.sqrt(lam), e3)).astype(dtype)


def _lam_mean(post, x):
    """``(E[lam | x] = w / ||g||, w)`` per group (``w`` replaced by 1 where it is 0)."""
    term = _penalty(post)
    dtype = x.dtype
    mag = term.magnitude(term.analysis_operator(x)).astype(dtype)
    w = jnp.broadcast_to(term.weights(dtype), mag.shape)
    # ||g|| = 0 happens only for structurally zero rows of K (TV's last differences),
    # where lam multiplies zeros; the floor keeps the value finite there.
    tiny = jnp.asarray(1e-30 if dtype == jnp.float64 else 1e-20, dtype)
    return jnp.where(w > 0, w, 1.0) / jnp.maximum(mag, tiny), w


def _draw_lam(key, post, x):
    """``lam | x``: independent inverse-Gaussian precisions, zero where the weight is."""
    dtype = x.dtype
    mean, w = _lam_mean(post, x)
    lam = inverse_gaussian(key, mean, jnp.where(w > 0, w * w, 1.0))
    big = jnp.asarray(jnp.finfo(dtype).max ** 0.5, dtype)
    return jnp.where(w > 0, jnp.minimum(lam, big), 0.0)


def _scaled_circulant(params, post, lam, tau, dtype):
    """The one-level TV model ``M = S C S`` of ``P`` at latent precisions ``lam``:
    ``C`` circulant with symbol ``tau * sym(A^T A) + lam_bar * sym(D^T D)`` (``lam_bar``
    the geometric mean of ``lam``), ``S`` the diagonal scaling that gives ``M`` the exact
    diagonal of ``P``. Returns ``(lam_c, symbol, scale)``, ``lam_c`` the per-component
    weights ``(ndim, *shape)``."""
    term = _penalty(post)
    shape = post.shape
    lam_c = jnp.broadcast_to(lam[None], (len(shape), *shape)) if term.grouped else lam
    # the mean over real differences only: a structurally zero last difference has
    # ||g|| = 0 and a huge (clipped) lam that would inflate the geometric mean
    pos = (lam_c > 0) & _real_differences(shape)
    lam_bar = jnp.exp(jnp.sum(jnp.where(pos, jnp.log(jnp.where(pos, lam_c, 1.0)), 0.0))
                      / jnp.maximum(jnp.sum(pos), 1))
    lik_diag = tau * params.lik_diag.astype(dtype)
    symbol = tau * params.lik_symbol.astype(dtype) + lam_bar * _difference_symbol(shape, dtype)
    diag_p = lik_diag + tv_diagonal(lam_c)
    for p in _gaussian_priors(post):
        q = p.precision(jnp.ones(shape, dtype))
        symbol, diag_p = symbol + jnp.mean(q), diag_p + jnp.abs(q)
    scale = jnp.sqrt(diag_p / (lik_diag + 2.0 * len(shape) * lam_bar))
    return lam_c, symbol, scale


def _wavelet_diagonal(params, post, lam, tau, dtype):
    """The wavelet model ``M = W^T diag(d) W`` of ``P``: ``d = tau c_j + lam_j`` (``c_j``
    the per-subband diagonal of ``W A^T A W^T``) plus each Gaussian prior's mean
    diagonal (roughly). Returns ``(W, d)``."""
    d = tau * params.lik_symbol.astype(dtype) + lam
    for p in _gaussian_priors(post):
        d = d + p.precision(jnp.ones(post.shape, dtype)).mean()
    return _penalty(post).analysis_operator, d


def _preconditioner(params, post, lam, tau, dtype):
    """``r -> M^{-1} r`` (see the module docstring)."""
    if params.kind == "wavelet":
        W, d = _wavelet_diagonal(params, post, lam, tau, dtype)
        return lambda r: W.adjoint(W(r) / d).astype(dtype)
    lam_c, symbol, scale = _scaled_circulant(params, post, lam, tau, dtype)

    def apply(r):
        z = jnp.fft.irfftn(jnp.fft.rfftn(r / scale) / symbol[..., : r.shape[-1] // 2 + 1],
                           s=r.shape)
        return (z / scale).astype(dtype)

    if params.coarse_blocks is None:
        return apply
    return _two_level(params, post, lam, lam_c, tau, apply)


@jax.custom_batching.sequential_vmap
def _coarse_inverse(Kc):
    """``Kc^{-1}`` (Jacobi-scaled Cholesky), or zeros if the float32 factorisation fails.

    The explicit inverse, once per sweep: two matrix-vector products per CG iteration are
    cheaper than two triangular solves. Vmapped chains factorise one after another
    (``sequential_vmap``), not as one batched LAPACK call: with chains sharded over
    several host devices, the batched 1024 x 1024 Cholesky deadlocked XLA's CPU thread
    pool (two devices, two cores: GSM at 64x64 hung), and on one device the two take the
    same time.
    """
    d = jnp.sqrt(jnp.diagonal(Kc))
    eye = jnp.eye(Kc.shape[0], dtype=Kc.dtype)
    chol = jnp.linalg.cholesky(Kc / d[:, None] / d[None, :])
    inv = jax.scipy.linalg.cho_solve((chol, True), eye) / d[:, None] / d[None, :]
    ok = jnp.all(jnp.isfinite(inv))
    return jnp.where(ok, 0.5 * (inv + inv.T), 0.0)


def _two_level(params, post, lam, lam_c, tau, smoother):
    """The balanced two-level preconditioner: ``E = Z Kc^{-1} Z^T`` on block aggregates
    ``Z`` with ``Kc = Z^T P~ Z``, ``P~ = tau C + D^T Λ D`` (``C`` the circulant model of
    ``A^T A``; Gaussian priors left to the smoother), and
    ``M^{-1} = E + (I - E P~) S (I - P~ E)`` with ``S`` the one-level preconditioner.

    Why: large latent weights pin the differences inside flat regions, so the slowest
    modes of the one-level preconditioned system are nearly constant over such regions,
    which a pixel-wise scaling cannot see; piecewise-constant aggregates carry them.
    Measured on sparse-view CT (30 views, TV 10, tol 1e-4) at a chain's own latent
    weights: 91 -> 42 CG iterations at 64x64 (2x2 blocks: 36), 144 -> 52 and 99 -> 50 at
    128x128 (4x4 blocks; 8x8: 85). An iteration costs ~25 % more at 128x128 (15 vs 12 ms:
    three FFT pairs, two stencil pairs and two ``nc x nc`` products beside the operator
    pair), and a sweep adds the coarse Cholesky and inverse (``nc`` = 1024: about two
    operator pairs' worth). ``M`` is symmetric positive definite for
    any SPD ``Kc`` and ``S``; a coarse Cholesky that fails in float32 drops the coarse
    term (then ``M = S``). The sampler is exact whatever ``M`` is (the Metropolis test).
    """
    term = _penalty(post)
    K = term.analysis_operator
    shape = tuple(post.shape)
    dtype = lam.dtype
    blocks = params.coarse_blocks
    Kc = tau * params.coarse_circulant.astype(dtype) + _coarse_laplacian(lam_c, blocks, dtype)
    inv = _coarse_inverse(Kc)
    symbol = params.lik_symbol.astype(dtype)

    def coarse(r):
        return _expand(inv @ _aggregate(r, blocks), shape, blocks).astype(dtype)

    def model(v):
        return (tau * _circulant(symbol, v)
                + K.adjoint(_lam_apply(term, lam, K(v))).astype(dtype))

    def apply(r):
        q = coarse(r)
        y = smoother(r - model(q))
        return q + y - coarse(model(y))

    return apply


def mh_po_move(key, x, anchor, matvec, rhs, xi, precond, tol, maxiter):
    """The Metropolis-corrected perturbation-optimisation move of ``x ~ N(P^{-1} b, P^{-1})``
    (Gilavert, Moussaoui & Idier 2015; derivation in the module docstring): exact for any
    CG accuracy.

    CG solves ``P s = r0``, ``r0 = b + P x + xi``, from ``2 * anchor`` (``s`` is about
    ``mu + x + P^{-1} xi``, about ``2 x``); ``x' = s - x`` is accepted with probability
    ``min(1, exp(rho^T (x' - x)))``, ``rho`` the true residual. The move is an involution
    only if the CG start does not depend on ``x``: the caller passes an ``anchor`` fixed
    during sampling (in warmup it may follow ``x``).

    Args:
        key: PRNG key of the accept/reject test.
        x: the current image.
        anchor: CG starts at ``2 * anchor``.
        matvec: ``v -> P v``.
        rhs: ``b``.
        xi: a draw of ``N(0, P)``.
        precond: ``r -> M^{-1} r``.
        tol: CG relative residual tolerance; maxiter: its iteration cap.

    Returns:
        ``(x_next, log_ratio, cg_iterations)``.
    """
    dtype = x.dtype
    r0 = rhs + matvec(x) + xi
    start = 2.0 * anchor
    d, iters, _, _, _ = pcg(matvec, r0 - matvec(start), precond, tol, maxiter)
    s = start + d
    x_new = s - x
    rho = r0 - matvec(s)                     # the true residual, not CG's recursion
    log_ratio = jnp.vdot(rho, x_new - x).real
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf).astype(dtype)
    accept = jnp.log(jax.random.uniform(key, (), dtype)) < log_ratio
    return jnp.where(accept, x_new, x), log_ratio, iters


# --------------------------------------------------------------------------------------
# HMC moves on the marginal posterior (the edges GSM moves slowly)
# --------------------------------------------------------------------------------------
# Dual averaging's target for the HMC moves' acceptance (Beskos et al. 2013's 0.651 for
# high-dimensional HMC); measured at 64x64 sparse-view CT, step 0.2: acceptance 0.65.
GSM_HMC_TARGET = 0.65

# Leapfrog steps per HMC trajectory, and the Huber parameter of their driving gradient
# relative to the Laplace factor's scale 1/w. Measured at 64x64
# sparse-view CT (15 views, TV 10, 4 chains): 10 steps at step 0.2 give acceptance 0.65
# with smoothing 1e-3 = 0.01 / w.
GSM_HMC_STEPS = 10
GSM_HMC_SMOOTHING = 0.01


def default_hmc_step(n: int) -> float:
    """Initial HMC step in whitened units for ``n`` pixels: 0.2 at 4096 (the measured
    value above), scaled as ``n^(-1/4)`` (HMC's optimal step in high dimension)."""
    return 0.2 * (4096.0 / n) ** 0.25


@jax.custom_jvp
def _exact_potential(x, post, smoothing):
    """The exact potential of ``post`` whose *derivative* (in ``x`` only) is that of the
    surrogate: likelihood, Gaussian priors and the Huber-smoothed norm penalty (see the
    jvp rule below).

    Leapfrog is volume-preserving and reversible whatever vector field drives it, so HMC
    whose Metropolis test uses the exact energy is exact for the non-smooth posterior
    while its trajectories follow the smoothed gradient (a surrogate-trajectory HMC):
    the smoothing changes only the acceptance rate. ``post`` and ``smoothing`` are
    treated as constants (their tangents are ignored).
    """
    return post.potential(x)


@_exact_potential.defjvp
def _exact_potential_jvp(primals, tangents):
    # The smooth part's value and gradient come from one pass: evaluating post.potential
    # beside a separate gradient of the surrogate ran the projector's forward pass twice
    # (XLA does not merge them), 1.57x the cost of a leapfrog gradient at 128x128.
    x, post, smoothing = primals
    term = _penalty(post)
    smooth, grad = jax.value_and_grad(post.smooth_potential)(x)
    grad = grad + jax.grad(term.smoothed(smoothing).potential)(x)
    value = smooth + term.potential(x)   # = post.potential(x): GSM posteriors have no constraint
    return value, jnp.vdot(grad, tangents[0]).real.astype(x.dtype)


def _metric_weights(post, anchor):
    """Latent precisions for the HMC moves' metric: ``E[lam | anchor] = w / ||g||`` at the
    anchor image, clipped at its 99th percentile (a single image's near-zero differences
    would otherwise make a few weights arbitrarily large). A function of the anchor only,
    which is frozen after warmup: the metric must not depend on the chain's state."""
    mean, w = _lam_mean(post, anchor)
    lam = jnp.where(w > 0, mean, 0.0)
    return jnp.minimum(lam, jnp.quantile(lam, 0.99))


def _whitening(params, post, anchor, tau):
    """``z -> W z`` with ``W W^T = M^{-1}``, ``M`` the model of ``P`` at the anchor's latent
    precisions that the PO move's preconditioner uses: for TV the scaled circulant
    ``M = S C S``, ``W = S^{-1} C^{-1/2}`` (one FFT pair); for wavelets
    ``M = W_a^T diag(d) W_a``, ``W = W_a^T diag(d)^{-1/2} W_a``."""
    dtype = anchor.dtype
    lam = _metric_weights(post, anchor)
    if params.kind == "wavelet":    # M = W^T diag(d) W: its symmetric root in the basis
        W, d = _wavelet_diagonal(params, post, lam, tau, dtype)
        return lambda z: W.adjoint(W(z) / jnp.sqrt(d)).astype(dtype)
    _, symbol, scale = _scaled_circulant(params, post, lam, tau, dtype)
    root = jnp.sqrt(symbol[..., : anchor.shape[-1] // 2 + 1])

    def apply(z):
        v = jnp.fft.irfftn(jnp.fft.rfftn(z) / root, s=z.shape)
        return (v / scale).astype(dtype)

    return apply


def _hmc_move(key, x, post, whiten, step_size, num_steps, smoothing):
    """One HMC trajectory (blackjax) on whitened coordinates ``x + W z`` of the exact
    marginal posterior, driven by the smoothed gradient. Returns ``(x', acceptance
    probability, divergent)``."""
    dtype = x.dtype
    k_jit, k_move = jax.random.split(key)
    # a step jittered by +-20 % (independent of the state) breaks periodic trajectories
    eps = step_size * jax.random.uniform(k_jit, (), dtype, 0.8, 1.2)

    def logdensity(z):
        return -_exact_potential(x + whiten(z), post, smoothing)

    kernel = blackjax.hmc(logdensity, eps, jnp.ones(x.size, dtype), num_steps)
    state, info = kernel.step(k_move, kernel.init(jnp.zeros_like(x)))
    acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
    return x + whiten(state.position), acc.astype(dtype), info.is_divergent


def _hmc_moves(key, x, anchor, state, post, params, tau):
    """``params.hmc_moves`` HMC trajectories from ``x`` with the metric of ``anchor``; in
    warmup the step size follows dual averaging on their mean acceptance. Returns
    ``(x, step, da, mean acceptance, any divergent)``."""
    whiten = _whitening(params, post, anchor, tau)

    def body(x, k):
        x, acc, div = _hmc_move(k, x, post, whiten, state.hmc_step, params.hmc_steps,
                                params.hmc_smoothing.astype(x.dtype))
        return x, (acc, div)

    x, (acc, div) = jax.lax.scan(body, x, jax.random.split(key, params.hmc_moves))
    mean_acc = jnp.mean(acc)
    da, step = dual_averaging_update(state.hmc_da, state.hmc_step, mean_acc,
                                     state.adapting, GSM_HMC_TARGET)
    return x, step, da, mean_acc, jnp.any(div)


# --------------------------------------------------------------------------------------
# the kernel (module-level functions: compiled once per problem shape)
# --------------------------------------------------------------------------------------
def gsm_init(key, x, params):
    post = params.posterior
    hypers = {k: jnp.asarray(v, x.dtype) for k, v in post.hyperparameters.items()
              if k in post.hyperpriors}
    zero = jnp.zeros((), x.dtype)
    step = jnp.asarray(params.hmc_step_size, x.dtype)
    da_init, _, _ = dual_averaging_adaptation(GSM_HMC_TARGET)
    return GSMState(x, hypers, x, jnp.bool_(True), zero, jnp.int32(0), step, da_init(step),
                    jnp.ones((), x.dtype))


def gsm_finish_warmup(state, params):
    """Freeze the CG starting point (and the HMC moves' metric) at the last warmup image:
    from here on ``s`` depends on ``r0`` only, as the exactness argument needs; freeze
    the HMC step at its dual-averaged value (with no warmup step taken, keep the
    initial one)."""
    return state._replace(anchor=state.x, adapting=jnp.bool_(False),
                          hmc_step=dual_averaging_final(state.hmc_da, state.hmc_step))


def gsm_step(key, state, params):
    """One sweep: hyperparameters | x, lam | x, the MH-corrected PO move of x | lam, then
    (``params.hmc_moves`` > 0) that many HMC moves on the marginal posterior of x."""
    x = state.x
    dtype = x.dtype
    k_h, k_lam, k_xi, k_u = jax.random.split(key, 4)
    k_hmc = jax.random.fold_in(key, 4)
    post = params.posterior
    hypers = state.hypers
    if hypers:
        hypers = {**hypers, **gamma_draws(k_h, post.conditionals(x), dtype)}
        post = post.with_hyperparameters(**hypers)
    lam = _draw_lam(k_lam, post, x)
    tau = post.likelihood.noise_precision.astype(dtype)
    matvec = lambda v: _precision(post, lam, v, params.normal)
    precond = _preconditioner(params, post, lam, tau, dtype)
    # in warmup the anchor follows x; after it, it is frozen (see mh_po_move)
    anchor = jnp.where(state.adapting, x, state.anchor)
    x, log_ratio, iters = mh_po_move(k_u, x, anchor, matvec, _rhs(post, dtype),
                                     _perturbation(k_xi, post, lam, dtype), precond,
                                     params.tol, params.maxiter)
    acc_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    grads = iters + 3
    divergent = iters >= params.maxiter
    step, da, hmc_acc = state.hmc_step, state.hmc_da, state.hmc_accept
    if params.hmc_moves:
        x, step, da, hmc_acc, hmc_div = _hmc_moves(k_hmc, x, anchor, state, post, params, tau)
        grads = grads + params.hmc_moves * (params.hmc_steps + 1)
        divergent = divergent | hmc_div
    info = StepInfo(acceptance=acc_prob.astype(dtype),
                    num_grad_evals=grads.astype(jnp.int32), divergent=divergent,
                    step_size=(step if params.hmc_moves else jnp.asarray(params.tol, dtype)))
    return GSMState(x, hypers, state.anchor, state.adapting, log_ratio.astype(dtype),
                    iters.astype(jnp.int32), step, da, hmc_acc), info


def gsm_position(state, params):
    return state.x


def gsm_trace(state, params):
    out = {k: v for k, v in state.hypers.items()}
    out["cg_iterations"] = state.cg_iterations
    if params.hmc_moves:
        out["hmc_acceptance"] = state.hmc_accept
    return out


GSM = Sampler(init=gsm_init, step=gsm_step, position=gsm_position,
              finish_warmup=gsm_finish_warmup, trace=gsm_trace, one_blas_thread=True)


def gsm_sampler() -> Sampler:
    """The GSM kernel as a runner :class:`Sampler` (one static value: compiled once)."""
    return GSM


# --------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------
@jax.jit
def _psf(post, v):
    """``Re(A^H A v)``, jitted once on the posterior pytree (PSF and subband probes)."""
    return _normal(post.likelihood, v)


def _wavelet_lik_diagonal(post, dtype):
    """Per-subband ``<w, A^T A w>`` for one basis function near the centre of each subband
    (shift invariance makes it nearly the same across a subband); returns the diagonal and
    the number of products spent (``(2^ndim - 1) L + 1``)."""
    term = _penalty(post)
    W = term.analysis_operator
    shape = tuple(post.shape)
    out = np.zeros(shape)
    sizes = [shape]
    for _ in range(W.levels):
        sizes.append(tuple(s // 2 for s in sizes[-1]))
    blocks = []
    for lev in range(W.levels):
        half = sizes[lev + 1]
        for corner in np.ndindex(*(2,) * len(shape)):
            if not any(corner):
                continue
            blocks.append(tuple(slice(c * h, c * h + h) for c, h in zip(corner, half)))
    blocks.append(tuple(slice(0, h) for h in sizes[-1]))
    for blk in blocks:
        c = np.zeros(shape)
        centre = tuple((b.start + b.stop) // 2 for b in blk)
        c[centre] = 1.0
        w = W.adjoint(jnp.asarray(c, dtype))
        out[blk] = float(jnp.vdot(w, _psf(post, w)).real)
    return jnp.asarray(out, dtype), len(blocks)


# Floor of A^T A's circulant symbol (relative to its maximum) in the TV preconditioner.
# Measured, mean CG iterations per sweep over 2 chains x 25-50 sweeps, sparse-view CT
# (30 views), TV weight 10, tol 1e-4, floor 1e-3 / 1e-2 / 3e-2 (2e-2) / 0.1: 64x64
# 70.4 / 56.5 / 60.5 / 84.0; 128x128 121 / 98.7 / (106). Lower floors invert the
# near-zero symbol between the projection angles' spokes.
GSM_SYMBOL_FLOOR = 1e-2

# Largest image (pixels) whose A^T A the sampler forms densely. Measured on 2 CPU cores,
# sparse-view CT (30 views): one dense product vs one projector pair, 1 chain: 0.21 vs
# 0.92 ms at 32x32; 7.5 vs 2.5 ms at 64x64 (the 64 MB matrix is memory-bound there).
GSM_DENSE_MAX = 2048


@jax.jit
def _dense_normal(A):
    """``Re(A^H A)``, symmetrised (a matmul's rounding need not be symmetric)."""
    G = jnp.real(jnp.conj(A).T @ A)
    return 0.5 * (G + G.T)


def gsm_params(post, tol: float, maxiter: int, dense_max: int = GSM_DENSE_MAX,
               coarse="auto", hmc_moves: int = 0, hmc_steps: int = GSM_HMC_STEPS,
               hmc_step_size: float | None = None,
               hmc_smoothing: float | None = None) -> tuple[GSMParams, int]:
    """Measure the preconditioner's data and, for images of at most ``dense_max`` pixels,
    form ``A^T A`` densely; ``coarse`` as in :func:`coarse_blocks` (TV only: the wavelet
    preconditioner is diagonal in the wavelet domain). Returns ``(params, operator
    products spent)``. ``"auto"`` turns the two-level preconditioner on where the
    operator pair is applied (more than ``dense_max`` pixels): measured per 4-chain
    sweep with 5 HMC moves (``benchmarks/results/gold_tv.md`` section 8), 0.29-0.37 s
    against 0.46 s at 128x128 (59 vs 136 CG iterations), 0.053 vs 0.058 s at 64x64 (44
    vs 65); an earlier one-chain measurement: 3x slower at 32x32 with the dense
    ``A^T A`` (0.023 vs 0.007 s, 44 vs 48 iterations), where the coarse work costs more
    than a product.

    ``hmc_moves`` HMC trajectories of ``hmc_steps`` leapfrog steps follow every sweep
    (0: none); ``hmc_step_size`` is their initial step in whitened units (default
    :func:`default_hmc_step`), ``hmc_smoothing`` the Huber parameter of the gradient
    that drives them (default ``GSM_HMC_SMOOTHING / max weight``: a hundredth of the
    Laplace factor's scale)."""
    from ...models.wavelets import WaveletL1

    check_gsm_posterior(post)
    dtype = jnp.dtype(post.dtype)
    shape = tuple(post.shape)
    n = int(np.prod(shape))
    op = post.likelihood.operator
    normal, dense_spent = None, 0
    if n <= dense_max and hasattr(op, "to_dense"):
        A = op.to_dense(jnp.complex64 if dtype == jnp.float32 else jnp.complex128) \
            if jnp.issubdtype(jnp.dtype(op.range_dtype), jnp.complexfloating) \
            else op.to_dense(dtype)
        normal = _dense_normal(A).astype(dtype)
        dense_spent = min(n, int(np.prod(op.range_shape)))
    delta = jnp.zeros(shape, dtype).at[tuple(s // 2 for s in shape)].set(1.0)
    psf = _psf(post, delta)
    centre = psf[tuple(s // 2 for s in shape)]
    if isinstance(_penalty(post), WaveletL1):
        symbol, probes = _wavelet_lik_diagonal(post, dtype)
        kind, spent = "wavelet", 1 + probes
    else:
        sym = jnp.real(jnp.fft.fftn(jnp.fft.ifftshift(psf))).astype(dtype)
        symbol, kind, spent = jnp.maximum(sym, GSM_SYMBOL_FLOOR * jnp.max(sym)), "tv", 1
    blocks = coarse_blocks(shape, coarse) if kind == "tv" else None
    if coarse == "auto" and normal is not None:
        blocks = None     # with the dense A^T A a product is cheaper than the coarse work
    coarse_c = None if blocks is None else _coarse_circulant(symbol, blocks)
    if hmc_smoothing is None:
        w_max = float(jnp.max(_penalty(post).weights(dtype)))
        hmc_smoothing = GSM_HMC_SMOOTHING / w_max if w_max > 0 else 1.0
    if hmc_step_size is None:
        hmc_step_size = default_hmc_step(n)
    params = GSMParams(post, symbol, centre.astype(dtype), jnp.asarray(tol, dtype),
                       jnp.asarray(int(maxiter), jnp.int32), normal, coarse_c,
                       jnp.asarray(hmc_smoothing, dtype), jnp.asarray(hmc_step_size, dtype),
                       kind=kind, coarse_blocks=blocks, hmc_moves=int(hmc_moves),
                       hmc_steps=int(hmc_steps))
    return params, spent + dense_spent


def default_tol(dtype) -> float:
    """CG tolerance relative to the starting residual: measured on 32x32 sparse-view CT
    (float32) it gives Metropolis acceptance ~0.98 (1e-3: 0.86 at 30 % fewer iterations);
    exactness does not depend on it."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-4

"""Parallel-beam Joseph projector kernels (forward and gather-only exact transpose).

Conventions (all in pixel-index units of an image ``g`` of shape ``(M, N)``): the rays
of one angle ``a`` are sampled once per row ``k`` (the ray's major axis is axis 0); at
row ``k`` the ray ``s`` crosses axis 1 at the fractional column

    c(a, s, k) = (c0[a] + k * dck[a]) + s * dcs[a],

and the row contributes ``L[a] * sum_n hat(c - n) * g[k, n]`` with the linear
interpolation kernel ``hat(t) = max(0, 1 - |t|)`` and zeros outside the image. This is
ASTRA's CPU ``linear`` projector. Angles whose major axis is axis 1 sample the
transposed image; both images are zero padded to one square ``S x S`` so that all
angles run through one kernel (``group[a]`` picks the image).

The transpose is a gather over pixels: for pixel ``(k, n)`` and angle ``a`` only the
detector cells with ``|c - n| < 1`` contribute; they are a run of at most
``ceil(2 / |dcs|)`` consecutive ``s`` found in closed form, each weighted with
``hat(c - n)``, so forward and transpose are the same matrix (to rounding).
(Node indices are always computed with arithmetic that XLA cannot contract, see
:func:`forward`.)

Speed (XLA on CPU is gather-bound here): each gather fetches a contiguous run (the two
interpolation nodes, or all candidate cells of a pixel) as one slice, which measured
15-25 % faster than complex-packed pairs or separate gathers, and angles are processed
in small chunks (``lax.map``/``scan``) so that the per-chunk intermediates stay in cache.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def hat(t):
    """Linear interpolation kernel ``max(0, 1 - |t|)``."""
    return jnp.maximum(0.0, 1.0 - jnp.abs(t))


def num_candidates(dcs: np.ndarray) -> int:
    """Most detector cells one pixel can see in one view: ``ceil(2 / min |dcs|)``."""
    return max(1, int(math.ceil(2.0 / float(np.min(np.abs(dcs))) - 1e-9)))


def gather_runs(flat, idx, size: int):
    """``flat[idx + j]`` for ``j < size`` as one gather of contiguous runs: (..., size).

    One gather of a short run beats ``size`` separate gathers (and complex-packed
    pairs) on XLA's CPU backend. Indices must be in bounds (not checked).
    """
    dnums = jax.lax.GatherDimensionNumbers(offset_dims=(idx.ndim,), collapsed_slice_dims=(),
                                           start_index_map=(0,))
    return jax.lax.gather(flat, idx[..., None], dnums, slice_sizes=(size,),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _split(tables, chunk):
    """Tables (A, ...) -> ((num_chunks, chunk, ...) stacked, remainder) for lax.map."""
    num = tables[0].shape[0]
    chunk = max(1, min(chunk, num))
    nfull, rem = divmod(num, chunk)
    full = tuple(t[: nfull * chunk].reshape(nfull, chunk, *t.shape[1:]) for t in tables)
    rest = tuple(t[nfull * chunk:] for t in tables) if rem else None
    return full, rest


def forward(images, group, rows, steps, length, chunk: int = 2):
    """Joseph projections; ``images`` (2, S, S) holds ``[x, x.T]`` (zero padded square).

    Angle ``a`` samples ``images[group[a]]`` along its axis 0. ``rows[a, k] = c0[a] +
    k * dck[a]`` (A, S) and ``steps[a, s] = s * dcs[a]`` (A, D) are precomputed so that
    ``c = rows + steps`` is a single addition: XLA may evaluate an expression in several
    fusions with different rounding (FMA contraction), and the node index ``floor(c)``
    must be the one the weight ``c - floor(c)`` refers to. Out: (A, D).
    """
    _, S, _ = images.shape
    dtype = images.dtype
    num_det = steps.shape[1]
    width = S + 3                    # one zero column before, two after each row
    flat = jnp.pad(images, ((0, 0), (0, 0), (1, 2))).ravel()
    row_base = (jnp.arange(S, dtype=jnp.int32) * width)[None, None, :]

    def one_chunk(tab):
        group_, rows_, steps_, len_ = tab
        c = jnp.clip(rows_[:, None, :] + steps_[:, :, None], -1.0, float(S))  # (a, D, S)
        n0 = jnp.floor(c)
        idx = (group_ * (S * width))[:, None, None] + row_base + n0.astype(jnp.int32) + 1
        v = gather_runs(flat, idx, 2)
        frac = c - n0
        val = (1.0 - frac) * v[..., 0] + frac * v[..., 1]
        return jnp.sum(val, axis=-1) * len_[:, None]

    tables = (group.astype(jnp.int32),) + tuple(t.astype(dtype) for t in (rows, steps, length))
    full, rest = _split(tables, chunk)
    parts = []
    if full[0].shape[0]:
        out = jax.lax.map(one_chunk, full)
        parts.append(out.reshape(-1, num_det))
    if rest is not None:
        parts.append(one_chunk(rest))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)


def transpose(sino, group, rows, dcs, inv_dcs, length, size: int, num_cand: int,
              chunk: int = 8):
    """Exact transpose of :func:`forward`: sinogram (A, D) -> ``[x, x.T]`` parts (2, S, S).

    The caller adds part 0 and the transpose of part 1. The first candidate cell
    ``s0 = floor(lo) + 1`` comes from one subtraction and one multiplication (no
    contractible pattern), so every fusion sees the same ``s0``; the weights
    ``hat(c - n)`` are continuous, so their rounding does not matter.
    """
    S = size
    A, D = sino.shape
    dtype = sino.dtype
    n = jnp.arange(S, dtype=dtype)
    # row a: index s + 1 holds sino[a, s], zeros outside
    padded = jnp.pad(sino, ((0, 0), (1, num_cand)))
    width = padded.shape[1]

    def one_chunk(tab):
        group_, rows_, dcs_, inv_, len_, prow = tab
        b = rows_[:, :, None]                                             # (a, S, 1)
        dcs3, inv3 = dcs_[:, None, None], inv_[:, None, None]
        lo = ((n - b) - jnp.sign(inv3)) * inv3        # lower end of |c - n| < 1 in s
        s0 = jnp.clip(jnp.floor(lo) + 1.0, -1.0, float(D - 1))           # first s > lo
        base = (jnp.arange(prow.shape[0], dtype=jnp.int32) * width)[:, None, None]
        v = gather_runs(prow.ravel(), base + s0.astype(jnp.int32) + 1, num_cand)
        acc = jnp.zeros(lo.shape, dtype)
        for j in range(num_cand):
            s = s0 + float(j)
            acc = acc + hat((b + s * dcs3) - n) * v[..., j]
        onehot = (group_[:, None] == jnp.arange(2)[None, :]).astype(dtype) * len_[:, None]
        return jnp.einsum("amn,ag->gmn", acc, onehot)

    tables = ((group.astype(jnp.int32),)
              + tuple(t.astype(dtype) for t in (rows, dcs, inv_dcs, length)) + (padded,))
    full, rest = _split(tables, chunk)
    x = jnp.zeros((2, S, S), dtype)
    if full[0].shape[0]:
        x, _ = jax.lax.scan(lambda acc, tab: (acc + one_chunk(tab), None), x, full)
    if rest is not None:
        x = x + one_chunk(rest)
    return x


def coo(group, rows, steps, length, shape, dtype=np.float32):
    """The matrix of :func:`forward` as coordinate triplets (numpy).

    Same nodes and weights as the kernel run on images of ``dtype``: ``c = rows +
    steps`` (one addition in ``dtype``) clipped to ``[-1, S]``, weights ``(1 - frac,
    frac) * length`` on ``floor(c)`` and ``floor(c) + 1``. Rays are numbered ``a * D +
    s``, pixels ``i * N + j`` of the ``(M, N)`` image; nodes outside the image (the
    kernel's zero padding) are dropped.

    Returns:
        ``(rays, pixels, weights)``, 1D arrays (weights in ``dtype``).
    """
    M, N = shape
    rows, steps, length = (np.asarray(a, dtype) for a in (rows, steps, length))
    S = rows.shape[1]
    D = steps.shape[1]
    k = np.arange(S)
    out = ([], [], [])
    for a in range(rows.shape[0]):
        c = np.clip(rows[a][None, :] + steps[a][:, None], -1.0, float(S)).astype(dtype)
        n0 = np.floor(c)
        frac = c - n0
        ray = np.broadcast_to(a * D + np.arange(D)[:, None], c.shape)
        for col, w in ((n0, dtype(1.0) - frac), (n0 + 1.0, frac)):
            col = col.astype(np.int64)
            i, j = (np.broadcast_to(k, c.shape), col) if group[a] == 0 else \
                (col, np.broadcast_to(k, c.shape))
            ok = (i >= 0) & (i < M) & (j >= 0) & (j < N) & (w != 0)
            out[0].append(ray[ok])
            out[1].append(i[ok] * N + j[ok])
            out[2].append(w[ok] * length[a])
    return tuple(np.concatenate(o) for o in out)

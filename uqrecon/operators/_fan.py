"""Ray-driven line-length kernel for arbitrary 2D rays (used for fan beam).

Each ray ``r`` is sampled once per row ``k`` of its major axis (axis 0 of the image
``g`` (M, N) given by the caller; rays whose major axis is axis 1 use the transposed
image). At row ``k`` the ray's centre line crosses axis 1 at ``c = c0[r] + k * dc[r]``
(pixel-index units); within the row band the ray covers the column interval
``[c - w/2, c + w/2]`` with ``w = |dc| <= 1``, and each pixel receives the share of the
in-band length ``L[r]`` that falls into it. That is the exact intersection length of the
line with the pixel (Siddon's weights), which is ASTRA's ``line_fanflat`` kernel.

The centre pixel ``n0`` is computed in 32-bit fixed point (``FIX_BITS`` fractional
bits), which is exact and so identical in every XLA fusion; the shares are computed in
floating point from ``c - n0`` with a formula that stays exact when ``n0`` is off by a
fraction of a pixel, so the two never disagree about which pixel a weight belongs to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _joseph

FIX_BITS = 17                    # fixed point: 1 pixel = 2**17; |c| < 2**13 pixels
_FIX_LIMIT = 2.0 ** 13


def fixed_point(c0, dc):
    """int32 fixed-point copies of ``c0`` (clipped to +-2**13 pixels) and ``dc``."""
    scale = 2.0 ** FIX_BITS
    c0 = np.clip(c0, -_FIX_LIMIT, _FIX_LIMIT)
    return (np.round(c0 * scale).astype(np.int32), np.round(dc * scale).astype(np.int32))


def forward(g, c0, dc, length, c0_fix, dc_fix, chunk: int = 2048, runs: bool = True):
    """Line integrals through ``g`` (M, N) for rays with tables ``(R,)``; out (R,).

    ``runs=True`` fetches the three cells around the centre as one gather of a run
    (faster forward); ``runs=False`` uses two scalar gathers, whose transpose (two
    scalar scatters) is the faster adjoint. Both compute the same values in the same
    order, i.e. the same matrix.
    """
    M, N = g.shape
    if max(M, N) > 2 ** 12:
        raise ValueError(f"fan-beam images are limited to 4096 pixels a side, got {g.shape}")
    dtype = g.dtype
    width = N + 4
    flat = jnp.pad(g, ((0, 0), (2, 2))).ravel()
    k = jnp.arange(M, dtype=dtype)
    ki = jnp.arange(M, dtype=jnp.int32)
    row_base = ki * width
    half = jnp.int32(1 << (FIX_BITS - 1))
    tiny = jnp.finfo(dtype).tiny

    def one_chunk(tab):
        c0_, dc_, len_, c0f, dcf = tab
        c = c0_[:, None] + k[None, :] * dc_[:, None]                      # (r, M)
        n0i = jnp.clip((c0f[:, None] + ki[None, :] * dcf[:, None] + half) >> FIX_BITS,
                       -1, N)
        offset = c - n0i.astype(dtype)
        side = jnp.where(offset < 0, -1, 1)
        w = jnp.abs(dc_)[:, None]
        # share of the covered interval beyond the centre cell's edge on that side
        w_side = jnp.clip((jnp.abs(offset) + 0.5 * w - 0.5) / jnp.maximum(w, tiny),
                          0.0, 1.0)
        idx = row_base[None, :] + n0i + 2
        if runs:
            run = _joseph.gather_runs(flat, idx - 1, 3)               # n0 - 1, n0, n0 + 1
            v0, v1 = run[..., 1], jnp.where(side < 0, run[..., 0], run[..., 2])
        else:
            v0 = flat.at[idx].get(mode="promise_in_bounds")
            v1 = flat.at[idx + side].get(mode="promise_in_bounds")
        return jnp.sum((1.0 - w_side) * v0 + w_side * v1, axis=-1) * len_

    tables = (c0.astype(dtype), dc.astype(dtype), length.astype(dtype),
              c0_fix.astype(jnp.int32), dc_fix.astype(jnp.int32))
    num = tables[0].shape[0]
    chunk = max(1, min(chunk, num))
    nfull, rem = divmod(num, chunk)
    parts = []
    if nfull:
        stacked = tuple(t[: nfull * chunk].reshape(nfull, chunk) for t in tables)
        parts.append(jax.lax.map(one_chunk, stacked).reshape(-1))
    if rem:
        parts.append(one_chunk(tuple(t[nfull * chunk:] for t in tables)))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def coo(c0, dc, length, c0_fix, dc_fix, shape, dtype=np.float32):
    """The matrix of :func:`forward` on an image ``g`` of ``shape`` as coordinate
    triplets ``(rays, pixels, weights)`` (numpy; rays numbered in table order, pixels
    ``i * N + j`` of ``g``). The centre cell comes from the kernel's fixed-point
    arithmetic and the shares from its floating-point formula in ``dtype`` (the images'
    dtype): a ray along a pixel boundary (``dc`` ~ 0, ``|offset|`` = 1/2) puts its whole
    length on one side in float32 and half on each in float64, so the dtype matters there.
    """
    M, N = shape
    c0, dc, length = (np.asarray(a, dtype) for a in (c0, dc, length))
    k = np.arange(M)
    c = c0[:, None] + k[None, :].astype(dtype) * dc[:, None]                   # (R, M)
    half = 1 << (FIX_BITS - 1)
    n0 = np.clip((c0_fix.astype(np.int64)[:, None]
                  + k[None, :] * dc_fix.astype(np.int64)[:, None] + half) >> FIX_BITS, -1, N)
    offset = c - n0.astype(dtype)
    side = np.where(offset < 0, -1, 1)
    w = np.abs(dc)[:, None]
    w_side = np.clip((np.abs(offset) + dtype(0.5) * w - dtype(0.5))
                     / np.maximum(w, np.finfo(dtype).tiny), 0.0, 1.0).astype(dtype)
    ray = np.broadcast_to(np.arange(c0.size)[:, None], c.shape)
    row = np.broadcast_to(k[None, :], c.shape)
    out = ([], [], [])
    for col, wt in ((n0, dtype(1.0) - w_side), (n0 + side, w_side)):
        ok = (col >= 0) & (col < N) & (wt != 0)
        out[0].append(ray[ok])
        out[1].append(row[ok] * N + col[ok])
        out[2].append((wt * length[:, None])[ok])
    return tuple(np.concatenate(o) for o in out)

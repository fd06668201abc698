"""Sparse matrices in ELL form (padded rows) as a JAX primitive with its exact transpose.

A CT system matrix has a few per cent non-zeros, and every row (a ray) and every column
(a pixel) holds about the same number of them, so both ``A`` and ``A^T`` are stored as
ELL tables: ``idx`` (rows, width) int32 column indices and ``val`` (rows, width) weights,
short rows padded with weight 0 at index 0. ``A x`` is then one gather and one reduction
per table, which XLA's CPU backend runs 2-4x faster than the Joseph kernels' on-the-fly
interpolation (``benchmarks/ray_kernels.py``).

``ell_matvec`` is a primitive rather than a plain function for two reasons:

- **Batching**: ``vmap`` of a gather batches it along a major axis, which measured 3-7x
  slower on CPU than gathering each image in turn (128x128, 4 images: 11.8 ms vmapped
  vs 1.6 ms one after another). The batching rule maps over the batch (``lax.map``).
- **Transposition**: the primitive is linear in ``x``; its transpose is the same
  primitive with the two tables swapped (a gather again, never a scatter-add), so
  ``jax.grad``, ``jax.linear_transpose`` and ``jvp`` of ``grad`` all work and use the
  fast form.

Derivatives with respect to the weights ``val`` are exact too (a term of ordinary ops);
``A x`` does not depend on ``val_t`` (the transpose's copy of the same weights).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["EllPair", "ell_pair_from_coo", "ell_matvec"]


class EllPair(NamedTuple):
    """A sparse matrix ``A`` (m, n) and its transpose, both as ELL tables."""

    idx: jax.Array       # (m, k)  column of each stored entry of A's rows
    val: jax.Array       # (m, k)
    idx_t: jax.Array     # (n, k_t) row of each stored entry of A's columns
    val_t: jax.Array     # (n, k_t)

    def matvec(self, x: jax.Array) -> jax.Array:
        """``A x`` for a vector ``x`` (n,)."""
        return ell_matvec(x, self.idx, self.val, self.idx_t, self.val_t)

    def rmatvec(self, y: jax.Array) -> jax.Array:
        """``A^T y`` for a vector ``y`` (m,)."""
        return ell_matvec(y, self.idx_t, self.val_t, self.idx, self.val)


def _ell_tables(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, num_rows: int):
    """ELL tables of the entries ``(rows, cols, vals)`` grouped by row (numpy)."""
    order = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=num_rows)
    width = max(1, int(counts.max(initial=0)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(rows.size) - starts[rows]
    idx = np.zeros((num_rows, width), np.int32)
    val = np.zeros((num_rows, width), vals.dtype)
    idx[rows, pos] = cols
    val[rows, pos] = vals
    return idx, val


def ell_pair_from_coo(rows, cols, vals, shape) -> EllPair:
    """An :class:`EllPair` from coordinate triplets (zeros dropped, duplicates add up).

    Args:
        rows: row index of each entry (int).
        cols: column index of each entry (int).
        vals: the entries (kept in their dtype; float64 becomes float32 unless
            ``jax_enable_x64`` is on).
        shape: ``(m, n)``.

    Returns:
        The :class:`EllPair` (JAX arrays).
    """
    rows, cols = np.asarray(rows, np.int64).ravel(), np.asarray(cols, np.int64).ravel()
    vals = np.asarray(vals).ravel()
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    m, n = (int(s) for s in shape)
    if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= n):
        raise ValueError(f"ell_pair_from_coo: an index lies outside the shape {shape}")
    idx, val = _ell_tables(rows, cols, vals, m)
    idx_t, val_t = _ell_tables(cols, rows, vals, n)
    return EllPair(*(jnp.asarray(a) for a in (idx, val, idx_t, val_t)))


# --------------------------------------------------------------------------------------
# The primitive: y = sum_j val[:, j] * x[idx[:, j]]; transpose swaps the two tables
# --------------------------------------------------------------------------------------
ell_matvec_p = Primitive("uqrecon_ell_matvec")


def ell_matvec(x, idx, val, idx_t, val_t):
    """``A x`` with ``A`` given by its ELL tables ``(idx, val)`` and ``A^T`` by
    ``(idx_t, val_t)`` (used by the transpose). ``x`` is a vector (n,); the result (m,)
    has ``x``'s dtype."""
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] != idx_t.shape[0]:
        raise ValueError(f"ell_matvec: 'x' must be a vector of length {idx_t.shape[0]}, "
                         f"got shape {x.shape}")
    return ell_matvec_p.bind(x, idx, val, idx_t, val_t)


def _impl(x, idx, val, idx_t, val_t):
    del idx_t, val_t
    gathered = x.at[idx].get(mode="promise_in_bounds")
    return jnp.sum(val.astype(x.dtype) * gathered, axis=-1)


def _abstract(x, idx, val, idx_t, val_t):
    """``x``'s abstract value with the row count of ``idx``: it keeps what ``x`` carries
    besides shape and dtype, e.g. the mesh axes it varies over inside ``shard_map``
    (a fresh ``ShapedArray`` would drop them and break gradients under ``check_vma``)."""
    del val, idx_t, val_t
    return x.update(shape=(idx.shape[0],), weak_type=False)


def _transpose(ct, x, idx, val, idx_t, val_t):
    for t in (idx, val, idx_t, val_t):
        if ad.is_undefined_primal(t):
            raise NotImplementedError("ell_matvec: transposing with respect to the stored "
                                      "weights is not supported (only with respect to x)")
    if type(ct) is ad.Zero:
        return (ad.Zero(x.aval), None, None, None, None)
    return (ell_matvec_p.bind(ct, idx_t, val_t, idx, val), None, None, None, None)


def _jvp(primals, tangents):
    """Linear in ``x`` (the same primitive on the tangent) and in the weights ``val``
    (written with ordinary ops, so JAX transposes that term itself); the output does not
    depend on ``val_t``, which only the transpose reads."""
    x, idx, val, idx_t, val_t = primals
    dx, _, dval, _, _ = tangents
    out = ell_matvec_p.bind(x, idx, val, idx_t, val_t)
    terms = []
    if type(dx) is not ad.Zero:
        terms.append(ell_matvec_p.bind(dx, idx, val, idx_t, val_t))
    if type(dval) is not ad.Zero:
        gathered = x.at[idx].get(mode="promise_in_bounds")
        terms.append(jnp.sum(dval.astype(x.dtype) * gathered, axis=-1))
    if not terms:
        return out, ad.Zero.from_primal_value(out)
    return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _sharded_axis(x, axis) -> bool:
    """Whether axis ``axis`` of ``x`` is split over the devices of an explicit mesh."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and len(spec) > axis and spec[axis] is not None


def _batch(args, dims):
    x, *tables = args
    bx, *btables = dims
    if any(b is not None for b in btables) or _sharded_axis(x, bx):   # None: not batched
        # batched tables (several matrices at once), or a batch split over the devices of
        # an explicit mesh (lax.map cannot slice it): the plain gather, vmapped
        return jax.vmap(_impl, in_axes=tuple(dims))(*args), 0
    x = jnp.moveaxis(x, bx, 0)
    return jax.lax.map(lambda v: ell_matvec_p.bind(v, *tables), x), 0


ell_matvec_p.def_impl(_impl)
ell_matvec_p.def_abstract_eval(_abstract)
mlir.register_lowering(ell_matvec_p, mlir.lower_fun(_impl, multiple_results=False))
ad.primitive_jvps[ell_matvec_p] = _jvp
ad.primitive_transposes[ell_matvec_p] = _transpose
batching.primitive_batchers[ell_matvec_p] = _batch

"""Sparse matrices in sliced ELL form as a JAX primitive with its exact transpose.

A CT system matrix has a few per cent non-zeros, and every row (a ray) and every column
(a pixel) holds a few hundred of them at most, so both ``A`` and ``A^T`` are stored as
*sliced* ELL tables (SELL, Kreutzer et al. 2014): the rows are sorted by their number of
entries and cut into slices of consecutive rows, and each slice is an ELL table padded
to its own width, ``idx`` (rows, width) int32 column indices and ``val`` (rows, width)
weights, short rows padded with weight 0 at index 0. ``A x`` is then one gather and one
row sum per slice, the slices concatenated and put back in row order (a scatter of
``rows``). Rays differ in length (a ray near the detector's edge crosses few pixels),
so a single table would be about a third padding; sliced, each slice stays small enough
for XLA's CPU backend to keep it in cache and split it over threads. Measured on 2 CPU
cores, forward pass alone, one table against 12 slices (a direct timing, two runs each,
2026-11-30, with this scatter): 128x128 / 30 views 0.64-0.76 -> 0.43-0.64 ms, 256x256 /
60 views 15.4-16.2 -> 4.3-6.7 ms (the on-the-fly Joseph kernel: 7.3-8.0 ms, which a
single table could not beat); ``benchmarks/results/ray_kernels.md`` has the
whole-gradient comparison (forward 5.4 ms at 256 there). A
table that slicing would barely shrink (a pixel's entries vary little) stays whole.

``ell_matvec`` is a primitive rather than a plain function for two reasons:

- **Batching**: the primitive takes ``x`` with leading batch dimensions, and ``vmap``
  moves the batch there. On CPU, in float32, it lowers to a native kernel
  (``_ell_native.cc``, built on first use and called through ``jax.ffi``) that reduces
  every row in registers and applies each stored entry to the whole batch at once: XLA's
  gather materialises the gathered entries before reducing them and reads the table
  once per vector. Elsewhere (no compiler, float64, other platforms) the batch is mapped
  over (``lax.map``): ``vmap`` of a gather batches it along a major axis, which measured
  3-7x slower on CPU than gathering each image in turn (128x128, 4 images: 11.8 ms
  vmapped vs 1.6 ms one after another). ``benchmarks/results/ray_kernels.md`` has the
  native kernel's figures.
- **Transposition**: the primitive is linear in ``x``; its transpose is the same
  primitive with the two tables swapped (a gather again, never a scatter-add), so
  ``jax.grad``, ``jax.linear_transpose`` and ``jvp`` of ``grad`` all work and use the
  fast form.

Derivatives with respect to the weights ``val`` are exact too (a term of ordinary ops);
``A x`` does not depend on the transposed table (the transpose's copy of the weights).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _ell_native

__all__ = ["EllTable", "EllPair", "ell_pair_from_coo", "ell_matvec"]

# Slices per table: SELL_MIN_SLICES, more when a slice would exceed SELL_SLICE_ENTRIES
# stored entries, fewer only for tables of fewer rows (one per row), and one when slicing
# would not pay (SELL_MIN_SAVING). Measured with a scratch prototype on the forward tables
# (2 CPU cores, 2026-11-30): 12 equal slices were the fastest of 4/6/8/12/16 at 128x128 /
# 30 views (0.36 ms; 0.42-0.63 for the others, 0.68 unsliced) and at 256x256 / 60 views
# (4.2 ms; 4.6-5.1 for 6/8/16, but 14.5 for 4 slices of ~2.8 M entries, as slow as the
# unsliced 15.6).
SELL_MIN_SLICES = 12
SELL_SLICE_ENTRIES = 1 << 20
# A table whose slicing would save less than this fraction of its padded entries stays one
# table in row order (no sort, no final scatter): the transposed parallel-beam tables (a pixel's
# entries vary little) read 2.8-3.5 ms unsliced at 256x256 / 60 views, 3.8-4.3 sliced.
SELL_MIN_SAVING = 0.15


class EllTable(NamedTuple):
    """The rows of a sparse matrix (m, n) as sliced ELL: ``idx[s]``, ``val[s]`` the
    slice ``s`` (rows, width), rows sorted by their number of entries; ``rows[k]`` is
    the matrix row stored at place ``k`` of the slices' concatenation. A table that
    slicing would not shrink by ``SELL_MIN_SAVING`` is one slice in row order (``rows``
    the identity)."""

    idx: tuple
    val: tuple
    rows: jax.Array       # (m,) int32

    @property
    def size(self) -> int:
        """Stored entries, padding included."""
        return int(sum(math.prod(a.shape) for a in self.idx))

    @property
    def num_rows(self) -> int:
        return int(self.rows.shape[-1])


class EllPair(NamedTuple):
    """A sparse matrix ``A`` (m, n) and its transpose, both as sliced ELL tables."""

    fwd: EllTable    # the rows of A
    adj: EllTable    # the rows of A^T

    def matvec(self, x: jax.Array) -> jax.Array:
        """``A x`` for a vector ``x`` (n,)."""
        return ell_matvec(x, self.fwd, self.adj)

    def rmatvec(self, y: jax.Array) -> jax.Array:
        """``A^T y`` for a vector ``y`` (m,)."""
        return ell_matvec(y, self.adj, self.fwd)


def _sliced_table(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, num_rows: int):
    """Sliced ELL table of the entries ``(rows, cols, vals)`` grouped by row (numpy):
    rows sorted by their number of entries (stable), cut into equal runs of rows."""
    counts = np.bincount(rows, minlength=num_rows)
    widest = max(1, int(counts.max(initial=0)))
    order = np.argsort(counts, kind="stable")            # sorted position -> row
    num_slices = max(SELL_MIN_SLICES, -(-widest * num_rows // SELL_SLICE_ENTRIES))
    num_slices = max(1, min(num_slices, num_rows))
    bounds = np.linspace(0, num_rows, num_slices + 1).round().astype(np.int64)
    # counts ascend along ``order``: a slice's widest row is its last
    widths = [max(1, int(counts[order[hi - 1]])) if hi > lo else 1
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    if np.dot(np.diff(bounds), widths) > (1.0 - SELL_MIN_SAVING) * num_rows * widest:
        order, bounds, widths = np.arange(num_rows), np.array([0, num_rows]), [widest]
    position = np.empty(num_rows, np.int64)              # row -> sorted position
    position[order] = np.arange(num_rows)
    by_row = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[by_row], cols[by_row], vals[by_row]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(rows.size) - starts[rows]           # entry's place within its row
    where = position[rows]                               # its row's sorted position
    idx, val = [], []
    for lo, hi, width in zip(bounds[:-1], bounds[1:], widths):
        i = np.zeros((hi - lo, width), np.int32)
        v = np.zeros((hi - lo, width), vals.dtype)
        mine = (where >= lo) & (where < hi)
        i[where[mine] - lo, slot[mine]] = cols[mine]
        v[where[mine] - lo, slot[mine]] = vals[mine]
        idx.append(i)
        val.append(v)
    return idx, val, order.astype(np.int32)


def _table(idx, val, rows) -> EllTable:
    return EllTable(tuple(jnp.asarray(a) for a in idx), tuple(jnp.asarray(a) for a in val),
                    jnp.asarray(rows))


def ell_pair_from_coo(rows, cols, vals, shape) -> EllPair:
    """An :class:`EllPair` from coordinate triplets (zeros dropped; duplicates are kept as
    separate entries, so they add up in every product).

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
    return EllPair(_table(*_sliced_table(rows, cols, vals, m)),
                   _table(*_sliced_table(cols, rows, vals, n)))


# --------------------------------------------------------------------------------------
# The primitive: y = A x from the sliced table of A; the transpose swaps the two tables.
# Its operands are x (..., n) -- leading dimensions are a batch -- and the flattened
# tables (idx slices, val slices, rows) of A and A^T; the slice counts are static
# parameters.
# --------------------------------------------------------------------------------------
# Entries per work unit of the native kernel (at least; its threads claim units).
NATIVE_MIN_UNIT = 4096
# A single vector (no batch) goes to the native kernel only from this many stored entries
# of the table read: benchmarks/ell_native.py (2 CPU cores, 2026-12-01), normal product of
# one image, XLA / native: 64x64 / 30 views (~0.23 M entries per table) 0.139 / 0.205 ms
# (the kernel's set-up and threads cost more than they save), 128x128 / 30 views
# (~0.94 M) 0.617 / 0.362 ms. Batches of two or more always gain (64x64, 4 images: 2.1x).
NATIVE_SINGLE_MIN_ENTRIES = 1 << 19
ell_matvec_p = Primitive("uqrecon_ell_matvec")


def _flat(t: EllTable) -> tuple:
    return (*t.idx, *t.val, t.rows)


def _unflat(leaves, k: int) -> EllTable:
    return EllTable(tuple(leaves[:k]), tuple(leaves[k:2 * k]), leaves[2 * k])


def _split(args, nf: int, na: int):
    """``(x, table of A, table of A^T)`` from the primitive's flat operands."""
    return (args[0], _unflat(args[1:2 * nf + 2], nf),
            _unflat(args[2 * nf + 2:], na))


def _aval_varying(aval) -> frozenset:
    """The mesh axes an abstract value varies over inside ``shard_map`` (empty outside):
    its ``manual_axis_type.varying`` (``vma`` in older JAX)."""
    kind = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(kind, "varying", None) or getattr(aval, "vma", None) or ())


def _varying_axes(a) -> frozenset:
    """The mesh axes ``a`` varies over inside ``shard_map`` (empty outside)."""
    return _aval_varying(jax.typeof(a))


def _same_varying_axes(operands):
    """The operands cast to vary over every mesh axis any of them varies over (inside
    ``shard_map``), as JAX's own primitives do before binding: the product then varies
    where its tables do, and the transpose of the cast sums a replicated input's
    cotangent over those axes. (Typing the result by ``x`` alone made ``grad`` with
    respect to a replicated ``x`` of per-device tables return one device's gradient.)"""
    vmas = [_varying_axes(a) for a in operands]
    union = frozenset().union(*vmas)
    if not union:
        return operands
    return [a if v == union else jax.lax.pcast(a, tuple(sorted(union - v)), to="varying")
            for a, v in zip(operands, vmas)]


def _bind(x, fwd: EllTable, adj: EllTable):
    operands = _same_varying_axes([x, *_flat(fwd), *_flat(adj)])
    return ell_matvec_p.bind(*operands, nf=len(fwd.idx), na=len(adj.idx))


def ell_matvec(x, fwd: EllTable, adj: EllTable):
    """``A x`` with ``A`` given by its sliced ELL table ``fwd`` and ``A^T`` by ``adj``
    (read by the transpose). ``x`` is a vector (n,); the result (m,) has ``x``'s dtype."""
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] != adj.num_rows:
        raise ValueError(f"ell_matvec: 'x' must be a vector of length {adj.num_rows}, "
                         f"got shape {x.shape}")
    return _bind(x, fwd, adj)


def _gather(x, idx):
    return x.at[idx].get(mode="promise_in_bounds")


def _rows_in_order(parts, rows):
    """The slices' row results concatenated and put back in row order (a single slice
    is stored in row order: ``rows`` is the identity and is not read).

    A scatter, not a gather by the inverse permutation: XLA fuses a gather producer into
    a consumer's gather (the adjoint's, in ``A^T A x``), which then repeats the
    permutation's lookup for every stored entry (256x256 / 60 views: a normal product
    10.8 ms against 7.3 for its two halves); a scatter's result is materialised."""
    if len(parts) == 1:
        return parts[0]
    cat = jnp.concatenate(parts, axis=-1)
    return jnp.zeros_like(cat).at[..., rows].set(cat, unique_indices=True,
                                                mode="promise_in_bounds")


def _per_vector(fn, x):
    """``fn`` (a function of one vector) over the leading dimensions of ``x``, one vector
    after another (``lax.map``)."""
    if x.ndim == 1:
        return fn(x)
    out = jax.lax.map(fn, x.reshape(math.prod(x.shape[:-1]), x.shape[-1]))
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _products(x, fwd: EllTable, vals=None):
    """``A x`` for one vector ``x`` with XLA's gathers (``vals``: other weights)."""
    vals = fwd.val if vals is None else vals
    parts = [jnp.sum(v.astype(x.dtype) * _gather(x, i), axis=-1)
             for i, v in zip(fwd.idx, vals)]
    return _rows_in_order(parts, fwd.rows)


def _impl(*args, nf, na):
    x, fwd, _ = _split(args, nf, na)
    return _per_vector(lambda v: _products(v, fwd), x)


def _native_impl(*args, nf, na):
    """The native kernel on ``x`` (..., n): one call for the whole batch."""
    x, fwd, _ = _split(args, nf, na)
    m = fwd.rows.shape[0]
    flat = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    out = jax.ffi.ffi_call(_ell_native.TARGET, jax.ShapeDtypeStruct((flat.shape[0], m),
                                                                     x.dtype))(
        flat, *fwd.idx, *fwd.val, fwd.rows, num_slices=np.int64(nf),
        min_unit=np.int64(NATIVE_MIN_UNIT))
    return out.reshape(*x.shape[:-1], m)


def _native_fits(avals, nf) -> bool:
    """Whether the native kernel computes this product: float32 ``x`` and weights,
    int32 indices, a batch or a large table (``NATIVE_SINGLE_MIN_ENTRIES``), no varying
    mesh axes to type (``shard_map`` with ``check_vma``; the runner's ``check_vma=False``
    shard_map uses the kernel on each device), and the kernel built."""
    x, idx, val, rows = avals[0], avals[1:nf + 1], avals[nf + 1:2 * nf + 1], avals[2 * nf + 1]
    single = math.prod(x.shape[:-1]) == 1
    if single and sum(math.prod(a.shape) for a in idx) < NATIVE_SINGLE_MIN_ENTRIES:
        return False
    return (x.dtype == np.float32 and all(a.dtype == np.float32 for a in val)
            and all(a.dtype == np.int32 for a in (*idx, rows))
            and all(a.ndim == 2 for a in (*idx, *val))
            and not _aval_varying(x) and _ell_native.available())


def _lower_cpu(ctx, *args, nf, na):
    impl = _native_impl if _native_fits(ctx.avals_in, nf) else _impl
    return mlir.lower_fun(functools.partial(impl, nf=nf, na=na),
                          multiple_results=False)(ctx, *args)


def _abstract(*args, nf, na):
    """``x``'s abstract value with the row count of ``A`` as its last dimension: it
    keeps what ``x`` carries besides shape and dtype, e.g. the mesh axes it varies over
    inside ``shard_map`` (a fresh ``ShapedArray`` would drop them and break gradients
    under ``check_vma``)."""
    x, fwd, _ = _split(args, nf, na)
    return x.update(shape=(*x.shape[:-1], fwd.rows.shape[0]), weak_type=False)


def _transpose(ct, *args, nf, na):
    _, fwd, adj = _split(args, nf, na)
    if any(ad.is_undefined_primal(t) for t in (*_flat(fwd), *_flat(adj))):
        raise NotImplementedError("ell_matvec: transposing with respect to the stored "
                                  "weights is not supported (only with respect to x)")
    x = args[0]
    none = (None,) * (len(args) - 1)
    if type(ct) is ad.Zero:
        return (ad.Zero(x.aval), *none)
    return (_bind(ct, adj, fwd), *none)


def _jvp(primals, tangents, *, nf, na):
    """Linear in ``x`` (the same primitive on the tangent) and in the weights ``val``
    (written with ordinary ops, so JAX transposes that term itself); the output does not
    depend on the transposed table, which only the transpose reads."""
    x, fwd, adj = _split(primals, nf, na)
    dx, dfwd, _ = _split(tangents, nf, na)
    out = _bind(x, fwd, adj)
    terms = []
    if type(dx) is not ad.Zero:
        terms.append(_bind(dx, fwd, adj))
    if any(type(d) is not ad.Zero for d in dfwd.val):
        dvals = [jnp.zeros(i.shape, x.dtype) if type(d) is ad.Zero else d
                 for i, d in zip(fwd.idx, dfwd.val)]
        terms.append(_per_vector(lambda v: _products(v, fwd, dvals), x))
    if not terms:
        return out, ad.Zero.from_primal_value(out)
    return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _sharded_axis(x, axis) -> bool:
    """Whether axis ``axis`` of ``x`` is split over the devices of an explicit mesh."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and len(spec) > axis and spec[axis] is not None


def _batch(args, dims, *, nf, na):
    x, *tables = args
    bx, *btables = dims
    if any(b is not None for b in btables) or _sharded_axis(x, bx):   # None: not batched
        # batched tables (several matrices at once), or a batch split over the devices of
        # an explicit mesh (lax.map cannot slice it): the plain gathers, vmapped
        impl = lambda *a: _impl(*a, nf=nf, na=na)
        return jax.vmap(impl, in_axes=tuple(dims))(*args), 0
    # the batch as a leading dimension of x: the lowering maps over it or hands it to
    # the native kernel whole
    return ell_matvec_p.bind(jnp.moveaxis(x, bx, 0), *tables, nf=nf, na=na), 0


ell_matvec_p.def_impl(_impl)
ell_matvec_p.def_abstract_eval(_abstract)
mlir.register_lowering(ell_matvec_p, mlir.lower_fun(_impl, multiple_results=False))
mlir.register_lowering(ell_matvec_p, _lower_cpu, platform="cpu")
ad.primitive_jvps[ell_matvec_p] = _jvp
ad.primitive_transposes[ell_matvec_p] = _transpose
batching.primitive_batchers[ell_matvec_p] = _batch

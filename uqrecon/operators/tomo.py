"""2D CT ray transforms in JAX, built from ODL spaces and geometries.

:class:`RayTransform` computes line integrals natively in JAX (jit, vmap and grad work)
with the same scaling and array layout as ODL's ``RayTransform`` (``x[i, j] = f(x_i,
y_j)``, line integrals in the space's units, sinogram ``(num_angles, num_det)``):

- parallel beam: Joseph's projector, i.e. ASTRA's CPU ``linear`` projector, with a
  gather-only adjoint that is the exact transpose of the forward pass;
- flat fan beam: exact line-length (Siddon) weights, i.e. ASTRA's ``line_fanflat``,
  with the adjoint from ``jax.linear_transpose``.

Geometry tables are computed once in numpy at construction and stored as array leaves;
the ODL space and geometry ride along as static metadata for cross-checks
(:meth:`RayTransform.odl_operator`).

Two ways to apply the same matrix (``kernel=``): ``"on_the_fly"`` evaluates the
interpolation weights inside every call (memory O(rays)); ``"sparse"`` stores the matrix
and its transpose once as sliced ELL tables (:mod:`._ell`: a gather and a reduction per
slice; on CPU in float32 a native kernel that applies each entry to a whole batch of
images, :mod:`._ell_native`) at O(non-zeros) memory (64x64 / 30 views: 4 MB; 256x256 /
60 views: ~120 MB).
On a 2-core CPU (``benchmarks/results/ray_kernels.md``) the stored form takes a data
term's gradient 1.5-3.5x faster for one image at 64x64 to 256x256 (up to 6.5x for four
under ``vmap``; sliced tables: a single padded
forward table was slower than the on-the-fly kernel at 256x256). ``"auto"`` stores it on
CPU while both tables (padded) stay within :data:`SPARSE_MAX_ENTRIES` entries, and
computes on the fly on accelerators (the kernels
measured there; the stored form has not been). The stored weights are computed in JAX's
default float at construction: build the operator after enabling ``jax_enable_x64`` to
get float64 weights.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _ell, _fan, _joseph
from .base import LinearOperator, operator_dataclass, static_field

__all__ = ["RayTransform", "sparse_view", "limited_angle", "fan_beam", "KERNELS",
           "SPARSE_MAX_ENTRIES"]

#: ways to apply a ray transform (see the module docstring)
KERNELS = ("auto", "sparse", "on_the_fly")
#: ``kernel="auto"`` stores the matrix on CPU while each ELL table (padded entries) stays
#: within this (2^24: 128 MB per table in float32 + int32; 256x256 / 60 views: ~7.6M)
SPARSE_MAX_ENTRIES = 2 ** 24


# --------------------------------------------------------------------------------------
# Static metadata
# --------------------------------------------------------------------------------------
class OdlSetup:
    """The ODL space and geometry of a ray transform, compared by value for jit caching.

    ODL geometries compare by identity; this wrapper compares (and hashes) a key made of
    the space, the geometry's type and repr, and its exact angle and detector grids.
    """

    __slots__ = ("space", "geometry", "_key")

    def __init__(self, space, geometry):
        self.space = space
        self.geometry = geometry
        self._key = (space, type(geometry).__name__, repr(geometry),
                     np.asarray(geometry.angles, np.float64).tobytes(),
                     np.asarray(geometry.det_partition.meshgrid[0], np.float64).tobytes())

    def __eq__(self, other):
        return isinstance(other, OdlSetup) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"OdlSetup(space={self.space!r}, geometry={self.geometry!r})"


class Plan(NamedTuple):
    """Static shape information of a ray transform (hashable)."""

    kind: str                 # 'parallel' or 'fan'
    shape: tuple              # image shape
    num_angles: int
    num_det: int
    num_major0: int           # angles (parallel) or rays (fan) sampled along axis 0
    num_cand: int             # parallel: detector cells that can see one pixel


class ParallelTables(NamedTuple):
    """Per-angle Joseph tables (see ``_joseph``)."""

    group: Any                # (A,) 0: sampled along axis 0 of x, 1: along axis 1
    rows: Any                 # (A, max(shape)): c0 + k * dck
    steps: Any                # (A, D): s * dcs
    dcs: Any
    inv_dcs: Any
    length: Any


class FanTables(NamedTuple):
    """Per-ray line-kernel tables, rays ordered axis-0 group first (see ``_fan``)."""

    c0: Any
    dc: Any
    length: Any
    c0_fix: Any               # int32 fixed-point c0 and dc (see ``_fan``)
    dc_fix: Any
    inverse: Any              # position of each original ray (flattened) in that order


# --------------------------------------------------------------------------------------
# Validation and geometry tables (numpy, float64)
# --------------------------------------------------------------------------------------
def _check_space(space):
    import odl

    if not isinstance(space, odl.DiscretizedSpace):
        raise TypeError(f"'space' must be an odl DiscretizedSpace, got {type(space).__name__}")
    if space.ndim != 2:
        raise ValueError(f"'space' must be 2D, got a {space.ndim}D space")
    if not space.is_uniform:
        raise ValueError("'space' must be uniformly discretized")


def _check_geometry(geometry):
    from odl.applications.tomo import FanBeamGeometry, Parallel2dGeometry

    if isinstance(geometry, Parallel2dGeometry):
        kind = "parallel"
    elif isinstance(geometry, FanBeamGeometry):
        if geometry.det_curvature_radius is not None:
            raise ValueError("'geometry': only flat fan-beam detectors are supported")
        kind = "fan"
    else:
        raise TypeError("'geometry' must be an odl.applications.tomo Parallel2dGeometry or "
                        f"FanBeamGeometry, got {type(geometry).__name__}")
    if not geometry.det_partition.is_uniform:
        raise ValueError("'geometry' must have a uniformly sampled detector")
    return kind


def _index_coords(space, points):
    """Physical points (..., 2) -> fractional pixel indices (..., 2)."""
    lo = np.asarray(space.min_pt, np.float64)
    h = np.asarray(space.cell_sides, np.float64)
    return (points - lo) / h - 0.5


def _line_tables(space, points, directions):
    """Sampling tables of lines through ``points`` along unit ``directions`` (..., 2).

    Returns ``major0`` (bool: sampled along axis 0), ``c0`` (crossing of the minor axis
    at major index 0), ``dc`` (its change per major index) and ``length`` (ray length per
    major step), all in the convention of ``_joseph`` / ``_fan``.
    """
    h = np.asarray(space.cell_sides, np.float64)
    u, v = np.moveaxis(_index_coords(space, points), -1, 0)
    d0, d1 = np.moveaxis(directions, -1, 0)
    major0 = np.abs(d0) > np.abs(d1)            # ASTRA's tie rule: equal -> axis 1
    with np.errstate(divide="ignore", invalid="ignore"):
        du, dv = d0 / h[0], d1 / h[1]
        dc = np.where(major0, dv / du, du / dv)
        c0 = np.where(major0, v - u * dc, u - v * dc)
        length = np.where(major0, h[0] / np.abs(d0), h[1] / np.abs(d1))
    return major0, c0, dc, length


def _parallel_tables(space, geometry):
    angles = np.asarray(geometry.angles, np.float64)
    s = np.asarray(geometry.det_partition.meshgrid[0], np.float64)
    ds = float(geometry.det_partition.cell_sides[0])
    pts = np.stack([geometry.det_point_position(angles, s[0]),
                    geometry.det_point_position(angles, s[0] + ds)], axis=1)  # (A, 2, 2)
    dirs = geometry.det_to_src(angles, s[0])[:, None, :]
    major0, c0, dc, length = _line_tables(space, pts, np.broadcast_to(dirs, pts.shape))
    major0 = major0[:, 0]
    dcs = c0[:, 1] - c0[:, 0]
    if np.any(np.abs(dcs) < 1e-6):
        raise ValueError("'geometry': detector cells do not move across the rays")
    k = np.arange(max(space.shape))
    tables = ParallelTables(
        group=(~major0).astype(np.int32),
        rows=c0[:, :1] + k[None, :] * dc[:, :1],
        steps=np.arange(s.size)[None, :] * dcs[:, None],
        dcs=dcs, inv_dcs=1.0 / dcs, length=length[:, 0])
    plan = Plan("parallel", tuple(space.shape), angles.size, s.size,
                int(major0.sum()), _joseph.num_candidates(dcs))
    return tables, plan


def _fan_tables(space, geometry):
    angles = np.asarray(geometry.angles, np.float64)
    s = np.asarray(geometry.det_partition.meshgrid[0], np.float64)
    pts = geometry.det_point_position(angles[:, None], s[None, :])           # (A, D, 2)
    src = geometry.src_position(angles)[:, None, :]
    dirs = src - pts
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    major0, c0, dc, length = (a.ravel() for a in _line_tables(space, pts, dirs))
    order = np.argsort(~major0, kind="stable")
    c0, dc, length = c0[order], dc[order], length[order]
    c0_fix, dc_fix = _fan.fixed_point(c0, dc)
    tables = FanTables(c0=c0, dc=dc, length=length, c0_fix=c0_fix, dc_fix=dc_fix,
                       inverse=np.argsort(order).astype(np.int32))
    plan = Plan("fan", tuple(space.shape), angles.size, s.size, int(major0.sum()), 0)
    return tables, plan


# --------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------
@operator_dataclass
class RayTransform(LinearOperator):
    """2D ray transform ``A`` from an ODL ``DiscretizedSpace`` and 2D geometry, in JAX.

    ``RayTransform(space, geometry)`` with ``geometry`` an
    ``odl.applications.tomo.Parallel2dGeometry`` or flat ``FanBeamGeometry``. Maps images
    of ``space.shape`` to sinograms ``(num_angles, num_det)``; matches ODL's
    ``RayTransform(space, geometry, impl='astra_cpu')`` (see :meth:`odl_operator`).
    The adjoint is the Euclidean transpose (no ODL cell-volume weights).

    ``kernel`` picks how the matrix is applied (module docstring): ``"sparse"`` (stored
    ELL tables), ``"on_the_fly"`` (interpolation inside each call) or ``"auto"``
    (sparse on CPU while both tables stay within :data:`SPARSE_MAX_ENTRIES`). Both are
    the same matrix to float rounding; :attr:`kernel` says which one an operator uses.
    The stored tables are computed from the geometry ``tables`` at construction: a
    derivative with respect to the geometry tables needs ``kernel="on_the_fly"`` (with
    the stored matrix it is one with respect to the stored weights, ``ell.fwd.val``), and a
    copy made by ``dataclasses.replace`` rebuilds them from its own ``tables``.
    """

    setup: Any = static_field()
    tables: Any = None
    plan: Any = static_field(default=None)
    ell: Any = None                   # an _ell.EllPair when kernel == "sparse"

    def __init__(self, space=None, geometry=None, *, kernel: str = "auto", setup=None,
                 tables=None, plan=None, ell=None):
        if ell is not None and kernel == "auto":      # dataclasses.replace of a sparse one
            kernel = "sparse"
        if kernel not in KERNELS:
            raise ValueError(f"RayTransform: 'kernel' must be one of {KERNELS}, got {kernel!r}")
        if setup is None:                        # public construction from ODL objects
            _check_space(space)
            kind = _check_geometry(geometry)
            build = _parallel_tables if kind == "parallel" else _fan_tables
            tables, plan = build(space, geometry)
            setup = OdlSetup(space, geometry)
        elif space is not None or geometry is not None:
            raise TypeError("RayTransform: pass either (space, geometry) or setup=...")
        object.__setattr__(self, "setup", setup)
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "plan", plan)
        use_sparse = kernel == "sparse" or (
            kernel == "auto" and jax.default_backend() == "cpu"
            and _sparse_entries_bound(plan) <= SPARSE_MAX_ENTRIES)
        stored = _sparse_matrix(tables, plan) if use_sparse else None
        if (kernel == "auto" and stored is not None
                and max(stored.fwd.size, stored.adj.size) > SPARSE_MAX_ENTRIES):
            stored = None          # the transposed table outgrew the bound (narrow cells)
        object.__setattr__(self, "ell", stored)

    @property
    def kernel(self) -> str:
        """``"sparse"`` or ``"on_the_fly"``: how this operator applies its matrix."""
        return "sparse" if self.ell is not None else "on_the_fly"

    def canonical(self) -> "RayTransform":
        """This operator without its stored sparse matrix (derived from the tables), as
        :func:`~uqrecon.operators.base.canonical_form` hashes it.

        Returns:
            The same ray transform with ``kernel="on_the_fly"``.
        """
        return RayTransform(kernel="on_the_fly", setup=self.setup, tables=self.tables,
                            plan=self.plan)

    # -- metadata ---------------------------------------------------------------------
    @property
    def space(self):
        return self.setup.space

    @property
    def geometry(self):
        return self.setup.geometry

    @property
    def domain_shape(self):
        return self.plan.shape

    @property
    def range_shape(self):
        return (self.plan.num_angles, self.plan.num_det)

    def odl_operator(self, impl: str = "astra_cpu"):
        """ODL's own ``RayTransform`` for this space and geometry (float32 only).

        Note ODL's ``adjoint`` carries cell-volume weights: it equals
        ``(w_sino / w_vol) * A^T``; use ``weighting=1.0`` spaces for the plain transpose.

        Args:
            impl: ODL back-end, e.g. ``'astra_cpu'`` or ``'skimage'``.

        Returns:
            An ``odl.applications.tomo.RayTransform``.
        """
        from odl.applications.tomo import RayTransform as OdlRayTransform

        return OdlRayTransform(self.space, self.geometry, impl=impl)

    #: the hand-written adjoints beat autodiff's transpose of the forward kernel inside
    #: gradients with XLA's default CPU flags (``benchmarks/likelihood_gradient.py``:
    #: parallel beam 1.2-1.5x for one image and 1.3-1.4x for four under vmap, fan beam
    #: 1.1-1.45x and 1.1-1.6x)
    adjoint_for_gradients = True

    # -- batching ---------------------------------------------------------------------
    def __call__(self, x):
        return self._mapped(self._apply, x, self.domain_shape, "x")

    def adjoint(self, y):
        """Apply the exact adjoint (Euclidean transpose) ``A^T``.

        Args:
            y: sinogram of the range shape (leading batch axes allowed).

        Returns:
            ``A^T y``, of the image shape.
        """
        return self._mapped(self._adjoint, y, self.range_shape, "y")

    def _mapped(self, fn, x, core, name):
        """Leading batch axes run one item at a time (``lax.map``): vmapping the gathers
        batches them along a major axis, which measured several times slower on CPU."""
        x = jnp.asarray(x)
        nd = len(core)
        if x.ndim < nd or tuple(x.shape[x.ndim - nd:]) != tuple(core):
            raise ValueError(f"RayTransform: argument '{name}' has shape {tuple(x.shape)}, "
                             f"expected {tuple(core)} (optionally with leading batch axes)")
        if x.ndim == nd:
            return fn(x)
        out = jax.lax.map(fn, x.reshape(-1, *core))
        return out.reshape(*x.shape[:x.ndim - nd], *out.shape[1:])

    # -- kernels ----------------------------------------------------------------------
    def _apply(self, x):
        x = _as_float(x)
        if self.ell is not None:
            return self.ell.matvec(x.reshape(-1)).reshape(self.range_shape)
        p, t = self.plan, self.tables
        if p.kind == "parallel":
            M, N = p.shape
            S = max(M, N)
            sq = jnp.pad(x, ((0, S - M), (0, S - N)))
            return _joseph.forward(jnp.stack([sq, sq.T]), t.group, t.rows, t.steps,
                                   t.length)
        return self._fan_apply(x, runs=True)

    def _fan_apply(self, x, runs):
        """Fan-beam forward; ``runs`` picks the gather pattern (same matrix, see ``_fan``)."""
        p, t = self.plan, self.tables
        m = p.num_major0
        parts = []
        if m > 0:
            parts.append(_fan.forward(x, *(a[:m] for a in t[:5]), runs=runs))
        if m < t.c0.shape[0]:
            parts.append(_fan.forward(x.T, *(a[m:] for a in t[:5]), runs=runs))
        rays = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        return jnp.take(rays, jnp.asarray(t.inverse)).reshape(self.range_shape)

    def _adjoint(self, y):
        y = _as_float(y)
        if self.ell is not None:
            return self.ell.rmatvec(y.reshape(-1)).reshape(self.domain_shape)
        if self.plan.kind != "parallel":
            # transpose of the two-gather form: its scatters beat those of the run gather
            x0 = jnp.zeros(self.domain_shape, y.dtype)
            (xt,) = jax.linear_transpose(lambda v: self._fan_apply(v, runs=False), x0)(y)
            return xt
        p, t = self.plan, self.tables
        M, N = p.shape
        parts = _joseph.transpose(y, t.group, t.rows, t.dcs, t.inv_dcs, t.length,
                                  max(M, N), p.num_cand)
        return (parts[0] + parts[1].T)[:M, :N]


def _sparse_entries_bound(plan) -> int:
    """Entries of the larger ELL table, bounded before building it: a ray holds at most
    two weights per row of its major axis; with parallel beams a pixel is seen by at most
    ``num_cand`` cells per view. (For fan beams the transposed table's size is known only
    once built, and checked then.)"""
    M, N = plan.shape
    forward = plan.num_angles * plan.num_det * 2 * max(M, N)
    if plan.kind != "parallel":
        return forward
    return max(forward, M * N * plan.num_angles * plan.num_cand)


def _sparse_matrix(tables, plan) -> _ell.EllPair:
    """The ray transform's matrix as an :class:`_ell.EllPair` (numpy, once), with the same
    node and weight rules as the on-the-fly kernels, evaluated in JAX's default float
    (float32, or float64 with ``jax_enable_x64``): the weights are those the kernels
    compute for images of that dtype."""
    M, N = plan.shape
    shape = (plan.num_angles * plan.num_det, M * N)
    t = tables
    dtype = np.dtype(jnp.result_type(float)).type   # what the kernels compute in by default
    if plan.kind == "parallel":
        rays, pixels, weights = _joseph.coo(t.group, t.rows, t.steps, t.length, (M, N),
                                            dtype)
        return _ell.ell_pair_from_coo(rays, pixels, weights, shape)
    m = plan.num_major0
    order = np.argsort(np.asarray(t.inverse))   # table position -> original ray number
    parts = []
    for lo, hi, transposed in ((0, m, False), (m, t.c0.shape[0], True)):
        if hi <= lo:
            continue
        r, pix, w = _fan.coo(*(np.asarray(a)[lo:hi] for a in t[:5]),
                             (N, M) if transposed else (M, N), dtype)
        if transposed:                         # pixel (k, j) of x.T is x[j, k]
            k, j = np.divmod(pix, M)
            pix = j * N + k
        parts.append((order[lo + r], pix, w))
    rays, pixels, weights = (np.concatenate(a) for a in zip(*parts))
    return _ell.ell_pair_from_coo(rays, pixels, weights, shape)


def _as_float(x):
    """Floating input as is (float32 or float64); anything else to the default float."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


# --------------------------------------------------------------------------------------
# Factories (images on [-1, 1]^2 by default)
# --------------------------------------------------------------------------------------
def _space(shape, extent):
    import odl

    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"'shape' must be a pair of positive ints, got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be a pair of positive ints, got {shape!r}")
    extent = float(extent)
    if not extent > 0:
        raise ValueError(f"'extent' must be positive, got {extent}")
    # square pixels (ASTRA needs them): the longer axis spans [-extent, extent]
    h = 2.0 * extent / max(shape)
    half = (0.5 * h * shape[0], 0.5 * h * shape[1])
    return odl.uniform_discr([-half[0], -half[1]], [half[0], half[1]], shape,
                             dtype="float32")


def _num(name, value):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"'{name}' must be a positive integer, got {value!r}")
    return int(value)


def _angle_partition(angle_range, num_angles):
    import odl

    lo, hi = (float(a) for a in angle_range)
    if not hi > lo:
        raise ValueError(f"'angle_range' must be a non-empty interval, got {angle_range!r}")
    return odl.uniform_partition(lo, hi, _num("num_angles", num_angles))


def _det_partition(space, num_det, det_width):
    """Detector partition; by default cells of one pixel side covering the diagonal.

    Cells no smaller than a pixel keep every pixel within two cells of each view, which
    the gather-only adjoint exploits (see ``_joseph.num_candidates``).
    """
    import odl

    h = float(min(space.cell_sides))
    diag = float(np.hypot(*(space.max_pt - space.min_pt)))
    if det_width is not None and not float(det_width) > 0:
        raise ValueError(f"'det_width' must be positive, got {det_width}")
    if num_det is None:
        num_det = int(math.ceil(diag / h - 1e-9)) if det_width is None else int(
            max(1, math.floor(float(det_width) / h + 1e-9)))
    num_det = _num("num_det", num_det)
    if det_width is None:
        det_width = max(num_det * h, diag)
    return odl.uniform_partition(-det_width / 2, det_width / 2, num_det)


def sparse_view(shape, num_angles, *, num_det=None, det_width=None, extent=1.0,
                angle_range=(0.0, math.pi), kernel: str = "auto"):
    """Parallel-beam ray transform with ``num_angles`` uniform views over ``angle_range``.

    The image covers ``[-extent, extent]^2`` (the longer axis, for non-square shapes);
    by default the detector has cells of one pixel side and spans the image diagonal.

    Args:
        shape: image shape ``(H, W)``.
        num_angles: number of views.
        num_det: number of detector cells (None: cells of about one pixel side).
        det_width: total detector width in image units (None: wide enough to see the whole
            image).
        extent: half-width of the (longer side of the) image, which covers ``[-extent,
            extent]``.
        angle_range: ``(start, stop)`` of the view angles in radians.
        kernel: ``"auto"``, ``"sparse"`` or ``"on_the_fly"`` (:class:`RayTransform`).

    Returns:
        A parallel-beam :class:`RayTransform`.
    """
    from odl.applications.tomo import Parallel2dGeometry

    space = _space(shape, extent)
    apart = _angle_partition(angle_range, num_angles)
    return RayTransform(space, Parallel2dGeometry(apart, _det_partition(space, num_det,
                                                                        det_width)),
                        kernel=kernel)


def limited_angle(shape, angle_range=(0.0, math.pi / 2), num_angles=None, *, num_det=None,
                  det_width=None, extent=1.0, kernel: str = "auto"):
    """Parallel-beam ray transform over ``angle_range`` (default ``[0, pi/2)``).

    ``num_angles`` defaults to one view per degree of the range.

    Args:
        shape: image shape ``(H, W)``.
        angle_range: ``(start, stop)`` of the view angles in radians.
        num_angles: number of views (None: one per degree).
        num_det: number of detector cells (None: cells of about one pixel side).
        det_width: total detector width in image units (None: wide enough to see the whole
            image).
        extent: half-width of the (longer side of the) image, which covers ``[-extent,
            extent]``.
        kernel: ``"auto"``, ``"sparse"`` or ``"on_the_fly"`` (:class:`RayTransform`).

    Returns:
        A parallel-beam :class:`RayTransform`.
    """
    lo, hi = (float(a) for a in angle_range)
    if num_angles is None:
        num_angles = max(1, int(round(math.degrees(hi - lo))))
    return sparse_view(shape, num_angles, num_det=num_det, det_width=det_width,
                       extent=extent, angle_range=(lo, hi), kernel=kernel)


def fan_beam(shape, num_angles, src_radius, det_radius, *, num_det=None, det_width=None,
             extent=1.0, angle_range=(0.0, 2 * math.pi), kernel: str = "auto"):
    """Flat-detector fan-beam ray transform with ``num_angles`` views over ``angle_range``.

    The detector (default) is wide enough to see the whole image (magnified by
    ``(src_radius + det_radius) / src_radius``) with ~one cell per magnified pixel.

    Args:
        shape: image shape ``(H, W)``.
        num_angles: number of views.
        src_radius: distance from the source to the rotation centre.
        det_radius: distance from the rotation centre to the detector.
        num_det: number of detector cells (None: cells of about one pixel side).
        det_width: total detector width in image units (None: wide enough to see the whole
            image).
        extent: half-width of the (longer side of the) image, which covers ``[-extent,
            extent]``.
        angle_range: ``(start, stop)`` of the source angles in radians.
        kernel: ``"auto"``, ``"sparse"`` or ``"on_the_fly"`` (:class:`RayTransform`).

    Returns:
        A fan-beam :class:`RayTransform`.
    """
    from odl.applications.tomo import FanBeamGeometry

    src_radius, det_radius = float(src_radius), float(det_radius)
    if not src_radius > 0:
        raise ValueError(f"'src_radius' must be positive, got {src_radius}")
    if not det_radius > 0:
        raise ValueError(f"'det_radius' must be positive, got {det_radius}")
    space = _space(shape, extent)
    radius = 0.5 * float(np.hypot(*(space.max_pt - space.min_pt)))
    if not src_radius > radius:
        raise ValueError(f"'src_radius' ({src_radius}) must exceed the image's radius "
                         f"({radius:.4g}) so the source lies outside the image")
    mag = (src_radius + det_radius) / src_radius
    if det_width is None:
        # the fan through the image's circumcircle, magnified onto the detector
        half = radius * (src_radius + det_radius) / math.sqrt(src_radius**2 - radius**2)
        det_width = 2.0 * half
    if num_det is None:
        num_det = int(math.ceil(float(det_width) / (mag * min(space.cell_sides))))
    apart = _angle_partition(angle_range, num_angles)
    dpart = _det_partition(space, num_det, det_width)
    return RayTransform(space, FanBeamGeometry(apart, dpart, src_radius=src_radius,
                                               det_radius=det_radius), kernel=kernel)

"""Equivariant and naive (parametric) bootstrap of any reconstruction map.

Tachella & Pereyra, "Equivariant Bootstrapping for Uncertainty Quantification in Imaging
Inverse Problems", AISTATS 2024 (arXiv 2310.11838). Given data ``y = A x* + n`` and a
reconstruction map ``f`` (FBP, the MAP of a linear-Gaussian model, a trained network),
``x_hat = f(y)``. Each resample ``i`` draws a group element ``g_i`` and computes

    y_i = A T_g x_hat + n_i,          n_i ~ N(0, sigma^2 I)     (resimulated noise)
    x_i = T_g^{-1} f(y_i)                                      (reconstruct, map back)

The errors ``e_i = x_i - x_hat`` are bootstrap replicates of the estimation error
``x_hat - x*``. The paper's confidence region is the ball ``||x - x_hat||^2 <= q_a``
with ``q_a`` the ``a``-quantile of ``||e_i||^2``; its pixelwise intervals come from the
same errors. The Result therefore stores, as its *draws*, the reflected ("basic
bootstrap") replicates ``x_hat - e_i = 2 x_hat - x_i`` -- plausible truths given the
estimate, so that ``Result.interval`` gives the basic-bootstrap interval
``[2 x_hat - q_hi(x_i), 2 x_hat - q_lo(x_i)]`` and ``mse_ball_coverage(results, truths)``
evaluates exactly the paper's ball ``||x - x_hat||^2 <= quantile_a ||draw - x_hat||^2``.
``center='estimate'`` (default, as in the paper) keeps ``Result.mean = x_hat`` and
``variance = mean_i e_i^2`` (the bootstrap mean squared error per pixel, bias included);
``center='debiased'`` reports the bias-corrected ``mean = x_hat - mean_i e_i`` and the
variance of the draws around it.

Why a group helps: with ``g = identity`` (the naive parametric bootstrap) every ``y_i``
is generated from ``x_hat``, which carries no information on the part of ``x*`` in the
null space of ``A``, and the map's error there is never exercised: ``e_i`` only holds
noise propagation and the bias ``f(A x_hat) - x_hat``, so the naive bootstrap
under-covers when the null space matters (sparse-view CT). Rotating the estimate first,
the reconstruction must recover ``T_g x_hat`` from ``A T_g x_hat``, i.e. ``x_hat`` through
the operator ``A T_g``, whose null space differs from that of ``A`` unless ``A`` is
equivariant to ``g`` (``A T_g = T'_g A``). The bootstrap is informative exactly for the
elements that *move* the null space. For parallel-beam CT with ``K`` views at
``(k + 1/2) pi / K`` (ODL's uniform partition of ``[0, pi)``):

* a flip maps the view angle ``theta`` to ``pi - theta``: the view set is preserved for
  every ``K``, so flips never move the null space;
* a rotation by 90 degrees (and a transpose) shifts the views by ``pi/2 = (K/2)`` view
  steps: for even ``K`` the set is preserved (no information), for odd ``K`` the rotated
  views fall halfway between the measured ones (a 32x32, 9-view operator has a 656-
  dimensional null space; stacked with its 90-degree rotation, 307; with 15 views the
  joint null space is empty);
* circular shifts commute with the continuous Radon transform, but not with the
  discretised one (pixel-grid effects and the wrap-around), so they move the discrete
  null space only partly;
* continuous rotations by angles that are not multiples of the view step move it for
  any ``K`` (bilinear interpolation: ``T_g^{-1}`` is then approximate, as in the paper's
  tomography experiment, which rotates by random angles of a few degrees).

Compile once: the resampling kernel is jitted at module level. ``reconstruct`` and the
forward ``operator`` are pytrees: their array leaves are traced arguments and the rest
(functions, treedefs, static metadata) is a hashable static argument, so a second call
of the same shapes with other data, noise level or arrays compiles nothing. Pass the
reconstruction as a pytree callable (:class:`FBPReconstruction`,
:class:`LinearReconstruction`, :class:`GaussianMeanReconstruction`, or
``jax.tree_util.Partial(module_level_function, *arrays)``); a closure created anew on
every call is a new static argument and recompiles. A reconstruction that cannot be
traced (e.g. ``map_estimate`` with its Python checks) runs with ``traceable=False``:
resampling and the inverse transforms stay compiled, the map is called per resample,
and the draws equal the traceable path's for the same key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.linalg import full_precision
from uqrecon.models.hyper import replace as _replace_field
from uqrecon.operators.base import operator_dataclass, static_field
from uqrecon.result import Result, make_provenance

__all__ = [
    "ImageGroup",
    "GROUPS",
    "image_group",
    "equivariant_bootstrap",
    "naive_bootstrap",
    "FBPReconstruction",
    "LinearReconstruction",
    "GaussianMeanReconstruction",
    "gaussian_mean_reconstruction",
]

#: Named groups accepted by :func:`image_group`.
GROUPS = ("identity", "rot90", "dihedral", "flips", "shift", "rotate")


# --------------------------------------------------------------------------------------
# Groups of image transforms
# --------------------------------------------------------------------------------------
class GroupElement(NamedTuple):
    """One transform ``T_g``: ``x -> flip^f rot90^k rotate_angle roll_(di, dj) x``."""

    rot90: jax.Array     # int32 in 0..3
    flip: jax.Array      # bool (flip along axis 0, applied last)
    shift: jax.Array     # int32 (2,)
    angle: jax.Array     # radians (continuous rotation)


@dataclasses.dataclass(frozen=True)
class ImageGroup:
    """A distribution over transforms of 2-D images (hashable: a static jit argument).

    A draw composes, in this order, a circular shift by ``(di, dj)`` uniform in
    ``[-max_shift, max_shift]^2``, a continuous rotation by an angle uniform in
    ``[-max_angle, max_angle]`` degrees (bilinear, zero outside: the inverse is then
    approximate), a rotation by ``k * 90`` degrees with ``k`` uniform in 0..3 (if
    ``rot90``) and a flip of axis 0 with probability 1/2 (if ``flips``). With
    ``rot90`` and ``flips`` the exact part is the dihedral group D4 (uniform on its 8
    elements). The all-default group is the identity (the naive bootstrap).
    """

    rot90: bool = False
    flips: bool = False
    max_shift: int = 0
    max_angle: float = 0.0

    def __post_init__(self):
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, (int, np.integer)) \
                or self.max_shift < 0:
            raise ValueError(f"ImageGroup: argument 'max_shift' must be an integer >= 0, got "
                             f"{self.max_shift!r}")
        if not (isinstance(self.max_angle, (int, float, np.floating))
                and 0.0 <= float(self.max_angle) <= 180.0):
            raise ValueError(f"ImageGroup: argument 'max_angle' must be a number of degrees in "
                             f"[0, 180], got {self.max_angle!r}")
        object.__setattr__(self, "max_shift", int(self.max_shift))
        object.__setattr__(self, "max_angle", float(self.max_angle))
        object.__setattr__(self, "rot90", bool(self.rot90))
        object.__setattr__(self, "flips", bool(self.flips))

    @property
    def is_identity(self) -> bool:
        return not (self.rot90 or self.flips or self.max_shift or self.max_angle)

    @property
    def name(self) -> str:
        """A readable description, e.g. ``'rot90'``, ``'dihedral+shift(3)'``."""
        parts = []
        if self.rot90 and self.flips:
            parts.append("dihedral")
        elif self.rot90:
            parts.append("rot90")
        elif self.flips:
            parts.append("flips")
        if self.max_angle:
            parts.append(f"rotate({self.max_angle:g}deg)")
        if self.max_shift:
            parts.append(f"shift({self.max_shift})")
        return "+".join(parts) or "identity"

    def check_image(self, shape) -> None:
        """ValueError unless the group acts on images of ``shape``.

        Args:
            shape: image shape.
        """
        if self.is_identity:
            return
        if len(shape) != 2:
            raise ValueError(f"group {self.name!r} acts on 2-D images, the estimate has shape "
                             f"{tuple(shape)}")
        if self.rot90 and shape[0] != shape[1]:
            raise ValueError(f"group {self.name!r}: 90-degree rotations need a square image, "
                             f"got {tuple(shape)}")

    def sample(self, key, num: int, dtype) -> GroupElement:
        """``num`` random elements (leading axis ``num``; jit-able, ``num`` static).

        All parts come from one uniform draw (each distinct random draw is a threefry
        kernel that XLA compiles separately, and slowly).

        Args:
            key: JAX PRNG key.
            num: number of elements.
            dtype: float dtype of the rotation angles.

        Returns:
            A ``GroupElement`` whose fields have a leading axis ``num``.
        """
        u = jax.random.uniform(key, (num, 5), jnp.float32)
        zero = jnp.zeros((num,), jnp.int32)
        rot = jnp.minimum((4 * u[:, 0]).astype(jnp.int32), 3) if self.rot90 else zero
        flip = u[:, 1] < 0.5 if self.flips else jnp.zeros((num,), bool)
        width = 2 * self.max_shift + 1
        shift = (jnp.minimum((width * u[:, 2:4]).astype(jnp.int32), width - 1) - self.max_shift
                 if self.max_shift else jnp.zeros((num, 2), jnp.int32))
        angle = ((2 * u[:, 4] - 1).astype(dtype) * math.radians(self.max_angle)
                 if self.max_angle else jnp.zeros((num,), dtype))
        return GroupElement(rot, flip, shift, angle)

    def apply(self, g: GroupElement, x):
        """``T_g x``.

        Args:
            g: one group element.
            x: image.

        Returns:
            The transformed image.
        """
        if self.max_shift:
            x = jnp.roll(x, g.shift, axis=(0, 1))
        if self.max_angle:
            x = _rotate(x, g.angle)
        if self.rot90:
            x = jax.lax.switch(g.rot90, [functools.partial(jnp.rot90, k=k) for k in range(4)], x)
        if self.flips:
            x = jnp.where(g.flip, x[::-1], x)
        return x

    def inverse(self, g: GroupElement, x):
        """``T_g^{-1} x`` (exact except for continuous rotations: bilinear).

        Args:
            g: one group element.
            x: image.

        Returns:
            The image transformed by the inverse of ``g``.
        """
        if self.flips:
            x = jnp.where(g.flip, x[::-1], x)
        if self.rot90:
            x = jax.lax.switch(g.rot90, [functools.partial(jnp.rot90, k=-k) for k in range(4)],
                               x)
        if self.max_angle:
            x = _rotate(x, -g.angle)
        if self.max_shift:
            x = jnp.roll(x, -g.shift, axis=(0, 1))
        return x


def _rotate(x, angle):
    """Rotate a 2-D image by ``angle`` radians about its centre (bilinear, zero outside)."""
    h, w = x.shape
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = jnp.meshgrid(jnp.arange(h, dtype=x.dtype) - ci, jnp.arange(w, dtype=x.dtype) - cj,
                          indexing="ij")
    c, s = jnp.cos(angle), jnp.sin(angle)
    src_i = c * ii + s * jj + ci        # output pixel p reads the input at R(-angle) p
    src_j = -s * ii + c * jj + cj
    return jax.scipy.ndimage.map_coordinates(x, [src_i, src_j], order=1, mode="constant",
                                             cval=0.0)


def image_group(name: str = "rot90", *, max_shift: int = 2, max_angle: float = 10.0) -> ImageGroup:
    """A named :class:`ImageGroup`.

    Args:
        name: ``'identity'`` (naive bootstrap), ``'rot90'`` (rotations by multiples of 90
            degrees), ``'dihedral'`` (rotations and flips, D4), ``'flips'``, ``'shift'``
            (circular shifts up to ``max_shift`` pixels per axis) or ``'rotate'``
            (continuous rotations up to ``max_angle`` degrees); names joined by ``'+'``
            combine, e.g. ``'rot90+shift'``.
        max_shift: largest shift in pixels for ``'shift'``.
        max_angle: largest rotation in degrees for ``'rotate'``.

    Returns:
        The group (a hashable, frozen dataclass).
    """
    if isinstance(name, ImageGroup):
        return name
    if not isinstance(name, str):
        raise TypeError(f"argument 'group' must be a name or an ImageGroup, got "
                        f"{type(name).__name__}")
    fields = dict(rot90=False, flips=False, max_shift=0, max_angle=0.0)
    for part in name.split("+"):
        if part not in GROUPS:
            raise ValueError(f"argument 'group': unknown group {part!r}; choose from {GROUPS} "
                             "(joined by '+')")
        if part in ("rot90", "dihedral"):
            fields["rot90"] = True
        if part in ("flips", "dihedral"):
            fields["flips"] = True
        if part == "shift":
            fields["max_shift"] = max_shift
        if part == "rotate":
            fields["max_angle"] = max_angle
    return ImageGroup(**fields)


# --------------------------------------------------------------------------------------
# Reconstruction maps as pytrees
# --------------------------------------------------------------------------------------
@operator_dataclass
class FBPReconstruction:
    """``y -> fbp(operator, y, filter)`` as a pytree (parallel-beam RayTransform)."""

    operator: Any
    filter: str = static_field(default="ramlak")

    def __call__(self, y):
        from uqrecon.operators.fbp import fbp
        return fbp(self.operator, y, filter=self.filter)


@full_precision
@jax.jit
def response_matrix(reconstruct, unit_data):
    """A linear reconstruction's responses to a batch of data, ``vmap(reconstruct)``,
    jitted once at module level (``reconstruct`` a pytree such as
    :class:`FBPReconstruction`). With ``unit_data`` the unit vectors of the data space,
    shaped ``(m, *range_shape)``, the result is the reconstruction's matrix, one row per
    datum (``(m, *image_shape)``).

    Args:
        reconstruct: a linear reconstruction map that is a pytree (e.g.
            :class:`FBPReconstruction`).
        unit_data: a batch of data, ``(m, *range_shape)``.

    Returns:
        The reconstructions, ``(m, *image_shape)``.
    """
    return jax.vmap(reconstruct)(unit_data)


@operator_dataclass
class LinearReconstruction:
    """The affine map ``y -> reshape(matrix @ ravel(y)) + offset`` (``offset`` image-shaped)."""

    matrix: jax.Array
    offset: jax.Array

    def __call__(self, y):
        return (self.matrix @ jnp.ravel(y)).reshape(self.offset.shape) + self.offset


@operator_dataclass
class GaussianMeanReconstruction:
    """``y ->`` posterior mean (= MAP) of a linear-Gaussian posterior given data ``y``, by
    CG on its :class:`~uqrecon.models.posterior.GaussianForm` (prior and noise fixed)."""

    form: Any
    maxiter: int = static_field(default=None)

    def __call__(self, y):
        form = _replace_field(self.form, data=jnp.asarray(y, self.form.data.dtype))
        return form.mean_cg(maxiter=self.maxiter)


@full_precision
def gaussian_mean_reconstruction(posterior, maxiter: int | None = None) -> GaussianMeanReconstruction:
    """The MAP (= posterior mean) map ``y -> x_map(y)`` of a linear-Gaussian ``posterior``.

    Args:
        posterior: a :class:`~uqrecon.Posterior` with a Gaussian likelihood and Gaussian
            priors (GMRF, GaussianPrior).
        maxiter: CG iteration cap (default ``10 n``).

    Returns:
        A pytree callable for :func:`equivariant_bootstrap`.
    """
    form = posterior.gaussian_form() if hasattr(posterior, "gaussian_form") else None
    if form is None:
        raise ValueError("argument 'posterior' must be linear-Gaussian (Gaussian likelihood, "
                         "Gaussian priors); for other posteriors pass a callable such as "
                         "lambda y: map_estimate(...)[0] with traceable=False")
    return GaussianMeanReconstruction(form, None if maxiter is None else int(maxiter))


# --------------------------------------------------------------------------------------
# Pytree partition: array leaves traced, everything else static
# --------------------------------------------------------------------------------------
class _Static(NamedTuple):
    treedef: Any
    leaves: tuple


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _partition(tree, name):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [leaf if _is_array(leaf) else None for leaf in leaves]
    static = _Static(treedef, tuple(None if _is_array(leaf) else leaf for leaf in leaves))
    try:
        hash(static)
    except TypeError as e:
        raise TypeError(f"argument '{name}' holds a non-array part that is not hashable "
                        f"({e}); make it a pytree whose arrays are leaves") from None
    return dynamic, static


def _combine(dynamic, static: _Static):
    leaves = [d if s is None else s for d, s in zip(dynamic, static.leaves)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


# --------------------------------------------------------------------------------------
# Compiled kernels (module level; every argument a pytree or a static)
# --------------------------------------------------------------------------------------
def _noise(key, shape, dtype, sigma):
    if jnp.issubdtype(dtype, jnp.complexfloating):
        real = jnp.finfo(dtype).dtype
        k1, k2 = jax.random.split(key)
        z = jax.random.normal(k1, shape, real) + 1j * jax.random.normal(k2, shape, real)
        return (sigma.astype(real) * z).astype(dtype)
    return sigma.astype(dtype) * jax.random.normal(key, shape, dtype)


def _draw_all(operator, x_hat, sigma, key, group: ImageGroup, num_resamples: int):
    """All random numbers of a run, drawn unbatched (threefry under vmap/map compiles
    several times slower): ``num_resamples`` group elements and noise vectors."""
    k_group, k_noise = jax.random.split(key)
    elements = group.sample(k_group, num_resamples, x_hat.dtype)
    y_struct = jax.eval_shape(operator, x_hat)
    noise = _noise(k_noise, (num_resamples, *y_struct.shape), y_struct.dtype, sigma)
    return elements, noise


def _simulate(operator, x_hat, g, noise, group: ImageGroup):
    """``y = A T_g x_hat + noise``."""
    # the barrier keeps XLA from fusing the transform into the projector (slower compiles)
    return operator(jax.lax.optimization_barrier(group.apply(g, x_hat))) + noise


@functools.partial(jax.jit, static_argnames=("recon_static", "op_static", "group",
                                             "num_resamples", "batch_size"))
def _resample_traced(recon_dyn, recon_static, op_dyn, op_static, x_hat, sigma, key, *,
                     group, num_resamples, batch_size):
    """``(x_i, g_i)`` for ``num_resamples`` resamples, reconstruction inside the kernel."""
    reconstruct = _combine(recon_dyn, recon_static)
    operator = _combine(op_dyn, op_static)
    elements, noise = _draw_all(operator, x_hat, sigma, key, group, num_resamples)

    def one(args):
        g, n = args
        x = jnp.asarray(reconstruct(_simulate(operator, x_hat, g, n, group)))
        return group.inverse(g, jax.lax.optimization_barrier(x.astype(x_hat.dtype)))

    if batch_size is None:
        return jax.lax.map(one, (elements, noise)), elements
    # pad to a multiple of the batch (extra resamples dropped): lax.map would otherwise
    # compile the body twice, once for the remainder
    pad = -num_resamples % batch_size
    padded = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a[:pad]]) if pad else a,
                                    (elements, noise))
    return jax.lax.map(one, padded, batch_size=batch_size)[:num_resamples], elements


@functools.partial(jax.jit, static_argnames=("op_static", "group", "num_resamples"))
def _simulate_all(op_dyn, op_static, x_hat, sigma, key, *, group, num_resamples):
    """Resampled data ``y_i`` and elements ``g_i`` (same draws as :func:`_resample_traced`)."""
    operator = _combine(op_dyn, op_static)
    elements, noise = _draw_all(operator, x_hat, sigma, key, group, num_resamples)
    ys = jax.vmap(lambda g, n: _simulate(operator, x_hat, g, n, group))(elements, noise)
    return ys, elements


@functools.partial(jax.jit, static_argnames=("group",))
def _inverse_all(x, g, *, group):
    return jax.vmap(group.inverse)(g, x)


@functools.partial(jax.jit, static_argnames=("recon_static",))
def _reconstruct_traced(recon_dyn, recon_static, y):
    return _combine(recon_dyn, recon_static)(y)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------
_CENTERS = ("estimate", "debiased")


def _check_dtype(dtype, data):
    if dtype is None:
        real = np.dtype(jnp.real(jnp.asarray(data)).dtype) if jnp.iscomplexobj(data) else \
            np.dtype(jnp.asarray(data).dtype)
        dtype = real if np.issubdtype(real, np.floating) else np.dtype(np.float32)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"argument 'dtype' must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"argument 'dtype' must be float32 or float64, got {dtype}")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("argument 'dtype' is float64 but JAX runs in 32-bit mode; enable "
                         "jax_enable_x64 first")
    return dtype


def _check_sigma(sigma, data_shape, dtype):
    s = np.asarray(sigma, np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"argument 'sigma' must be > 0 and finite, got {sigma!r}")
    try:
        np.broadcast_to(s, data_shape)
    except ValueError:
        raise ValueError(f"argument 'sigma' of shape {s.shape} does not broadcast to the data "
                         f"shape {tuple(data_shape)}") from None
    return jnp.asarray(s, dtype)


def _as_key(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key)), int(key)
    if not isinstance(key, jax.Array):
        raise TypeError(f"argument 'key' must be a JAX PRNG key or an integer seed, got "
                        f"{type(key).__name__}")
    return key, None


@full_precision
def equivariant_bootstrap(reconstruct: Callable, operator: Callable, data, sigma, key, *,
                          group="rot90", num_resamples: int = 100, estimate=None,
                          traceable: bool = True, batch_size: int | None = 16,
                          center: str = "estimate", dtype=None) -> Result:
    """Equivariant bootstrap (Tachella & Pereyra 2024) of a reconstruction map.

    Args:
        reconstruct: the map ``y -> x_hat``. With ``traceable=True`` a jit-traceable
            pytree callable (see the module docstring); otherwise any callable.
        operator: the forward model ``x -> A x`` (a :class:`~uqrecon.operators.LinearOperator`
            or any traceable pytree callable).
        data: the measured ``y``.
        sigma: noise standard deviation (a scalar or an array broadcasting to the data;
            per real and imaginary part for complex data).
        key: JAX PRNG key or integer seed.
        group: an :class:`ImageGroup` or a name for :func:`image_group` (``'rot90'``,
            ``'dihedral'``, ``'shift'``, ``'rotate'``, ``'identity'`` ...).
        num_resamples: number of bootstrap resamples (>= 2).
        estimate: ``x_hat`` if already computed (default ``reconstruct(data)``).
        traceable: run ``reconstruct`` inside the compiled kernel (batched over resamples
            with ``lax.map``); False calls it once per resample on concrete arrays.
        batch_size: resamples vectorised together in the kernel (None: one at a time).
        center: ``'estimate'`` (Result.mean = x_hat, variance = bootstrap MSE per pixel,
            the paper's form) or ``'debiased'`` (mean = x_hat minus the bootstrap bias).
        dtype: float32 or float64 (default: the data's real dtype, float32 for integer data).

    Returns:
        A :class:`~uqrecon.result.Result` with draws ``2 x_hat - x_i`` of shape
        ``(1, num_resamples, *shape)``; diagnostics ``estimate`` (x_hat), ``bootstrap_bias``
        (``mean_i x_i - x_hat``), ``bootstrap_sq_errors`` (``||x_i - x_hat||^2`` per
        resample) and ``group_elements``; provenance with ``method``, ``group``,
        ``num_resamples`` and ``dtype``.
    """
    if not callable(reconstruct):
        raise TypeError(f"argument 'reconstruct' must be callable, got {type(reconstruct).__name__}")
    if not callable(operator):
        raise TypeError(f"argument 'operator' must be callable, got {type(operator).__name__}")
    grp = image_group(group)
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, (int, np.integer)) \
            or num_resamples < 2:
        raise ValueError(f"argument 'num_resamples' must be an integer >= 2, got {num_resamples!r}")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"argument 'batch_size' must be a positive integer or None, got "
                         f"{batch_size!r}")
    if center not in _CENTERS:
        raise ValueError(f"argument 'center' must be one of {_CENTERS}, got {center!r}")
    try:
        y = jnp.asarray(data)
    except TypeError:
        raise TypeError(f"argument 'data' must be an array, got {type(data).__name__}") from None
    if not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError("argument 'data' contains NaN or inf")
    dt = _check_dtype(dtype, y)
    if not jnp.iscomplexobj(y):
        y = y.astype(dt)
    sig = _check_sigma(sigma, y.shape, dt)
    key, seed = _as_key(key)
    num_resamples = int(num_resamples)
    batch = None if batch_size is None else min(int(batch_size), num_resamples)
    op_dyn, op_static = _partition(operator, "operator")

    t0 = time.perf_counter()
    if traceable:
        recon_dyn, recon_static = _partition(reconstruct, "reconstruct")
        x_hat = (_reconstruct_traced(recon_dyn, recon_static, y) if estimate is None
                 else jnp.asarray(estimate))
    else:
        x_hat = jnp.asarray(reconstruct(y) if estimate is None else estimate)
    if not jnp.issubdtype(x_hat.dtype, jnp.floating):
        raise TypeError(f"the reconstruction must be a real floating image, got dtype "
                        f"{x_hat.dtype}")
    x_hat = x_hat.astype(dt)
    grp.check_image(x_hat.shape)
    dom = getattr(operator, "domain_shape", None)
    if dom is not None and tuple(dom) != tuple(x_hat.shape):
        raise ValueError(f"argument 'operator' acts on images of shape {tuple(dom)}, the "
                         f"estimate has shape {tuple(x_hat.shape)}")
    if not bool(jnp.all(jnp.isfinite(x_hat))):
        raise ValueError("the estimate (reconstruct(data) or 'estimate') contains NaN or inf")

    if traceable:
        xs, gs = _resample_traced(recon_dyn, recon_static, op_dyn, op_static, x_hat, sig, key,
                                  group=grp, num_resamples=num_resamples, batch_size=batch)
    else:
        ys, gs = _simulate_all(op_dyn, op_static, x_hat, sig, key, group=grp,
                               num_resamples=num_resamples)
        recons = jnp.stack([jnp.asarray(reconstruct(ys[i])).astype(dt)
                            for i in range(num_resamples)])
        xs = _inverse_all(recons, gs, group=grp)
    xs = np.asarray(jax.block_until_ready(xs))
    wall = time.perf_counter() - t0

    xh = np.asarray(x_hat, np.float64)
    errors = xs.astype(np.float64) - xh                          # bootstrap e_i = x_i - x_hat
    draws = xh - errors                                           # basic bootstrap: x_hat - e_i
    bias = errors.mean(axis=0)
    if center == "estimate":
        mean, variance = xh, np.mean(errors ** 2, axis=0)
    else:
        mean, variance = xh - bias, np.var(errors, axis=0)
    image_axes = tuple(range(1, errors.ndim))
    method = "naive_bootstrap" if grp.is_identity else "equivariant_bootstrap"
    config = {"group": grp.name, "group_spec": dataclasses.asdict(grp),
              "num_resamples": num_resamples, "center": center, "traceable": bool(traceable),
              "batch_size": batch, "reconstruction": type(reconstruct).__name__,
              "sigma": float(np.mean(np.asarray(sig)))}
    return Result(
        mean=mean.astype(dt), variance=variance.astype(dt), draws=draws.astype(dt)[None],
        diagnostics={"estimate": xh.astype(dt), "bootstrap_bias": bias.astype(dt),
                     "bootstrap_sq_errors": np.sum(errors ** 2, axis=image_axes),
                     "group_elements": {f: np.asarray(v) for f, v in gs._asdict().items()}},
        timings={"wall_s": wall},
        provenance=make_provenance(method, config, seed=seed, dtype=dt, group=grp.name,
                                   num_resamples=num_resamples),
    )


@full_precision
def naive_bootstrap(reconstruct: Callable, operator: Callable, data, sigma, key, *,
                    num_resamples: int = 100, **kwargs) -> Result:
    """The naive parametric bootstrap: :func:`equivariant_bootstrap` with ``g = identity``
    (``y_i = A x_hat + n_i``, ``x_i = f(y_i)``), the baseline of Tachella & Pereyra.

    Args:
        reconstruct, operator, data, sigma, key, num_resamples: as for
            :func:`equivariant_bootstrap`.
        **kwargs: ``estimate``, ``traceable``, ``batch_size``, ``center``, ``dtype``.

    Returns:
        A Result with ``provenance['method'] == 'naive_bootstrap'``.
    """
    if "group" in kwargs:
        raise TypeError("naive_bootstrap takes no argument 'group' (it is the identity)")
    return equivariant_bootstrap(reconstruct, operator, data, sigma, key, group="identity",
                                 num_resamples=num_resamples, **kwargs)

"""Filtered back-projection for parallel-beam :class:`~uqrecon.operators.tomo.RayTransform`.

``fbp(A, y)`` reproduces ODL's ``fbp_op(A_odl, padding=True)`` in JAX. ODL pads each
detector row to ``n = 2 D - 1`` cells and filters with its continuous Fourier transform,
whose frequency grid is shifted by half a step: ``xi_j = (j + 1/2) 2 pi / (n ds)``. On
the unpadded cells that is a linear convolution with the real kernel

    h(m) = (1/n) sum_j c_j H(xi_j) cos(xi_j m ds),   |m| < D,

(``c_j = 2``, except 1 for the last, unpaired frequency), with
``H(xi) = |xi| window(|xi| / xi_max) / (2 * angle_range)``. The filtered rows are then
back-projected with ODL's weighted adjoint ``(angle cell * ds / pixel area) * A^T``.
Useful as a quick reconstruction, an initial point for samplers, and a sanity check.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .tomo import RayTransform

__all__ = ["fbp", "filter_kernel", "FILTERS"]

FILTERS = ("ramlak", "hann")


def _filter_name(name) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in FILTERS:
        raise ValueError(f"'filter' must be one of {FILTERS}, got {name!r}")
    return key


def filter_kernel(operator: RayTransform, filter: str = "ramlak",
                  frequency_scaling: float = 1.0) -> np.ndarray:
    """The FBP convolution kernel ``h(m)`` for lags ``m = -(D-1) .. D-1`` (float64)."""
    name = _filter_name(filter)
    geometry = operator.geometry
    num_det = operator.range_shape[1]
    n = 2 * num_det - 1
    ds = float(geometry.det_partition.cell_sides[0])
    xi = (np.arange(num_det) + 0.5) * (2.0 * math.pi / (n * ds))
    xi_max = xi[-1]
    norm = xi / xi_max
    window = (norm <= frequency_scaling).astype(np.float64)
    if name == "hann":
        window = window * np.cos(norm * math.pi / (2.0 * frequency_scaling)) ** 2
    alen = float(geometry.motion_partition.extent[0])
    response = norm * window * xi_max / (2.0 * alen)
    weight = np.full(num_det, 2.0)
    weight[-1] = 1.0
    lags = np.arange(-(num_det - 1), num_det) * ds
    return (np.cos(np.outer(lags, xi)) @ (weight * response)) / n


def fbp(operator: RayTransform, sinogram, filter: str = "ramlak",
        frequency_scaling: float = 1.0):
    """Filtered back-projection of ``sinogram`` (leading batch axes allowed).

    ``filter`` is ``'ramlak'`` or ``'hann'``; frequencies above ``frequency_scaling``
    (a fraction of the detector's Nyquist frequency, in (0, 1]) are cut off.
    Parallel beam only (ValueError for fan beam).

    Args:
        operator: the parallel-beam :class:`RayTransform` the data come from.
        sinogram: data of the operator's range shape (leading batch axes allowed).
        filter: ``'ramlak'`` or ``'hann'``.
        frequency_scaling: cut-off as a fraction of the Nyquist frequency, in (0, 1].

    Returns:
        The reconstruction, of the operator's domain shape (with the batch axes).
    """
    from odl.applications.tomo import Parallel2dGeometry

    if not isinstance(operator, RayTransform):
        raise TypeError(f"'operator' must be a RayTransform, got {type(operator).__name__}")
    if not isinstance(operator.geometry, Parallel2dGeometry):
        raise ValueError("'operator': fbp supports parallel-beam geometries only")
    frequency_scaling = float(frequency_scaling)
    if not 0.0 < frequency_scaling <= 1.0:
        raise ValueError(f"'frequency_scaling' must be in (0, 1], got {frequency_scaling}")
    y = jnp.asarray(sinogram)
    shape = operator.range_shape
    if y.ndim < 2 or tuple(y.shape[-2:]) != tuple(shape):
        raise ValueError(f"'sinogram' has shape {tuple(y.shape)}, expected {shape} "
                         "(optionally with leading batch axes)")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    num_det = shape[1]
    size = 3 * num_det - 2                 # linear convolution of D cells with 2D - 1 lags
    kernel = filter_kernel(operator, filter, frequency_scaling)
    spec = jnp.fft.rfft(y, n=size, axis=-1) * jnp.asarray(np.fft.rfft(kernel, n=size))
    full = jnp.fft.irfft(spec, n=size, axis=-1)
    filtered = full[..., num_det - 1:2 * num_det - 1].astype(y.dtype)
    # ODL's adjoint weights: angle cell (per view) * detector cell / pixel area
    geometry, space = operator.geometry, operator.space
    dtheta = np.asarray(geometry.motion_partition.cell_sizes_vecs[0], np.float64)
    ds = float(geometry.det_partition.cell_sides[0])
    weights = jnp.asarray(dtheta * ds / float(space.cell_volume), y.dtype)
    return operator.adjoint(filtered * weights[:, None])

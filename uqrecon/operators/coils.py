"""Simulated receive-coil sensitivity maps for multi-coil (SENSE) MRI."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["birdcage_maps"]


def birdcage_maps(shape, num_coils: int = 8, radius: float = 1.5, normalize: bool = True,
                  dtype=jnp.complex64) -> jnp.ndarray:
    """Birdcage coil sensitivities, shape ``(num_coils, H, W)`` (the formula of sigpy's
    ``sigpy.mri.birdcage_maps`` for 2D).

    Coil ``c`` sits at angle ``2 pi c / num_coils`` on a circle of relative ``radius``
    around the image centre; its map is ``exp(i phi_c) / d_c`` with ``d_c`` the distance to
    the coil in coordinates ``(W-axis, H-axis) = ((j - W/2)/(W/2), (i - H/2)/(H/2))`` and
    ``phi_c`` the polar angle about the coil minus ``2 pi c / num_coils``.

    ``normalize=True`` (the default, as in sigpy) divides by the root-sum-of-squares so
    that ``sum_c |S_c|^2 = 1`` at every pixel: then a fully sampled SENSE operator is an
    isometry (``A^H A = I``), ``||A|| <= 1`` for any mask, and its adjoint is the standard
    coil-combined image, so noise levels and step sizes carry over from single-coil.

    Args:
        shape: image shape ``(H, W)``.
        num_coils: number of coils.
        radius: radius of the coil circle, relative to the image half-width.
        normalize: scale the maps so that the root-sum-of-squares is one at every pixel.
        dtype: complex dtype of the maps.

    Returns:
        Complex array ``(num_coils, H, W)``.
    """
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"'shape' must be two positive ints (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"'shape' must be two positive ints (H, W), got {shape!r}")
    if not isinstance(num_coils, (int, np.integer)) or num_coils < 1:
        raise ValueError(f"'num_coils' must be a positive int, got {num_coils!r}")
    num_coils = int(num_coils)
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 1.0:
        # coils on or inside the unit circle would sit on the object
        raise ValueError(f"'radius' must be finite and > 1, got {radius!r}")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating):
        raise TypeError(f"'dtype' must be a complex dtype, got {dtype!r}")
    c, y, x = np.mgrid[:num_coils, :h, :w].astype(np.float64)
    angle = c * (2 * np.pi / num_coils)
    x_co = (x - w / 2.0) / (w / 2.0) - radius * np.cos(angle)
    y_co = (y - h / 2.0) / (h / 2.0) - radius * np.sin(angle)
    dist = np.sqrt(x_co ** 2 + y_co ** 2)
    phase = np.arctan2(x_co, -y_co) - angle
    if np.any(dist == 0):
        raise ValueError(f"'radius'={radius} puts a coil exactly on a pixel centre")
    maps = np.exp(1j * phase) / dist
    if normalize:
        maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return jnp.asarray(maps, dtype=dtype)

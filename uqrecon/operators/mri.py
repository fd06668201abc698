"""Cartesian MRI forward model: centred orthonormal 2D FFT, coil sensitivities, sampling.

Convention (centred k-space, fastMRI style): image and k-space both have their origin at
index ``(H // 2, W // 2)``, and

    kspace = fftshift(fft2(ifftshift(image), norm="ortho"))      (shifts over the 2 axes)

so the zero frequency sits at the array centre and the full transform is unitary. The
operator keeps only the sampled entries, in row-major order of the mask, so a likelihood
built on it counts exactly the measured data.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import LinearOperator, operator_dataclass, static_field

__all__ = ["CartesianMRI", "fft2c", "ifft2c"]

_AXES = (-2, -1)


def fft2c(x: jax.Array) -> jax.Array:
    """Centred orthonormal 2D FFT over the last two axes (the convention above).

    Args:
        x: array whose last two axes are the image.

    Returns:
        Its centred orthonormal 2D FFT, same shape.
    """
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.fft.ifftshift(x, axes=_AXES), norm="ortho"),
                            axes=_AXES)


def ifft2c(k: jax.Array) -> jax.Array:
    """Inverse (= adjoint) of :func:`fft2c`.

    Args:
        k: array whose last two axes are k-space.

    Returns:
        Its centred orthonormal inverse 2D FFT, same shape.
    """
    return jnp.fft.fftshift(jnp.fft.ifft2(jnp.fft.ifftshift(k, axes=_AXES), norm="ortho"),
                            axes=_AXES)


def _complex_of(*dtypes):
    """The complex dtype matching the precision of ``dtypes`` (complex64 at least)."""
    return jnp.result_type(*dtypes, jnp.complex64)


@operator_dataclass
class CartesianMRI(LinearOperator):
    """Single- or multi-coil Cartesian MRI: ``y_c = M F (S_c x)``.

    Args:
        mask: boolean array ``(H, W)`` of sampled k-space positions (centred layout,
            see the module docstring), e.g. from :mod:`uqrecon.operators.masks`.
        sensitivities: optional complex coil maps ``(num_coils, H, W)`` (SENSE); e.g.
            :func:`uqrecon.operators.coils.birdcage_maps`.
        image_dtype: dtype of the image. Real (default ``float32``, or ``float64`` for
            ``complex128`` coil maps): the adjoint is taken w.r.t. the real inner
            product ``Re<.,.>`` and returns the real part. Complex: the usual Hermitian
            adjoint. Inputs of 64-bit precision give 64-bit outputs.
        indices: flat indices of the sampled positions; computed from ``mask`` (only
            passed when JAX rebuilds the pytree, which skips validation).

    The range is ``(num_samples,)`` single-coil or ``(num_coils, num_samples)`` multi-coil,
    always complex.
    """

    mask: jax.Array
    sensitivities: jax.Array | None = None
    image_dtype: Any = static_field(default=None)
    indices: jax.Array | None = None

    def __post_init__(self):
        if self.indices is not None:   # pytree reconstruction (leaves may be tracers)
            return
        mask = _validate_mask(self.mask)
        sens = _validate_sensitivities(self.sensitivities, mask.shape)
        dtype = _validate_image_dtype(self.image_dtype, sens)
        object.__setattr__(self, "mask", jnp.asarray(mask))
        object.__setattr__(self, "sensitivities", sens)
        object.__setattr__(self, "image_dtype", dtype)
        object.__setattr__(self, "indices", jnp.asarray(np.flatnonzero(mask), jnp.int32))

    def __repr__(self):
        coils = "" if self.sensitivities is None else f", num_coils={self.num_coils}"
        return (f"CartesianMRI(shape={self.domain_shape}, num_samples={self.num_samples}"
                f"{coils}, image_dtype={self.image_dtype})")

    # -- shapes and dtypes --------------------------------------------------------------
    @property
    def domain_shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def num_samples(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_coils(self) -> int | None:
        return None if self.sensitivities is None else int(self.sensitivities.shape[0])

    @property
    def range_shape(self) -> tuple[int, ...]:
        if self.sensitivities is None:
            return (self.num_samples,)
        return (self.num_coils, self.num_samples)

    @property
    def acceleration(self) -> float:
        """Undersampling factor ``H W / num_samples``."""
        return self.size_in / self.num_samples

    @property
    def domain_dtype(self):
        return self.image_dtype

    @property
    def range_dtype(self):
        return _complex_of(self.image_dtype)

    # -- maps ---------------------------------------------------------------------------
    def _apply(self, x):
        x = x.astype(_complex_of(x.dtype))
        if self.sensitivities is not None:
            x = self.sensitivities * x
        k = fft2c(x)
        k = k.reshape(*k.shape[:-2], -1)
        return jnp.take(k, self.indices, axis=-1)

    def _grid(self, y):
        y = y.astype(_complex_of(y.dtype))
        flat = jnp.zeros((*y.shape[:-1], self.size_in), y.dtype)
        flat = flat.at[..., self.indices].set(y, unique_indices=True)
        return flat.reshape(*y.shape[:-1], *self.domain_shape)

    def _adjoint(self, y):
        img = ifft2c(self._grid(y))
        if self.sensitivities is not None:
            img = jnp.sum(jnp.conj(self.sensitivities) * img, axis=0)
        if not jnp.issubdtype(self.image_dtype, jnp.complexfloating):
            img = jnp.real(img)
        return img

    def to_kspace_grid(self, y: jax.Array) -> jax.Array:
        """Zero-filled k-space grid ``(H, W)`` (or ``(num_coils, H, W)``) from data ``y``.

        Args:
            y: measured data (the operator's range).

        Returns:
            The zero-filled k-space grid.
        """
        return self._batched(self._grid, y, self.range_shape, "y")

    def zero_filled(self, y: jax.Array) -> jax.Array:
        """Zero-filled reconstruction ``A^H y`` (coil-combined with ``conj(S_c)``).

        Args:
            y: measured data (the operator's range).

        Returns:
            The complex image ``A^H y``.
        """
        return self.adjoint(y)


def _validate_mask(mask) -> np.ndarray:
    if mask is None:
        raise TypeError("CartesianMRI: 'mask' is required (a boolean array of shape (H, W))")
    try:
        mask = np.asarray(mask)
    except Exception:
        raise TypeError("CartesianMRI: 'mask' must be a concrete boolean array, not a "
                        "traced value; build the operator outside jit") from None
    if mask.dtype != np.bool_:
        raise ValueError(f"CartesianMRI: 'mask' must be a boolean array, got dtype "
                         f"{mask.dtype} (use mask.astype(bool) for a 0/1 mask)")
    if mask.ndim != 2:
        raise ValueError(f"CartesianMRI: 'mask' must be 2D (H, W), got shape {mask.shape}")
    if not mask.any():
        raise ValueError("CartesianMRI: 'mask' samples no k-space position (all False)")
    return mask


def _validate_sensitivities(sens, image_shape):
    if sens is None:
        return None
    try:
        sens = np.asarray(sens)
    except Exception:
        raise TypeError("CartesianMRI: 'sensitivities' must be a concrete array, not a "
                        "traced value") from None
    if not np.issubdtype(sens.dtype, np.inexact):
        raise TypeError(f"CartesianMRI: 'sensitivities' must be a float or complex array, "
                        f"got dtype {sens.dtype}")
    if sens.ndim != 3 or tuple(sens.shape[1:]) != tuple(image_shape):
        raise ValueError(f"CartesianMRI: 'sensitivities' must have shape (num_coils, "
                         f"{image_shape[0]}, {image_shape[1]}) to match 'mask', got "
                         f"{sens.shape}")
    if sens.shape[0] < 1:
        raise ValueError("CartesianMRI: 'sensitivities' has no coils")
    if not np.all(np.isfinite(sens)):
        raise ValueError("CartesianMRI: 'sensitivities' contains NaN or inf")
    bits64 = sens.dtype in (np.float64, np.complex128)
    # complex128 only when jax_enable_x64 is on (canonicalize gives complex64 otherwise)
    ctype = jax.dtypes.canonicalize_dtype(np.complex128 if bits64 else np.complex64)
    return jnp.asarray(sens, ctype)


def _validate_image_dtype(dtype, sens):
    if dtype is None:   # float32, or float64 for 64-bit coil maps (with jax_enable_x64)
        wide = sens is not None and sens.dtype == jnp.complex128
        return jnp.dtype(jnp.float64 if wide else jnp.float32)
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"CartesianMRI: 'image_dtype' must be a float or complex dtype, "
                        f"got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"CartesianMRI: 'image_dtype' must be a float or complex dtype, "
                        f"got {dtype}")
    return dtype

"""Cartesian k-space sampling masks (fastMRI line masks and 2D variable density).

All masks are boolean numpy arrays of the image shape, in the centred k-space layout of
:class:`uqrecon.operators.CartesianMRI` (zero frequency at index ``n // 2`` on each axis).
They are made on the host from a seed (``numpy.random.default_rng(seed)``), so the same
seed always gives the same mask. Line masks follow fastMRI's ``RandomMaskFunc`` and
``EquispacedMaskFunc`` (``fastmri/data/subsample.py``): lines are phase-encode columns,
i.e. the last axis (fastMRI samples along ``shape[-2]`` of its ``(..., rows, cols, 2)``
k-space, which is the column axis), and each sampled column is sampled in every row.
Standard settings: 4x with ``center_fraction=0.08`` and 8x with ``center_fraction=0.04``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["random_line_mask", "equispaced_line_mask", "variable_density_mask",
           "FASTMRI_4X", "FASTMRI_8X"]

#: fastMRI's standard (acceleration, center_fraction) pairs.
FASTMRI_4X = {"acceleration": 4, "center_fraction": 0.08}
FASTMRI_8X = {"acceleration": 8, "center_fraction": 0.04}


def _check_shape(shape) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"'shape' must be a tuple of two ints, got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be two positive ints (H, W), got {shape}")
    return shape


def _check_acceleration(acceleration) -> float:
    acc = float(acceleration)
    if not math.isfinite(acc) or acc < 1:
        raise ValueError(f"'acceleration' must be a finite number >= 1, got {acceleration!r}")
    return acc


def _check_center_fraction(center_fraction) -> float:
    cf = float(center_fraction)
    if not (0 <= cf < 1):
        raise ValueError(f"'center_fraction' must satisfy 0 <= center_fraction < 1, "
                         f"got {center_fraction!r}")
    return cf


def _center_block(num_cols: int, center_fraction: float, acceleration: float):
    """fastMRI's fully sampled centre: ``round(N * cf)`` columns starting at ``pad``."""
    num_low = int(round(num_cols * center_fraction))
    if num_low > num_cols / acceleration:
        raise ValueError(
            f"'center_fraction'={center_fraction} keeps {num_low} of {num_cols} centre "
            f"lines, more than the {num_cols / acceleration:g} lines that "
            f"'acceleration'={acceleration:g} allows in total")
    pad = (num_cols - num_low + 1) // 2
    return num_low, pad


def _check_budget(num_cols: int, acceleration: float, center_fraction: float):
    """A line mask must be able to keep a line: ``N / acceleration >= 1``."""
    if num_cols / acceleration < 1:
        raise ValueError(
            f"'acceleration'={acceleration:g} leaves {num_cols / acceleration:g} of "
            f"{num_cols} lines (center_fraction={center_fraction:g}): the mask would be "
            f"empty; use acceleration <= {num_cols}")


def _check_not_empty(lines: np.ndarray, seed, acceleration, center_fraction):
    if not lines.any():
        raise ValueError(
            f"the random draw (seed={seed}) kept none of {lines.size} lines at "
            f"'acceleration'={acceleration:g}, 'center_fraction'={center_fraction:g}: an "
            f"empty mask measures nothing; raise 'center_fraction' or lower 'acceleration'")


def _lines_to_mask(shape, lines: np.ndarray, axis: int) -> np.ndarray:
    """Broadcast a 1D line selection to a 2D mask, lines along ``axis``."""
    if axis in (-1, 1):
        return np.broadcast_to(lines[None, :], shape).copy()
    return np.broadcast_to(lines[:, None], shape).copy()


def _check_axis(axis) -> int:
    if axis not in (0, 1, -1, -2):
        raise ValueError(f"'axis' must be 0 or 1 (or -1, -2), got {axis!r}")
    return axis


def random_line_mask(shape, acceleration: float = 4, center_fraction: float = 0.08,
                     seed: int = 0, axis: int = -1) -> np.ndarray:
    """fastMRI ``RandomMaskFunc``: centre block plus lines drawn independently.

    With ``N`` lines along ``axis`` and ``N_low = round(N * center_fraction)``, the centre
    ``N_low`` lines are always kept and every other line with probability
    ``(N / acceleration - N_low) / (N - N_low)``, so the expected total is
    ``N / acceleration``. Returns a boolean array of ``shape``.

    Args:
        shape: k-space shape.
        acceleration: undersampling factor.
        center_fraction: fraction of lines in the fully sampled centre block.
        seed: seed of the random draw.
        axis: axis along which lines are selected.

    Returns:
        Boolean array of ``shape``.
    """
    shape = _check_shape(shape)
    axis = _check_axis(axis)
    acc = _check_acceleration(acceleration)
    cf = _check_center_fraction(center_fraction)
    n = shape[axis]
    _check_budget(n, acc, cf)
    num_low, pad = _center_block(n, cf, acc)
    rng = np.random.default_rng(seed)
    prob = (n / acc - num_low) / (n - num_low) if n > num_low else 0.0
    lines = rng.uniform(size=n) < prob
    lines[pad:pad + num_low] = True
    _check_not_empty(lines, seed, acc, cf)
    return _lines_to_mask(shape, lines, axis)


def equispaced_line_mask(shape, acceleration: float = 4, center_fraction: float = 0.08,
                         seed: int = 0, axis: int = -1) -> np.ndarray:
    """fastMRI ``EquispacedMaskFunc``: centre block plus lines at a fixed spacing.

    The outer lines are spaced by ``a' = acceleration (N_low - N) / (N_low acceleration - N)``
    (so that the total is about ``N / acceleration``), starting at a random offset in
    ``[0, round(a'))``; as in fastMRI, positions ``round(offset + k a')`` may be unevenly
    spaced when ``a'`` is not an integer. Returns a boolean array of ``shape``.

    Args:
        shape: k-space shape.
        acceleration: undersampling factor.
        center_fraction: fraction of lines in the fully sampled centre block.
        seed: seed of the random offset.
        axis: axis along which lines are selected.

    Returns:
        Boolean array of ``shape``.
    """
    shape = _check_shape(shape)
    axis = _check_axis(axis)
    acc = _check_acceleration(acceleration)
    cf = _check_center_fraction(center_fraction)
    n = shape[axis]
    _check_budget(n, acc, cf)
    num_low, pad = _center_block(n, cf, acc)
    rng = np.random.default_rng(seed)
    lines = np.zeros(n, dtype=bool)
    lines[pad:pad + num_low] = True
    if num_low * acc != n:  # otherwise the centre block already is the whole budget
        adjusted = acc * (num_low - n) / (num_low * acc - n)
        offset = int(rng.integers(0, max(int(round(adjusted)), 1)))
        positions = np.around(np.arange(offset, n - 1, adjusted)).astype(int)
        lines[positions[positions < n]] = True
    _check_not_empty(lines, seed, acc, cf)
    return _lines_to_mask(shape, lines, axis)


def variable_density_mask(shape, acceleration: float = 4, seed: int = 0,
                          center_radius: float = 0.08, decay: float = 2.0) -> np.ndarray:
    """2D random mask with exactly ``round(H W / acceleration)`` samples, denser at the centre.

    Pixels whose normalised radius ``r = sqrt(ky^2 + kx^2)`` (``ky, kx`` in ``[-1, 1)``,
    centre ``n // 2``) is below ``center_radius`` are always sampled; the rest are drawn
    without replacement with weights ``(1 - r / r_max)^decay``, ``r_max`` slightly beyond
    the corners so every pixel has positive weight (Gumbel top-k: exact count, seeded).

    Args:
        shape: k-space shape ``(H, W)``.
        acceleration: undersampling factor.
        seed: seed of the random draw.
        center_radius: normalised radius of the always-sampled centre.
        decay: exponent of the sampling weight's decay with the radius.

    Returns:
        Boolean array of ``shape``.
    """
    shape = _check_shape(shape)
    acc = _check_acceleration(acceleration)
    center_radius = float(center_radius)
    if not (0 <= center_radius < math.sqrt(2)):
        raise ValueError(f"'center_radius' must be in [0, sqrt(2)), got {center_radius!r}")
    decay = float(decay)
    if not (math.isfinite(decay) and decay >= 0):
        raise ValueError(f"'decay' must be a finite number >= 0, got {decay!r}")
    h, w = shape
    total = int(round(h * w / acc))
    if total < 1:
        raise ValueError(f"'acceleration'={acc:g} leaves no samples for shape {shape}")
    ky = (np.arange(h) - h // 2) / max(h / 2, 1)
    kx = (np.arange(w) - w // 2) / max(w / 2, 1)
    r = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    center = r < center_radius
    num_center = int(center.sum())
    if num_center > total:
        raise ValueError(
            f"'center_radius'={center_radius} covers {num_center} pixels, more than the "
            f"{total} samples that 'acceleration'={acc:g} allows")
    r_max = r.max() + 1.0 / max(h, w)
    log_w = decay * np.log1p(-r / r_max)
    rng = np.random.default_rng(seed)
    keys = log_w + rng.gumbel(size=shape)
    keys[center] = np.inf
    chosen = np.argsort(-keys, axis=None, kind="stable")[:total]
    mask = np.zeros(h * w, dtype=bool)
    mask[chosen] = True
    return mask.reshape(shape)

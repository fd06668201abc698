"""Orthonormal periodic wavelet transforms in pure JAX and the l1 prior on coefficients.

The transform is the periodised discrete wavelet transform (Mallat's pyramid, separable
over axes) with the coefficients stored in place (the approximation in the leading corner
block). With orthonormal filters and periodic extension it is an orthogonal matrix, so its
adjoint (``jax.linear_transpose``) is its inverse and the prox of the coefficient l1 norm
is exact: ``W^T soft(W x, step * weight)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import LinearOperator, operator_dataclass, static_field
from .hyper import check_positive, check_shape, like
from .tv import _NormPenalty

__all__ = ["WaveletTransform", "WaveletL1", "WAVELETS", "daubechies_filter"]



def daubechies_filter(order: int) -> tuple[float, ...]:
    """Low-pass filter of the Daubechies wavelet with ``order`` vanishing moments
    (length ``2 order``), by spectral factorisation: ``|Q|^2 = P(sin^2(w/2))`` with
    ``P(y) = sum_k C(order-1+k, k) y^k``, keeping the minimum-phase roots."""
    if order == 1:
        return (1 / math.sqrt(2.0),) * 2
    coeffs = [math.comb(order - 1 + k, k) for k in range(order)]
    y_roots = np.roots(coeffs[::-1])
    poly = np.array([1.0 + 0j])
    for y in y_roots:   # z + 1/z = 2 - 4y; keep |z| < 1
        z = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
        poly = np.convolve(poly, [1.0, -z[np.argmin(np.abs(z))]])
    for _ in range(order):
        poly = np.convolve(poly, [1.0, 1.0])
    h = np.real(poly)
    return tuple(float(c) for c in h * (math.sqrt(2.0) / h.sum()))


#: Orthonormal low-pass analysis filters (sum = sqrt 2, unit norm, even-shift orthogonal):
#: Haar and Daubechies db2..db8.
WAVELETS = {"haar": daubechies_filter(1),
            **{f"db{n}": daubechies_filter(n) for n in range(2, 9)}}


def _analysis_1d(x, h, axis):
    """One periodised analysis step along ``axis``: (approximation, detail), halved."""
    L = len(h)
    g = [(-1) ** n * h[L - 1 - n] for n in range(L)]
    n_half = x.shape[axis] // 2
    a = 0.0
    d = 0.0
    for n in range(L):
        xs = jax.lax.slice_in_dim(jnp.roll(x, -n, axis=axis), 0, 2 * n_half, 2, axis)
        a = a + h[n] * xs
        d = d + g[n] * xs
    return a, d


def _max_levels(shape, filt_len):
    lev = 0
    sizes = list(shape)
    while all(s % 2 == 0 and s >= max(filt_len, 2) for s in sizes):
        sizes = [s // 2 for s in sizes]
        lev += 1
    return lev


@operator_dataclass
class WaveletTransform(LinearOperator):
    """Orthonormal periodised DWT with ``levels`` decomposition levels, any ndim.

    Each axis length must be divisible by ``2**levels`` and, before the last split, at
    least the filter length. ``adjoint`` is the exact inverse.
    """

    domain_shape: tuple = static_field()
    wavelet: str = static_field(default="haar")
    levels: int = static_field(default=1)

    def __post_init__(self):
        if self.wavelet not in WAVELETS:
            raise ValueError(f"WaveletTransform: argument 'wavelet' must be one of "
                             f"{sorted(WAVELETS)}, got {self.wavelet!r}")
        top = _max_levels(self.domain_shape, len(WAVELETS[self.wavelet]))
        if not (isinstance(self.levels, int) and 1 <= self.levels <= top):
            raise ValueError(f"WaveletTransform: argument 'levels' must be an int in "
                             f"[1, {top}] for shape {self.domain_shape} and wavelet "
                             f"{self.wavelet!r}, got {self.levels!r}")

    @property
    def range_shape(self):
        return tuple(self.domain_shape)

    def _level(self, x):
        h = WAVELETS[self.wavelet]
        for axis in range(x.ndim):
            a, d = _analysis_1d(x, h, axis)
            x = jnp.concatenate([a, d], axis=axis)
        return x

    def _apply(self, x):
        out = x
        sizes = tuple(self.domain_shape)
        for _ in range(self.levels):
            block = tuple(slice(0, s) for s in sizes)
            out = out.at[block].set(self._level(out[block]))
            sizes = tuple(s // 2 for s in sizes)
        return out

    def approximation_mask(self) -> np.ndarray:
        """Boolean array, True on the coarsest approximation block.

        Returns:
            Boolean array of the coefficient shape.
        """
        mask = np.zeros(self.domain_shape, bool)
        mask[tuple(slice(0, s >> self.levels) for s in self.domain_shape)] = True
        return mask


@operator_dataclass
class WaveletL1(_NormPenalty):
    """``weight * ||W x||_1`` over the detail coefficients (and the approximation too if
    ``penalize_approximation``); prox by soft thresholding, exact for orthonormal W."""

    shape: tuple = static_field()
    weight: jax.Array
    wavelet: str = static_field(default="haar")
    levels: int = static_field(default=1)
    penalize_approximation: bool = static_field(default=False)

    grouped = False

    def __init__(self, shape, weight=1.0, wavelet="haar", levels=None,
                 penalize_approximation=False):
        owner = "WaveletL1"
        shape = check_shape(shape, "shape", owner)
        check_positive(weight, "weight", owner)
        if wavelet not in WAVELETS:
            raise ValueError(f"{owner}: argument 'wavelet' must be one of {sorted(WAVELETS)}, "
                             f"got {wavelet!r}")
        if levels is None:
            levels = min(3, _max_levels(shape, len(WAVELETS[wavelet])))
            if levels < 1:
                raise ValueError(f"{owner}: argument 'shape' {shape} admits no wavelet level")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "weight", jnp.asarray(weight))
        object.__setattr__(self, "wavelet", wavelet)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "penalize_approximation", bool(penalize_approximation))
        self.analysis_operator   # validates levels against the shape

    @property
    def analysis_operator(self) -> WaveletTransform:
        return WaveletTransform(self.shape, self.wavelet, self.levels)

    def magnitude(self, z):
        """Absolute values of wavelet coefficients.

        Args:
            z: wavelet coefficients.

        Returns:
            ``|z|``.
        """
        return jnp.abs(z)

    def weights(self, dtype):
        """Per-coefficient weights: ``weight``, zero on the approximation block unless it is penalised.

        Args:
            dtype: real dtype of the result.

        Returns:
            Array of weights (scalar when every coefficient has the same).
        """
        w = like(self.weight, jnp.zeros((), dtype))
        if self.penalize_approximation:
            return w
        mask = self.analysis_operator.approximation_mask()
        return jnp.where(jnp.asarray(mask), jnp.zeros((), w.dtype), w)

    def prox(self, x, step):
        """Soft thresholding in the (orthonormal) wavelet domain.

        Args:
            x: image, of the model's image shape.
            step: positive step size.

        Returns:
            The proximal point, of the image shape.
        """
        W = self.analysis_operator
        c = W(x)
        thr = self.weights(x.dtype) * like(step, x)
        c = jnp.sign(c) * jnp.maximum(jnp.abs(c) - thr, 0.0)
        return W.adjoint(c).astype(x.dtype)

"""The one noise convention of the project: Gaussian noise relative to ``max|A x|``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["relative_gaussian_noise"]


def relative_gaussian_noise(key: jax.Array, clean: jax.Array, noise_level):
    """``clean + sigma * e`` with ``sigma = noise_level * max|clean|``; returns (noisy, sigma).

    For complex data (MRI k-space) the real and imaginary parts each get std ``sigma``,
    matching :class:`uqrecon.models.ComplexGaussian`. Jit-able (``sigma`` is an array).
    """
    sigma = noise_level * jnp.max(jnp.abs(clean))
    if jnp.iscomplexobj(clean):
        k_re, k_im = jax.random.split(key)
        real = jnp.real(clean).dtype
        noise = (jax.random.normal(k_re, clean.shape, real)
                 + 1j * jax.random.normal(k_im, clean.shape, real))
    else:
        noise = jax.random.normal(key, clean.shape, clean.dtype)
    return clean + sigma * noise, sigma

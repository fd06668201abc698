"""A whitened-interface test target shared by sampler tests."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class StdNormal(NamedTuple):
    """N(0, scale^2 I) in the Whitened interface (image = z); a pytree, so it travels in
    a sampler's params."""

    scale: jax.Array

    def logdensity(self, z):
        return -0.5 * jnp.sum((z / self.scale) ** 2)

    def to_image(self, z):
        return z

    def from_image(self, x):
        return x

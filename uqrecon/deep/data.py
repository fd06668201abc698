"""Training and test data simulated on the fly with the Bayesian side's forward models.

A :class:`Task` bundles a forward operator, a noise level (a fraction of ``max|Ax|``, per
image, as everywhere in uqrecon), the initial reconstruction the network starts from
(FBP or zero-filled) and a phantom generator. :func:`simulate` draws a fresh batch from a
key inside ``jit``, so training never stores a data set and is reproducible from a seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators.base import LinearOperator

__all__ = ["Task", "Batch", "simulate", "measure", "ct_task", "mri_task", "with_insert"]


class Batch(NamedTuple):
    """One batch: initial reconstructions ``x0``, data ``y`` and ground truth ``x``."""

    x0: jax.Array
    y: jax.Array
    x: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A simulated reconstruction problem.

    ``reconstruct(y)`` maps one data array to one real image (the network input);
    ``phantom(key)`` draws one ground-truth image of ``operator.domain_shape`` and must be
    JAX-traceable (it runs under ``vmap`` and ``jit``).
    """

    operator: LinearOperator
    noise_level: float
    reconstruct: Callable[[jax.Array], jax.Array]
    phantom: Callable[[jax.Array], jax.Array]

    def __post_init__(self):
        if not isinstance(self.operator, LinearOperator):
            raise TypeError(f"argument 'operator' must be a LinearOperator, got "
                            f"{type(self.operator).__name__}")
        if len(self.operator.domain_shape) != 2:
            raise ValueError(f"argument 'operator' must act on 2D images, got domain_shape "
                             f"{self.operator.domain_shape}")
        if not float(self.noise_level) >= 0.0:
            raise ValueError(f"argument 'noise_level' must be >= 0, got {self.noise_level}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.operator.domain_shape)


def _noisy(task: Task, key, y_clean):
    """White noise with std ``noise_level * max|Ax|`` per image (the project convention)."""
    return relative_gaussian_noise(key, y_clean, task.noise_level)[0]


def measure(task: Task, key: jax.Array, x: jax.Array) -> Batch:
    """Simulate data for given images ``x`` of shape ``(batch, H, W)`` (e.g. a test set).

    Args:
        task: the task.
        key: JAX PRNG key of the noise.
        x: images ``(batch, H, W)``.

    Returns:
        A :class:`Batch`.
    """
    x = jnp.asarray(x)
    if x.ndim != 3 or tuple(x.shape[1:]) != task.shape:
        raise ValueError(f"argument 'x' must have shape (batch, *{task.shape}), got {x.shape}")
    keys = jax.random.split(key, x.shape[0])
    y = jax.vmap(lambda k, xi: _noisy(task, k, task.operator(xi)))(keys, x)
    x0 = jax.vmap(lambda yi: jnp.real(task.reconstruct(yi)))(y).astype(x.dtype)
    return Batch(x0=x0, y=y, x=x)


def simulate(task: Task, key: jax.Array, batch_size: int) -> Batch:
    """A fresh batch of ``batch_size`` phantoms with simulated data (jit-able).

    Args:
        task: the task.
        key: JAX PRNG key.
        batch_size: number of images.

    Returns:
        A :class:`Batch`.
    """
    if int(batch_size) < 1:
        raise ValueError(f"argument 'batch_size' must be >= 1, got {batch_size}")
    kx, kn = jax.random.split(key)
    x = jax.vmap(task.phantom)(jax.random.split(kx, int(batch_size)))
    return measure(task, kn, x)


def ct_task(shape=(64, 64), num_angles: int = 30, noise_level: float = 0.02,
            angle_range=(0.0, math.pi), phantom: Callable | None = None) -> Task:
    """Parallel-beam CT with ``num_angles`` views over ``angle_range`` (radians).

    The default is sparse view over ``[0, pi)``; ``angle_range=(0, pi / 2)`` gives the
    limited-angle problem. Network input is the FBP (Hann filter); training phantoms are random
    ellipses unless ``phantom`` is given.

    Args:
        shape: image shape.
        num_angles: number of views.
        noise_level: noise std relative to max ``|Ax|``.
        angle_range: ``(start, stop)`` of the views in radians.
        phantom: training-image generator ``phantom(key) -> image`` (None: random ellipses).

    Returns:
        A :class:`Task`.
    """
    from uqrecon.operators.fbp import fbp
    from uqrecon.operators.tomo import sparse_view

    op = sparse_view(shape, num_angles, angle_range=tuple(angle_range))
    return Task(op, noise_level, lambda y: fbp(op, y, filter="hann"),
                phantom or _ellipses(shape))


def mri_task(shape=(64, 64), acceleration: int = 4, center_fraction: float = 0.08,
             noise_level: float = 0.02, seed: int = 0,
             phantom: Callable | None = None) -> Task:
    """Undersampled Cartesian MRI with a random line mask; network input is zero-filled.

    Args:
        shape: image shape.
        acceleration: undersampling factor.
        center_fraction: fully sampled centre fraction.
        noise_level: noise std relative to max ``|Ax|``.
        seed: seed of the mask.
        phantom: training-image generator (None: random ellipses).

    Returns:
        A :class:`Task`.
    """
    from uqrecon.operators.masks import random_line_mask
    from uqrecon.operators.mri import CartesianMRI

    mask = random_line_mask(shape, acceleration=acceleration,
                            center_fraction=center_fraction, seed=seed)
    op = CartesianMRI(mask)
    return Task(op, noise_level, op.zero_filled, phantom or _ellipses(shape))


def _ellipses(shape):
    from uqrecon.phantoms import random_ellipses

    return lambda key: random_ellipses(key, shape)


def with_insert(image: jax.Array, center=(0.3, -0.3), radius: float = 0.12,
                value: float = 1.5):
    """Add a bright disc absent from training (out-of-distribution check).

    ``center`` and ``radius`` are in the ``[-1, 1]^2`` image coordinates (axis 0 first).
    Returns the modified image and the boolean insert mask.

    Args:
        image: image ``(H, W)``.
        center: centre in ``[-1, 1]^2`` (axis 0 first).
        radius: radius in the same units.
        value: intensity set inside the disc.

    Returns:
        A pair ``(image, mask)``.
    """
    image = jnp.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"argument 'image' must be 2D, got shape {image.shape}")
    n0, n1 = image.shape
    c0 = (jnp.arange(n0) + 0.5) / n0 * 2 - 1
    c1 = (jnp.arange(n1) + 0.5) / n1 * 2 - 1
    mask = (c0[:, None] - center[0]) ** 2 + (c1[None, :] - center[1]) ** 2 <= radius ** 2
    return jnp.where(mask, jnp.asarray(value, image.dtype), image), mask

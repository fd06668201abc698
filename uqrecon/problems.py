"""Seeded reference problems: truth, operator, noisy data and a classical baseline.

Conventions (DESIGN): images on [-1, 1]^2 with values in [0, 1]; Gaussian noise level is
a fraction of ``max|A x_true|``; every problem is made from a seed, so the same call gives
the same data. The default problem of the main job is :func:`sparse_view_ct` with its
defaults (modified Shepp-Logan, 128x128, 30 angles, 1 % noise).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import phantoms
from .noise import relative_gaussian_noise
from .operators.base import LinearOperator

__all__ = ["Problem", "sparse_view_ct", "limited_angle_ct", "fan_beam_ct", "mri",
           "make_problem", "PROBLEMS"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A simulated inverse problem ``data = operator(truth) + noise``.

    ``sigma`` is the noise standard deviation per real measurement (per real and per
    imaginary part for complex k-space data); ``noise_level`` is the same as a fraction
    of ``max|A x_true|``. ``baseline`` is the classical reconstruction users compare
    against (FBP for CT, the zero-filled inverse FFT for MRI).
    """

    name: str
    kind: str
    operator: LinearOperator
    truth: jax.Array
    data: jax.Array
    sigma: float
    noise_level: float
    seed: int
    config: dict
    baseline_fn: Callable[[jax.Array], jax.Array] = dataclasses.field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.truth.shape)

    def baseline(self) -> jax.Array:
        return self.baseline_fn(self.data)

    def describe(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.name} ({cfg}; sigma={self.sigma:.4g})"


def _check_common(size, noise_level, seed):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
        raise ValueError(f"'size' must be an integer >= 4, got {size!r}")
    if not (isinstance(noise_level, (int, float)) and math.isfinite(noise_level)
            and noise_level >= 0):
        raise ValueError(f"'noise_level' must be a finite number >= 0, got {noise_level!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"'seed' must be an integer, got {seed!r}")


def _phantom(name: str, shape, key) -> jax.Array:
    if name == "shepp_logan":
        return phantoms.shepp_logan(shape)
    if name == "ellipses":
        return phantoms.random_ellipses(key, shape)
    if name == "brain":
        return phantoms.brain_mri(shape)
    raise ValueError(f"unknown 'phantom' {name!r}; choose 'shepp_logan', 'ellipses' or 'brain'")


def _noisy(key, clean, noise_level):
    noisy, sigma = relative_gaussian_noise(key, clean, noise_level)
    return noisy, float(sigma)


def _ct_problem(name, operator, size, noise_level, phantom, seed, config, filter="hann"):
    from .operators.fbp import fbp
    key_phantom, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    truth = _phantom(phantom, operator.domain_shape, key_phantom)
    data, sigma = _noisy(key_noise, operator(truth), noise_level)
    return Problem(name=name, kind="ct", operator=operator, truth=truth, data=data,
                   sigma=sigma, noise_level=noise_level, seed=seed,
                   config={"size": size, **config, "noise_level": noise_level,
                           "phantom": phantom},
                   baseline_fn=lambda y: fbp(operator, y, filter=filter))


def sparse_view_ct(size: int = 128, num_angles: int = 30, noise_level: float = 0.01,
                   phantom: str = "shepp_logan", seed: int = 0) -> Problem:
    """Parallel-beam CT with few views over [0, pi) (the main job's default problem)."""
    from .operators.tomo import sparse_view
    _check_common(size, noise_level, seed)
    op = sparse_view((size, size), num_angles)
    return _ct_problem("sparse_view_ct", op, size, noise_level, phantom, seed,
                       {"num_angles": num_angles})


def limited_angle_ct(size: int = 128, angle_range: tuple = (0.0, math.pi / 2),
                     num_angles: int = 60, noise_level: float = 0.01,
                     phantom: str = "shepp_logan", seed: int = 0) -> Problem:
    """Parallel-beam CT whose views cover only ``angle_range`` (radians)."""
    from .operators.tomo import limited_angle
    _check_common(size, noise_level, seed)
    op = limited_angle((size, size), angle_range=tuple(angle_range), num_angles=num_angles)
    return _ct_problem("limited_angle_ct", op, size, noise_level, phantom, seed,
                       {"angle_range": [float(a) for a in angle_range],
                        "num_angles": num_angles})


def fan_beam_ct(size: int = 128, num_angles: int = 50, src_radius: float = 4.0,
                det_radius: float = 4.0, noise_level: float = 0.01,
                phantom: str = "shepp_logan", seed: int = 0) -> Problem:
    """Flat-detector fan-beam CT over a full circle."""
    from .operators.tomo import fan_beam
    _check_common(size, noise_level, seed)
    op = fan_beam((size, size), num_angles, src_radius=src_radius, det_radius=det_radius)
    return _ct_problem("fan_beam_ct", op, size, noise_level, phantom, seed,
                       {"num_angles": num_angles, "src_radius": src_radius,
                        "det_radius": det_radius})


def mri(size: int = 128, acceleration: int = 4, center_fraction: float = 0.08,
        mask: str = "random", num_coils: int | None = None, noise_level: float = 0.01,
        phantom: str = "brain", seed: int = 0, phase_ramp: float | None = None) -> Problem:
    """Undersampled Cartesian MRI (single-coil, or SENSE with ``num_coils`` birdcage maps).

    ``phase_ramp`` (radians) makes the image complex: the phantom times
    ``exp(i phase_ramp (u + v / 2))`` with ``u, v`` in [-1, 1] along the two axes (a smooth
    phase, as real MR images carry), and the operator takes complex images. None (default):
    a real image."""
    from .operators import masks as masks_mod
    from .operators.coils import birdcage_maps
    from .operators.mri import CartesianMRI
    _check_common(size, noise_level, seed)
    shape = (size, size)
    if mask == "random":
        m = masks_mod.random_line_mask(shape, acceleration=acceleration,
                                       center_fraction=center_fraction, seed=seed)
    elif mask == "equispaced":
        m = masks_mod.equispaced_line_mask(shape, acceleration=acceleration,
                                           center_fraction=center_fraction, seed=seed)
    elif mask == "variable_density":
        m = masks_mod.variable_density_mask(shape, acceleration=acceleration, seed=seed)
    else:
        raise ValueError(f"unknown 'mask' {mask!r}; choose 'random', 'equispaced' or "
                         "'variable_density'")
    sens = None if not num_coils else birdcage_maps(shape, num_coils)
    key_phantom, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    truth = _phantom(phantom, shape, key_phantom)
    if phase_ramp is None:
        op = CartesianMRI(m, sensitivities=sens)
    else:
        if not math.isfinite(phase_ramp):
            raise ValueError(f"'phase_ramp' must be a finite number, got {phase_ramp!r}")
        op = CartesianMRI(m, sensitivities=sens, image_dtype=jnp.complex64)
        u, v = jnp.meshgrid(jnp.linspace(-1.0, 1.0, size), jnp.linspace(-1.0, 1.0, size),
                            indexing="ij")
        truth = (truth * jnp.exp(1j * phase_ramp * (u + 0.5 * v))).astype(jnp.complex64)
    data, sigma = _noisy(key_noise, op(truth), noise_level)
    return Problem(name="mri", kind="mri", operator=op, truth=truth, data=data, sigma=sigma,
                   noise_level=noise_level, seed=seed,
                   config={"size": size, "acceleration": acceleration,
                           "center_fraction": center_fraction, "mask": mask,
                           "num_coils": num_coils, "noise_level": noise_level,
                           "phantom": phantom, "phase_ramp": phase_ramp},
                   baseline_fn=lambda y: jnp.abs(op.zero_filled(y)))


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "sparse_view_ct": sparse_view_ct,
    "limited_angle_ct": limited_angle_ct,
    "fan_beam_ct": fan_beam_ct,
    "mri": mri,
}


def make_problem(name: str = "sparse_view_ct", **kwargs: Any) -> Problem:
    """Build a named problem; ``kwargs`` go to its factory.

    Args:
        name: one of ``'sparse_view_ct'``, ``'limited_angle_ct'``, ``'fan_beam_ct'``,
            ``'mri'``.
        **kwargs: options of the problem's factory (size, views, noise level, seed, ...).

    Returns:
        A :class:`~uqrecon.problems.Problem`.
    """
    try:
        factory = PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}") from None
    return factory(**kwargs)

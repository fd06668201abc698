"""Gamma hyperpriors on precisions and the checks shared by every model term.

A precision hyperparameter is either a fixed positive number or a :class:`Gamma`
hyperprior. With a Gamma hyperprior the term holds a *current value* (a pytree leaf,
initially the Gamma mean) that ``with_hyperparameters`` swaps; for Gaussian likelihoods
and Gaussian/GMRF priors the Gamma is conditionally conjugate, and the term reports the
``(shape increment, rate increment)`` of the full conditional so a Gibbs sampler can use
it without re-deriving it.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Gamma"]


@dataclasses.dataclass(frozen=True)
class Gamma:
    """Gamma(shape, rate) hyperprior, density ``∝ t^(shape-1) exp(-rate t)`` on ``t > 0``.

    Hashable, so it can be static metadata of a model pytree.
    """

    shape: float
    rate: float

    def __post_init__(self):
        for name in ("shape", "rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise TypeError(f"Gamma: argument '{name}' must be a real number, got {v!r}")
            if not (math.isfinite(float(v)) and float(v) > 0):
                raise ValueError(f"Gamma: argument '{name}' must be finite and > 0, got {v}")
            object.__setattr__(self, name, float(v))

    @property
    def mean(self) -> float:
        return self.shape / self.rate

    def log_prob(self, t):
        """Log density at ``t`` up to the normalising constant.

        Args:
            t: positive precision value.

        Returns:
            Scalar array.
        """
        return (self.shape - 1.0) * jnp.log(t) - self.rate * t

    def posterior(self, shape_increment, rate_increment):
        """``(shape, rate)`` of the conjugate update ``Gamma(a + ds, b + dr)``.

        Args:
            shape_increment: increment ``ds`` of the shape.
            rate_increment: increment ``dr`` of the rate.

        Returns:
            A pair ``(shape, rate)``.
        """
        return self.shape + shape_increment, self.rate + rate_increment


def check_positive(value, name: str, owner: str) -> None:
    """Raise if a concrete ``value`` is not a finite positive real (skip tracers)."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: argument '{name}' must be a positive number, got a bool")
    try:
        arr = np.asarray(value)
    except Exception:  # a tracer: cannot be checked outside jit
        return
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"{owner}: argument '{name}' must be a positive number, got {value!r}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{owner}: argument '{name}' must be real, got a complex value")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{owner}: argument '{name}' must be finite and > 0, got {value}")


def resolve_precision(value, name: str, owner: str, dtype):
    """``(current value as a scalar array, Gamma or None)`` from a number or a Gamma."""
    if isinstance(value, Gamma):
        return jnp.asarray(value.mean, dtype), value
    check_positive(value, name, owner)
    if np.ndim(value) != 0:
        raise ValueError(f"{owner}: argument '{name}' must be a scalar, got shape {np.shape(value)}")
    return jnp.asarray(value, dtype), None


def real_dtype(*arrays_or_dtypes):
    """float64 if any input is 64-bit (and x64 is on), else float32."""
    for a in arrays_or_dtypes:
        dt = jnp.result_type(a) if not isinstance(a, (np.dtype, type)) else jnp.dtype(a)
        if jnp.issubdtype(dt, jnp.inexact) and jnp.finfo(dt).bits == 64:
            return jnp.result_type(float)  # float64 only when x64 is enabled
    return jnp.float32


def check_shape(shape, name: str, owner: str) -> tuple[int, ...]:
    """Validate an image shape (non-empty tuple of positive ints)."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{owner}: argument '{name}' must be a tuple of ints, got {shape!r}") from None
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(f"{owner}: argument '{name}' must be a non-empty shape of positive sizes, "
                         f"got {shape}")
    return shape


def replace(obj, **fields):
    """A copy of a model pytree with some fields swapped (bypasses ``__init__`` checks,
    so it also works with traced values inside ``jit``)."""
    new = jax.tree_util.tree_map(lambda a: a, obj)
    for name, value in fields.items():
        object.__setattr__(new, name, value)
    return new


def like(s, x):
    """Scalar/array ``s`` cast to the real precision of ``x``."""
    return jnp.asarray(s).astype(jnp.finfo(jnp.result_type(x)).dtype)


def real_gradient(f):
    """Gradient of a real function, as ``df/dRe + i df/dIm`` for complex inputs (the
    ascent direction in the real inner product ``Re<u, v>``); plain ``grad`` for real."""
    return lambda x: jnp.conj(jax.grad(f)(x))


class FixedTerm:
    """Mixin for model terms with no hyperparameters (constraints, TV, wavelet-l1, the
    non-Gaussian likelihoods, CauchyMRF)."""

    @property
    def hyperparameters(self) -> dict:
        return {}

    hyperpriors = hyperparameters

    def with_hyperparameters(self, **values):
        """A copy with some hyperparameters set; this term has none.

        Args:
            **values: hyperparameter values; this term has none, so any name is a
                ValueError.

        Returns:
            The term itself (unchanged).
        """
        if values:
            raise ValueError(f"{type(self).__name__} has no hyperparameters {sorted(values)}")
        return self


def check_posterior(posterior, owner: str = "") -> None:
    """TypeError naming 'posterior' unless it is a uqrecon Posterior (public entry points)."""
    from .posterior import Posterior
    if not isinstance(posterior, Posterior):
        prefix = f"{owner}: " if owner else ""
        raise TypeError(f"{prefix}'posterior' must be a uqrecon Posterior, got "
                        f"{type(posterior).__name__}")

"""Non-negativity and box constraints, two ways.

For proximal methods a constraint is the indicator of a convex set, whose prox is the
projection. For HMC/NUTS it is a bijection from unconstrained ``z`` to the set
(``lower + softplus(z)``, or ``lower + (upper - lower) sigmoid(z)``) with its
log-Jacobian, so samplers run in ``z`` on ``logdensity(forward(z)) + log|det J(z)|``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import operator_dataclass, static_field
from .hyper import FixedTerm, check_shape, like

__all__ = ["NonNegative", "Box", "IdentityTransform", "SoftplusTransform",
           "SigmoidTransform"]


# --------------------------------------------------------------------------------------
# transforms (unconstrained z -> constrained x)
# --------------------------------------------------------------------------------------
@operator_dataclass
class IdentityTransform:
    """No constraint: ``x = z``."""

    def forward(self, z):
        """Unconstrained ``z`` to the constrained image ``x`` (identity).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            The image ``x``.
        """
        return z

    def inverse(self, x):
        """Constrained image ``x`` back to unconstrained ``z``.

        Args:
            x: image inside the constraint set.

        Returns:
            The coordinates ``z``.
        """
        return x

    def log_det_jacobian(self, z):
        """``log |det d forward / dz|`` (the transform is elementwise).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            Scalar array.
        """
        return jnp.zeros((), jnp.real(z).dtype)


@operator_dataclass
class SoftplusTransform:
    """``x = lower + softplus(z)`` onto ``x > lower`` (linear for large z, unlike exp)."""

    lower: jax.Array

    def forward(self, z):
        """Unconstrained ``z`` to the constrained image ``x`` (softplus).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            The image ``x``.
        """
        return like(self.lower, z) + jax.nn.softplus(z)

    def inverse(self, x):
        """Constrained image ``x`` back to unconstrained ``z``.

        Args:
            x: image inside the constraint set.

        Returns:
            The coordinates ``z``.
        """
        s = x - like(self.lower, x)
        s = jnp.maximum(s, jnp.finfo(s.dtype).eps)       # boundary points map to a finite z
        return s + jnp.log(-jnp.expm1(-s))

    def log_det_jacobian(self, z):
        """``log |det d forward / dz|`` (the transform is elementwise).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            Scalar array.
        """
        return jnp.sum(jax.nn.log_sigmoid(z))


@operator_dataclass
class SigmoidTransform:
    """``x = lower + (upper - lower) sigmoid(z)`` onto the open box."""

    lower: jax.Array
    upper: jax.Array

    def forward(self, z):
        """Unconstrained ``z`` to the constrained image ``x`` (scaled sigmoid).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            The image ``x``.
        """
        lo, hi = like(self.lower, z), like(self.upper, z)
        return lo + (hi - lo) * jax.nn.sigmoid(z)

    def inverse(self, x):
        """Constrained image ``x`` back to unconstrained ``z``.

        Args:
            x: image inside the constraint set.

        Returns:
            The coordinates ``z``.
        """
        lo, hi = like(self.lower, x), like(self.upper, x)
        eps = jnp.finfo(x.dtype).eps
        t = jnp.clip((x - lo) / (hi - lo), eps, 1.0 - eps)
        return jnp.log(t) - jnp.log1p(-t)

    def log_det_jacobian(self, z):
        """``log |det d forward / dz|`` (the transform is elementwise).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            Scalar array.
        """
        width = jnp.broadcast_to(like(self.upper, z) - like(self.lower, z), z.shape)
        return jnp.sum(jnp.log(width) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))


# --------------------------------------------------------------------------------------
# constraints as (non-smooth) prior terms
# --------------------------------------------------------------------------------------
class _Constraint(FixedTerm):
    is_smooth = False
    is_gaussian = False
    is_constraint = True

    def contains(self, x):
        """Whether ``x`` lies in the set.

        Args:
            x: image, of the model's image shape.

        Returns:
            Boolean scalar array.
        """
        lo = like(self.lower, x)
        ok = jnp.all(x >= lo)
        if self.upper is not None:
            ok = ok & jnp.all(x <= like(self.upper, x))
        return ok

    def potential(self, x):
        """0 inside the set, ``+inf`` outside (the indicator).

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array, 0 or ``+inf``.
        """
        return jnp.where(self.contains(x), 0.0, jnp.inf).astype(jnp.real(x).dtype)

    def project(self, x):
        """Euclidean projection onto the set.

        Args:
            x: image, of the model's image shape.

        Returns:
            The projection, of the image shape.
        """
        lo = like(self.lower, x)
        hi = None if self.upper is None else like(self.upper, x)
        return jnp.clip(x, lo, hi)

    def prox(self, x, step):
        """The prox of an indicator is the projection, whatever the step.

        Args:
            x: image, of the model's image shape.
            step: step size (unused).

        Returns:
            The projection of ``x``.
        """
        return self.project(x)


def _bound(value, name, owner, shape):
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument '{name}' must be a real number or array") from None
    if arr.ndim and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{owner}: argument '{name}' has shape {arr.shape}, expected a "
                         f"scalar or {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: argument '{name}' must be finite")
    return arr


@operator_dataclass
class NonNegative(_Constraint):
    """``x >= lower`` (default 0) pixelwise."""

    shape: tuple = static_field()
    lower: jax.Array

    upper = None

    def __init__(self, shape, lower=0.0):
        shape = check_shape(shape, "shape", "NonNegative")
        lo = _bound(lower, "lower", "NonNegative", shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "lower", jnp.asarray(lo))

    @property
    def transform(self) -> SoftplusTransform:
        return SoftplusTransform(self.lower)


@operator_dataclass
class Box(_Constraint):
    """``lower <= x <= upper`` pixelwise (scalars or image-shaped arrays)."""

    shape: tuple = static_field()
    lower: jax.Array
    upper: jax.Array

    def __init__(self, shape, lower=0.0, upper=1.0):
        shape = check_shape(shape, "shape", "Box")
        lo = _bound(lower, "lower", "Box", shape)
        hi = _bound(upper, "upper", "Box", shape)
        if not np.all(lo < hi):
            raise ValueError("Box: argument 'upper' must be > 'lower' everywhere")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "lower", jnp.asarray(lo))
        object.__setattr__(self, "upper", jnp.asarray(hi))

    @property
    def transform(self) -> SigmoidTransform:
        return SigmoidTransform(self.lower, self.upper)

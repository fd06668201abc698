"""Smooth priors over images: Gaussian, Gaussian Markov random field, Cauchy MRF.

Every prior is an immutable pytree with ``potential(x)`` (negative log density up to a
constant), ``is_smooth``, ``gauss_newton_vp(x, v)`` (a positive semi-definite curvature)
and ``lipschitz_vp(x, v)`` (a curvature that dominates the Hessian everywhere). The
Gaussian ones also expose their precision ``Q``, a square root ``L`` with ``Q = L^H L``,
and the conjugate structure of a Gamma hyperprior on their precision scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import Identity, LinearOperator, operator_dataclass, static_field
from .hyper import FixedTerm, Gamma, check_positive, check_shape, like, replace, resolve_precision

__all__ = ["FiniteDifference", "GaussianPrior", "GMRF", "CauchyMRF"]

_BOUNDARIES = ("zero", "periodic", "neumann")


@operator_dataclass
class FiniteDifference(LinearOperator):
    """First-order differences along every axis, stacked: range ``(ndim, *shape)``.

    ``boundary``: ``'zero'`` -- backward differences with the image taken as zero just
    before the first pixel of each axis (``d_0 = x_0``; D is square per axis and
    invertible, so ``D^T D`` is positive definite); ``'periodic'`` -- ``x - roll(x, 1)``
    (null space: constants); ``'neumann'`` -- forward differences, zero across the last
    edge (null space: constants), the usual convention for total variation.
    """

    domain_shape: tuple = static_field()
    boundary: str = static_field(default="zero")

    def __post_init__(self):
        if self.boundary not in _BOUNDARIES:
            raise ValueError(f"FiniteDifference: argument 'boundary' must be one of "
                             f"{_BOUNDARIES}, got {self.boundary!r}")

    @property
    def range_shape(self):
        return (len(self.domain_shape), *self.domain_shape)

    @property
    def rank(self) -> int:
        """Rank of ``D`` (and of ``D^T D``): n for 'zero', n - 1 otherwise."""
        n = math.prod(self.domain_shape)
        return n if self.boundary == "zero" else n - 1

    def _diff(self, x, axis):
        if self.boundary == "periodic":
            return x - jnp.roll(x, 1, axis=axis)
        if self.boundary == "zero":
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            prev = jax.lax.slice_in_dim(jnp.pad(x, pad), 0, x.shape[axis], axis=axis)
            return x - prev
        fwd = jnp.diff(x, axis=axis)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, 1)
        return jnp.pad(fwd, pad)

    def _apply(self, x):
        return jnp.stack([self._diff(x, a) for a in range(x.ndim)])


def _check_boundary(boundary, owner):
    if boundary not in _BOUNDARIES:
        raise ValueError(f"{owner}: argument 'boundary' must be one of {_BOUNDARIES}, "
                         f"got {boundary!r}")


def _check_mean(mean, shape, owner):
    try:
        arr = np.asarray(mean)
    except Exception:
        return jnp.asarray(mean)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{owner}: argument 'mean' must be numeric")
    if arr.ndim and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{owner}: argument 'mean' has shape {arr.shape}, expected a "
                         f"scalar or {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: argument 'mean' contains NaN or inf")
    return jnp.asarray(arr)


class _GaussianPriorBase:
    """``potential(x) = delta/2 ||L (x - m)||^2`` with ``Q = delta L^H L``."""

    is_smooth = True
    is_gaussian = True
    is_constraint = False
    _hyper_name = "prior_precision"

    # subclasses provide: shape, delta (leaf), hyperprior (static), mean (leaf),
    # _sqrt (LinearOperator L) and rank
    def _centered(self, x):
        return x - self.mean.astype(x.dtype)

    def quadratic_form(self, x):
        """``(x - m)^H L^H L (x - m)``: the statistic of the precision conditional.

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array.
        """
        d = self._sqrt(self._centered(x))
        return jnp.sum(jnp.real(d * jnp.conj(d)))

    def potential(self, x):
        """``delta (x - m)^H L^H L (x - m) / 2``.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        return 0.5 * like(self.delta, x) * self.quadratic_form(x)

    def precision(self, v):
        """``Q v = delta L^H L v``.

        Args:
            v: direction, of the image shape.

        Returns:
            ``Q v``, of the image shape.
        """
        return like(self.delta, v) * self._sqrt.adjoint(self._sqrt(v)).astype(v.dtype)

    @property
    def precision_sqrt(self) -> LinearOperator:
        """``sqrt(delta) L``, so that ``Q = L'^H L'``."""
        return jnp.sqrt(self.delta) * self._sqrt

    def gauss_newton_vp(self, x, v):
        """``Q v``: the Hessian of the potential (constant).

        Args:
            x: point (unused).
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        return self.precision(v)

    def lipschitz_vp(self, x, v):
        """``Q v``: the Hessian is its own majorant.

        Args:
            x: point (unused).
            v: direction, of the image shape.

        Returns:
            The majorant applied to ``v``, of the image shape.
        """
        return self.precision(v)

    def conditional_stats(self, x):
        """``(k/2, quadratic_form(x)/2)``: increments of the Gamma conjugate update, with
        ``k`` the real degrees of freedom the precision acts on: ``rank`` for a real
        image, ``2 rank`` for a complex one (real and imaginary parts each get ``Q``).

        Args:
            x: image, of the model's image shape.

        Returns:
            A pair ``(shape_increment, rate_increment)``.
        """
        k = self.rank * (2 if jnp.iscomplexobj(x) else 1)
        return 0.5 * k, 0.5 * self.quadratic_form(x)

    @property
    def hyperparameters(self) -> dict:
        return {self._hyper_name: self.delta}

    @property
    def hyperpriors(self) -> dict:
        return {} if self.hyperprior is None else {self._hyper_name: self.hyperprior}

    def with_hyperparameters(self, **values):
        """A copy with another prior precision ``delta``.

        Args:
            **values: the prior precision under its hyperparameter name (> 0); other names
                are a ValueError.

        Returns:
            The new prior (or this one when no value is given).
        """
        value = values.pop(self._hyper_name, None)
        if values:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameters {sorted(values)}")
        if value is None:
            return self
        check_positive(value, self._hyper_name, type(self).__name__)
        return replace(self, delta=jnp.asarray(value, self.delta.dtype))


@operator_dataclass
class GaussianPrior(_GaussianPriorBase):
    """``x ~ N(mean, Q^{-1})`` with ``Q = precision * I`` (iid) or, given
    ``sqrt_operator`` ``L``, ``Q = precision * L^H L``.

    ``precision`` is a positive number or a :class:`Gamma` hyperprior. ``rank`` is the
    rank of ``L^H L`` (default: full, ``min(n, size of L's range)``), which the Gamma
    conditional needs.
    """

    shape: tuple = static_field()
    delta: jax.Array
    mean: jax.Array
    sqrt_operator: LinearOperator | None
    hyperprior: Gamma | None = static_field(default=None)
    rank: int = static_field(default=0)

    def __init__(self, shape, precision=1.0, mean=0.0, sqrt_operator=None, rank=None):
        owner = "GaussianPrior"
        shape = check_shape(shape, "shape", owner)
        delta, hyper = resolve_precision(precision, "precision", owner, jnp.result_type(float))
        n = math.prod(shape)
        if sqrt_operator is not None:
            if not isinstance(sqrt_operator, LinearOperator):
                raise TypeError(f"{owner}: argument 'sqrt_operator' must be a LinearOperator")
            if tuple(sqrt_operator.domain_shape) != shape:
                raise ValueError(f"{owner}: argument 'sqrt_operator' has domain_shape "
                                 f"{sqrt_operator.domain_shape}, expected {shape}")
            full = min(n, sqrt_operator.size_out)
        else:
            full = n
        if rank is None:
            rank = full
        elif not (isinstance(rank, (int, np.integer)) and 0 < rank <= full):
            raise ValueError(f"{owner}: argument 'rank' must be an int in [1, {full}]")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "mean", _check_mean(mean, shape, owner))
        object.__setattr__(self, "sqrt_operator", sqrt_operator)
        object.__setattr__(self, "hyperprior", hyper)
        object.__setattr__(self, "rank", int(rank))

    @property
    def _sqrt(self) -> LinearOperator:
        return Identity(self.shape) if self.sqrt_operator is None else self.sqrt_operator


@operator_dataclass
class GMRF(_GaussianPriorBase):
    """First-order Gaussian Markov random field: ``delta/2 sum_axes ||D_a (x - m)||^2``.

    Isotropic (every axis weighted equally). ``boundary='zero'`` (image zero outside,
    ``Q`` positive definite, rank n) or ``'periodic'`` / ``'neumann'`` (``Q`` singular
    along constants, rank n - 1: an improper prior that the likelihood must make
    proper). ``delta`` is a positive number or a :class:`Gamma` hyperprior.
    """

    shape: tuple = static_field()
    delta: jax.Array
    mean: jax.Array
    hyperprior: Gamma | None = static_field(default=None)
    boundary: str = static_field(default="zero")

    def __init__(self, shape, delta=1.0, boundary="zero", mean=0.0):
        owner = "GMRF"
        shape = check_shape(shape, "shape", owner)
        _check_boundary(boundary, owner)
        d, hyper = resolve_precision(delta, "delta", owner, jnp.result_type(float))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "mean", _check_mean(mean, shape, owner))
        object.__setattr__(self, "hyperprior", hyper)
        object.__setattr__(self, "boundary", boundary)

    @property
    def _sqrt(self) -> LinearOperator:
        return FiniteDifference(self.shape, self.boundary)

    @property
    def rank(self) -> int:
        return self._sqrt.rank


@operator_dataclass
class CauchyMRF(FixedTerm):
    """Heavy-tailed differences: ``sum log(1 + (D x)^2 / scale^2)`` (edge preserving,
    non-convex, smooth). The Hessian is dominated by ``(2/scale^2) D^T D``; the
    Gauss-Newton curvature uses the IRLS weights ``2 / (scale^2 + d^2)``.
    """

    shape: tuple = static_field()
    scale: jax.Array
    boundary: str = static_field(default="zero")

    is_smooth = True
    is_gaussian = False
    is_constraint = False

    def __init__(self, shape, scale=0.1, boundary="zero"):
        owner = "CauchyMRF"
        shape = check_shape(shape, "shape", owner)
        _check_boundary(boundary, owner)
        check_positive(scale, "scale", owner)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "scale", jnp.asarray(scale))
        object.__setattr__(self, "boundary", boundary)

    @property
    def _diff(self):
        return FiniteDifference(self.shape, self.boundary)

    def potential(self, x):
        """Sum over neighbour differences ``d`` of ``log(1 + (d / scale)^2)``.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        g2 = like(self.scale, x) ** 2
        return jnp.sum(jnp.log1p(self._diff(x) ** 2 / g2))

    def gauss_newton_vp(self, x, v):
        """A positive semi-definite curvature of the potential at ``x``.

        Args:
            x: point where the curvature is taken.
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        g2 = like(self.scale, x) ** 2
        w = 2.0 / (g2 + self._diff(x) ** 2)
        return self._diff.adjoint(w * self._diff(v))

    def lipschitz_vp(self, x, v):
        """A global majorant of the Hessian (the curvature at zero differences).

        Args:
            x: point (unused: the majorant is global).
            v: direction, of the image shape.

        Returns:
            The majorant applied to ``v``, of the image shape.
        """
        return (2.0 / like(self.scale, v) ** 2) * self._diff.normal(v)

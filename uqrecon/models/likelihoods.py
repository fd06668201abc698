"""Likelihoods ``p(y | x)`` for a linear forward operator: Gaussian, complex Gaussian, Poisson.

Each likelihood is an immutable pytree with ``potential(x) = -log p(y | x) + const``,
``gauss_newton_vp(x, v)`` (the Fisher / Gauss-Newton curvature ``A^H W(x) A v``, positive
semi-definite) and ``lipschitz_vp(x, v)`` (a curvature operator that dominates the Hessian,
used to bound the Lipschitz constant of the gradient). Inputs are validated at
construction, outside ``jit``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import LinearOperator, operator_dataclass, static_field, through_operator
from .hyper import FixedTerm, Gamma, check_positive, real_dtype, replace, resolve_precision

__all__ = ["Gaussian", "ComplexGaussian", "PoissonTransmission", "PoissonEmission"]


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_operator(operator, owner):
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"{owner}: argument 'operator' must be a LinearOperator, "
                        f"got {type(operator).__name__}")


def _check_data(data, operator, owner, allow_complex):
    """Concrete checks on ``data``: shape, finiteness, complexness. Returns numpy."""
    try:
        arr = np.asarray(data)
    except Exception:
        raise TypeError(f"{owner}: argument 'data' must be a concrete array "
                        f"(construct likelihoods outside jit)") from None
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{owner}: argument 'data' must be numeric, got dtype {arr.dtype}")
    if tuple(arr.shape) != tuple(operator.range_shape):
        raise ValueError(f"{owner}: argument 'data' has shape {tuple(arr.shape)} but the "
                         f"operator's range_shape is {tuple(operator.range_shape)}")
    if np.iscomplexobj(arr) and not allow_complex:
        raise TypeError(f"{owner}: argument 'data' is complex but {owner} is a real "
                        f"likelihood (use ComplexGaussian for complex k-space data)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: argument 'data' contains NaN or inf")
    return arr


def _image_dtype(operator, real):
    """The image dtype at the precision ``real`` (complex if the operator's domain is)."""
    if jnp.issubdtype(jnp.dtype(operator.domain_dtype), jnp.complexfloating):
        return jnp.complex128 if real == jnp.float64 else jnp.complex64
    return real


class _Likelihood(FixedTerm):
    """Shared behaviour: shapes, dtypes, and the domain-projection of adjoints; no
    hyperparameters unless a subclass has them (:class:`Gaussian`'s noise precision)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.operator.domain_shape)

    @property
    def real_dtype(self):
        return jnp.finfo(self.data.dtype).dtype

    @property
    def dtype(self):
        return _image_dtype(self.operator, self.real_dtype)

    @property
    def is_gaussian(self) -> bool:
        return False

    def _adjoint(self, r):
        """``A^H r`` in the image space (real part when the image is real)."""
        g = self.operator.adjoint(r)
        if not jnp.issubdtype(self.dtype, jnp.complexfloating):
            g = jnp.real(g)
        return g.astype(self.dtype)

    def _weighted_normal(self, w, v):
        """``A^H diag(w) A v``."""
        return self._adjoint(w * self.operator(v))


# --------------------------------------------------------------------------------------
# The data terms as functions of u = A x (module level: through_operator keys on them,
# and differentiates them through the operator's explicit adjoint)
# --------------------------------------------------------------------------------------
def _sum_of_squares(u, data):
    """``||u - y||^2`` (real and imaginary parts for complex data)."""
    r = u - data
    if jnp.iscomplexobj(r):
        return jnp.sum(jnp.real(r) ** 2 + jnp.imag(r) ** 2)
    return jnp.sum(r * r)


def _transmission_log_rate(u, log_i0, log_background):
    """``log(I0 exp(-u) + background)``, finite for zero background and large ``u``."""
    return jnp.logaddexp(log_i0 - u, log_background)


def _transmission_deviance(u, log_i0, log_background, y):
    """Poisson deviance of counts ``y`` at ``lambda = I0 exp(-u) + background``."""
    log_lam = _transmission_log_rate(u, log_i0, log_background)
    log_y = jnp.log(jnp.where(y > 0, y, 1.0))
    return jnp.sum(jnp.exp(log_lam) - y - y * (log_lam - log_y))


def _emission_nll(u, background, y):
    """``sum(lambda - y log lambda)`` at ``lambda = u + background``; ``+inf`` where a
    rate is negative or a positive count meets a zero rate."""
    lam = u + background
    pos = y > 0
    safe = jnp.where(lam > 0, lam, 1.0)
    val = jnp.sum(lam) - jnp.sum(jnp.where(pos, y * jnp.log(safe), 0.0))
    bad = jnp.any(lam < 0) | jnp.any(pos & (lam <= 0))
    return jnp.where(bad, jnp.inf, val)


# --------------------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------------------
@operator_dataclass
class Gaussian(_Likelihood):
    """``y = A x + n`` with ``n ~ N(0, sigma^2 I)`` (real data).

    Give ``sigma`` (known noise level) or ``noise_precision`` (``1/sigma^2``): a number,
    or a :class:`Gamma` hyperprior, in which case the current value starts at the Gamma
    mean and the Gamma full conditional is ``(a + m/2, b + ||Ax - y||^2 / 2)``.
    """

    operator: LinearOperator
    data: jax.Array
    noise_precision: jax.Array
    hyperprior: Gamma | None = static_field(default=None)

    _complex = False

    def __init__(self, operator, data, sigma=None, *, noise_precision=None):
        owner = type(self).__name__
        _check_operator(operator, owner)
        if not self._complex and jnp.issubdtype(jnp.dtype(operator.range_dtype),
                                                 jnp.complexfloating):
            raise TypeError(f"{owner}: argument 'operator' has a complex range; "
                            f"use ComplexGaussian")
        arr = _check_data(data, operator, owner, allow_complex=self._complex)
        real = real_dtype(arr)
        if (sigma is None) == (noise_precision is None):
            raise ValueError(f"{owner}: give exactly one of 'sigma' or 'noise_precision'")
        if sigma is not None:
            check_positive(sigma, "sigma", owner)
            if np.ndim(sigma) != 0:
                raise ValueError(f"{owner}: argument 'sigma' must be a scalar")
            tau, hyper = jnp.asarray(1.0 / np.asarray(sigma, np.float64) ** 2, real), None
        else:
            tau, hyper = resolve_precision(noise_precision, "noise_precision", owner, real)
        cdt = jnp.complex128 if real == jnp.float64 else jnp.complex64
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "data", jnp.asarray(arr, cdt if self._complex else real))
        object.__setattr__(self, "noise_precision", tau)
        object.__setattr__(self, "hyperprior", hyper)

    @property
    def real_dtype(self):
        return jnp.finfo(self.noise_precision.dtype).dtype

    @property
    def is_gaussian(self) -> bool:
        return True

    @property
    def sigma(self):
        return 1.0 / jnp.sqrt(self.noise_precision)

    @property
    def num_observations(self) -> int:
        """Number of real observations ``m`` (a complex sample counts twice)."""
        return math.prod(self.operator.range_shape) * (2 if self._complex else 1)

    def residual(self, x):
        """The residual ``A x - y``.

        Args:
            x: image, of the model's image shape.

        Returns:
            The residual, of the data shape.
        """
        return self.operator(x) - self.data

    def quadratic_form(self, x):
        """``||A x - y||^2``, the statistic of the noise-precision conditional.

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array.
        """
        return through_operator(_sum_of_squares, self.operator, x, self.data)

    def potential(self, x):
        """``tau ||A x - y||^2 / 2`` (the negative log likelihood up to a constant).

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        return 0.5 * self.noise_precision * self.quadratic_form(x)

    def gauss_newton_vp(self, x, v):
        """``tau A^H A v``: the Hessian of the potential (it does not depend on ``x``).

        Args:
            x: point (unused: the curvature is constant).
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        return self.noise_precision * self._adjoint(self.operator(v))

    lipschitz_vp = gauss_newton_vp

    def conditional_stats(self, x):
        """``(m/2, ||Ax - y||^2 / 2)``: shape and rate increments of the conjugate update.

        Args:
            x: image, of the model's image shape.

        Returns:
            A pair ``(shape_increment, rate_increment)``.
        """
        return 0.5 * self.num_observations, 0.5 * self.quadratic_form(x)

    @property
    def hyperparameters(self) -> dict:
        return {"noise_precision": self.noise_precision}

    @property
    def hyperpriors(self) -> dict:
        return {} if self.hyperprior is None else {"noise_precision": self.hyperprior}

    def with_hyperparameters(self, noise_precision=None, **other):
        """A copy with another noise precision.

        Args:
            noise_precision: new noise precision ``1/sigma^2`` (> 0); None keeps the current
                one.
            **other: any other name is a ValueError.

        Returns:
            The new likelihood (or this one when nothing changes).
        """
        if other:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameters {sorted(other)}")
        if noise_precision is None:
            return self
        check_positive(noise_precision, "noise_precision", type(self).__name__)
        return replace(self, noise_precision=jnp.asarray(noise_precision, self.real_dtype))


@operator_dataclass
class ComplexGaussian(Gaussian):
    """Complex k-space data: ``y = A x + n``, real and imaginary parts of ``n`` iid
    ``N(0, sigma^2)``; the image may be real or complex (the operator's domain decides)."""

    _complex = True

    def __init__(self, operator, data, sigma=None, *, noise_precision=None):
        super().__init__(operator, data, sigma, noise_precision=noise_precision)


# --------------------------------------------------------------------------------------
# Poisson
# --------------------------------------------------------------------------------------
def _check_counts(arr, owner):
    if not np.all(arr >= 0):
        raise ValueError(f"{owner}: argument 'data' must be non-negative counts")


def _nonneg_array(value, name, owner, real, allow_zero):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument '{name}' must be a real number or array") from None
    ok = np.all(arr >= 0) if allow_zero else np.all(arr > 0)
    if not np.all(np.isfinite(arr)) or not ok:
        raise ValueError(f"{owner}: argument '{name}' must be finite and "
                         f"{'>= 0' if allow_zero else '> 0'}")
    return jnp.asarray(arr, real)


def _check_broadcast(value, shape, name, owner):
    try:
        np.broadcast_shapes(np.shape(value), tuple(shape))
    except ValueError:
        raise ValueError(f"{owner}: argument '{name}' of shape {np.shape(value)} does not "
                         f"broadcast to the data shape {tuple(shape)}") from None


@operator_dataclass
class PoissonTransmission(_Likelihood):
    """Low-dose CT (Beer-Lambert): ``y ~ Poisson(I0 exp(-A x) + background)``.

    The log rate is computed as ``logaddexp(log I0 - Ax, log background)``, so zero
    counts, zero background and large attenuation give finite values and gradients.
    """

    operator: LinearOperator
    data: jax.Array
    log_i0: jax.Array
    log_background: jax.Array

    def __init__(self, operator, data, I0, background=0.0):
        owner = "PoissonTransmission"
        _check_operator(operator, owner)
        arr = _check_data(data, operator, owner, allow_complex=False)
        _check_counts(arr, owner)
        real = real_dtype(arr)
        _check_broadcast(I0, arr.shape, "I0", owner)
        _check_broadcast(background, arr.shape, "background", owner)
        i0 = _nonneg_array(I0, "I0", owner, real, allow_zero=False)
        bg = _nonneg_array(background, "background", owner, real, allow_zero=True)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "data", jnp.asarray(arr, real))
        object.__setattr__(self, "log_i0", jnp.log(i0))
        object.__setattr__(self, "log_background", jnp.log(bg))   # -inf where zero

    def log_rate(self, x):
        """Log of the expected counts, ``log(I0 exp(-A x) + background)``.

        Args:
            x: image, of the model's image shape.

        Returns:
            Array of the data shape.
        """
        return _transmission_log_rate(self.operator(x), self.log_i0, self.log_background)

    def potential(self, x):
        """Negative Poisson log likelihood of the counts in deviance form:
        ``sum(lambda - y - y (log lambda - log y))`` (``y log y := 0`` at ``y = 0``).

        It differs from ``sum(lambda - y log lambda)`` by a constant, but each term is
        ``>= 0`` and ``O(1)`` near a good fit, so the sum stays ``O(number of
        measurements)`` instead of ``-sum(y log y)`` (about ``-3e6`` for 690 counts of
        ~1000): in float32 the raw form's rounding (~0.25 there) swamped the energy
        differences of HMC's Metropolis test.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        return through_operator(_transmission_deviance, self.operator, x, self.log_i0,
                                self.log_background, self.data)

    def gauss_newton_vp(self, x, v):
        """Fisher information: weights ``t^2 / lambda`` with ``t = I0 exp(-Ax)``.

        Args:
            x: point where the Fisher information is taken.
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        log_t = self.log_i0 - self.operator(x)
        w = jnp.exp(2.0 * log_t - self.log_rate(x))
        return self._weighted_normal(w, v)

    def lipschitz_vp(self, x, v):
        """A majorant of the Hessian valid wherever ``A x >= 0`` (non-negative
        attenuation): ``|l''| <= I0 + y/4`` per measurement (``+ y/4`` only with a
        background).

        Args:
            x: point (unused: the majorant is global).
            v: direction, of the image shape.

        Returns:
            The majorant applied to ``v``, of the image shape.
        """
        w = jnp.exp(self.log_i0) + jnp.where(jnp.isfinite(self.log_background),
                                             0.25 * self.data, 0.0)
        return self._weighted_normal(jnp.broadcast_to(w, self.data.shape), v)


@operator_dataclass
class PoissonEmission(_Likelihood):
    """Emission tomography: ``y ~ Poisson(A x + background)``.

    The potential is ``+inf`` where a rate is negative or a positive count meets a zero
    rate; zero counts contribute only their rate (no ``log 0``). Pair it with a
    non-negativity constraint.
    """

    operator: LinearOperator
    data: jax.Array
    background: jax.Array

    def __init__(self, operator, data, background=0.0):
        owner = "PoissonEmission"
        _check_operator(operator, owner)
        arr = _check_data(data, operator, owner, allow_complex=False)
        _check_counts(arr, owner)
        real = real_dtype(arr)
        _check_broadcast(background, arr.shape, "background", owner)
        bg = _nonneg_array(background, "background", owner, real, allow_zero=True)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "data", jnp.asarray(arr, real))
        object.__setattr__(self, "background", bg)

    def rate(self, x):
        """Expected counts ``A x + background``.

        Args:
            x: image, of the model's image shape.

        Returns:
            Array of the data shape.
        """
        return self.operator(x) + self.background

    def potential(self, x):
        """Negative Poisson log likelihood of the counts, up to a constant.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        return through_operator(_emission_nll, self.operator, x, self.background, self.data)

    def gauss_newton_vp(self, x, v):
        """Fisher information: weights ``1 / lambda``.

        Args:
            x: point where the Fisher information is taken.
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        lam = self.rate(x)
        return self._weighted_normal(1.0 / lam, v)

    def lipschitz_vp(self, x, v):
        """The Hessian ``A^T diag(y / lambda^2) A`` at ``x``: the emission gradient has
        no global Lipschitz constant, so this is local to ``x``.

        Args:
            x: point where the Hessian is taken.
            v: direction, of the image shape.

        Returns:
            The majorant applied to ``v``, of the image shape.
        """
        if x is None:
            raise ValueError("PoissonEmission: its gradient has no global Lipschitz "
                             "constant; pass a point 'x' to lipschitz()")
        lam = self.rate(x)
        return self._weighted_normal(self.data / lam ** 2, v)

"""Total variation: the exact proximal operator (fast dual projected gradient) and smooth
surrogates (Huber, Charbonnier) for gradient-based samplers.

``TV(shape, weight)`` is ``weight * sum_pixels |D x|`` with forward differences and a
Neumann boundary (no jump across the last edge); isotropic uses the Euclidean norm of the
per-pixel gradient, anisotropic the l1 norm. Non-smooth penalties of the form
``sum_i w_i |(K x)_i|`` share the interface ``analysis_operator`` (K), ``magnitude``
(groupwise norm), ``weights`` (w) and ``project_dual`` (onto the dual ball), which PDHG
and :class:`SmoothedNorm` use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..operators.base import LinearOperator, operator_dataclass, static_field
from .hyper import FixedTerm, check_positive, check_shape, like, real_gradient
from .priors import FiniteDifference

__all__ = ["TV", "SmoothedNorm"]

_KINDS = ("huber", "charbonnier")


def _safe_norm(z, axis):
    s = jnp.sum(jnp.real(z * jnp.conj(z)), axis=axis)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


class _NormPenalty(FixedTerm):
    """Shared behaviour of ``sum_i w_i |(K x)_i|`` penalties (TV, wavelet l1)."""

    is_smooth = False
    is_gaussian = False
    is_constraint = False

    def potential(self, x):
        """The weighted sum of the magnitudes of the analysis coefficients ``K x``.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        mag = self.magnitude(self.analysis_operator(x))
        return jnp.sum(self.weights(x.dtype) * mag)

    def project_dual(self, q):
        """Projection of ``q`` (in K's range) onto ``{|q_i| <= w_i}``, the domain of the
        conjugate of the penalty (the dual step of PDHG).

        Args:
            q: dual variable, in the range of the analysis operator K.

        Returns:
            The projection, of the shape of ``q``.
        """
        w = self.weights(jnp.real(q).dtype)
        mag = self.magnitude(q)
        if self.grouped:
            mag = mag[None]
        return q * jnp.minimum(1.0, w / jnp.where(mag > 0, mag, 1.0))

    def smoothed(self, eps, kind="huber"):
        """A smooth surrogate (Huber or Charbonnier with parameter ``eps``).

        Args:
            eps: smoothing parameter (> 0).
            kind: ``'huber'`` or ``'charbonnier'``.

        Returns:
            A :class:`SmoothedNorm`.
        """
        return SmoothedNorm(self, eps, kind)


@operator_dataclass
class TV(_NormPenalty):
    """``weight * TV(x)``; ``prox`` is exact up to the dual iterations' tolerance.

    ``prox_max_iter`` and ``prox_tol`` control the fast gradient projection (FGP) on the
    dual (Beck & Teboulle 2009); it stops when the relative change of the primal iterate
    falls below ``prox_tol``.
    """

    shape: tuple = static_field()
    weight: jax.Array
    isotropic: bool = static_field(default=True)
    prox_max_iter: int = static_field(default=200)
    prox_tol: float = static_field(default=1e-5)

    prox_accepts_projection = True    # prox(x, step, project=...) handles a constraint

    def __init__(self, shape, weight=1.0, isotropic=True, prox_max_iter=200, prox_tol=1e-5):
        owner = "TV"
        shape = check_shape(shape, "shape", owner)
        check_positive(weight, "weight", owner)
        if not isinstance(isotropic, bool):
            raise TypeError("TV: argument 'isotropic' must be a bool")
        if int(prox_max_iter) < 1:
            raise ValueError("TV: argument 'prox_max_iter' must be >= 1")
        check_positive(prox_tol, "prox_tol", owner)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "weight", jnp.asarray(weight))
        object.__setattr__(self, "isotropic", isotropic)
        object.__setattr__(self, "prox_max_iter", int(prox_max_iter))
        object.__setattr__(self, "prox_tol", float(prox_tol))

    @property
    def analysis_operator(self) -> LinearOperator:
        return FiniteDifference(self.shape, "neumann")

    @property
    def grouped(self) -> bool:
        return self.isotropic

    def magnitude(self, z):
        """Pointwise magnitude of a gradient field: Euclidean norm over the direction axis (isotropic) or absolute value (anisotropic).

        Args:
            z: gradient field, shape ``(2, *shape)``.

        Returns:
            The magnitudes (isotropic: ``shape``; anisotropic: ``(2, *shape)``).
        """
        return _safe_norm(z, 0) if self.isotropic else jnp.abs(z)

    def weights(self, dtype):
        """The penalty weight as an array of ``dtype``.

        Args:
            dtype: real dtype of the result.

        Returns:
            Scalar array.
        """
        return like(self.weight, jnp.zeros((), dtype))

    def _project_unit(self, p):
        if self.isotropic:
            return p / jnp.maximum(1.0, _safe_norm(p, 0))[None]
        return jnp.clip(p, -1.0, 1.0)

    def prox_dual(self, x, step, project=None):
        """``(u, p, iterations)``: ``u = prox_{step*TV}(x)`` (optionally restricted to a
        convex set through its projection ``project``) and the dual certificate ``p``
        (``|p| <= 1`` pixelwise, ``u = P(x - step*weight*D^T p)``).

        Args:
            x: image, of the model's image shape.
            step: positive step size.
            project: projection onto a convex set (None: unconstrained).

        Returns:
            A triple ``(u, p, iterations)``.
        """
        D = self.analysis_operator
        mu = like(self.weight, x) * like(step, x)
        project = (lambda v: v) if project is None else project
        lip = 4.0 * len(self.shape)           # ||D||^2 <= 4 ndim
        primal = lambda p: project(x - mu * D.adjoint(p))

        def body(carry):
            k, p, r, t, u_prev, _ = carry
            p_new = self._project_unit(r + D(primal(r)) / (mu * lip))
            t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
            r = p_new + ((t - 1.0) / t_new) * (p_new - p)
            u = primal(p_new)
            change = jnp.linalg.norm((u - u_prev).ravel()) / jnp.maximum(
                jnp.linalg.norm(u.ravel()), jnp.finfo(u.dtype).tiny)
            return k + 1, p_new, r, t_new, u, change

        def cond(carry):
            k, *_, change = carry
            return (k < self.prox_max_iter) & (change > self.prox_tol)

        p0 = jnp.zeros(D.range_shape, x.dtype)
        one = jnp.ones((), jnp.real(x).dtype)
        init = (0, p0, p0, one, primal(p0), jnp.asarray(jnp.inf, one.dtype))
        k, p, _, _, u, _ = jax.lax.while_loop(cond, body, init)
        return u, p, k

    def prox(self, x, step, project=None):
        """``argmin_u weight*TV(u) + ||u - x||^2 / (2 step)`` (within the convex set
        of ``project`` if given).

        Args:
            x: image, of the model's image shape.
            step: positive step size.
            project: projection onto a convex set (None: unconstrained).

        Returns:
            The proximal point, of the image shape.
        """
        return self.prox_dual(x, step, project)[0]


@operator_dataclass
class SmoothedNorm(FixedTerm):
    """Huber or Charbonnier surrogate of a norm penalty ``sum_i w_i |(K x)_i|``.

    Huber: ``|z|^2/(2 eps)`` for ``|z| <= eps``, ``|z| - eps/2`` beyond; Charbonnier:
    ``sqrt(|z|^2 + eps^2) - eps``. Both are convex with a ``1/eps``-Lipschitz
    gradient in ``z`` and tend to the exact penalty as ``eps -> 0``.
    """

    parent: _NormPenalty
    eps: jax.Array
    kind: str = static_field(default="huber")

    is_smooth = True
    is_gaussian = False
    is_constraint = False

    def __init__(self, parent, eps, kind="huber"):
        check_positive(eps, "eps", "smoothed")
        if kind not in _KINDS:
            raise ValueError(f"smoothed: argument 'kind' must be one of {_KINDS}, got {kind!r}")
        object.__setattr__(self, "parent", parent)
        object.__setattr__(self, "eps", jnp.asarray(eps))
        object.__setattr__(self, "kind", kind)

    @property
    def shape(self):
        return self.parent.shape

    def _phi(self, mag, eps):
        if self.kind == "charbonnier":
            return jnp.sqrt(mag * mag + eps * eps) - eps
        return jnp.where(mag <= eps, 0.5 * mag * mag / eps, mag - 0.5 * eps)

    def potential(self, x):
        """The smoothed penalty: Huber or Charbonnier of the magnitudes of ``K x``, weighted.

        Args:
            x: image, of the model's image shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        z = self.parent.analysis_operator(x)
        eps = like(self.eps, x)
        if self.parent.grouped:
            s = jnp.sum(jnp.real(z * jnp.conj(z)), axis=0)
            mag = jnp.sqrt(s + eps * eps) - eps if self.kind == "charbonnier" else None
            if mag is None:   # Huber in the squared norm, differentiable at 0
                small = s <= eps * eps
                root = jnp.sqrt(jnp.where(small, eps * eps, s))
                val = jnp.where(small, 0.5 * s / eps, root - 0.5 * eps)
            else:
                val = mag
        else:
            val = self._phi(jnp.abs(z), eps)
        return jnp.sum(self.parent.weights(x.dtype) * val)

    def gauss_newton_vp(self, x, v):
        """The Hessian-vector product (positive semi-definite: the surrogate is convex).

        Args:
            x: point where the Hessian is taken.
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        return jax.jvp(real_gradient(self.potential), (x,), (v,))[1]

    def lipschitz_vp(self, x, v):
        """A global majorant of the Hessian: ``(max w / eps) K^T K v``.

        Args:
            x: point (unused: the majorant is global).
            v: direction, of the image shape.

        Returns:
            The majorant applied to ``v``, of the image shape.
        """
        K = self.parent.analysis_operator
        wmax = jnp.max(self.parent.weights(v.dtype))
        return (wmax / like(self.eps, v)) * K.adjoint(K(v))

"""Complex images in real coordinates: ``x = u + i v`` as the real array ``(u, v)``.

Every inference method that needs a real parameter vector (HMC/NUTS/MALA, mean-field and
low-rank VI, Laplace, exact draws) samples or fits a complex image in *real
coordinates*: the real array ``w = stack([Re x, Im x])`` of shape ``(2, *shape)`` (flat:
``[u; v]``, twice the length). The map is real-linear and isometric
(``||w||^2 = ||x||^2``), so a complex linear-Gaussian posterior with potential
``tau/2 ||A x - y||^2 + delta/2 ||L (x - m)||^2`` (real and imaginary parts of the noise
each of variance ``1/tau``) becomes the real linear-Gaussian posterior with operator
``A_r w = (Re A x, Im A x)``, data ``(Re y, Im y)``, the same ``tau``, and prior square
root ``L_r w = (Re L x, Im L x)``; its precision is the real ``2n x 2n`` matrix
``[[Re P, -Im P], [Im P, Re P]]`` of the complex ``P = tau A^H A + Q``, and its
covariance ``[[Re C, -Im C], [Im C, Re C]]`` with ``C = P^{-1}``: ``Var(u_i) =
Var(v_i) = C_ii`` and ``E|x_i - mean_i|^2 = 2 C_ii``.

:func:`real_coordinates` builds that real posterior from a complex one; ``to_complex`` /
``to_real`` convert images.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..operators.base import LinearOperator, operator_dataclass

__all__ = ["RealPair", "real_coordinates", "to_real", "to_complex"]


def to_real(x):
    """``(Re x, Im x)`` stacked on a new leading axis.

    Args:
        x: complex image ``(*shape)``.

    Returns:
        Real array ``(2, *shape)`` of the matching precision.
    """
    x = jnp.asarray(x)
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=0)


def _complex_dtype(real):
    return jnp.complex128 if jnp.dtype(real) == jnp.float64 else jnp.complex64


def to_complex(w):
    """``w[0] + i w[1]``: the inverse of :func:`to_real` for an unbatched image.

    Args:
        w: real array ``(2, *shape)``.

    Returns:
        Complex array ``(*shape)`` of the matching precision.
    """
    w = jnp.asarray(w)
    return (w[0] + 1j * w[1]).astype(_complex_dtype(w.dtype))


@operator_dataclass
class RealPair(LinearOperator):
    """A (complex-)linear operator ``A`` seen in real coordinates on both sides:
    ``w = (u, v) -> (Re A(u + i v), Im A(u + i v))``, real arrays ``(2, *domain)`` to
    ``(2, *range)``. Its adjoint in the real inner product is
    ``z -> (Re A^H(z0 + i z1), Im A^H(z0 + i z1))``; a real ``A`` (a finite-difference
    stencil) acts on ``u`` and ``v`` separately.
    """

    op: LinearOperator

    is_real_pair = True

    @property
    def domain_shape(self):
        return (2, *self.op.domain_shape)

    @property
    def range_shape(self):
        return (2, *self.op.range_shape)

    @property
    def domain_dtype(self):
        return jnp.finfo(jnp.dtype(self.op.domain_dtype)).dtype

    @property
    def _real_op(self) -> bool:
        return not (jnp.issubdtype(jnp.dtype(self.op.domain_dtype), jnp.complexfloating)
                    or jnp.issubdtype(jnp.dtype(self.op.range_dtype), jnp.complexfloating))

    def _apply(self, w):
        if self._real_op:
            return jnp.stack([self.op._apply(w[0]), self.op._apply(w[1])])
        y = self.op._apply((w[0] + 1j * w[1]).astype(_complex_dtype(w.dtype)))
        return jnp.stack([jnp.real(y), jnp.imag(y)]).astype(w.dtype)

    def _adjoint(self, z):
        if self._real_op:
            return jnp.stack([self.op._adjoint(z[0]), self.op._adjoint(z[1])])
        x = self.op._adjoint((z[0] + 1j * z[1]).astype(_complex_dtype(z.dtype)))
        return jnp.stack([jnp.real(x), jnp.imag(x)]).astype(z.dtype)


def _unsupported(what: str, owner: str):
    prefix = f"{owner}: " if owner else ""
    return ValueError(f"{prefix}a complex image is supported in real coordinates for a "
                      f"complex linear-Gaussian posterior only (ComplexGaussian likelihood "
                      f"with GaussianPrior / GMRF priors); this posterior has {what}")


def real_coordinates(posterior, owner: str = ""):
    """The real posterior of ``w = (Re x, Im x)`` (shape ``(2, *shape)``) of a complex
    linear-Gaussian posterior; see the module docstring. Hyperparameters (and Gamma
    hyperpriors) carry over under the same names.

    Args:
        posterior: a :class:`~uqrecon.models.Posterior` with a complex image.
        owner: prefix of error messages (the method asking).

    Returns:
        A real :class:`~uqrecon.models.Posterior` with ``shape == (2, *posterior.shape)``
        and the real precision of ``posterior.dtype``.
    """
    from .likelihoods import Gaussian
    from .posterior import Posterior
    from .priors import GaussianPrior
    if not jnp.issubdtype(jnp.dtype(posterior.dtype), jnp.complexfloating):
        raise ValueError(f"{owner + ': ' if owner else ''}'posterior' has a real image; "
                         f"real coordinates are for complex images")
    lik = posterior.likelihood
    if not (getattr(lik, "is_gaussian", False) and getattr(lik, "_complex", False)):
        raise _unsupported(f"a {type(lik).__name__} likelihood", owner)
    bad = [type(p).__name__ for p in posterior.priors if not getattr(p, "is_gaussian", False)]
    if bad or not posterior.priors:
        raise _unsupported(f"priors {bad or 'none'}", owner)
    real = jnp.finfo(jnp.dtype(posterior.dtype)).dtype
    data = to_real(jnp.asarray(lik.data))
    noise = lik.hyperprior if lik.hyperprior is not None else lik.noise_precision
    rlik = Gaussian(RealPair(lik.operator), data, noise_precision=noise)
    if lik.hyperprior is not None:
        rlik = rlik.with_hyperparameters(noise_precision=lik.noise_precision)
    shape = tuple(posterior.shape)
    priors = []
    for p in posterior.priors:
        mean = to_real(jnp.broadcast_to(jnp.asarray(p.mean), shape).astype(posterior.dtype))
        value = p.hyperprior if p.hyperprior is not None else p.delta
        rp = GaussianPrior((2, *shape), precision=value, mean=mean,
                           sqrt_operator=RealPair(p._sqrt), rank=2 * p.rank)
        if p.hyperprior is not None:
            rp = rp.with_hyperparameters(prior_precision=p.delta)
        priors.append(rp)
    out = Posterior(rlik, priors)
    assert jnp.dtype(out.dtype) == real, (out.dtype, real)
    return out


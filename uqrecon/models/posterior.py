"""``Posterior(likelihood, prior)``: the one interface every inference method reads.

A posterior is an immutable pytree (so it can be a ``jit`` argument) holding a likelihood
and a tuple of prior terms. It exposes the full log density, the split into a smooth part
(likelihood + smooth priors, with gradient and Hessian-vector products) and a non-smooth
part (TV, wavelet l1, constraints, with the prox of their sum), a Lipschitz estimate,
the unconstrained reparametrisation for HMC, the linear-Gaussian structure
(:class:`GaussianForm`) and the conjugate Gamma conditionals of hierarchical models.
Every method accepting an image also accepts leading batch axes (chains), mapped by vmap.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..linalg import dense_from_matvec, largest_eigenvalue, pcg
from ..operators.base import LinearOperator, operator_dataclass, static_field
from .constraints import IdentityTransform
from .hyper import check_positive, like, real_gradient

__all__ = ["Posterior", "GaussianForm"]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _batched(fn, core_ndim, *arrays):
    """Apply ``fn`` to arrays of ``core_ndim`` dims, vmapping any leading batch axes."""
    nb = arrays[0].ndim - core_ndim
    for _ in range(nb):
        fn = jax.vmap(fn)
    return fn(*arrays)


def _dykstra(prox_f, prox_g, x, max_iter=2000, tol=None):
    """``prox_{f+g}(x)`` from the proxes of ``f`` and ``g`` (Bauschke & Combettes'
    Dykstra-like algorithm), stopped on the relative change of the iterate (default
    tolerance: 1e-9 in float64, 100 * eps ~ 1e-5 in float32, which a float32 iterate
    can actually reach)."""
    if tol is None:
        tol = max(1e-9, 100 * float(jnp.finfo(jnp.real(x).dtype).eps))

    def body(carry):
        k, y, p, q, _ = carry
        z = prox_f(y + p)
        p = y + p - z
        y_new = prox_g(z + q)
        q = z + q - y_new
        change = jnp.linalg.norm((y_new - y).ravel()) / jnp.maximum(
            jnp.linalg.norm(y_new.ravel()), jnp.finfo(y.dtype).tiny)
        return k + 1, y_new, p, q, change

    def cond(carry):
        return (carry[0] < max_iter) & (carry[4] > tol)

    zero = jnp.zeros_like(x)
    init = (0, x, zero, zero, jnp.asarray(jnp.inf, jnp.real(x).dtype))
    return jax.lax.while_loop(cond, body, init)[1]


@operator_dataclass
class _Concatenated(LinearOperator):
    """Operators on a common domain, outputs flattened and concatenated."""

    ops: tuple

    @property
    def domain_shape(self):
        return self.ops[0].domain_shape

    @property
    def range_shape(self):
        return (sum(o.size_out for o in self.ops),)

    @property
    def domain_dtype(self):
        return self.ops[0].domain_dtype

    def _apply(self, x):
        return jnp.concatenate([o._apply(x).ravel() for o in self.ops])

    def _adjoint(self, y):
        out, start = 0, 0
        for o in self.ops:
            out = out + o._adjoint(y[start:start + o.size_out].reshape(o.range_shape))
            start += o.size_out
        return out


# --------------------------------------------------------------------------------------
# GaussianForm
# --------------------------------------------------------------------------------------
@operator_dataclass
class GaussianForm:
    """A linear-Gaussian posterior ``N(mu, P^{-1})``: ``P = tau A^H A + Q``,
    ``P mu = tau A^H y + Q m``, with ``Q = L^H L`` (``L = prior_precision_sqrt``)."""

    operator: LinearOperator
    data: jax.Array
    noise_precision: jax.Array
    priors: tuple
    real_image: bool = static_field(default=True)
    # the image is a complex one in real coordinates (shape (2, *image), the pair of real
    # and imaginary parts on axis 0; see models.realview): the preconditioners of CG
    # model each part separately
    pair_axis: bool = static_field(default=False)

    @property
    def shape(self):
        return tuple(self.operator.domain_shape)

    @property
    def prior_mean(self):
        means = [jnp.broadcast_to(p.mean, self.shape) for p in self.priors]
        if len(means) > 1:
            try:
                same = all(np.array_equal(np.asarray(means[0]), np.asarray(m)) for m in means)
            except Exception:  # traced means cannot be compared
                same = False
            if not same:
                raise ValueError("GaussianForm.prior_mean: the Gaussian priors have different "
                                 "means, so no single prior mean exists (use rhs instead)")
        return means[0]

    @property
    def prior_precision_sqrt(self) -> LinearOperator:
        ops = tuple(p.precision_sqrt for p in self.priors)
        return ops[0] if len(ops) == 1 else _Concatenated(ops)

    def _domain(self, z, like_x):
        return (jnp.real(z) if self.real_image else z).astype(like_x.dtype)

    def prior_precision(self, x):
        """``Q x``.

        Args:
            x: image, of the model's image shape.

        Returns:
            ``Q x``, of the image shape.
        """
        return sum(p.precision(x) for p in self.priors)

    def precision(self, x):
        """``P x = tau A^H A x + Q x``.

        Args:
            x: image, of the model's image shape.

        Returns:
            ``P x``, of the image shape.
        """
        tau = like(self.noise_precision, x)
        return tau * self._domain(self.operator.normal(x), x) + self.prior_precision(x)

    @property
    def rhs(self):
        """``tau A^H y + Q m``."""
        aty = self.operator.adjoint(self.data)
        aty = jnp.real(aty) if self.real_image else aty
        tau = like(self.noise_precision, aty)
        prior = sum(p.precision(jnp.broadcast_to(p.mean, self.shape).astype(aty.dtype))
                    for p in self.priors)
        return tau * aty + prior

    def precision_matrix(self, dtype=None):
        """Dense ``P`` (n x n); small problems only. Built from the densified operator
        (one matrix product) and n prior-precision applications, not n products with P.

        Args:
            dtype: dtype of the matrix (default: the image dtype).

        Returns:
            The dense precision, shape ``(n, n)`` with ``n`` the number of pixels.
        """
        P = _precision_matrix(self)
        return P if dtype is None else P.astype(dtype)

    def mean_cg(self, tol=None, maxiter=None, x0=None):
        """The posterior mean by conjugate gradients on ``P mu = rhs``: the package's one
        CG, :func:`uqrecon.linalg.pcg`. ``tol`` defaults to
        :func:`uqrecon.linalg.default_tol` of the dtype, ``maxiter`` to ``10 n``. With
        ``x0`` CG starts there and solves to the same absolute tolerance ``tol ||rhs||``.

        Args:
            tol: relative residual tolerance (None: the dtype's default).
            maxiter: maximum number of CG iterations (None: ``10 n``).
            x0: starting image (None: zeros).

        Returns:
            The posterior mean, of the image shape.
        """
        maxiter = 10 * math.prod(self.shape) if maxiter is None else int(maxiter)
        rhs = self.rhs
        if x0 is not None:
            x0 = jnp.asarray(x0, rhs.dtype)
        return pcg(self.precision, rhs, tol=tol, maxiter=maxiter, x0=x0).x


@jax.jit
def _precision_matrix(form: GaussianForm) -> jax.Array:
    """``P = tau Re(A^H A) + Q``: the operator densified once (from its cheaper side) and
    squared, ``Q`` from n applications of the prior precision (stencils: cheap)."""
    shape, dtype = form.shape, form.rhs.dtype
    n = math.prod(shape)
    op = form.operator
    A = op.to_dense(op._domain_dtype_for(form.rhs))
    AhA = jnp.conj(A).T @ A
    AhA = (jnp.real(AhA) if form.real_image else AhA).astype(dtype)
    Q = dense_from_matvec(form.prior_precision, n, dtype, in_shape=shape)
    P = jnp.asarray(form.noise_precision, jnp.real(AhA).dtype) * AhA + Q
    return 0.5 * (P + jnp.conj(P).T)


# --------------------------------------------------------------------------------------
# Posterior
# --------------------------------------------------------------------------------------
def _as_priors(prior):
    if prior is None:
        return ()
    if isinstance(prior, (list, tuple)):
        return tuple(prior)
    return (prior,)


@operator_dataclass
class Posterior:
    """``p(x | y) ∝ p(y | x) prod_k p_k(x)``; see ``docs/interfaces.md`` for the contract.

    ``is_smooth`` is True when every non-smooth term is a constraint, which HMC/NUTS handle
    through ``transform`` and ``logdensity_unconstrained``; proximal methods use ``prox``
    (the prox of the sum of *all* non-smooth terms, constraints included).
    """

    likelihood: object
    priors: tuple

    def __init__(self, likelihood, prior=None):
        if not (hasattr(likelihood, "potential") and hasattr(likelihood, "operator")):
            raise TypeError(f"Posterior: argument 'likelihood' must be a likelihood "
                            f"(Gaussian, Poisson...), got {type(likelihood).__name__}")
        priors = _as_priors(prior)
        shape = tuple(likelihood.shape)
        for i, p in enumerate(priors):
            if not (hasattr(p, "potential") and hasattr(p, "is_smooth")):
                raise TypeError(f"Posterior: argument 'prior' entry {i} is not a prior term "
                                f"({type(p).__name__})")
            if tuple(p.shape) != shape:
                raise ValueError(f"Posterior: argument 'prior' entry {i} has shape "
                                 f"{tuple(p.shape)} but the operator's domain is {shape}")
        if sum(p.is_constraint for p in priors) > 1:
            raise ValueError("Posterior: argument 'prior' holds more than one constraint; "
                             "combine them into one Box")
        object.__setattr__(self, "likelihood", likelihood)
        object.__setattr__(self, "priors", priors)

    # -- shapes and structure -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.likelihood.shape)

    @property
    def dtype(self):
        return self.likelihood.dtype

    @property
    def smooth_priors(self) -> tuple:
        return tuple(p for p in self.priors if p.is_smooth)

    @property
    def nonsmooth(self) -> tuple:
        """Non-smooth terms (penalties and constraints), each with ``potential`` and
        ``prox(x, step)``."""
        return tuple(p for p in self.priors if not p.is_smooth)

    @property
    def constraint(self):
        cons = [p for p in self.priors if p.is_constraint]
        return cons[0] if cons else None

    @property
    def is_smooth(self) -> bool:
        return all(p.is_constraint for p in self.nonsmooth)

    def _check(self, x, name="x"):
        x = jnp.asarray(x)
        nd = len(self.shape)
        if x.ndim < nd or tuple(x.shape[x.ndim - nd:]) != self.shape:
            raise ValueError(f"Posterior: argument '{name}' has shape {tuple(x.shape)}, "
                             f"expected {self.shape} (optionally with leading batch axes)")
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(self.dtype)
        return x

    # -- densities ----------------------------------------------------------------------
    def _potential(self, x):
        return self.likelihood.potential(x) + sum(p.potential(x) for p in self.priors)

    def _smooth_potential(self, x):
        return self.likelihood.potential(x) + sum(p.potential(x) for p in self.smooth_priors)

    def potential(self, x):
        """Negative log density up to a constant (``+inf`` outside constraints).

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array; ``+inf`` outside the constraint set.
        """
        return _jit_potential(self, self._check(x))

    def logdensity(self, x):
        """Log density up to a constant: ``-potential(x)`` (``-inf`` outside constraints).

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array.
        """
        return -self.potential(x)

    def smooth_potential(self, x):
        """Likelihood plus every smooth prior term.

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array.
        """
        return _jit_smooth_potential(self, self._check(x))

    def grad_smooth_potential(self, x):
        """Gradient of ``smooth_potential``; for complex images ``df/dRe + i df/dIm``
        (the ascent direction; JAX's raw ``grad`` would give its conjugate).

        Args:
            x: image, of the model's image shape.

        Returns:
            The gradient, of the image shape and dtype.
        """
        return _jit_grad(self, self._check(x))

    def value_and_grad_smooth_potential(self, x):
        """``(smooth_potential(x), grad_smooth_potential(x))`` in one pass.

        Args:
            x: image, of the model's image shape.

        Returns:
            A pair ``(value, gradient)``: a scalar array and an array of the image shape.
        """
        return _jit_value_and_grad(self, self._check(x))

    def hessian_vp(self, x, v):
        """Hessian of the smooth potential at ``x`` applied to ``v`` (forward over reverse).

        Args:
            x: point where the Hessian is taken, of the image shape.
            v: direction, of the image shape.

        Returns:
            The Hessian-vector product, of the image shape.
        """
        return _jit_hvp(self, self._check(x), self._check(v, "v"))

    def gauss_newton_vp(self, x, v):
        """Gauss-Newton / Fisher curvature (PSD): the likelihood's ``A^H W A v`` plus each
        smooth prior's PSD curvature. Equals ``hessian_vp`` for Gaussian models.

        Args:
            x: point where the curvature is taken, of the image shape.
            v: direction, of the image shape.

        Returns:
            The curvature applied to ``v``, of the image shape.
        """
        return _jit_gn(self, self._check(x), self._check(v, "v"))

    # -- non-smooth part ----------------------------------------------------------------
    def prox(self, x, step):
        """``argmin_u sum_k g_k(u) + ||u - x||^2 / (2 step)`` over the non-smooth terms.

        One term: its own prox. TV with a constraint: the constrained dual iterations.
        Otherwise Dykstra-like splitting over the terms' proxes.

        Args:
            x: image, of the model's image shape.
            step: positive step size of the proximal operator.

        Returns:
            The proximal point, of the image shape.
        """
        x = self._check(x)
        if not self.nonsmooth:
            return x
        return _jit_prox(self, x, step)

    @staticmethod
    def _prox(x, step, terms):
        if len(terms) == 1:
            return terms[0].prox(x, step)
        cons = [t for t in terms if t.is_constraint]
        rest = [t for t in terms if not t.is_constraint]
        if len(rest) == 1 and cons and getattr(rest[0], "prox_accepts_projection", False):
            return rest[0].prox(x, step, project=cons[0].project)
        head, tail = terms[0], terms[1:]
        return _dykstra(lambda a: head.prox(a, step),
                        lambda a: Posterior._prox(a, step, tail), x)

    def lipschitz(self, key=None, x=None, num_iter=200, rtol=1e-5):
        """Lipschitz constant of ``grad_smooth_potential`` by power iteration on the sum of
        the terms' curvature majorants (exact Hessian for quadratic terms; global bounds
        for smoothed TV and Cauchy; at ``x`` for Poisson emission, which has no global
        constant). Returns a scalar array.

        Args:
            key: JAX PRNG key of the power iteration's start vector (None: a fixed key).
            x: point where a local constant is taken (needed only for Poisson emission).
            num_iter: maximum number of power iterations.
            rtol: relative change of the estimate at which the power iteration stops.

        Returns:
            The Lipschitz constant, a scalar array.
        """
        if key is None:
            key = jax.random.PRNGKey(0)
        real = jnp.finfo(self.dtype).dtype
        v0 = jax.random.normal(key, self.shape, real).astype(self.dtype)
        if x is not None:
            x = self._check(x)
        return _jit_lipschitz(self, x, v0, num_iter, rtol)

    # -- constraints as a reparametrisation ---------------------------------------------
    @property
    def transform(self):
        """Bijection ``z -> x`` onto the constraint set (identity if unconstrained)."""
        c = self.constraint
        return IdentityTransform() if c is None else c.transform

    def logdensity_unconstrained(self, z):
        """``logdensity(forward(z)) + log|det J(z)|``, constraints dropped (always met).

        Args:
            z: unconstrained coordinates, of the image shape.

        Returns:
            Scalar array.
        """
        return _jit_logdensity_unconstrained(self, self._check(z, "z"))

    def _logdensity_unconstrained(self, z):
        t = self.transform
        x = t.forward(z)
        unc = self._smooth_potential(x) + sum(
            p.potential(x) for p in self.nonsmooth if not p.is_constraint)
        return -unc + t.log_det_jacobian(z)

    def _gauss_newton_vp(self, x, v):
        return self.likelihood.gauss_newton_vp(x, v) + sum(
            p.gauss_newton_vp(x, v) for p in self.smooth_priors)

    def _hessian_vp(self, x, v):
        return jax.jvp(real_gradient(self._smooth_potential), (x,), (v,))[1]

    # -- Gaussian structure and hyperparameters -----------------------------------------
    def gaussian_form(self) -> GaussianForm | None:
        """The linear-Gaussian structure at the current hyperparameter values, or None
        unless the likelihood is Gaussian and every prior is Gaussian (at least one).
        For hierarchical models this is the conditional of ``x`` given the current
        hyperparameters (what a Gibbs sampler needs); see ``is_hierarchical``.

        Returns:
            A :class:`GaussianForm`, or None when the posterior is not linear-Gaussian.
        """
        lik = self.likelihood
        if not (lik.is_gaussian and self.priors and all(p.is_gaussian for p in self.priors)):
            return None
        real_image = not jnp.issubdtype(self.dtype, jnp.complexfloating)
        return GaussianForm(lik.operator, lik.data, lik.noise_precision, self.priors,
                            real_image, bool(getattr(lik.operator, "is_real_pair", False)))

    def real_coordinates(self, owner: str = "") -> "Posterior":
        """This complex-image posterior as a real posterior of ``w = (Re x, Im x)``, shape
        ``(2, *shape)`` (:func:`uqrecon.models.realview.real_coordinates`): what every
        sampler and approximation runs on for a complex image.

        Args:
            owner: prefix of error messages (the method asking).

        Returns:
            A real :class:`Posterior`; a ValueError unless this posterior has a complex
            image, a ``ComplexGaussian`` likelihood and Gaussian priors only.
        """
        from .realview import real_coordinates
        return real_coordinates(self, owner)

    def _named_terms(self):
        """``[(name, term)]`` for every term carrying a precision hyperparameter."""
        out = []
        if "noise_precision" in self.likelihood.hyperparameters:
            out.append(("noise_precision", self.likelihood))
        with_hyper = [(i, p) for i, p in enumerate(self.priors) if p.hyperparameters]
        for i, p in with_hyper:
            name = "prior_precision" if len(with_hyper) == 1 else f"prior_precision_{i}"
            out.append((name, p))
        return out

    @property
    def hyperparameters(self) -> dict:
        """Current values, e.g. ``{"noise_precision": tau, "prior_precision": delta}``."""
        return {name: next(iter(t.hyperparameters.values())) for name, t in self._named_terms()}

    @property
    def hyperpriors(self) -> dict:
        """The Gamma hyperprior of each hierarchical hyperparameter."""
        return {name: next(iter(t.hyperpriors.values()))
                for name, t in self._named_terms() if t.hyperpriors}

    @property
    def is_hierarchical(self) -> bool:
        return bool(self.hyperpriors)

    def with_hyperparameters(self, **values) -> "Posterior":
        """A new posterior with some hyperparameters set (names from ``hyperparameters``).

        Args:
            **values: new values by hyperparameter name, e.g. ``noise_precision=...``,
                ``prior_precision=...``.

        Returns:
            A new :class:`Posterior` (this one is unchanged).
        """
        named = dict(self._named_terms())
        unknown = sorted(set(values) - set(named))
        if unknown:
            raise ValueError(f"Posterior.with_hyperparameters: unknown hyperparameter(s) "
                             f"{unknown}; this posterior has {sorted(named)}")
        for name, v in values.items():
            check_positive(v, name, "Posterior.with_hyperparameters")
        lik = self.likelihood
        if "noise_precision" in values:
            lik = lik.with_hyperparameters(noise_precision=values["noise_precision"])
        priors = list(self.priors)
        for name, term in named.items():
            if term is self.likelihood or name not in values:
                continue
            i = next(k for k, p in enumerate(self.priors) if p is term)
            inner = next(iter(term.hyperparameters))
            priors[i] = term.with_hyperparameters(**{inner: values[name]})
        new = jax.tree_util.tree_map(lambda a: a, self)
        object.__setattr__(new, "likelihood", lik)
        object.__setattr__(new, "priors", tuple(priors))
        return new

    def quadratic_forms(self, x) -> dict:
        """The statistic of each precision conditional: ``||Ax - y||^2`` for the noise,
        ``(x - m)^H L^H L (x - m)`` for each Gaussian prior.

        Args:
            x: image, of the model's image shape.

        Returns:
            A dict, hyperparameter name -> scalar array.
        """
        x = self._check(x)
        return {name: _batched(t.quadratic_form, len(self.shape), x)
                for name, t in self._named_terms()}

    def conditionals(self, x) -> dict:
        """``name -> (shape, rate)`` of the Gamma full conditional of every hyperparameter
        with a Gamma hyperprior: noise ``(a + m/2, b + ||Ax-y||^2/2)``, prior
        ``(a + rank/2, b + (x-m)^T L^T L (x-m)/2)``.

        Args:
            x: image, of the model's image shape.

        Returns:
            A dict, hyperparameter name -> ``(shape, rate)`` of its Gamma full conditional.
        """
        x = self._check(x)
        out = {}
        for name, t in self._named_terms():
            if not t.hyperpriors:
                continue
            gamma = next(iter(t.hyperpriors.values()))
            ds, dr = _batched(t.conditional_stats, len(self.shape), x)
            out[name] = gamma.posterior(ds, dr)
        return out

    def log_joint(self, x) -> jax.Array:
        """``log p(x, hyperparameters | y)`` up to a constant: ``logdensity(x)`` plus, for
        each Gamma-hyperprior precision t, ``(k/2) log t + log Gamma(t)`` (k = m or rank).

        Args:
            x: image, of the model's image shape.

        Returns:
            Scalar array.
        """
        x = self._check(x)
        out = self.logdensity(x)
        for _, t in self._named_terms():
            if not t.hyperpriors:
                continue
            gamma = next(iter(t.hyperpriors.values()))
            value = next(iter(t.hyperparameters.values()))
            k = (t.num_observations if t is self.likelihood
                 else t.rank * (2 if jnp.iscomplexobj(x) else 1))  # real degrees of freedom
            out = out + 0.5 * k * jnp.log(value) + gamma.log_prob(value)
        return out


# --------------------------------------------------------------------------------------
# compiled entry points (the posterior is a pytree argument: one compilation per
# structure, reused across posteriors that differ only in array values)
# --------------------------------------------------------------------------------------
def _mapped(method):
    def run(post, *arrays):
        return _batched(getattr(post, method), len(post.shape), *arrays)
    return jax.jit(run)


_jit_potential = _mapped("_potential")
_jit_smooth_potential = _mapped("_smooth_potential")
_jit_logdensity_unconstrained = _mapped("_logdensity_unconstrained")
_jit_hvp = _mapped("_hessian_vp")
_jit_gn = _mapped("_gauss_newton_vp")


@jax.jit
def _jit_grad(post, x):
    return _batched(real_gradient(post._smooth_potential), len(post.shape), x)


@jax.jit
def _jit_value_and_grad(post, x):
    def vg(a):
        val, g = jax.value_and_grad(post._smooth_potential)(a)
        return val, jnp.conj(g)
    return _batched(vg, len(post.shape), x)


@jax.jit
def _jit_prox(post, x, step):
    return _batched(lambda a: Posterior._prox(a, step, post.nonsmooth), len(post.shape), x)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _jit_lipschitz(post, x, v0, num_iter, rtol):
    terms = (post.likelihood, *post.smooth_priors)
    matvec = lambda v: sum(t.lipschitz_vp(x, v) for t in terms)
    return largest_eigenvalue(matvec, v0, num_iter, rtol)

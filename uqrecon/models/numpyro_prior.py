"""A prior term written as a numpyro model.

``NumpyroPrior(model, shape, site="x", fixed=..., **model_kwargs)`` turns any numpyro
model with an image-valued sample site into a uqrecon prior term: its potential is minus
numpyro's joint log density (:func:`numpyro.infer.util.log_density`) with the image
substituted at ``site``, so ``Posterior(Gaussian(A, y, sigma), NumpyroPrior(model,
shape))`` is sampled by uqrecon's NUTS/HMC/MALA, optimised by ``map_estimate`` and
approximated by VI like any built-in prior.

What it does not do: other latent sites of the model are *fixed* (values through
``fixed``), not sampled -- hyperparameters with their own priors are uqrecon's
:class:`~uqrecon.models.Gamma` hyperpriors (Gibbs) or must be fixed here; the image site
must have real (unconstrained) support (a positive image: a real-support model plus
uqrecon's :class:`~uqrecon.models.NonNegative`); and a non-smooth model (a Laplace site)
is flagged ``is_smooth = False`` -- it has no proximal operator either, so no uqrecon
method samples it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import operator_dataclass, static_field
from .hyper import check_shape

__all__ = ["NumpyroPrior"]

_OWNER = "NumpyroPrior"


def _non_smooth_classes():
    import numpyro.distributions as dist
    return tuple(getattr(dist, n) for n in ("Laplace", "AsymmetricLaplace",
                                            "AsymmetricLaplaceQuantile") if hasattr(dist, n))


def _base(fn):
    """The innermost distribution behind Independent / Expanded / Masked wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _is_real_support(support) -> bool:
    from numpyro.distributions import constraints
    while hasattr(support, "base_constraint"):      # independent(real, k)
        support = support.base_constraint
    return type(support) is type(constraints.real)


def _as_leaf(value, name):
    try:
        arr = np.asarray(value)
    except Exception:        # a tracer (inside jit): take it as it is
        return jnp.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{_OWNER}: argument '{name}' must be numeric (an array or a "
                        f"number), got {type(value).__name__}")
    return jnp.asarray(arr)


@operator_dataclass
class NumpyroPrior:
    """A prior term ``potential(x) = -log p_model(site = x, other sites = fixed)``.

    ``model`` is called as ``model(**model_kwargs)``; ``model_kwargs`` and ``fixed``
    values are numeric pytree leaves (so a posterior holding the prior is a ``jit``
    argument and other values of them compile nothing new). ``model_code`` is a digest of
    the model's code, constants and closure values, so that the posterior's content hash
    (provenance, :func:`uqrecon.uq.compare`) tells two models apart even when they share
    a name; module-level globals the model reads are not in it (pass data as
    ``model_kwargs``). ``is_smooth`` is found by
    looking at the model's sites once at construction: a Laplace-type site makes it
    False, unless ``smooth`` says otherwise; ``numpyro.factor`` terms are not inspected
    (pass ``smooth=False`` for a non-smooth factor).
    """

    model: object = static_field()
    shape: tuple = static_field()
    site: str = static_field()
    model_kwargs: dict
    fixed: dict
    smooth: bool = static_field(default=True)
    model_code: str = static_field(default="")

    is_gaussian = False
    is_constraint = False

    def __init__(self, model, shape, site="x", *, fixed=None, smooth=None, **model_kwargs):
        if not callable(model):
            raise TypeError(f"{_OWNER}: argument 'model' must be a numpyro model (a "
                            f"callable), got {type(model).__name__}")
        shape = check_shape(shape, "shape", _OWNER)
        if not isinstance(site, str):
            raise TypeError(f"{_OWNER}: argument 'site' must be a string, got {site!r}")
        if fixed is None:
            fixed = {}
        if not isinstance(fixed, dict):
            raise TypeError(f"{_OWNER}: argument 'fixed' must be a dict site -> value")
        if site in fixed:
            raise ValueError(f"{_OWNER}: argument 'fixed' must not hold the image site "
                             f"{site!r}")
        if smooth is not None and not isinstance(smooth, bool):
            raise TypeError(f"{_OWNER}: argument 'smooth' must be None or a bool")
        fixed = {k: _as_leaf(v, f"fixed[{k!r}]") for k, v in fixed.items()}
        kwargs = {k: _as_leaf(v, k) for k, v in model_kwargs.items()}
        detected = _inspect(model, shape, site, fixed, kwargs)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "site", site)
        object.__setattr__(self, "model_kwargs", kwargs)
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "smooth", detected if smooth is None else smooth)
        object.__setattr__(self, "model_code", _model_code(model))

    @property
    def is_smooth(self) -> bool:
        return self.smooth

    def _log_density(self, x):
        from numpyro.infer.util import log_density
        values = dict(self.fixed)
        values[self.site] = x
        return log_density(self.model, (), self.model_kwargs, values)[0]

    def potential(self, x):
        """Minus the model's joint log density with ``site = x`` (other sites fixed).

        Args:
            x: image, of the prior's shape.

        Returns:
            The potential (negative log density up to a constant), a scalar array.
        """
        return -self._log_density(x).astype(jnp.finfo(jnp.result_type(x)).dtype)

    def _hvp(self, x, v):
        return jax.jvp(jax.grad(self.potential), (x,), (v,))[1]

    def gauss_newton_vp(self, x, v):
        """The Hessian of the potential at ``x`` applied to ``v`` (by automatic
        differentiation; positive semi-definite for log-concave models only).

        Args:
            x: point where the Hessian is taken, of the prior's shape.
            v: direction, of the prior's shape.

        Returns:
            The Hessian-vector product, of the prior's shape.
        """
        return self._hvp(x, v)

    def lipschitz_vp(self, x, v):
        """The Hessian at ``x`` (at zero when ``x`` is None) applied to ``v``: exact for a
        Gaussian model; for others a *local* curvature, not a global majorant (pass a
        step size to methods that would use it).

        Args:
            x: point where the Hessian is taken (None: the zero image).
            v: direction, of the prior's shape.

        Returns:
            The Hessian-vector product, of the prior's shape.
        """
        if x is None:
            x = jnp.zeros(self.shape, jnp.real(v).dtype)
        return self._hvp(x, v)

    def prox(self, x, step):
        """Not available: a numpyro model has no proximal operator.

        Args:
            x: image.
            step: step size.

        Returns:
            Never; always raises ValueError.
        """
        raise ValueError(f"{_OWNER}: site {self.site!r} is non-smooth and a numpyro model "
                         "has no proximal operator, so neither gradient-based nor proximal "
                         "uqrecon methods can use it; use uqrecon's TV / WaveletL1 priors "
                         "(exact 'gsm' sampler, proximal 'myula'/'skrock'), or a smooth "
                         "numpyro model")

    @property
    def hyperparameters(self) -> dict:
        return {}

    hyperpriors = hyperparameters

    def with_hyperparameters(self, **values):
        """A copy with some hyperparameters set; a NumpyroPrior has none (its other sites
        are fixed through ``fixed``).

        Args:
            **values: hyperparameter values; any name is a ValueError.

        Returns:
            The term itself (unchanged).
        """
        if values:
            raise ValueError(f"{_OWNER} has no hyperparameters {sorted(values)}; rebuild "
                             "it with other 'fixed' values")
        return self


def _model_code(model) -> str:
    """A digest of what defines ``model``: its module and qualified name, byte code,
    constants and names, and the values in its closure (arrays by their bytes)."""
    import hashlib

    h = hashlib.sha256()
    fn = getattr(model, "__wrapped__", model)
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
             .encode())
    code = getattr(fn, "__code__", None)
    if code is not None:
        h.update(code.co_code)
        h.update(repr((code.co_consts, code.co_names)).encode())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:        # an empty cell
            continue
        try:
            arr = np.asarray(value)
            h.update(arr.tobytes() if arr.dtype != object else repr(value).encode())
        except Exception:
            h.update(repr(value).encode())
    return h.hexdigest()


def _inspect(model, shape, site, fixed, kwargs) -> bool:
    """Trace the model once with the image site at zero: check the site (exists, latent,
    real support, the right shape), that every other latent site is fixed, and return
    whether the sites look smooth."""
    from numpyro import handlers

    values = dict(fixed)
    values[site] = jnp.zeros(shape)
    try:
        tr = handlers.trace(handlers.seed(handlers.substitute(model, data=values),
                                          rng_seed=0)).get_trace(**kwargs)
    except Exception as err:
        raise ValueError(f"{_OWNER}: argument 'model' failed when run with {site!r} = "
                         f"zeros{shape} and model_kwargs {sorted(kwargs)}: "
                         f"{type(err).__name__}: {err}") from err
    samples = {k: m for k, m in tr.items() if m["type"] == "sample"}
    if site not in samples:
        raise ValueError(f"{_OWNER}: argument 'site' {site!r} is not a sample site of the "
                         f"model (sample sites: {sorted(samples)})")
    msg = samples[site]
    if msg.get("is_observed") and site not in values:
        raise ValueError(f"{_OWNER}: site {site!r} is observed in the model; the image "
                         "site must be latent")
    fn = msg["fn"]
    site_shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if site_shape != tuple(shape):
        raise ValueError(f"{_OWNER}: site {site!r} has shape {site_shape} in the model, "
                         f"but argument 'shape' is {tuple(shape)}")
    if not _is_real_support(fn.support):
        raise ValueError(f"{_OWNER}: site {site!r} has support {fn.support}, not the real "
                         "line; write the model on real values and add uqrecon's "
                         "NonNegative/Box constraint to the posterior")
    latent = sorted(k for k, m in samples.items()
                    if k != site and k not in fixed and not m.get("is_observed"))
    if latent:
        raise ValueError(f"{_OWNER}: the model's latent sites {latent} are not fixed; pass "
                         f"their values as fixed={{...}} (NumpyroPrior samples only the "
                         f"image site {site!r})")
    unknown = sorted(set(fixed) - set(samples))
    if unknown:
        raise ValueError(f"{_OWNER}: argument 'fixed' names {unknown}, which are not sample "
                         "sites of the model")
    rough = _non_smooth_classes()
    return not any(isinstance(_base(m["fn"]), rough) for m in samples.values())

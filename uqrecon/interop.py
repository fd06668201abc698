"""Interoperability: uqrecon posteriors for other libraries, and references for ArviZ.

* :func:`jax_functions` exports a posterior as plain JAX functions of one flat real vector
  ``z`` (log density, gradient, ``ravel``/``unravel``, ``constrain``), so any JAX sampler
  (blackjax, numpyro's ``potential_fn``, a hand-written HMC) can sample it;
  :func:`catalogue_functions` does the same for a catalogue entry.
* :func:`numpyro_model` wraps a posterior as a numpyro model (one image site ``x``), to be
  sampled by numpyro's own ``NUTS``/``MCMC``.
* :func:`reference_inference_data` gives a catalogue reference as ArviZ
  ``InferenceData``; :func:`save_reference_netcdf` writes it as netCDF (h5netcdf, which
  ArviZ itself requires).

The reverse direction, a prior *term* written as a numpyro model, is
:class:`uqrecon.models.NumpyroPrior`.

Coordinates of the exported functions: ``z`` is the flattened *unconstrained* image
(``posterior.transform.inverse(x)``), real and imaginary parts concatenated for complex
images, so ``len(z)`` is the number of real degrees of freedom. The log density of ``z``
is ``posterior.logdensity_unconstrained`` (the log-Jacobian of the constraint's
transform included), up to the same additive constant as ``posterior.logdensity``.

Compile once: the functions are ``functools.partial`` of module-level jitted functions
over the posterior pytree, so exporting another posterior of the same structure and
shapes compiles nothing new.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["JaxFunctions", "jax_functions", "catalogue_functions", "numpyro_model",
           "reference_inference_data", "save_reference_netcdf"]


# --------------------------------------------------------------------------------------
# flat real coordinates
# --------------------------------------------------------------------------------------
def _is_complex(post) -> bool:
    return bool(jnp.issubdtype(post.dtype, jnp.complexfloating))


def _real_dtype(post):
    return jnp.finfo(post.dtype).dtype


def _dim(post) -> int:
    return math.prod(post.shape) * (2 if _is_complex(post) else 1)


def _unravel(post, z):
    """Flat real ``z`` (..., dim) -> image-shaped array (..., *shape), complex if needed."""
    lead = z.shape[:-1]
    if _is_complex(post):
        n = math.prod(post.shape)
        re, im = z[..., :n], z[..., n:]
        return jax.lax.complex(re, im).reshape(*lead, *post.shape).astype(post.dtype)
    return z.reshape(*lead, *post.shape)


def _ravel(post, x):
    """Image-shaped array (..., *shape) -> flat real (..., dim)."""
    nd = len(post.shape)
    lead = x.shape[:x.ndim - nd]
    flat = x.reshape(*lead, -1)
    if _is_complex(post):
        return jnp.concatenate([jnp.real(flat), jnp.imag(flat)], axis=-1)
    return flat


@jax.jit
def _logdensity(post, z):
    return post._logdensity_unconstrained(_unravel(post, z))


@jax.jit
def _value_and_grad(post, z):
    return jax.value_and_grad(lambda v: _logdensity(post, v))(z)


@jax.jit
def _grad(post, z):
    return jax.grad(lambda v: _logdensity(post, v))(z)


@jax.jit
def _constrain(post, z):
    u = _unravel(post, z)
    lead = u.shape[:u.ndim - len(post.shape)]
    flat = u.reshape(-1, *post.shape)
    return jax.vmap(post.transform.forward)(flat).reshape(*lead, *post.shape)


@jax.jit
def _unconstrain(post, x):
    lead = x.shape[:x.ndim - len(post.shape)]
    flat = x.reshape(-1, *post.shape)
    u = jax.vmap(post.transform.inverse)(flat).reshape(*lead, *post.shape)
    return _ravel(post, u)


@jax.jit
def _ravel_jit(post, x):
    return _ravel(post, x)


@jax.jit
def _unravel_jit(post, z):
    return _unravel(post, z)


class JaxFunctions(NamedTuple):
    """A posterior as plain JAX functions of one flat real vector ``z`` of length ``dim``.

    The fields:

    * ``logdensity``: ``z -> scalar``, the log density of the unconstrained coordinates
      (``posterior.logdensity_unconstrained``, log-Jacobian included), up to a constant.
    * ``grad``: ``z -> (dim,)``, its gradient; ``value_and_grad``: both in one pass.
    * ``dim``: number of real coordinates (twice the pixels for complex images).
    * ``ravel``: image-shaped array (optionally with leading axes) -> flat real
      vector(s), no transform (real and imaginary parts concatenated for complex
      images); ``unravel``: its inverse.
    * ``constrain``: ``z`` (optionally with leading axes) -> image(s) ``x``:
      ``unravel`` then the posterior's ``transform.forward``; use it on exported draws.
      ``unconstrain``: image(s) ``x`` -> ``z``.
    * ``initial_position``: a starting ``z`` (zeros: the unconstrained origin).
    * ``posterior``: the posterior the functions evaluate.
    """

    logdensity: Callable
    grad: Callable
    value_and_grad: Callable
    dim: int
    ravel: Callable
    unravel: Callable
    constrain: Callable
    unconstrain: Callable
    initial_position: jax.Array
    posterior: object


def _require_smooth(post, owner):
    from .models import Posterior

    if not isinstance(post, Posterior):
        raise TypeError(f"{owner}: argument 'posterior' must be a uqrecon Posterior, got "
                        f"{type(post).__name__}")
    if not post.is_smooth:
        terms = [type(t).__name__ for t in post.nonsmooth if not t.is_constraint]
        raise ValueError(
            f"{owner}: argument 'posterior' has non-smooth terms {terms}, so it has no "
            "gradient to export; smooth it (e.g. TV(...).smoothed(eps), the catalogue's "
            "'ct_sparse30_huber_16' entry) or sample it with uqrecon's exact samplers "
            "(uqrecon.sample(post, method='gsm'), or the proximal 'myula'/'skrock')")


def jax_functions(posterior) -> JaxFunctions:
    """Export a smooth posterior as plain JAX functions of a flat real vector.

    The returned callables are ``functools.partial`` of module-level jitted functions
    over the posterior pytree: they can be called directly, or traced inside another
    library's ``jit`` (blackjax, numpyro), and a second export of a same-shaped posterior
    compiles nothing. Constraints are handled by the posterior's own ``transform``
    (``z`` is unconstrained; the log-Jacobian is in ``logdensity``).

    Args:
        posterior: a :class:`~uqrecon.models.Posterior` whose only non-smooth terms are
            constraints (``posterior.is_smooth``).

    Returns:
        A :class:`JaxFunctions`.
    """
    _require_smooth(posterior, "jax_functions")
    dim = _dim(posterior)
    p = functools.partial
    return JaxFunctions(
        logdensity=p(_logdensity, posterior),
        grad=p(_grad, posterior),
        value_and_grad=p(_value_and_grad, posterior),
        dim=dim,
        ravel=p(_ravel_jit, posterior),
        unravel=p(_unravel_jit, posterior),
        constrain=p(_constrain, posterior),
        unconstrain=p(_unconstrain, posterior),
        initial_position=jnp.zeros((dim,), _real_dtype(posterior)),
        posterior=posterior,
    )


_NON_SMOOTH_ENTRY_PRIORS = ("tv", "wavelet_l1")


def catalogue_functions(name: str) -> JaxFunctions:
    """:func:`jax_functions` of a catalogue entry's posterior.

    Args:
        name: a catalogue name (:func:`uqrecon.catalogue.names`); TV and l1-wavelet
            entries have no gradient (ValueError naming the Huber-TV entry).

    Returns:
        A :class:`JaxFunctions`.
    """
    from . import catalogue

    prior = catalogue.entry(name).prior
    if prior in _NON_SMOOTH_ENTRY_PRIORS:        # refused before building the posterior
        raise ValueError(
            f"catalogue_functions: entry {name!r} is non-smooth ({prior}); its smooth "
            "counterpart is 'ct_sparse30_huber_16' (Huber-TV), or sample it with "
            "uqrecon.sample(post, method='gsm') (exact)")
    post = catalogue.posterior(name)
    return jax_functions(post)


# --------------------------------------------------------------------------------------
# a numpyro model from a posterior
# --------------------------------------------------------------------------------------
def _numpyro_support(post):
    from numpyro.distributions import constraints

    c = post.constraint
    if c is None:
        return constraints.real
    lower = getattr(c, "lower", None)
    upper = getattr(c, "upper", None)
    if upper is None:
        return constraints.greater_than(lower)
    return constraints.interval(lower, upper)


def numpyro_model(posterior) -> Callable:
    """A numpyro model whose density over its image site is the posterior.

    Real images: one site ``x`` of the image shape, an improper flat base with the
    constraint's support (numpyro then samples it through its own bijection, log-Jacobian
    included) plus ``numpyro.factor`` of ``posterior.logdensity(x)``. Complex images: one
    real site ``x_parts`` of shape ``(2, *shape)`` (real, imaginary) and the complex image
    as the deterministic site ``x``.

    Args:
        posterior: a smooth :class:`~uqrecon.models.Posterior` (constraints allowed).

    Returns:
        A model function of no arguments, for ``numpyro.infer.NUTS(model)``.
    """
    import numpyro
    import numpyro.distributions as dist

    _require_smooth(posterior, "numpyro_model")
    shape = tuple(posterior.shape)
    complex_image = _is_complex(posterior)
    support = _numpyro_support(posterior)
    if complex_image and posterior.constraint is not None:
        raise ValueError("numpyro_model: argument 'posterior' is complex and constrained; "
                         "uqrecon constraints are for real images")

    def model():
        if complex_image:
            parts = numpyro.sample("x_parts", dist.ImproperUniform(
                support, (), event_shape=(2, *shape)))
            x = numpyro.deterministic("x", jax.lax.complex(parts[0], parts[1]))
        else:
            x = numpyro.sample("x", dist.ImproperUniform(support, (), event_shape=shape))
        numpyro.factor("uqrecon_logdensity", _logdensity_at(posterior, x))

    return model


@jax.jit
def _logdensity_at(post, x):
    """The posterior's log density inside its constraint set (the constraint's indicator
    left out: numpyro keeps the site inside its support)."""
    unc = post._smooth_potential(x) + sum(
        t.potential(x) for t in post.nonsmooth if not t.is_constraint)
    return -unc


# --------------------------------------------------------------------------------------
# references as ArviZ InferenceData
# --------------------------------------------------------------------------------------
def _json(obj) -> str:
    """JSON text of a catalogue header field (the catalogue's own encoder)."""
    from .catalogue import _json_default
    return json.dumps(obj, default=_json_default)


def reference_inference_data(name: str, *, build_missing: bool = False):
    """A catalogue reference as ArviZ ``InferenceData``.

    Groups: ``posterior`` holds the stored thinned draws as variable ``x`` with dims
    ``(chain, draw, x_dim_0, x_dim_1)`` (one chain: the catalogue interleaves the chains
    before thinning); ``reference`` (a group of its own) holds the reference's mean and
    std -- exact for an exact Gaussian reference, over *all* the reference's draws for an
    MCMC one, so more accurate than the thinned draws' -- its 5/50/95 % quantiles and,
    for MCMC, the per-pixel ``rhat``, ``ess_bulk``, ``ess_tail``. The attributes of both
    groups carry the entry name, exactness, gold method, posterior hash, model line,
    chains and draws before thinning, and (as JSON strings) the certificate, the entry
    spec and the versions it was built with. For an exact reference the draws are i.i.d.
    exact Gaussian draws (``attrs['draws'] == 'iid exact'``).

    Args:
        name: a catalogue name.
        build_missing: build the reference when none is stored (slow); default: a
            ValueError instead.

    Returns:
        An ``arviz.InferenceData``.
    """
    import warnings

    import arviz as az
    import xarray as xr

    from . import catalogue

    ref = catalogue.reference(name, build_missing=build_missing)
    info = ref.provenance["catalogue"]
    draws = np.asarray(ref.draws)
    nd = draws.ndim - 2
    dims = [f"x_dim_{i}" for i in range(nd)]
    exact = info["exactness"] == "exact"
    attrs = {
        "uqrecon_catalogue_entry": name,
        "exactness": info["exactness"],
        "gold_method": str(info["gold_method"]),
        "gold_standard": int(bool(info["gold_standard"])),
        "posterior_hash": str(info["posterior_hash"]),
        "model": str(info["model"]),
        "num_chains_before_thinning": int(info["num_chains"]),
        "num_draws_before_thinning": int(info["num_draws_total"]),
        "draws": "iid exact" if exact else "thinned MCMC draws, chains interleaved",
        "certificate": _json(info["certificate"]),
        "certified": int(bool(info["certificate"]["pass"])),
        "entry": _json(info["entry"]),
        "versions": _json(info["versions"]),
        "created": str(info.get("created")),
    }
    idata = az.from_dict(posterior={"x": draws}, dims={"x": dims}, attrs=attrs)
    idata.posterior.attrs.update(attrs)
    coords = {d: np.arange(s) for d, s in zip(dims, draws.shape[2:])}
    summary = {"mean": (dims, np.asarray(ref.mean)), "std": (dims, np.asarray(ref.std)),
               "quantiles": (["quantile", *dims], np.asarray(info["quantiles"]))}
    for k in ("rhat", "ess_bulk", "ess_tail"):
        if k in ref.diagnostics and np.ndim(ref.diagnostics[k]):
            summary[k] = (dims, np.asarray(ref.diagnostics[k]))
    ds = xr.Dataset(summary, coords={**coords, "quantile": np.asarray(
        info["quantile_levels"], np.float64)}, attrs=attrs)
    with warnings.catch_warnings():
        # a group outside ArviZ's schema is allowed; ArviZ says so with a UserWarning
        warnings.filterwarnings("ignore", message=".*reference.*", category=UserWarning)
        idata.add_groups({"reference": ds})
    return idata


def save_reference_netcdf(name: str, path, *, build_missing: bool = False) -> str:
    """Write a catalogue reference (:func:`reference_inference_data`) as netCDF-4 through
    h5netcdf (a dependency of ArviZ; no netCDF4 C library needed). Read it back with
    ``arviz.from_netcdf(path)``.

    Args:
        name: a catalogue name.
        path: the file to write.
        build_missing: build the reference when none is stored (slow).

    Returns:
        The path written.
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_reference_netcdf: argument 'path' must be a path, got "
                        f"{type(path).__name__}")
    idata = reference_inference_data(name, build_missing=build_missing)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return idata.to_netcdf(path, engine="h5netcdf")

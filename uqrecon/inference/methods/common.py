"""Option parsing and set-up shared by the method builders of :mod:`uqrecon.inference.methods`.

Options are popped from the user's ``**cfg`` and validated (a ValueError naming the
option) before any expensive work; :func:`reject_unknown` is called by every builder
once it has popped its own. The set-up helpers (reference image, preconditioners,
starting points) are module-level jits on the posterior pytree, so a second call on a
same-shaped problem compiles nothing. Builders call them through this module
(``common.reference_image(...)``), which is also where tests patch them to prove that
options are checked before any of them runs.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ...map import _smooth_solver
from .. import exact as _exact
from ..samplers import hmc as _hmc
from ..samplers.base import (Sampler, Whitened, check_int, check_positive,
                             check_unit_interval)

# gradient samplers whiten with a dense factor and exact draws factor the precision up to
# this many pixels; above it, Lanczos / CG
DENSE_MAX_PIXELS = 4096

__all__ = ["Built", "DENSE_MAX_PIXELS", "pop", "pop_positive", "pop_int", "pop_unit",
           "pop_init", "pop_bool", "pop_preconditioner", "reject_unknown", "lipschitz",
           "size", "reference_image", "init_positions", "require_smooth",
           "NegLogUnconstrained", "preconditioner", "init_in_z", "whitened_start",
           "MIN_TUNING_WARMUP", "check_tuning_warmup",
           "dense_setup_grads",
           "gaussian_form_or_raise"]


class Built(NamedTuple):
    """What a builder hands to :func:`~uqrecon.inference.sample`: the static sampler, its
    params, the chains' starting images, the settings used and the set-up's costs."""

    sampler: Sampler                  # static: module-level functions
    params: Any                       # pytree: what the sampler's functions take
    init_positions: jax.Array         # (chains, *shape) images
    config: dict                      # the settings actually used
    setup: dict                       # e.g. num_grad_evals_setup, preconditioner info
    num_warmup: int | None = None     # override (exact methods need none)


# --------------------------------------------------------------------------------------
# options: popped and validated before any expensive work
# --------------------------------------------------------------------------------------
def pop(cfg: dict, name: str, default):
    value = cfg.pop(name) if name in cfg else default
    if name == "step_size" and value is not None:
        value = check_positive("step_size", value)
    if name == "box" and value is not None:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"'box' must be a pair (lo, hi), got {value!r}") from None
        if not lo < hi:
            raise ValueError(f"'box' needs lo < hi, got {value!r}")
        value = (lo, hi)
    return value


def pop_positive(cfg, name, default):
    value = pop(cfg, name, default)
    return None if value is None else check_positive(name, value)


def pop_int(cfg, name, default, minimum):
    value = pop(cfg, name, default)
    return None if value is None else check_int(name, value, minimum)


def pop_unit(cfg, name, default):
    value = pop(cfg, name, default)
    return None if value is None else check_unit_interval(name, value)


def pop_init(cfg, default_jitter):
    """``(init, init_jitter)``; the jitter must be a finite number >= 0 (None: the
    method's default)."""
    init = pop(cfg, "init", None)
    jitter = pop(cfg, "init_jitter", None)
    if jitter is not None:
        try:
            ok = math.isfinite(float(jitter)) and float(jitter) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"'init_jitter' must be a finite number >= 0, got {jitter!r}")
        jitter = float(jitter)
    return init, (default_jitter if jitter is None else jitter)


def reject_unknown(cfg, method):
    """Called by every builder once it has popped its options, before any work."""
    if cfg:
        raise TypeError(f"method={method!r} got unknown options {sorted(cfg)}")


def pop_preconditioner(cfg, post):
    n = size(post)
    name = pop(cfg, "preconditioner", "dense" if n <= DENSE_MAX_PIXELS else "lowrank")
    if name not in ("dense", "lowrank", "circulant", "identity"):
        raise ValueError(f"'preconditioner' must be 'dense', 'lowrank', 'circulant' or "
                         f"'identity', got {name!r}")
    if name == "circulant" and getattr(post.likelihood.operator, "is_real_pair", False):
        # an FFT over the (Re, Im) axis would model nothing: the circulant model is per
        # image axis only, and the pair's coupling (Im P) is not circulant in it
        raise ValueError("preconditioner='circulant' is not available for a complex image "
                         "(sampled in real coordinates); use 'dense' or 'lowrank'")
    rank = pop_int(cfg, "rank", 64, 1)
    return name, rank


# --------------------------------------------------------------------------------------
# set-up helpers (module-level jits on the posterior pytree)
# --------------------------------------------------------------------------------------
def lipschitz(post, key) -> float:
    L = float(post.lipschitz(key))
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"posterior.lipschitz() returned {L}; pass 'step_size' explicitly")
    return L


def size(post) -> int:
    return int(math.prod(post.shape))


def reference_image(post, dtype):
    """Where preconditioners are built and chains start: the posterior mean by CG for
    linear-Gaussian posteriors, else the mode in the unconstrained space by L-BFGS (the
    Hessian there is positive definite; far from it, e.g. at ``u = 0``, it need not be).
    Returns ``(image, gradient evaluations spent)``; non-smooth posteriors get the image of
    ``u = 0`` (the proximal samplers need no mode)."""
    form = post.gaussian_form()
    if form is not None:
        mean, it, _ = _exact.posterior_mean(form, _exact.default_tol(dtype), 10 * size(post))
        return mean, int(it)
    u0 = jnp.zeros(post.shape, dtype)
    if not post.is_smooth:
        return forward(post, u0), 0
    u, evals = unconstrained_mode(post, u0)
    return forward(post, u), int(evals)


@jax.jit
def forward(post, u):
    return post.transform.forward(u)


@partial(jax.jit, static_argnames=("max_iter",))
def unconstrained_mode(post, u0, max_iter: int = 200, tol: float = 1e-5):
    """L-BFGS (the MAP solver's loop) on ``-logdensity_unconstrained``, stopping at a
    relative step ``tol``; returns ``(u, gradient evaluations)``."""
    u, _, _, evals = _smooth_solver(lambda v: -post.logdensity_unconstrained(v), u0,
                                    optax.lbfgs(), True, max_iter, tol)
    return u, evals


@jax.jit
def jitter_images(post, images, noise):
    """``forward(inverse(x) + noise)`` per chain: jitter in the unconstrained space."""
    u = jax.vmap(post.transform.inverse)(images)
    return jax.vmap(post.transform.forward)(u + noise)


def init_positions(post, key, init, jitter, num_chains, dtype, unconstrained: bool,
                    ref=None):
    """Starting images: ``init`` if given, else ``ref`` (default: a reference image);
    jittered per chain by ``jitter`` (in the unconstrained space if asked). Returns
    ``(images, gradient evaluations spent finding the reference)``."""
    shape = tuple(post.shape)
    grads = 0
    if init is None:
        if ref is None:
            ref, grads = reference_image(post, dtype)
        init = jnp.broadcast_to(ref, (num_chains, *shape))
    else:
        init = jnp.asarray(init, dtype)
        if init.shape == shape:
            init = jnp.broadcast_to(init, (num_chains, *shape))
        elif init.shape != (num_chains, *shape):
            raise ValueError(f"'init' must have shape {shape} or {(num_chains, *shape)}, "
                             f"got {init.shape}")
    if jitter > 0:
        noise = jitter * jax.random.normal(key, init.shape, dtype)
        init = jitter_images(post, init, noise) if unconstrained else init + noise
    return init, grads


def require_smooth(post, method):
    if not post.is_smooth:
        raise ValueError(f"method={method!r} needs a smooth posterior (gradients), but this "
                         "posterior has non-smooth terms: use method='myula' or 'skrock', "
                         "or a smoothed prior (e.g. TV with a smoothing parameter)")


class NegLogUnconstrained(NamedTuple):
    """``u -> -logdensity_unconstrained(u)`` as a pytree callable (a jit argument)."""

    posterior: Any

    def __call__(self, u):
        return -self.posterior.logdensity_unconstrained(u)


@jax.jit
def unconstrained_hessian(post, u):
    """Dense Hessian of ``-logdensity_unconstrained`` (jitted on the posterior pytree)."""
    return _hmc.hessian_matrix(NegLogUnconstrained(post), u)


@jax.jit
def inverse(post, x):
    return post.transform.inverse(x)


def preconditioner(post, key, name, rank, ref):
    """The linear change of variables ``u = pc(z)`` named ``name``, built at
    ``u_ref = transform.inverse(ref)``; returns (pc, settings, setup gradients)."""
    n = size(post)
    u_ref = inverse(post, ref)
    if name == "dense":
        form = post.gaussian_form() if post.constraint is None else None
        if form is not None:   # linear-Gaussian: the Hessian is P, formed from the operator
            hess, grads = _exact.dense_precision(form), dense_setup_grads(form)
        else:                  # n Hessian-vector products, two gradients each
            hess, grads = unconstrained_hessian(post, u_ref), 2 * n
        pc = _hmc.dense_preconditioner(hess, u_ref)
        return pc, {"preconditioner": name}, grads
    if name == "lowrank":
        pc = _hmc.lowrank_preconditioner(NegLogUnconstrained(post), u_ref, key, rank=rank)
        used = {"preconditioner": name, "rank": rank,
                "lowrank_kept": int(jnp.count_nonzero(jnp.any(pc.basis != 0, axis=0)))}
        return pc, used, 2 * 2 * rank   # Lanczos + residual check, 2 gradients per HVP
    if name == "circulant":
        pc = _hmc.circulant_preconditioner(NegLogUnconstrained(post), u_ref, key, rank=rank)
        used = {"preconditioner": name, "rank": rank,
                "lowrank_kept": int(jnp.count_nonzero(jnp.any(pc.basis != 0, axis=0)))}
        return pc, used, 2 * (2 * rank + 1)   # + the symbol's HVP
    return _hmc.IdentityPreconditioner(u_ref), {"preconditioner": name}, 0


@jax.jit
def z_to_images(target, z):
    return jax.vmap(target.to_image)(z)


def init_in_z(post, key, init, jitter, num_chains, dtype, target):
    """Starting images for samplers on ``z``: ``init`` if given (jittered by
    ``init_jitter``, default 0.1, in the unconstrained space), else
    ``to_image(init_jitter * xi)``, i.e. draws from the Gaussian that defines the
    preconditioner (jitter 1.0 by default), so chains start at the posterior's own scale
    instead of a fixed pixel jitter."""
    if init is not None:
        return init_positions(post, key, init, 0.1 if jitter is None else jitter,
                               num_chains, dtype, True)[0]
    jitter = 1.0 if jitter is None else jitter
    z = jitter * jax.random.normal(key, (num_chains, *post.shape), dtype)
    return z_to_images(target, z)


def pop_bool(cfg, name, default):
    value = pop(cfg, name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"'{name}' must be True or False, got {value!r}")
    return bool(value)


def whitened_start(post, key_pc, key_init, pc_name, rank, init, jitter, num_chains, dtype):
    """The set-up every gradient sampler on whitened coordinates shares: the reference
    image, the preconditioner ``pc_name`` built there, the whitened target and the
    chains' starting images (:func:`init_in_z`).

    Returns:
        ``(whitened, images, settings, setup gradients)``: the :class:`Whitened` target,
        ``(num_chains, *shape)`` starting images, the preconditioner's settings (a dict
        the builder extends) and the gradients spent (reference image + preconditioner).
    """
    ref, ref_grads = reference_image(post, dtype)
    pc, used, grads = preconditioner(post, key_pc, pc_name, rank, ref)
    whitened = Whitened(post, pc)
    images = init_in_z(post, key_init, init, jitter, num_chains, dtype, whitened)
    return whitened, images, used, grads + ref_grads


# the smallest warmup blackjax's MCLMC/MAMS/ChEES tuners can work with (MCLMC: 10 steps
# in each of its three phases)
MIN_TUNING_WARMUP = 30


def check_tuning_warmup(method, num_warmup, what):
    """Refuse a ``num_warmup`` below :data:`MIN_TUNING_WARMUP` for a method that tunes
    ``what`` in its set-up."""
    if num_warmup < MIN_TUNING_WARMUP:
        raise ValueError(f"method={method!r} tunes {what} during warmup: 'num_warmup' must "
                         f"be >= {MIN_TUNING_WARMUP}, got {num_warmup}")


def dense_setup_grads(form) -> int:
    """Gradient-equivalents spent forming ``P`` densely: the operator is applied
    ``min(n, m)`` times (columns or rows), a gradient applies it twice."""
    return math.ceil(min(form.operator.size_in, form.operator.size_out) / 2)


def gaussian_form_or_raise(post, method):
    form = post.gaussian_form()
    if form is None:
        raise ValueError(f"method={method!r} needs a linear-Gaussian posterior "
                         "(posterior.gaussian_form() is None): use 'nuts', 'mala' or 'gibbs'")
    return form

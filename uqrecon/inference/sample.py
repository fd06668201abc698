"""``sample(posterior, method=...)``: the one entry point for posterior sampling.

Each method is a builder ``(posterior, key, cfg) -> _Built`` that turns a Posterior
(used only through the contract in docs/interfaces.md) into a static :class:`Sampler`
(module-level functions), its ``params`` pytree (posterior, preconditioner, step sizes...)
and the chains' starting images; :func:`run_chains` runs it and :func:`sample` packs a
Result with diagnostics, timings and provenance. Every builder validates all of its
options before any expensive set-up (reference image, preconditioner, Lipschitz
constant), and all set-up computations are module-level jits on the posterior pytree, so
a second call on a same-shaped problem (other data, other noise level) compiles nothing.

Methods and their options (``**cfg``):

- ``"nuts"`` / ``"hmc"``: ``preconditioner`` (``"dense"`` default up to 4096 pixels,
  ``"lowrank"`` above; ``"circulant"``: a Fourier model of the Hessian corrected by
  ``rank`` Lanczos steps, O(n log n + n r) per gradient with no dense factor, see
  :func:`~.samplers.hmc.circulant_preconditioner`; or ``"identity"``), ``rank``
  (Lanczos steps, 64),
  ``max_num_doublings`` (NUTS: 5 with the dense preconditioner, whose exact whitening
  makes NUTS miss U-turns, see :func:`~.samplers.hmc.nuts`; 10 otherwise; how often the
  cap stopped a tree is in ``diagnostics["max_depth_hits"]`` / ``"max_depth_fraction"``),
  ``step_size_jitter`` (NUTS, 0: relative uniform
  jitter of each iteration's step), ``step_size`` (0.5: where the warmup's dual averaging
  starts; with ``num_warmup=0`` the step used), ``target_acceptance`` (NUTS 0.8; HMC 0.65 with a
  path length, the high-dimensional optimum of Beskos et al. 2013); HMC's trajectory:
  ``path_length`` (integration time, jittered in [T/2, 3T/2]; default pi/2, a quarter
  period of the whitened Gaussian, with the dense preconditioner) or
  ``num_integration_steps`` (uniform in 1..2L-1; default 16 otherwise: measured on
  Huber-TV at 128x128 with the rank-64 preconditioner, pi/2 gave min ESS 1.4 of 1000).
  Smooth posteriors only; runs in the unconstrained space, preconditioned at the
  posterior mean (linear-Gaussian) or the unconstrained mode (L-BFGS; its gradients
  count as set-up, as do those of any sampler's default starting point).
- ``"mclmc"`` / ``"mams"``: blackjax's unadjusted microcanonical Langevin MC and its
  Metropolis-adjusted version (:mod:`.samplers.mclmc`), preconditioned and started like
  NUTS (``preconditioner``, ``rank``, ``init``, ``init_jitter``). ``L`` and the step size
  are tuned by blackjax's tuners in the set-up, ``num_warmup`` (>= 30) steps per chain,
  then pooled (median) over the chains; the runner does no warmup and the tuning's
  gradients are ``diagnostics["num_grad_evals_warmup"]``. ``diagonal_preconditioning``
  (False: the whitened target is already isotropic); MCLMC: ``desired_energy_var``
  (5e-4, the energy error's variance per dimension; MCLMC is biased, measured -1 % on
  the pixel std of a 16x16 CT GMRF); MAMS: ``target_acceptance`` (0.9),
  ``num_integration_steps`` (2.0, blackjax's mean trajectory length ``L / step``).
- ``"chees"``: ChEES-HMC (:mod:`.samplers.chees`), preconditioned and started like NUTS:
  blackjax's ``chees_adaptation`` tunes the step size (dual averaging) and the trajectory
  length (Adam on the ChEES criterion) across all chains in the set-up, ``num_warmup``
  (>= 30) iterations, then every chain integrates ``ceil(h_t * L / step)`` leapfrog steps
  at iteration ``t`` (``h_t`` a Halton sequence shared by the chains), so vmapped chains
  run in lockstep without waiting for one another. Needs ``num_chains >= 2``.
  ``target_acceptance`` (0.651), ``learning_rate`` (0.025), ``step_size`` (0.5, where the
  dual averaging starts), ``max_leapfrog_steps`` (1000), ``diagonal_preconditioning``
  (False).
- ``"ula"``: ``step_size`` (default ``1/L``). ``"mala"``: ``preconditioner`` and ``rank`` as
  NUTS, ``step_size`` (initial; 1 when preconditioned, else ``1/L``),
  ``target_acceptance`` (0.574).
- ``"myula"``: ``lam`` (``1/L``), ``step_size`` (``step_fraction / (L + m/lam)``, m = number
  of non-smooth terms), ``step_fraction`` (1.0), ``box`` (``(lo, hi)`` adds a projection).
- ``"skrock"``: as MYULA plus ``stages`` (10), ``eta`` (0.05); default step
  ``step_fraction * l_s / (L + m/lam)`` with ``step_fraction`` 0.9.
- ``"gibbs"``: ``tol``, ``maxiter`` for the exact image draw.
- ``"gsm"``: the exact sampler for one TV / l1-wavelet term with a Gaussian likelihood
  (:mod:`.samplers.gsm`): ``tol`` (CG, relative to the starting residual; 1e-4 float32,
  1e-6 float64; exactness does not depend on it), ``maxiter`` (1000), ``dense_max``
  (2048: up to this many pixels ``A^T A`` is formed densely once, a product ~4x cheaper
  than the projector pair at 32x32), ``init``,
  ``init_jitter`` (0.1: chains start at independent N(0, 0.1^2) images).
- ``"exact"`` / ``"rto"``: ``solver`` (``"dense"`` up to 4096 pixels, else ``"cg"``), ``tol``,
  ``maxiter``, ``preconditioner`` for the CG path (``"circulant"``, a Fourier model of the
  precision measured from its point-spread function, or ``"none"``). Draws are
  independent; warmup is skipped.

Complex images (MRI with phase): the methods in :data:`COMPLEX_METHODS` sample the real
coordinates ``(Re x, Im x)`` (``posterior.real_coordinates()``, shape ``(2, *shape)``;
whitening and step sizes are those of the real ``2n``-dimensional posterior) and return a
complex Result (pixel variance ``E|x - mean|^2``); the others refuse a complex image
before any set-up.

Common: ``init`` (image or ``(chains, *shape)``), ``init_jitter`` (default 0.1 added in
the unconstrained space; for nuts/hmc/mala without ``init``, chains start at
``pc(init_jitter * xi)`` with default 1.0, a draw from the preconditioner's Gaussian),
``chunk_size``, ``keep_draws`` (True), ``chain_method`` (``"vectorized"``: chains vmapped;
``"sequential"``: one after another in the compiled chunk, see :func:`run_chains`;
default :func:`default_chain_method`, recorded in the provenance's config).
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..map import _smooth_solver
from ..models.identity import model_identity
from ..result import Result, make_provenance
from ..diagnostics import check_convergence, diagnose, summarize
from . import exact as _exact
from .runner import CompileMonitor, check_chain_method, run_chains
from .samplers import chees as _chees
from .samplers import gibbs as _gibbs
from .samplers import gsm as _gsm
from .samplers import hmc as _hmc
from .samplers import langevin as _langevin
from .samplers import mclmc as _mclmc
from .samplers import proximal as _proximal
from .samplers.base import (Sampler, Whitened, check_int, check_positive,
                            check_unit_interval)

__all__ = ["sample", "METHODS", "EXACTNESS", "COMPLEX_METHODS", "default_chain_method"]

_DENSE_MAX_PIXELS = 4096
# NUTS's default maximum tree depth after the dense (exact for linear-Gaussian) whitening:
# 31 leapfrog steps, about one period of the whitened dynamics at the step sizes dual
# averaging finds (0.19-0.24 at 64x64); see the note in samplers/hmc.py's nuts()
_NUTS_DENSE_MAX_DOUBLINGS = 5


class _Built(NamedTuple):
    sampler: Sampler                  # static: module-level functions
    params: Any                       # pytree: what the sampler's functions take
    init_positions: jax.Array         # (chains, *shape) images
    config: dict                      # the settings actually used
    setup: dict                       # e.g. num_grad_evals_setup, preconditioner info
    num_warmup: int | None = None     # override (exact methods need none)


# --------------------------------------------------------------------------------------
# options: popped and validated before any expensive work
# --------------------------------------------------------------------------------------
def _pop(cfg: dict, name: str, default):
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


def _pop_positive(cfg, name, default):
    value = _pop(cfg, name, default)
    return None if value is None else check_positive(name, value)


def _pop_int(cfg, name, default, minimum):
    value = _pop(cfg, name, default)
    return None if value is None else check_int(name, value, minimum)


def _pop_unit(cfg, name, default):
    value = _pop(cfg, name, default)
    return None if value is None else check_unit_interval(name, value)


def _pop_init(cfg, default_jitter):
    """``(init, init_jitter)``; the jitter must be a finite number >= 0 (None: the
    method's default)."""
    init = _pop(cfg, "init", None)
    jitter = _pop(cfg, "init_jitter", None)
    if jitter is not None:
        try:
            ok = math.isfinite(float(jitter)) and float(jitter) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"'init_jitter' must be a finite number >= 0, got {jitter!r}")
        jitter = float(jitter)
    return init, (default_jitter if jitter is None else jitter)


# blackjax kernels that promote a float32 chain to float64 inside their accept/reject
# cond when jax_enable_x64 is on (TypeError "cond branches must have equal output types")
_FLOAT32_ONLY_WITHOUT_X64 = ("mala", "nuts", "mclmc", "mams")


def _check_x64(method, dtype):
    """Refuse, before any set-up, a float32 posterior under ``jax_enable_x64`` for the
    blackjax kernels that cannot run it."""
    if method in _FLOAT32_ONLY_WITHOUT_X64 and dtype == jnp.float32 \
            and jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"method={method!r} cannot sample a float32 posterior with jax_enable_x64 on "
            f"(blackjax's kernel mixes float64 into the float32 chain); build the posterior "
            f"from float64 data for a float64 run, or turn jax_enable_x64 off")


def _reject_unknown(cfg, method):
    """Called by every builder once it has popped its options, before any work."""
    if cfg:
        raise TypeError(f"method={method!r} got unknown options {sorted(cfg)}")


def _pop_preconditioner(cfg, post):
    n = _size(post)
    name = _pop(cfg, "preconditioner", "dense" if n <= _DENSE_MAX_PIXELS else "lowrank")
    if name not in ("dense", "lowrank", "circulant", "identity"):
        raise ValueError(f"'preconditioner' must be 'dense', 'lowrank', 'circulant' or "
                         f"'identity', got {name!r}")
    if name == "circulant" and getattr(post.likelihood.operator, "is_real_pair", False):
        # an FFT over the (Re, Im) axis would model nothing: the circulant model is per
        # image axis only, and the pair's coupling (Im P) is not circulant in it
        raise ValueError("preconditioner='circulant' is not available for a complex image "
                         "(sampled in real coordinates); use 'dense' or 'lowrank'")
    rank = _pop_int(cfg, "rank", 64, 1)
    return name, rank


# --------------------------------------------------------------------------------------
# set-up helpers (module-level jits on the posterior pytree)
# --------------------------------------------------------------------------------------
def _lipschitz(post, key) -> float:
    L = float(post.lipschitz(key))
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"posterior.lipschitz() returned {L}; pass 'step_size' explicitly")
    return L


def _size(post) -> int:
    return int(math.prod(post.shape))


def _reference_image(post, dtype):
    """Where preconditioners are built and chains start: the posterior mean by CG for
    linear-Gaussian posteriors, else the mode in the unconstrained space by L-BFGS (the
    Hessian there is positive definite; far from it, e.g. at ``u = 0``, it need not be).
    Returns ``(image, gradient evaluations spent)``; non-smooth posteriors get the image of
    ``u = 0`` (the proximal samplers need no mode)."""
    form = post.gaussian_form()
    if form is not None:
        mean, it, _ = _exact.posterior_mean(form, _exact.default_tol(dtype), 10 * _size(post))
        return mean, int(it)
    u0 = jnp.zeros(post.shape, dtype)
    if not post.is_smooth:
        return _forward(post, u0), 0
    u, evals = _unconstrained_mode(post, u0)
    return _forward(post, u), int(evals)


@jax.jit
def _forward(post, u):
    return post.transform.forward(u)


@partial(jax.jit, static_argnames=("max_iter",))
def _unconstrained_mode(post, u0, max_iter: int = 200, tol: float = 1e-5):
    """L-BFGS (the MAP solver's loop) on ``-logdensity_unconstrained``, stopping at a
    relative step ``tol``; returns ``(u, gradient evaluations)``."""
    u, _, _, evals = _smooth_solver(lambda v: -post.logdensity_unconstrained(v), u0,
                                    optax.lbfgs(), True, max_iter, tol)
    return u, evals


@jax.jit
def _jitter_images(post, images, noise):
    """``forward(inverse(x) + noise)`` per chain: jitter in the unconstrained space."""
    u = jax.vmap(post.transform.inverse)(images)
    return jax.vmap(post.transform.forward)(u + noise)


def _init_positions(post, key, init, jitter, num_chains, dtype, unconstrained: bool,
                    ref=None):
    """Starting images: ``init`` if given, else ``ref`` (default: a reference image);
    jittered per chain by ``jitter`` (in the unconstrained space if asked). Returns
    ``(images, gradient evaluations spent finding the reference)``."""
    shape = tuple(post.shape)
    grads = 0
    if init is None:
        if ref is None:
            ref, grads = _reference_image(post, dtype)
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
        init = _jitter_images(post, init, noise) if unconstrained else init + noise
    return init, grads


def _require_smooth(post, method):
    if not post.is_smooth:
        raise ValueError(f"method={method!r} needs a smooth posterior (gradients), but this "
                         "posterior has non-smooth terms: use method='myula' or 'skrock', "
                         "or a smoothed prior (e.g. TV with a smoothing parameter)")


class _NegLogUnconstrained(NamedTuple):
    """``u -> -logdensity_unconstrained(u)`` as a pytree callable (a jit argument)."""

    posterior: Any

    def __call__(self, u):
        return -self.posterior.logdensity_unconstrained(u)


@jax.jit
def _unconstrained_hessian(post, u):
    """Dense Hessian of ``-logdensity_unconstrained`` (jitted on the posterior pytree)."""
    return _hmc.hessian_matrix(_NegLogUnconstrained(post), u)


@jax.jit
def _inverse(post, x):
    return post.transform.inverse(x)


def _preconditioner(post, key, name, rank, ref):
    """The linear change of variables ``u = pc(z)`` named ``name``, built at
    ``u_ref = transform.inverse(ref)``; returns (pc, settings, setup gradients)."""
    n = _size(post)
    u_ref = _inverse(post, ref)
    if name == "dense":
        form = post.gaussian_form() if post.constraint is None else None
        if form is not None:   # linear-Gaussian: the Hessian is P, formed from the operator
            hess, grads = _exact.dense_precision(form), _dense_setup_grads(form)
        else:                  # n Hessian-vector products, two gradients each
            hess, grads = _unconstrained_hessian(post, u_ref), 2 * n
        pc = _hmc.dense_preconditioner(hess, u_ref)
        return pc, {"preconditioner": name}, grads
    if name == "lowrank":
        pc = _hmc.lowrank_preconditioner(_NegLogUnconstrained(post), u_ref, key, rank=rank)
        used = {"preconditioner": name, "rank": rank,
                "lowrank_kept": int(jnp.count_nonzero(jnp.any(pc.basis != 0, axis=0)))}
        return pc, used, 2 * 2 * rank   # Lanczos + residual check, 2 gradients per HVP
    if name == "circulant":
        pc = _hmc.circulant_preconditioner(_NegLogUnconstrained(post), u_ref, key, rank=rank)
        used = {"preconditioner": name, "rank": rank,
                "lowrank_kept": int(jnp.count_nonzero(jnp.any(pc.basis != 0, axis=0)))}
        return pc, used, 2 * (2 * rank + 1)   # + the symbol's HVP
    return _hmc.IdentityPreconditioner(u_ref), {"preconditioner": name}, 0


@jax.jit
def _z_to_images(target, z):
    return jax.vmap(target.to_image)(z)


def _init_in_z(post, key, init, jitter, num_chains, dtype, target):
    """Starting images for samplers on ``z``: ``init`` if given (jittered by
    ``init_jitter``, default 0.1, in the unconstrained space), else
    ``to_image(init_jitter * xi)``, i.e. draws from the Gaussian that defines the
    preconditioner (jitter 1.0 by default), so chains start at the posterior's own scale
    instead of a fixed pixel jitter."""
    if init is not None:
        return _init_positions(post, key, init, 0.1 if jitter is None else jitter,
                               num_chains, dtype, True)[0]
    jitter = 1.0 if jitter is None else jitter
    z = jitter * jax.random.normal(key, (num_chains, *post.shape), dtype)
    return _z_to_images(target, z)


# --------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------
def _build_hmc_family(kind):
    def build(post, key, cfg, num_chains, dtype):
        _require_smooth(post, kind)
        pc_name, rank = _pop_preconditioner(cfg, post)
        init, jitter = _pop_init(cfg, None)
        target = _pop_unit(cfg, "target_acceptance", None)
        if kind == "nuts":
            depth = _pop_int(cfg, "max_num_doublings", None, 1)
            if depth is None:
                depth = _NUTS_DENSE_MAX_DOUBLINGS if pc_name == "dense" else 10
            given = _pop(cfg, "step_size_jitter", 0.0)
            try:
                sjitter = float(given)
            except (TypeError, ValueError):
                sjitter = float("nan")
            if not 0.0 <= sjitter < 1.0:
                raise ValueError(f"'step_size_jitter' must be in [0, 1), got {given!r}")
            target = 0.8 if target is None else target
        else:
            steps = _pop_int(cfg, "num_integration_steps", None, 1)
            path = _pop_positive(cfg, "path_length", None)
            if path is None and steps is None and pc_name == "dense":
                # a quarter period of the whitened Gaussian; a low-rank whitening leaves
                # soft directions with std >> 1, where this path would be far too short
                path = math.pi / 2
            # 0.65: the optimal acceptance of HMC in high dimension (Beskos et al. 2013)
            target = (0.65 if path is not None else 0.8) if target is None else target
            steps = 16 if steps is None else steps
        # the start of the step-size adaptation; with num_warmup=0 it is the step used
        # (how gold.mcmc_reference continues a chain with the step of its first round)
        step = _pop_positive(cfg, "step_size", 0.5)
        _reject_unknown(cfg, kind)

        k_init, k_pc = jax.random.split(key)
        ref, ref_grads = _reference_image(post, dtype)
        pc, used, setup_grads = _preconditioner(post, k_pc, pc_name, rank, ref)
        setup_grads += ref_grads
        whitened = Whitened(post, pc)
        init = _init_in_z(post, k_init, init, jitter, num_chains, dtype, whitened)
        if kind == "nuts":
            sampler, params = _hmc.nuts(whitened, depth, initial_step_size=step,
                                        target_acceptance=target, dtype=dtype,
                                        step_size_jitter=sjitter)
            used.update(max_num_doublings=depth, step_size_jitter=float(sjitter))
        else:
            sampler, params = _hmc.hmc(whitened, steps, initial_step_size=step,
                                       target_acceptance=target, dtype=dtype,
                                       path_length=path)
            used.update({"path_length": float(path)} if path is not None
                        else {"num_integration_steps": steps})
        used.update(target_acceptance=target, initial_step_size=float(step))
        return _Built(sampler, params, init, used, {"num_grad_evals_setup": setup_grads})
    return build


# the smallest warmup the MCLMC/MAMS tuners can work with: 10 steps per phase
_MCLMC_MIN_WARMUP = 30


def _pop_bool(cfg, name, default):
    value = _pop(cfg, name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"'{name}' must be True or False, got {value!r}")
    return bool(value)


def _build_mclmc_family(kind):
    """MCLMC (unadjusted) or MAMS (adjusted) on ``z``, preconditioned and started like
    NUTS; ``L`` and the step size are tuned in the set-up by blackjax's tuners over
    ``num_warmup`` steps per chain (:mod:`.samplers.mclmc`), and the runner does no
    warmup: the tuning's gradients are reported as ``num_grad_evals_warmup``."""
    def build(post, key, cfg, num_chains, dtype, num_warmup):
        _require_smooth(post, kind)
        pc_name, rank = _pop_preconditioner(cfg, post)
        init, jitter = _pop_init(cfg, None)
        diag = _pop_bool(cfg, "diagonal_preconditioning", False)
        if kind == "mclmc":
            energy_var = _pop_positive(cfg, "desired_energy_var", 5e-4)
        else:
            target = _pop_unit(cfg, "target_acceptance", 0.9)
            avg_steps = _pop_positive(cfg, "num_integration_steps", 2.0)
            if not avg_steps > 1.1:   # blackjax's floor on L / step_size
                raise ValueError(f"'num_integration_steps' must be > 1.1 (blackjax's "
                                 f"floor on L / step_size), got {avg_steps!r}")
        _reject_unknown(cfg, kind)
        if num_warmup < _MCLMC_MIN_WARMUP:
            raise ValueError(f"method={kind!r} tunes L and the step size during warmup: "
                             f"'num_warmup' must be >= {_MCLMC_MIN_WARMUP}, got "
                             f"{num_warmup}")

        k_init, k_pc, k_tune = jax.random.split(key, 3)
        ref, ref_grads = _reference_image(post, dtype)
        pc, used, setup_grads = _preconditioner(post, k_pc, pc_name, rank, ref)
        setup_grads += ref_grads
        whitened = Whitened(post, pc)
        init = _init_in_z(post, k_init, init, jitter, num_chains, dtype, whitened)
        keys = jax.random.split(k_tune, num_chains)
        if kind == "mclmc":
            # blackjax's three phases (step size, variance, L from the autocorrelation)
            # take a third of num_warmup each
            images, L, step, imm, steps = _mclmc.tune_mclmc(
                whitened, init, keys, jnp.asarray(energy_var, dtype),
                num_steps=num_warmup, diagonal_preconditioning=diag)
            params = _mclmc.MCLMCParams(whitened, *_pool_tuned(L, step, imm))
            sampler = _mclmc.MCLMC
            used["desired_energy_var"] = energy_var
        else:
            # two dual-averaging passes (2/3 + 1/3 of num_warmup trajectories)
            images, L, step, imm, steps = _mclmc.tune_mams(
                whitened, init, keys, jnp.asarray(target, dtype),
                jnp.asarray(avg_steps, dtype), num_steps=num_warmup,
                diagonal_preconditioning=diag)
            params = _mclmc.MAMSParams(whitened, *_pool_tuned(L, step, imm))
            sampler = _mclmc.MAMS
            used.update(target_acceptance=target, num_integration_steps=avg_steps)
        used.update(diagonal_preconditioning=diag, L=float(params.L),
                    step_size=float(params.step_size),
                    L_per_chain=np.asarray(L).tolist(),
                    step_size_per_chain=np.asarray(step).tolist())
        warmup_grads = _mclmc.GRADS_PER_STEP * int(np.sum(np.asarray(steps, np.int64)))
        return _Built(sampler, params, images, used,
                      {"num_grad_evals_setup": setup_grads,
                       "num_grad_evals_warmup": warmup_grads}, num_warmup=0)
    return build


def _build_chees(post, key, cfg, num_chains, dtype, num_warmup):
    """ChEES-HMC (:mod:`.samplers.chees`): preconditioned and started like NUTS; the step
    size and trajectory length are tuned across all chains in the set-up by blackjax's
    ``chees_adaptation`` over ``num_warmup`` iterations, and the runner does no warmup
    (the tuning's gradients are ``num_grad_evals_warmup``)."""
    _require_smooth(post, "chees")
    if num_chains < 2:
        raise ValueError("method='chees' tunes its trajectory length across chains: "
                         f"'num_chains' must be >= 2 (4 or more advised), got {num_chains}")
    pc_name, rank = _pop_preconditioner(cfg, post)
    init, jitter = _pop_init(cfg, None)
    diag = _pop_bool(cfg, "diagonal_preconditioning", False)
    # 0.651: the optimal acceptance of HMC in high dimension (Beskos et al. 2013), the
    # ChEES paper's choice; 0.025: Adam's rate on the log trajectory length (TFP's default)
    target = _pop_unit(cfg, "target_acceptance", 0.651)
    rate = _pop_positive(cfg, "learning_rate", 0.025)
    step = _pop_positive(cfg, "step_size", 0.5)
    cap = _pop_int(cfg, "max_leapfrog_steps", 1000, 1)
    _reject_unknown(cfg, "chees")
    if num_warmup < _MCLMC_MIN_WARMUP:
        raise ValueError(f"method='chees' tunes its step size and trajectory length during "
                         f"warmup: 'num_warmup' must be >= {_MCLMC_MIN_WARMUP}, got "
                         f"{num_warmup}")

    k_init, k_pc, k_tune = jax.random.split(key, 3)
    ref, ref_grads = _reference_image(post, dtype)
    pc, used, setup_grads = _preconditioner(post, k_pc, pc_name, rank, ref)
    whitened = Whitened(post, pc)
    init = _init_in_z(post, k_init, init, jitter, num_chains, dtype, whitened)
    images, step_size, num_leapfrog, imm, start, spent = _chees.tune_chees(
        whitened, init, k_tune, jnp.asarray(step, dtype), jnp.asarray(rate, dtype),
        jnp.asarray(target, dtype), num_steps=num_warmup, diagonal_preconditioning=diag,
        max_leapfrog_steps=cap)
    params = _chees.CheesParams(whitened, step_size, num_leapfrog, imm, start)
    used.update(target_acceptance=target, learning_rate=rate, max_leapfrog_steps=cap,
                diagonal_preconditioning=diag, step_size=float(step_size),
                num_leapfrog=float(num_leapfrog),
                trajectory_length=float(step_size * num_leapfrog))
    # every chain integrated the same number of leapfrog steps in every iteration
    return _Built(_chees.CHEES, params, images, used,
                  {"num_grad_evals_setup": setup_grads + ref_grads,
                   "num_grad_evals_warmup": num_chains * int(spent)}, num_warmup=0)


@jax.jit
def _pool_tuned(L, step, imm):
    """One ``(L, step_size, inverse_mass_matrix)`` for all chains: the medians of the
    per-chain tuned values (same target, so they differ by tuning noise only)."""
    return jnp.median(L), jnp.median(step), jnp.median(imm, axis=0)


def _build_ula(post, key, cfg, num_chains, dtype):
    _require_smooth(post, "ula")
    if post.constraint is not None:
        raise ValueError("method 'ula' steps on the smooth potential and would leave the "
                         "posterior's constraint out; use 'myula'/'skrock' (projection "
                         "prox) or 'mala'/'nuts'/'hmc' (unconstrained space)")
    step = _pop(cfg, "step_size", None)
    init, jitter = _pop_init(cfg, 0.1)
    _reject_unknown(cfg, "ula")
    k_init, k_l = jax.random.split(key)
    step = step if step is not None else 1.0 / _lipschitz(post, k_l)
    init, grads = _init_positions(post, k_init, init, jitter, num_chains, dtype,
                                  unconstrained=False)
    sampler, params = _langevin.ula(post, step, dtype)
    return _Built(sampler, params, init, {"step_size": step},
                  {"num_grad_evals_setup": grads})


def _build_mala(post, key, cfg, num_chains, dtype):
    """MALA on ``z`` (preconditioned like NUTS); the initial step is 1 for a whitening
    preconditioner and ``1/L`` without one."""
    _require_smooth(post, "mala")
    pc_name, rank = _pop_preconditioner(cfg, post)
    init, jitter = _pop_init(cfg, None)
    step = _pop(cfg, "step_size", None)
    target = _pop_unit(cfg, "target_acceptance", 0.574)
    _reject_unknown(cfg, "mala")
    k_init, k_l, k_pc = jax.random.split(key, 3)
    ref, ref_grads = _reference_image(post, dtype)
    pc, used, setup_grads = _preconditioner(post, k_pc, pc_name, rank, ref)
    setup_grads += ref_grads
    whitened = Whitened(post, pc)
    init = _init_in_z(post, k_init, init, jitter, num_chains, dtype, whitened)
    if step is None:
        step = 1.0 / _lipschitz(post, k_l) if pc_name == "identity" else 1.0
    sampler, params = _langevin.mala(whitened, step, target, dtype)
    used.update(initial_step_size=float(step), target_acceptance=target)
    return _Built(sampler, params, init, used, {"num_grad_evals_setup": setup_grads})


def _build_proximal(kind):
    def build(post, key, cfg, num_chains, dtype):
        box = _pop(cfg, "box", None)
        lam = _pop_positive(cfg, "lam", None)
        stages = _pop_int(cfg, "stages", 10, 1) if kind == "skrock" else 1
        eta = _pop_positive(cfg, "eta", 0.05) if kind == "skrock" else 0.0
        frac = _pop_positive(cfg, "step_fraction", 0.9 if kind == "skrock" else 1.0)
        step = _pop(cfg, "step_size", None)
        init, jitter = _pop_init(cfg, 0.1)
        _reject_unknown(cfg, kind)
        if kind == "skrock" and step is None and _proximal.skrock_max_step(1.0, stages,
                                                                          eta) <= 0:
            raise ValueError(f"'stages'={stages} has no stable default SK-ROCK step (eta="
                             f"{eta}); use stages >= 2 or pass 'step_size'")
        k_init, k_l = jax.random.split(key)
        proxes = tuple(post.nonsmooth)
        if box is not None:
            proxes += (_proximal.Box(jnp.asarray(box[0], dtype), jnp.asarray(box[1], dtype)),)
        L = _lipschitz(post, k_l)
        lam = 1.0 / L if lam is None else lam
        L_total = L + len(proxes) / lam
        if step is None:
            step = frac * (_proximal.skrock_max_step(L_total, stages, eta)
                           if kind == "skrock" else 1.0 / L_total)
        step = float(step)
        init, grads = _init_positions(post, k_init, init, jitter, num_chains, dtype,
                                      unconstrained=False)
        if kind == "skrock":
            sampler, params = _proximal.skrock(post, proxes, lam, step, stages, eta, dtype)
            used = {"stages": stages, "eta": eta}
        else:
            sampler, params = _proximal.myula(post, proxes, lam, step, dtype)
            used = {}
        used.update(lam=lam, step_size=step, lipschitz=L, num_prox_terms=len(proxes))
        return _Built(sampler, params, init, used, {"num_grad_evals_setup": grads})
    return build


def _dense_setup_grads(form) -> int:
    """Gradient-equivalents spent forming ``P`` densely: the operator is applied
    ``min(n, m)`` times (columns or rows), a gradient applies it twice."""
    return math.ceil(min(form.operator.size_in, form.operator.size_out) / 2)


def _gaussian_form_or_raise(post, method):
    form = post.gaussian_form()
    if form is None:
        raise ValueError(f"method={method!r} needs a linear-Gaussian posterior "
                         "(posterior.gaussian_form() is None): use 'nuts', 'mala' or 'gibbs'")
    return form


def _build_exact(post, key, cfg, num_chains, dtype, method="exact"):
    form = _gaussian_form_or_raise(post, method)
    n = _size(post)
    solver = _pop(cfg, "solver", "dense" if n <= _DENSE_MAX_PIXELS else "cg")
    if solver not in ("dense", "cg"):
        raise ValueError(f"'solver' must be 'dense' or 'cg', got {solver!r}")
    tol = _pop_positive(cfg, "tol", _exact.default_tol(dtype))
    maxiter = _pop_int(cfg, "maxiter", 10 * n, 1)
    precond = _pop(cfg, "preconditioner", "circulant")
    if precond not in ("circulant", "none"):
        raise ValueError(f"'preconditioner' must be 'circulant' or 'none' for method="
                         f"{method!r}, got {precond!r}")
    if precond != "circulant" and solver == "dense":
        raise ValueError("'preconditioner' applies to solver='cg' only (the dense solver "
                         "factors the precision)")
    _pop_init(cfg, None)      # validated, unused: exact draws need no starting point
    _reject_unknown(cfg, method)
    if solver == "dense":
        dense = _exact.dense_factor(form)
        (sampler, params), mean = _exact.dense_sampler(dense), dense.mean
        setup = {"num_grad_evals_setup": _dense_setup_grads(form)}
        used = {"solver": "dense"}
    else:
        # the mean's solve is always circulant-preconditioned; 'preconditioner' sets the draws'
        mean, it, relres = _exact.posterior_mean(form, tol, maxiter)
        relres = float(relres)
        if not relres <= tol:
            warnings.warn(f"method={method!r}: the posterior mean's CG stopped at relative "
                          f"residual {relres:.2e} > tol={tol:.1e} (maxiter={maxiter}); every "
                          "draw is centred on that inexact mean", RuntimeWarning, stacklevel=3)
        sampler, params = _exact.po_sampler(form, tol, maxiter, mean,
                                            preconditioner=precond)
        # + the product that measured the sampler's preconditioner
        setup = {"num_grad_evals_setup": int(it) + (precond == "circulant")}
        used = {"solver": "cg", "tol": tol, "maxiter": maxiter, "preconditioner": precond,
                "mean_cg_relres": relres}
    init = jnp.broadcast_to(mean, (num_chains, *post.shape))
    return _Built(sampler, params, init, used, setup, num_warmup=0)


def _build_gibbs(post, key, cfg, num_chains, dtype):
    _gaussian_form_or_raise(post, "gibbs")
    n = _size(post)
    tol = _pop_positive(cfg, "tol", _exact.default_tol(dtype))
    maxiter = _pop_int(cfg, "maxiter", 10 * n, 1)
    init, jitter = _pop_init(cfg, 0.1)
    _reject_unknown(cfg, "gibbs")
    init, grads = _init_positions(post, key, init, jitter, num_chains, dtype,
                                  unconstrained=False)
    names = sorted(post.hyperparameters)
    sampler, params = _gibbs.gibbs(post, tol, maxiter, dtype)
    return _Built(sampler, params, init, {"tol": tol, "maxiter": maxiter,
                                          "hyperparameters": names},
                  {"num_grad_evals_setup": grads})


def _build_gsm(post, key, cfg, num_chains, dtype):
    """The exact TV / l1-wavelet sampler (:mod:`.samplers.gsm`). Chains start at
    independent N(0, init_jitter^2) images by default: an over-dispersed start for R-hat."""
    _gsm.check_gsm_posterior(post)
    tol = _pop_positive(cfg, "tol", _gsm.default_tol(dtype))
    if not tol < 1:
        raise ValueError(f"'tol' must be a number in (0, 1), got {tol!r}")
    maxiter = _pop_int(cfg, "maxiter", 1000, 1)
    dense_max = _pop_int(cfg, "dense_max", _gsm.GSM_DENSE_MAX, 0)
    init, jitter = _pop_init(cfg, 0.1)
    _reject_unknown(cfg, "gsm")
    zeros = jnp.zeros(tuple(post.shape), dtype)
    init, _ = _init_positions(post, key, init, jitter, num_chains, dtype,
                              unconstrained=False, ref=zeros)
    params, spent = _gsm.gsm_params(post, tol, maxiter, dense_max)
    return _Built(_gsm.GSM, params, init,
                  {"tol": tol, "maxiter": maxiter, "preconditioner": params.kind,
                   "dense_max": dense_max, "dense_normal": params.normal is not None},
                  {"num_grad_evals_setup": math.ceil(spent / 2)})


# What each method's stationary law is: "exact" (independent exact draws), "asymptotically
# exact" (a Markov chain with the posterior as invariant law) or "biased" (a discretised
# or smoothed target: its bias must be measured against an exact method, never assumed).
EXACTNESS = {"exact": "exact", "rto": "exact", "gsm": "asymptotically exact",
             "nuts": "asymptotically exact", "hmc": "asymptotically exact",
             "mala": "asymptotically exact", "gibbs": "asymptotically exact",
             "mams": "asymptotically exact", "chees": "asymptotically exact",
             "ula": "biased", "myula": "biased", "skrock": "biased", "mclmc": "biased"}


METHODS: dict[str, Callable] = {
    "nuts": _build_hmc_family("nuts"),
    "hmc": _build_hmc_family("hmc"),
    "ula": _build_ula,
    "mala": _build_mala,
    "myula": _build_proximal("myula"),
    "skrock": _build_proximal("skrock"),
    "gibbs": _build_gibbs,
    "exact": _build_exact,
    "rto": partial(_build_exact, method="rto"),
    "gsm": _build_gsm,
    "mclmc": _build_mclmc_family("mclmc"),
    "mams": _build_mclmc_family("mams"),
    "chees": _build_chees,
}
# builders that tune in the set-up and take ``num_warmup`` (the runner then does none)
_TUNED_IN_SETUP = ("mclmc", "mams", "chees")


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"'{name}' must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"'{name}' must be >= {minimum}, got {value}")
    return int(value)


def default_chain_method(method: str, platform: str | None = None) -> str:
    """The chain execution used when ``sample`` is not given ``chain_method``.

    ``"sequential"`` for NUTS on CPU: a vmapped NUTS iteration lasts as long as the
    longest of the chains' trees, and on CPU sequential chains lose little by not
    batching their gradients; ``"vectorized"`` otherwise (fixed-length steps batch well,
    and an accelerator runs the vmapped chains in parallel).

    Args:
        method: a name in :data:`METHODS`.
        platform: JAX platform (``"cpu"``, ``"gpu"``, ``"tpu"``); default: that of
            ``jax.devices()[0]``.

    Returns:
        ``"sequential"`` or ``"vectorized"``.
    """
    platform = jax.devices()[0].platform if platform is None else platform
    return "sequential" if method == "nuts" and platform == "cpu" else "vectorized"


# methods that sample a complex image in real coordinates (models.realview): the
# proximal, GSM and Gibbs samplers have no complex version
COMPLEX_METHODS = ("exact", "rto", "nuts", "hmc", "mala", "ula", "mclmc", "mams",
                   "chees")


def _sample_complex(posterior, method, num_chains, num_samples, num_warmup, thin, seed,
                    checkpoint_dir, draws_dir, progress, cfg):
    """A complex image: sample its real coordinates ``(Re x, Im x)`` (a real posterior of
    shape ``(2, *shape)``, same data, same noise) with ``method`` and return the complex
    Result (:meth:`Result.from_real_coordinates`). Refuses, before any set-up, the
    methods that have no complex version and posteriors that are not complex
    linear-Gaussian."""
    from ..models.realview import to_real
    if method not in COMPLEX_METHODS:
        raise ValueError(f"method={method!r} does not support a complex image; methods "
                         f"for complex images: {list(COMPLEX_METHODS)}")
    real = posterior.real_coordinates(owner=f"method={method!r}")
    cfg = dict(cfg)
    if cfg.get("init") is not None:     # a complex starting image -> its real coordinates
        init = jnp.asarray(cfg["init"])
        if jnp.iscomplexobj(init):
            cfg["init"] = jnp.moveaxis(to_real(init), 0, init.ndim - len(posterior.shape))
    out = sample(real, method=method, num_chains=num_chains, num_samples=num_samples,
                 num_warmup=num_warmup, thin=thin, seed=seed, checkpoint_dir=checkpoint_dir,
                 draws_dir=draws_dir, progress=progress, **cfg)
    prov = dict(out.provenance)
    prov.update(model_identity(posterior))
    prov["dtype"] = jnp.dtype(posterior.dtype).name
    prov["coordinates"] = "real: (Re x, Im x) on a leading axis"
    return Result.from_real_coordinates(out, provenance=prov)


def sample(posterior, method: str = "nuts", num_chains: int = 4, num_samples: int = 1000,
           num_warmup: int = 500, thin: int = 1, seed: int = 0, checkpoint_dir=None,
           draws_dir=None, progress: bool = True, **cfg) -> Result:
    """Sample ``posterior`` with ``method`` and return a :class:`~uqrecon.result.Result`.

    ``num_samples`` post-warmup iterations per chain enter the running mean/variance;
    every ``thin``-th is kept as a draw. See the module docstring for ``**cfg``.
    Warns (``ConvergenceWarning``) when R-hat > 1.01 or the bulk ESS is low, and
    (``RuntimeWarning``) on divergences or chains that went non-finite (those chains are
    left out of mean/variance and listed in ``diagnostics['nonfinite_chains']``).

    Args:
        posterior: a :class:`~uqrecon.models.Posterior`.
        method: sampler name, one of :data:`uqrecon.inference.METHODS`.
        num_chains: number of chains.
        num_samples: post-warmup iterations per chain.
        num_warmup: warm-up (adaptation) iterations per chain.
        thin: keep every ``thin``-th draw.
        seed: integer seed; the same seed gives the same draws.
        checkpoint_dir: folder for resumable checkpoints after every chunk (None: none).
        draws_dir: folder for the draws as a memory-mapped file (None: in memory).
        progress: show a progress bar.
        **cfg: options of the method (see the module docstring).

    Returns:
        A :class:`~uqrecon.result.Result` with draws, diagnostics, timings and provenance.
    """
    from ..models.hyper import check_posterior
    check_posterior(posterior)
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"unknown 'method' {method!r}; valid names: {sorted(METHODS)}")
    method = method.lower()
    num_chains = _check_int("num_chains", num_chains, 1)
    num_samples = _check_int("num_samples", num_samples, 1)
    num_warmup = _check_int("num_warmup", num_warmup, 0)
    thin = _check_int("thin", thin, 1)
    seed = _check_int("seed", seed, 0)
    if jnp.issubdtype(jnp.dtype(posterior.dtype), jnp.complexfloating):
        return _sample_complex(posterior, method, num_chains, num_samples, num_warmup,
                               thin, seed, checkpoint_dir, draws_dir, progress, cfg)
    dtype = jnp.dtype(posterior.dtype)
    _check_x64(method, dtype)
    cfg = dict(cfg)
    chunk_size = _pop(cfg, "chunk_size", None)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, 1)
    # the runner's own checks, made here too so they come before any set-up work
    if num_samples % thin or (chunk_size is not None and chunk_size % thin):
        raise ValueError(f"'num_samples' ({num_samples}) and 'chunk_size' ({chunk_size}) "
                         f"must be multiples of 'thin' ({thin})")
    keep_draws = bool(_pop(cfg, "keep_draws", True))
    chain_method = _pop(cfg, "chain_method", None)
    chain_method = (default_chain_method(method) if chain_method is None
                    else check_chain_method(chain_method))
    requested = dict(cfg)

    with CompileMonitor() as monitor:
        t0 = time.perf_counter()
        key_build, key_run = jax.random.split(jax.random.PRNGKey(seed))
        extra = {"num_warmup": num_warmup} if method in _TUNED_IN_SETUP else {}
        built = METHODS[method](posterior, key_build, cfg, num_chains, dtype, **extra)
        if cfg:
            raise TypeError(f"method={method!r} got unknown options {sorted(cfg)}")
        jax.block_until_ready((built.init_positions, built.params))
        setup_s = time.perf_counter() - t0 - monitor.compile_s
        run_warmup = num_warmup if built.num_warmup is None else built.num_warmup
        if method not in _TUNED_IN_SETUP:   # exact draws: no warmup at all
            num_warmup = run_warmup
        out = run_chains(built.sampler, built.params, built.init_positions, key_run,
                         num_warmup=run_warmup, num_samples=num_samples, thin=thin,
                         chunk_size=chunk_size, checkpoint_dir=checkpoint_dir,
                         draws_dir=draws_dir, keep_draws=keep_draws, progress=progress,
                         fingerprint={"method": method, "seed": seed,
                                      "config": repr(requested)},
                         chain_method=chain_method)

    diagnostics: dict[str, Any] = {
        "acceptance_rate": float(np.mean(out.acceptance_rate)),
        "acceptance_rate_per_chain": out.acceptance_rate,
        "divergences": int(np.sum(out.divergences)),
        "step_size": out.step_size,
        "num_grad_evals": int(out.num_grad_evals),
        # MCLMC/MAMS: the tuning in the set-up is their warmup
        "num_grad_evals_warmup": int(out.num_grad_evals_warmup)
        + int(built.setup.get("num_grad_evals_warmup", 0)),
        "num_grad_evals_setup": int(built.setup.get("num_grad_evals_setup", 0)),
        "nonfinite_chains": np.flatnonzero(out.nonfinite_chains),
        "num_devices": out.num_devices,
    }
    if method == "nuts":   # sampling iterations whose tree stopped at max_num_doublings
        diagnostics["max_depth_hits"] = out.num_capped
        diagnostics["max_depth_fraction"] = float(np.sum(out.num_capped)) / (
            num_samples * num_chains)
    for name, trace in out.traces.items():
        diagnostics[name] = trace
    draws = out.draws
    if out.nonfinite_chains.any():
        warnings.warn(f"chains {list(np.flatnonzero(out.nonfinite_chains))} reached a "
                      "non-finite state and were left out of mean, variance and draws",
                      RuntimeWarning, stacklevel=2)
        if draws is not None:  # keep intervals and quantiles free of NaN chains
            draws = np.asarray(draws)[~out.nonfinite_chains]
    if diagnostics["divergences"]:
        warnings.warn(f"{diagnostics['divergences']} divergent transitions (or failed inner "
                      "solves): the draws may be biased", RuntimeWarning, stacklevel=2)
    if draws is not None and draws.shape[1] >= 4:
        diag = diagnose(draws)
        diagnostics.update(diag)
        diagnostics.update(summarize(diag["ess_bulk"], diag["rhat"]))
        rhat = diag["rhat"] if draws.shape[0] >= 2 else None
        check_convergence(diag["ess_bulk"], rhat)

    # compile_s: all tracing/lowering/XLA compilation of this call (set-up included);
    # setup_s and run_s exclude it; num_compiles: XLA compilations that really happened
    timings = {"setup_s": setup_s, "compile_s": monitor.compile_s,
               "run_s": out.timings["run_s"]}
    timings["total_s"] = setup_s + timings["compile_s"] + timings["run_s"]
    diagnostics["num_compiles"] = monitor.num_compiles
    provenance = make_provenance(
        method, config={**built.config, "num_chains": num_chains, "num_samples": num_samples,
                        "num_warmup": num_warmup, "thin": thin,
                        "chain_method": chain_method},
        seed=seed, dtype=dtype, exactness=EXACTNESS.get(method, "unknown"),
        **model_identity(posterior))
    return Result(mean=out.mean, variance=out.variance, draws=draws, diagnostics=diagnostics,
                  timings=timings, provenance=provenance)

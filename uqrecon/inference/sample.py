"""``sample(posterior, method=...)``: the one entry point for posterior sampling.

Each method is a builder (:mod:`uqrecon.inference.methods`, one module per method:
options, defaults, set-up) ``(posterior, key, cfg, num_chains, dtype) -> Built`` that
turns a Posterior (used only through the contract in docs/interfaces.md) into a static
:class:`~.samplers.base.Sampler`
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
  than the projector pair at 32x32), ``coarse`` (``"auto"``: block size of the two-level
  preconditioner's coarse space, on where the operator pair is applied, at most 1024
  blocks and at least 24 pixels per block on average; an int sets it, 0 turns it off),
  ``hmc_moves`` (0: after every sweep, that many HMC trajectories on the marginal
  posterior of the image, driven by a Huber-smoothed gradient and accepted on the exact
  density, so still exact; they move the edges that the Gibbs alternation moves
  slowly), ``hmc_steps`` (10 leapfrog steps),
  ``hmc_step_size`` (initial, whitened units; tuned in warmup to acceptance 0.65),
  ``hmc_smoothing`` (``0.01 / weight``), ``init``,
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
``chunk_size`` (iterations per compiled chunk and checkpoint; default 100, for exact
draws as many as make ~16M values, e.g. 4096 draws of a 64x64 image: one blocked solve per
chunk), ``keep_draws`` (True), ``diagnose`` (True: per-pixel R-hat and bulk/tail
ESS of the kept draws in ``diagnostics``, with a ConvergenceWarning; False skips them, for
a caller that computes them itself over several runs, as :func:`uqrecon.gold.mcmc_reference`
does: on the host they cost ~0.1 us per draw-pixel on 2 cores, ~5 s for 4 chains x 1000
draws at 128x128),
``chain_method`` (``"vectorized"``: chains vmapped;
``"sequential"``: one after another in the compiled chunk, see :func:`run_chains`;
default :func:`default_chain_method`, recorded in the provenance's config).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..linalg import full_precision
from ..result import Result
from ..diagnostics import check_convergence, diagnose, summarize
from .methods import chees as _chees
from .methods import common
from .methods import exact as _exact
from .methods import gibbs as _gibbs
from .methods import gsm as _gsm
from .methods import hmc as _hmc
from .methods import langevin as _langevin
from .methods import mclmc as _mclmc
from .methods import proximal as _proximal
from .accounting import CallClock, complex_result, method_result
from .runner import check_chain_method, run_chains

__all__ = ["sample", "METHODS", "EXACTNESS", "COMPLEX_METHODS", "default_chain_method"]

# blackjax kernels that promote a float32 chain to float64 inside their accept/reject
# cond when jax_enable_x64 is on (TypeError "cond branches must have equal output types")
_FLOAT32_ONLY_WITHOUT_X64 = ("mala", "nuts", "mclmc", "mams", "chees")


def _check_x64(method, dtype):
    """Refuse, before any set-up, a float32 posterior under ``jax_enable_x64`` for the
    blackjax kernels that cannot run it."""
    if method in _FLOAT32_ONLY_WITHOUT_X64 and dtype == jnp.float32 \
            and jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"method={method!r} cannot sample a float32 posterior with jax_enable_x64 on "
            f"(blackjax's kernel mixes float64 into the float32 chain); build the posterior "
            f"from float64 data for a float64 run, or turn jax_enable_x64 off")


# What each method's stationary law is: "exact" (independent exact draws), "asymptotically
# exact" (a Markov chain with the posterior as invariant law) or "biased" (a discretised
# or smoothed target: its bias must be measured against an exact method, never assumed).
EXACTNESS = {"exact": "exact", "rto": "exact", "gsm": "asymptotically exact",
             "nuts": "asymptotically exact", "hmc": "asymptotically exact",
             "mala": "asymptotically exact", "gibbs": "asymptotically exact",
             "mams": "asymptotically exact", "chees": "asymptotically exact",
             "ula": "biased", "myula": "biased", "skrock": "biased", "mclmc": "biased"}


METHODS: dict[str, Callable] = {
    "nuts": _hmc.build_nuts,
    "hmc": _hmc.build_hmc,
    "ula": _langevin.build_ula,
    "mala": _langevin.build_mala,
    "myula": _proximal.build_myula,
    "skrock": _proximal.build_skrock,
    "gibbs": _gibbs.build,
    "exact": _exact.build_exact,
    "rto": _exact.build_rto,
    "gsm": _gsm.build,
    "mclmc": _mclmc.build_mclmc,
    "mams": _mclmc.build_mams,
    "chees": _chees.build,
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

    ``"sequential"`` on CPU for NUTS: a vmapped NUTS iteration lasts as long as the
    longest of the chains' trees. ``"vectorized"`` otherwise: the chains' gradients
    batch into one matrix product, which on CPU reads a dense whitening factor once for
    all chains instead of once per chain (64x64 CT GMRF posterior, 4096 x 4096 factor,
    ``benchmarks/samplers.py``: a whitened gradient costs 1.7 ms per chain with 4 HMC
    chains in turn, 1.4 ms with 4 vmapped, 0.54 ms with 16 and 0.36 ms with 32; 4 MALA
    chains the same in both modes, 16 vmapped 0.73 ms against 2.1). HMC
    shares its trajectory jitter between chains (:func:`~.samplers.hmc.hmc`), so its
    vmapped chains wait on a longer trajectory only where their step sizes differ. On
    accelerators every method runs vectorised. A run checkpointed under an older default
    is refused on resume with the differing ``chain_method`` named; pass it explicitly
    to resume.

    Args:
        method: a name in :data:`METHODS`.
        platform: JAX platform (``"cpu"``, ``"gpu"``, ``"tpu"``); default: that of
            ``jax.devices()[0]``.

    Returns:
        ``"sequential"`` or ``"vectorized"``.
    """
    platform = jax.devices()[0].platform if platform is None else platform
    return ("sequential" if method in _SEQUENTIAL_ON_CPU and platform == "cpu"
            else "vectorized")


_SEQUENTIAL_ON_CPU = ("nuts",)


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
    with CallClock() as before:         # the conversions count in the Result's timings
        real = posterior.real_coordinates(owner=f"method={method!r}")
        cfg = dict(cfg)
        if cfg.get("init") is not None:     # a complex starting image -> real coordinates
            init = jnp.asarray(cfg["init"])
            if jnp.iscomplexobj(init):
                cfg["init"] = jnp.moveaxis(to_real(init), 0,
                                           init.ndim - len(posterior.shape))
    out = sample(real, method=method, num_chains=num_chains, num_samples=num_samples,
                 num_warmup=num_warmup, thin=thin, seed=seed, checkpoint_dir=checkpoint_dir,
                 draws_dir=draws_dir, progress=progress, **cfg)
    return complex_result(out, posterior, before)


@full_precision
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
    chunk_size = common.pop(cfg, "chunk_size", None)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, 1)
    # the runner's own checks, made here too so they come before any set-up work
    if num_samples % thin or (chunk_size is not None and chunk_size % thin):
        raise ValueError(f"'num_samples' ({num_samples}) and 'chunk_size' ({chunk_size}) "
                         f"must be multiples of 'thin' ({thin})")
    keep_draws = bool(common.pop(cfg, "keep_draws", True))
    run_diagnostics = common.pop_bool(cfg, "diagnose", True)
    chain_method = common.pop(cfg, "chain_method", None)
    chain_method = (default_chain_method(method) if chain_method is None
                    else check_chain_method(chain_method))
    requested = dict(cfg)

    with CallClock() as clock:
        t0 = time.perf_counter()
        key_build, key_run = jax.random.split(jax.random.PRNGKey(seed))
        extra = {"num_warmup": num_warmup} if method in _TUNED_IN_SETUP else {}
        built = METHODS[method](posterior, key_build, cfg, num_chains, dtype, **extra)
        if cfg:
            raise TypeError(f"method={method!r} got unknown options {sorted(cfg)}")
        jax.block_until_ready((built.init_positions, built.params))
        setup_s = time.perf_counter() - t0 - clock.compile_s
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
                      RuntimeWarning, stacklevel=3)
        if draws is not None:  # keep intervals and quantiles free of NaN chains
            draws = np.asarray(draws)[~out.nonfinite_chains]
    if diagnostics["divergences"]:
        warnings.warn(f"{diagnostics['divergences']} divergent transitions (or failed inner "
                      "solves): the draws may be biased", RuntimeWarning, stacklevel=3)
    if run_diagnostics and draws is not None and draws.shape[1] >= 4:
        diag = diagnose(draws)
        diagnostics.update(diag)
        diagnostics.update(summarize(diag["ess_bulk"], diag["rhat"]))
        rhat = diag["rhat"] if draws.shape[0] >= 2 else None
        check_convergence(diag["ess_bulk"], rhat)

    # compile_s: all tracing/lowering/XLA compilation of this call (set-up included);
    # setup_s and run_s exclude it; num_compiles: XLA compilations that really happened
    config = {**built.config, "num_chains": num_chains, "num_samples": num_samples,
              "num_warmup": num_warmup, "thin": thin, "chain_method": chain_method,
              # False: no R-hat/ESS in the diagnostics (the caller diagnoses the draws)
              "diagnose": run_diagnostics}
    return method_result(posterior, method, config, clock, mean=out.mean,
                         variance=out.variance, draws=draws, diagnostics=diagnostics,
                         seed=seed, setup_s=setup_s,
                         exactness=EXACTNESS.get(method, "unknown"))

"""Gold standards: the references every approximation and sampler is judged against.

* :func:`exact_gaussian` -- the exact posterior of a linear-Gaussian model. Up to
  ``dense_max`` pixels (64x64) a dense Cholesky factorisation of the precision gives the
  mean, the pixel variances and the full covariance to rounding error. Beyond, the mean
  is a CG solve and the pixel variances are sample variances of ``num_samples`` exact
  perturbation-optimisation draws (each one CG solve, preconditioned by a circulant
  model of the precision measured from its point-spread function): per pixel the estimator is
  unbiased with relative standard error ``sqrt(2 / num_samples)`` (chi-square with
  ``num_samples`` degrees of freedom, the mean being known), plus the CG residual,
  both recorded in the result's provenance.
* :func:`mcmc_reference` -- a long multi-chain run, extended in rounds (each round
  doubles the draws, continuing the chains where they stopped) until posteriordb's
  criteria for a reference hold on every pixel: split R-hat below ``rhat_max``, bulk *and*
  tail ESS at least ``min_ess``, no divergent transitions.
* :func:`reference` -- the one entry point: picks the exact method for the posterior
  (exact Gaussian for linear-Gaussian models; the exact GSM sampler for TV / l1-wavelet
  priors with a Gaussian likelihood; whitened HMC (<= 4096 pixels) or NUTS for smooth posteriors) and records its
  *exactness class* -- ``exact``, ``asymptotically exact`` or ``biased`` -- beside the
  diagnostics. Only exact or converged asymptotically exact results are gold standards.
  The result is cached on disk under a SHA-256 of the posterior (every array leaf by
  value, every static field by value), the method, its configuration, the seed and the
  criteria, with provenance; the same call again loads it, and any change to an input
  gives a different key, so a stale cache is never reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import shutil
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .inference import exact as _exact
from .inference.accounting import CallClock, complex_result, method_result, with_prelude
from .inference.checkpoint import CheckpointMismatch
from .inference.sample import EXACTNESS
from .linalg import circulant_solve, full_precision, matmul_precision, pcg
from .models.identity import _update_static, model_identity, posterior_hash
from .result import Result, make_provenance

__all__ = ["exact_gaussian", "mcmc_reference", "reference", "gsm_reference_options",
           "exactness", "cache_key",
           "default_cache_dir", "EXACTNESS", "posterior_hash"]


def exactness(method: str) -> str:
    """The exactness class of a sampling method (see :data:`EXACTNESS`).

    Args:
        method: a method name of :func:`uqrecon.sample`.

    Returns:
        ``"exact"``, ``"asymptotically exact"``, ``"biased"`` or ``"unknown"``.
    """
    return EXACTNESS.get(method, "unknown")


_CACHE_FORMAT = 4   # 3: rounds sized by _next_round, tuned step kept; 4: no 20 % margin


# --------------------------------------------------------------------------------------
# Exact Gaussian posteriors
# --------------------------------------------------------------------------------------
@jax.jit
def _po_deviations(form, keys, tol, maxiter):
    """Perturbation-optimisation deviations from the mean, one circulant-preconditioned CG
    solve per key (:func:`uqrecon.inference.exact.precision_symbol`); jitted at module
    level on the form (a pytree) with traced ``tol``/``maxiter``, so same-shaped problems
    reuse the compiled solver."""
    precond = circulant_solve(_exact.precision_symbol(form))

    def one(key):
        return pcg(form.precision, _exact.perturbed_rhs(form, key), precond, tol, maxiter)[:3]

    return jax.lax.map(one, keys, batch_size=8)


@full_precision
def exact_gaussian(posterior, *, seed: int = 0, dense_max: int = 4096,
                   num_samples: int = 400, tol: float | None = None,
                   maxiter: int | None = None, keep_draws: bool = False) -> Result:
    """The exact posterior of a linear-Gaussian ``posterior`` as a ``Result``.

    Dense Cholesky up to ``dense_max`` pixels (``gaussian`` factors of kind 'dense',
    draws on demand through ``Result.sample``); beyond, the mean by circulant-preconditioned
    CG and variances from ``num_samples`` exact perturbation-optimisation draws (see the
    module docstring). A complex image is solved in its real coordinates
    ``(Re x, Im x)`` (``dense_max`` still counts complex pixels); the Result is complex,
    with pixel variance ``E|x - mean|^2`` and the real coordinates' Gaussian factors.

    Args:
        posterior: a linear-Gaussian :class:`~uqrecon.models.Posterior`.
        seed: seed of the perturbation-optimisation draws (CG path only).
        dense_max: largest image (pixels) handled by the dense Cholesky path.
        num_samples: draws for the variances on the CG path (relative s.e. of a pixel
            variance ``sqrt(2/num_samples)``, recorded in the diagnostics).
        tol: CG relative residual (default :func:`uqrecon.linalg.default_tol`).
        maxiter: CG iteration cap (default ``10 n``).
        keep_draws: keep the CG path's draws in the Result.

    Returns:
        A :class:`~uqrecon.result.Result` with mean, variance, provenance (solver, model
        identity) and, on the dense path, the Gaussian factors.
    """
    with CallClock() as before:    # what runs before the solver's clock counts too
        form = posterior.gaussian_form()
    if form is None:
        raise ValueError("exact_gaussian: 'posterior' is not linear-Gaussian "
                         "(posterior.gaussian_form() is None); use mcmc_reference")
    for name, val, lo in (("dense_max", dense_max, 0), ("num_samples", num_samples, 2)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"'{name}' must be an integer >= {lo}, got {val!r}")
    if jnp.issubdtype(jnp.dtype(posterior.dtype), jnp.complexfloating):
        # a complex image: the exact Gaussian of its real coordinates (Re x, Im x), whose
        # 2n x 2n covariance is the Result's Gaussian factors (see uqrecon.result)
        with CallClock() as convert:
            real = posterior.real_coordinates(owner="exact_gaussian")
        out = exact_gaussian(real, seed=seed, dense_max=2 * dense_max,
                             num_samples=num_samples, tol=tol, maxiter=maxiter,
                             keep_draws=keep_draws)
        out = out.replace(provenance={**out.provenance, "config": {
            **out.provenance["config"], "dense_max": dense_max}})
        return complex_result(out, posterior, before, convert)
    shape = tuple(posterior.shape)
    n = math.prod(shape)
    dtype = jnp.dtype(posterior.dtype)
    tol = _exact.default_tol(dtype) if tol is None else float(tol)
    maxiter = 10 * n if maxiter is None else int(maxiter)
    config = {"dense_max": dense_max, "num_samples": num_samples, "tol": tol,
              "maxiter": maxiter}
    if n <= dense_max:
        with CallClock() as clock:
            dense = _exact.dense_factor(form)
            rinv = jax.scipy.linalg.solve_triangular(dense.chol, jnp.eye(n, dtype=dtype),
                                                     lower=True)
            cov = rinv.T @ rinv
            var = jnp.sum(rinv ** 2, axis=0).reshape(shape)
            jax.block_until_ready((cov, var))
        return with_prelude(method_result(
            posterior, "exact_gaussian", config, clock, mean=np.asarray(dense.mean),
            variance=np.asarray(var), gaussian={"kind": "dense", "mean": np.asarray(dense.mean),
                                                "cov": np.asarray(cov)},
            exactness="exact", solver="dense_cholesky", variance_error="rounding only"),
            before)

    with CallClock() as clock:
        mean, iters, relres = _exact.posterior_mean(form, tol, maxiter)
        keys = jax.random.split(jax.random.PRNGKey(seed), num_samples)
        devs, its, res = _po_deviations(form, keys, tol, maxiter)
        var = jnp.mean(devs ** 2, axis=0)
        worst, cg_iterations = float(jnp.max(res)), int(iters) + int(jnp.sum(its))
    rel_se = math.sqrt(2.0 / num_samples)
    converged = float(relres) <= tol and worst <= tol
    reason = (f"every CG solve reached relative residual <= tol={tol:.1e}" if converged
              else f"CG stopped at relative residual {max(float(relres), worst):.2e} > "
                   f"tol={tol:.1e} within maxiter={maxiter}: mean and draws are truncated "
                   "solves, not exact")
    if not converged:
        warnings.warn(f"exact_gaussian: {reason}", RuntimeWarning, stacklevel=3)
    draws = (np.asarray(mean) + np.asarray(devs))[None] if keep_draws else None
    diagnostics = {"num_grad_evals": cg_iterations, "variance_rel_se": rel_se,
                   "converged": converged, "reason": reason}
    return with_prelude(method_result(
        posterior, "exact_gaussian", config, clock, mean=np.asarray(mean),
        variance=np.asarray(var), draws=draws, diagnostics=diagnostics, seed=seed,
        exactness="exact", solver="cg + perturbation-optimisation",
        variance_estimator=f"sample variance of {num_samples} exact draws about the CG mean",
        variance_rel_se=rel_se, mean_cg_relres=float(relres), draws_cg_relres_max=worst),
        before)


# --------------------------------------------------------------------------------------
# Cache keys
# --------------------------------------------------------------------------------------
def cache_key(posterior, method: str, config: dict, digest: str | None = None) -> str:
    """The cache key of an MCMC reference.

    Args:
        posterior: the posterior (hashed with :func:`posterior_hash` unless ``digest``).
        method: the sampler name.
        config: the sampler's configuration (a dict of plain values).
        digest: the posterior's :func:`posterior_hash` when already computed.

    Returns:
        A hex SHA-256 of posterior, method, configuration, cache format and uqrecon version.
    """
    from . import __version__

    h = hashlib.sha256()
    h.update((digest or posterior_hash(posterior)).encode())
    _update_static(h, {"method": method, "config": config, "format": _CACHE_FORMAT,
                       "uqrecon": __version__})
    return h.hexdigest()


def default_cache_dir() -> str:
    """Where references are cached.

    Returns:
        ``$UQRECON_CACHE`` if set, else ``~/.cache/uqrecon/gold``.
    """
    return os.environ.get("UQRECON_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "uqrecon", "gold"))


# --------------------------------------------------------------------------------------
# MCMC references
# --------------------------------------------------------------------------------------
_NO_TUNING = ("gsm", "gibbs", "exact", "rto")   # later rounds need no new warmup
# later rounds keep the first round's dual-averaged step (pooled over chains: the median)
# instead of a new warmup: continuing at a fixed step is a valid chain, and at 32x32
# Huber-TV the warmups were a quarter of the reference's cost
_STEP_TUNED = ("hmc", "nuts", "mala")


def _tuned_step_option(method: str, config: dict) -> str | None:
    """The option that carries a first-round tuned step into later rounds: ``step_size``
    for HMC, NUTS and MALA; ``hmc_step_size`` for GSM with HMC moves (their step is
    tuned in warmup; the metric follows the frozen anchor, the round's start); None
    where nothing is tuned."""
    if method in _STEP_TUNED:
        return "step_size"
    if method == "gsm" and config.get("hmc_moves"):
        return "hmc_step_size"
    return None


def _next_round(have: int, unit: int, max_rhat: float, min_ess_bulk: float,
                min_ess_tail: float, rhat_max: float, min_ess: float) -> int:
    """Iterations per chain of the next round.

    Scales what is missing by how the criteria grow with the run (ESS in proportion to
    the draws, ``R-hat - 1`` in inverse proportion), with no margin; rounded up to a
    multiple of ``unit`` (the compiled chunk length: every round reuses one compiled
    chunk), at least one unit and at most as long as all rounds so far (the doubling a
    badly mixing chain needs; also what a non-finite R-hat or ESS gets).

    Why no margin: near convergence what falls short is the largest of thousands of
    pixels' noisy R-hats, and the ``1/n`` prediction from it errs either way (on five
    128x128 TV references the R-hat found later was 0.7-1.6x the predicted). Replayed on
    their draws (``benchmarks/results/gold_tv.md``, section 1e), a 20 % margin on top of
    rounding up to whole units ran up to 1000 draws per chain (315 s) where 700 met the
    criteria; without it, at most 800 (259 s). A round too short costs one more diagnosis
    of the draws (15-22 % of a 100-sweep unit there); a round too long costs its sweeps.
    Near misses now grow a unit at a time, hence more rounds by default (``max_rounds``).
    """
    cap = max(have // unit, 1)
    factor = max(1.0, min_ess / max(min_ess_bulk, 1e-12), min_ess / max(min_ess_tail, 1e-12),
                 (max_rhat - 1.0) / (rhat_max - 1.0))
    if not all(math.isfinite(v) for v in (factor, max_rhat, min_ess_bulk, min_ess_tail)):
        return cap * unit
    missing = factor * have - have
    # rounded before the ceiling: 1.0115 - 1 is not 0.0115 in binary, and a hair over a
    # whole number of units (within 1e-6 of a unit, far less than one draw) must not add
    # a unit
    units = min(max(math.ceil(round(missing / unit, 6)), 1), cap)
    return units * unit


# --------------------------------------------------------------------------------------
# A reference in the making: completed rounds and the running round's checkpoint on disk
# --------------------------------------------------------------------------------------
def _rounds_dir(cache_dir, posterior, method, settings, digest) -> str:
    """Where an MCMC reference keeps its completed rounds and the running round's
    checkpoint while it is made, so that a run that dies (hours at 256x256) loses at most
    one chunk. Keyed like the cache file but without ``max_rounds``, which no round
    depends on: a reference that stopped unconverged goes on from its last round when it
    is asked for again with a larger ``max_rounds``."""
    rkey = cache_key(posterior, method,
                     {k: v for k, v in settings.items() if k != "max_rounds"}, digest)
    return os.path.join(cache_dir, f"{method}-{rkey[:32]}.rounds")


def _round_file(work, k: int) -> str:
    return os.path.join(work, f"round-{k}.npz")


def _round_run_dir(work, k: int) -> str:
    """The runner's checkpoint and memory-mapped draws of round ``k`` while it runs."""
    return os.path.join(work, f"round-{k}.run")


def _save_round(work, k: int, done: dict) -> None:
    """Round ``k``'s draws and counters, written atomically; its run folder is removed."""
    os.makedirs(work, exist_ok=True)
    tmp = os.path.join(work, f"round-{k}.{os.getpid()}.tmp.npz")
    np.savez(tmp, draws=done["draws"], divergences=done["divergences"],
             grads=done["grads"], step=done["step"])
    os.replace(tmp, _round_file(work, k))
    shutil.rmtree(_round_run_dir(work, k), ignore_errors=True)


def _tidy_rounds(work) -> None:
    """Remove what a process that died left behind: half-written round files, and the run
    folders (with their memory-mapped draws) of rounds that completed."""
    if work is None or not os.path.isdir(work):
        return
    for name in os.listdir(work):
        if name.endswith(".tmp.npz"):
            os.remove(os.path.join(work, name))
        elif name.endswith(".run") and os.path.exists(
                os.path.join(work, name[:-len(".run")] + ".npz")):
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)


@contextlib.contextmanager
def _making_lock(work):
    """Hold an exclusive lock on a reference in the making (``flock`` on ``work/lock``):
    a second process asking for the same reference waits, then finds it in the cache or
    goes on from its rounds, instead of writing the same files at the same time. No lock
    without a rounds folder (cache off) or without ``fcntl`` (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if work is None or fcntl is None:
        yield
        return
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _drop_idle_rounds(work) -> None:
    """Remove a rounds folder that nobody is making (its lock is free): what a process
    that died after storing a converged reference left. A folder in use (the same rounds
    asked for with another ``max_rounds``) stays."""
    try:
        import fcntl
    except ImportError:
        return
    if work is None or not os.path.isdir(work):
        return
    with open(os.path.join(work, "lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        try:
            shutil.rmtree(work, ignore_errors=True)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_reference(path, key, ident) -> Result:
    """The reference stored at ``path`` (a cache hit)."""
    result = Result.load(path)
    if result.provenance.get("cache_key") != key:
        raise ValueError(f"cache file {path!r} does not hold key {key}; remove it")
    if not result.provenance.get("converged", False):
        warnings.warn(f"loaded MCMC reference {path!r} did not meet its convergence "
                      "criteria", RuntimeWarning, stacklevel=4)
    # the key holds the posterior's hash: a hit is this posterior's reference
    prov = dict(result.provenance, cache={"hit": True, "path": path}, **ident)
    return result.replace(provenance=prov)


def _load_round(work, k: int) -> dict | None:
    """Round ``k`` as :func:`_save_round` wrote it, or None if it has not completed."""
    path = _round_file(work, k)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {"draws": z["draws"], "divergences": int(z["divergences"]),
                "grads": int(z["grads"]), "step": float(z["step"])}


def _make_reference(posterior, method, settings, work, key, ident, progress) -> Result:
    """:func:`mcmc_reference`'s rounds (``settings`` its arguments; rounds read from and
    saved to ``work`` when it is not None)."""
    from .inference.sample import sample
    from .diagnostics import diagnose, summarize

    seed, num_chains, num_samples, num_warmup, thin, rhat_max, min_ess, max_rounds, config = (
        settings[k] for k in ("seed", "num_chains", "num_samples", "num_warmup", "thin",
                              "rhat_max", "min_ess", "max_rounds", "sampler_config"))
    with CallClock() as clock:
        draws, grads, rounds, init, divergences = None, 0, 0, None, 0
        per_round, tuned_step, rounds_loaded = num_samples, None, 0
        step_option = _tuned_step_option(method, config)
        while True:
            cfg = dict(config)
            # every round is a multiple of the first, and warmup shares the chunk length:
            # one chunk length, compiled once for the whole reference
            chunk = math.gcd(num_samples, num_warmup) if num_warmup else num_samples
            cfg.setdefault("chunk_size", chunk if chunk % thin == 0 else num_samples)
            warmup = num_warmup
            if init is not None:        # continue each chain where it stopped, unperturbed
                cfg.update(init=init, init_jitter=0.0)
                if step_option is not None and tuned_step is not None:
                    warmup = 0      # a step given in config was only where tuning began
                    cfg[step_option] = tuned_step
                elif method in _NO_TUNING and step_option is None:
                    warmup = 0
            done = None if work is None else _load_round(work, rounds)
            if done is None:
                run_dir = None if work is None else _round_run_dir(work, rounds)
                # diagnose=False: R-hat/ESS of all rounds' draws are computed below, once
                run_round = functools.partial(
                    sample, posterior, method=method, num_chains=num_chains,
                    num_samples=per_round, num_warmup=warmup, thin=thin, seed=seed + rounds,
                    progress=progress, diagnose=False, checkpoint_dir=run_dir,
                    draws_dir=run_dir, **cfg)
                try:
                    run = run_round()
                except CheckpointMismatch as err:
                    # begun under other defaults (e.g. chain_method on another platform)
                    warnings.warn(f"round {rounds} of the reference in {work!r} was begun "
                                  f"with other settings and starts again ({err})",
                                  RuntimeWarning, stacklevel=4)
                    shutil.rmtree(run_dir)
                    run = run_round()
                if run.draws is None:
                    raise ValueError(f"method {method!r} kept no draws; the reference "
                                     "needs them")
                step = np.asarray(run.diagnostics.get("step_size", np.nan), np.float64)
                done = {"draws": np.array(run.draws), "divergences": int(
                            run.diagnostics.get("divergences", 0)),
                        "grads": int(run.diagnostics.get("num_grad_evals", 0)) + int(
                            run.diagnostics.get("num_grad_evals_warmup", 0)),
                        "step": float(np.median(step)) if step.size else float("nan")}
                del run              # its memory-mapped draws: the file goes with the folder
                if work is not None:
                    _save_round(work, rounds, done)
            else:
                rounds_loaded += 1
            divergences += done["divergences"]
            draws = (done["draws"] if draws is None
                     else np.concatenate([draws, done["draws"]], axis=1))
            grads += done["grads"]
            rounds += 1
            if rounds == 1 and step_option is not None and np.isfinite(done["step"]):
                tuned_step = done["step"]
            if (work is not None and rounds < max_rounds
                    and os.path.exists(_round_file(work, rounds))):
                # the next round was made: this one neither converged nor sizes a round to
                # run, so its diagnostics (minutes for many pixels) are not needed
                continue
            diag = diagnose(draws)
            max_rhat = float(np.max(diag["rhat"]))
            min_ess_found = float(np.min(diag["ess_bulk"]))
            min_tail = float(np.min(diag["ess_tail"]))
            converged = (max_rhat < rhat_max and min_ess_found >= min_ess
                         and min_tail >= min_ess and divergences == 0)
            if converged or rounds >= max_rounds:
                break
            init = draws[:, -1]
            per_round = _next_round(draws.shape[1] * thin, cfg["chunk_size"], max_rhat,
                                    min_ess_found, min_tail, rhat_max, min_ess)
    if not converged:
        warnings.warn(f"MCMC reference not converged after {rounds} rounds: max R-hat "
                      f"{max_rhat:.4f} (need < {rhat_max}), min bulk / tail ESS "
                      f"{min_ess_found:.0f} / {min_tail:.0f} (need >= {min_ess}), "
                      f"{divergences} divergences (need 0)", RuntimeWarning, stacklevel=4)
    diagnostics = dict(diag)
    diagnostics.update(summarize(diag["ess_bulk"], diag["rhat"]))
    diagnostics["num_grad_evals"] = grads
    diagnostics["divergences"] = divergences
    diagnostics["num_compiles"] = clock.num_compiles
    prov = make_provenance(
        method, {**config, **settings}, seed=seed, dtype=posterior.dtype,
        reference="mcmc", converged=converged, rounds=rounds, max_rhat=max_rhat,
        min_ess_bulk=min_ess_found, min_ess_tail=min_tail, divergences=divergences,
        exactness=exactness(method),
        gold_standard=bool(converged and exactness(method) != "biased"),
        criteria=(f"split R-hat < {rhat_max}, bulk and tail ESS >= {min_ess} on every "
                  "pixel, no divergent transitions"),
        cache_key=key, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tuned_step_size=tuned_step, rounds_loaded=rounds_loaded, **ident)
    return Result.from_draws(draws, diagnostics=diagnostics, timings=clock.timings(),
                             provenance=prov)


@full_precision
def mcmc_reference(posterior, method: str = "nuts", *, seed: int = 0, num_chains: int = 4,
                   num_samples: int = 1000, num_warmup: int = 500, thin: int = 1,
                   rhat_max: float = 1.01, min_ess: float = 400, max_rounds: int = 8,
                   cache_dir=None, use_cache: bool = True, progress: bool = False,
                   **config) -> Result:
    """Long multi-chain reference run with convergence criteria, cached on disk.

    Runs ``uqrecon.inference.sample.sample(posterior, method, ...)``; while any pixel has
    split R-hat >= ``rhat_max``, bulk or tail ESS < ``min_ess``, or any transition was
    divergent (posteriordb's reference criteria), it runs another round, continuing each
    chain from its last state, and appends the draws. A round's length is what the
    criteria's scaling says is missing (a multiple of the compiled chunk, at most all
    previous rounds together: :func:`_next_round`); later rounds need no warmup (for
    ``gsm``/``gibbs``/``exact`` nothing is tuned; HMC, NUTS and MALA, and GSM's HMC
    moves (``hmc_moves``), keep the median of the first round's tuned step sizes;
    MCLMC/MAMS tune again). After
    ``max_rounds`` rounds it stops with a warning (the result says ``converged: False``
    in its provenance, which also holds the cache key, the rounds, the criteria and the
    method's exactness class).

    With the cache on, a reference in the making is resumable: every completed round is
    saved under ``<cache_dir>/<method>-<key>.rounds/`` and the running round checkpoints
    after every chunk, so a run that dies and is started again with the same arguments
    redoes the round's set-up and at most one chunk (``provenance['rounds_loaded']``
    counts the rounds read back). The folder goes when the reference converges and the
    cache file is written; an unconverged one writes no cache file and keeps the folder
    (its draws on disk once): the same call again reads the rounds back and diagnoses
    them, and asking again with a larger ``max_rounds`` goes on from its last round (the
    rounds' key leaves ``max_rounds`` out). A second process asking for the same
    reference meanwhile waits
    for the first (a ``flock`` on the folder, POSIX only). ``timings`` cover this call
    only.

    Args:
        posterior: the :class:`~uqrecon.models.Posterior`.
        method: the sampler (a name of :func:`uqrecon.sample`).
        seed: the run's seed (rounds derive theirs from it).
        num_chains: chains (at least 2, for R-hat).
        num_samples: draws per chain in the first round.
        num_warmup: warmup iterations of the first round.
        thin: keep every ``thin``-th draw.
        rhat_max: split R-hat bound of the criteria.
        min_ess: bulk and tail ESS bound of the criteria.
        max_rounds: at most this many rounds.
        cache_dir: cache directory (default :func:`default_cache_dir`).
        use_cache: read and write the cache (and the rounds of a reference in the
            making; without it nothing is written and nothing resumes).
        progress: show a progress bar.
        **config: options passed to the sampler.

    Returns:
        A :class:`~uqrecon.result.Result` whose provenance records ``converged``, the
        rounds (and how many were read back from disk), the criteria, the cache key and
        the exactness class.
    """
    for name, val, lo in (("num_chains", num_chains, 2), ("num_samples", num_samples, 4),
                          ("max_rounds", max_rounds, 1), ("seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"'{name}' must be an integer >= {lo}, got {val!r}")
    if not isinstance(method, str):
        raise TypeError(f"'method' must be a sampler name (str), got {type(method).__name__}")
    if not (rhat_max > 1.0 and min_ess > 0):
        raise ValueError(f"need 'rhat_max' > 1 and 'min_ess' > 0, got {rhat_max}, {min_ess}")
    settings = {"seed": seed, "num_chains": num_chains, "num_samples": num_samples,
                "num_warmup": num_warmup, "thin": thin, "rhat_max": rhat_max,
                "min_ess": min_ess, "max_rounds": max_rounds, "sampler_config": config,
                # a reference made under other float32 products is another computation
                "matmul_precision": matmul_precision()}
    ident = model_identity(posterior)      # hashes the posterior once for both uses
    key = cache_key(posterior, method, settings, ident["posterior_hash"])
    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    path = os.path.join(cache_dir, f"{method}-{key[:32]}.npz")
    work = (_rounds_dir(cache_dir, posterior, method, settings, ident["posterior_hash"])
            if use_cache else None)
    if use_cache and os.path.exists(path):
        result = _cached_reference(path, key, ident)
        if result.provenance.get("converged"):
            _drop_idle_rounds(work)
        return result
    with _making_lock(work):
        if use_cache and os.path.exists(path):     # made by another process meanwhile
            result = _cached_reference(path, key, ident)
            if result.provenance.get("converged"):
                shutil.rmtree(work, ignore_errors=True)     # this process holds its lock
            return result
        _tidy_rounds(work)
        result = _make_reference(posterior, method, settings, work, key, ident, progress)
        # only a converged reference is cached: an unconverged one keeps its rounds, which
        # the same call reads back (instead of every draw on disk twice)
        written = use_cache and result.provenance["converged"]
        if written:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npz"
            result.save(tmp)
            os.replace(tmp, path)
            shutil.rmtree(work, ignore_errors=True)
    return result.replace(provenance=dict(result.provenance,
                                          cache={"hit": False, "path": path if written else None}))


# --------------------------------------------------------------------------------------
# The one entry point
# --------------------------------------------------------------------------------------
def gold_method(posterior) -> str:
    """Name of the exact method :func:`reference` uses for ``posterior``: ``"exact"``
    (linear-Gaussian), ``"gsm"`` (one TV / l1-wavelet term, Gaussian likelihood, Gaussian
    priors otherwise, no constraint), ``"hmc"`` (smooth, up to 4096 pixels: dense
    whitening and a jittered quarter-period path, so chains never wait for each other's
    trees) or ``"nuts"`` (smooth, larger). Raises a ValueError naming the obstacle when
    none applies (e.g. a non-smooth prior with a Poisson likelihood)."""
    from .inference.samplers.gsm import check_gsm_posterior

    if posterior.gaussian_form() is not None and not posterior.is_hierarchical:
        return "exact"
    if posterior.is_smooth:
        # up to 4096 px the dense whitening makes the posterior near-isotropic, and a
        # jittered quarter-period HMC path is a cheap exact move there (a few leapfrog
        # steps a draw; NUTS builds 15-31-step trees on the same whitened target); above,
        # the low-rank whitening leaves soft directions of unknown scale, which NUTS
        # adapts to and HMC does not
        return "hmc" if math.prod(posterior.shape) <= 4096 else "nuts"
    try:
        check_gsm_posterior(posterior)
    except ValueError as err:
        raise ValueError(f"gold.reference: no exact method for this non-smooth posterior "
                         f"({err}); a biased method (myula/skrock) can be run with "
                         "mcmc_reference, and is labelled biased") from None
    return "gsm"


# GSM references of images this large add HMC moves after every sweep (option
# ``hmc_moves``). Measured (benchmarks/results/gold_tv.md, section 7): sparse-view CT, TV
# weight 10, 4 chains; min bulk ESS per second at 64x64 (15 views, 50 + 300 sweeps)
# 1.02 alone, 1.22 with 10 moves (per draw 2.2x; an exploratory run from stationary
# starts: 0.89 and 1.97); at 128x128 (30 views, 50 + 120 sweeps) 0.092 alone, 0.148 with
# 5 moves. Below 64x64 a GSM sweep (dense A^T A) costs less than one trajectory: not
# measured as a gain there.
GSM_HMC_MIN_PIXELS = 4096
GSM_HMC_MOVES = 5


def gsm_reference_options(posterior) -> dict:
    """The GSM options :func:`reference` adds for ``posterior`` (a user's own win):
    ``hmc_moves=GSM_HMC_MOVES`` from ``GSM_HMC_MIN_PIXELS`` pixels up, else none.
    Benchmarks call it to time the gold method as the library runs it.

    Args:
        posterior: the posterior whose GSM reference is meant (only its shape is read).

    Returns:
        A dict of :func:`~uqrecon.sample` options, empty below the threshold.
    """
    if int(np.prod(posterior.shape)) >= GSM_HMC_MIN_PIXELS:
        return {"hmc_moves": GSM_HMC_MOVES}
    return {}


@full_precision
def reference(posterior, *, seed: int = 0, num_chains: int = 4,
              num_samples: int | None = None, num_warmup: int | None = None,
              rhat_max: float = 1.01, min_ess: float = 400, max_rounds: int = 8,
              cache_dir=None, use_cache: bool = True, progress: bool = False,
              **config) -> Result:
    """The gold standard of ``posterior``: its exact method, run to the reference criteria.

    Args:
        posterior: any :class:`~uqrecon.models.Posterior`.
        seed: seed of the run (the same seed gives the same reference).
        num_chains, num_samples, num_warmup: MCMC settings of the first round (defaults:
            4 chains; 500 draws and 100 warmup sweeps for ``gsm``, 1000 / 500 for HMC and
            NUTS).
        rhat_max, min_ess, max_rounds: the criteria (posteriordb's: split R-hat < 1.01,
            bulk and tail ESS >= 400 on every pixel, no divergences) and the round cap.
        cache_dir, use_cache, progress: as :func:`mcmc_reference`.
        **config: options of the chosen sampler (e.g. ``tol`` for gsm, whose
            ``hmc_moves`` defaults to ``GSM_HMC_MOVES`` from 64x64 up; for an exact
            Gaussian, :func:`exact_gaussian`'s ``dense_max``, ``tol``, ``maxiter`` and
            ``keep_draws``; HMC with the dense whitening defaults to
            ``path_length=3.0`` here, see the code).

    Returns:
        A Result whose provenance holds ``gold_method``, ``exactness`` (``"exact"`` or
        ``"asymptotically exact"``), ``converged`` and ``gold_standard`` (True only when
        exact, or converged by the criteria), with the diagnostics.
    """
    method = gold_method(posterior)
    if method == "exact":   # exact_gaussian's options pass through; sampler ones do not
        opts = {k: config[k] for k in ("dense_max", "tol", "maxiter", "keep_draws")
                if k in config}
        if num_samples is not None:
            opts["num_samples"] = num_samples
        res = exact_gaussian(posterior, seed=seed, **opts)
        prov = dict(res.provenance, gold_method="exact", exactness="exact", converged=True,
                    gold_standard=True, reference="exact")
        return res.replace(provenance=prov)
    if (method == "hmc" and "num_integration_steps" not in config
            and config.get("preconditioner", "dense") == "dense"):
        # Measured on the main job's Huber-TV posterior (32x32, dense whitening at the
        # mode, 4 x 1000 draws): path pi/2 (sample()'s default, a quarter period of an
        # exactly whitened Gaussian) gave min bulk ESS 238, R-hat 1.029; path 3 (jittered
        # in [1.5, 4.5]) gave 1090 and 1.008 -- the criteria in one round, 58 s instead of
        # three rounds and 136 s. Whitening at the mode under-states the spread of a
        # non-Gaussian posterior, so the whitened target wants the longer path.
        config.setdefault("path_length", 3.0)
    if method == "gsm":
        config = {**gsm_reference_options(posterior), **config}
    if num_samples is None:
        num_samples = 500 if method == "gsm" else 1000
    if num_warmup is None:
        num_warmup = 100 if method == "gsm" else 500
    res = mcmc_reference(posterior, method, seed=seed, num_chains=num_chains,
                         num_samples=num_samples, num_warmup=num_warmup, rhat_max=rhat_max,
                         min_ess=min_ess, max_rounds=max_rounds, cache_dir=cache_dir,
                         use_cache=use_cache, progress=progress, **config)
    return res.replace(provenance=dict(res.provenance, gold_method=method))

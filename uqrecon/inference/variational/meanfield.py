"""Mean-field (fully factorised) Gaussian variational inference, and the ELBO optimiser
shared by every Gaussian family.

The family is ``q = N(mu, diag(sigma^2))``. Gradients are reparameterisation
gradients (``x = mu + sigma * eps``) averaged over several Monte Carlo draws per step,
with either the analytic entropy or the sticking-the-landing estimator (Roeder et al.
2017), and Adam updates. Optimisation stops on a *smoothed* ELBO: the mean ELBO over a
window of steps is compared with the previous window's, and the run ends when it changed
by less than ``tol`` nats per pixel (per pixel, because the potential is known only up
to an additive constant, so a change relative to the ELBO itself would be arbitrary).
The returned parameters are averaged over the last window (Polyak averaging), which
removes most of the stochastic-gradient jitter from the variances.

What it captures: the posterior mean (exactly for a Gaussian target) and, for each
pixel, the *conditional* variance ``1 / H_ii``, which under-estimates the marginal
variance whenever pixels are correlated (they always are in CT/MRI). It cannot represent
correlations, multimodality or skew (e.g. from TV or positivity).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["meanfield", "GaussianFamily", "optimise_elbo", "MeanField"]


class GaussianFamily(NamedTuple):
    """A reparameterisable Gaussian family on flat vectors of length ``n``.

    ``draw(params, eps)`` maps standard normal ``eps`` of shape ``(S, noise_dim)`` to
    ``(S, n)`` draws; ``entropy(params)`` is analytic; ``log_q(params, x)`` is the log
    density of ``(S, n)`` draws (used by the sticking-the-landing estimator).
    """

    noise_dim: int
    draw: Callable
    entropy: Callable
    log_q: Callable


def _mf_draw(params, eps):
    return params["mu"] + jnp.exp(params["log_sigma"]) * eps


def _mf_entropy(params):
    n = params["mu"].shape[0]
    return jnp.sum(params["log_sigma"]) + 0.5 * n * (1.0 + math.log(2 * math.pi))


def _mf_log_q(params, x):
    z = (x - params["mu"]) * jnp.exp(-params["log_sigma"])
    n = params["mu"].shape[0]
    return (-0.5 * jnp.sum(z * z, axis=-1) - jnp.sum(params["log_sigma"])
            - 0.5 * n * math.log(2 * math.pi))


def MeanField(n: int) -> GaussianFamily:
    """The fully factorised Gaussian family on ``R^n``."""
    return GaussianFamily(n, _mf_draw, _mf_entropy, _mf_log_q)


def check_vi_args(posterior, *, num_mc, learning_rate, window, tol, max_iter, estimator,
                  init, init_scale, lr_decay, num_decays):
    """Shared argument checks (outside jit) for the VI methods."""
    if not getattr(posterior, "is_smooth", False):
        raise ValueError("'posterior' has non-smooth terms (e.g. TV without smoothing); "
                         "variational inference needs a smooth potential: use a smoothed "
                         "prior")
    for name, val in (("num_mc", num_mc), ("window", window), ("max_iter", max_iter)):
        if not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"'{name}' must be a positive integer, got {val!r}")
    for name, val in (("learning_rate", learning_rate), ("tol", tol),
                      ("init_scale", init_scale)):
        if not np.isfinite(val) or val <= 0:
            raise ValueError(f"'{name}' must be a positive number, got {val!r}")
    if not 0 < lr_decay < 1:
        raise ValueError(f"'lr_decay' must lie in (0, 1), got {lr_decay!r}")
    if not isinstance(num_decays, (int, np.integer)) or num_decays < 0:
        raise ValueError(f"'num_decays' must be a non-negative integer, got {num_decays!r}")
    if estimator not in ("analytic", "stl"):
        raise ValueError(f"'estimator' must be 'analytic' or 'stl', got {estimator!r}")
    if init is not None and tuple(np.shape(init)) != tuple(posterior.shape):
        raise ValueError(f"'init' has shape {tuple(np.shape(init))}, expected "
                         f"{tuple(posterior.shape)}")


def optimise_elbo(potential: Callable, family: GaussianFamily, params: dict,
                  key: jax.Array, *, num_mc: int = 8, learning_rate: float = 1e-2,
                  window: int = 200, tol: float = 1e-3, max_iter: int = 20000,
                  estimator: str = "analytic", lr_decay: float = 0.3, num_decays: int = 2,
                  progress: bool = False) -> tuple[dict, dict]:
    """Maximise the ELBO of ``family`` against ``exp(-potential)`` with Adam.

    ``potential`` maps a flat vector to a scalar. Steps run in compiled chunks of
    ``window`` steps. The smoothed ELBO (mean over a chunk) has *plateaued* when it
    moved by less than ``tol`` nats per pixel plus twice the standard error of the
    difference (so Monte Carlo noise alone never counts as progress). On a plateau the
    learning rate is multiplied by ``lr_decay`` (at most ``num_decays`` times, which
    shrinks the stochastic-gradient noise ball); a plateau at the last learning rate is
    convergence. Returns ``(params averaged over the last window, info)`` where ``info``
    has the ELBO trace (one value per step), ``num_steps``, ``converged`` and
    ``num_grad_evals`` (gradients of the potential).
    """
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    vpot = jax.vmap(potential)
    n = family.draw(params, jnp.zeros((1, family.noise_dim), params["mu"].dtype)).shape[1]

    def loss(p, eps):
        x = family.draw(p, eps)
        energy = jnp.mean(vpot(x))
        if estimator == "stl":
            # path-derivative estimator: the score term of log q is dropped
            return energy + jnp.mean(family.log_q(jax.lax.stop_gradient(p), x))
        return energy - family.entropy(p)

    def step(carry, k):
        p, state, avg, i = carry
        eps = jax.random.normal(k, (num_mc, family.noise_dim), p["mu"].dtype)
        g = jax.grad(loss)(p, eps)
        # report the ELBO with the analytic entropy whatever the gradient estimator
        elbo = family.entropy(p) - jnp.mean(vpot(family.draw(p, eps)))
        upd, state = opt.update(g, state, p)
        p = optax.apply_updates(p, upd)
        avg = jax.tree.map(lambda a, b: a + (b - a) / (i + 1), avg, p)
        return (p, state, avg, i + 1), elbo

    @jax.jit
    def chunk(p, state, k):
        keys = jax.random.split(k, window)
        (p, state, avg, _), elbos = jax.lax.scan(step, (p, state, p, 0), keys)
        return p, state, avg, elbos

    state = opt.init(params)
    trace, means, ses = [], [], []
    converged, decays, lr = False, 0, learning_rate
    avg = params
    t0 = time.perf_counter()
    bar = _progress(progress, max_iter)
    while len(trace) < max_iter:
        key, sub = jax.random.split(key)
        params, state, avg, elbos = chunk(params, state, sub)
        elbos = np.asarray(elbos, np.float64)
        if not np.all(np.isfinite(elbos)):
            raise FloatingPointError("ELBO became non-finite; lower 'learning_rate' or "
                                     "start closer to the posterior ('init', 'init_scale')")
        trace.extend(elbos.tolist())
        means.append(float(elbos.mean()))
        ses.append(float(elbos.std(ddof=1) / math.sqrt(window)) if window > 1 else 0.0)
        if bar is not None:
            bar.update(window)
            bar.set_postfix(elbo=f"{means[-1]:.5g}", lr=f"{lr:.2g}")
        if len(means) >= 2 and abs(means[-1] - means[-2]) <= (
                tol * n + 2.0 * math.hypot(ses[-1], ses[-2])):
            if decays >= num_decays:
                converged = True
                break
            decays += 1
            lr *= lr_decay
            state.hyperparams["learning_rate"] = jnp.asarray(
                lr, state.hyperparams["learning_rate"].dtype)
            means.append(math.nan)       # compare only windows run at the same rate
            ses.append(math.nan)
    if bar is not None:
        bar.close()
    if not converged:
        warnings.warn(f"VI did not converge in max_iter={max_iter} steps (smoothed ELBO "
                      f"still changing by more than tol={tol} nats/pixel per window); "
                      "results may be inaccurate", RuntimeWarning, stacklevel=3)
    info = {"elbo_trace": np.asarray(trace), "num_steps": len(trace),
            "converged": converged, "final_elbo": float(np.mean(trace[-window:])),
            "num_grad_evals": len(trace) * num_mc, "run_s": time.perf_counter() - t0}
    return avg, info


def _progress(enabled, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="VI", leave=False)


def initial_mean(posterior, init) -> jax.Array:
    """Flat initial mean: ``init`` if given, else zeros, in the posterior dtype."""
    dtype = posterior.dtype
    if init is None:
        return jnp.zeros(math.prod(posterior.shape), dtype)
    return jnp.asarray(init, dtype).reshape(-1)


def vi_result(posterior, kind, mean, diag, factor, info, config, elapsed):
    """Package fitted Gaussian factors as a :class:`uqrecon.result.Result`."""
    from uqrecon.result import Result, make_provenance

    shape = tuple(posterior.shape)
    var = diag if factor is None else diag + jnp.sum(factor * factor, axis=1)
    gaussian = {"kind": kind, "mean": np.asarray(mean).reshape(shape),
                "diag": np.asarray(diag).reshape(shape),
                "factor": None if factor is None else np.asarray(factor)}
    diagnostics = {"num_grad_evals": info["num_grad_evals"], "converged": info["converged"],
                   "num_steps": info["num_steps"], "elbo_trace": info["elbo_trace"],
                   "final_elbo": info["final_elbo"]}
    provenance = make_provenance("meanfield" if kind == "diag" else "lowrank", config,
                                 dtype=posterior.dtype)
    timings = {"run_s": info["run_s"], "total_s": elapsed,
               "compile_s": max(elapsed - info["run_s"], 0.0)}
    return Result(mean=np.asarray(mean).reshape(shape), variance=np.asarray(var).reshape(shape),
                  diagnostics=diagnostics, timings=timings, provenance=provenance,
                  gaussian=gaussian)


def meanfield(posterior, key: jax.Array, *, init=None, init_scale: float = 0.1,
              num_mc: int = 8, learning_rate: float = 1e-2, window: int = 200,
              tol: float = 1e-3, max_iter: int = 20000, estimator: str = "analytic",
              lr_decay: float = 0.3, num_decays: int = 2, progress: bool = False):
    """Mean-field Gaussian VI of ``posterior``; returns a Gaussian ``Result``.

    ``init`` (image) starts the mean (zeros by default; a MAP estimate speeds things up),
    ``init_scale`` the standard deviations. ``num_mc`` reparameterised draws per step,
    ``estimator`` 'analytic' (analytic entropy) or 'stl' (sticking the landing).
    Convergence: see the module docstring (``window``, ``tol``, ``max_iter``).
    """
    check_vi_args(posterior, num_mc=num_mc, learning_rate=learning_rate, window=window,
                  tol=tol, max_iter=max_iter, estimator=estimator, init=init,
                  init_scale=init_scale, lr_decay=lr_decay, num_decays=num_decays)
    t0 = time.perf_counter()
    shape = tuple(posterior.shape)
    mu = initial_mean(posterior, init)
    params = {"mu": mu, "log_sigma": jnp.full_like(mu, math.log(init_scale))}
    potential = lambda v: posterior.smooth_potential(v.reshape(shape))  # noqa: E731
    params, info = optimise_elbo(potential, MeanField(mu.shape[0]), params, key,
                                 num_mc=num_mc, learning_rate=learning_rate, window=window,
                                 tol=tol, max_iter=max_iter, estimator=estimator,
                                 lr_decay=lr_decay, num_decays=num_decays,
                                 progress=progress)
    config = {"init_scale": init_scale, "num_mc": num_mc, "learning_rate": learning_rate,
              "window": window, "tol": tol, "max_iter": max_iter, "estimator": estimator,
              "lr_decay": lr_decay, "num_decays": num_decays,
              "init": None if init is None else "given"}
    return vi_result(posterior, "diag", params["mu"], jnp.exp(2 * params["log_sigma"]),
                     None, info, config, time.perf_counter() - t0)

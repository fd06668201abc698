"""Benchmark: a split Gibbs sampler (AXDA) for TV / l1-wavelet posteriors, measured
against the exact ``gsm`` sampler. Not part of the package: measured here to mix worse
than ``gsm`` *and* to be biased (results in ``benchmarks/results/split_gibbs.md``).

Run: ``JAX_PLATFORMS=cpu python benchmarks/split_gibbs.py [--size 32 --views 20
--samples 1000 --rho 1.0 0.25 0.1]`` (``rho`` in units of ``1/weight``).

Asymptotically exact data augmentation (Vono, Dobigeon & Chainais, IEEE TSP 2019) splits
the non-smooth term off the image with an auxiliary ``z`` close to ``K x``:

``pi_rho(x, z) ∝ exp(-tau/2 ||A x - y||^2 - (x-m)^T Q (x-m)/2 - sum_g w_g ||z_g||
- ||z - K x||^2 / (2 rho^2))``.

Its x-marginal is the posterior with the penalty's density convolved with ``N(0, rho^2)``
in ``K``'s range: **not the posterior** for any ``rho > 0`` (the bias vanishes as
``rho -> 0``, the mixing slows down as ``rho^-2``). The payoff is the image step: given
``z`` the image is Gaussian with the *fixed* precision
``P = tau A^T A + Q + K^T K / rho^2``, which a circulant model captures well (for TV,
``K^T K = D^T D`` is a Laplacian; for orthonormal wavelets ``K^T K = I``), so each
sweep costs tens of CG iterations where the exact GSM sampler's heterogeneous latent
weights cost ~100-150 at 128x128 (``benchmarks/results/gold_tv.md``).

A sweep (every conditional drawn exactly, so the chain's invariant law is ``pi_rho``):

1. ``lam | z``: the Gaussian-scale-mixture precisions of ``z``'s Laplace factors,
   inverse-Gaussian (as in :mod:`.gsm`);
2. ``z | x, lam``: independent per group, Gaussian with precision ``1/rho^2 + lam_g``
   and mean ``(K x)_g / (1 + rho^2 lam_g)``;
3. ``x | z``: the Metropolis-corrected perturbation-optimisation move of :mod:`.gsm`
   (:func:`~.gsm.mh_po_move`), exact whatever the CG tolerance.

TV's structurally zero differences (the Neumann boundary's last difference along each
axis) are not split: their ``z`` is held at zero, as ``K x`` is.

The sampler kernel below follows the package's Sampler protocol and runs through the
package's runner (``uqrecon.inference.runner.run_chains``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.linalg import circulant_solve
from uqrecon.operators.base import operator_dataclass
from uqrecon.inference.samplers.base import Sampler, StepInfo, check_positive
from uqrecon.inference.samplers.gsm import (GSM_SYMBOL_FLOOR, _dense_normal, _difference_symbol, _gaussian_priors,
                  _lam_apply, _normal, _penalty, _psf, _real_differences,
                  check_gsm_posterior, inverse_gaussian, mh_po_move)

__all__ = ["SplitParams", "SplitState", "SPLIT", "split_params", "default_rho",
           "check_split_posterior"]


def check_split_posterior(post):
    """Raise a ValueError naming what is unsupported: the requirements of ``gsm``, and
    no hyperpriors (their conjugate conditionals given ``x`` are those of the unsplit
    model, not of ``pi_rho``).

    Args:
        post: the posterior.
    """
    check_gsm_posterior(post)
    if post.hyperpriors:
        raise ValueError("method='split' does not sample hyperparameters (their "
                         "conditionals are not those of the split model); fix "
                         f"{sorted(post.hyperpriors)} or use method='gsm'")


def default_rho(post) -> float:
    """A splitting scale: ``0.25 / w`` for the penalty weight ``w`` (a quarter of the
    Laplace factor's scale).

    Args:
        post: the posterior.

    Returns:
        ``rho`` as a Python float.
    """
    return 0.25 / float(jnp.max(jnp.asarray(_penalty(post).weight)))


@operator_dataclass
class SplitParams:
    """The posterior, the splitting scale ``rho``, the circulant symbol of the image
    step's fixed precision, CG tolerance and cap, and the dense ``A^T A`` on small images
    (else None)."""

    posterior: object
    rho: jax.Array
    symbol: jax.Array
    tol: jax.Array
    maxiter: jax.Array
    normal: jax.Array | None = None


class SplitState(NamedTuple):
    x: jax.Array
    z: jax.Array               # the split variable, in K's range
    anchor: jax.Array          # CG start (2 * anchor), frozen after warmup (mh_po_move)
    adapting: jax.Array
    log_accept: jax.Array
    cg_iterations: jax.Array


def _mask(post, dtype):
    """1 where ``z`` is split, 0 on TV's structurally zero differences."""
    from uqrecon.models.tv import TV

    if isinstance(_penalty(post), TV):
        return jnp.asarray(_real_differences(tuple(post.shape)), dtype)
    return jnp.ones((), dtype)


def _precision(post, rho, v, normal):
    """``P v = tau A^T A v + Q v + K^T K v / rho^2``."""
    K = _penalty(post).analysis_operator
    ata = (_normal(post.likelihood, v) if normal is None
           else (normal @ v.reshape(-1)).reshape(v.shape).astype(v.dtype))
    out = post.likelihood.noise_precision.astype(v.dtype) * ata
    for p in _gaussian_priors(post):
        out = out + p.precision(v)
    return out + K.adjoint(K(v)).astype(v.dtype) / rho ** 2


def _rhs(post, z, rho, dtype):
    """``b = tau A^T y + Q m + K^T z / rho^2``."""
    lik = post.likelihood
    K = _penalty(post).analysis_operator
    b = lik.noise_precision.astype(dtype) * jnp.real(lik.operator.adjoint(lik.data)).astype(dtype)
    for p in _gaussian_priors(post):
        b = b + p.precision(jnp.broadcast_to(p.mean, post.shape).astype(dtype))
    return b + K.adjoint(z).astype(dtype) / rho ** 2


def _perturbation(key, post, rho, dtype):
    """``xi ~ N(0, P)``: ``sqrt(tau) A^T e1 + sum L^T e2 + K^T e3 / rho``."""
    lik = post.likelihood
    A, K = lik.operator, _penalty(post).analysis_operator
    k1, k2, k3, k4 = jax.random.split(key, 4)
    e1 = jax.random.normal(k1, A.range_shape, dtype)
    if jnp.issubdtype(jnp.dtype(A.range_dtype), jnp.complexfloating):
        e1 = e1 + 1j * jax.random.normal(k4, A.range_shape, dtype)
    xi = jnp.sqrt(lik.noise_precision.astype(dtype)) * jnp.real(A.adjoint(e1)).astype(dtype)
    for i, p in enumerate(_gaussian_priors(post)):
        L = p.precision_sqrt
        xi = xi + L.adjoint(jax.random.normal(jax.random.fold_in(k2, i), L.range_shape,
                                              dtype)).astype(dtype)
    return xi + K.adjoint(jax.random.normal(k3, K.range_shape, dtype)).astype(dtype) / rho


def _draw_lam(key, term, z, dtype):
    """``lam | z``: inverse-Gaussian precisions of the Laplace factors of ``z``, zero where
    the weight is zero."""
    mag = term.magnitude(z).astype(dtype)
    w = jnp.broadcast_to(term.weights(dtype), mag.shape)
    tiny = jnp.asarray(1e-30 if dtype == jnp.float64 else 1e-20, dtype)
    lam = inverse_gaussian(key, jnp.where(w > 0, w, 1.0) / jnp.maximum(mag, tiny),
                           jnp.where(w > 0, w * w, 1.0))
    big = jnp.asarray(jnp.finfo(dtype).max ** 0.5, dtype)
    return jnp.where(w > 0, jnp.minimum(lam, big), 0.0)


def _draw_z(key, post, x, lam, rho, dtype):
    """``z | x, lam``: per component ``N((K x) / (1 + rho^2 lam), 1 / (1/rho^2 + lam))``."""
    term = _penalty(post)
    kx = term.analysis_operator(x).astype(dtype)
    shrink = 1.0 / (1.0 + rho ** 2 * _lam_apply(term, lam, jnp.ones_like(kx)))
    std = rho * jnp.sqrt(shrink)
    z = shrink * kx + std * jax.random.normal(key, kx.shape, dtype)
    return z * _mask(post, dtype)


def split_init(key, x, params):
    z = _penalty(params.posterior).analysis_operator(x).astype(x.dtype)
    zero = jnp.zeros((), x.dtype)
    return SplitState(x, z * _mask(params.posterior, x.dtype), x, jnp.bool_(True), zero,
                      jnp.int32(0))


def split_finish_warmup(state, params):
    return state._replace(anchor=state.x, adapting=jnp.bool_(False))


def split_step(key, state, params):
    """One sweep: ``lam | z``, ``z | x, lam``, then the exact move of ``x | z``."""
    x, dtype = state.x, state.x.dtype
    post = params.posterior
    rho = params.rho.astype(dtype)
    k_lam, k_z, k_xi, k_u = jax.random.split(key, 4)
    lam = _draw_lam(k_lam, _penalty(post), state.z, dtype)
    z = _draw_z(k_z, post, x, lam, rho, dtype)
    precond = circulant_solve(params.symbol.astype(dtype))
    anchor = jnp.where(state.adapting, x, state.anchor)
    x, log_ratio, iters = mh_po_move(
        k_u, x, anchor, lambda v: _precision(post, rho, v, params.normal),
        _rhs(post, z, rho, dtype), _perturbation(k_xi, post, rho, dtype), precond,
        params.tol, params.maxiter)
    info = StepInfo(acceptance=jnp.exp(jnp.minimum(log_ratio, 0.0)).astype(dtype),
                    num_grad_evals=(iters + 3).astype(jnp.int32),
                    divergent=iters >= params.maxiter,
                    step_size=rho)
    return SplitState(x, z, state.anchor, state.adapting, log_ratio,
                      iters.astype(jnp.int32)), info


def split_position(state, params):
    return state.x


def split_trace(state, params):
    return {"cg_iterations": state.cg_iterations}


SPLIT = Sampler(init=split_init, step=split_step, position=split_position,
                finish_warmup=split_finish_warmup, trace=split_trace)


def split_params(post, rho: float, tol: float, maxiter: int,
                 dense_max: int) -> tuple[SplitParams, int]:
    """Measure the circulant model of the image step's fixed precision and, up to
    ``dense_max`` pixels, form ``A^T A`` densely.

    Args:
        post: the posterior (checked by :func:`check_split_posterior`).
        rho: the splitting scale (> 0).
        tol: CG relative residual of the image move (exactness does not depend on it).
        maxiter: CG iteration cap.
        dense_max: largest image (pixels) whose ``A^T A`` is formed densely.

    Returns:
        ``(params, operator products spent)``.
    """
    from uqrecon.models.wavelets import WaveletL1

    check_split_posterior(post)
    rho = check_positive("rho", rho)
    dtype = jnp.dtype(post.dtype)
    shape = tuple(post.shape)
    n = int(np.prod(shape))
    op = post.likelihood.operator
    normal, spent = None, 1
    if n <= dense_max and hasattr(op, "to_dense") and not jnp.issubdtype(
            jnp.dtype(op.range_dtype), jnp.complexfloating):
        normal = _dense_normal(op.to_dense(dtype)).astype(dtype)
        spent += min(n, int(np.prod(op.range_shape)))
    delta = jnp.zeros(shape, dtype).at[tuple(s // 2 for s in shape)].set(1.0)
    sym = jnp.real(jnp.fft.fftn(jnp.fft.ifftshift(_psf(post, delta)))).astype(dtype)
    sym = jnp.maximum(sym, GSM_SYMBOL_FLOOR * jnp.max(sym))
    tau = post.likelihood.noise_precision.astype(dtype)
    k_sym = (jnp.ones(shape, dtype) if isinstance(_penalty(post), WaveletL1)
             else _difference_symbol(shape, dtype))
    symbol = tau * sym + k_sym / rho ** 2
    for p in _gaussian_priors(post):
        symbol = symbol + jnp.mean(p.precision(jnp.ones(shape, dtype)))
    params = SplitParams(post, jnp.asarray(rho, dtype), symbol, jnp.asarray(tol, dtype),
                         jnp.asarray(int(maxiter), jnp.int32), normal)
    return params, spent


# --------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------
def _summary(draws, cg, acceptance, wall, ref=None):
    """Diagnostics of a run from its draws ``(chains, S, *shape)``; against the gsm
    reference's draws when given."""
    from uqrecon.uq.diagnostics import ess_bulk, rhat
    d = np.asarray(draws)
    row = {"wall_s": round(wall, 1), "min_ess_bulk": round(float(ess_bulk(d).min()), 1),
           "max_rhat": round(float(rhat(d).max()), 3),
           "cg_per_sweep": round(float(np.mean(cg)), 1),
           "acceptance": round(float(np.mean(acceptance)), 3)}
    if ref is not None:
        r = np.asarray(ref)
        row["std_ratio"] = round(float(np.mean(d.std(axis=(0, 1)) / r.std(axis=(0, 1)))), 3)
        row["rel_mean_error"] = round(float(
            np.linalg.norm(d.mean(axis=(0, 1)) - r.mean(axis=(0, 1)))
            / np.linalg.norm(r.mean(axis=(0, 1)))), 4)
    return row


def main():
    import argparse
    import json
    import time
    import warnings

    import uqrecon
    from uqrecon.inference.runner import run_chains
    from uqrecon.models import TV, Gaussian, Posterior
    from uqrecon.problems import sparse_view_ct

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--rho", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    ap.add_argument("--out", default="benchmarks/results/split_gibbs.json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    p = sparse_view_ct(args.size, args.views)
    post = Posterior(Gaussian(p.operator, p.data, sigma=p.sigma),
                     TV((args.size, args.size), 10.0))
    rows = {}
    t = time.perf_counter()
    ref = uqrecon.sample(post, method="gsm", num_chains=4, num_warmup=100,
                         num_samples=args.samples, seed=0, progress=False)
    rows["gsm (exact)"] = _summary(ref.draws, ref.diagnostics["cg_iterations"],
                                   ref.diagnostics["acceptance_rate"],
                                   time.perf_counter() - t)
    print(rows, flush=True)
    for frac in args.rho:
        rho = frac / 10.0
        t = time.perf_counter()
        params, _ = split_params(post, rho, 1e-4, 1000, 2048)
        init = jnp.broadcast_to(jnp.zeros(post.shape, jnp.float32), (4, *post.shape))
        init = init + 0.1 * jax.random.normal(jax.random.PRNGKey(2), init.shape)
        out = run_chains(SPLIT, params, init, jax.random.PRNGKey(1), num_warmup=100,
                         num_samples=args.samples, progress=False)
        rows[f"split rho={frac:g}/w"] = _summary(out.draws, out.traces["cg_iterations"],
                                                 out.acceptance_rate,
                                                 time.perf_counter() - t, ref.draws)
        print(rows, flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

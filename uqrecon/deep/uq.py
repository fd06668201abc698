"""Deep-learning uncertainty: MC dropout, deep ensembles and the aleatoric/epistemic split.

Both methods produce ``S`` Gaussian predictions per image, ``N(m_s, v_s)`` (``v_s = 0``
without a heteroscedastic head). Their equally weighted mixture is the predictive
distribution; by the law of total variance its variance splits exactly into

    epistemic = Var_s[m_s]        (population variance over passes / members)
    aleatoric = mean_s[v_s]       (mean predicted variance)

:func:`predict` turns them into the same :class:`uqrecon.result.Result` every other
method returns, with the maps of the split in ``Result.diagnostics``.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.result import Result, make_provenance
from uqrecon.uq import metrics as M

from .train import _raw_key

__all__ = ["Predictions", "METHODS", "mc_dropout_predictions", "ensemble_predictions",
           "deterministic_predictions",
           "variance_split", "entropy_split", "qoi_variance", "to_result", "predict",
           "evaluate", "ood_ratio"]

METHODS = ("mc_dropout", "ensemble", "deterministic")


class Predictions(NamedTuple):
    """``S`` Gaussian predictions: ``means`` ``(S, *batch, H, W)``, ``variances`` same or None."""

    means: jax.Array
    variances: jax.Array | None


def _batched(x0, y):
    x0 = jnp.asarray(x0)
    if x0.ndim != 3:
        raise ValueError(f"argument 'x0' must have shape (batch, H, W), got {x0.shape}")
    if y is not None and jnp.shape(y)[0] != x0.shape[0]:
        raise ValueError(f"argument 'y' has batch size {jnp.shape(y)[0]}, 'x0' has "
                         f"{x0.shape[0]}")
    return x0, y


def _to_predictions(mean, log_var):
    return Predictions(mean, None if log_var is None else jnp.exp(log_var))


def _mc(model, num_passes, params, x0, y, key):
    one = lambda k: model.apply({"params": params}, x0, y, deterministic=False,
                                rngs={"dropout": k})
    return _to_predictions(*jax.vmap(one)(jax.random.split(key, num_passes)))


def _ensemble(model, params, x0, y):
    one = lambda p: model.apply({"params": p}, x0, y, deterministic=True)
    return _to_predictions(*jax.vmap(one)(params))


def _single(model, params, x0, y):
    mean, log_var = model.apply({"params": params}, x0, y, deterministic=True)
    return _to_predictions(mean[None], None if log_var is None else log_var[None])


# compiled once per model (and number of passes), reused across calls
_mc_jit = jax.jit(_mc, static_argnums=(0, 1))
_ensemble_jit = jax.jit(_ensemble, static_argnums=0)
_single_jit = jax.jit(_single, static_argnums=0)


def mc_dropout_predictions(model, params, x0, y, key, num_passes: int = 32) -> Predictions:
    """``num_passes`` forward passes with dropout kept on, vectorised with ``vmap``.

    Pass ``s`` uses dropout key ``split(key, num_passes)[s]``: the same key gives the
    same passes.

    Args:
        model: the flax network.
        params: its parameters.
        x0: network inputs, ``(batch, H, W)``.
        y: measured data, ``(batch, *data_shape)``.
        key: JAX PRNG key of the dropout masks.
        num_passes: number of passes.

    Returns:
        A :class:`Predictions`, one entry per pass.
    """
    if int(num_passes) < 1:
        raise ValueError(f"argument 'num_passes' must be >= 1, got {num_passes}")
    x0, y = _batched(x0, y)
    return _mc_jit(model, int(num_passes), params, x0, y, _raw_key(key))


def ensemble_predictions(model, params, x0, y) -> Predictions:
    """One deterministic pass of each ensemble member (``params`` with a leading member axis).

    Args:
        model: the flax network.
        params: member parameters stacked along a leading axis.
        x0: network inputs, ``(batch, H, W)``.
        y: measured data, ``(batch, *data_shape)``.

    Returns:
        A :class:`Predictions`, one entry per member.
    """
    x0, y = _batched(x0, y)
    return _ensemble_jit(model, params, x0, y)


def deterministic_predictions(model, params, x0, y) -> Predictions:
    """The network with dropout off, as a one-member ensemble (aleatoric variance only).

    Args:
        model: the flax network.
        params: its parameters.
        x0: network inputs, ``(batch, H, W)``.
        y: measured data, ``(batch, *data_shape)``.

    Returns:
        A :class:`Predictions` with one member.
    """
    x0, y = _batched(x0, y)
    return _single_jit(model, params, x0, y)


def variance_split(means, variances=None) -> dict:
    """Law-of-total-variance split over axis 0 (passes or members).

    Returns ``mean``, ``epistemic`` (population variance of the means), ``aleatoric``
    (mean of the predicted variances; zeros when ``variances`` is None) and
    ``total = epistemic + aleatoric``, the variance of the equally weighted mixture.

    Args:
        means: predicted means ``(S, ...)``.
        variances: predicted variances ``(S, ...)`` (None: zeros).

    Returns:
        A dict with ``mean``, ``epistemic``, ``aleatoric`` and ``total``.
    """
    means = jnp.asarray(means)
    mean = jnp.mean(means, axis=0)
    epistemic = jnp.mean((means - mean) ** 2, axis=0)
    aleatoric = (jnp.zeros_like(mean) if variances is None
                 else jnp.mean(jnp.asarray(variances), axis=0))
    return {"mean": mean, "epistemic": epistemic, "aleatoric": aleatoric,
            "total": epistemic + aleatoric}


def entropy_split(means, variances) -> dict:
    """Entropy form of the split for Gaussian predictions (per pixel, in nats).

    ``total_entropy`` is the entropy of the moment-matched Gaussian ``N(mean, total)``,
    ``aleatoric_entropy = mean_s 0.5 log(2 pi e v_s)`` and ``mutual_information`` their
    difference (>= 0 by Jensen). Because a Gaussian has the largest entropy for its
    variance, this is an upper bound on the mixture's exact mutual information.

    Args:
        means: predicted means ``(S, ...)``.
        variances: predicted variances ``(S, ...)``.

    Returns:
        A dict with ``total_entropy``, ``aleatoric_entropy``, ``mutual_information`` (and
        related terms).
    """
    if variances is None:
        raise ValueError("argument 'variances' is required: the entropy split needs "
                         "predicted (aleatoric) variances from a heteroscedastic model")
    split = variance_split(means, variances)
    c = jnp.log(2 * jnp.pi * jnp.e)
    total = 0.5 * (c + jnp.log(split["total"]))
    aleatoric = jnp.mean(0.5 * (c + jnp.log(jnp.asarray(variances))), axis=0)
    return {"total_entropy": total, "aleatoric_entropy": aleatoric,
            "mutual_information": total - aleatoric}


def _one_image_means(predictions: Predictions) -> jax.Array:
    """The ``(S, H, W)`` means of one image's ``S`` predictions, or a clear error."""
    means = jnp.asarray(predictions.means)
    if means.ndim != 3:
        raise ValueError(f"argument 'predictions' must hold one image, means of shape "
                         f"(S, H, W), got {means.shape}")
    return means


def qoi_variance(qoi: Callable, predictions: Predictions, key, num_inner: int = 64) -> dict:
    """Epistemic and aleatoric variance of a quantity of interest ``f(x)`` by double sampling.

    ``predictions`` hold one image's ``S`` Gaussians (``means`` of shape ``(S, H, W)``).
    For each ``s``, ``num_inner`` draws ``x = m_s + sqrt(v_s) z`` give ``f`` values
    ``f_sk``; then ``epistemic = Var_s[mean_k f_sk]`` and ``aleatoric = mean_s Var_k f_sk``
    (population variances, so ``total``, the variance of all ``f_sk``, is their exact
    sum). The finite inner sample inflates ``epistemic`` by about
    ``(1 - 1/S) aleatoric / num_inner``; ``epistemic_debiased`` subtracts that estimate.

    Args:
        qoi: the quantity of interest ``f(x)``, image -> scalar.
        predictions: one image's predictions.
        key: JAX PRNG key.
        num_inner: draws per member.

    Returns:
        A dict with ``epistemic``, ``aleatoric``, ``total`` and ``epistemic_debiased``.
    """
    means = _one_image_means(predictions)
    if int(num_inner) < 2:
        raise ValueError(f"argument 'num_inner' must be >= 2, got {num_inner}")
    return _qoi_jit(qoi, int(num_inner), means, predictions.variances, _raw_key(key))


def _qoi(qoi, num_inner, means, variances, key):
    num_outer = means.shape[0]
    sds = jnp.zeros_like(means) if variances is None else jnp.sqrt(variances)

    def outer(args):
        m, sd, k = args
        z = jax.random.normal(k, (num_inner, *m.shape), m.dtype)
        return jax.vmap(qoi)(m + sd * z)

    f = jax.lax.map(outer, (means, sds, jax.random.split(key, num_outer)))  # (S, K, ...)
    inner_mean = jnp.mean(f, axis=1)
    inner_var = jnp.mean((f - inner_mean[:, None]) ** 2, axis=1)
    epistemic = jnp.var(inner_mean, axis=0)
    aleatoric = jnp.mean(inner_var, axis=0)
    bias = (1 - 1 / num_outer) * jnp.mean(inner_var * num_inner / (num_inner - 1), 0) / num_inner
    return {"mean": jnp.mean(inner_mean, axis=0), "epistemic": epistemic,
            "aleatoric": aleatoric, "total": jnp.var(f.reshape(-1, *f.shape[2:]), axis=0),
            "epistemic_debiased": epistemic - bias}


_qoi_jit = jax.jit(_qoi, static_argnums=(0, 1))


def to_result(predictions: Predictions, key, *, method: str, num_draws: int = 128,
              config: dict | None = None, timings: dict | None = None) -> Result:
    """A :class:`Result` for one image from its ``S`` Gaussian predictions.

    ``mean``/``variance`` are the mixture's (``variance = epistemic + aleatoric``). The
    draws sample the predictive mixture, ``ceil(num_draws / S)`` from each member's
    Gaussian (shape ``(1, S * ceil(num_draws / S), H, W)``), so interval quantiles are
    resolved even for one or a few members; without an aleatoric part the draws are
    the ``S`` means themselves. ``diagnostics`` hold ``epistemic_variance``,
    ``aleatoric_variance`` and, with a heteroscedastic head, the entropy split maps.

    Args:
        predictions: one image's predictions.
        key: JAX PRNG key of the draws.
        method: method name for the provenance.
        num_draws: number of draws kept.
        config: configuration for the provenance.
        timings: timings to record.

    Returns:
        A :class:`~uqrecon.result.Result`.
    """
    means = _one_image_means(predictions)
    if int(num_draws) < 1:
        raise ValueError(f"argument 'num_draws' must be >= 1, got {num_draws}")
    per_member = -(-int(num_draws) // means.shape[0])
    key = _raw_key(key)
    split = variance_split(means, predictions.variances)
    if predictions.variances is None:
        draws = means
    else:
        z = jax.random.normal(key, (per_member, *means.shape), means.dtype)
        draws = (means + jnp.sqrt(predictions.variances) * z).reshape(-1, *means.shape[1:])
    diagnostics = {"epistemic_variance": np.asarray(split["epistemic"]),
                   "aleatoric_variance": np.asarray(split["aleatoric"]),
                   "num_members": int(means.shape[0])}
    if predictions.variances is not None:
        diagnostics.update({k: np.asarray(v) for k, v in
                            entropy_split(means, predictions.variances).items()})
    provenance = make_provenance(method, config, seed=np.asarray(key).tolist(),
                                 dtype=means.dtype)
    return Result(np.asarray(split["mean"]), np.asarray(split["total"]),
                  draws=np.asarray(draws)[None], diagnostics=diagnostics,
                  timings=dict(timings or {}), provenance=provenance)


def predict(model, params, x0, y, key, *, method: str = "mc_dropout", num_passes: int = 32,
            num_draws: int = 128, aleatoric: bool = True) -> list[Result]:
    """Deep UQ for a batch of images: one :class:`Result` per image.

    ``method``: ``"mc_dropout"`` (``num_passes`` dropout passes of one network),
    ``"ensemble"`` (``params`` stacked along a leading member axis, e.g. from
    ``train(..., num_members=M)``) or ``"deterministic"`` (dropout off; only the
    heteroscedastic, aleatoric variance). The prediction runs twice: ``run_s`` is the
    second (warm) call, ``compile_s`` the first call's excess over it (0 when the
    compiled function was cached). ``num_draws`` is that of :func:`to_result`.
    ``aleatoric=False`` drops a heteroscedastic head's predicted variances, leaving the
    epistemic part alone (plain MC dropout / plain ensemble from the same network).

    Args:
        model: the flax network.
        params: its parameters.
        x0: network inputs, ``(batch, H, W)``.
        y: measured data, ``(batch, *data_shape)``.
        key: JAX PRNG key.
        method: ``'mc_dropout'``, ``'ensemble'`` or ``'deterministic'``.
        num_passes: dropout passes (``'mc_dropout'``).
        num_draws: draws kept per Result.
        aleatoric: include the heteroscedastic (aleatoric) variance.

    Returns:
        A list of :class:`~uqrecon.result.Result`, one per image.
    """
    if method not in METHODS:
        raise ValueError(f"argument 'method' must be one of {METHODS}, got {method!r}")
    if method == "mc_dropout" and int(num_passes) < 1:
        raise ValueError(f"argument 'num_passes' must be >= 1, got {num_passes}")
    if method == "deterministic" and not aleatoric:
        raise ValueError("argument 'aleatoric'=False with method='deterministic' leaves no "
                         "uncertainty at all")
    x0, y = _batched(x0, y)
    k_pred, k_draw = jax.random.split(_raw_key(key))
    if method == "mc_dropout":
        run = lambda: mc_dropout_predictions(model, params, x0, y, k_pred, num_passes)
        config = {"num_passes": int(num_passes)}
    elif method == "ensemble":
        run = lambda: ensemble_predictions(model, params, x0, y)
        config = {"num_members": int(jax.tree.leaves(params)[0].shape[0])}
    else:
        run = lambda: deterministic_predictions(model, params, x0, y)
        config = {}
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    t1 = time.perf_counter()
    preds = jax.block_until_ready(run())
    t2 = time.perf_counter()
    if not aleatoric:
        preds = Predictions(preds.means, None)
    config["aleatoric"] = bool(aleatoric and preds.variances is not None)
    timings = {"compile_s": max(t1 - t0 - (t2 - t1), 0.0), "run_s": t2 - t1,
               "batch_size": int(x0.shape[0])}
    keys = jax.random.split(k_draw, x0.shape[0])
    return [to_result(Predictions(preds.means[:, i],
                                  None if preds.variances is None else preds.variances[:, i]),
                      keys[i], method=method, num_draws=num_draws,
                      config=config, timings=timings)
            for i in range(x0.shape[0])]


def evaluate(result: Result, truth, level: float = 0.9, levels=None) -> dict:
    """Test-set figures of one result against the true image.

    PSNR/SSIM of the mean, coverage of the ``level`` intervals (``coverage_90`` for 0.9),
    the calibration curve ``(levels, coverage)`` and its calibration error (mean
    ``|coverage(a) - a|`` over the levels), Pearson/Spearman correlation of
    ``|mean - truth|`` with the std, and the sparsification curve with its AUSE, all
    from :mod:`uqrecon.uq.metrics` (one definition everywhere).

    Args:
        result: a Result for one image.
        truth: the true image.
        level: credible level of the coverage entry.
        levels: levels of the calibration curve (None: the default grid).

    Returns:
        A dict of figures.
    """
    truth = np.asarray(truth)
    if truth.shape != result.mean.shape:
        raise ValueError(f"argument 'truth' has shape {truth.shape}, result has "
                         f"{result.mean.shape}")
    lo, hi = result.interval(level)
    err = np.abs(result.mean - truth)
    corr = M.error_uncertainty_correlation(err, result.std)
    sparse = M.sparsification(err, result.std)
    calibration = M.calibration_curve(result, truth, levels)
    return {"psnr": M.psnr(result.mean, truth), "ssim": M.ssim(result.mean, truth),
            f"coverage_{round(100 * level)}": M.coverage(lo, hi, truth),
            "calibration": calibration,
            "calibration_error": float(np.mean(np.abs(calibration[1] - calibration[0]))),
            "pearson_error_std": corr["pearson"], "spearman_error_std": corr["spearman"],
            "ause": sparse["ause"], "sparsification": sparse}


def ood_ratio(result: Result, mask) -> float:
    """Mean epistemic std inside ``mask`` over the mean outside it (OOD check).

    A ratio above 1 means the method's epistemic uncertainty rises on a structure (e.g.
    a bright insert from :func:`uqrecon.deep.data.with_insert`) absent from training.

    Args:
        result: a deep-UQ Result (with an epistemic variance).
        mask: boolean mask of the structure.

    Returns:
        The ratio, a float.
    """
    mask = np.asarray(mask, bool)
    if mask.shape != result.mean.shape or mask.all() or not mask.any():
        raise ValueError(f"argument 'mask' must be a boolean image of shape "
                         f"{result.mean.shape} with pixels both inside and outside")
    if "epistemic_variance" not in result.diagnostics:
        raise ValueError("argument 'result' has no 'epistemic_variance' diagnostic")
    std = np.sqrt(np.asarray(result.diagnostics["epistemic_variance"], np.float64))
    return float(std[mask].mean() / std[~mask].mean())

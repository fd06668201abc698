"""MCMC diagnostics vectorised over pixels, and a Welford running mean/variance.

R-hat and ESS follow Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021),
"Rank-normalization, folding, and localization", exactly as ArviZ implements them
(``arviz.rhat(method='rank')``, ``arviz.ess(method='bulk'|'tail')``): split chains,
rank-normalise with Blom's offset, FFT autocovariances, Geyer's initial positive and
monotone sequences. Here every pixel is processed at once (chunked over pixels to bound
memory) instead of ArviZ's Python loop per scalar. :func:`rhat`, :func:`ess_bulk` and
:func:`ess_tail` run in numpy (float64, on the host); :func:`diagnose`, which the samplers
call, has a second backend with the same estimators: ``"jax"``, one jitted function on
the default device, float32 unless x64 is on, its default when that device is a GPU/TPU
(for 256 chains x 300 draws x 4096 pixels the host needs ~30 s on 2 cores at ~0.1 us
per value, an H200 0.2 s). The numpy backend runs pixel chunks on one thread per core
(at most 8).

Inputs are draws of shape ``(chains, draws, *shape)``; outputs have the image ``shape``.

The Welford functions are pure JAX and jit-able; the sampler runner keeps one state per
chain and merges them with Chan's parallel formula (:func:`welford_combine`).

Layer: below inference (the runner and ``sample`` compute these when they make a
Result), beside :mod:`uqrecon.result`; imports no other uqrecon module.
``uqrecon.uq.diagnostics`` is the same module under its user-facing path.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy import special as jsp_special
from scipy import fft as sp_fft
from scipy import special

__all__ = [
    "rhat",
    "ess_bulk",
    "ess_tail",
    "ess",
    "diagnose",
    "add_diagnostics",
    "summarize",
    "check_convergence",
    "ConvergenceWarning",
    "WelfordState",
    "welford_init",
    "welford_update",
    "welford_combine",
    "welford_merge",
    "welford_finalize",
]

# Elements (chains x draws x pixels) in the chunks processed at once: bounds peak memory
# (~13 x this many float64 values) for 1e5-pixel images with thousands of draws.
_CHUNK_ELEMENTS = 2_000_000
# At most this many threads diagnose host chunks at once (one per core below it)
_MAX_THREADS = 8
# The device backend's chunk (~10 intermediate copies of it live at once): 1.3 GB in
# float32. Every chunk has this many pixels (the last one padded), so one compilation.
_DEVICE_CHUNK_ELEMENTS = 1 << 25
_BACKENDS = ("numpy", "jax")
# Per-thread FFT worker count of :func:`_autocov`: one inside :func:`_apply`'s pool
_FFT = threading.local()


class ConvergenceWarning(UserWarning):
    """Issued by :func:`check_convergence` when R-hat or ESS indicate a problem."""


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------
def _check_draws(a, name="draws", min_chains=1):
    """Raise a ValueError/TypeError naming ``name`` unless ``a`` (a numpy or JAX array)
    is real with shape ``(chains >= min_chains, draws >= 4, ...)``."""
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
            or a.dtype == bool):
        raise TypeError(f"'{name}' must be a real array, got dtype {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"'{name}' must have shape (chains, draws, *shape), got {a.shape}")
    if a.shape[0] < min_chains:
        raise ValueError(f"'{name}' needs at least {min_chains} chains, got {a.shape[0]}")
    if a.shape[1] < 4:
        raise ValueError(f"'{name}' needs at least 4 draws per chain, got {a.shape[1]}")


def _chunks(num_pixels: int, chains: int, draws: int, elements: int):
    step = max(1, elements // max(1, chains * draws))
    for start in range(0, num_pixels, step):
        yield slice(start, min(start + step, num_pixels))


def _split(x: np.ndarray) -> np.ndarray:
    """Split each chain in half (middle draw dropped when odd): ``(P, 2C, N//2)``."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=1)


def _sorted_ranks(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks along the last axis (``scipy.stats.rankdata(method='average')``)
    and the sorted rows.

    One unstable argsort per row; ties get the mean of their group's positions, found
    with running max/min over the sorted row (group starts forward, group ends backward),
    so rows with ties cost no more than rows without. (Before, tied rows went through
    ``rankdata``: the folded draws ``|x - median|`` of the tail R-hat tie in every pixel
    when the median is the midpoint of two draws, and that fallback was a quarter of
    :func:`diagnose`'s time.) The sorted rows serve :func:`_all`'s quantiles and median,
    which would otherwise partition every row again.
    """
    p, m = flat.shape
    order = np.argsort(flat, axis=1)
    srt = np.take_along_axis(flat, order, axis=1)
    pos = np.arange(m)
    new_group = np.ones((p, m), dtype=bool)
    new_group[:, 1:] = srt[:, 1:] != srt[:, :-1]
    start = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    group_end = np.ones((p, m), dtype=bool)
    group_end[:, :-1] = new_group[:, 1:]
    end = np.minimum.accumulate(np.where(group_end, pos, m - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((p, m))
    np.put_along_axis(ranks, order, 0.5 * (start + end) + 1.0, axis=1)
    return ranks, srt


def _ranks(flat: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (:func:`_sorted_ranks` without the sort)."""
    return _sorted_ranks(flat)[0]


def _normal_scores(ranks: np.ndarray, m: int) -> np.ndarray:
    """Blom's normal scores ``ndtri((r - 3/8) / (m + 1/4))`` of average ranks among
    ``m`` values. Average ranks are multiples of 1/2 in ``[1, m]``, so the ``2m - 1``
    possible scores are computed once and looked up (the same values, bit for bit, as
    ``ndtri`` applied to every element; the table is what makes rank-normalisation
    cheap: ``ndtri`` of every draw was a tenth of :func:`diagnose`'s time)."""
    table = special.ndtri((np.arange(2, 2 * m + 1) / 2.0 - 0.375) / (m + 0.25))
    return table[(2.0 * ranks).astype(np.intp) - 2]


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each pixel over all its chains and draws (average ranks, Blom)."""
    return _z_scale_sorted(x)[0]


def _z_scale_sorted(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_z_scale` and each pixel's values sorted, ``(P, C*N)``."""
    p, c, n = x.shape
    ranks, srt = _sorted_ranks(x.reshape(p, c * n))
    return _normal_scores(ranks, c * n).reshape(p, c, n), srt


def _quantile_sorted(srt: np.ndarray, prob: float) -> np.ndarray:
    """``np.quantile(row, prob)`` (method 'linear') of every sorted row, bit for bit:
    numpy's virtual index ``(m - 1) * prob`` and its two-sided interpolation
    (``numpy.lib._function_base_impl._lerp``), without partitioning the rows again."""
    m = srt.shape[1]
    virtual = (m - 1) * prob
    lo = min(max(math.floor(virtual), 0), m - 1)
    hi = min(lo + 1, m - 1)
    gamma = virtual - lo
    a, b = srt[:, lo], srt[:, hi]
    diff = b - a
    return (b - diff * (1 - gamma)) if gamma >= 0.5 else (a + diff * gamma)


# --------------------------------------------------------------------------------------
# Core estimators on (pixels, chains, draws) float64 arrays
# --------------------------------------------------------------------------------------
def _rhat_core(x: np.ndarray) -> np.ndarray:
    """Classic R-hat (Gelman-Rubin with within/between variances) per pixel."""
    n = x.shape[-1]
    chain_mean = x.mean(axis=-1)
    within = np.var(x, axis=-1, ddof=1).mean(axis=-1)
    between = n * np.var(chain_mean, axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _autocov(x: np.ndarray) -> np.ndarray:
    """FFT autocovariance along the last axis (biased, divided by n), lags 0..n-1."""
    n = x.shape[-1]
    m = sp_fft.next_fast_len(2 * n)
    xc = x - x.mean(axis=-1, keepdims=True)
    workers = getattr(_FFT, "workers", -1)
    f = sp_fft.rfft(xc, n=m, axis=-1, workers=workers)
    return sp_fft.irfft(f * np.conjugate(f), n=m, axis=-1, workers=workers)[..., :n] / n


def _ess_core(x: np.ndarray) -> np.ndarray:
    """ESS per pixel of ``(P, C, N)`` values (already split), as ArviZ's ``_ess``.

    Geyer's initial positive sequence truncates the autocorrelation sum at the first
    non-positive pair sum; the initial monotone sequence is a running minimum of the
    pair sums. ArviZ's sequential loop is reproduced with array operations.
    """
    p, c, n = x.shape
    acov = _autocov(x)                                   # (P, C, N)
    chain_mean = x.mean(axis=-1)
    mean_var = acov[:, :, 0].mean(axis=-1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + np.var(chain_mean, axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]  # (P, N)
    rho[:, 0] = 1.0

    kbound = max((n - 3) // 2, 0)                        # last pair the loop may reach
    pairs = rho[:, : 2 * kbound + 2].reshape(p, kbound + 1, 2)
    s = pairs.sum(axis=-1)                               # S_k, k = 0..kbound
    nonpos = s <= 0
    first = np.where(nonpos.any(axis=1), nonpos.argmax(axis=1), kbound + 1)
    k_last = np.minimum(first, kbound)                   # last pair the loop computed
    # pairs 0..k_last-1 all kept, made monotone (running minimum of the pair sums)
    smono = np.minimum.accumulate(s, axis=1)
    keep = np.arange(kbound + 1)[None, :] < k_last[:, None]
    body = np.where(keep, smono, 0.0).sum(axis=1)
    # the even lag of pair k_last counts once: if its pair was kept, or if it is > 0
    idx = np.arange(p)
    even_last = rho[idx, 2 * k_last]
    s_last = s[idx, k_last]
    last = np.where((s_last >= 0) | (even_last > 0), even_last, 0.0)
    tau = -1.0 + 2.0 * body + last
    total = c * n
    tau = np.maximum(tau, 1.0 / np.log10(total))
    out = total / tau
    out = np.where(np.isnan(rho).any(axis=1), np.nan, out)
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    return np.where(constant, float(total), out)


def _rhat_rank(x, z_split=None, median=None):
    """``z_split``: ``_z_scale(_split(x))``, ``median``: each pixel's median of
    ``_split(x)``, when the caller already has them."""
    sx = _split(x)
    bulk = _rhat_core(_z_scale(sx) if z_split is None else z_split)
    median = np.median(sx, axis=(1, 2)) if median is None else median
    folded = np.abs(sx - median[:, None, None])
    tail = _rhat_core(_z_scale(folded))
    return np.maximum(bulk, tail)


def _ess_bulk(x):
    return _ess_core(_z_scale(_split(x)))


def _ess_tail_at(x, quantiles):
    """Tail ESS: the smallest ESS of the indicators ``x <= q`` over ``quantiles``, each
    an array with one value per pixel."""
    out = None
    for q in quantiles:
        ind = (x <= q[:, None, None]).astype(np.float64)
        e = _ess_core(_split(ind))
        out = e if out is None else np.minimum(out, e)
    return out


def _ess_tail(x, prob=(0.05, 0.95)):
    flat = x.reshape(x.shape[0], -1)
    return _ess_tail_at(x, [np.quantile(flat, pr, axis=1) for pr in prob])


def _all(x):
    """ess_bulk, ess_tail and rhat of one chunk: one sort of the split draws serves the
    bulk rank normalisation, the median the tail R-hat folds about and (for an even
    number of draws per chain, when the split draws are all the draws) the tail ESS's
    quantiles; the same values, bit for bit, as the three functions separately."""
    p, c, n = x.shape
    sx = _split(x)
    z, srt = _z_scale_sorted(sx)
    if n % 2 == 0:
        quantiles = [_quantile_sorted(srt, pr) for pr in (0.05, 0.95)]
    else:                                   # the split dropped each chain's middle draw
        flat = x.reshape(p, -1)
        quantiles = [np.quantile(flat, pr, axis=1) for pr in (0.05, 0.95)]
    if c >= 2:
        m = srt.shape[1]        # 2 c (n // 2): even, so the median is a mean of two
        rh = _rhat_rank(x, z, (srt[:, m // 2 - 1] + srt[:, m // 2]) / 2)
    else:
        rh = np.full(p, np.nan)
    return _ess_core(z), _ess_tail_at(x, quantiles), rh


def _apply(fn, draws, name, min_chains=1, num_out=1):
    """Run ``fn`` on pixel chunks of ``draws``; NaN for pixels with any NaN draw.

    Chunks are converted to float64 one at a time (not the whole array first) and run
    on a pool of threads, one per available core up to ``_MAX_THREADS``: sorting, FFTs
    and numpy's array operations release the GIL, so a 2-core machine diagnoses ~2x
    faster. The chunks in flight together hold ``_CHUNK_ELEMENTS`` values, whatever
    the thread count (each chunk's intermediates are ~13x its values: ~200 MB for
    ``_CHUNK_ELEMENTS``). Each chunk's FFTs run single-threaded (no nested
    oversubscription)."""
    a = np.asarray(draws)
    _check_draws(a, name, min_chains)
    c, n, shape = a.shape[0], a.shape[1], a.shape[2:]
    p = math.prod(shape)
    flat = a.reshape(c, n, p)
    outs = [np.empty(p) for _ in range(num_out)]
    threads = min(_num_threads(), _MAX_THREADS)
    slices = list(_chunks(p, c, n, max(1, _CHUNK_ELEMENTS // threads)))
    workers = min(threads, len(slices))

    def one(sl):
        x = np.moveaxis(flat[:, :, sl], 2, 0).astype(np.float64)
        _FFT.workers = 1 if workers > 1 else -1
        res = fn(x)
        bad = np.isnan(x).any(axis=(1, 2))
        for o, r in zip(outs, res if num_out > 1 else (res,)):
            o[sl] = np.where(bad, np.nan, r)

    if workers > 1:
        pool = ThreadPoolExecutor(workers)
        try:
            list(pool.map(one, slices))     # list(): re-raises a chunk's exception
        finally:                            # on an error or ^C, drop the queued chunks
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for sl in slices:
            one(sl)
    outs = [o.reshape(shape) for o in outs]
    return tuple(outs) if num_out > 1 else outs[0]


def _num_threads() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                  # not Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------
# The same estimators in JAX, for draws that live on an accelerator
# --------------------------------------------------------------------------------------
def _split_j(x):
    half = x.shape[-1] // 2
    return jnp.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=1)


def _ranks_j(flat):
    """:func:`_ranks` on the device (tie groups by running max/min over the sorted row)."""
    p, m = flat.shape
    order = jnp.argsort(flat, axis=1)
    srt = jnp.take_along_axis(flat, order, axis=1)
    pos = jnp.arange(m)
    edge = jnp.ones((p, 1), dtype=bool)
    new_group = jnp.concatenate([edge, srt[:, 1:] != srt[:, :-1]], axis=1)
    start = lax.cummax(jnp.where(new_group, pos, 0), axis=1)
    group_end = jnp.concatenate([new_group[:, 1:], edge], axis=1)
    end = lax.cummin(jnp.where(group_end, pos, m - 1), axis=1, reverse=True)
    values = (0.5 * (start + end) + 1.0).astype(flat.dtype)
    return jnp.zeros_like(flat).at[jnp.arange(p)[:, None], order].set(values)


def _z_scale_j(x):
    p, c, n = x.shape
    ranks = _ranks_j(x.reshape(p, c * n))
    return jsp_special.ndtri((ranks - 0.375) / (c * n + 0.25)).reshape(p, c, n)


def _rhat_core_j(x):
    n = x.shape[-1]
    within = jnp.var(x, axis=-1, ddof=1).mean(axis=-1)
    between = n * jnp.var(x.mean(axis=-1), axis=-1, ddof=1)
    return jnp.sqrt((between / within + n - 1) / n)


def _ess_core_j(x):
    """:func:`_ess_core` on the device, line for line."""
    p, c, n = x.shape
    m = int(sp_fft.next_fast_len(2 * n))
    xc = x - x.mean(axis=-1, keepdims=True)
    f = jnp.fft.rfft(xc, n=m, axis=-1)
    acov = jnp.fft.irfft(f * jnp.conjugate(f), n=m, axis=-1)[..., :n] / n
    mean_var = acov[:, :, 0].mean(axis=-1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + jnp.var(x.mean(axis=-1), axis=-1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
    rho = rho.at[:, 0].set(1.0)
    kbound = max((n - 3) // 2, 0)
    s = rho[:, : 2 * kbound + 2].reshape(p, kbound + 1, 2).sum(axis=-1)
    nonpos = s <= 0
    first = jnp.where(nonpos.any(axis=1), jnp.argmax(nonpos, axis=1), kbound + 1)
    k_last = jnp.minimum(first, kbound)
    keep = jnp.arange(kbound + 1)[None, :] < k_last[:, None]
    body = jnp.where(keep, lax.cummin(s, axis=1), 0.0).sum(axis=1)
    even_last = jnp.take_along_axis(rho, 2 * k_last[:, None], axis=1)[:, 0]
    s_last = jnp.take_along_axis(s, k_last[:, None], axis=1)[:, 0]
    last = jnp.where((s_last >= 0) | (even_last > 0), even_last, 0.0)
    total = c * n
    tau = jnp.maximum(-1.0 + 2.0 * body + last, 1.0 / np.log10(total))
    out = jnp.where(jnp.isnan(rho).any(axis=1), jnp.nan, total / tau)
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    return jnp.where(constant, float(total), out)


def _all_j_body(x):
    """``(ess_bulk, ess_tail, rhat)`` of a ``(pixels, chains, draws)`` device chunk."""
    sx = _split_j(x)
    z = _z_scale_j(sx)
    tail = None
    flat = x.reshape(x.shape[0], -1)
    for pr in (0.05, 0.95):
        q = jnp.quantile(flat, pr, axis=1)
        e = _ess_core_j(_split_j((x <= q[:, None, None]).astype(x.dtype)))
        tail = e if tail is None else jnp.minimum(tail, e)
    if x.shape[1] >= 2:
        folded = jnp.abs(sx - jnp.median(sx, axis=(1, 2), keepdims=True))
        rh = jnp.maximum(_rhat_core_j(z), _rhat_core_j(_z_scale_j(folded)))
    else:
        rh = jnp.full(x.shape[0], jnp.nan, x.dtype)
    return _ess_core_j(z), tail, rh


@jax.jit
def _all_j(chunk):
    """:func:`_all_j_body` of a ``(chains, draws, pixels)`` chunk, NaN where a pixel has
    a NaN draw (the transpose happens here, chunk by chunk, not on the whole array)."""
    x = jnp.moveaxis(chunk, 2, 0)
    bad = jnp.isnan(x).any(axis=(1, 2))
    return tuple(jnp.where(bad, jnp.nan, o) for o in _all_j_body(x))


def _diagnose_device(draws):
    """:func:`diagnose`'s three arrays by :func:`_all_j`, in equal pixel chunks: each is
    sliced from the draws where they are (host or device) and moved to the device alone,
    so the device holds one chunk and its intermediates, not the draws; the last chunk
    is padded with copies of its first pixel, so every chunk reuses one executable."""
    if not hasattr(draws, "dtype"):
        draws = np.asarray(draws)
    _check_draws(draws)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    c, n, shape = draws.shape[0], draws.shape[1], tuple(draws.shape[2:])
    p = math.prod(shape)
    flat = draws.reshape(c, n, p)
    step = max(1, min(p, _DEVICE_CHUNK_ELEMENTS // (c * n)))
    outs = []
    # no matrix products here: a fixed precision only keeps one compiled executable
    # whether or not the caller runs under linalg.full_precision
    with jax.default_matmul_precision("highest"):
        for start in range(0, p, step):
            chunk = jnp.asarray(flat[:, :, start:start + step], dtype)
            width = chunk.shape[2]
            if width < step:
                chunk = jnp.concatenate(
                    [chunk, jnp.broadcast_to(chunk[:, :, :1], (c, n, step - width))], axis=2)
            outs.append([np.asarray(o[:width], dtype=np.float64) for o in _all_j(chunk)])
    return tuple(np.concatenate([o[k] for o in outs]).reshape(shape) if outs
                 else np.zeros(shape) for k in range(3))


def _backend(backend):
    if backend is None:
        return "numpy" if jax.default_backend() == "cpu" else "jax"
    if backend not in _BACKENDS:
        raise ValueError(f"'backend' must be one of {_BACKENDS} or None, got {backend!r}")
    return backend


# --------------------------------------------------------------------------------------
# Public diagnostics
# --------------------------------------------------------------------------------------
def rhat(draws) -> np.ndarray:
    """Rank-normalised split R-hat per pixel (max of bulk and folded-tail R-hat).

    ``draws``: ``(chains >= 2, draws >= 4, *shape)``. Matches ``arviz.rhat(method='rank')``.

    Args:
        draws: draws of shape ``(chains, draws, *shape)``.

    Returns:
        Image-shaped array.
    """
    return _apply(_rhat_rank, draws, "draws", min_chains=2)


def ess_bulk(draws) -> np.ndarray:
    """Rank-normalised split bulk ESS per pixel; matches ``arviz.ess(method='bulk')``.

    Args:
        draws: draws of shape ``(chains, draws, *shape)``.

    Returns:
        Image-shaped array.
    """
    return _apply(_ess_bulk, draws, "draws")


def ess_tail(draws, prob=(0.05, 0.95)) -> np.ndarray:
    """Tail ESS per pixel: min ESS of the indicators ``x <= q`` at the 5 % and 95 %
    quantiles; matches ``arviz.ess(method='tail')``.

    Args:
        draws: draws of shape ``(chains, draws, *shape)``.
        prob: the two tail quantile levels.

    Returns:
        Image-shaped array.
    """
    prob = tuple(float(v) for v in np.atleast_1d(prob))
    if len(prob) == 1:
        prob = (prob[0], 1 - prob[0])
    if len(prob) != 2 or not all(0 < v < 1 for v in prob):
        raise ValueError(f"'prob' must be one or two probabilities in (0, 1), got {prob}")
    return _apply(lambda x: _ess_tail(x, prob), draws, "draws")


def ess(draws, method: str = "bulk") -> np.ndarray:
    """ESS per pixel, ``method`` in ``'bulk'``, ``'tail'``.

    Args:
        draws: draws of shape ``(chains, draws, *shape)``.
        method: ``'bulk'`` or ``'tail'``.

    Returns:
        Image-shaped array.
    """
    if method == "bulk":
        return ess_bulk(draws)
    if method == "tail":
        return ess_tail(draws)
    raise ValueError(f"'method' must be 'bulk' or 'tail', got {method!r}")


def diagnose(draws, backend: str | None = None) -> dict:
    """``{'ess_bulk', 'ess_tail', 'rhat'}`` per pixel (``rhat`` is NaN for one chain).

    With the numpy backend, the same values as the three functions separately (which
    always run in numpy), computed in one pass over the draws.

    Args:
        draws: draws of shape ``(chains, draws, *shape)``.
        backend: ``"numpy"`` (host, float64), ``"jax"`` (default device, float32 unless
            x64 is on: ESS within ~1e-5 relative of numpy's, R-hat within ~5e-4, where
            folded draws tie or not at float32 resolution) or None: ``"jax"`` when the
            default device is an accelerator, else ``"numpy"``.

    Returns:
        A dict with keys ``ess_bulk``, ``ess_tail``, ``rhat``, each image-shaped (float64
        numpy arrays).
    """
    if _backend(backend) == "jax":
        eb, et, rh = _diagnose_device(draws)
        return {"ess_bulk": eb, "ess_tail": et, "rhat": rh}
    eb, et, rh = _apply(_all, draws, "draws", num_out=3)
    return {"ess_bulk": eb, "ess_tail": et, "rhat": rh}


def add_diagnostics(result):
    """Copy of ``result`` with ``ess_bulk``, ``ess_tail`` and ``rhat`` computed from its
    draws added to (and overriding) its diagnostics.

    Args:
        result: a Result with draws.

    Returns:
        A new Result.
    """
    if getattr(result, "draws", None) is None:
        raise ValueError("add_diagnostics needs a 'result' with draws")
    return result.replace(diagnostics={**result.diagnostics, **diagnose(result.draws)})


def summarize(ess_bulk=None, rhat=None) -> dict:
    """Scalar summary: min/median ESS and max/median R-hat over pixels (NaN ignored).

    Args:
        ess_bulk: bulk ESS per pixel (None: omitted).
        rhat: R-hat per pixel (None: omitted).

    Returns:
        A dict of floats (``ess_bulk_min``, ``ess_bulk_median``, ``rhat_max``,
        ``rhat_median``).
    """
    out = {}
    for name, arr in (("ess_bulk", ess_bulk), ("rhat", rhat)):
        if arr is None:
            continue
        a = np.asarray(arr, dtype=np.float64)
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            stats_ = dict(min=np.nan, median=np.nan, max=np.nan)
        else:
            stats_ = dict(min=float(finite.min()), median=float(np.median(finite)),
                          max=float(finite.max()))
        if name == "ess_bulk":
            out["ess_bulk_min"], out["ess_bulk_median"] = stats_["min"], stats_["median"]
        else:
            out["rhat_max"], out["rhat_median"] = stats_["max"], stats_["median"]
    return out


def check_convergence(ess_bulk=None, rhat=None, *, rhat_threshold: float = 1.01,
                      min_ess: float = 100.0) -> bool:
    """Warn (``ConvergenceWarning``) if any R-hat > ``rhat_threshold`` or the minimum
    bulk ESS < ``min_ess`` (Vehtari et al. 2021 recommend 1.01 and 100 for 4 chains).
    Returns True when no warning was issued.

    Args:
        ess_bulk: bulk ESS per pixel (None: not checked).
        rhat: R-hat per pixel (None: not checked).
        rhat_threshold: largest acceptable R-hat.
        min_ess: smallest acceptable minimum bulk ESS.

    Returns:
        True when no warning was issued.
    """
    ok = True
    summary = summarize(ess_bulk, rhat)
    if rhat is not None:
        r = np.asarray(rhat, dtype=np.float64)
        bad = int(np.sum(r > rhat_threshold))
        if bad:
            ok = False
            warnings.warn(f"R-hat > {rhat_threshold} for {bad} of {r.size} pixels "
                          f"(max {summary['rhat_max']:.4f}): chains have not mixed",
                          ConvergenceWarning, stacklevel=2)
    if ess_bulk is not None:
        m = summary["ess_bulk_min"]
        if not m >= min_ess:
            ok = False
            warnings.warn(f"minimum bulk ESS {m:.1f} < {min_ess}: too few effective draws "
                          "for reliable estimates", ConvergenceWarning, stacklevel=2)
    return ok


# --------------------------------------------------------------------------------------
# Welford running mean / variance (JAX, jit-able)
# --------------------------------------------------------------------------------------
class WelfordState(NamedTuple):
    """Running count, mean and sum of squared deviations ``m2`` (image-shaped)."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def welford_init(shape, dtype=jnp.float32) -> WelfordState:
    """Empty running statistics for arrays of ``shape``.

    Args:
        shape: shape of one draw.
        dtype: dtype of the statistics.

    Returns:
        A :class:`WelfordState` with count 0.
    """
    shape = tuple(int(s) for s in shape)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


@jax.jit
def welford_combine(a: WelfordState, b: WelfordState) -> WelfordState:
    """Merge two running statistics (Chan, Golub & LeVeque's parallel formula).

    Args:
        a: running statistics.
        b: other running statistics.

    Returns:
        The merged :class:`WelfordState`.
    """
    n = a.count + b.count
    safe = jnp.where(n > 0, n, 1)
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / safe)
    m2 = a.m2 + b.m2 + delta ** 2 * (a.count * b.count / safe)
    return WelfordState(n, mean, m2)


@jax.jit
def welford_update(state: WelfordState, batch) -> WelfordState:
    """Add a batch of draws ``(n, *shape)`` (leading axis = draws) to ``state``.

    Args:
        state: running statistics.
        batch: draws ``(n, *shape)``.

    Returns:
        The updated :class:`WelfordState`.
    """
    batch = jnp.asarray(batch, state.mean.dtype)
    if batch.shape[1:] != state.mean.shape:
        raise ValueError(f"'batch' must have shape (n, *{state.mean.shape}), got {batch.shape}")
    bmean = batch.mean(axis=0)
    bstate = WelfordState(jnp.asarray(batch.shape[0], state.count.dtype), bmean,
                          jnp.sum((batch - bmean) ** 2, axis=0))
    return welford_combine(state, bstate)


def welford_merge(states: WelfordState) -> WelfordState:
    """Merge states stacked along a leading axis (e.g. one per chain) into one.

    Args:
        states: a :class:`WelfordState` whose arrays have a leading axis.

    Returns:
        The merged :class:`WelfordState`.
    """
    k = states.count.shape[0] if states.count.ndim else 0
    if k == 0:
        raise ValueError("'states' must be stacked along a leading axis (e.g. from vmap)")
    out = WelfordState(states.count[0], states.mean[0], states.m2[0])
    for i in range(1, k):
        out = welford_combine(out, WelfordState(states.count[i], states.mean[i], states.m2[i]))
    return out


def welford_finalize(state: WelfordState, ddof: int = 0):
    """``(mean, variance)``; ``variance = m2 / (count - ddof)`` (``ddof=0`` as ``np.var``).

    Args:
        state: running statistics.
        ddof: delta degrees of freedom of the variance.

    Returns:
        A pair ``(mean, variance)``.
    """
    denom = state.count - ddof
    return state.mean, state.m2 / jnp.where(denom > 0, denom, jnp.nan)

"""UQ and image-quality metrics, one definition each (DESIGN.md, "Metrics").

Array-level functions (numpy, float64 internally). Gaussian distributions are passed as
the factor dicts of :class:`uqrecon.result.Result` (``{'kind': 'diag'|'lowrank'|'dense',
'mean', 'diag', 'factor', 'cov'}``); their W2 and KL are exact, with dense ``(n, n)``
linear algebra only where no closed form or Woodbury identity avoids it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import linalg, ndimage, special, stats

from uqrecon.linalg import psd_factor
from uqrecon.gaussians import DenseGaussian, LowRankGaussian
from uqrecon.result import equal_tailed_interval, gaussian_interval, validate_gaussian
from uqrecon.uq._counts import whole_count

__all__ = [
    "relative_error",
    "psnr",
    "ssim",
    "credible_interval",
    "gaussian_interval",
    "coverage",
    "calibration_curve",
    "DEFAULT_LEVELS",
    "mse_ball_coverage",
    "error_uncertainty_correlation",
    "sparsification",
    "gaussian_w2",
    "gaussian_kl",
    "w1_empirical",
    "w1_gaussian_empirical",
    "w1_gaussian",
]

#: Levels of the calibration curve: 0.05, 0.10, ..., 0.95 and 0.99.
DEFAULT_LEVELS = np.round(np.concatenate([np.arange(0.05, 0.951, 0.05), [0.99]]), 2)

#: Pixelwise equal-tailed credible interval from draws (alias of the Result definition).
credible_interval = equal_tailed_interval


def _arr(x, name):
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"'{name}' must be a real array, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _same_shape(a, b, na, nb):
    if a.shape != b.shape:
        raise ValueError(f"'{na}' has shape {a.shape} but '{nb}' has shape {b.shape}")


# --------------------------------------------------------------------------------------
# Image quality
# --------------------------------------------------------------------------------------
def relative_error(a, b) -> float:
    """``||a - b||_2 / ||b||_2`` over all pixels (``b`` is the reference).

    Args:
        a: array.
        b: reference array.

    Returns:
        A float.
    """
    a, b = _arr(a, "a"), _arr(b, "b")
    _same_shape(a, b, "a", "b")
    nb = np.linalg.norm(b.ravel())
    if nb == 0:
        raise ValueError("relative_error: reference 'b' is all zeros")
    return float(np.linalg.norm((a - b).ravel()) / nb)


def _data_range(ref, data_range):
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    if not data_range > 0:
        raise ValueError(f"'data_range' must be > 0, got {data_range} (constant reference?)")
    return float(data_range)


def psnr(x, ref, data_range=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB; ``R`` defaults to
    ``ref.max() - ref.min()``.

    Args:
        x: image.
        ref: reference image.
        data_range: ``R`` (None: the range of ``ref``).

    Returns:
        PSNR in dB, a float.
    """
    x, ref = _arr(x, "x"), _arr(ref, "ref")
    _same_shape(x, ref, "x", "ref")
    r = _data_range(ref, data_range)
    mse = np.mean((x - ref) ** 2)
    return float(np.inf if mse == 0 else 10.0 * np.log10(r * r / mse))


def ssim(x, ref, data_range=None, sigma: float = 1.5) -> float:
    """Mean SSIM with an 11-tap Gaussian window (sigma 1.5, K1=0.01, K2=0.03), the
    setting of Wang et al. (2004); equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False)``. 2-D images.

    Args:
        x: 2-D image.
        ref: reference image.
        data_range: dynamic range (None: the range of ``ref``).
        sigma: standard deviation of the Gaussian window.

    Returns:
        Mean SSIM, a float.
    """
    x, ref = _arr(x, "x"), _arr(ref, "ref")
    _same_shape(x, ref, "x", "ref")
    truncate = 3.5
    pad = int(truncate * sigma + 0.5)
    if x.ndim != 2 or min(x.shape) < 2 * pad + 1:
        raise ValueError(f"ssim needs 2-D images of at least {2 * pad + 1} pixels a side, "
                         f"got 'x' of shape {x.shape}")
    r = _data_range(ref, data_range)
    filt = lambda im: ndimage.gaussian_filter(im, sigma, truncate=truncate, mode="reflect")  # noqa: E731
    ux, uy = filt(x), filt(ref)
    vx = filt(x * x) - ux * ux
    vy = filt(ref * ref) - uy * uy
    vxy = filt(x * ref) - ux * uy
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return float(s[pad:-pad, pad:-pad].mean())


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------
def coverage(lo, hi, truth) -> float:
    """Fraction of pixels with ``lo <= truth <= hi``.

    Args:
        lo: lower bounds.
        hi: upper bounds.
        truth: the true image.

    Returns:
        A float in [0, 1].
    """
    lo, hi, truth = _arr(lo, "lo"), _arr(hi, "hi"), _arr(truth, "truth")
    _same_shape(lo, truth, "lo", "truth")
    _same_shape(hi, truth, "hi", "truth")
    return float(np.mean((lo <= truth) & (truth <= hi)))


def _check_levels(levels):
    levels = DEFAULT_LEVELS if levels is None else np.atleast_1d(np.asarray(levels, float))
    if levels.ndim != 1 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"'levels' must be a 1-D sequence in (0, 1), got {levels}")
    return levels


def calibration_curve(result, truth, levels=None):
    """``(levels, coverage)``: coverage of ``truth`` by ``result.interval(a)`` per level.

    Args:
        result: a Result.
        truth: the true image.
        levels: credible levels in (0, 1) (None: the module's default grid).

    Returns:
        A pair ``(levels, coverage)`` of 1-D arrays.
    """
    levels = _check_levels(levels)
    truth = _arr(truth, "truth")
    if tuple(truth.shape) != tuple(result.shape):
        raise ValueError(f"'truth' has shape {truth.shape}, result has shape {result.shape}")
    if result.draws is not None:   # all quantiles in one pass over the draws
        k = levels.size
        q = result.quantile(np.concatenate([(1 - levels) / 2, (1 + levels) / 2]))
        cov = np.array([coverage(q[i], q[k + i], truth) for i in range(k)])
    else:
        cov = np.array([coverage(*result.interval(a), truth) for a in levels])
    return levels, cov


def _flat_draws(result, seed, index, num_draws):
    if result.draws is not None:
        return result.pooled_draws()
    if result.gaussian is not None:
        import jax

        return result.sample(jax.random.fold_in(jax.random.PRNGKey(seed), index), num_draws)
    raise ValueError("mse_ball_coverage needs results with 'draws' or Gaussian factors")


def mse_ball_coverage(results: Sequence, truths: Sequence, levels=None, seed: int = 0,
                      num_draws: int = 1000):
    """``(levels, coverage)`` over replicated problems: the fraction of replicates with
    ``||x_true - mean||^2`` below the ``a``-quantile of ``||draw - mean||^2``.

    Results without draws must be Gaussian; ``num_draws`` are then drawn from replicate
    ``i`` with key ``fold_in(PRNGKey(seed), i)``.

    Args:
        results: one Result per replicate.
        truths: the true image of each replicate.
        levels: credible levels in (0, 1) (None: the module's default grid).
        seed: seed of the draws taken from Gaussian results.
        num_draws: draws per Gaussian result.

    Returns:
        A pair ``(levels, coverage)`` of 1-D arrays.
    """
    levels = _check_levels(levels)
    if len(results) != len(truths) or len(results) == 0:
        raise ValueError(f"'results' and 'truths' must be non-empty and of equal length, "
                         f"got {len(results)} and {len(truths)}")
    hits = np.zeros((len(results), levels.size), bool)
    for i, (res, truth) in enumerate(zip(results, truths)):
        truth = _arr(truth, "truths")
        if truth.shape != res.shape:
            raise ValueError(f"'truths[{i}]' has shape {truth.shape}, result has {res.shape}")
        draws = _flat_draws(res, seed, i, num_draws).astype(np.float64)
        mean = res.mean.astype(np.float64)
        axes = tuple(range(1, draws.ndim))
        radii = np.sum((draws - mean) ** 2, axis=axes)
        hits[i] = np.sum((truth - mean) ** 2) <= np.quantile(radii, levels)
    return levels, hits.mean(axis=0)


# --------------------------------------------------------------------------------------
# Error vs uncertainty
# --------------------------------------------------------------------------------------
def error_uncertainty_correlation(error, uncertainty) -> dict:
    """Pearson and Spearman correlation between pixel errors (e.g. ``|mean - truth|``)
    and uncertainties (e.g. std).

    Args:
        error: pixel errors.
        uncertainty: pixel uncertainties (same shape).

    Returns:
        A dict with floats ``pearson`` and ``spearman`` (NaN when undefined).
    """
    e, u = _arr(error, "error").ravel(), _arr(uncertainty, "uncertainty").ravel()
    if e.shape != u.shape:
        raise ValueError(f"'error' and 'uncertainty' differ in size: {e.size} vs {u.size}")
    if np.ptp(e) == 0 or np.ptp(u) == 0:          # correlation undefined for constants
        return {"pearson": float("nan"), "spearman": float("nan")}
    pearson = float(np.corrcoef(e, u)[0, 1])
    spearman = float(np.corrcoef(stats.rankdata(e), stats.rankdata(u))[0, 1])
    return {"pearson": pearson, "spearman": spearman}


def sparsification(error, uncertainty, fractions=None) -> dict:
    """Sparsification curve and AUSE (Ilg et al. 2018).

    Removing the fraction ``f`` of pixels with the largest ``uncertainty`` (``floor(f n)``
    of the ``n`` pixels; ties in ``uncertainty`` keep their pixel order), the curve is
    the mean ``error`` of the remaining pixels; the oracle removes the largest errors
    instead. Both are normalised by the mean error of all pixels. AUSE is the trapezoid
    area between curve and oracle over ``fractions`` (default 0, 0.01, ..., 0.99).
    Returns ``{'fractions', 'curve', 'oracle', 'ause'}``.

    Args:
        error: pixel errors.
        uncertainty: pixel uncertainties (same shape).
        fractions: removed fractions in [0, 1) (None: 0, 0.01, ..., 0.99).

    Returns:
        A dict with ``fractions``, ``curve``, ``oracle`` and ``ause``.
    """
    e, u = _arr(error, "error").ravel(), _arr(uncertainty, "uncertainty").ravel()
    if e.shape != u.shape:
        raise ValueError(f"'error' and 'uncertainty' differ in size: {e.size} vs {u.size}")
    fr = np.arange(100) / 100.0 if fractions is None else np.asarray(fractions, float)
    if fr.ndim != 1 or not np.all((fr >= 0) & (fr < 1)):
        raise ValueError("'fractions' must be a 1-D sequence in [0, 1)")
    n = e.size
    removed = whole_count(fr * n)
    total = e.sum()
    if total == 0:
        raise ValueError("sparsification: 'error' is zero everywhere")

    def curve(order):
        cum = np.concatenate([[0.0], np.cumsum(e[order])])
        return (total - cum[removed]) / (n - removed) / (total / n)

    sp = curve(np.argsort(-u, kind="stable"))
    oracle = curve(np.argsort(-e, kind="stable"))
    ause = float(np.trapezoid(sp - oracle, fr)) if fr.size > 1 else 0.0
    return {"fractions": fr, "curve": sp, "oracle": oracle, "ause": ause}


# --------------------------------------------------------------------------------------
# Gaussian distances
# --------------------------------------------------------------------------------------
def _gauss(g, name):
    """The typed family of ``g`` (Gaussian factors or a Result), flat and float64; a
    diagonal one as low-rank with an empty factor, so the pair formulas below see two
    kinds: low-rank-plus-diagonal and dense."""
    if hasattr(g, "gaussian") and hasattr(g, "mean"):  # a Result
        if g.gaussian is None:
            raise ValueError(f"'{name}' is a Result without Gaussian factors")
        g = g.gaussian
    if not isinstance(g, Mapping) or "mean" not in g:
        raise TypeError(f"'{name}' must be Gaussian factors (dict with 'kind' and 'mean')")
    g = validate_gaussian(g, np.shape(g["mean"]))
    mean = g.mean.ravel().astype(np.float64)
    if g.kind == "dense":
        return DenseGaussian(mean, cov=g.cov.astype(np.float64))
    if g.kind == "diag_update":       # the pair formulas use its dense covariance
        return g.with_mean(mean)
    factor = g.factor if g.kind == "lowrank" else np.zeros((mean.size, 0))
    factor = factor.astype(np.float64)
    return LowRankGaussian(mean, diag=g.diag.ravel().astype(np.float64), factor=factor)


def _check_pair(g1, g2, max_dense, need_dense):
    n = g1["mean"].size
    if g2["mean"].size != n:
        raise ValueError(f"Gaussians differ in dimension: {n} vs {g2['mean'].size}")
    if need_dense and n > max_dense:
        raise ValueError(f"this pair needs dense {n}x{n} covariances, above max_dense="
                         f"{max_dense}; raise 'max_dense' if memory allows")


def gaussian_w2(g1, g2, max_dense: int = 4096) -> float:
    """2-Wasserstein distance between two Gaussians (factor dicts or Results).

    ``W2^2 = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S2^1/2 S1 S2^1/2)^1/2``; closed form
    ``sum (sqrt d1 - sqrt d2)^2`` for diagonal pairs; otherwise the trace term is the
    nuclear norm of ``A^T B`` with dense factors ``S1 = A A^T``, ``S2 = B B^T``.

    Args:
        g1: first Gaussian (factor dict or Result).
        g2: second Gaussian.
        max_dense: largest pixel count for dense covariances.

    Returns:
        The distance, a float.
    """
    g1, g2 = _gauss(g1, "g1"), _gauss(g2, "g2")
    diag_pair = all(g["kind"] == "lowrank" and g["factor"].shape[1] == 0 for g in (g1, g2))
    _check_pair(g1, g2, max_dense, not diag_pair)
    d2 = float(np.sum((g1["mean"] - g2["mean"]) ** 2))
    if diag_pair:
        d2 += float(np.sum((np.sqrt(g1["diag"]) - np.sqrt(g2["diag"])) ** 2))
    else:
        # tr (S2^1/2 S1 S2^1/2)^1/2 = nuclear norm of A^T B for any S1 = A A^T, S2 = B B^T
        a, b = _psd_factor(g1.covariance()), _psd_factor(g2.covariance())
        cross = np.sum(linalg.svdvals(a.T @ b))
        d2 += g1.trace() + g2.trace() - 2.0 * float(cross)
    return float(np.sqrt(max(d2, 0.0)))


def _psd_factor(cov):
    """``A`` with ``A A^T = cov``: :func:`uqrecon.linalg.psd_factor`."""
    return psd_factor(cov)


def _woodbury_parts(g):
    """For ``S = D + F F^T`` (D > 0): ``G = D^-1 F`` and the Cholesky factor of
    ``C = I + F^T D^-1 F``; ``S^-1 = D^-1 - G C^-1 G^T``, ``log det S = log det D +
    log det C``."""
    d, f = g["diag"], g["factor"]
    gmat = f / d[:, None]
    c = np.eye(f.shape[1]) + f.T @ gmat
    return gmat, np.linalg.cholesky(c)


def _chol_solve(lc, b):
    return linalg.cho_solve((lc, True), b)


def gaussian_kl(g1, g2, max_dense: int = 4096) -> float:
    """``KL(N1 || N2)`` between two Gaussians (factor dicts or Results), exact.

    Diagonal and low-rank-plus-diagonal covariances (with positive diagonals) use the
    Woodbury identity and the matrix determinant lemma (cost ``O(n k^2)``); dense
    covariances use Cholesky factorisations. Returns ``inf`` when ``S1`` is singular.

    Args:
        g1: first Gaussian (factor dict or Result).
        g2: second Gaussian.
        max_dense: largest pixel count for dense covariances.

    Returns:
        ``KL(N1 || N2)``, a float.
    """
    g1, g2 = _gauss(g1, "g1"), _gauss(g2, "g2")
    lowrank = all(g["kind"] == "lowrank" and np.all(g["diag"] > 0) for g in (g1, g2))
    _check_pair(g1, g2, max_dense, not lowrank)
    n = g1["mean"].size
    v = g2["mean"] - g1["mean"]
    if lowrank:
        d1, f1, d2 = g1["diag"], g1["factor"], g2["diag"]
        gm2, lc2 = _woodbury_parts(g2)
        _, lc1 = _woodbury_parts(g1)
        logdet1 = np.sum(np.log(d1)) + 2 * np.sum(np.log(np.diag(lc1)))
        logdet2 = np.sum(np.log(d2)) + 2 * np.sum(np.log(np.diag(lc2)))
        # tr(S2^-1 S1) = tr(S2^-1 D1) + tr(F1^T S2^-1 F1)
        tr = np.sum(d1 / d2) - np.trace(_chol_solve(lc2, (gm2 * d1[:, None]).T @ gm2))
        gf = gm2.T @ f1
        tr += np.sum(f1 ** 2 / d2[:, None]) - np.trace(_chol_solve(lc2, gf) @ gf.T)
        gv = gm2.T @ v
        maha = np.sum(v ** 2 / d2) - gv @ _chol_solve(lc2, gv)
    else:
        s1, s2 = g1.covariance(), g2.covariance()
        l2 = np.linalg.cholesky(s2)
        sign, logdet1 = np.linalg.slogdet(s1)
        if sign <= 0:
            return float("inf")
        logdet2 = 2 * np.sum(np.log(np.diag(l2)))
        a = linalg.solve_triangular(l2, s1, lower=True)
        a = linalg.solve_triangular(l2, a.T, lower=True)   # L2^-1 S1 L2^-T (S1 symmetric)
        tr = np.trace(a)
        w = linalg.solve_triangular(l2, v, lower=True)
        maha = w @ w
    return float(0.5 * (tr + maha - n + logdet2 - logdet1))


# --------------------------------------------------------------------------------------
# Marginal 1-Wasserstein distances (per pixel)
# --------------------------------------------------------------------------------------
_W1_CHUNK = 4_000_000


def _draws2d(x, name):
    a = _arr(x, name)
    if a.ndim < 2:
        raise ValueError(f"'{name}' must have shape (num_draws, *shape), got {a.shape}")
    return a.reshape(a.shape[0], -1), a.shape[1:]


def w1_empirical(a, b) -> np.ndarray:
    """Per-pixel W1 between the empirical marginals of draws ``a`` ``(Na, *shape)`` and
    ``b`` ``(Nb, *shape)``: ``int_0^1 |F_a^-1(u) - F_b^-1(u)| du``, exact (the sorted-
    sample formula ``mean |a_(i) - b_(i)|`` when ``Na == Nb``).

    Args:
        a: draws ``(Na, *shape)``.
        b: draws ``(Nb, *shape)``.

    Returns:
        Array of ``shape``.
    """
    a2, shape = _draws2d(a, "a")
    b2, shape_b = _draws2d(b, "b")
    if shape != shape_b:
        raise ValueError(f"'a' and 'b' differ in image shape: {shape} vs {shape_b}")
    na, nb = a2.shape[0], b2.shape[0]
    u = np.union1d(np.arange(na + 1) / na, np.arange(nb + 1) / nb)
    width = np.diff(u)
    mid = (u[:-1] + u[1:]) / 2
    ia, ib = np.floor(mid * na).astype(int), np.floor(mid * nb).astype(int)
    p = a2.shape[1]
    out = np.empty(p)
    step = max(1, _W1_CHUNK // (width.size + na + nb))
    for s in range(0, p, step):
        sa = np.sort(a2[:, s:s + step], axis=0)
        sb = np.sort(b2[:, s:s + step], axis=0)
        out[s:s + step] = width @ np.abs(sa[ia] - sb[ib])
    return out.reshape(shape)


def w1_gaussian_empirical(mean, std, draws) -> np.ndarray:
    """Per-pixel W1 between ``N(mean, std^2)`` and the empirical marginal of ``draws``
    ``(N, *shape)``, exact: on each quantile cell ``[i/N, (i+1)/N]`` the integral of
    ``|x_(i) - mean - std Phi^-1(u)|`` has a closed form in ``Phi`` and ``phi``.

    Args:
        mean: Gaussian means.
        std: Gaussian standard deviations.
        draws: draws ``(N, *shape)``.

    Returns:
        Array of ``shape``.
    """
    d2, shape = _draws2d(draws, "draws")
    mu, sd = _arr(mean, "mean"), _arr(std, "std")
    if mu.shape != shape or sd.shape != shape:
        raise ValueError(f"'mean'/'std' shapes {mu.shape}/{sd.shape} differ from the draws' "
                         f"image shape {shape}")
    if np.any(sd < 0):
        raise ValueError("'std' must be >= 0")
    n, p = d2.shape
    t = special.ndtri(np.arange(n + 1) / n)[:, None]       # cell bounds, -inf .. inf
    mu, sd = mu.reshape(-1), sd.reshape(-1)
    out = np.empty(p)
    step = max(1, _W1_CHUNK // (4 * n))
    for s in range(0, p, step):
        sl = slice(s, s + step)
        out[sl] = _w1_gauss_cells(np.sort(d2[:, sl], axis=0), mu[sl], sd[sl], t)
    return out.reshape(shape)


def _w1_gauss_cells(xs, mu, sd, t):
    """Sum over quantile cells of ``int |x_(i) - mu - sd Phi^-1(u)| du`` per column."""
    safe = np.where(sd > 0, sd, 1.0)
    c = (xs - mu) / safe                                    # (N, P) in standard units
    lo, hi = t[:-1], t[1:]
    cc = np.clip(c, lo, hi)

    def h(left, right):      # int_left^right (c - t) phi(t) dt
        return c * (special.ndtr(right) - special.ndtr(left)) + (_phi(right) - _phi(left))

    integral = (h(lo, cc) - h(cc, hi)).sum(axis=0) * safe
    degenerate = np.abs(xs - mu).mean(axis=0)               # std == 0: point mass
    return np.where(sd > 0, integral, degenerate)


def _phi(z):
    """Standard normal density (0 at +-inf)."""
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def w1_gaussian(mean1, std1, mean2, std2) -> np.ndarray:
    """Per-pixel W1 between ``N(mean1, std1^2)`` and ``N(mean2, std2^2)``:
    ``E|m + s Z|`` with ``m = mean1 - mean2``, ``s = |std1 - std2|`` (folded normal).

    Args:
        mean1: first means.
        std1: first standard deviations.
        mean2: second means.
        std2: second standard deviations.

    Returns:
        Array of the common shape.
    """
    m = _arr(mean1, "mean1") - _arr(mean2, "mean2")
    s = np.abs(_arr(std1, "std1") - _arr(std2, "std2"))
    safe = np.where(s > 0, s, 1.0)
    folded = (s * math.sqrt(2 / math.pi) * np.exp(-0.5 * (m / safe) ** 2)
              + m * (1 - 2 * special.ndtr(-m / safe)))
    return np.where(s > 0, folded, np.abs(m))

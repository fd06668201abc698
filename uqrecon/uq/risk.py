"""Downstream risk: posteriors of region-of-interest quantities and an abstention rule.

Quantities (:class:`Quantity`) are functions of the image that a reader of the scan
cares about: the mean intensity in a region (:func:`roi_mean`), the contrast of a region
against the ring around it (:func:`roi_contrast`) and the area above a threshold
(:func:`area_above`). :func:`roi_posterior` gives, for any :class:`~uqrecon.result.Result`,
each quantity's posterior mean, std, equal-tailed credible interval and draws:

* from the Result's draws when it keeps them (samplers, bootstrap, deep UQ);
* for Results with Gaussian factors, *exactly* for linear quantities (``q = w . x``:
  mean ``w . m``, variance ``w^T C w`` from the ``diag`` / ``lowrank`` / ``dense`` factors),
  and from exact Gaussian draws (``Result.sample``) for nonlinear ones;
* for deep-UQ Results (``uqrecon.deep``: ``S`` members, each a Gaussian ``N(m_s, v_s)``)
  the draws are a double sample -- a member (epistemic draw), then aleatoric noise
  around it -- laid out as ``draws[0].reshape(K, S, ...)`` (``K`` draws per member,
  member index fastest; ``diagnostics['num_members'] = S``). The quantity's variance
  then splits exactly (equal group sizes, population variances) into
  ``epistemic = Var_s mean_k q_sk`` and ``aleatoric = mean_s Var_k q_sk``.
  :func:`double_sampling` does the same from member means and variances directly.

An image-level reliability score (:func:`reliability_score`: the expected error norm
``sqrt(mean pixel variance)``, or the ROI contrast's relative std) drives an abstention
rule: flag the reconstruction when the score exceeds a threshold chosen on calibration
replicates for a target flag rate (:func:`threshold_for_flag_rate`) or a target error of
the accepted images (:func:`threshold_for_error`). :func:`evaluate_abstention` says how
often flagged images really are the bad ones (precision, recall, AUROC of the score
against ``error > cutoff``, Spearman correlation with the error, error of the accepted).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage, special, stats

from uqrecon.result import Result, equal_tailed_interval
from uqrecon.uq._counts import whole_count

__all__ = [
    "Quantity",
    "QuantityPosterior",
    "roi_mean",
    "roi_contrast",
    "area_above",
    "ring_around",
    "evaluate_quantity",
    "roi_posterior",
    "double_sampling",
    "reliability_score",
    "threshold_for_flag_rate",
    "threshold_for_error",
    "abstain",
    "auroc",
    "evaluate_abstention",
]


# --------------------------------------------------------------------------------------
# Quantities
# --------------------------------------------------------------------------------------
class Quantity(NamedTuple):
    """A scalar function of the image.

    ``weights`` set: the linear functional ``sum(weights * x)``. Otherwise ``threshold``
    set: ``pixel_area * #{pixels in region with x > threshold}``.
    """

    name: str
    weights: np.ndarray | None = None
    region: np.ndarray | None = None
    threshold: float | None = None
    pixel_area: float = 1.0

    @property
    def is_linear(self) -> bool:
        return self.weights is not None


def _mask(mask, name, shape=None) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise ValueError(f"argument '{name}' must be a boolean (or 0/1) mask")
        m = m.astype(bool)
    if m.ndim < 1:
        raise ValueError(f"argument '{name}' must be image-shaped, got a scalar")
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"argument '{name}' has shape {m.shape}, expected {tuple(shape)}")
    if not m.any():
        raise ValueError(f"argument '{name}' selects no pixel")
    return m


def ring_around(mask, width: int = 2) -> np.ndarray:
    """The pixels within ``width`` dilation steps (8-neighbourhood in 2-D) of ``mask`` but
    not in it (boolean).

    Args:
        mask: boolean mask.
        width: number of dilation steps.

    Returns:
        Boolean array of the shape of ``mask``.
    """
    m = _mask(mask, "mask")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"argument 'width' must be an integer >= 1, got {width!r}")
    return ndimage.binary_dilation(m, np.ones((3,) * m.ndim, bool), iterations=int(width)) & ~m


def roi_mean(mask, name: str = "roi_mean") -> Quantity:
    """Mean intensity in ``mask``: weights ``mask / |mask|``.

    Args:
        mask: boolean mask of the region.
        name: name of the quantity.

    Returns:
        A linear :class:`Quantity`.
    """
    m = _mask(mask, "mask")
    return Quantity(name, weights=m / m.sum(), region=m)


def roi_contrast(mask, background=None, ring_width: int = 2, name: str = "contrast") -> Quantity:
    """Mean in ``mask`` minus mean in ``background`` (default: the ring of ``ring_width``
    pixels around the mask).

    Args:
        mask: boolean mask of the region.
        background: boolean mask of the background (None: a ring).
        ring_width: width of the default ring.
        name: name of the quantity.

    Returns:
        A linear :class:`Quantity`.
    """
    m = _mask(mask, "mask")
    b = ring_around(m, ring_width) if background is None else _mask(background, "background",
                                                                   m.shape)
    if np.any(m & b):
        raise ValueError("arguments 'mask' and 'background' overlap")
    return Quantity(name, weights=m / m.sum() - b / b.sum(), region=m)


def area_above(threshold: float, region=None, pixel_area: float = 1.0, shape=None,
               name: str = "area_above") -> Quantity:
    """Area of the pixels of ``region`` (default: the whole image, ``shape`` needed) whose
    value exceeds ``threshold``, in units of ``pixel_area``.

    Args:
        threshold: intensity threshold.
        region: boolean mask (None: the whole image).
        pixel_area: area of one pixel.
        shape: image shape (needed when ``region`` is None).
        name: name of the quantity.

    Returns:
        A :class:`Quantity`.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"argument 'threshold' must be finite, got {threshold!r}")
    if not (np.isfinite(pixel_area) and pixel_area > 0):
        raise ValueError(f"argument 'pixel_area' must be > 0, got {pixel_area!r}")
    if region is None:
        if shape is None:
            raise ValueError("area_above needs argument 'region' or 'shape'")
        region = np.ones(tuple(shape), bool)
    return Quantity(name, region=_mask(region, "region"), threshold=float(threshold),
                    pixel_area=float(pixel_area))


def _check_quantities(quantities, shape) -> list:
    if isinstance(quantities, Quantity):
        quantities = [quantities]
    quantities = list(quantities)
    if not quantities or not all(isinstance(q, Quantity) for q in quantities):
        raise TypeError("argument 'quantities' must be a Quantity or a non-empty list of them")
    names = [q.name for q in quantities]
    if len(set(names)) != len(names):
        raise ValueError(f"argument 'quantities' has repeated names {names}")
    for q in quantities:
        ref = q.weights if q.is_linear else q.region
        if ref is None or ref.shape != tuple(shape):
            raise ValueError(f"quantity {q.name!r} is defined on images of shape "
                             f"{None if ref is None else ref.shape}, the images have {tuple(shape)}")
    return quantities


def evaluate_quantity(quantity: Quantity, images) -> np.ndarray:
    """The quantity on ``images`` of shape ``(..., *image_shape)``: an array ``(...)``.

    Args:
        quantity: the quantity.
        images: images ``(..., *image_shape)``.

    Returns:
        Array of the leading shape ``(...)``.
    """
    x = np.asarray(images, np.float64)
    ref = quantity.weights if quantity.is_linear else quantity.region
    k = ref.ndim
    if x.shape[x.ndim - k:] != ref.shape:
        raise ValueError(f"argument 'images' has shape {x.shape}; quantity {quantity.name!r} "
                         f"needs trailing shape {ref.shape}")
    flat = x.reshape(*x.shape[:x.ndim - k], -1)
    if quantity.is_linear:
        return flat @ quantity.weights.ravel()
    above = flat[..., quantity.region.ravel()] > quantity.threshold
    return quantity.pixel_area * above.sum(axis=-1).astype(np.float64)


# --------------------------------------------------------------------------------------
# Posterior of quantities
# --------------------------------------------------------------------------------------
class QuantityPosterior(NamedTuple):
    """Posterior summary of one quantity.

    ``method``: ``'gaussian_exact'`` (closed form from Gaussian factors), ``'draws'``
    (the Result's draws), ``'gaussian_draws'`` (exact draws from the factors) or
    ``'double_sampling'``. ``epistemic``/``aleatoric`` are variances (None unless the
    source separates them).
    """

    name: str
    mean: float
    std: float
    interval: tuple
    level: float
    draws: np.ndarray | None
    method: str
    epistemic: float | None = None
    aleatoric: float | None = None


def _check_level(level) -> float:
    if not (isinstance(level, (int, float, np.floating)) and 0 < float(level) < 1):
        raise ValueError(f"argument 'level' must be a number in (0, 1), got {level!r}")
    return float(level)


def _from_draws(q, values, level, method, split=None):
    lo, hi = equal_tailed_interval(values, level)
    ep, al = (None, None) if split is None else split
    return QuantityPosterior(q.name, float(np.mean(values)), float(np.std(values)),
                             (float(lo), float(hi)), level, values, method, ep, al)


def _gaussian_linear(q, g, level, draws):
    w = q.weights.ravel().astype(np.float64)
    mean = float(w @ g.mean.ravel().astype(np.float64))
    var = g.quadratic_form(w)
    std = math.sqrt(max(var, 0.0))
    z = special.ndtri((1 + level) / 2)
    return QuantityPosterior(q.name, mean, std, (mean - z * std, mean + z * std), level,
                             draws, "gaussian_exact")


def _member_split(result: Result, values):
    """Epistemic/aleatoric split of quantity draws laid out as uqrecon.deep stores them."""
    s = result.diagnostics.get("num_members")
    if s is None or "aleatoric_variance" not in result.diagnostics:
        return None
    s = int(s)
    if result.draws.shape[0] != 1 or values.size % s or values.size // s < 1:
        return None
    grouped = values.reshape(-1, s)                 # (draws per member, members)
    return float(np.var(grouped.mean(axis=0))), float(np.mean(grouped.var(axis=0)))


def roi_posterior(result: Result, quantities, *, level: float = 0.9, key=0,
                  num_draws: int = 2000, prefer: str = "auto") -> dict:
    """Posterior distributions of region-of-interest quantities under ``result``.

    Args:
        result: any :class:`~uqrecon.result.Result` with draws or Gaussian factors.
        quantities: a :class:`Quantity` or a list of them (distinct names).
        level: credible level of the equal-tailed interval.
        key: PRNG key or seed for draws from Gaussian factors (Results without draws).
        num_draws: number of such draws.
        prefer: ``'auto'`` (exact Gaussian closed form for linear quantities when the
            Result has Gaussian factors, else its draws), ``'draws'`` (always from
            draws, Gaussian draws if none are kept) or ``'gaussian'`` (closed form
            required for linear quantities).

    Returns:
        ``{name: QuantityPosterior}``. For deep-UQ Results (``num_members`` and
        ``aleatoric_variance`` in diagnostics) each draw-based entry carries the
        epistemic/aleatoric split of its variance.
    """
    if not isinstance(result, Result):
        raise TypeError(f"argument 'result' must be a Result, got {type(result).__name__}")
    level = _check_level(level)
    if prefer not in ("auto", "draws", "gaussian"):
        raise ValueError(f"argument 'prefer' must be 'auto', 'draws' or 'gaussian', got {prefer!r}")
    quantities = _check_quantities(quantities, result.shape)
    if result.draws is None and result.gaussian is None:
        raise ValueError("argument 'result' has neither draws nor Gaussian factors; the "
                         "posterior of a quantity needs one of them (mean and pixel "
                         "variance alone ignore correlations)")
    if prefer == "gaussian" and result.gaussian is None:
        raise ValueError("prefer='gaussian' needs a Result with Gaussian factors")
    images, source = None, None

    def draws():
        nonlocal images, source
        if images is None:
            if result.draws is not None:
                images, source = result.pooled_draws(), "draws"
            else:
                if isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)) \
                        or num_draws < 2:
                    raise ValueError(f"argument 'num_draws' must be an integer >= 2, got "
                                     f"{num_draws!r}")
                images, source = result.sample(key, int(num_draws)), "gaussian_draws"
        return images

    out = {}
    for q in quantities:
        exact = q.is_linear and result.gaussian is not None and prefer != "draws"
        if exact:
            out[q.name] = _gaussian_linear(q, result.gaussian, level,
                                           evaluate_quantity(q, draws()))
            continue
        values = evaluate_quantity(q, draws())
        split = _member_split(result, values) if source == "draws" else None
        out[q.name] = _from_draws(q, values, level, source, split)
    return out


def double_sampling(quantities, means, variances, key=0, *, num_inner: int = 64,
                    level: float = 0.9) -> dict:
    """Quantity posteriors of an equally weighted mixture of Gaussians by double sampling.

    For each member ``s`` (an epistemic draw: an ensemble member, a dropout pass) draw
    ``num_inner`` images ``m_s + sqrt(v_s) z`` (aleatoric noise), evaluate the quantity
    ``q_sk``; ``epistemic = Var_s mean_k q_sk``, ``aleatoric = mean_s Var_k q_sk`` (population
    variances, so they add up to the variance of all ``q_sk``).

    Args:
        quantities: a :class:`Quantity` or a list of them.
        means: member means ``(S, *shape)``.
        variances: member pixel variances ``(S, *shape)``, or None (no aleatoric part).
        key: numpy seed (int) for the aleatoric draws.
        num_inner: aleatoric draws per member (>= 2).
        level: credible level.

    Returns:
        ``{name: QuantityPosterior}`` with ``method='double_sampling'`` and the split.
    """
    m = np.asarray(means, np.float64)
    if m.ndim < 2 or m.shape[0] < 1:
        raise ValueError(f"argument 'means' must have shape (members, *image_shape), got {m.shape}")
    if variances is not None:
        v = np.asarray(variances, np.float64)
        if v.shape != m.shape:
            raise ValueError(f"argument 'variances' has shape {v.shape}, 'means' has {m.shape}")
        if not np.all(v >= 0):
            raise ValueError("argument 'variances' must be >= 0 (and not NaN)")
    if isinstance(num_inner, bool) or not isinstance(num_inner, (int, np.integer)) or num_inner < 2:
        raise ValueError(f"argument 'num_inner' must be an integer >= 2, got {num_inner!r}")
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise TypeError(f"argument 'key' must be an integer seed, got {type(key).__name__}")
    level = _check_level(level)
    quantities = _check_quantities(quantities, m.shape[1:])
    rng = np.random.default_rng(int(key))
    z = rng.standard_normal((int(num_inner), *m.shape))
    images = m + (0.0 if variances is None else np.sqrt(v)) * z      # (K, S, *shape)
    out = {}
    for q in quantities:
        values = evaluate_quantity(q, images)                          # (K, S)
        split = (float(np.var(values.mean(axis=0))), float(np.mean(values.var(axis=0))))
        out[q.name] = _from_draws(q, values.ravel(), level, "double_sampling", split)
    return out


# --------------------------------------------------------------------------------------
# Reliability score and abstention
# --------------------------------------------------------------------------------------
_SCORES = ("expected_error", "relative_contrast_std")


def reliability_score(result: Result, kind: str = "expected_error", quantity=None,
                      **kwargs) -> float:
    """An image-level unreliability score (larger = less trustworthy).

    Args:
        result: a :class:`~uqrecon.result.Result`.
        kind: ``'expected_error'``: the posterior expected RMS error of the mean,
            ``sqrt(mean pixel variance)`` (``E||x - mean||^2 / n`` under the Result);
            ``'relative_contrast_std'``: posterior std of ``quantity`` (a contrast) over
            its absolute posterior mean -- how well the ROI contrast is resolved.
        quantity: the :class:`Quantity` for ``'relative_contrast_std'``.
        **kwargs: passed to :func:`roi_posterior` (``key``, ``num_draws``, ``prefer``).

    Returns:
        The score (a float).
    """
    if not isinstance(result, Result):
        raise TypeError(f"argument 'result' must be a Result, got {type(result).__name__}")
    if kind == "expected_error":
        return float(np.sqrt(np.mean(result.variance.astype(np.float64))))
    if kind == "relative_contrast_std":
        if not isinstance(quantity, Quantity):
            raise ValueError("kind='relative_contrast_std' needs argument 'quantity'")
        p = roi_posterior(result, quantity, **kwargs)[quantity.name]
        return float(p.std / max(abs(p.mean), 1e-12))
    raise ValueError(f"argument 'kind' must be one of {_SCORES}, got {kind!r}")


def _vector(x, name) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 1 or a.size < 1:
        raise ValueError(f"argument '{name}' must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"argument '{name}' contains NaN or inf")
    return a


def threshold_for_flag_rate(calibration_scores, rate: float) -> float:
    """Threshold flagging the fraction ``rate`` of images with the largest scores.

    With the ``n`` calibration scores sorted, ``s_(1) <= ... <= s_(n)``, it returns
    ``s_(n - k)`` for ``k = floor(rate n)``, so that exactly the ``k`` largest have
    ``score > threshold`` (fewer where scores tie at the threshold; none when
    ``rate n < 1``: the maximum score). Never more than the fraction ``rate`` is flagged.
    (A ``1 - rate`` quantile with numpy's ``higher`` rule, used before, flagged none of two
    images at ``rate = 0.5``.)

    Args:
        calibration_scores: scores of the calibration images.
        rate: fraction to flag, in (0, 1).

    Returns:
        The threshold, a float.
    """
    s = _vector(calibration_scores, "calibration_scores")
    if not (isinstance(rate, (int, float, np.floating)) and 0 < rate < 1):
        raise ValueError(f"argument 'rate' must be in (0, 1), got {rate!r}")
    n = s.size
    k = whole_count(rate * n)   # 0.29 * 100 = 28.999999999999996 counts as 29
    return float(np.sort(s)[n - k - 1]) if k < n else -math.inf


def threshold_for_error(calibration_scores, calibration_errors, max_error: float) -> float:
    """The largest threshold whose accepted calibration images (``score <= threshold``)
    have mean error at most ``max_error`` (selective risk control, empirical). Returns
    ``-inf`` (flag everything) when even the single lowest-score image fails.

    Args:
        calibration_scores: scores of the calibration images.
        calibration_errors: errors of the calibration images.
        max_error: largest acceptable mean error.

    Returns:
        The threshold, a float (``-inf``: flag everything).
    """
    s = _vector(calibration_scores, "calibration_scores")
    e = _vector(calibration_errors, "calibration_errors")
    if s.shape != e.shape:
        raise ValueError(f"arguments 'calibration_scores' and 'calibration_errors' differ in "
                         f"length: {s.size} vs {e.size}")
    if not np.isfinite(max_error):
        raise ValueError(f"argument 'max_error' must be finite, got {max_error!r}")
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    running = np.cumsum(e[order]) / np.arange(1, s.size + 1)
    # candidate thresholds: each distinct score, accepting its whole tie group
    last = np.append(np.nonzero(np.diff(sorted_scores) != 0)[0], s.size - 1)
    ok = last[running[last] <= max_error]
    return float(sorted_scores[ok[-1]]) if ok.size else -math.inf


def abstain(scores, threshold: float) -> np.ndarray:
    """The abstention rule: flag (True) where ``score > threshold``.

    Args:
        scores: reliability scores.
        threshold: abstention threshold.

    Returns:
        Boolean array of the shape of ``scores``.
    """
    return np.asarray(scores, np.float64) > float(threshold)


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (Mann-Whitney, ties
    counted one half); 0.5 for an uninformative score, 1 for a perfect one.

    Args:
        scores: scores.
        labels: boolean labels (True: positive).

    Returns:
        A float in [0, 1].
    """
    s = _vector(scores, "scores")
    lab = np.asarray(labels, bool)
    if lab.shape != s.shape:
        raise ValueError(f"arguments 'scores' and 'labels' differ in shape: {s.shape} vs {lab.shape}")
    n1, n0 = int(lab.sum()), int((~lab).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[lab].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def evaluate_abstention(scores, errors, threshold: float, error_cutoff: float) -> dict:
    """How well flagging ``score > threshold`` finds the images with ``error > cutoff``.

    Args:
        scores: per-image reliability scores (test replicates, not the calibration ones).
        errors: per-image true errors (e.g. RMS error of the reconstruction).
        threshold: the rule's threshold.
        error_cutoff: an image is bad when its error exceeds this.

    Returns:
        ``flag_rate``, ``bad_rate``, ``precision`` (fraction of flagged that are bad; NaN
        when none is flagged), ``recall`` (fraction of bad that are flagged; NaN when none
        is bad), ``auroc`` (score vs bad), ``spearman`` (score vs error),
        ``accepted_error`` / ``all_error`` (mean error of the accepted / of all images),
        ``num_images``.
    """
    s = _vector(scores, "scores")
    e = _vector(errors, "errors")
    if s.shape != e.shape:
        raise ValueError(f"arguments 'scores' and 'errors' differ in length: {s.size} vs {e.size}")
    flag = abstain(s, threshold)
    bad = e > float(error_cutoff)
    tp = int(np.sum(flag & bad))
    return {
        "flag_rate": float(flag.mean()),
        "bad_rate": float(bad.mean()),
        "precision": tp / flag.sum() if flag.any() else float("nan"),
        "recall": tp / bad.sum() if bad.any() else float("nan"),
        "auroc": auroc(s, bad),
        "spearman": (float(stats.spearmanr(s, e)[0]) if np.ptp(s) > 0 and np.ptp(e) > 0
                     else float("nan")),
        "accepted_error": float(e[~flag].mean()) if (~flag).any() else float("nan"),
        "all_error": float(e.mean()),
        "num_images": int(s.size),
    }

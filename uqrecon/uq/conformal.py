"""Conformal calibration of pixelwise uncertainty, with finite-sample guarantees.

Any method's output (a mean and a pixel std, or an interval) is rescaled by one factor
``lambda`` fitted on *calibration replicates* -- ``(truth, reconstruction)`` pairs
exchangeable with the images the bound will be used on. Nothing is assumed about the
method or the model; a misspecified prior or an over-confident approximation (mean-field
VI) gets its coverage repaired, at the price of wider bounds.

Two constructions, each with its guarantee stated precisely. Pixels of one image are
strongly correlated, so the exchangeable unit is the *image*: finite-sample corrections
count images, never pixels.

1. :func:`fit_error_bound` -- pixelwise error bounds ``|x_j - mean_j| <= lambda std_j``
   from the posterior std (Narnhofer, Habring, Holler & Pock, "Posterior-variance-based
   error quantification for inverse problems in imaging", SIIMS, arXiv 2212.12499).
   Scores ``s_ij = |x_ij - mean_ij| / std_ij``.

   * ``per_pixel=False`` (default, one ``lambda`` for all pixels): conformal risk control
     (Angelopoulos, Bates, Fisch, Lei & Schuster, "Conformal risk control", ICLR 2024)
     with the loss "fraction of pixels outside the bound", bounded by ``B = 1``:
     ``lambda`` is the smallest value with ``(n R_n(lambda) + 1) / (n + 1) <= alpha``,
     ``R_n`` the pooled fraction of uncovered calibration pixels. Guarantee, with the
     probability over the calibration set *and* the test image: ``E[fraction of pixels
     of a fresh image with |x_j - mean_j| > lambda std_j] <= alpha``, i.e. a uniformly
     random pixel of a fresh image is covered with probability ``>= 1 - alpha``. The
     ``+1`` is the split-conformal ``(n + 1)`` correction at the level of images; it is
     exact when all pixels of an image share one score (perfect correlation) and
     conservative by at most ``1/(n+1)`` of a whole image otherwise.
   * ``per_pixel=True``: a separate ``lambda_j`` per pixel, the ``ceil((n+1)(1-alpha))``-th
     smallest of the ``n`` calibration scores at that pixel (split conformal). Guarantee
     for *every* pixel ``j``: ``P(|x_j - mean_j| <= lambda_j std_j) >= 1 - alpha`` (and
     ``<= 1 - alpha + 1/(n+1)`` without ties), probability over calibration and test.

2. :func:`fit_rcps` -- risk-controlling prediction sets (Bates, Angelopoulos, Lei, Malik &
   Jordan, "Distribution-free, risk-controlling prediction sets", JACM 2021; Angelopoulos
   et al., "Image-to-image regression with distribution-free uncertainty quantification",
   ICML 2022): intervals ``[mean - lambda l, mean + lambda u]`` from the method's own
   interval (``l``, ``u`` its lower/upper offsets) or its std (``l = u = std``);
   ``lambda`` is found by scanning from large to small and stopping before the
   Hoeffding-Bentkus upper confidence bound of the risk reaches ``alpha``. Guarantee:
   ``P_calibration( E_test[fraction of uncovered pixels | calibration] <= alpha ) >= 1 -
   delta`` -- a high-probability statement about the *expected* fraction on fresh
   images given this calibration set, not about each image's own fraction.

:func:`repeated_split_check` verifies both empirically by repeating the calibration on
many calibration sets and measuring the realised risk on fresh test replicates.
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np
from scipy import optimize, special, stats

from uqrecon.result import check_probability
from uqrecon.uq._counts import whole_count

__all__ = [
    "ErrorBound",
    "RCPS",
    "ConformalCheck",
    "conformity_scores",
    "fit_error_bound",
    "fit_rcps",
    "hoeffding_bentkus_bound",
    "rcps_max_empirical_risk",
    "min_calibration_size",
    "uncovered_fraction",
    "repeated_split_check",
]


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
_prob = check_probability   # one definition: uqrecon.result


def _images(arr, name, like=None):
    a = np.asarray(arr)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"'{name}' must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim < 2:
        raise ValueError(f"'{name}' must have shape (num_replicates, *image_shape), got {a.shape}")
    if like is not None and a.shape != like.shape:
        raise ValueError(f"'{name}' has shape {a.shape}, expected {like.shape} (the shape "
                         f"of 'truths')")
    if np.isnan(a).any():
        raise ValueError(f"'{name}' contains NaN")
    return a


def _nonneg(arr, name, like):
    a = _images(arr, name, like)
    if np.any(a < 0):
        raise ValueError(f"'{name}' must be >= 0 everywhere")
    return a


def conformity_scores(truths, means, lower, upper=None) -> np.ndarray:
    """``s = (x - mean)/upper`` where ``x >= mean``, ``(mean - x)/lower`` where ``x < mean``:
    the smallest ``lambda`` with ``x`` inside ``[mean - lambda lower, mean + lambda upper]``
    (``upper`` defaults to ``lower``: ``|x - mean| / std``). A zero scale gives 0 where
    the error is 0 and ``inf`` otherwise.

    Args:
        truths, means: ``(n, *shape)``.
        lower, upper: non-negative scales ``(n, *shape)``.

    Returns:
        ``(n, *shape)`` scores.
    """
    x = _images(truths, "truths")
    m = _images(means, "means", x)
    lo = _nonneg(lower, "lower", x)
    up = lo if upper is None else _nonneg(upper, "upper", x)
    err = x - m
    scale = np.where(err >= 0, up, lo)
    safe = np.where(scale > 0, scale, 1.0)
    return np.where(scale > 0, np.abs(err) / safe, np.where(err == 0, 0.0, np.inf))


def uncovered_fraction(scores, lam) -> np.ndarray:
    """Per image, the fraction of pixels with score above ``lam`` (outside the set).

    Args:
        scores: ``(n, *shape)`` conformity scores.
        lam: a scalar or an image-shaped array of per-pixel factors.

    Returns:
        ``(n,)`` fractions.
    """
    s = np.asarray(scores, np.float64)
    return (s > np.asarray(lam)).reshape(s.shape[0], -1).mean(axis=1)


# --------------------------------------------------------------------------------------
# 1. Pixelwise error bounds from the posterior std (conformal risk control / per pixel)
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ErrorBound:
    """A fitted pixelwise error bound ``|x - mean| <= scale * std``.

    Attributes:
        scale: the fitted ``lambda`` (a float), or an image-shaped array per pixel.
        alpha: target miscoverage.
        num_calibration: calibration replicates used.
        per_pixel: whether ``scale`` is per pixel.
        guarantee: the guarantee in words.
    """

    scale: float | np.ndarray
    alpha: float
    num_calibration: int
    per_pixel: bool
    guarantee: str

    def bound(self, std) -> np.ndarray:
        """The error bound ``scale * std`` (same shape as ``std``).

        Args:
            std: pixel standard deviations.

        Returns:
            Array of the shape of ``std``.
        """
        return np.asarray(self.scale) * np.asarray(std, np.float64)

    def coverage(self, truths, means, stds) -> np.ndarray:
        """Per replicate, the fraction of pixels with ``|x - mean| <= scale * std``.

        Args:
            truths: true images, ``(n, *shape)``.
            means: posterior means, ``(n, *shape)``.
            stds: standard deviations, ``(n, *shape)``.

        Returns:
            Array ``(n,)``.
        """
        return 1.0 - uncovered_fraction(conformity_scores(truths, means, stds), self.scale)


def min_calibration_size(alpha: float, delta: float | None = None) -> int:
    """Fewest calibration replicates for which a finite bound exists.

    ``delta=None`` (error bounds, split conformal): ``ceil(1/alpha) - 1`` (the
    ``ceil((n+1)(1-alpha))``-th score must exist). With ``delta`` (RCPS with the
    Hoeffding-Bentkus bound): the smallest ``n`` whose bound at zero empirical risk,
    ``1 - delta^(1/n)``, is below ``alpha``.

    Args:
        alpha: target risk in (0, 1).
        delta: RCPS error probability in (0, 1), or None.

    Returns:
        The minimum number of calibration replicates.
    """
    alpha = _prob(alpha, "alpha")
    if delta is None:
        return max(1, math.ceil(1.0 / alpha - 1e-12) - 1)
    delta = _prob(delta, "delta")
    n = max(1, math.floor(math.log(delta) / math.log1p(-alpha)))
    while hoeffding_bentkus_bound(0.0, n, delta) >= alpha:
        n += 1
    return n


def fit_error_bound(truths, means, stds, alpha: float = 0.1, *,
                    per_pixel: bool = False) -> ErrorBound:
    """Fit ``lambda`` so that ``|x - mean| <= lambda std`` holds with probability
    ``1 - alpha`` (see the module docstring for the exact statement of each mode).

    Args:
        truths, means, stds: ``(n, *shape)`` calibration truths, method means and stds.
        alpha: target miscoverage in (0, 1).
        per_pixel: one ``lambda`` per pixel instead of one for the image.

    Returns:
        :class:`ErrorBound`.

    Raises:
        ValueError: if ``n`` is below :func:`min_calibration_size` ``(alpha)``.
    """
    alpha = _prob(alpha, "alpha")
    scores = conformity_scores(truths, means, stds)
    n = scores.shape[0]
    need = min_calibration_size(alpha)
    if n < need:
        raise ValueError(f"'truths': {n} calibration replicates are too few for alpha="
                         f"{alpha}; at least {need} are needed")
    if per_pixel:
        k = math.ceil((n + 1) * (1 - alpha) - 1e-12)        # 1-based rank, <= n
        lam = np.sort(scores, axis=0)[k - 1]
        text = (f"for every pixel j: P(|x_j - mean_j| <= lambda_j std_j) >= {1 - alpha:g} "
                f"(probability over the {n} calibration replicates and a fresh replicate)")
        return ErrorBound(lam, alpha, n, True, text)
    flat = np.sort(scores.reshape(-1))
    p = flat.size // n
    # (n R + 1)/(n + 1) <= alpha  <=>  #uncovered pooled pixels <= p (alpha (n + 1) - 1)
    allowed = whole_count(p * (alpha * (n + 1) - 1))
    lam = float(flat[flat.size - 1 - allowed])
    text = (f"E[fraction of pixels of a fresh replicate with |x - mean| > lambda std] <= "
            f"{alpha:g}, i.e. a uniformly random pixel is covered with probability >= "
            f"{1 - alpha:g} (probability over the {n} calibration replicates and the fresh "
            f"replicate)")
    return ErrorBound(lam, alpha, n, False, text)


# --------------------------------------------------------------------------------------
# 2. Hoeffding-Bentkus upper confidence bound and RCPS
# --------------------------------------------------------------------------------------
def _kl_bernoulli(p, q):
    """``KL(Bernoulli(p) || Bernoulli(q))`` with ``0 log 0 = 0``."""
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def _hb_log_pvalue(mu, risk_hat, n):
    """Log of the Hoeffding-Bentkus p-value of ``H0: risk >= mu`` given the empirical risk
    ``risk_hat`` of ``n`` losses in [0, 1] (Bates et al. 2021, Prop. 3-5):
    ``min(exp(-n h(min(risk_hat, mu), mu)), e P(Binom(n, mu) <= ceil(n risk_hat)))``."""
    hoeffding = -n * _kl_bernoulli(min(risk_hat, mu), mu)
    k = math.ceil(round(n * risk_hat, 9))
    bentkus = 1.0 + float(stats.binom.logcdf(k, n, mu))
    return min(hoeffding, bentkus)


def hoeffding_bentkus_bound(risk_hat: float, n: int, delta: float) -> float:
    """Hoeffding-Bentkus ``(1 - delta)`` upper confidence bound of a mean risk.

    For ``n`` i.i.d. losses in ``[0, 1]`` with mean ``R`` and empirical mean
    ``risk_hat``, the bound ``R+`` satisfies ``P(R > R+) <= delta``: it is the largest
    ``mu`` whose HB p-value is still ``>= delta``. At ``risk_hat = 0`` it equals
    ``1 - delta^(1/n)`` (Hoeffding's term is the smaller there).

    Args:
        risk_hat: empirical mean risk in ``[0, 1]``.
        n: number of losses (calibration replicates), >= 1.
        delta: error probability in (0, 1).

    Returns:
        The upper bound in ``[risk_hat, 1]``.
    """
    delta = _prob(delta, "delta")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"'n' must be an integer >= 1, got {n!r}")
    r = float(risk_hat)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"'risk_hat' must lie in [0, 1], got {risk_hat!r}")
    log_delta = math.log(delta)
    top = 1.0 - 1e-12
    if r >= top or _hb_log_pvalue(top, r, int(n)) >= log_delta:
        return 1.0
    f = lambda mu: _hb_log_pvalue(mu, r, int(n)) - log_delta  # noqa: E731 (>0 at mu=r)
    return float(optimize.brentq(f, r, top, xtol=1e-14, rtol=1e-12, maxiter=500))


def rcps_max_empirical_risk(n: int, alpha: float, delta: float) -> float:
    """The largest empirical risk whose HB bound stays below ``alpha``.

    The bound is non-decreasing in the empirical risk, so "scan ``lambda`` from large
    to small and stop before the bound reaches ``alpha``" selects the smallest
    ``lambda`` whose empirical risk is at most this value.

    Args:
        n: calibration replicates.
        alpha: target risk.
        delta: error probability.

    Returns:
        The threshold on the empirical risk (found by bisection to 1e-12).

    Raises:
        ValueError: if even zero empirical risk has a bound >= ``alpha`` (too few
        calibration replicates).
    """
    alpha, delta = _prob(alpha, "alpha"), _prob(delta, "delta")
    if hoeffding_bentkus_bound(0.0, n, delta) >= alpha:
        raise ValueError(f"'truths': {n} calibration replicates are too few for alpha="
                         f"{alpha}, delta={delta}; the Hoeffding-Bentkus bound needs at "
                         f"least {min_calibration_size(alpha, delta)}")
    lo, hi = 0.0, alpha
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if hoeffding_bentkus_bound(mid, n, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


@dataclasses.dataclass(frozen=True)
class RCPS:
    """A fitted risk-controlling prediction set ``[mean - lam l, mean + lam u]``.

    Attributes:
        lam: the fitted factor.
        alpha, delta: target risk and error probability.
        num_calibration: calibration replicates used.
        empirical_risk: calibration risk at ``lam``.
        upper_bound: its Hoeffding-Bentkus bound (``< alpha``).
        guarantee: the guarantee in words.
    """

    lam: float
    alpha: float
    delta: float
    num_calibration: int
    empirical_risk: float
    upper_bound: float
    guarantee: str

    def interval(self, means, lower, upper=None):
        """``(lo, hi)`` of the calibrated set.

        Args:
            means: posterior means, ``(n, *shape)``.
            lower: lower half-widths ``l`` (per pixel).
            upper: upper half-widths ``u`` (None: ``lower``).

        Returns:
            A pair ``(lo, hi)``: ``means - lam l`` and ``means + lam u``.
        """
        m = np.asarray(means, np.float64)
        lo = np.asarray(lower, np.float64)
        up = lo if upper is None else np.asarray(upper, np.float64)
        return m - self.lam * lo, m + self.lam * up

    def risk(self, truths, means, lower, upper=None) -> np.ndarray:
        """Per replicate, the fraction of pixels outside the calibrated set.

        Args:
            truths: true images, ``(n, *shape)``.
            means: posterior means, ``(n, *shape)``.
            lower: lower half-widths ``l``.
            upper: upper half-widths ``u`` (None: ``lower``).

        Returns:
            Array ``(n,)``.
        """
        return uncovered_fraction(conformity_scores(truths, means, lower, upper), self.lam)


def _select_lambda(sorted_scores, n, max_risk):
    """Smallest pooled score ``lam`` with pooled fraction of scores ``> lam`` at most
    ``max_risk`` (``sorted_scores`` ascending, ``n`` images)."""
    total = sorted_scores.size
    allowed = whole_count(total * max_risk)
    lam = float(sorted_scores[total - 1 - allowed])
    if not math.isfinite(lam):
        raise ValueError("the calibration scores needed for this alpha are infinite (zero "
                         "'lower'/'upper' scales where the error is not zero)")
    return lam


def fit_rcps(truths, means, lower, upper=None, *, alpha: float = 0.1,
             delta: float = 0.1) -> RCPS:
    """Risk-controlling prediction set with the Hoeffding-Bentkus bound (module docstring).

    The candidate factors are the pooled calibration scores themselves (every value at
    which the empirical risk changes), scanned from large to small; the scan stops
    before the first candidate whose HB bound is ``>= alpha``. Because the bound is
    monotone in the empirical risk, this is the smallest candidate whose empirical risk
    is at most :func:`rcps_max_empirical_risk` -- found directly, then checked.

    Args:
        truths, means: ``(n, *shape)`` calibration truths and method means.
        lower, upper: non-negative interval offsets ``(n, *shape)``: the method's
            ``mean - lo`` and ``hi - mean`` at some level, or its std (``upper`` defaults
            to ``lower``).
        alpha: target risk (expected fraction of uncovered pixels) in (0, 1).
        delta: error probability in (0, 1).

    Returns:
        :class:`RCPS`.

    Raises:
        ValueError: if there are fewer calibration replicates than
        :func:`min_calibration_size` ``(alpha, delta)``.
    """
    alpha, delta = _prob(alpha, "alpha"), _prob(delta, "delta")
    scores = conformity_scores(truths, means, lower, upper)
    n = scores.shape[0]
    need = min_calibration_size(alpha, delta)
    if n < need:
        raise ValueError(f"'truths': {n} calibration replicates are too few for alpha="
                         f"{alpha}, delta={delta}; at least {need} are needed")
    max_risk = rcps_max_empirical_risk(n, alpha, delta)
    flat = np.sort(scores.reshape(-1))
    lam = _select_lambda(flat, n, max_risk)
    risk = float(np.mean(flat > lam))
    ucb = hoeffding_bentkus_bound(risk, n, delta)
    if ucb >= alpha:                       # bisection edge: step to the next larger score
        larger = flat[flat > lam]
        lam = float(larger[0])
        risk = float(np.mean(flat > lam))
        ucb = hoeffding_bentkus_bound(risk, n, delta)
    text = (f"P(E[fraction of uncovered pixels of a fresh replicate | calibration set] <= "
            f"{alpha:g}) >= {1 - delta:g} over the draw of the {n} calibration replicates")
    return RCPS(lam, alpha, delta, n, risk, ucb, text)


# --------------------------------------------------------------------------------------
# Empirical check over repeated calibrations
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ConformalCheck:
    """Realised risks of repeated conformal calibrations on fresh test replicates.

    Attributes:
        alpha, delta: targets.
        num_splits, num_calibration, num_test: repetitions, calibration replicates per
            repetition, test replicates.
        independent: True when every repetition has its own, independent calibration set
            (the band below is then exact); False for random splits of one pool.
        raw_risk: ``(num_test,)`` per test replicate, the fraction of pixels outside the
            method's own interval (no conformal step).
        bound_scale, bound_risk: per repetition, the :func:`fit_error_bound` factor and
            its realised risk (mean fraction of uncovered test pixels).
        rcps_lam, rcps_risk: the same for :func:`fit_rcps`.
        bound_width, rcps_width: mean width ``2 lambda std`` / ``lambda (l + u)`` per
            repetition, in image units.
        raw_width: mean width of the method's own interval.
    """

    alpha: float
    delta: float
    num_splits: int
    num_calibration: int
    num_test: int
    independent: bool
    label: str
    raw_risk: np.ndarray
    raw_width: float
    bound_scale: np.ndarray
    bound_risk: np.ndarray
    bound_width: np.ndarray
    rcps_lam: np.ndarray
    rcps_risk: np.ndarray
    rcps_width: np.ndarray

    @property
    def rcps_violation_rate(self) -> float:
        """Fraction of repetitions whose realised risk exceeds ``alpha``."""
        return float(np.mean(self.rcps_risk > self.alpha))

    def rcps_violation_band(self, confidence: float = 0.95) -> float:
        """Largest violation rate compatible with the guarantee: the ``confidence``
        quantile of ``Binomial(num_splits, delta) / num_splits`` (a guarantee that holds
        exceeds it with probability at most ``1 - confidence``; exact for independent
        repetitions).

        Args:
            confidence: confidence of the band.

        Returns:
            A rate in [0, 1].
        """
        _prob(confidence, "confidence")
        return float(stats.binom.ppf(confidence, self.num_splits, self.delta) / self.num_splits)

    def bound_mean_risk_band(self, confidence: float = 0.95) -> float:
        """Upper end of the allowance for the mean realised risk of the error bound:
        ``alpha`` plus ``z`` standard errors of the mean over repetitions (plus the test
        set's own error, which is shared).

        Args:
            confidence: confidence of the allowance.

        Returns:
            A float.
        """
        _prob(confidence, "confidence")
        z = special.ndtri(confidence)
        se = self.bound_risk.std(ddof=1) / math.sqrt(self.num_splits)
        return float(self.alpha + z * se)

    def summary(self) -> dict:
        """The check's figures as a flat dict (risks, widths, factors, bands).

        Returns:
            A dict.
        """
        return {
            "label": self.label, "alpha": self.alpha, "delta": self.delta,
            "splits": self.num_splits, "n_cal": self.num_calibration, "n_test": self.num_test,
            "raw_risk": float(self.raw_risk.mean()), "raw_width": self.raw_width,
            "bound_scale_median": float(np.median(self.bound_scale)),
            "bound_risk_mean": float(self.bound_risk.mean()),
            "bound_risk_band": self.bound_mean_risk_band(),
            "bound_width": float(self.bound_width.mean()),
            "rcps_lam_median": float(np.median(self.rcps_lam)),
            "rcps_risk_mean": float(self.rcps_risk.mean()),
            "rcps_violation_rate": self.rcps_violation_rate,
            "rcps_violation_band": self.rcps_violation_band(),
            "rcps_width": float(self.rcps_width.mean()),
        }

    def table_row(self) -> str:
        """The check as one markdown row under :meth:`table_header`.

        Returns:
            A markdown string.
        """
        s = self.summary()
        return (f"| {s['label']} | {s['splits']}{'' if self.independent else ' (resampled)'}"
                f" | {s['n_cal']} | {s['n_test']} | {s['raw_risk']:.3f} | {s['raw_width']:.3g} | "
                f"{s['bound_scale_median']:.3f} | {s['bound_risk_mean']:.4f} "
                f"(<= {s['bound_risk_band']:.4f}) | {s['bound_width']:.3g} | "
                f"{s['rcps_lam_median']:.3f} | {s['rcps_risk_mean']:.4f} | "
                f"{s['rcps_violation_rate']:.3f} (<= {s['rcps_violation_band']:.3f}) | "
                f"{s['rcps_width']:.3g} |")

    @staticmethod
    def table_header() -> str:
        """Header of the markdown table of :meth:`table_row`.

        Returns:
            A markdown string (two lines).
        """
        return ("| setting | repetitions | n cal | n test | raw risk | raw width | "
                "std-bound lambda | std-bound mean risk (allowance) | std-bound width | "
                "RCPS lambda | RCPS mean risk | P(risk > alpha) (band) | RCPS width |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _risk_at(sorted_test_scores, lam):
    """Mean fraction of test scores above ``lam`` (pooled; images have equal sizes)."""
    return 1.0 - np.searchsorted(sorted_test_scores, lam, side="right") / sorted_test_scores.size


def repeated_split_check(calibration, test=None, *, alpha: float = 0.1, delta: float = 0.1,
                         num_splits: int = 100, num_calibration: int | None = None,
                         seed: int = 0, label: str = "") -> ConformalCheck:
    """Repeat both conformal calibrations and measure their realised risk on test replicates.

    Two designs:

    * ``calibration`` a sequence of :class:`~uqrecon.uq.calibration.Replicates` (one
      independent calibration set per repetition) and ``test`` a ``Replicates`` of fresh
      test replicates: repetitions are independent, so the number of RCPS violations is
      exactly ``Binomial(repetitions, p)`` with ``p <= delta`` when the guarantee holds;
    * ``calibration`` one ``Replicates`` pool and ``test=None``: ``num_splits`` random
      splits into ``num_calibration`` calibration and the rest as test replicates
      (repetitions share replicates, so the binomial band is approximate).

    The realised risk of a repetition is the mean, over its test replicates, of the
    fraction of pixels outside the calibrated set -- an estimate of the conditional risk
    ``E_test[loss | calibration]`` that RCPS controls.

    Args:
        calibration: see above.
        test: fresh test replicates for the first design.
        alpha, delta: targets.
        num_splits, num_calibration, seed: for the second design.
        label: a name for the table.

    Returns:
        :class:`ConformalCheck`.
    """
    from uqrecon.uq.calibration import Replicates

    alpha, delta = _prob(alpha, "alpha"), _prob(delta, "delta")
    if test is not None:
        sets = list(calibration)
        if not sets or not all(isinstance(s, Replicates) for s in sets):
            raise TypeError("'calibration' must be a non-empty sequence of Replicates when "
                            "'test' is given")
        if not isinstance(test, Replicates):
            raise TypeError(f"'test' must be Replicates, got {type(test).__name__}")
        splits = [(s, test) for s in sets]
        independent = True
        n_test = test.num_replicates
    else:
        if not isinstance(calibration, Replicates):
            raise TypeError("'calibration' must be Replicates (a pool) when 'test' is None")
        R = calibration.num_replicates
        if num_calibration is None or not (0 < num_calibration < R):
            raise ValueError(f"'num_calibration' must be an integer in [1, {R - 1}] for a "
                             f"pool of {R} replicates, got {num_calibration!r}")
        if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)) \
                or num_splits < 1:
            raise ValueError(f"'num_splits' must be an integer >= 1, got {num_splits!r}")
        rng = np.random.default_rng(seed)
        splits = []
        for _ in range(int(num_splits)):
            perm = rng.permutation(R)
            splits.append((calibration.subset(perm[:num_calibration]),
                           calibration.subset(perm[num_calibration:])))
        independent = False
        n_test = R - num_calibration
    shared_test = test is not None
    if shared_test:
        t_std = np.sort(conformity_scores(test.truths, test.means, test.stds).reshape(-1))
        t_int = np.sort(conformity_scores(test.truths, test.means, test.lower,
                                          test.upper).reshape(-1))
    out = {k: [] for k in ("bs", "br", "bw", "rl", "rr", "rw")}
    raw_risk = None
    for cal, tst in splits:
        if not shared_test:
            t_std = np.sort(conformity_scores(tst.truths, tst.means, tst.stds).reshape(-1))
            t_int = np.sort(conformity_scores(tst.truths, tst.means, tst.lower,
                                              tst.upper).reshape(-1))
        eb = fit_error_bound(cal.truths, cal.means, cal.stds, alpha)
        rc = fit_rcps(cal.truths, cal.means, cal.lower, cal.upper, alpha=alpha, delta=delta)
        out["bs"].append(eb.scale)
        out["br"].append(_risk_at(t_std, eb.scale))
        out["bw"].append(2 * eb.scale * tst.stds.mean())
        out["rl"].append(rc.lam)
        out["rr"].append(_risk_at(t_int, rc.lam))
        out["rw"].append(rc.lam * (tst.lower + tst.upper).mean())
        if raw_risk is None:
            raw_risk = uncovered_fraction(conformity_scores(tst.truths, tst.means, tst.lower,
                                                            tst.upper), 1.0)
            raw_width = float((tst.lower + tst.upper).mean())
    n_cal = splits[0][0].num_replicates
    return ConformalCheck(
        alpha=alpha, delta=delta, num_splits=len(splits), num_calibration=n_cal,
        num_test=n_test, independent=independent, label=label, raw_risk=raw_risk,
        raw_width=raw_width, bound_scale=np.array(out["bs"]), bound_risk=np.array(out["br"]),
        bound_width=np.array(out["bw"]), rcps_lam=np.array(out["rl"]),
        rcps_risk=np.array(out["rr"]), rcps_width=np.array(out["rw"]))


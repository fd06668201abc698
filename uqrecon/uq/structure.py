"""Is this structure real? Bayesian hypothesis tests of image structures.

A *structure* is a region ``R`` of the image (a lesion, a point source) and the ring ``B``
of pixels around it. Its contrast is the linear functional

    contrast(x) = polarity * (mean_R(x) - mean_B(x)) = <c, x>,

with ``c = polarity * (1_R / |R| - 1_B / |B|)``, and the null hypothesis "the structure is
absent" is the half-space

    S = {x : contrast(x) <= threshold}

(``threshold`` 0: not brighter than its surroundings; a positive threshold: below the
smallest contrast that would matter). Two tests of H0 against "the structure is there":

* :func:`buqo_test` -- BUQO (Repetti, Pereyra & Wiaux, SIAM J. Imaging Sci. 12(1), 2019):
  no sampling. For a log-concave posterior with potential ``phi = -log p(x | y)`` the
  conservative highest-posterior-density region of Pereyra (2017),
  ``C_alpha = {x : phi(x) <= phi(x_MAP) + N (tau_alpha + 1)}``,
  ``tau_alpha = sqrt(16 log(3 / alpha) / N)``, holds at least ``1 - alpha`` of the
  posterior mass. If ``C_alpha`` and ``S`` do not intersect, H0 is rejected at level
  ``alpha``. Intersection is decided by the convex problem ``min_{x in S} phi(x)``:
  ``C_alpha ∩ S`` is empty exactly when that minimum exceeds the HPD level.
* :func:`sampling_test` -- the posterior probability of H0,
  ``P(contrast(x) <= threshold | y)``, from posterior draws (with a Monte Carlo standard
  error) or in closed form from Gaussian factors; H0 is rejected when it is below
  ``alpha``.

**Why a contrast half-space and not BUQO's inpainting set.** BUQO's reference code
(github basp-group/BUQO) defines ``S`` as the images whose pixels inside the mask equal a
Gaussian-weighted inpainting of their surroundings up to an l2 tolerance (plus
positivity). Here the inpainting is the simplest one -- the ring mean -- and the
tolerance is one number in intensity units. This keeps what matters: ``S`` is convex and
closed; the decision is invariant to an affine background (the mean of a disc and of a
concentric ring agree for any linear intensity ramp, as a harmonic inpainting does); and
it adds three things: the threshold is interpretable ("contrast below 0.05 counts as
absent"), the sampling test decides the *same* hypothesis from draws, and for a Gaussian
posterior both tests have closed forms (the minimum of a quadratic over a half-space;
a Gaussian linear functional), against which the solvers are tested.

BUQO is conservative by construction: ``C_alpha`` is a *joint* region for all ``N``
pixels and ``N (tau_alpha + 1)`` over-bounds the true HPD level, so for a Gaussian
posterior it rejects only when the contrast is several tens of posterior standard
deviations above the threshold (``sqrt(2 N (tau_alpha + 1))``; about 52 at 32x32 and
``alpha = 0.01``). Its size is far below ``alpha``; the sampling test is the powerful one
when draws are affordable. Pass ``potential_level`` to use a sharper HPD level (e.g. the
``1 - alpha`` quantile of ``phi`` over exact posterior draws).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from ..diagnostics import ess_bulk
from ..linalg import full_precision
from ..result import Result

__all__ = ["Structure", "disc_structure", "structure_from_mask", "contrast",
           "hpd_tau", "BUQOTest", "buqo_test", "minimize_potential_over_absent_set",
           "SamplingTest", "sampling_test"]


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------
def _check_alpha(alpha, owner):
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument 'alpha' must be a number in (0, 1), "
                        f"got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise ValueError(f"{owner}: argument 'alpha' must lie in (0, 1), got {alpha!r}")
    return a


def _check_finite(value, name, owner):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument '{name}' must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{owner}: argument '{name}' must be finite, got {value!r}")
    return v


def _check_positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: argument '{name}' must be a positive int, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------
# the structure: region, ring and contrast functional
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """A region, its surrounding ring, and the hypothesis "the structure is absent".

    Build it with :func:`disc_structure` or :func:`structure_from_mask`.

    Attributes:
      region: boolean image, the pixels of the structure.
      ring: boolean image, the surrounding pixels it is compared with (disjoint from
        ``region``).
      threshold: H0 is ``contrast(x) <= threshold``.
      polarity: +1 for a bright structure, -1 for a dark one.
    """

    region: np.ndarray
    ring: np.ndarray
    threshold: float = 0.0
    polarity: int = 1

    @property
    def shape(self) -> tuple:
        return self.region.shape

    def with_threshold(self, threshold: float) -> "Structure":
        """The same region and ring with another threshold.

        Args:
            threshold: the new threshold.

        Returns:
            A new :class:`Structure`.
        """
        return dataclasses.replace(
            self, threshold=_check_finite(threshold, "threshold", "Structure.with_threshold"))

    @property
    def weights(self) -> np.ndarray:
        """``c`` with ``contrast(x) = <c, x>`` (float64, image-shaped)."""
        c = self.region / self.region.sum() - self.ring / self.ring.sum()
        return self.polarity * c.astype(np.float64)


def _validate_structure(region, ring, threshold, polarity, owner):
    if polarity not in (1, -1):
        raise ValueError(f"{owner}: argument 'polarity' must be +1 (bright) or -1 (dark), "
                         f"got {polarity!r}")
    threshold = _check_finite(threshold, "threshold", owner)
    if not region.any():
        raise ValueError(f"{owner}: argument 'region' is empty (no pixel selected)")
    if not ring.any():
        raise ValueError(f"{owner}: the ring around argument 'region' is empty (the region "
                         f"covers the image or 'ring_width' is too small)")
    return Structure(region, ring & ~region, threshold, int(polarity))


def _ring_of(region: np.ndarray, ring_width: float) -> np.ndarray:
    """Pixels outside ``region`` within Euclidean distance ``ring_width`` of it."""
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(~region)
    return (dist > 0) & (dist <= ring_width)


def structure_from_mask(region, ring_width: float = 2.0, threshold: float = 0.0,
                        polarity: int = 1) -> Structure:
    """A structure from a boolean region mask; the ring is every pixel outside it within
    ``ring_width`` pixels (Euclidean distance).

    Args:
      region: boolean (or 0/1) image-shaped array, the structure's pixels.
      ring_width: width of the comparison ring in pixels (> 0).
      threshold: H0 is ``contrast <= threshold`` (intensity units).
      polarity: +1 bright structure, -1 dark structure.

    Returns:
      A :class:`Structure`.
    """
    owner = "structure_from_mask"
    region = np.asarray(region)
    if region.ndim != 2:
        raise ValueError(f"{owner}: argument 'region' must be a 2D image mask, got shape "
                         f"{region.shape}")
    if region.dtype != bool:
        if not np.all(np.isin(region, (0, 1))):
            raise ValueError(f"{owner}: argument 'region' must be boolean (or 0/1)")
        region = region.astype(bool)
    ring_width = _check_finite(ring_width, "ring_width", owner)
    if ring_width <= 0:
        raise ValueError(f"{owner}: argument 'ring_width' must be > 0, got {ring_width}")
    if not region.any():
        raise ValueError(f"{owner}: argument 'region' is empty (no pixel selected)")
    return _validate_structure(region, _ring_of(region, ring_width), threshold, polarity,
                               owner)


def disc_structure(shape, center, radius: float, ring_width: float = 2.0,
                   threshold: float = 0.0, polarity: int = 1) -> Structure:
    """A disc-shaped structure: pixels ``(i, j)`` with ``|(i, j) - center| <= radius``
    and the ring ``radius < |(i, j) - center| <= radius + ring_width``.

    Args:
      shape: image shape ``(H, W)``.
      center: ``(row, col)`` in pixel units (may be fractional); must lie in the image.
      radius: disc radius in pixels (> 0).
      ring_width: ring width in pixels (> 0).
      threshold: H0 is ``contrast <= threshold``.
      polarity: +1 bright structure, -1 dark structure.

    Returns:
      A :class:`Structure`.
    """
    owner = "disc_structure"
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{owner}: argument 'shape' must be a pair of ints") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{owner}: argument 'shape' must be two positive ints, got {shape}")
    try:
        ci, cj = (float(v) for v in center)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument 'center' must be a (row, col) pair, "
                        f"got {center!r}") from None
    if not (0 <= ci <= shape[0] - 1 and 0 <= cj <= shape[1] - 1):
        raise ValueError(f"{owner}: argument 'center' {center!r} lies outside the image "
                         f"of shape {shape}")
    radius = _check_finite(radius, "radius", owner)
    ring_width = _check_finite(ring_width, "ring_width", owner)
    if radius <= 0:
        raise ValueError(f"{owner}: argument 'radius' must be > 0, got {radius}")
    if ring_width <= 0:
        raise ValueError(f"{owner}: argument 'ring_width' must be > 0, got {ring_width}")
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(ii - ci, jj - cj)
    region = r <= radius
    if not region.any():
        raise ValueError(f"{owner}: argument 'radius' {radius} selects no pixel centre "
                         f"around {center!r}")
    ring = (r > radius) & (r <= radius + ring_width)
    return _validate_structure(region, ring, threshold, polarity, owner)


def _check_structure(structure, shape, owner):
    if not isinstance(structure, Structure):
        raise TypeError(f"{owner}: argument 'structure' must be a Structure (see "
                        f"disc_structure, structure_from_mask), got "
                        f"{type(structure).__name__}")
    if tuple(structure.shape) != tuple(shape):
        raise ValueError(f"{owner}: argument 'structure' is defined on images of shape "
                         f"{structure.shape}, but the images have shape {tuple(shape)}")


def contrast(structure: Structure, images) -> np.ndarray:
    """``polarity * (mean over region - mean over ring)`` of each image.

    Args:
      structure: the :class:`Structure`.
      images: array ``(..., H, W)`` (any leading batch axes).

    Returns:
      Array of the leading batch shape (a 0-d array for one image), float64.
    """
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"contrast: argument 'images' must have shape (..., H, W), got "
                         f"{images.shape}")
    _check_structure(structure, images.shape[-2:], "contrast")
    return np.tensordot(images.astype(np.float64), structure.weights, axes=2)


# --------------------------------------------------------------------------------------
# BUQO: min of the potential over the structure-free set
# --------------------------------------------------------------------------------------
def hpd_tau(alpha: float, num_dims: int) -> float:
    """Pereyra's (2017) ``tau_alpha = sqrt(16 log(3 / alpha) / N)``.

    Args:
      alpha: level in (0, 1).
      num_dims: ``N``, the number of real unknowns.

    Returns:
      ``tau_alpha`` (float).
    """
    alpha = _check_alpha(alpha, "hpd_tau")
    num_dims = _check_positive_int(num_dims, "num_dims", "hpd_tau")
    return math.sqrt(16.0 * math.log(3.0 / alpha) / num_dims)


def _project_absent(z, weights, threshold, lower, upper, has_lower, has_upper):
    """Euclidean projection of ``z`` onto ``{<c, x> <= t}`` (intersected with the box
    ``[lower, upper]`` when present).

    Without a box: ``z - max(0, <c, z> - t) c / |c|^2``. With one: ``x(mu) = clip(z - mu c)``
    (the KKT point for multiplier ``mu >= 0``); ``<c, x(mu)>`` is non-increasing in ``mu``,
    so ``mu`` is found by doubling then bisection. ``threshold`` must be reachable within
    the box (checked by the caller).
    """
    c = weights.astype(z.dtype)
    t = threshold.astype(z.dtype)
    if not (has_lower or has_upper):
        excess = jnp.maximum(jnp.vdot(c, z) - t, 0.0)
        return z - (excess / jnp.vdot(c, c)) * c
    lo = lower.astype(z.dtype) if has_lower else None
    hi = upper.astype(z.dtype) if has_upper else None
    x_of = lambda mu: jnp.clip(z - mu * c, lo, hi)
    value = lambda mu: jnp.vdot(c, x_of(mu))
    big = jnp.asarray(1e30, z.dtype)
    mu_hi0 = jnp.maximum(jnp.vdot(c, z) - t, 0.0) / jnp.vdot(c, c)

    def grow(state):
        k, mu = state
        return k + 1, 2.0 * mu

    _, mu_hi = jax.lax.while_loop(
        lambda s: (s[0] < 200) & (value(s[1]) > t) & (s[1] < big), grow, (0, mu_hi0))

    def bisect(_, bounds):
        a, b = bounds
        m = 0.5 * (a + b)
        above = value(m) > t
        return jnp.where(above, m, a), jnp.where(above, b, m)

    steps = 64 if z.dtype == jnp.float64 else 40
    _, mu = jax.lax.fori_loop(0, steps, bisect, (jnp.zeros((), z.dtype), mu_hi))
    return jnp.where(value(jnp.zeros((), z.dtype)) <= t, x_of(jnp.zeros((), z.dtype)),
                     x_of(mu))


class _AbsentSetTerm:
    """The indicator of ``S ∩ C`` as a constraint term for ``Posterior._prox`` (whose
    prox is the projection); built inside the compiled solver, never passed to jit."""

    is_constraint = True
    is_smooth = False

    def __init__(self, project):
        self.project = project

    def prox(self, x, step):
        return self.project(x)


@functools.partial(jax.jit, static_argnames=("has_lower", "has_upper"))
def _structure_free_fista(post, x0, weights, threshold, lower, upper, step, max_iter, tol,
                          has_lower, has_upper):
    """FISTA with gradient restart on ``phi_smooth(x) + sum g_k(x) + i_{S ∩ C}(x)``.

    The prox of the non-smooth part is the posterior's own machinery with the
    posterior's constraint replaced by ``S ∩ C``: the projection itself if there is no
    penalty; TV's constrained dual iterations (its prox with ``project=``) for one TV
    term; Dykstra splitting otherwise (the set's projection last, so every iterate is
    in ``S ∩ C``). Returns ``(x, iterations, converged)``; the posterior is a pytree
    argument, so a second same-shaped call compiles nothing.
    """
    from ..models.posterior import Posterior

    project = lambda z: _project_absent(z, weights, threshold, lower, upper,
                                        has_lower, has_upper)
    terms = tuple(t for t in post.nonsmooth if not t.is_constraint) + (
        _AbsentSetTerm(project),)

    def one(carry):
        k, x, y, t, _ = carry
        x_new = Posterior._prox(y - step * jax.grad(post._smooth_potential)(y), step,
                                terms)
        restart = jnp.vdot((y - x_new).ravel(), (x_new - x).ravel()) > 0
        t = jnp.where(restart, 1.0, t)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y_new = x_new + ((t - 1.0) / t_new) * (x_new - x)
        change = jnp.linalg.norm((x_new - x).ravel()) / jnp.maximum(
            jnp.linalg.norm(x_new.ravel()), jnp.finfo(x.dtype).tiny)
        return k + 1, x_new, y_new, t_new, change

    def cond(carry):
        k, *_, change = carry
        return (k < max_iter) & (change > tol)

    x0 = project(x0)
    one_t = jnp.ones((), x0.dtype)
    init = (0, x0, x0, one_t, jnp.asarray(jnp.inf, x0.dtype))
    k, x, _, _, change = jax.lax.while_loop(cond, one, init)
    return x, k, change <= tol


def _box_of(post, dtype):
    """``(lower, upper, has_lower, has_upper)`` of the posterior's constraint."""
    cons = post.constraint
    zero = jnp.zeros(post.shape, dtype)
    if cons is None:
        return zero, zero, False, False
    lower = jnp.broadcast_to(jnp.asarray(cons.lower, dtype), post.shape)
    if getattr(cons, "upper", None) is None:
        return lower, zero, True, False
    return lower, jnp.broadcast_to(jnp.asarray(cons.upper, dtype), post.shape), True, True


def _check_absent_set_not_empty(posterior, structure, owner):
    """ValueError naming 'structure' if no image within the posterior's box constraint
    has a contrast <= threshold (the smallest contrast in a box is attained at a
    corner: lower bounds on the region, upper bounds on the ring)."""
    if posterior.constraint is None:
        return
    lower, upper, _, has_upper = _box_of(posterior, posterior.dtype)
    c = structure.weights
    least = np.sum(np.where(c > 0, c * np.asarray(lower, np.float64), 0.0))
    least += (np.sum(np.where(c < 0, c * np.asarray(upper, np.float64), 0.0))
              if has_upper else -np.inf)
    if least > structure.threshold:
        raise ValueError(f"{owner}: argument 'structure' has threshold "
                         f"{structure.threshold} below the smallest contrast ({least:.4g}) "
                         f"any image within the posterior's constraint can have: the "
                         f"structure-free set is empty")


def _check_convex_posterior(posterior, owner):
    from ..models.hyper import check_posterior
    from ..models.priors import CauchyMRF
    check_posterior(posterior, owner)
    if jnp.issubdtype(posterior.dtype, jnp.complexfloating):
        raise ValueError(f"{owner}: argument 'posterior' has complex images; structure "
                         f"tests need a real image")
    bad = [type(p).__name__ for p in posterior.priors if isinstance(p, CauchyMRF)]
    if bad:
        raise ValueError(f"{owner}: argument 'posterior' must be log-concave for the HPD "
                         f"bound; prior term(s) {bad} are not convex")
    if posterior.constraint is not None and not hasattr(posterior.constraint, "lower"):
        raise ValueError(f"{owner}: the posterior's constraint "
                         f"{type(posterior.constraint).__name__} is not a box")


def _default_tol(dtype) -> float:
    """1e-5 in float32 (TV's inner prox iterations stop at 1e-5, so a float32 iterate
    cannot settle further), 1e-8 in float64."""
    return 1e-8 if jnp.finfo(dtype).bits == 64 else 1e-5


@full_precision
def minimize_potential_over_absent_set(posterior, structure: Structure, x0=None, *,
                                       max_iter: int = 5000, tol: float | None = None,
                                       key=None):
    """``argmin_{x in S} phi(x)``: the structure-free image most consistent with the data
    and prior, with ``S = {x : contrast(x) <= threshold}`` (intersected with the
    posterior's constraint, if any).

    Args:
      posterior: a log-concave :class:`uqrecon.Posterior` (real image).
      structure: the :class:`Structure` defining ``S``.
      x0: starting image (default: zeros); projected onto ``S`` first.
      max_iter: FISTA iteration cap.
      tol: stop when the relative change of the iterate falls below ``tol`` (default
        1e-5 in float32, 1e-8 in float64).
      key: PRNG key of the power iteration for the Lipschitz constant.

    Returns:
      ``(x, info)``: ``x`` in ``S`` (image, the posterior's dtype); ``info`` with
      ``potential`` (``phi(x)``), ``iterations``, ``converged``, ``step``, ``contrast``.
    """
    owner = "minimize_potential_over_absent_set"
    _check_convex_posterior(posterior, owner)
    _check_structure(structure, posterior.shape, owner)
    max_iter = _check_positive_int(max_iter, "max_iter", owner)
    tol = _default_tol(posterior.dtype) if tol is None else _check_finite(tol, "tol", owner)
    if tol <= 0:
        raise ValueError(f"{owner}: argument 'tol' must be > 0, got {tol}")
    dtype = posterior.dtype
    weights = jnp.asarray(structure.weights, dtype)
    threshold = jnp.asarray(structure.threshold, dtype)
    lower, upper, has_lower, has_upper = _box_of(posterior, dtype)
    _check_absent_set_not_empty(posterior, structure, owner)
    x0 = jnp.zeros(posterior.shape, dtype) if x0 is None else jnp.asarray(x0, dtype)
    if tuple(x0.shape) != posterior.shape:
        raise ValueError(f"{owner}: argument 'x0' has shape {tuple(x0.shape)}, expected "
                         f"{posterior.shape}")
    lip = float(posterior.lipschitz(key, x=x0))
    step = 1.0 / lip
    x, k, conv = _structure_free_fista(
        posterior, x0, weights, threshold, lower, upper, jnp.asarray(step, dtype),
        jnp.int32(max_iter), jnp.asarray(tol, dtype), has_lower, has_upper)
    info = {"potential": float(posterior.potential(x)), "iterations": int(k),
            "converged": bool(conv), "step": step,
            "contrast": float(contrast(structure, x))}
    return x, info


@dataclasses.dataclass(frozen=True, eq=False)
class BUQOTest:
    """Outcome of :func:`buqo_test`.

    Attributes:
      rejected: True -- H0 ("absent") rejected at level ``alpha``, the structure is
        confirmed; False -- not rejected (the structure-free image lies in the HPD
        region: a certificate, whatever the solver's convergence); None -- undecided
        (the solver did not converge and its iterate lies outside the HPD region).
      alpha: the level.
      tau_alpha: Pereyra's ``tau_alpha`` (nan when ``potential_level`` was given).
      potential_map: ``phi(x_MAP)``.
      potential_level: the HPD level ``phi(x_MAP) + N (tau_alpha + 1)`` (or the given one).
      potential_structure_free: ``min_{x in S} phi(x)`` (the solver's value).
      margin: ``potential_structure_free - potential_level``; > 0 rejects.
      ratio: ``(potential_structure_free - phi_MAP) / (potential_level - phi_MAP)``; > 1
        rejects (scale-free).
      contrast_map, contrast_structure_free: the contrast of ``x_MAP`` and of the
        minimiser (<= threshold).
      threshold: the structure's threshold.
      map_image, structure_free_image: ``x_MAP`` and the minimiser over ``S``.
      iterations, converged: the structure-free solve's.
      map_info: the MAP solve's info (empty when ``x_map`` was given).
      num_dims: ``N``.
    """

    rejected: bool | None
    alpha: float
    tau_alpha: float
    potential_map: float
    potential_level: float
    potential_structure_free: float
    margin: float
    ratio: float
    contrast_map: float
    contrast_structure_free: float
    threshold: float
    map_image: np.ndarray
    structure_free_image: np.ndarray
    iterations: int
    converged: bool
    map_info: dict
    num_dims: int

    @property
    def decided(self) -> bool:
        return self.rejected is not None


@full_precision
def buqo_test(posterior, structure: Structure, alpha: float = 0.01, *, x_map=None,
              potential_level=None, max_iter: int = 5000, tol: float | None = None,
              map_max_iter: int = 5000, key=None) -> BUQOTest:
    """BUQO: is ``C_alpha ∩ S`` empty? (Repetti, Pereyra & Wiaux 2019).

    Rejects H0 ("the structure is absent": ``contrast <= threshold``) at level
    ``alpha`` when ``min_{x in S} phi(x) > phi(x_MAP) + N (tau_alpha + 1)``.

    Args:
      posterior: a log-concave :class:`uqrecon.Posterior` with a real image (Gaussian or
        Poisson likelihood; Gaussian, GMRF, TV, wavelet-l1, smoothed-norm priors; a box
        or non-negativity constraint).
      structure: the :class:`Structure` (region, ring, threshold, polarity).
      alpha: level in (0, 1).
      x_map: the MAP image; computed with :func:`uqrecon.map_estimate` if None. An
        inexact MAP raises ``phi(x_MAP)`` and with it the level: the test gets more
        conservative, never less.
      potential_level: an HPD level to use instead of Pereyra's bound (e.g. the
        ``1 - alpha`` quantile of ``phi`` over exact draws); it must exceed ``phi(x_MAP)``.
      max_iter, tol: the structure-free solve's (and the MAP's) iteration cap and
        relative-change tolerance (default 1e-5 in float32, 1e-8 in float64).
      map_max_iter: iteration cap of the MAP solve (when ``x_map`` is None).
      key: PRNG key for the Lipschitz power iterations.

    Returns:
      A :class:`BUQOTest`.
    """
    from ..map import map_estimate
    owner = "buqo_test"
    alpha = _check_alpha(alpha, owner)
    _check_convex_posterior(posterior, owner)
    _check_structure(structure, posterior.shape, owner)
    _check_absent_set_not_empty(posterior, structure, owner)
    num_dims = math.prod(posterior.shape)
    map_info = {}
    if tol is None:
        tol = _default_tol(posterior.dtype)
    if x_map is None:
        x_map, map_info = map_estimate(posterior, max_iter=map_max_iter, tol=tol, key=key)
    else:
        x_map = jnp.asarray(x_map, posterior.dtype)
        if tuple(x_map.shape) != posterior.shape:
            raise ValueError(f"{owner}: argument 'x_map' has shape {tuple(x_map.shape)}, "
                             f"expected {posterior.shape}")
    phi_map = float(posterior.potential(x_map))
    if not math.isfinite(phi_map):
        raise ValueError(f"{owner}: argument 'x_map' violates the posterior's constraint "
                         f"(potential {phi_map})")
    if potential_level is None:
        tau = hpd_tau(alpha, num_dims)
        level = phi_map + num_dims * (tau + 1.0)
    else:
        tau = float("nan")
        level = _check_finite(potential_level, "potential_level", owner)
        if level <= phi_map:
            raise ValueError(f"{owner}: argument 'potential_level' ({level}) must exceed "
                             f"phi(x_MAP) = {phi_map}")
    x_s, info = minimize_potential_over_absent_set(posterior, structure, x0=x_map,
                                                   max_iter=max_iter, tol=tol, key=key)
    phi_s = info["potential"]
    if phi_s <= level:
        rejected = False            # x_s is in S and in C_alpha: the intersection is non-empty
    elif info["converged"]:
        rejected = True
    else:
        rejected = None
    return BUQOTest(
        rejected=rejected, alpha=alpha, tau_alpha=tau, potential_map=phi_map,
        potential_level=level, potential_structure_free=phi_s, margin=phi_s - level,
        ratio=(phi_s - phi_map) / (level - phi_map),
        contrast_map=float(contrast(structure, x_map)),
        contrast_structure_free=info["contrast"], threshold=structure.threshold,
        map_image=np.asarray(x_map), structure_free_image=np.asarray(x_s),
        iterations=info["iterations"], converged=info["converged"], map_info=map_info,
        num_dims=num_dims)


# --------------------------------------------------------------------------------------
# the sampling counterpart
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class SamplingTest:
    """Outcome of :func:`sampling_test`.

    Attributes:
      rejected: True when ``prob_absent < alpha`` and the Monte Carlo error cannot flip
        it; False when ``prob_absent >= alpha`` likewise; None when ``alpha`` lies within
        two standard errors of the estimate (or, with every draw on one side, within the
        rule-of-three bound ``3 / ess``): more draws are needed.
      prob_absent: ``P(contrast <= threshold | y)`` (estimate, or exact for Gaussian
        factors).
      mc_se: its Monte Carlo standard error ``sqrt(p (1 - p) / ess)`` (0 for Gaussian
        factors, and when every draw falls on one side).
      ess: effective sample size of the indicator (bulk ESS of the contrast when the
        indicator is constant); ``inf`` for Gaussian factors.
      num_draws: draws used (0 for Gaussian factors).
      contrast_mean, contrast_std: posterior mean and std of the contrast.
      alpha, threshold: as given / of the structure.
      source: ``'draws'`` or ``'gaussian'``.
    """

    rejected: bool | None
    prob_absent: float
    mc_se: float
    ess: float
    num_draws: int
    contrast_mean: float
    contrast_std: float
    alpha: float
    threshold: float
    source: str

    @property
    def decided(self) -> bool:
        return self.rejected is not None


def _gaussian_contrast_moments(g, c: np.ndarray):
    """Mean and variance of ``<c, x>`` under Gaussian factors (a typed family of
    :mod:`uqrecon.gaussians`)."""
    cf = np.asarray(c, np.float64).reshape(-1)
    mean = float(np.dot(g.mean.reshape(-1).astype(np.float64), cf))
    return mean, max(g.quadratic_form(cf), 0.0)


def sampling_test(result, structure: Structure, alpha: float = 0.05) -> SamplingTest:
    """Posterior probability that the structure is absent, and the decision at ``alpha``.

    Args:
      result: a :class:`uqrecon.Result` with draws (used when present) or Gaussian
        factors; or an array of draws ``(chains, draws, H, W)`` or ``(draws, H, W)``
        (one chain).
      structure: the :class:`Structure`.
      alpha: level in (0, 1): H0 is rejected when ``P(H0 | y) < alpha``.

    Returns:
      A :class:`SamplingTest`.
    """
    owner = "sampling_test"
    alpha = _check_alpha(alpha, owner)
    if not isinstance(structure, Structure):
        raise TypeError(f"{owner}: argument 'structure' must be a Structure, got "
                        f"{type(structure).__name__}")
    t = structure.threshold
    if isinstance(result, Result):
        _check_structure(structure, result.shape, owner)
        if result.draws is not None:
            draws = result.draws
        elif result.gaussian is not None:
            m, v = _gaussian_contrast_moments(result.gaussian, structure.weights)
            s = math.sqrt(v)
            p = float(special.ndtr((t - m) / s)) if s > 0 else float(m <= t)
            return SamplingTest(rejected=p < alpha, prob_absent=p, mc_se=0.0,
                                ess=float("inf"), num_draws=0, contrast_mean=m,
                                contrast_std=s, alpha=alpha, threshold=t, source="gaussian")
        else:
            raise ValueError(f"{owner}: argument 'result' has neither draws nor Gaussian "
                             f"factors; the contrast's law needs one of them")
    else:
        draws = np.asarray(result)
        if draws.ndim == 3:
            draws = draws[None]
        if draws.ndim != 4:
            raise ValueError(f"{owner}: argument 'result' must be a Result or draws of "
                             f"shape (chains, draws, H, W) or (draws, H, W), got "
                             f"{draws.shape}")
        _check_structure(structure, draws.shape[2:], owner)
    stat = contrast(structure, draws)                    # (chains, draws)
    n = stat.size
    absent = (stat <= t).astype(np.float64)
    p = float(absent.mean())
    if 0.0 < p < 1.0:
        ess = float(ess_bulk(absent[..., None])[0]) if stat.shape[1] >= 4 else float(n)
        ess = min(max(ess, 1.0), float(n)) if math.isfinite(ess) else float(n)
        se = math.sqrt(p * (1.0 - p) / ess)
        rejected = None if abs(p - alpha) <= 2.0 * se else p < alpha
    else:
        ess = float(ess_bulk(stat[..., None])[0]) if stat.shape[1] >= 4 else float(n)
        ess = min(max(ess, 1.0), float(n)) if math.isfinite(ess) else float(n)
        se = 0.0
        bound = 3.0 / ess       # rule of three: 95 % bound on the unseen side's probability
        if p == 0.0:
            rejected = True if bound < alpha else None
        else:
            rejected = False if 1.0 - bound >= alpha else None
    return SamplingTest(rejected=rejected, prob_absent=p, mc_se=se, ess=ess, num_draws=n,
                        contrast_mean=float(stat.mean()), contrast_std=float(stat.std()),
                        alpha=alpha, threshold=t, source="draws")

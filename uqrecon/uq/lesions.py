"""Planted lesions: test images for structure tests, keyed by seed.

Each replicate is a background -- a body ellipse with a few random inner ellipses, values
in [0, 1] -- and a small disc; inner ellipses that would touch the disc or its comparison
ring are redrawn, so the background is flat there and the truth's contrast is exactly
that of the planted disc. Four cases
share the background and location of a seed:

* ``'present'``: a disc of contrast ``contrast`` in the truth;
* ``'faint'``: a disc of contrast ``faint_contrast`` in the truth;
* ``'absent'``: no disc;
* ``'hallucinated'``: no disc in the truth, but a candidate reconstruction shows one
  (:func:`hallucinated_candidate` paints it onto any reconstruction, e.g. the MAP, as a
  network that invents structure would): a test that looks at the data must not confirm
  it, while a test that looks at the candidate does.

H0 ("absent": contrast <= threshold) is true in the truth for ``'absent'`` and
``'hallucinated'`` (their rejections measure a test's size) and false for ``'present'``
and ``'faint'`` when their contrast exceeds the threshold (rejections measure power).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .structure import Structure, disc_structure

__all__ = ["CASES", "PlantedLesion", "planted_lesion", "planted_lesion_set",
           "hallucinated_candidate"]

CASES = ("present", "faint", "absent", "hallucinated")


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedLesion:
    """One test image.

    Attributes:
      truth: the true image ``(H, W)``.
      case: one of :data:`CASES`.
      structure: the disc and ring to test (:class:`~uqrecon.uq.structure.Structure`).
      true_contrast: contrast of the truth over ``structure`` (0 for absent /
        hallucinated).
      hallucination: image to add to a reconstruction to make the candidate (the disc
        for ``'hallucinated'``, zeros otherwise).
      absent_is_true: whether H0 holds for the truth (up to 1e-9 of round-off in the
        contrast of a flat background).
      seed: the replicate's seed; center, radius: the disc in pixels.
    """

    truth: np.ndarray
    case: str
    structure: Structure
    true_contrast: float
    hallucination: np.ndarray
    absent_is_true: bool
    seed: int
    center: tuple
    radius: float


def _ellipse_image(rows, shape):
    """Sum of ellipse indicators times values, on the grid and with the parametrisation
    of :func:`uqrecon.phantoms.ellipse_phantom` (in numpy: the generator draws and tests
    many candidate ellipses, and eager JAX calls would dominate its cost)."""
    h, w = shape
    xx, yy = np.meshgrid(np.linspace(-1, 1, h) if h > 1 else np.zeros(1),
                         np.linspace(-1, 1, w) if w > 1 else np.zeros(1), indexing="ij")
    img = np.zeros(shape)
    for value, a, b, x0, y0, theta in rows:
        c, s = np.cos(theta), np.sin(theta)
        u = c * (xx - x0) + s * (yy - y0)
        v = -s * (xx - x0) + c * (yy - y0)
        img += value * ((u / a) ** 2 + (v / b) ** 2 <= 1)
    return img


def _background_and_center(rng, shape, radius, ring_width, num_inner, tries=1000):
    """A body ellipse (value 0.3-0.45), a lesion centre whose disc and ring (plus one
    pixel) lie inside the body, and ``num_inner`` inner ellipses (values +-0.1..0.25)
    drawn at random but kept only if they miss that patch: the background is constant
    over the disc and its ring by construction."""
    h, w = shape
    reach = radius + ring_width
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    body = [rng.uniform(0.3, 0.45), rng.uniform(0.8, 0.9), rng.uniform(0.65, 0.8),
            0.0, 0.0, rng.uniform(0, np.pi)]
    inside_body = _ellipse_image([body], shape) > 0
    for _ in range(tries):
        ci = rng.uniform(reach + 1, h - 2 - reach)
        cj = rng.uniform(reach + 1, w - 2 - reach)
        patch = np.hypot(ii - ci, jj - cj) <= reach + 1.0
        if inside_body[patch].all():
            break
    else:
        raise RuntimeError("planted_lesion: no place inside the body for the lesion; use "
                           "a smaller 'radius' / 'ring_width' or a larger image")
    rows = [body]
    for _ in range(tries):
        if len(rows) > num_inner:
            break
        sign = rng.choice([-1.0, 1.0])
        row = [sign * rng.uniform(0.1, 0.25), rng.uniform(0.06, 0.22),
               rng.uniform(0.06, 0.22), rng.uniform(-0.55, 0.55),
               rng.uniform(-0.55, 0.55), rng.uniform(0, np.pi)]
        if not (_ellipse_image([row], shape)[patch] != 0).any():
            rows.append(row)
    return np.clip(_ellipse_image(rows, shape), 0.0, 1.0), (ci, cj)


def planted_lesion(seed: int, case: str, shape=(32, 32), *, radius: float = 2.5,
                   ring_width: float = 2.0, contrast: float = 0.5,
                   faint_contrast: float = 0.15, threshold: float = 0.0,
                   num_inner: int = 3) -> PlantedLesion:
    """One planted-lesion replicate.

    Args:
      seed: replicate seed (same seed: same background and location for every case).
      case: ``'present'``, ``'faint'``, ``'absent'`` or ``'hallucinated'``.
      shape: image shape ``(H, W)``.
      radius: lesion radius in pixels.
      ring_width: width of the comparison ring in pixels.
      contrast: lesion contrast for ``'present'`` and ``'hallucinated'`` (the candidate's).
      faint_contrast: lesion contrast for ``'faint'``.
      threshold: H0 is ``contrast <= threshold``.
      num_inner: number of random inner ellipses of the background.

    Returns:
      A :class:`PlantedLesion` (float64 images).
    """
    owner = "planted_lesion"
    if case not in CASES:
        raise ValueError(f"{owner}: argument 'case' must be one of {CASES}, got {case!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{owner}: argument 'seed' must be an int, got {seed!r}")
    for name, v in (("radius", radius), ("ring_width", ring_width),
                    ("contrast", contrast), ("faint_contrast", faint_contrast)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{owner}: argument '{name}' must be a finite number > 0, "
                             f"got {v!r}")
    rng = np.random.default_rng(int(seed))
    shape = tuple(int(v) for v in shape)
    bg, (ci, cj) = _background_and_center(rng, shape, radius, ring_width, int(num_inner))
    structure = disc_structure(shape, (ci, cj), radius, ring_width, threshold)
    disc = structure.region.astype(np.float64)
    amount = {"present": contrast, "faint": faint_contrast}.get(case, 0.0)
    truth = bg + amount * disc
    hallucination = contrast * disc if case == "hallucinated" else np.zeros_like(bg)
    true_contrast = float(np.tensordot(truth, structure.weights, axes=2))
    return PlantedLesion(truth=truth, case=case, structure=structure,
                         true_contrast=true_contrast, hallucination=hallucination,
                         absent_is_true=true_contrast <= threshold + 1e-9, seed=int(seed),
                         center=(ci, cj), radius=float(radius))


def planted_lesion_set(seeds, cases=CASES, **kwargs) -> list:
    """``[planted_lesion(seed, case, **kwargs) for seed in seeds for case in cases]``.

    Args:
        seeds: integer seeds.
        cases: the cases of each seed.
        **kwargs: passed to :func:`planted_lesion`.

    Returns:
        A list of :class:`PlantedLesion`.
    """
    return [planted_lesion(s, c, **kwargs) for s in seeds for c in cases]


def hallucinated_candidate(lesion: PlantedLesion, reconstruction) -> np.ndarray:
    """The candidate image a hallucinating method would report: ``reconstruction`` plus
    the lesion's hallucination (unchanged for other cases).

    Args:
      lesion: a :class:`PlantedLesion`.
      reconstruction: image ``(H, W)`` (e.g. the MAP).

    Returns:
      The candidate image (the reconstruction's dtype).
    """
    rec = np.asarray(reconstruction)
    if rec.shape != lesion.truth.shape:
        raise ValueError(f"hallucinated_candidate: argument 'reconstruction' has shape "
                         f"{rec.shape}, expected {lesion.truth.shape}")
    return (rec + lesion.hallucination).astype(rec.dtype)

"""Typed Gaussian families: the factors of an approximation ``N(mean, C)`` that a
:class:`~uqrecon.result.Result` carries (``Result.gaussian``).

* :class:`DiagonalGaussian` ``(mean, diag)``: ``C = diag(diag)`` (mean-field VI);
* :class:`LowRankGaussian` ``(mean, diag, factor)``: ``C = diag(diag) + F F^T`` with ``F``
  of shape ``(n, k)`` (low-rank VI);
* :class:`DenseGaussian` ``(mean, cov)``: ``C = cov`` of shape ``(n, n)`` (Laplace and exact
  Gaussians on small images);
* :class:`UpdatedDiagonalGaussian` ``(mean, precision, vectors, theta)``:
  ``C = D^{-1} - V diag(1 - 1/theta) V^T`` (Laplace with its diagonal base, any size).

``n`` counts real coordinates in row-major order: the pixels of a real image, or the
``2 * pixels`` coordinates ``[Re x.ravel(); Im x.ravel()]`` of a complex one (``mean`` is
then the complex image and ``diag`` has shape ``(2, *shape)``).

Each family answers, without the caller switching on its kind: coordinate and pixel
variances, the variance ``w^T C w`` of linear functionals (structure tests, risk), the dense
covariance and its trace (Gaussian distances), rescaling (recalibration) and exact draws.
They are read-only :class:`~collections.abc.Mapping` views of their arrays as well
(``g["kind"]``, ``g["diag"]``, ``dict(g)``), which is how they are saved and how
``Result(gaussian={...})`` takes them; :func:`gaussian_factors` validates such a dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["GaussianFactors", "DiagonalGaussian", "LowRankGaussian", "DenseGaussian",
           "UpdatedDiagonalGaussian", "gaussian_factors", "KINDS"]


class GaussianFactors(Mapping):
    """Base class of the typed families (see the module docstring). Arrays are numpy and
    checked by :func:`gaussian_factors`; construct the subclasses through it."""

    kind: str = ""
    _arrays: tuple[str, ...] = ()

    def __init__(self, mean: np.ndarray, **arrays: np.ndarray):
        self.mean = mean
        for name in self._arrays:
            setattr(self, name, arrays[name])

    # -- the Mapping view --------------------------------------------------------------
    def __getitem__(self, key):
        if key == "kind":
            return self.kind
        if key == "mean" or key in self._arrays:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self):
        return iter(("kind", "mean", *self._arrays))

    def __len__(self):
        return 2 + len(self._arrays)

    def __repr__(self):
        return f"{type(self).__name__}(n={self.size}, dtype={self.mean.dtype})"

    # -- shapes --------------------------------------------------------------------------
    @property
    def is_complex(self) -> bool:
        return bool(np.iscomplexobj(self.mean))

    @property
    def coordinate_shape(self) -> tuple:
        """Shape of the real coordinates: the image's, or ``(2, *shape)`` if complex."""
        return (2, *self.mean.shape) if self.is_complex else tuple(self.mean.shape)

    @property
    def size(self) -> int:
        """``n``, the number of real coordinates."""
        return math.prod(self.coordinate_shape)

    def real_mean(self) -> np.ndarray:
        """The mean in real coordinates, flat float64 ``(n,)``."""
        m = self.mean
        if self.is_complex:
            m = np.stack([m.real, m.imag])
        return np.asarray(m, np.float64).reshape(-1)

    # -- what the families compute -------------------------------------------------------
    def coordinate_variance(self) -> np.ndarray:
        """``diag(C)``, shaped as :attr:`coordinate_shape`."""
        raise NotImplementedError

    def variance(self) -> np.ndarray:
        """Pixel variances (complex image: ``E|x - mean|^2``, the two coordinates' sum)."""
        var = self.coordinate_variance()
        return var[0] + var[1] if self.is_complex else var

    def quadratic_form(self, w) -> float:
        """``w^T C w`` for a real ``w`` of ``n`` coordinates (any shape), in float64: the
        variance of the linear functional ``<w, x>``."""
        raise NotImplementedError

    def covariance(self) -> np.ndarray:
        """The dense ``(n, n)`` covariance, float64 (small problems)."""
        raise NotImplementedError

    def trace(self) -> float:
        """``tr C`` without forming ``C``."""
        return float(np.sum(self.coordinate_variance(), dtype=np.float64))

    def scaled(self, s: float) -> "GaussianFactors":
        """The same family with covariance ``s^2 C`` (mean unchanged)."""
        raise NotImplementedError

    def with_mean(self, mean) -> "GaussianFactors":
        """The same covariance about another mean (of the same shape)."""
        return type(self)(np.asarray(mean), **{k: getattr(self, k) for k in self._arrays})

    def deviations(self, key, num: int) -> np.ndarray:
        """``num`` exact draws of ``N(0, C)``, float64 ``(num, n)`` (JAX's generator: the
        same ``key`` gives the same draws)."""
        raise NotImplementedError

    def _normals(self, key, shape):
        import jax

        zdtype = jax.dtypes.canonicalize_dtype(self.mean.real.dtype)  # float32 unless x64
        return np.asarray(jax.random.normal(key, shape, zdtype), np.float64)


class DiagonalGaussian(GaussianFactors):
    """``C = diag(diag)``."""

    kind = "diag"
    _arrays = ("diag",)

    def coordinate_variance(self):
        return self.diag

    def quadratic_form(self, w):
        w = np.asarray(w, np.float64).reshape(-1)
        return float(np.sum(w * w * self.diag.reshape(-1)))

    def covariance(self):
        return np.diag(self.diag.reshape(-1).astype(np.float64))

    def scaled(self, s):
        return DiagonalGaussian(self.mean, diag=self.diag * s ** 2)

    def deviations(self, key, num):
        import jax

        k1, _ = jax.random.split(key)
        return self._normals(k1, (num, self.size)) * np.sqrt(self.diag.reshape(-1))


class LowRankGaussian(GaussianFactors):
    """``C = diag(diag) + F F^T``, ``F = factor`` of shape ``(n, k)``."""

    kind = "lowrank"
    _arrays = ("diag", "factor")

    def coordinate_variance(self):
        return self.diag + np.sum(self.factor ** 2, axis=1).reshape(self.diag.shape)

    def quadratic_form(self, w):
        w = np.asarray(w, np.float64).reshape(-1)
        return float(np.sum(w * w * self.diag.reshape(-1))
                     + np.sum((self.factor.astype(np.float64).T @ w) ** 2))

    def covariance(self):
        f = self.factor.astype(np.float64)
        return np.diag(self.diag.reshape(-1).astype(np.float64)) + f @ f.T

    def scaled(self, s):
        return LowRankGaussian(self.mean, diag=self.diag * s ** 2, factor=self.factor * s)

    def deviations(self, key, num):
        import jax

        k1, k2 = jax.random.split(key)
        out = self._normals(k1, (num, self.size)) * np.sqrt(self.diag.reshape(-1))
        return out + self._normals(k2, (num, self.factor.shape[1])) @ self.factor.T


class DenseGaussian(GaussianFactors):
    """``C = cov``, ``(n, n)``."""

    kind = "dense"
    _arrays = ("cov",)

    def coordinate_variance(self):
        return np.diagonal(self.cov).reshape(self.coordinate_shape).copy()

    def quadratic_form(self, w):
        w = np.asarray(w, np.float64).reshape(-1)
        return float(w @ self.cov.astype(np.float64) @ w)

    def covariance(self):
        return self.cov.astype(np.float64)

    def trace(self):
        return float(np.trace(self.cov, dtype=np.float64))

    def scaled(self, s):
        return DenseGaussian(self.mean, cov=self.cov * s ** 2)

    def deviations(self, key, num):
        import jax

        from .linalg import psd_factor

        k1, _ = jax.random.split(key)
        return self._normals(k1, (num, self.size)) @ psd_factor(self.cov).T


class UpdatedDiagonalGaussian(GaussianFactors):
    """``C = D^{-1} - V diag(1 - 1/theta) V^T``: a diagonal base precision ``D``
    (``precision``) updated along ``k`` ``D``-orthonormal directions ``V`` (``vectors``,
    ``(n, k)``, ``V^T D V = I``) with pencil eigenvalues ``theta`` (``(k,)``, > 0). The
    low-rank Laplace approximation with its diagonal base (smooth non-Gaussian posteriors,
    any size); the update may add variance (``theta < 1``) or remove it."""

    kind = "diag_update"
    _arrays = ("precision", "vectors", "theta")

    def _c(self):
        return 1.0 - 1.0 / self.theta.astype(np.float64)

    def coordinate_variance(self):
        v = self.vectors.astype(np.float64)
        var = 1.0 / self.precision.reshape(-1).astype(np.float64) - (v * v) @ self._c()
        return np.maximum(var, 0.0).reshape(self.precision.shape)

    def quadratic_form(self, w):
        w = np.asarray(w, np.float64).reshape(-1)
        vw = self.vectors.astype(np.float64).T @ w
        return float(np.sum(w * w / self.precision.reshape(-1))
                     - np.sum(self._c() * vw * vw))

    def covariance(self):
        v = self.vectors.astype(np.float64)
        return np.diag(1.0 / self.precision.reshape(-1).astype(np.float64)) \
            - (v * self._c()) @ v.T

    def trace(self):
        return float(np.sum(1.0 / self.precision.astype(np.float64))
                     - np.sum(self.vectors.astype(np.float64) ** 2 @ self._c()))

    def scaled(self, s):
        return UpdatedDiagonalGaussian(self.mean, precision=self.precision / s ** 2,
                                       vectors=self.vectors * s, theta=self.theta)

    def deviations(self, key, num):
        """``u - V diag(1 - theta^{-1/2}) V^T D u`` with ``u ~ N(0, D^{-1})``: exact."""
        import jax

        k1, _ = jax.random.split(key)
        d = self.precision.reshape(-1).astype(np.float64)
        z = self._normals(k1, (num, self.size))
        v = self.vectors.astype(np.float64)
        g = 1.0 - 1.0 / np.sqrt(self.theta.astype(np.float64))
        return z / np.sqrt(d) - ((z * np.sqrt(d)) @ v * g) @ v.T


KINDS = {cls.kind: cls for cls in (DiagonalGaussian, LowRankGaussian, DenseGaussian,
                                  UpdatedDiagonalGaussian)}


def _float_array(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:  # pragma: no cover - exotic input
        raise TypeError(f"'{name}' must be an array, got {type(x).__name__}") from e
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"'{name}' must be a real floating array, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    return a


def _entry(spec, kind, name) -> np.ndarray:
    """The array ``spec[name]`` that ``kind`` needs, as a real floating array."""
    if spec.get(name) is None:
        raise ValueError(f"'gaussian' of kind {kind!r} needs {name!r}")
    return _float_array(spec[name], f"gaussian[{name!r}]")


def _require(ok, name, what):
    if not ok:
        raise ValueError(f"'gaussian[\"{name}\"]' {what}")


def gaussian_factors(spec, shape: tuple, mean=None) -> GaussianFactors:
    """Validate Gaussian factors against the image ``shape`` and return the typed family.

    Args:
        spec: a :class:`GaussianFactors`, or a mapping ``{'kind', 'mean', ...}`` with the
            arrays its kind needs (``diag``; ``diag`` and ``factor``; ``cov``) and no
            others (entries a kind does not use must be absent or None). ``diag`` may be
            flat or image-shaped.
        shape: the image shape.
        mean: the mean to use when ``spec`` has none (e.g. the Result's mean).

    Returns:
        The :class:`GaussianFactors` subclass of ``spec['kind']``, arrays as numpy,
        ``mean`` image-shaped, ``diag`` shaped as the real coordinates.

    Raises:
        TypeError / ValueError naming the entry that is wrong.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"'gaussian' must be a dict, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"'gaussian[\"kind\"]' must be one of {tuple(KINDS)}, got "
                         f"{kind!r}")
    n = math.prod(shape)
    gm = spec.get("mean", mean)
    if gm is None:
        raise ValueError("'gaussian' needs a 'mean'")
    gm = np.asarray(gm)
    if not np.iscomplexobj(gm):
        gm = _float_array(gm, "gaussian['mean']")
    if gm.size != n:
        raise ValueError(f"'gaussian[\"mean\"]' has {gm.size} entries, expected {n} "
                         f"{shape}")
    gm = gm.reshape(shape)
    cplx = np.iscomplexobj(gm)
    dshape = (2, *shape) if cplx else tuple(shape)    # real coordinates of a complex image
    n = 2 * n if cplx else n
    arrays = {}
    if kind in ("diag", "lowrank"):
        d = _entry(spec, kind, "diag")
        _require(d.size == n, "diag", f"has {d.size} entries, expected {n} {dshape}")
        _require(np.all(d >= 0), "diag", "must be >= 0 (and not NaN)")
        arrays["diag"] = d.reshape(dshape)
    if kind == "lowrank":
        f = _entry(spec, kind, "factor")
        _require(f.ndim == 2 and f.shape[0] == n, "factor",
                 f"must have shape ({n}, k), got {f.shape}")
        _require(np.all(np.isfinite(f)), "factor", "contains non-finite values")
        arrays["factor"] = f
    if kind == "dense":
        c = _entry(spec, kind, "cov")
        _require(c.shape == (n, n), "cov", f"must have shape ({n}, {n}), got {c.shape}")
        _require(np.all(np.isfinite(c)), "cov", "contains non-finite values")
        arrays["cov"] = c
    if kind == "diag_update":
        d, v = _entry(spec, kind, "precision"), _entry(spec, kind, "vectors")
        t = _entry(spec, kind, "theta").reshape(-1)
        _require(d.size == n and np.all(np.isfinite(d)) and np.all(d > 0), "precision",
                 f"must hold {n} finite values > 0")
        _require(v.shape == (n, t.size) and np.all(np.isfinite(v)), "vectors",
                 f"must be finite of shape ({n}, {t.size}), got {v.shape}")
        _require(np.all(np.isfinite(t)) and np.all(t > 0), "theta",
                 "must be finite and > 0")
        arrays.update(precision=d.reshape(dshape), vectors=v, theta=t)
    unused = {k for k, v in spec.items()
              if k not in ("kind", "mean", *arrays) and v is not None}
    if unused:
        raise ValueError(f"'gaussian' of kind {kind!r} has unused entries {sorted(unused)}")
    return KINDS[kind](gm, **arrays)

"""The one output type of every inference method: :class:`Result`.

A ``Result`` holds the posterior mean and variance (always), optional draws
``(chains, draws, *shape)``, optional Gaussian factors, and diagnostics, timings and
provenance dictionaries. It knows arrays only -- never how it was produced -- so NUTS,
variational, Laplace and deep-UQ outputs are compared by the same tools (``uqrecon.uq``).

Gaussian factors (``gaussian=``) describe an approximation ``N(mean, C)``. The Result
holds them as a typed family of :mod:`uqrecon.gaussians` (``DiagonalGaussian``,
``LowRankGaussian``, ``DenseGaussian``, ``UpdatedDiagonalGaussian``: variances,
``w^T C w``, draws, rescaling without switching on a kind), given as one of those or as
the dict of its arrays:

* ``{'kind': 'diag', 'mean', 'diag'}``: ``C = diag(diag)``;
* ``{'kind': 'lowrank', 'mean', 'diag', 'factor'}``: ``C = diag(diag) + F F^T``, ``F`` of
  shape ``(n, k)`` with ``n`` the number of pixels (row-major ravel of the image);
* ``{'kind': 'dense', 'mean', 'cov'}``: ``C = cov`` of shape ``(n, n)``;
* ``{'kind': 'diag_update', 'mean', 'precision', 'vectors', 'theta'}``:
  ``C = diag(1/precision) - V diag(1 - 1/theta) V^T`` (the Laplace approximation with
  its diagonal base).

``mean`` may be omitted (it defaults to the result's mean); ``diag`` is image-shaped
(a flat ``(n,)`` vector is accepted and reshaped). Entries a kind does not use must be
absent or None.

Complex images (MRI with phase): ``mean`` and ``draws`` are complex; ``variance`` is real,
the expected squared modulus ``E|x - mean|^2 = Var(Re x) + Var(Im x)`` per pixel (what
``np.var`` gives for complex draws), and ``std`` its square root. Gaussian factors are
those of the real coordinates ``w = (Re x, Im x)`` (``n`` above becomes ``2 n``: ``diag``
of shape ``(2, *shape)``, ``factor`` ``(2 n, k)``, ``cov`` ``(2 n, 2 n)``, in the order
``[Re x.ravel(); Im x.ravel()]``), with ``mean`` the complex image.
:meth:`Result.real_coordinates` gives the real result of ``w`` (shape ``(2, *shape)``),
where intervals, quantiles and per-coordinate comparisons are defined;
:meth:`Result.from_real_coordinates` is its inverse.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import zipfile
from typing import Mapping

import numpy as np
from scipy import special

from .gaussians import GaussianFactors, _float_array, gaussian_factors

__all__ = [
    "Result",
    "equal_tailed_interval",
    "gaussian_interval",
    "make_provenance",
    "validate_gaussian",
]

_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------
# Interval primitives: the one definition used by Result and uqrecon.uq.metrics
# --------------------------------------------------------------------------------------
def check_probability(value, name: str = "level") -> float:
    """``value`` as a float strictly inside (0, 1): a TypeError for a non-number, a
    ValueError otherwise, both naming ``name`` (levels, alphas, confidences)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"'{name}' must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"'{name}' must lie in (0, 1), got {value!r}")
    return v


def _check_level(level) -> float:
    return check_probability(level, "level")


def equal_tailed_interval(draws, level: float = 0.9, axis=0):
    """Pixelwise ``(1-level)/2`` and ``(1+level)/2`` quantiles of ``draws`` along ``axis``.

    Quantiles are numpy's default (linear interpolation, R type 7). ``axis`` may be a
    tuple, e.g. ``(0, 1)`` to pool chains and draws.

    Args:
        draws: array of draws.
        level: credible level in (0, 1).
        axis: axis (or tuple of axes) of the draws.

    Returns:
        A pair ``(lo, hi)`` of arrays with ``axis`` removed.
    """
    level = _check_level(level)
    draws = np.asarray(draws)
    q = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return q[0].astype(draws.dtype, copy=False), q[1].astype(draws.dtype, copy=False)


def gaussian_interval(mean, std, level: float = 0.9):
    """Equal-tailed interval ``mean -/+ z std`` with ``z = Phi^-1((1+level)/2)``."""
    level = _check_level(level)
    mean, std = np.asarray(mean), np.asarray(std)
    z = special.ndtri((1 + level) / 2)
    dtype = np.result_type(mean, std)
    return (mean - z * std).astype(dtype, copy=False), (mean + z * std).astype(dtype, copy=False)


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------
_VERSION_PACKAGES = ("uqrecon", "jax", "jaxlib", "numpy", "blackjax", "numpyro", "optax",
                     "flax", "odl", "astra-toolbox")


def make_provenance(method: str, config: Mapping | None = None, seed=None, dtype=None,
                    **extra) -> dict:
    """Provenance dict: method, config, seed, dtype, library versions and JAX device."""
    from .linalg import matmul_precision
    versions = {}
    for pkg in _VERSION_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import jax

        dev = jax.devices()[0]
        device = f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
    except Exception:  # no JAX backend: provenance must still be writable
        device = "unknown"
    prov = {
        "method": str(method),
        "config": dict(config or {}),
        "seed": seed,
        "dtype": None if dtype is None else np.dtype(dtype).name,
        "versions": versions,
        "device": device,
        # float32 matrix products: "highest" inside the entry points (linalg.full_precision)
        "matmul_precision": matmul_precision(),
    }
    prov.update(extra)
    return prov


# --------------------------------------------------------------------------------------
# Normalisation helpers
# --------------------------------------------------------------------------------------
def _to_host(value, name: str):
    """Convert JAX arrays (recursively in dicts/lists/tuples) to numpy; keep plain data."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"'{name}' keys must be strings, got {k!r}")
            out[k] = _to_host(v, f"{name}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v, name) for v in value)
    if isinstance(value, (str, bool, int, float, type(None), np.ndarray, np.generic)):
        return value
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def _float_or_complex_array(x, name: str) -> np.ndarray:
    """A real floating array as :func:`_float_array`, or a complex floating one."""
    if np.iscomplexobj(x):
        return np.asarray(x)
    return _float_array(x, name)


def validate_gaussian(gaussian: Mapping, shape: tuple, mean=None) -> GaussianFactors:
    """Check Gaussian factors against the image ``shape``; return the typed family
    (:func:`uqrecon.gaussians.gaussian_factors`; complex ``mean``: factors of the real
    coordinates, see the module docstring)."""
    if isinstance(gaussian, GaussianFactors):
        gaussian = dict(gaussian)
    return gaussian_factors(_to_host(gaussian, "gaussian") if isinstance(gaussian, Mapping)
                            else gaussian, shape, mean)


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """Posterior summary returned by every inference method (see module docstring).

    ``mean`` and ``variance`` are image-shaped numpy arrays; ``draws`` (if kept) has
    shape ``(chains, draws, *shape)``. Construction validates shapes, ``variance >= 0``
    and a NaN-free ``mean``, and moves JAX arrays to host numpy arrays.
    """

    mean: np.ndarray
    variance: np.ndarray
    draws: np.ndarray | None = None
    diagnostics: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    gaussian: GaussianFactors | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        mean = _float_or_complex_array(self.mean, "mean")
        if mean.ndim == 0:
            raise ValueError("'mean' must be image-shaped, got a scalar")
        if np.isnan(mean).any():
            raise ValueError("'mean' contains NaN")
        variance = _float_array(self.variance, "variance")
        if variance.shape != mean.shape:
            raise ValueError(
                f"'variance' has shape {variance.shape}, expected the shape of 'mean' {mean.shape}")
        if not np.all(variance >= 0):
            raise ValueError("'variance' must be >= 0 everywhere (and not NaN)")
        set_("mean", mean)
        set_("variance", variance)
        if self.draws is not None:
            draws = _float_or_complex_array(self.draws, "draws")
            if np.iscomplexobj(draws) != np.iscomplexobj(mean):
                raise TypeError("'draws' and 'mean' must both be real or both complex, got "
                                f"{draws.dtype} and {mean.dtype}")
            if draws.ndim != mean.ndim + 2 or draws.shape[2:] != mean.shape:
                raise ValueError(
                    f"'draws' must have shape (chains, draws, *{mean.shape}), got {draws.shape}")
            if draws.shape[0] < 1 or draws.shape[1] < 1:
                raise ValueError(f"'draws' must hold at least one draw, got shape {draws.shape}")
            set_("draws", draws)
        for name in ("diagnostics", "timings", "provenance"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise TypeError(f"'{name}' must be a dict, got {type(value).__name__}")
            set_(name, _to_host(value, name))
        if ("compile_s" in self.timings and "run_s" in self.timings
                and "total_s" not in self.timings):
            self.timings["total_s"] = float(self.timings["compile_s"]) + float(self.timings["run_s"])
        if self.gaussian is not None:
            set_("gaussian", validate_gaussian(self.gaussian, mean.shape, mean))

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_draws(cls, draws, **kwargs) -> "Result":
        """Result whose mean/variance are the pooled sample mean and (ddof=0) variance.

        ``draws`` has shape ``(chains, draws, *shape)`` (a single chain: ``draws[None]``;
        axes are never guessed). Other keyword arguments are passed to :class:`Result`.

        Args:
            draws: draws of shape ``(chains, draws, *shape)``.
            **kwargs: other :class:`Result` fields (diagnostics, timings, provenance, ...).

        Returns:
            The :class:`Result`.
        """
        d = _float_or_complex_array(draws, "draws")
        if d.ndim < 3:
            raise ValueError(
                f"'draws' must have shape (chains, draws, *shape) with a >=1-D image, got {d.shape}")
        acc = np.complex128 if np.iscomplexobj(d) else np.float64
        mean = np.mean(d, axis=(0, 1), dtype=acc)
        var = np.var(d, axis=(0, 1), dtype=acc)    # complex: E|x - mean|^2 (real)
        real = np.finfo(d.dtype).dtype
        return cls(mean=mean.astype(d.dtype), variance=var.astype(real), draws=d, **kwargs)

    @classmethod
    def from_gaussian(cls, gaussian: Mapping, **kwargs) -> "Result":
        """Result of a Gaussian approximation: mean and variance read from its factors.

        Args:
            gaussian: the Gaussian factors (a dict with ``kind`` and its arrays; see the
                module docstring).
            **kwargs: other :class:`Result` fields.

        Returns:
            The :class:`Result`, with ``gaussian`` set.
        """
        if not isinstance(gaussian, Mapping) or "mean" not in gaussian:
            raise ValueError("'gaussian' must be a dict with a 'mean' entry")
        shape = np.shape(gaussian["mean"])
        g = validate_gaussian(gaussian, shape)
        return cls(mean=g.mean, variance=g.variance(), gaussian=g, **kwargs)

    @property
    def is_complex(self) -> bool:
        """True for a complex image (mean and draws complex)."""
        return bool(np.iscomplexobj(self.mean))

    def real_coordinates(self) -> "Result":
        """The result of the real coordinates ``w = (Re x, Im x)`` of a complex image:
        shape ``(2, *shape)``, per-coordinate variances (from the draws, else the
        Gaussian factors, else half the pixel variance each: a circular posterior),
        the same diagnostics, timings and provenance. Intervals, quantiles and
        per-coordinate comparisons of a complex result are made here.

        Returns:
            A real :class:`Result`; a real result is returned unchanged.
        """
        if not self.is_complex:
            return self
        mean = np.stack([self.mean.real, self.mean.imag])
        draws = None
        if self.draws is not None:
            draws = np.stack([self.draws.real, self.draws.imag], axis=2)
        if draws is not None:
            var = np.var(draws, axis=(0, 1), dtype=np.float64).astype(self.variance.dtype)
        elif self.gaussian is not None:
            var = self.gaussian.coordinate_variance()
        else:
            var = np.stack([self.variance, self.variance]) / 2
        gaussian = None
        if self.gaussian is not None:
            gaussian = {**self.gaussian, "mean": mean}
        return Result(mean=mean, variance=var, draws=draws, diagnostics=self.diagnostics,
                      timings=self.timings, provenance=self.provenance, gaussian=gaussian)

    @classmethod
    def from_real_coordinates(cls, result: "Result", **changes) -> "Result":
        """The complex-image result whose real coordinates ``(Re x, Im x)`` (the leading
        axis of length 2 of ``result``'s image) ``result`` describes: complex mean and
        draws, pixel variance ``Var(Re) + Var(Im)``, Gaussian factors kept (they are the
        real coordinates' by convention). Per-pixel diagnostics of the coordinates
        (arrays of the real image shape) are reduced to the pixel's worse coordinate:
        ESS (``ess*``) by the minimum, R-hat (``rhat*``) by the maximum; other such
        arrays are kept in real coordinates.

        Args:
            result: a real :class:`Result` of image shape ``(2, *shape)``.
            **changes: fields to replace in the complex result (e.g. ``provenance``).

        Returns:
            The complex :class:`Result`.
        """
        if result.is_complex or result.mean.ndim < 2 or result.mean.shape[0] != 2:
            raise ValueError(f"'result' must be a real result of shape (2, *shape), got "
                             f"{result.mean.dtype} {result.mean.shape}")
        rshape = result.mean.shape
        mean = result.mean[0] + 1j * result.mean[1]
        variance = result.variance[0] + result.variance[1]
        draws = None
        if result.draws is not None:
            draws = result.draws[:, :, 0] + 1j * result.draws[:, :, 1]
        diagnostics = {}
        for k, v in result.diagnostics.items():
            if isinstance(v, np.ndarray) and v.shape == rshape:
                if k.startswith("ess"):
                    v = np.minimum(v[0], v[1])
                elif k.startswith("rhat"):
                    v = np.maximum(v[0], v[1])
            diagnostics[k] = v
        gaussian = None
        if result.gaussian is not None:
            gaussian = {**result.gaussian, "mean": mean}
        fields = dict(mean=mean, variance=variance, draws=draws, diagnostics=diagnostics,
                      timings=result.timings, provenance=result.provenance,
                      gaussian=gaussian)
        fields.update(changes)
        return cls(**fields)

    def replace(self, **changes) -> "Result":
        """A copy with some fields replaced (validated again).

        Args:
            **changes: new values by field name.

        Returns:
            A new :class:`Result`.
        """
        return dataclasses.replace(self, **changes)

    # -- properties ---------------------------------------------------------------------
    @property
    def std(self) -> np.ndarray:
        """Pixelwise posterior standard deviation."""
        return np.sqrt(self.variance)

    @property
    def shape(self) -> tuple:
        """Image shape."""
        return self.mean.shape

    @property
    def dtype(self):
        return self.mean.dtype

    @property
    def num_chains(self) -> int:
        return 0 if self.draws is None else self.draws.shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain (0 when none are kept)."""
        return 0 if self.draws is None else self.draws.shape[1]

    def pooled_draws(self) -> np.ndarray:
        """Draws with chains pooled, shape ``(chains * draws, *shape)``.

        Returns:
            Array ``(chains * draws, *shape)`` (ValueError if no draws were kept).
        """
        if self.draws is None:
            raise ValueError("this Result has no 'draws'")
        return self.draws.reshape((-1, *self.shape))

    # -- intervals and quantiles --------------------------------------------------------
    def interval(self, level: float = 0.9):
        """Equal-tailed credible interval ``(lo, hi)``; from pooled draws if kept, else
        Gaussian quantiles of mean and std.

        Args:
            level: credible level in (0, 1).

        Returns:
            A pair ``(lo, hi)`` of image-shaped arrays.
        """
        self._refuse_complex("interval")
        if self.draws is not None:
            return equal_tailed_interval(self.draws, level, axis=(0, 1))
        return gaussian_interval(self.mean, self.std, level)

    def _refuse_complex(self, what):
        if self.is_complex:
            raise ValueError(f"Result.{what}: a complex image has no ordered {what}; use "
                             f"result.real_coordinates().{what}(...) for the real and "
                             f"imaginary parts (axis 0)")

    def quantile(self, q):
        """Pixelwise quantile(s) ``q`` (scalar -> image, sequence -> ``(len(q), *shape)``).

        Args:
            q: quantile level(s) in [0, 1].

        Returns:
            Image-shaped array, or ``(len(q), *shape)`` for a sequence.
        """
        self._refuse_complex("quantile")
        qa = np.asarray(q, dtype=np.float64)
        if qa.ndim > 1 or not np.all((qa >= 0) & (qa <= 1)):
            raise ValueError(f"'q' must be a number or 1-D sequence in [0, 1], got {q!r}")
        if self.draws is not None:
            out = np.quantile(self.draws, qa, axis=(0, 1))
        else:
            z = special.ndtri(qa).reshape(qa.shape + (1,) * len(self.shape))
            out = self.mean + z * self.std
        return out.astype(self.dtype, copy=False)

    # -- sampling -----------------------------------------------------------------------
    def sample(self, key, n: int) -> np.ndarray:
        """``n`` exact draws ``(n, *shape)`` from the Gaussian factors (Gaussian results).

        ``key`` is a JAX PRNG key or an integer seed; the same key gives the same draws.

        Args:
            key: JAX PRNG key or integer seed.
            n: number of draws.

        Returns:
            Array ``(n, *shape)``.
        """
        import jax

        if isinstance(key, (int, np.integer)):
            key = jax.random.PRNGKey(int(key))
        if self.gaussian is None:
            raise ValueError("Result.sample needs Gaussian factors ('gaussian' is None)")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"'n' must be a positive integer, got {n!r}")
        g = self.gaussian
        if self.is_complex:     # draw the real coordinates, then pair them
            w = self.real_coordinates().sample(key, n)
            return (w[:, 0] + 1j * w[:, 1]).astype(self.dtype)
        dtype = g.mean.dtype
        from .linalg import full_precision_products    # not TF32 on a GPU: see there
        with full_precision_products():
            out = g.real_mean() + g.deviations(key, n)
        return out.reshape((n, *self.shape)).astype(dtype)

    # -- export -------------------------------------------------------------------------
    def to_inference_data(self):
        """ArviZ ``InferenceData``: posterior variable ``x`` with dims
        ``(chain, draw, x_dim_0, x_dim_1, ...)``; per-draw diagnostics (arrays of shape
        ``(chains, draws)``) go to ``sample_stats`` (``divergences`` as ``diverging``).

        Returns:
            An ``arviz.InferenceData``.
        """
        import arviz as az

        if self.draws is None:
            raise ValueError("to_inference_data needs 'draws' (this Result has none)")
        dims = [f"x_dim_{i}" for i in range(len(self.shape))]
        stats = {}
        for name, value in self.diagnostics.items():
            if isinstance(value, np.ndarray) and value.shape == self.draws.shape[:2]:
                stats["diverging" if name == "divergences" else name] = value
        attrs = {"provenance": json.dumps(_jsonable(self.provenance)),
                 "timings": json.dumps(_jsonable(self.timings))}
        return az.from_dict(posterior={"x": self.draws}, sample_stats=stats or None,
                            dims={"x": dims}, attrs=attrs)

    def save(self, path) -> str:
        """Write the result to ``path`` (``.npz``: arrays + a JSON header; exact round trip).

        Returns the path written (``.npz`` is appended if missing).

        Args:
            path: file path (``.npz`` appended if missing).

        Returns:
            The path written, a string.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays: dict[str, np.ndarray] = {}
        header = {
            "format": "uqrecon.Result",
            "version": _FORMAT_VERSION,
            "fields": {
                name: _encode(getattr(self, name), name, arrays)
                for name in ("mean", "variance", "draws", "diagnostics", "timings",
                             "provenance", "gaussian")
            },
        }
        arrays["__header__"] = np.array(json.dumps(header))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "Result":
        """Read a result written by :meth:`save`.

        Args:
            path: a file written by :meth:`save`.

        Returns:
            The :class:`Result`.
        """
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"
        if not os.path.exists(path):
            raise FileNotFoundError(f"'path' {path!r}: no such file (nor {path + '.npz'!r})")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "__header__" not in data.files:
                    raise ValueError(f"'path' {path!r} is not a saved uqrecon Result")
                header = json.loads(str(data["__header__"]))
                if header.get("format") != "uqrecon.Result":
                    raise ValueError(f"'path' {path!r} is not a saved uqrecon Result")
                fields = {k: _decode(v, data) for k, v in header["fields"].items()}
        except ValueError as err:
            if str(err).startswith("'path'"):
                raise
            raise ValueError(f"'path' {path!r} is not a readable saved uqrecon Result "
                             f"(damaged or not written by Result.save)") from None
        except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as err:
            raise ValueError(f"'path' {path!r} is not a readable saved uqrecon Result "
                             f"(damaged or not written by Result.save): "
                             f"{type(err).__name__}: {err}") from None
        return cls(**fields)

    def __repr__(self):
        draws = "None" if self.draws is None else str(self.draws.shape)
        method = self.provenance.get("method", "?")
        gauss = None if self.gaussian is None else self.gaussian.kind
        return (f"Result(method={method!r}, shape={self.shape}, dtype={self.dtype}, "
                f"draws={draws}, gaussian={gauss!r})")


# --------------------------------------------------------------------------------------
# (de)serialisation: JSON header with arrays stored alongside in the .npz
# --------------------------------------------------------------------------------------
def _encode(value, name: str, arrays: dict):
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if isinstance(value, Mapping):
        return {"__dict__": {k: _encode(v, f"{name}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, name, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, name, arrays) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (str, bool, int, float, type(None))):
        return value
    raise TypeError(f"cannot save '{name}': value of type {type(value).__name__} is not "
                    "an array, number, string, None, list, tuple or dict")


def _decode(value, data):
    if isinstance(value, list):
        return [_decode(v, data) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            arr = data[value["__array__"]]
            return arr[()] if value["scalar"] else arr
        if "__dict__" in value:
            return {k: _decode(v, data) for k, v in value["__dict__"].items()}
        if "__tuple__" in value:
            return tuple(_decode(v, data) for v in value["__tuple__"])
        if "__float__" in value:
            return float(value["__float__"])
    return value


def _jsonable(value):
    """Plain-JSON view of a dict (arrays as lists) for ArviZ attrs."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value

"""A catalogue of named imaging posteriors with certified references (posteriordb-style).

Every entry is fully determined by its name: operator, truth, seed, noise, likelihood,
prior and hyperparameters (:data:`ENTRIES`). ``posterior(name)`` rebuilds it;
``reference(name)`` returns its gold standard (:func:`uqrecon.gold.reference`: the exact
Gaussian posterior for linear-Gaussian entries, else the exact method run until
posteriordb's reference criteria hold -- at least 10,000 draws in at least 4 chains,
split R-hat < 1.01, bulk and tail ESS >= 400 on every pixel, no divergences).

References are stored in a compact form (:func:`save_compact`): posterior mean and std
(from all draws, or exact), the 5/50/95 % quantiles, a thinned set of draws (at most
:data:`MAX_SHIPPED_DRAWS`), the per-pixel diagnostics, the criteria outcome
(:func:`certify`), the versions of uqrecon and its dependencies, the build time and the
posterior's :func:`~uqrecon.gold.posterior_hash`. Small entries ship with the package
(``uqrecon/catalogue_data/``); the others are built by :func:`build` and cached under
``<gold cache>/catalogue``. Loading checks the stored hash against the posterior rebuilt
from the name, so a reference is never used for a posterior it was not made from.

``score(result, name)`` grades any Result of an entry's posterior against its reference:
relative mean and std errors, mean marginal W1, coverage of the reference by the
result's 50 % and 90 % intervals and, when the result has them, min-ESS per second and per
gradient evaluation (the metrics of :func:`uqrecon.uq.compare`).

``run(name, method, budget=...)`` runs a method of :func:`uqrecon.sample` or
:func:`uqrecon.approximate`, or any callable returning a Result (an external sampler),
on an entry with one budget and scores it the same way, with wall time, set-up /
compile / run seconds, gradient counts and what the result says of itself (exactness,
R-hat convergence, divergences); ``leaderboard(names, methods)`` does it for every pair
and ranks the methods per entry (``leaderboard_markdown`` / ``leaderboard_json``);
``benchmarks/leaderboard.py`` runs it with numpyro, blackjax and CUQIpy samplers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings

import numpy as np

__all__ = ["Entry", "ENTRIES", "CRITERIA", "names", "entry", "posterior", "truth",
           "reference", "build", "certify", "score", "save_compact", "load_compact",
           "shipped", "DATA_DIR", "MAX_SHIPPED_DRAWS", "MAX_SHIPPED_VALUES", "run",
           "leaderboard", "leaderboard_markdown", "leaderboard_json", "NotApplicable",
           "DEFAULT_BUDGET"]

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalogue_data")
MAX_SHIPPED_DRAWS = 200
MAX_SHIPPED_VALUES = 102_400    # draws x pixels kept: 200 draws at 16x16, 100 at 32x32
QUANTILE_LEVELS = (0.05, 0.5, 0.95)
_FORMAT = "uqrecon.catalogue/1"

# posteriordb's criteria for a reference posterior's draws
CRITERIA = {"min_chains": 4, "min_draws": 10_000, "rhat_max": 1.01, "min_ess": 400.0,
            "max_divergences": 0}

HUBER_EPS = 0.01     # the main job's Huber-TV smoothing (uqrecon.cli.HUBER_EPS)


# --------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Entry:
    """One named posterior: what builds it, in plain values.

    ``problem`` is a name of :func:`uqrecon.problems.make_problem` (or ``"lowdose_ct"``,
    Poisson transmission counts on a sparse-view geometry) with keyword arguments
    ``problem_kwargs``; ``likelihood`` is ``"gaussian"`` (``ComplexGaussian`` for MRI) or
    ``"poisson_transmission"``; ``prior`` one of ``"gmrf"``, ``"gmrf_nonneg"``,
    ``"tv"``, ``"huber_tv"``, ``"cauchy"``, ``"wavelet_l1"`` with ``prior_kwargs``.
    """

    name: str
    problem: str
    problem_kwargs: tuple
    likelihood: str
    prior: str
    prior_kwargs: tuple
    description: str

    @property
    def size(self) -> int:
        """Image side in pixels."""
        return int(dict(self.problem_kwargs)["size"])

    def spec(self) -> dict:
        """The entry as a plain dict (stored with its reference).

        Returns:
            A JSON-serialisable dict.
        """
        return {"name": self.name, "problem": self.problem,
                "problem_kwargs": dict(self.problem_kwargs), "likelihood": self.likelihood,
                "prior": self.prior, "prior_kwargs": dict(self.prior_kwargs),
                "description": self.description}


def _e(name, problem, pkw, prior, prkw, description, likelihood="gaussian"):
    return Entry(name, problem, tuple(sorted(pkw.items())), likelihood, prior,
                 tuple(sorted(prkw.items())), description)


_GMRF = {"delta": 100.0}       # prior std ~0.1 per pixel difference (the main job's)
_TV = {"weight": 10.0}         # the main job's TV weight
_NOISE = 0.01                  # Gaussian noise: 1 % of max|A x_true|
_PHASE = math.pi / 3           # complex MRI entries: phase ramp of the image (radians)


def _sparse(size):
    return {"size": size, "num_angles": 30, "noise_level": _NOISE, "phantom": "shepp_logan",
            "seed": 0}


def _limited(size, hi_deg):
    return {"size": size, "angle_range": (0.0, math.radians(hi_deg)), "num_angles": 60,
            "noise_level": _NOISE, "phantom": "shepp_logan", "seed": 0}


def _fan(size):
    return {"size": size, "num_angles": 50, "noise_level": _NOISE, "phantom": "shepp_logan",
            "seed": 0}


def _mri(size, acc, coils):
    return {"size": size, "acceleration": acc, "mask": "equispaced", "num_coils": coils,
            "noise_level": _NOISE, "phantom": "brain", "seed": 0}


def _lowdose(size):
    return {"size": size, "num_angles": 30, "I0": 1000.0, "attenuation": 2.0,
            "phantom": "shepp_logan", "seed": 0}


def _entries():
    out = []
    for n in (16, 32):
        out += [
            _e(f"ct_sparse30_gmrf_{n}", "sparse_view_ct", _sparse(n), "gmrf", _GMRF,
               "parallel-beam CT, 30 views over [0, pi), 1 % noise, GMRF"),
            _e(f"ct_sparse30_tv_{n}", "sparse_view_ct", _sparse(n), "tv", _TV,
               "parallel-beam CT, 30 views, 1 % noise, exact isotropic TV"),
            _e(f"ct_limited90_gmrf_{n}", "limited_angle_ct", _limited(n, 90), "gmrf", _GMRF,
               "limited-angle CT, 60 views over [0, pi/2), 1 % noise, GMRF"),
            _e(f"ct_limited60_gmrf_{n}", "limited_angle_ct", _limited(n, 60), "gmrf", _GMRF,
               "limited-angle CT, 60 views over [0, pi/3), 1 % noise, GMRF"),
            _e(f"ct_fan_gmrf_{n}", "fan_beam_ct", _fan(n), "gmrf", _GMRF,
               "fan-beam CT, 50 views over a full circle, 1 % noise, GMRF"),
            _e(f"mri_cart4_gmrf_{n}", "mri", _mri(n, 4, None), "gmrf", _GMRF,
               "single-coil Cartesian MRI, 4x equispaced lines, 1 % noise, GMRF"),
            _e(f"mri_cart8_coils4_gmrf_{n}", "mri", _mri(n, 8, 4), "gmrf", _GMRF,
               "4-coil Cartesian MRI (birdcage maps), 8x equispaced lines, 1 % noise, GMRF"),
        ]
    # complex images (magnitude and a smooth phase): references, scores and stored draws
    # are in real coordinates (Re x, Im x), shape (2, n, n) (uqrecon.models.realview)
    out += [
        _e("mri_cart4_gmrf_complex_16", "mri", {**_mri(16, 4, None), "phase_ramp": _PHASE},
           "gmrf", _GMRF, "single-coil Cartesian MRI, 4x equispaced lines, 1 % noise, "
           "GMRF, complex image (phase ramp)"),
        _e("mri_cart8_coils4_gmrf_complex_16", "mri",
           {**_mri(16, 8, 4), "phase_ramp": _PHASE}, "gmrf", _GMRF,
           "4-coil Cartesian MRI, 8x equispaced lines, 1 % noise, GMRF, complex image "
           "(phase ramp)"),
    ]
    out += [
        _e("ct_sparse30_huber_16", "sparse_view_ct", _sparse(16), "huber_tv",
           {**_TV, "eps": HUBER_EPS}, "parallel-beam CT, 30 views, 1 % noise, Huber-TV"),
        _e("ct_sparse30_wavelet_16", "sparse_view_ct", _sparse(16), "wavelet_l1",
           {"weight": 10.0, "wavelet": "haar"},
           "parallel-beam CT, 30 views, 1 % noise, l1-Haar-wavelet prior"),
        _e("ct_sparse30_cauchy_16", "sparse_view_ct", _sparse(16), "cauchy",
           {"scale": 0.05}, "parallel-beam CT, 30 views, 1 % noise, Cauchy difference prior"),
        _e("ct_sparse30_gmrfpos_16", "sparse_view_ct", _sparse(16), "gmrf_nonneg", _GMRF,
           "parallel-beam CT, 30 views, 1 % noise, GMRF with a non-negativity constraint"),
        _e("ct_lowdose_poisson_16", "lowdose_ct", _lowdose(16), "gmrf", _GMRF,
           "low-dose CT: Poisson transmission counts, I0 = 1000, 30 views, GMRF",
           likelihood="poisson_transmission"),
    ]
    # larger sizes: not shipped; built once by build(name) (exact Gaussian references
    # through circulant-preconditioned perturbation-optimisation draws) and cached
    out += [_e(f"ct_sparse30_gmrf_{n}", "sparse_view_ct", _sparse(n), "gmrf", _GMRF,
               "parallel-beam CT, 30 views over [0, pi), 1 % noise, GMRF")
            for n in (64, 128, 256)]
    return {e.name: e for e in out}


ENTRIES: dict = _entries()


def names() -> list:
    """The names of all catalogue entries.

    Returns:
        A sorted list of strings.
    """
    return sorted(ENTRIES)


def entry(name: str) -> Entry:
    """The :class:`Entry` of ``name``.

    Args:
        name: a catalogue name (see :func:`names`).

    Returns:
        The :class:`Entry`.
    """
    if not isinstance(name, str) or name not in ENTRIES:
        raise ValueError(f"unknown catalogue entry {name!r}; valid names: {', '.join(names())}")
    return ENTRIES[name]


# --------------------------------------------------------------------------------------
# Building a posterior from its name
# --------------------------------------------------------------------------------------
def _lowdose_problem(size, num_angles, I0, attenuation, phantom, seed):
    """Counts ``y ~ Poisson(I0 exp(-A x))`` with ``x = attenuation * phantom``."""
    import jax
    import jax.numpy as jnp

    from .operators import sparse_view
    from .phantoms import shepp_logan

    if phantom != "shepp_logan":
        raise ValueError(f"lowdose_ct: unsupported phantom {phantom!r}")
    op = sparse_view((size, size), num_angles)
    x = attenuation * shepp_logan((size, size))
    rate = I0 * jnp.exp(-op(x))
    counts = jax.random.poisson(jax.random.PRNGKey(seed), rate).astype(jnp.float32)
    return op, x, counts


def _build(e: Entry):
    from .models import (GMRF, TV, CauchyMRF, ComplexGaussian, Gaussian, NonNegative,
                         PoissonTransmission, Posterior, WaveletL1)
    from .problems import make_problem

    pkw = dict(e.problem_kwargs)
    prkw = dict(e.prior_kwargs)
    shape = (e.size, e.size)
    if e.likelihood == "poisson_transmission":
        op, x, counts = _lowdose_problem(**pkw)
        lik = PoissonTransmission(op, counts, I0=pkw["I0"])
    else:
        prob = make_problem(e.problem, **pkw)
        x = prob.truth
        cls = ComplexGaussian if prob.kind == "mri" else Gaussian
        lik = cls(prob.operator, prob.data, sigma=prob.sigma)
    if e.prior == "gmrf":
        priors = [GMRF(shape, delta=prkw["delta"])]
    elif e.prior == "gmrf_nonneg":
        priors = [GMRF(shape, delta=prkw["delta"]), NonNegative(shape)]
    elif e.prior == "tv":
        priors = [TV(shape, weight=prkw["weight"])]
    elif e.prior == "huber_tv":
        priors = [TV(shape, weight=prkw["weight"]).smoothed(prkw["eps"])]
    elif e.prior == "cauchy":
        priors = [CauchyMRF(shape, scale=prkw["scale"])]
    elif e.prior == "wavelet_l1":
        priors = [WaveletL1(shape, weight=prkw["weight"], wavelet=prkw["wavelet"])]
    else:
        raise ValueError(f"entry {e.name!r}: unknown prior {e.prior!r}")
    return Posterior(lik, priors), x


def posterior(name: str):
    """The posterior of a catalogue entry, rebuilt deterministically from its name.

    Args:
        name: a catalogue name (see :func:`names`).

    Returns:
        A :class:`~uqrecon.models.Posterior`.
    """
    return _build(entry(name))[0]


def truth(name: str) -> np.ndarray:
    """The image the entry's data were simulated from.

    Args:
        name: a catalogue name.

    Returns:
        The true image, a numpy array.
    """
    return np.asarray(_build(entry(name))[1])


# --------------------------------------------------------------------------------------
# Certification
# --------------------------------------------------------------------------------------
def _exactness(prov) -> str:
    """The exactness class a Result's provenance records (``exact_gaussian`` is exact)."""
    return prov.get("exactness",
                    "exact" if prov.get("method") == "exact_gaussian" else "unknown")


def _catalogue_info(result) -> dict:
    return dict(result.provenance.get("catalogue", {}))


def certify(result) -> dict:
    """Check a reference against posteriordb's criteria (:data:`CRITERIA`).

    An exact result (``provenance["exactness"] == "exact"``) passes by construction, as
    it is the posterior, not a sample of it, unless its solver says it stopped short
    (``diagnostics["converged"]`` False: a CG solve truncated at ``maxiter``). Otherwise: at least 4 chains and 10,000 draws in
    all (counted before any thinning for shipping), split R-hat below 1.01 and bulk and
    tail ESS at least 400 on every pixel, no divergent transitions, and a method that is
    not biased.

    Args:
        result: a :class:`~uqrecon.result.Result` from :func:`uqrecon.gold.reference`, or
            a reference loaded from the catalogue.

    Returns:
        A dict: criterion -> ``{"value": ..., "required": ..., "pass": bool}``, and
        ``"pass"``: whether every criterion holds.
    """
    prov = result.provenance
    exactness = _exactness(prov)
    out: dict = {"exactness": {"value": exactness,
                               "required": "exact or asymptotically exact",
                               "pass": exactness in ("exact", "asymptotically exact")}}
    if exactness == "exact":
        # exact up to its solver: a truncated CG solve says so in diagnostics['converged']
        solved = bool(result.diagnostics.get("converged", True))
        out["solver_converged"] = {"value": solved, "required": True, "pass": solved}
        out["pass"] = out["exactness"]["pass"] and solved
        return out
    info = _catalogue_info(result)
    diag = result.diagnostics
    chains = int(info.get("num_chains", result.num_chains))
    draws = int(info.get("num_draws_total", result.num_chains * result.num_draws))

    def worst(key, fn, summary):
        if key in diag and np.size(diag[key]):
            return float(fn(np.asarray(diag[key])))
        v = prov.get(summary)
        return float("nan") if v is None else float(v)

    rhat = worst("rhat", np.max, "max_rhat")
    bulk = worst("ess_bulk", np.min, "min_ess_bulk")
    tail = worst("ess_tail", np.min, "min_ess_tail")
    div = int(np.sum(diag.get("divergences", prov.get("divergences", 0))))
    c = CRITERIA
    out["num_chains"] = {"value": chains, "required": f">= {c['min_chains']}",
                         "pass": chains >= c["min_chains"]}
    out["num_draws"] = {"value": draws, "required": f">= {c['min_draws']}",
                        "pass": draws >= c["min_draws"]}
    out["max_rhat"] = {"value": rhat, "required": f"< {c['rhat_max']}",
                       "pass": bool(rhat < c["rhat_max"])}
    out["min_ess_bulk"] = {"value": bulk, "required": f">= {c['min_ess']:g}",
                           "pass": bool(bulk >= c["min_ess"])}
    out["min_ess_tail"] = {"value": tail, "required": f">= {c['min_ess']:g}",
                           "pass": bool(tail >= c["min_ess"])}
    out["divergences"] = {"value": div, "required": f"<= {c['max_divergences']}",
                          "pass": div <= c["max_divergences"]}
    out["pass"] = all(v["pass"] for v in out.values() if isinstance(v, dict))
    return out


# --------------------------------------------------------------------------------------
# Compact storage
# --------------------------------------------------------------------------------------
def _versions(recorded=None) -> dict:
    """Versions of uqrecon and its dependencies (those a Result records, plus scipy,
    Python and, when uqrecon runs from a git checkout, its commit)."""
    import importlib.metadata
    import platform
    import subprocess

    from .result import make_provenance
    out = dict(recorded or make_provenance("catalogue")["versions"])
    try:
        out.setdefault("scipy", importlib.metadata.version("scipy"))
    except importlib.metadata.PackageNotFoundError:
        pass
    out["python"] = platform.python_version()
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        git = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        top, _, head = git.stdout.strip().partition("\n")
        # only a checkout of uqrecon itself (not site-packages inside some other repo)
        if git.returncode != 0 or os.path.realpath(top) != os.path.realpath(root):
            return out
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "uqrecon",
                                ":!uqrecon/catalogue_data"],
                               capture_output=True, text=True, timeout=10)
        out["uqrecon_commit"] = head + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def save_compact(result, name: str, path, *, max_draws: int | None = None,
                 build_s: float | None = None, seed: int = 0) -> str:
    """Write a reference of entry ``name`` in the catalogue's compact form.

    Keeps mean and std (of all draws, or exact), the 5/50/95 % quantiles (from all
    draws, or exact Gaussian ones), at most ``max_draws`` evenly thinned pooled draws
    (exact Gaussian references: that many exact draws from their factors), the per-pixel
    R-hat/ESS, the :func:`certify` outcome, versions, build time and the posterior hash.

    Args:
        result: the reference (:func:`uqrecon.gold.reference` of ``posterior(name)``).
        name: its catalogue name.
        path: the ``.npz`` file to write.
        max_draws: at most this many draws are kept (default: :data:`MAX_SHIPPED_DRAWS`,
            and at most :data:`MAX_SHIPPED_VALUES` pixel values in all).
        build_s: seconds the reference took to build (recorded).
        seed: seed of the draws made from an exact Gaussian reference.

    Returns:
        The path written.
    """
    from scipy import special

    e = entry(name)
    prov = result.provenance
    exact = _exactness(prov) == "exact"
    levels = np.asarray(QUANTILE_LEVELS)
    if max_draws is None:
        max_draws = min(MAX_SHIPPED_DRAWS, MAX_SHIPPED_VALUES // math.prod(result.shape))
    if exact:
        z = special.ndtri(levels).reshape(-1, *(1,) * len(result.shape))
        quantiles = result.mean + z * result.std
        if result.gaussian is not None:
            draws = result.sample(seed, max_draws)
        elif result.draws is not None:   # above the dense limit: its i.i.d. exact draws
            draws = result.pooled_draws()[:max_draws]
        else:
            raise ValueError("save_compact: an exact reference needs its Gaussian factors "
                             "or its exact draws (exact_gaussian(..., keep_draws=True))")
        chains, total = 0, 0
    else:
        if result.draws is None:
            raise ValueError("save_compact: an MCMC reference needs its draws")
        quantiles = np.quantile(result.draws, levels, axis=(0, 1))
        pooled = result.pooled_draws()
        idx = np.unique(np.linspace(0, len(pooled) - 1, min(max_draws, len(pooled)))
                        .round().astype(int))
        # interleave chains before thinning so every chain is represented
        inter = np.swapaxes(result.draws, 0, 1).reshape((-1, *result.shape))
        draws = inter[idx]
        chains, total = result.num_chains, result.num_chains * result.num_draws
    arrays = {"mean": np.asarray(result.mean, np.float32),
              "std": np.asarray(result.std, np.float32),
              "quantiles": np.asarray(quantiles, np.float32),
              "draws": np.asarray(draws, np.float32)}
    for k in ("rhat", "ess_bulk", "ess_tail"):
        if k in result.diagnostics and np.ndim(result.diagnostics[k]):
            arrays[k] = np.asarray(result.diagnostics[k], np.float32)
    header = {
        "format": _FORMAT, "name": name, "entry": e.spec(),
        "posterior_hash": prov.get("posterior_hash"), "model": prov.get("model"),
        "gold_method": prov.get("gold_method", prov.get("method")),
        "exactness": _exactness(prov),
        "gold_standard": bool(prov.get("gold_standard", _exactness(prov) == "exact")),
        "num_chains": chains, "num_draws_total": total,
        "divergences": int(prov.get("divergences", 0) or 0),
        "rounds": prov.get("rounds"), "quantile_levels": list(QUANTILE_LEVELS),
        "versions": _versions(prov.get("versions")), "device": prov.get("device"),
        "dtype": prov.get("dtype"), "build_s": build_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": prov.get("config"), "solver": prov.get("solver"),
        "fingerprint": fingerprint(posterior(name)),
    }
    header["certificate"] = certify(result.replace(
        provenance=dict(prov, catalogue={"num_chains": chains, "num_draws_total": total})))
    arrays["__header__"] = np.array(json.dumps(header, default=_json_default))
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return repr(o)


def load_compact(path):
    """Read a compact reference written by :func:`save_compact` (no hash check).

    Args:
        path: the ``.npz`` file.

    Returns:
        A :class:`~uqrecon.result.Result`: mean, variance, the thinned draws as one
        chain, the per-pixel diagnostics, and the stored header under
        ``provenance['catalogue']`` (quantiles in ``provenance['catalogue']['quantiles']``).
    """
    from .result import Result

    with np.load(os.fspath(path), allow_pickle=False) as data:
        header = json.loads(str(data["__header__"]))
        if header.get("format") != _FORMAT:
            raise ValueError(f"'path' {path!r} is not a catalogue reference")
        arr = {k: data[k] for k in data.files if k != "__header__"}
    diag = {k: arr[k] for k in ("rhat", "ess_bulk", "ess_tail") if k in arr}
    diag["divergences"] = header["divergences"]
    info = dict(header, quantiles=arr["quantiles"], path=os.fspath(path))
    prov = {"method": header["gold_method"], "exactness": header["exactness"],
            "gold_standard": header["gold_standard"], "reference": "catalogue",
            "posterior_hash": header["posterior_hash"], "model": header["model"],
            "versions": header["versions"], "catalogue": info}
    return Result(mean=arr["mean"], variance=arr["std"].astype(np.float64) ** 2,
                  draws=arr["draws"][None], diagnostics=diag, provenance=prov)


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def shipped() -> list:
    """Names of the entries whose reference ships with the package.

    Returns:
        A sorted list of names.
    """
    if not os.path.isdir(DATA_DIR):
        return []
    return sorted(f[:-4] for f in os.listdir(DATA_DIR)
                  if f.endswith(".npz") and f[:-4] in ENTRIES)


def _cache_path(name, cache_dir):
    from .gold import default_cache_dir
    base = os.path.join(default_cache_dir(), "catalogue") if cache_dir is None else cache_dir
    return os.path.join(os.fspath(base), f"{name}.npz")


# Relative tolerance of the numeric fingerprint: float32 rounding of the same computation
# on another CPU (other vector width, FMA) moves a sum by ~1e-7 relative; any change of
# an entry's definition moves it by far more (a noise level 1 % off: ~2 % in the noise
# precision and in the data).
FINGERPRINT_RTOL = 1e-5


def fingerprint(post) -> dict:
    """A numeric fingerprint of a posterior: per floating-point array leaf of its pytree,
    the size, sum and 2-norm in float64 (integer leaves: size and sum).

    The content hash (:func:`uqrecon.gold.posterior_hash`) is of exact bytes, so the same
    entry rebuilt on another CPU, whose float32 forward projections round differently in
    the last bit, hashes differently although it is the same posterior. A reference whose
    hash differs is still accepted when its fingerprint agrees to
    :data:`FINGERPRINT_RTOL` and its one-line model description is the same (with a
    warning); a changed definition changes both.

    Args:
        post: a :class:`~uqrecon.models.Posterior`.

    Returns:
        ``{leaf path: [size, sum, norm]}``.
    """
    import jax

    from .operators.base import canonical_form

    leaves, _ = jax.tree_util.tree_flatten_with_path(canonical_form(post))
    out = {}
    for path, leaf in leaves:
        a = np.asarray(leaf)
        if a.dtype.kind in "fc":
            a = np.abs(a.astype(np.complex128)) if a.dtype.kind == "c" else a.astype(np.float64)
            out[jax.tree_util.keystr(path)] = [float(a.size), float(a.sum()),
                                               float(np.sqrt(np.sum(a * a)))]
        elif a.dtype.kind in "iub":
            out[jax.tree_util.keystr(path)] = [float(a.size), float(a.astype(np.int64).sum())]
    return out


def _same_fingerprint(a, b) -> bool:
    if not a or not b or set(a) != set(b):
        return False
    # atol: a leaf that is exactly zero (a prior mean) may come back as a denormal
    return all(len(a[k]) == len(b[k]) and np.allclose(a[k], b[k], rtol=FINGERPRINT_RTOL,
                                                      atol=1e-30) for k in a)


def _verified(path, name, post_hash, post=None):
    ref = load_compact(path)
    stored = ref.provenance["posterior_hash"]
    if stored != post_hash:
        from .models.identity import describe
        info = ref.provenance["catalogue"]
        if (post is not None and _same_fingerprint(info.get("fingerprint"), fingerprint(post))
                and info.get("model") == describe(post)):
            warnings.warn(
                f"catalogue reference {path!r}: the posterior rebuilt from {name!r} differs "
                "from the stored one in its bytes (hash) but not in its numbers (every "
                f"array leaf's sum and norm within {FINGERPRINT_RTOL:g}, same model): "
                "float32 rounding of this machine; accepted", RuntimeWarning, stacklevel=3)
            # the same posterior for every later comparison (compare's same_model reads
            # the hash): the stored bytes' hash is kept beside it
            ref = ref.replace(provenance={**ref.provenance, "posterior_hash": post_hash,
                                          "stored_posterior_hash": stored,
                                          "accepted_by": "fingerprint"})
        else:
            raise ValueError(
                f"catalogue reference {path!r} was made from a posterior with hash "
                f"{str(stored)[:16]}..., but {name!r} rebuilt here hashes to "
                f"{post_hash[:16]}... and its numbers differ too (the entry's definition "
                f"changed); rebuild it with uqrecon.catalogue.build({name!r})")
    if not ref.provenance["catalogue"]["certificate"]["pass"]:
        raise ValueError(f"catalogue reference {path!r} does not meet the reference "
                         "criteria (see its certificate); rebuild it")
    return ref


def build(name: str, *, path=None, cache_dir=None, seed: int = 0,
          max_rounds: int = 6, **config):
    """Build the reference of entry ``name`` from scratch and store it in compact form.

    Runs :func:`uqrecon.gold.reference` on ``posterior(name)`` -- exact for
    linear-Gaussian entries; otherwise the exact MCMC method with 4 chains of at least
    2,500 draws (10,000 in all) extended in rounds until the criteria hold -- then
    :func:`save_compact`.

    Args:
        name: a catalogue name.
        path: where to write (default: the catalogue cache, ``<gold cache>/catalogue``).
        cache_dir: the catalogue cache folder (default ``$UQRECON_CACHE/catalogue``).
        seed: the reference's seed.
        max_rounds: round cap of the MCMC reference.
        **config: passed to :func:`uqrecon.gold.reference` (sampler options).

    Returns:
        The compact reference, loaded back (:func:`load_compact`).
    """
    from . import gold

    post = posterior(name)
    path = _cache_path(name, cache_dir) if path is None else os.fspath(path)
    t0 = time.perf_counter()
    method = gold.gold_method(post)
    if method != "exact":
        per_chain = math.ceil(CRITERIA["min_draws"] / CRITERIA["min_chains"])
        config.setdefault("num_chains", CRITERIA["min_chains"])
        config.setdefault("num_samples", per_chain)
        if config["num_chains"] * config["num_samples"] < CRITERIA["min_draws"]:
            raise ValueError(f"build: need num_chains * num_samples >= "
                             f"{CRITERIA['min_draws']}, got {config['num_chains']} x "
                             f"{config['num_samples']}")
        config.setdefault("use_cache", False)
        config.setdefault("max_rounds", max_rounds)
    else:   # above exact_gaussian's dense limit the reference is its exact draws: keep them
        config.setdefault("keep_draws", True)
    res = gold.reference(post, seed=seed, **config)
    build_s = time.perf_counter() - t0
    res = res.real_coordinates()      # a complex image is stored as (Re x, Im x)
    save_compact(res, name, path, build_s=build_s, seed=seed)
    return load_compact(path)


def reference(name: str, *, build_missing: bool = True, cache_dir=None):
    """The certified reference of entry ``name``, verified against its posterior.

    Looks for the shipped reference, then the catalogue cache; either must hold the hash
    of the posterior rebuilt from ``name`` and a passing certificate (else ValueError).
    When neither exists it is built (:func:`build`) unless ``build_missing`` is False.

    Args:
        name: a catalogue name.
        build_missing: build and cache the reference when none is stored.
        cache_dir: the catalogue cache folder (default ``$UQRECON_CACHE/catalogue``).

    Returns:
        A compact reference :class:`~uqrecon.result.Result` (see :func:`load_compact`).
    """
    from .gold import posterior_hash

    e = entry(name)
    post = posterior(name)
    post_hash = posterior_hash(post)
    for path in (os.path.join(DATA_DIR, f"{e.name}.npz"), _cache_path(name, cache_dir)):
        if os.path.exists(path):
            return _verified(path, name, post_hash, post)
    if not build_missing:
        raise ValueError(f"no stored reference for {name!r}; build it with "
                         f"uqrecon.catalogue.build({name!r})")
    build(name, cache_dir=cache_dir)
    return _verified(_cache_path(name, cache_dir), name, post_hash, post)


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------
SCORE_LEVELS = (0.5, 0.9)


def score(result, name: str, *, ref=None, require_same_model: bool = False) -> dict:
    """Grade ``result`` (any method run on ``posterior(name)``) against the entry's reference.

    Uses :func:`uqrecon.uq.compare`. For an exact (Gaussian) reference the marginals are
    its exact Gaussian ones; for an MCMC reference they are its stored thinned draws
    (W1 and coverage then carry the Monte Carlo error of at most
    :data:`MAX_SHIPPED_DRAWS` draws). Joint metrics (W2, KL) are not given: the compact
    form keeps no covariance.

    Args:
        result: a :class:`~uqrecon.result.Result`.
        name: the catalogue entry it approximates.
        ref: the reference (default :func:`reference` of ``name``).
        require_same_model: raise ValueError when ``result`` records another posterior.

    Returns:
        A dict: ``entry``, ``same_model``, ``mean_error``, ``std_error``, ``std_ratio``,
        ``w1_marginal``, ``ref_coverage_50``, ``ref_coverage_90`` (each with the nominal
        level beside it as ``coverage_gap_XX`` = coverage - level), ``ess_bulk_min``,
        ``ess_min_per_s`` and ``ess_min_per_grad`` (None when the result has no
        diagnostics), and ``reference_marginals``.
    """
    from .result import Result
    from .uq.compare import compare

    if not isinstance(result, Result):
        raise TypeError(f"'result' must be a uqrecon Result, got {type(result).__name__}")
    entry(name)
    ref = reference(name) if ref is None else ref
    if ref.provenance.get("exactness") == "exact":
        marg = ref.replace(draws=None, gaussian={"kind": "diag", "mean": ref.mean,
                                                 "diag": ref.variance})
        kind = "exact Gaussian marginals"
    else:
        marg = ref
        kind = f"{ref.num_draws} thinned reference draws"
    c = compare(result, marg, levels=SCORE_LEVELS, name=name, reference_name="catalogue",
                require_same_model=require_same_model)
    out = {"entry": name, "same_model": c["same_model"]}
    for k in ("mean_error", "std_error", "std_ratio", "w1_marginal"):
        out[k] = c[k]
    for a in SCORE_LEVELS:
        cov = c[f"ref_coverage_{round(100 * a)}"]
        out[f"ref_coverage_{round(100 * a)}"] = cov
        out[f"coverage_gap_{round(100 * a)}"] = cov - a
    ess = c.get("ess_bulk_min")
    grads = c.get("num_grad_evals")
    out["ess_bulk_min"] = ess
    out["ess_min_per_s"] = c.get("ess_min_per_s")
    out["ess_min_per_grad"] = ess / grads if ess is not None and grads else None
    out["reference_marginals"] = kind
    out["notes"] = list(c.notes)
    return out


# --------------------------------------------------------------------------------------
# Runner and leaderboard
# --------------------------------------------------------------------------------------
# the per-entry budget of :func:`run` (per chain for samplers; approximations take none)
DEFAULT_BUDGET = {"num_chains": 2, "num_samples": 500, "num_warmup": 300}
_BUDGET_MINIMA = {"num_chains": 1, "num_samples": 1, "num_warmup": 0}


class NotApplicable(Exception):
    """Raised by an external method (a callable given to :func:`run`) that cannot run on
    a posterior (e.g. a gradient sampler on a non-smooth one); :func:`leaderboard`
    records the message as the row's status."""


def _method_kind(method) -> str:
    """``"sample"``, ``"approximate"`` or ``"external"``, or a ValueError/TypeError
    naming ``method``."""
    from .inference.approximate import APPROXIMATIONS
    from .inference.sample import METHODS

    if callable(method):
        return "external"
    if not isinstance(method, str):
        raise TypeError(f"'method' must be a method name or a callable returning a Result, "
                        f"got {type(method).__name__}")
    if method in METHODS:
        return "sample"
    if method in APPROXIMATIONS:
        return "approximate"
    raise ValueError(f"unknown 'method' {method!r}; valid names: "
                     f"{sorted(METHODS) + sorted(APPROXIMATIONS)}, or a callable")


def _check_budget(budget) -> dict:
    if budget is None:
        return dict(DEFAULT_BUDGET)
    if not isinstance(budget, dict):
        raise TypeError(f"'budget' must be a dict, got {type(budget).__name__}")
    unknown = sorted(set(budget) - set(DEFAULT_BUDGET))
    if unknown:
        raise TypeError(f"'budget' has unknown keys {unknown}; valid: {sorted(DEFAULT_BUDGET)}")
    out = dict(DEFAULT_BUDGET, **budget)
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"'budget[{k!r}]' must be an integer, got {type(v).__name__}")
        if v < _BUDGET_MINIMA[k]:
            raise ValueError(f"'budget[{k!r}]' must be >= {_BUDGET_MINIMA[k]}, got {v}")
    return {k: int(v) for k, v in out.items()}


def _applicability(post, method: str):
    """Why a uqrecon method cannot run on ``post`` (None when it can)."""
    if method in ("nuts", "hmc", "mala", "ula", "mclmc", "mams") and not post.is_smooth:
        return "not applicable: non-smooth"
    if method in ("exact", "rto") and post.gaussian_form() is None:
        return "not applicable: not linear-Gaussian"
    if method in ("meanfield", "lowrank", "laplace") and post.constraint is not None:
        return "not applicable: constrained"
    return None


def _grads(diag) -> dict:
    g = {k: float(np.sum(diag[k])) for k in ("num_grad_evals", "num_grad_evals_warmup",
                                             "num_grad_evals_setup") if k in diag}
    return g


def _verdict(result) -> dict:
    """What the result says about itself: exactness, convergence, divergences."""
    from .gold import exactness as _exactness_of

    prov, diag = result.provenance, result.diagnostics
    exactness = prov.get("exactness") or _exactness_of(str(prov.get("method", "")))
    if exactness == "unknown" and result.draws is None and result.gaussian is not None:
        exactness = "Gaussian approximation"
    out = {"exactness": exactness, "biased": exactness == "biased" or bool(prov.get("biased"))}
    rhat = (float(np.max(diag["rhat"])) if "rhat" in diag and np.size(diag["rhat"])
            else None)
    if rhat is not None:
        out["max_rhat"] = rhat
    if "converged" in diag:
        out["converged"] = bool(np.all(diag["converged"]))
        out["converged_by"] = "method"
    elif exactness == "exact":
        # independent exact draws: nothing to converge (R-hat only measures the noise)
        out["converged"] = True
        out["converged_by"] = "exact draws"
    elif rhat is not None:
        out["converged"] = bool(rhat < CRITERIA["rhat_max"])
        out["converged_by"] = f"max split R-hat < {CRITERIA['rhat_max']}"
    else:
        out["converged"] = None
        out["converged_by"] = "not reported"
    div = diag.get("divergences")
    out["divergences"] = None if div is None else int(np.sum(div))
    nonfinite = diag.get("nonfinite_chains")
    out["nonfinite_chains"] = None if nonfinite is None else int(np.size(nonfinite))
    return out


def run(name: str, method, *, budget=None, seed: int = 0, options=None, label=None,
        ref=None) -> dict:
    """Run ``method`` on ``posterior(name)`` with a budget and score it (:func:`score`).

    ``method`` is a name of :func:`uqrecon.sample` (run with ``budget``), of
    :func:`uqrecon.approximate` (the budget does not apply), or an external callable
    ``method(posterior, *, seed, num_chains, num_samples, num_warmup, **options)`` that
    returns a :class:`~uqrecon.result.Result` (e.g. :meth:`Result.from_draws` with
    ``diagnostics`` ``num_grad_evals`` / ``num_grad_evals_warmup`` and ``timings``
    ``run_s`` / ``total_s``, and ``provenance`` ``method`` and ``exactness``); it may raise
    :class:`NotApplicable`. Every result is scored the same way, whatever made it. The
    entry, method and budget are checked before any work.

    Args:
        name: a catalogue name.
        method: a method name or a callable (see above).
        budget: dict with ``num_chains``, ``num_samples``, ``num_warmup`` (per chain;
            missing keys from :data:`DEFAULT_BUDGET`).
        seed: integer seed.
        options: dict of method options (passed on as keyword arguments).
        label: the row's method label (default: the method name or the callable's name).
        ref: the reference (default :func:`reference` of ``name``).

    Returns:
        A row dict: ``entry``, ``method``, ``kind``, ``status`` (``"ok"``), the
        :func:`score` metrics, ``wall_s`` (the whole call), ``setup_s``/``compile_s``/
        ``run_s``/``total_s`` when the result has them, gradient counts (``grads_run``,
        ``grads_warmup``, ``grads_setup``, ``grads_total``), ``ess_min_per_s_total`` and
        ``ess_min_per_grad_total`` (over the whole call and all gradients),
        ``exactness``, ``biased``, ``converged`` (and by what test), ``divergences``, the
        ``budget`` and ``options``, and the ``result`` itself.
    """
    entry(name)
    kind = _method_kind(method)
    budget = _check_budget(budget)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"'options' must be a dict, got {type(options).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"'seed' must be a non-negative integer, got {seed!r}")
    if label is None:
        label = method if isinstance(method, str) else getattr(method, "__name__", "external")
    post = posterior(name)
    ref = reference(name) if ref is None else ref
    t0 = time.perf_counter()
    if kind == "sample":
        from .inference.sample import sample as _sample
        result = _sample(post, method=method, seed=int(seed), progress=False, **budget,
                         **options)
    elif kind == "approximate":
        from .inference.approximate import approximate as _approximate
        result = _approximate(post, method=method, seed=int(seed), **options)
    else:
        result = method(post, seed=int(seed), **budget, **options)
        from .result import Result
        if not isinstance(result, Result):
            raise TypeError(f"'method' {label!r} returned {type(result).__name__}, "
                            "not a uqrecon Result")
    wall = time.perf_counter() - t0
    row = {"entry": name, "method": str(label), "kind": kind, "status": "ok"}
    row.update({k: v for k, v in score(result, name, ref=ref).items() if k != "entry"})
    row["wall_s"] = wall
    for k in ("setup_s", "compile_s", "run_s", "total_s"):
        if k in result.timings:
            row[k] = float(result.timings[k])
    g = _grads(result.diagnostics)
    row["grads_run"] = g.get("num_grad_evals")
    row["grads_warmup"] = g.get("num_grad_evals_warmup")
    row["grads_setup"] = g.get("num_grad_evals_setup")
    row["grads_total"] = sum(g.values()) if g else None
    ess = row.get("ess_bulk_min")
    row["ess_min_per_s_total"] = ess / wall if ess is not None and wall > 0 else None
    row["ess_min_per_grad_total"] = (ess / row["grads_total"]
                                     if ess is not None and row["grads_total"] else None)
    row.update(_verdict(result))
    row["budget"] = budget if kind != "approximate" else {}
    row["options"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                      for k, v in options.items()}
    row["result"] = result
    return row


RANK_BY = "w1_marginal"


def leaderboard(entries, methods, *, budget=None, seed: int = 0, catch: bool = True) -> list:
    """Run and score every method on every entry (:func:`run`); rank them per entry.

    Methods that do not apply to an entry (gradient samplers on a non-smooth posterior,
    exact Gaussian sampling on a non-Gaussian one, Gaussian approximations under a
    constraint, or an external callable raising :class:`NotApplicable`) get a row with
    status ``"not applicable: ..."``; with ``catch`` a method that raises gets a row with
    status ``"failed: ..."`` instead of stopping the board. Entries, methods, options
    and the budget are all checked before the first run. Rows of an entry are ranked by
    the mean marginal W1 to the reference (:data:`RANK_BY`; lower is better), failed and
    inapplicable rows last.

    Args:
        entries: catalogue names.
        methods: dict label -> method, or label -> ``(method, options)``, or a list of
            method names (see :func:`run`).
        budget: the per-entry budget (:func:`run`).
        seed: integer seed.
        catch: record failures as rows (False: raise).

    Returns:
        A list of row dicts (:func:`run`'s, with ``rank``), entry by entry.
    """
    if isinstance(entries, str) or not hasattr(entries, "__iter__"):
        raise TypeError(f"'entries' must be a list of catalogue names, got {entries!r}")
    entries = list(entries)
    for n in entries:
        entry(n)
    if isinstance(methods, dict):
        items = list(methods.items())
    elif isinstance(methods, (list, tuple)):
        items = [(m if isinstance(m, str) else getattr(m, "__name__", "external"), m)
                 for m in methods]
    else:
        raise TypeError(f"'methods' must be a dict or a list, got {type(methods).__name__}")
    plan = []
    for label, spec in items:
        method, options = spec if isinstance(spec, tuple) else (spec, {})
        _method_kind(method)
        if not isinstance(options, dict):
            raise TypeError(f"'methods[{label!r}]' options must be a dict, got "
                            f"{type(options).__name__}")
        plan.append((str(label), method, options))
    _check_budget(budget)
    rows = []
    for name in entries:
        post = posterior(name)
        ref = reference(name)
        block = []
        for label, method, options in plan:
            base = {"entry": name, "method": label, "kind": _method_kind(method)}
            why = _applicability(post, method) if isinstance(method, str) else None
            if why is not None:
                block.append(dict(base, status=why))
                continue
            try:
                block.append(run(name, method, budget=budget, seed=seed, options=options,
                                 label=label, ref=ref))
            except NotApplicable as e:
                block.append(dict(base, status=f"not applicable: {e}"))
            except Exception as e:  # noqa: BLE001 - recorded in the row, by design
                if not catch:
                    raise
                block.append(dict(base, status=f"failed: {type(e).__name__}: {e}"[:300]))
        scored = sorted((r for r in block if r["status"] == "ok"
                         and r.get(RANK_BY) is not None), key=lambda r: r[RANK_BY])
        for i, r in enumerate(scored):
            r["rank"] = i + 1
        rows += scored + [r for r in block if not any(r is s for s in scored)]
    return rows


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def leaderboard_markdown(rows) -> str:
    """The leaderboard as a markdown table, one section per entry.

    Columns: rank, method, std error, mean error, W1 (marginal mean), reference coverage
    of the 90 % intervals, min bulk ESS, min-ESS/s (sampling time) and per total wall,
    min-ESS per gradient (sampling, and all gradients incl. warm-up and set-up), set-up /
    compile / run seconds, and flags: ``BIASED`` (the method's stationary law is not
    the posterior), ``UNCONVERGED`` (by the test in ``converged_by``), divergences.

    Args:
        rows: rows from :func:`leaderboard`.

    Returns:
        A markdown string.
    """
    head = ("| # | method | std err | mean err | W1 | cov90 | min ESS | ESS/s | ESS/s wall "
            "| ESS/grad | ESS/grad all | grads all | setup+compile / run s | wall s | flags |")
    sep = "|" + "---|" * (head.count("|") - 1)
    out, current = [], None
    for r in rows:
        if r["entry"] != current:
            current = r["entry"]
            out += ["", f"#### {current}", "", head, sep]
        if r["status"] != "ok":
            out.append(f"| - | {r['method']} | {r['status']} |" + " |" * (head.count("|") - 4))
            continue
        flags = []
        if r.get("biased"):
            flags.append("BIASED")
        elif r.get("exactness") not in ("exact", "asymptotically exact"):
            flags.append(str(r.get("exactness")).upper())
        if r.get("converged") is False:
            flags.append("UNCONVERGED")
        if r.get("divergences"):
            flags.append(f"{r['divergences']} divergences")
        if r.get("nonfinite_chains"):
            flags.append(f"{r['nonfinite_chains']} non-finite chains")
        if "max_rhat" in r:
            flags.append(f"R-hat {r['max_rhat']:.3f}")
        pre = None
        if "run_s" in r:
            pre = sum(r.get(k, 0.0) for k in ("setup_s", "compile_s"))
        cells = [str(r.get("rank", "-")), r["method"], _fmt(r["std_error"], ".3f"),
                 _fmt(r["mean_error"], ".3f"), _fmt(r["w1_marginal"], ".2e"),
                 _fmt(r["ref_coverage_90"], ".2f"), _fmt(r.get("ess_bulk_min"), ".0f"),
                 _fmt(r.get("ess_min_per_s"), ".1f"), _fmt(r.get("ess_min_per_s_total"), ".1f"),
                 _fmt(r.get("ess_min_per_grad"), ".2e"),
                 _fmt(r.get("ess_min_per_grad_total"), ".2e"),
                 _fmt(r.get("grads_total"), ".0f"),
                 "-" if pre is None else f"{pre:.1f} / {r['run_s']:.1f}",
                 _fmt(r["wall_s"], ".1f"), ", ".join(flags) or "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out).lstrip("\n") + "\n"


def leaderboard_json(rows) -> list:
    """The leaderboard rows as JSON-serialisable dicts (the Results left out).

    Args:
        rows: rows from :func:`leaderboard`.

    Returns:
        A list of plain dicts (``json.dumps`` them).
    """
    return [json.loads(json.dumps({k: v for k, v in r.items() if k != "result"},
                                  default=_json_default)) for r in rows]

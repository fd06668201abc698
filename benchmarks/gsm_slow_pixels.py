"""Where does the exact TV sampler (GSM) mix slowly? Bulk ESS per pixel against the
truth's structure, and the ESS of global functionals of the image.

One GSM run (4 chains, 100 warm-up + ``--draws`` sweeps, sparse-view CT, 1 % noise, TV
weight 10, as ``gold_tv.py``). Pixels are classed by the truth: *edge* (a neighbour in
the truth differs), *background* (zero, no edge) and *flat interior* (non-zero, no edge).
For each class: its share of the pixels and of the 1 % lowest-ESS pixels, its median and
minimum ESS and median posterior std. Then the ESS and R-hat of the image mean, its norm,
its isotropic and anisotropic TV and its projections on the first three principal
components of the draws: if one of these mixed far slower than the pixels, a global move
(e.g. a joint rescaling of image and latent weights) would be the remedy; if the slow
pixels are local, a local move is.

Run: ``JAX_PLATFORMS=cpu python benchmarks/gsm_slow_pixels.py [--size 64 --views 15]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gold_tv  # noqa: E402

import uqrecon  # noqa: E402
from uqrecon.diagnostics import ess_bulk, rhat  # noqa: E402


def truth_classes(truth):
    """Boolean masks ``{'background', 'flat interior', 'edge'}`` of a 2-D truth."""
    jump = np.zeros(truth.shape, bool)
    for axis in (0, 1):
        d = np.diff(truth, axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        jump[tuple(lo)] |= d
        jump[tuple(hi)] |= d
    return {"background": (truth == 0) & ~jump, "flat interior": (truth != 0) & ~jump,
            "edge": jump}


def global_functionals(draws):
    """``(chains, draws)`` traces of the image mean, norm, TV and top-3 PC scores."""
    d = np.asarray(draws, np.float64)
    gx, gy = np.diff(d, axis=2)[:, :, :, :-1], np.diff(d, axis=3)[:, :, :-1, :]
    out = {"mean": d.mean(axis=(2, 3)), "norm": np.sqrt((d ** 2).sum(axis=(2, 3))),
           "tv_iso": np.sqrt(gx ** 2 + gy ** 2).sum(axis=(2, 3)),
           "tv_aniso": np.abs(np.diff(d, axis=2)).sum(axis=(2, 3))
           + np.abs(np.diff(d, axis=3)).sum(axis=(2, 3))}
    c = (d - d.mean(axis=(0, 1))).reshape(d.shape[0], d.shape[1], -1)
    _, _, vt = np.linalg.svd(c.reshape(-1, c.shape[-1]), full_matrices=False)
    for k in range(3):
        out[f"pc{k}"] = c @ vt[k]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--views", type=int, default=15)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args(argv)
    prob, post = gold_tv.tv_posterior(a.size, a.views)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = uqrecon.sample(post, method="gsm", num_chains=4, num_warmup=100,
                             num_samples=a.draws, seed=a.seed, progress=False)
    eb, sd = np.asarray(res.diagnostics["ess_bulk"]), np.asarray(res.std)
    low = eb <= np.quantile(eb, 0.01)
    out = {"size": a.size, "views": a.views, "draws": list(res.draws.shape[:2]),
           "acceptance": float(res.diagnostics["acceptance_rate"]),
           "pixel_ess": {"min": float(eb.min()), "q01": float(np.quantile(eb, 0.01)),
                         "median": float(np.median(eb))},
           "corr_ess_std": float(np.corrcoef(eb.ravel(), sd.ravel())[0, 1]), "classes": {},
           "global": {}}
    for name, mask in truth_classes(np.asarray(prob.truth)).items():
        out["classes"][name] = {
            "share_of_pixels": float(mask.mean()),
            "share_of_lowest_1pct": float((low & mask).sum() / low.sum()),
            "median_ess": float(np.median(eb[mask])), "min_ess": float(eb[mask].min()),
            "median_std": float(np.median(sd[mask]))}
    for name, trace in global_functionals(res.draws).items():
        out["global"][name] = {"ess": float(ess_bulk(trace[:, :, None])[0]),
                               "rhat": float(rhat(trace[:, :, None])[0])}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

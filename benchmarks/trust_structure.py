"""Is this structure real? BUQO and the sampling test on planted lesions (issue 12 item 4).

Sparse-view CT (parallel beam), GMRF and TV priors, float32. For every replicate seed and
every case of :mod:`uqrecon.uq.lesions` (present, faint, absent, hallucinated) the data
are simulated from the truth with their own noise draw, and three rules decide whether
the lesion is real ("H0: absent" rejected):

* BUQO (:func:`uqrecon.uq.structure.buqo_test`), level ``alpha``;
* the sampling test (:func:`uqrecon.uq.structure.sampling_test`), level ``alpha``, from
  exact Gaussian draws (GMRF) or the exact GSM sampler (TV; fewer replicates, it costs
  more);
* the naive rule a reader applies to a picture: the candidate image's contrast exceeds
  the threshold (the candidate is the MAP, plus the hallucinated disc in the
  hallucinated case).

Size = rejections when H0 is true (absent, hallucinated); power = rejections when the
lesion is there (present, faint). Writes ``benchmarks/results/trust_structure.md`` and
``trust_structure.png`` (truth, MAP, structure-free minimiser, region and ring).

    JAX_PLATFORMS=cpu python benchmarks/trust_structure.py            # ~ a few minutes
    JAX_PLATFORMS=cpu python benchmarks/trust_structure.py --replicates 20 --tv-sampling-replicates 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import uqrecon
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators.tomo import sparse_view
from uqrecon.uq.lesions import CASES, hallucinated_candidate, planted_lesion
from uqrecon.uq.structure import buqo_test, contrast, sampling_test

HERE = os.path.dirname(os.path.abspath(__file__))


def _posterior(op, truth, noise, prior, key):
    y, sigma = relative_gaussian_noise(key, op(jnp.asarray(truth, jnp.float32)), noise)
    return Posterior(Gaussian(op, y, sigma=float(sigma)), prior)


def _rate(values):
    """'k/n' of True among decided values, with the undecided count."""
    decided = [v for v in values if v is not None]
    k = sum(bool(v) for v in decided)
    und = len(values) - len(decided)
    return f"{k}/{len(values)}" + (f" ({und} undecided)" if und else "")


def run(args):
    size = args.size
    op = sparse_view((size, size), args.views)
    priors = {"gmrf": lambda: GMRF((size, size), delta=args.gmrf_delta),
              "tv": lambda: TV((size, size), args.tv_weight)}
    rows, example = [], {}
    timings = {p: {"buqo": 0.0, "sampling": 0.0} for p in priors}
    for prior_name, make_prior in priors.items():
        for seed in range(args.replicates):
            for ci, case in enumerate(CASES):
                lesion = planted_lesion(seed, case, (size, size), radius=args.radius,
                                        contrast=args.contrast,
                                        faint_contrast=args.faint_contrast,
                                        threshold=args.threshold)
                key = jax.random.PRNGKey(1000 * seed + ci)
                post = _posterior(op, lesion.truth, args.noise, make_prior(), key)
                t0 = time.perf_counter()
                b = buqo_test(post, lesion.structure, args.alpha)
                timings[prior_name]["buqo"] += time.perf_counter() - t0
                candidate = hallucinated_candidate(lesion, b.map_image)
                naive = bool(contrast(lesion.structure, candidate) > args.threshold)
                s = None
                if prior_name == "gmrf" or seed < args.tv_sampling_replicates:
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if prior_name == "gmrf":
                            res = uqrecon.sample(post, method="exact", num_chains=2,
                                                 num_samples=args.draws // 2, seed=seed,
                                                 progress=False)
                        else:
                            res = uqrecon.sample(post, method="gsm", num_chains=2,
                                                 num_warmup=args.gsm_warmup,
                                                 num_samples=args.draws // 2, seed=seed,
                                                 progress=False)
                    s = sampling_test(res, lesion.structure, args.alpha)
                    timings[prior_name]["sampling"] += time.perf_counter() - t0
                rows.append(dict(prior=prior_name, seed=seed, case=case,
                                 h0_true=lesion.absent_is_true,
                                 true_contrast=lesion.true_contrast,
                                 buqo=b.rejected, buqo_ratio=b.ratio,
                                 buqo_converged=b.converged,
                                 map_converged=b.map_info.get("converged"),
                                 sampling=None if s is None else s.rejected,
                                 sampling_ran=s is not None,
                                 p_absent=None if s is None else s.prob_absent,
                                 mc_se=None if s is None else s.mc_se,
                                 naive=naive, contrast_map=b.contrast_map))
                if seed == 0 and case in ("present", "faint"):
                    example[prior_name, case] = (lesion, b)
                print(f"{prior_name} seed {seed} {case:12s} buqo={b.rejected} "
                      f"(ratio {b.ratio:.2f}, conv {b.converged}) "
                      f"sampling={None if s is None else s.rejected} "
                      f"P(H0)={'-' if s is None else f'{s.prob_absent:.3f}'} "
                      f"naive={naive}", flush=True)
    return rows, example, timings


def table(rows, args):
    lines = ["| prior | case | H0 true | replicates | BUQO rejects | sampling rejects "
             "| naive rule rejects | mean BUQO ratio (>1 rejects) | mean P(H0 given y) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for prior in ("gmrf", "tv"):
        for case in CASES:
            rs = [r for r in rows if r["prior"] == prior and r["case"] == case]
            if not rs:
                continue
            sam = [r for r in rs if r["sampling_ran"]]
            samp = _rate([r["sampling"] for r in sam]) if sam else "not run"
            p_h0 = f"{np.mean([r['p_absent'] for r in sam]):.3f}" if sam else "-"
            lines.append(
                f"| {prior} | {case} | {rs[0]['h0_true']} | {len(rs)} | "
                f"{_rate([r['buqo'] for r in rs])} | {samp} | "
                f"{_rate([r['naive'] for r in rs])} | "
                f"{np.mean([r['buqo_ratio'] for r in rs]):.3f} | {p_h0} |")
    summary = ["", "| prior | test | size (rejections when H0 true) | power: present | "
               "power: faint |", "|---|---|---|---|---|"]
    for prior in ("gmrf", "tv"):
        for test in ("buqo", "sampling", "naive"):
            rs = [r for r in rows if r["prior"] == prior
                  and (test != "sampling" or r["sampling_ran"])]
            if not rs:
                continue
            null = [r[test] for r in rs if r["h0_true"]]
            pres = [r[test] for r in rs if r["case"] == "present"]
            faint = [r[test] for r in rs if r["case"] == "faint"]
            summary.append(f"| {prior} | {test} | {_rate(null)} | {_rate(pres)} | "
                           f"{_rate(faint)} |")
    return "\n".join(lines + summary)


def figure(example, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k in (("gmrf", "present"), ("tv", "present"), ("gmrf", "faint"))
            if k in example]
    fig, axes = plt.subplots(len(keys), 3, figsize=(9, 3 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        lesion, b = example[key]
        imgs = [lesion.truth, b.map_image, b.structure_free_image]
        titles = ["truth", f"MAP (contrast {b.contrast_map:.2f})",
                  f"structure-free minimiser\n(contrast {b.contrast_structure_free:.2f}; "
                  f"BUQO {'rejects' if b.rejected else 'does not reject'} H0, "
                  f"ratio {b.ratio:.2f})"]
        for ax, img, title in zip(row, imgs, titles):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.contour(lesion.structure.region, levels=[0.5], colors="r", linewidths=0.8)
            ax.contour(lesion.structure.region | lesion.structure.ring, levels=[0.5],
                       colors="y", linewidths=0.8)
            ax.set_title(f"{key[0]}, {key[1]}: {title}", fontsize=8)
            ax.axis("off")
    fig.suptitle("red: lesion region; yellow: outer edge of the comparison ring", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.005, help="fraction of max|Ax|")
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--tv-sampling-replicates", type=int, default=1)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--gsm-warmup", type=int, default=50)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--threshold", type=float, default=0.0)
    ap.add_argument("--contrast", type=float, default=0.8)
    ap.add_argument("--faint-contrast", type=float, default=0.15)
    ap.add_argument("--radius", type=float, default=2.5)
    ap.add_argument("--gmrf-delta", type=float, default=10.0)
    ap.add_argument("--tv-weight", type=float, default=10.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "trust_structure.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows, example, timings = run(args)
    wall = time.perf_counter() - t0
    png = os.path.splitext(args.out)[0] + ".png"
    figure(example, png)
    cmd = "JAX_PLATFORMS=cpu python benchmarks/trust_structure.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"# Is this structure real? BUQO and the sampling test on planted lesions — "
        f"measured {datetime.date.today().isoformat()}",
        "",
        f"Command: `{cmd.strip()}` ({wall:.0f} s wall on a shared 2-core CPU; "
        f"BUQO {timings['gmrf']['buqo']:.0f} s GMRF / {timings['tv']['buqo']:.0f} s TV, "
        f"sampling {timings['gmrf']['sampling']:.0f} s GMRF / "
        f"{timings['tv']['sampling']:.0f} s TV, compilation included).",
        "",
        f"Sparse-view parallel-beam CT, {args.size}x{args.size}, {args.views} views, "
        f"Gaussian noise {100 * args.noise:g} % of max|Ax|, float32. Priors: GMRF "
        f"(delta {args.gmrf_delta:g}, zero boundary) and isotropic TV (weight "
        f"{args.tv_weight:g}). Lesion: disc of radius {args.radius:g} px, ring 2 px; "
        f"contrast {args.contrast:g} (present; also the hallucinated disc painted on the "
        f"MAP) and {args.faint_contrast:g} (faint); H0 'absent' = contrast <= "
        f"{args.threshold:g}; level alpha = {args.alpha:g} for both tests. Replicates: "
        f"{args.replicates} seeds x 4 cases per prior, each case with its own noise draw. "
        f"Sampling test: {args.draws} exact Gaussian draws (GMRF; 2 chains); GSM exact "
        f"TV sampler, 2 chains x {args.draws // 2} draws after {args.gsm_warmup} warmup, "
        f"on the first {args.tv_sampling_replicates} seeds only (cost). 'Naive rule': "
        f"the candidate's contrast > threshold (candidate = MAP, plus the disc when "
        f"hallucinated). Sampling decisions are 'undecided' when alpha lies within two "
        f"Monte Carlo standard errors of P(H0|y).",
        "",
        table(rows, args),
        "",
        f"Figure: `{os.path.basename(png)}` (seed 0: truth, MAP, BUQO's structure-free "
        f"minimiser).",
        "",
    ])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()

"""The main job: one problem, its posteriors, several methods, one report.

``python -m uqrecon.cli`` (or ``uqrecon``) runs the default problem end to end:
sparse-view CT (modified Shepp-Logan, 128x128, 30 angles, 1 % noise); a Gaussian model
(GMRF prior) judged against its exact posterior and a TV model judged against a long
MCMC reference; FBP, MAP, samplers, mean-field VI and low-rank Laplace; figures and the
``compare`` tables (markdown and JSON) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

APPROXIMATIONS = ("meanfield", "lowrank", "laplace")
PRIORS = ("gmrf", "tv")

# Methods run by default for each model (the reference is added separately).
DEFAULT_METHODS = {
    "gmrf": ("mala", "meanfield", "laplace"),
    "tv": ("myula", "meanfield", "laplace"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uqrecon",
        description="Posterior UQ on a simulated CT/MRI problem, judged against gold "
                    "standards. With no options: sparse-view CT, 128x128, 30 angles, 1 %% "
                    "noise, GMRF and TV models, report in out/demo.")
    p.add_argument("--problem", default="sparse_view_ct",
                   choices=["sparse_view_ct", "limited_angle_ct", "fan_beam_ct", "mri"])
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--num-angles", type=int, default=None,
                   help="CT views (default: 30 sparse view, 60 limited angle, 50 fan beam)")
    p.add_argument("--noise-level", type=float, default=0.01,
                   help="noise std as a fraction of max|Ax| (default 0.01)")
    p.add_argument("--acceleration", type=int, default=4, help="MRI undersampling factor")
    p.add_argument("--priors", default="gmrf,tv",
                   help="comma-separated models among: gmrf, tv (default both)")
    p.add_argument("--gmrf-delta", type=float, default=None,
                   help="GMRF precision delta (default 100: a prior std of 0.1 per "
                        "neighbour difference)")
    p.add_argument("--tv-weight", type=float, default=None,
                   help="TV weight (default 10: an exponential prior on gradient "
                        "magnitudes with mean 0.1 per pixel)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to run for every model (default: "
                        "gmrf: mala,meanfield,laplace; tv: myula,meanfield,laplace)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="draws per chain for the samplers (default: method-specific)")
    p.add_argument("--reference-samples", type=int, default=None,
                   help="draws per chain per round of the MCMC reference (default 800)")
    p.add_argument("--reference-rounds", type=int, default=1,
                   help="at most this many rounds (each as long as all before) to reach "
                        "R-hat < 1.01 and bulk ESS >= 400; the report says whether it did")
    p.add_argument("--rank", type=int, default=100, help="rank of the low-rank Laplace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default=os.path.join("out", "demo"), help="report folder")
    p.add_argument("--cache-dir", default=None,
                   help="where MCMC references are cached (default: $UQRECON_CACHE, else "
                        "~/.cache/uqrecon/gold)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for a smoke run (64x64, short chains)")
    return p


def _problem(args):
    from .problems import make_problem
    kwargs = {"size": args.size, "noise_level": args.noise_level, "seed": args.seed}
    if args.problem == "mri":
        kwargs["acceleration"] = args.acceleration
    elif args.num_angles is not None:
        kwargs["num_angles"] = args.num_angles
    return make_problem(args.problem, **kwargs)


def _likelihood(problem):
    from .models import ComplexGaussian, Gaussian
    cls = ComplexGaussian if problem.kind == "mri" else Gaussian
    return cls(problem.operator, problem.data, sigma=problem.sigma)


def _posterior(problem, prior: str, args, smooth: bool = False):
    """The posterior of ``problem`` under ``prior``; ``smooth`` swaps TV for Huber-TV."""
    from .models import GMRF, TV, Posterior
    shape = problem.shape
    if prior == "gmrf":
        delta = args.gmrf_delta if args.gmrf_delta is not None else 100.0
        return Posterior(_likelihood(problem), GMRF(shape, delta=delta)), {"delta": delta}
    if prior == "tv":
        weight = args.tv_weight if args.tv_weight is not None else 10.0
        tv = TV(shape, weight=weight)
        eps = 0.01
        term = tv.smoothed(eps) if smooth else tv
        cfg = {"weight": weight, **({"huber_eps": eps} if smooth else {})}
        return Posterior(_likelihood(problem), term), cfg
    raise ValueError(f"unknown prior {prior!r}; choose among {PRIORS}")


def _psnr(x, truth) -> float:
    from .uq.metrics import psnr
    return float(psnr(np.asarray(x), np.asarray(truth)))


def _timed(label: str, fn, log):
    t0 = time.perf_counter()
    log(f"  {label} ...")
    out = fn()
    dt = time.perf_counter() - t0
    log(f"  {label}: {dt:.1f} s")
    return out, dt


def _run_method(post, smooth_post, method: str, args, x_map):
    """Run one method on the model; approximations use the smooth posterior.

    ``x_map`` (the MAP of ``post``) starts VI, and is the Laplace mode when the model
    is smooth (for TV, Laplace finds the mode of the smoothed posterior itself).
    """
    from .inference.approximate import approximate
    from .inference.sample import sample
    if method in APPROXIMATIONS:
        if method == "laplace":
            cfg = {"rank": args.rank, **({"mode": x_map} if smooth_post is post else {})}
        else:
            cfg = {"init": x_map}
        return approximate(smooth_post, method=method, seed=args.seed, **cfg)
    target = post if method in ("myula", "skrock", "exact", "rto", "gibbs") else smooth_post
    n = args.num_samples or (200 if args.quick else 500)
    return sample(target, method=method, num_chains=2 if args.quick else 4,
                  num_samples=n, num_warmup=n // 2 if method not in ("exact", "rto") else 0,
                  seed=args.seed, progress=True)


def _reference(post, args):
    from . import gold
    if post.gaussian_form() is not None:
        # above 64x64 the exact pixel variances are estimated from independent exact draws
        # (relative std error sqrt(2/N) ~ 8 % at N=300, recorded in the Result)
        return gold.exact_gaussian(post, seed=args.seed, num_samples=300), "exact"
    n = args.reference_samples or (500 if args.quick else 800)
    thin = max(1, n // 500)
    n -= n % thin  # the runner keeps every thin-th draw: n must be a multiple
    ref = gold.mcmc_reference(post, method="skrock", seed=args.seed, num_chains=4,
                              num_samples=n, num_warmup=n // 4, thin=thin,
                              cache_dir=args.cache_dir, progress=True,
                              max_rounds=args.reference_rounds)
    return ref, "skrock reference"


def run(args, log=print) -> dict:
    """Run the main job; returns the summary written to ``<out>/summary.json``."""
    import jax
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from .map import map_estimate
    from .report import write_report

    priors = [p.strip() for p in args.priors.split(",") if p.strip()]
    for p in priors:
        if p not in PRIORS:
            raise SystemExit(f"uqrecon: unknown prior {p!r} in --priors; choose among {PRIORS}")
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    log(f"[1/3] problem: {args.problem}, {args.size}x{args.size}, seed {args.seed}, {args.dtype}")
    problem = _problem(args)
    truth = np.asarray(problem.truth)
    baseline = np.asarray(problem.baseline())
    baseline_name = "FBP" if problem.kind == "ct" else "zero-filled"
    summary = {"problem": problem.describe(), "dtype": args.dtype, "seed": args.seed,
               "baseline": {"name": baseline_name, "psnr": _psnr(baseline, truth)},
               "models": {}}
    log(f"  {baseline_name} PSNR {summary['baseline']['psnr']:.2f} dB")

    for i, prior in enumerate(priors):
        log(f"[2/3] model {i + 1}/{len(priors)}: {prior}")
        post, prior_cfg = _posterior(problem, prior, args)
        smooth_post = post if post.is_smooth else _posterior(problem, prior, args, smooth=True)[0]
        (x_map, map_info), t_map = _timed("MAP", lambda: map_estimate(post), log)
        model = {"prior": {"name": prior, **prior_cfg},
                 "map": {"psnr": _psnr(x_map, truth), "seconds": t_map,
                         "iterations": int(map_info.get("iterations", -1)),
                         "converged": bool(map_info.get("converged", False))},
                 "timings": {}}
        log(f"  MAP PSNR {model['map']['psnr']:.2f} dB")
        (reference, ref_name), t_ref = _timed("reference", lambda: _reference(post, args), log)
        model["reference"] = ref_name
        prov = reference.provenance
        if prov.get("reference") == "mcmc":
            model["reference_convergence"] = {
                "converged": bool(prov.get("converged")), "rounds": prov.get("rounds"),
                "max_rhat": prov.get("max_rhat"), "min_ess_bulk": prov.get("min_ess_bulk")}
        model["timings"][ref_name] = t_ref
        results = {ref_name: reference}
        methods = (args.methods.split(",") if args.methods else DEFAULT_METHODS[prior])
        for method in [m.strip() for m in methods if m.strip()]:
            res, dt = _timed(method, lambda: _run_method(post, smooth_post, method, args, x_map), log)
            results[method] = res
            model["timings"][method] = dt
        folder = os.path.join(args.out, prior)
        written = write_report(folder, results, truth, baseline, reference_name=ref_name,
                               baseline_name=baseline_name)
        for name, res in results.items():  # reloadable with uqrecon.Result.load
            res.save(os.path.join(folder, "result_" + name.replace(" ", "_") + ".npz"))
        with open(written["json"]) as fh:
            model["comparison"] = json.load(fh)
        model["report"] = written["markdown"]
        summary["models"][prior] = model

    summary["total_seconds"] = time.perf_counter() - t_start
    log("[3/3] report")
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(_summary_markdown(summary))
    log(f"report written to {os.path.abspath(args.out)} "
        f"(summary.md, and one folder per model); {summary['total_seconds']:.0f} s in all")
    return summary


def _summary_markdown(summary: dict) -> str:
    lines = ["# uqrecon report\n", f"Problem: {summary['problem']}  ",
             f"Numerics: {summary['dtype']}, seed {summary['seed']}  ",
             f"{summary['baseline']['name']} PSNR: {summary['baseline']['psnr']:.2f} dB\n"]
    for prior, model in summary["models"].items():
        lines.append(f"## {prior} model ({model['prior']})\n")
        lines.append(f"MAP PSNR {model['map']['psnr']:.2f} dB "
                     f"({model['map']['iterations']} iterations, "
                     f"converged: {model['map']['converged']}).  ")
        lines.append(f"Reference: {model['reference']}. Timings (s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in model["timings"].items()) + "  ")
        conv = model.get("reference_convergence")
        if conv:
            verdict = "met" if conv["converged"] else "NOT met (read its rows with care)"
            lines.append(f"Reference convergence criteria (split R-hat < 1.01 on every pixel, "
                         f"min bulk ESS >= 400) {verdict}: max R-hat {conv['max_rhat']:.3f}, "
                         f"min bulk ESS {conv['min_ess_bulk']:.0f} after {conv['rounds']} "
                         f"round(s). Cached: a second run reuses it.")
        lines.append("")
        with open(model["report"]) as fh:
            body = fh.read().split("\n", 1)[1]
        lines.append(body)
        lines.append(f"Figures: `{os.path.dirname(model['report'])}/`\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.size = min(args.size, 64)
    if args.size < 8:
        raise SystemExit("uqrecon: --size must be >= 8")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job: one problem, its posteriors, several methods, one report.

``python -m uqrecon.cli`` (or ``uqrecon``) runs the default problem end to end:
sparse-view CT (modified Shepp-Logan, 32x32, 30 angles, 1 % noise) under three models,
each judged against the gold standard *of the same model* (``uqrecon.gold.reference``):
GMRF (exact Gaussian posterior), TV (the exact GSM sampler run to posteriordb's reference
criteria; the biased MYULA is graded against it) and Huber-TV, the smooth surrogate that
VI and Laplace need (whitened HMC reference; the TV reference appears there as a row
labelled *model change*, so a model change is never read as approximation error).
FBP, MAP, figures and the ``compare`` tables (markdown and JSON) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

APPROXIMATIONS = ("meanfield", "lowrank", "laplace")
PRIORS = ("gmrf", "tv", "huber_tv")

# Methods run by default for each model (the reference is added separately).
DEFAULT_METHODS = {
    "gmrf": ("mala", "meanfield", "laplace"),
    "tv": ("myula",),
    "huber_tv": ("meanfield", "laplace"),
}
HUBER_EPS = 0.01


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uqrecon",
        description="Posterior UQ on a simulated CT/MRI problem, judged against gold "
                    "standards of the same model. With no options: sparse-view CT, 32x32, "
                    "30 angles, 1 %% noise, GMRF, TV and Huber-TV models, report in "
                    "out/demo (index.html).",
        epilog="Sub-commands on saved state (nothing is re-run): 'uqrecon report RUN_DIR' "
               "regenerates a run's report from its saved Results; 'uqrecon compare A.npz "
               "B.npz ...' compares saved Results. See 'uqrecon report --help'.")
    p.add_argument("--problem", default="sparse_view_ct",
                   choices=["sparse_view_ct", "limited_angle_ct", "fan_beam_ct", "mri"])
    p.add_argument("--size", type=int, default=32,
                   help="image side in pixels (default 32: every reference of the default "
                        "run, the exact TV one included, can meet its criteria within "
                        "minutes on 2 cores; 64 and 128 take much longer, see README)")
    p.add_argument("--num-angles", type=int, default=None,
                   help="CT views (default: 30 sparse view, 60 limited angle, 50 fan beam)")
    p.add_argument("--noise-level", type=float, default=0.01,
                   help="noise std as a fraction of max|Ax| (default 0.01)")
    p.add_argument("--acceleration", type=int, default=4, help="MRI undersampling factor")
    p.add_argument("--priors", default="gmrf,tv,huber_tv",
                   help="comma-separated models among: gmrf, tv, huber_tv (default all)")
    p.add_argument("--gmrf-delta", type=float, default=None,
                   help="GMRF precision delta (default 100: a prior std of 0.1 per "
                        "neighbour difference)")
    p.add_argument("--tv-weight", type=float, default=None,
                   help="TV weight (default 10: an exponential prior on gradient "
                        "magnitudes with mean 0.1 per pixel)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to run for every model (default: "
                        "gmrf: mala,meanfield,laplace; tv: myula; huber_tv: "
                        "meanfield,laplace)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="draws per chain for the samplers (default: method-specific)")
    p.add_argument("--reference-samples", type=int, default=None,
                   help="draws per chain in the first round of an MCMC reference (default: "
                        "500 for TV's exact GSM sampler, 1000 for HMC/NUTS)")
    p.add_argument("--reference-rounds", type=int, default=6,
                   help="at most this many rounds (each sized by what the criteria still "
                        "miss, at most as long as all before) to reach split R-hat < 1.01, "
                        "bulk and tail ESS >= 400, no divergences; the report says whether "
                        "it did (default 6)")
    p.add_argument("--rank", type=int, default=100, help="rank of the low-rank Laplace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default=os.path.join("out", "demo"), help="report folder")
    p.add_argument("--cache-dir", default=None,
                   help="where MCMC references are cached (default: $UQRECON_CACHE, else "
                        "~/.cache/uqrecon/gold)")
    p.add_argument("--keep-draws", default="100",
                   help="draws per chain kept in each saved result_*.npz, evenly thinned "
                        "(mean, variance and every table use all draws); 'all' keeps every "
                        "draw (default 100)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for a smoke run (short chains; --size capped at 64)")
    p.add_argument("--no-trust", action="store_true",
                   help="skip the trust section (replicated calibration of the GMRF model, "
                        "conformal repair of mean-field VI, tests of planted lesions; "
                        "written to <out>/trust/)")
    return p


def _trust(problem, args, log):
    """The trust section (:mod:`uqrecon.trust`) on the run's problem, in ``<out>/trust``."""
    from .trust import run_trust_section
    gmrf_post, _ = _posterior(problem, "gmrf", args)
    tv_post, _ = _posterior(problem, "tv", args)
    summary = run_trust_section(problem, gmrf_post, tv_post, os.path.join(args.out, "trust"),
                                seed=args.seed, log=log)
    summary["report"] = os.path.join(args.out, "trust", "trust.md")
    return summary


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
    if prior in ("tv", "huber_tv"):
        weight = args.tv_weight if args.tv_weight is not None else 10.0
        tv = TV(shape, weight=weight)
        smooth = smooth or prior == "huber_tv"
        term = tv.smoothed(HUBER_EPS) if smooth else tv
        cfg = {"weight": weight, **({"huber_eps": HUBER_EPS} if smooth else {})}
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


NONSMOOTH_METHODS = ("myula", "skrock", "gsm")


def _run_method(post, method: str, args, x_map):
    """Run one method on the model's own posterior (never a surrogate: an approximation
    of Huber-TV belongs to the huber_tv model, graded against the Huber-TV reference).

    ``x_map`` (the MAP of ``post``) starts VI and is Laplace's mode.
    """
    from .inference.approximate import approximate
    from .inference.sample import sample
    if not post.is_smooth and method not in NONSMOOTH_METHODS:
        raise SystemExit(f"uqrecon: method {method!r} needs a smooth posterior; run it on "
                         "the huber_tv model (--priors huber_tv), which is graded against "
                         "its own reference")
    if method in APPROXIMATIONS:
        cfg = {"rank": args.rank, "mode": x_map} if method == "laplace" else {"init": x_map}
        return approximate(post, method=method, seed=args.seed, **cfg)
    n = args.num_samples or (200 if args.quick else 500)
    return sample(post, method=method, num_chains=2 if args.quick else 4,
                  num_samples=n, num_warmup=n // 2 if method not in ("exact", "rto") else 0,
                  seed=args.seed, progress=True)


def _reference(post, args):
    """The gold standard of ``post`` (``uqrecon.gold.reference``: exact Gaussian, the
    exact GSM sampler for TV, whitened HMC/NUTS for smooth posteriors), with its name."""
    from . import gold
    kw = {}
    if args.reference_samples:
        kw["num_samples"] = args.reference_samples
        kw["num_warmup"] = max(20, args.reference_samples // 2)
    ref = gold.reference(post, seed=args.seed, max_rounds=args.reference_rounds,
                         cache_dir=args.cache_dir, progress=True, **kw)
    name = ref.provenance["gold_method"]
    return ref, "exact" if name == "exact" else f"{name} reference"


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
    for prior in priors:   # refuse a surrogate's method on TV before any expensive work
        methods = args.methods.split(",") if args.methods else DEFAULT_METHODS[prior]
        bad = [m.strip() for m in methods if m.strip() and prior == "tv"
               and m.strip() not in NONSMOOTH_METHODS]
        if bad:
            raise SystemExit(f"uqrecon: methods {bad} need a smooth posterior; run them on "
                             "the huber_tv model (--priors huber_tv), which is graded "
                             "against its own reference")
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
    report_options = _save_problem_state(args, problem, truth, baseline, baseline_name)

    references = {}
    for i, prior in enumerate(priors):
        log(f"[2/3] model {i + 1}/{len(priors)}: {prior}")
        post, prior_cfg = _posterior(problem, prior, args)
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
        model["reference_exactness"] = prov.get("exactness")
        if prov.get("reference") == "mcmc":
            model["reference_convergence"] = {
                "converged": bool(prov.get("converged")), "rounds": prov.get("rounds"),
                "max_rhat": prov.get("max_rhat"), "min_ess_bulk": prov.get("min_ess_bulk"),
                "min_ess_tail": prov.get("min_ess_tail"),
                "divergences": prov.get("divergences")}
        model["timings"][ref_name] = t_ref
        results = {ref_name: reference}
        references[prior] = reference
        if prior == "huber_tv" and "tv" in references:
            # the exact TV posterior graded against the Huber-TV one: a model change,
            # labelled as such, not an approximation error
            results["tv model (model change)"] = references["tv"]
        methods = (args.methods.split(",") if args.methods else DEFAULT_METHODS[prior])
        for method in [m.strip() for m in methods if m.strip()]:
            res, dt = _timed(method, lambda: _run_method(post, method, args, x_map), log)
            results[method] = res
            model["timings"][method] = dt
        folder = os.path.join(args.out, prior)
        written = write_report(folder, results, truth, baseline, reference_name=ref_name,
                               baseline_name=baseline_name, **report_options,
                               title=_model_title(model["prior"]))
        for name, res in results.items():  # reloadable with uqrecon.Result.load
            res = lean(res, args.keep_draws)
            res.save(os.path.join(folder, "result_" + name.replace(" ", "_") + ".npz"))
        with open(written["json"]) as fh:
            model["comparison"] = json.load(fh)
        model["report"] = written["markdown"]
        summary["models"][prior] = model

    if not args.no_trust:
        summary["trust"], _ = _timed("trust section", lambda: _trust(problem, args, log), log)
    summary["total_seconds"] = time.perf_counter() - t_start
    log("[3/3] report")
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(_summary_markdown(summary))
    html_path = _write_html(args.out, summary)
    log(f"report written to {os.path.abspath(html_path)} "
        f"(and summary.md, one folder per model); {summary['total_seconds']:.0f} s in all")
    return summary


def parse_keep_draws(value):
    """``--keep-draws``: a positive int, or ``None`` for 'all' (a ValueError otherwise)."""
    if value is None or str(value).lower() == "all":
        return None
    try:
        keep = int(value)
    except (TypeError, ValueError):
        keep = 0
    if keep < 1:
        raise ValueError(f"'keep_draws' must be a positive integer or 'all', got {value!r}")
    return keep


def lean(result, keep_draws):
    """``result`` with at most ``keep_draws`` draws per chain, evenly thinned, for saving.

    The mean and variance stay those of all draws; the provenance records what was kept
    (``saved_draws``: kept per chain, of how many, the stride), so a reloaded Result says
    that its draws are a thinned subset. ``keep_draws='all'`` (or ``None``) keeps all.

    Args:
        result: a :class:`~uqrecon.result.Result`.
        keep_draws: a positive int (or its string), or ``'all'``/``None``.

    Returns:
        The Result to save (``result`` itself when nothing is dropped).
    """
    keep = parse_keep_draws(keep_draws)
    if keep is None or result.draws is None or result.num_draws <= keep:
        return result
    total = result.num_draws
    stride = -(-total // keep)               # ceil: at most `keep` draws remain
    draws = result.draws[:, ::stride]
    prov = {**result.provenance,
            "saved_draws": {"kept_per_chain": int(draws.shape[1]), "of": int(total),
                            "stride": int(stride)}}
    return result.replace(draws=np.ascontiguousarray(draws), provenance=prov)


def _save_problem_state(args, problem, truth, baseline, baseline_name) -> dict:
    """Save truth, baseline and the problem's description as ``<out>/problem.npz`` (so
    ``uqrecon report`` can rebuild the report from saved Results); returns the figure
    options ``write_report`` needs (extent and unit of the image axes)."""
    from .report_html import save_problem_state
    space = getattr(problem.operator, "space", None)
    try:
        lo, hi = np.asarray(space.min_pt, float), np.asarray(space.max_pt, float)
        extent, unit = [lo[0], hi[0], lo[1], hi[1]], "domain units"
    except (AttributeError, IndexError, TypeError):
        extent, unit = None, None            # e.g. MRI: no physical extent, pixels
    info = {"name": problem.name, "kind": problem.kind, "config": problem.config,
            "shape": list(problem.shape), "sigma": problem.sigma,
            "noise_level": problem.noise_level, "seed": args.seed, "dtype": args.dtype,
            "baseline_name": baseline_name, "extent": extent, "axis_unit": unit,
            "describe": problem.describe()}
    save_problem_state(args.out, truth, baseline, info)
    return {"extent": extent, "axis_unit": unit}


def _model_title(prior: dict) -> str:
    from .report import model_title
    return model_title(prior)


def _write_html(out: str, summary: dict) -> str:
    """Write the run's self-contained page ``<out>/index.html``; returns its path."""
    from .report_html import write_index_html
    return write_index_html(out, summary)


def _summary_markdown(summary: dict) -> str:
    lines = ["# uqrecon report\n",
             "The full report, with verdicts, figures and tables, is `index.html` (one "
             "self-contained page; open it in a browser).\n",
             f"Problem: {summary['problem']}  ",
             f"Numerics: {summary['dtype']}, seed {summary['seed']}  ",
             f"{summary['baseline']['name']} PSNR: {summary['baseline']['psnr']:.2f} dB\n"]
    for prior, model in summary["models"].items():
        lines.append(f"## {_model_title(model['prior'])}\n")
        lines.append(f"MAP PSNR {model['map']['psnr']:.2f} dB "
                     f"({model['map']['iterations']} iterations, "
                     f"converged: {model['map']['converged']}).  ")
        lines.append(f"Reference: {model['reference']}. Timings (s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in model["timings"].items()) + "  ")
        lines.append(f"Reference exactness: {model.get('reference_exactness')}.  ")
        conv = model.get("reference_convergence")
        if conv:
            verdict = "met" if conv["converged"] else "NOT met (read its rows with care)"
            lines.append(f"Reference convergence criteria (split R-hat < 1.01, bulk and tail "
                         f"ESS >= 400 on every pixel, no divergences) {verdict}: max R-hat "
                         f"{conv['max_rhat']:.3f}, min bulk / tail ESS "
                         f"{conv['min_ess_bulk']:.0f} / {conv['min_ess_tail']:.0f}, "
                         f"{conv['divergences']} divergences after {conv['rounds']} "
                         f"round(s). Cached: a second run reuses it.")
        lines.append("")
        with open(model["report"]) as fh:
            body = fh.read().split("\n", 1)[1]
        lines.append(body)
        lines.append(f"Figures: `{os.path.dirname(model['report'])}/`\n")
    trust = summary.get("trust")
    if trust:
        if "skipped" in trust:
            lines.append(f"## Trust\n\nSkipped: {trust['skipped']}.\n")
        else:
            lines.append("## Trust (replicated calibration, conformal repair, structure "
                         f"tests): `{trust['report']}`\n")
            lines += [f"- {c['setting']}: 90 % pixel coverage {c['coverage_90']:.3f} over "
                      f"{c['replicates']} replicates, "
                      f"{'calibrated' if c['calibrated'] else 'NOT calibrated'}"
                      for c in trust["calibration"]]
            conf = trust["conformal"]
            lines.append(f"- conformal repair of {conf['label']}: raw risk "
                         f"{conf['raw_risk']:.3f} -> std-bound {conf['bound_risk_mean']:.3f}"
                         f" (target {conf['alpha']:g})\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("report", "compare"):   # sub-commands on saved state
        from .report_cli import run_subcommand
        return run_subcommand(argv)
    args = _parser().parse_args(argv)
    if args.quick:
        args.size = min(args.size, 64)
    if args.size < 8:
        raise SystemExit("uqrecon: --size must be >= 8")
    try:
        parse_keep_draws(args.keep_draws)
    except ValueError as err:
        raise SystemExit(f"uqrecon: --keep-draws: {err}") from None
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sampler benchmark on the issue-4 reference problem, with plain numpyro NUTS as baseline.

Reference problem: 64x64 modified Shepp-Logan, parallel beam with 30 angles, Gaussian
noise 1 % of max|Ax|, GMRF prior delta = 10; the exact posterior mean and pixel std come
from a float64 Cholesky of the dense precision. Per method: min/median bulk ESS, ESS/s
(run time only, and counting setup + compile + warmup), ESS per gradient evaluation, and
the relative error of mean and std vs exact. numpyro NUTS (default diagonal adaptation)
runs on the same posterior in the same process; CUQIpy 1.5 NUTS and LinearRTO (numpy,
float64, CSR system matrix) in a subprocess from ``.venv-cuqi`` when present (CUQIpy pins
an older numpy than JAX: ``python3 -m venv .venv-cuqi && .venv-cuqi/bin/pip install
cuqipy``). uqrecon's whitened samplers get a shorter warmup (``--precond-warmup``): their
preconditioner is built before it, only the step size is tuned in it.

``--tv`` adds the 128x128 TV comparison: MYULA and SK-ROCK on TV (exact prox), HMC and NUTS
on Huber-smoothed TV (no exact reference; ESS per gradient evaluation is the figure);
``--methods ""`` skips the reference problem.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/samplers.py --num-samples 1000

writes ``out/samplers.md`` (``--out``); ``benchmarks/results/samplers.md`` keeps the runs
worth keeping, each with its date and command, so a new run must not overwrite it.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon.inference import sample
from uqrecon.models import GMRF, TV, Gaussian, Posterior, SmoothedNorm
from uqrecon.operators.tomo import KERNELS, sparse_view
from uqrecon.phantoms import shepp_logan
from uqrecon.uq.diagnostics import ess_bulk


def reference_problem(size=64, num_angles=30, noise=0.01, delta=10.0, seed=0,
                      kernel="auto"):
    op = sparse_view((size, size), num_angles, kernel=kernel)
    truth = shepp_logan((size, size))
    clean = np.asarray(op(truth))
    sigma = noise * float(np.abs(clean).max())
    data = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    lik = Gaussian(op, jnp.asarray(data, jnp.float32), sigma=sigma)
    return op, np.asarray(truth), lik, sigma, data


def exact_posterior(op, post, sigma, data):
    """Mean and pixel std of the linear-Gaussian posterior by a float64 Cholesky."""
    n = int(np.prod(op.domain_shape))
    A = np.asarray(op.to_dense(), np.float64)
    form = post.gaussian_form()
    eye = jnp.eye(n, dtype=jnp.float32).reshape(n, *op.domain_shape)
    Q = np.asarray(jax.lax.map(form.prior_precision, eye, batch_size=256),
                   np.float64).reshape(n, n)
    P = A.T @ A / sigma ** 2 + Q
    R = np.linalg.cholesky(P)
    mean = np.linalg.solve(P, A.T @ np.asarray(data, np.float64).ravel() / sigma ** 2)
    Rinv = np.linalg.inv(R)           # P^{-1} = R^{-T} R^{-1}; diag = column sums of squares
    std = np.sqrt((Rinv ** 2).sum(axis=0))
    return mean.reshape(op.domain_shape), std.reshape(op.domain_shape)


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def row(name, ess, run_s, total_s, grads, mean=None, std=None, ref=None, extra=""):
    ess = np.asarray(ess)
    r = {"method": name, "min_ess": float(ess.min()), "med_ess": float(np.median(ess)),
         "run_s": run_s, "total_s": total_s, "grads": grads,
         "ess_s": float(ess.min()) / run_s, "ess_s_total": float(ess.min()) / total_s,
         "ess_grad": float(ess.min()) / max(grads, 1), "extra": extra}
    if ref is not None:
        r["mean_err"], r["std_err"] = rel(mean, ref[0]), rel(std, ref[1])
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    return r


def run_uqrecon(post, method, args, ref=None, chains=None, draws=None, **cfg):
    """One uqrecon row; ``chains`` overrides ``--chains`` (a ``method:N`` entry of
    ``--methods``: N chains in the default chain method, ``method:Nv`` vectorised; one
    row whose ESS pools them); ``draws`` overrides ``--num-samples`` (``method@N``: N
    draws per chain, e.g. ``exact@20000``, where set-up is a one-off and the draws are
    cheap)."""
    chains = args.chains if chains is None else chains
    if draws is not None:
        args = argparse.Namespace(**{**vars(args), "num_samples": draws})
    warmup = args.precond_warmup if method in ("nuts", "hmc", "mala") else args.num_warmup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(post, method=method, num_chains=chains, num_samples=args.num_samples,
                   num_warmup=warmup, seed=0, progress=False, **cfg)
    d, t = r.diagnostics, r.timings
    grads = d["num_grad_evals"] + d["num_grad_evals_warmup"] + d["num_grad_evals_setup"]
    used = r.provenance["config"]
    shown = {k: used[k] for k in ("preconditioner", "path_length", "target_acceptance",
                                  "solver", "step_size", "stages") if k in used}
    extra = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in {**shown, **cfg}.items())
    extra += f", warmup {r.provenance['config']['num_warmup']}"
    if method in ("nuts", "hmc"):
        extra += f", {d['num_grad_evals'] / (chains * args.num_samples):.1f} grads/draw"
    if chains != args.chains:
        extra += f", {chains} chains ({used.get('chain_method', '?')})"
    name = method if chains == args.chains else f"{method} x{chains} chains"
    if draws is not None:
        name += f", {draws} draws"
    if "chain_method" in cfg:
        name += f" ({cfg['chain_method']})"
    return row(name, d["ess_bulk"], t["run_s"], t["total_s"], grads, r.mean, r.std, ref,
               extra)


def run_numpyro(post, args, ref=None):
    """Plain numpyro NUTS with default (diagonal) adaptation on the same potential."""
    from numpyro.infer import MCMC, NUTS

    potential = lambda x: -post.logdensity_unconstrained(x)
    mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=args.num_warmup,
                num_samples=args.num_samples, num_chains=1, progress_bar=False)
    init = jnp.zeros(post.shape, post.dtype)
    t0 = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(0), init_params=init, extra_fields=("num_steps",),
                collect_warmup=False)
    warm_steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    t1 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(1), init_params=mcmc.last_state.z, extra_fields=("num_steps",))
    draws = np.asarray(mcmc.get_samples())[None]
    t2 = time.perf_counter()
    steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    ess = ess_bulk(draws)
    mean, std = draws[0].mean(0), draws[0].std(0, ddof=1)
    # numpyro compiles inside run(); its run time includes compilation (conservative for it)
    return row("numpyro NUTS (diag)", ess, t2 - t1, t2 - t0, steps + warm_steps, mean, std,
               ref, f"{steps / args.num_samples:.0f} leapfrog/draw")


CUQI_PYTHON = Path(__file__).resolve().parents[1] / ".venv-cuqi" / "bin" / "python"


def _dense_prior_sqrt(post):
    """The GMRF's square-root precision L (Q = L^T L) as a scipy CSR matrix."""
    import scipy.sparse as sp
    L = post.gaussian_form().prior_precision_sqrt
    return sp.csr_matrix(np.asarray(L.to_dense(), np.float64))   # includes sqrt(delta)


def run_cuqipy(post, op, sigma, data, method, args, ref=None):
    """CUQIpy 1.5 (numpy, float64) on the same posterior, in its own venv (see
    ``benchmarks/cuqipy_baseline.py``); ESS by the same estimator as every other row."""
    import scipy.sparse as sp
    import subprocess
    import tempfile

    if not CUQI_PYTHON.exists():
        print(f"CUQIpy baseline skipped: {CUQI_PYTHON} missing (python3 -m venv .venv-cuqi "
              "&& .venv-cuqi/bin/pip install cuqipy)", flush=True)
        return None
    A = sp.csr_matrix(np.asarray(op.to_dense(), np.float64))
    A.eliminate_zeros()
    L = _dense_prior_sqrt(post)
    L.eliminate_zeros()
    with tempfile.TemporaryDirectory() as tmp:
        prob, out = Path(tmp) / "problem.npz", Path(tmp) / "out.npz"
        np.savez(prob, data=np.asarray(data, np.float64).ravel(), sigma=sigma,
                 **{f"A_{k}": v for k, v in _csr_parts(A).items()},
                 **{f"L_{k}": v for k, v in _csr_parts(L).items()})
        cmd = [str(CUQI_PYTHON), str(Path(__file__).with_name("cuqipy_baseline.py")),
               str(prob), str(out), "--method", method, "--num-samples",
               str(args.num_samples), "--num-warmup", str(args.num_warmup)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"CUQIpy baseline failed:\n{done.stderr[-3000:]}")
        with np.load(out) as f:
            draws, run_s, total_s, steps = f["draws"], float(f["run_s"]), float(f["total_s"]), \
                int(f["steps"])
    draws = draws.reshape(1, -1, *op.domain_shape)
    name = {"nuts": "CUQIpy NUTS", "linearrto": "CUQIpy LinearRTO (maxit 200)"}[method]
    versions = subprocess.run(
        [str(CUQI_PYTHON), "-c", "import cuqi, numpy, scipy; print(f'CUQIpy {cuqi.__version__}, "
         "numpy {numpy.__version__}, scipy {scipy.__version__}')"],
        capture_output=True, text=True).stdout.strip()
    extra = (f"{versions}, {A.nnz / np.prod(A.shape):.1%} non-zeros (CSR), f64"
             + (f", {steps / args.num_samples:.0f} tree nodes/draw" if method == "nuts" else
                ", grad evals = CGLS iterations"))
    # total_s: CUQIpy set-up + warmup + sampling (it compiles nothing)
    return row(name, ess_bulk(draws), run_s, total_s, steps, draws[0].mean(0),
               draws[0].std(0, ddof=1), ref, extra)


def _csr_parts(M):
    return {"data": M.data, "indices": M.indices, "indptr": M.indptr,
            "shape": np.asarray(M.shape)}


def table(rows, title):
    has_err = any("mean_err" in r for r in rows)
    head = ("| method | min ESS | median ESS | run s | total s | grad evals | min-ESS/s | "
            "min-ESS/s total | min-ESS/grad |" + (" mean err | std err |" if has_err else "")
            + " settings |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [f"### {title}", "", head, sep]
    for r in rows:
        cells = [r["method"], f"{r['min_ess']:.0f}", f"{r['med_ess']:.0f}", f"{r['run_s']:.1f}",
                 f"{r['total_s']:.1f}", f"{r['grads']}", f"{r['ess_s']:.2f}",
                 f"{r['ess_s_total']:.2f}", f"{r['ess_grad']:.2e}"]
        if has_err:
            cells += [f"{r.get('mean_err', float('nan')):.4f}",
                      f"{r.get('std_err', float('nan')):.4f}"]
        cells.append(r["extra"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main_section(args, methods):
    """The GMRF reference problem against its exact posterior."""
    op, _, lik, sigma, data = reference_problem(args.size, kernel=args.kernel)
    post = Posterior(lik, GMRF(op.domain_shape, delta=10.0))
    t = time.perf_counter()
    cache = Path(args.ref_cache.format(size=args.size)) if args.ref_cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as f:
            ref = (f["mean"], f["std"])
    else:
        ref = exact_posterior(op, post, sigma, data)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, mean=ref[0], std=ref[1])
    print(f"exact posterior (f64 Cholesky): {time.perf_counter() - t:.1f} s", flush=True)

    rows = []
    for m in methods:
        if m == "numpyro":
            rows.append(run_numpyro(post, args, ref))
        elif m in ("cuqipy-nuts", "cuqipy-rto"):
            r = run_cuqipy(post, op, sigma, data, "nuts" if m == "cuqipy-nuts"
                           else "linearrto", args, ref)
            if r is not None:
                rows.append(r)
        elif m == "rto":
            rows.append(run_uqrecon(post, "rto", args, ref, solver="cg"))
        elif "@" in m:            # "exact@20000": that many draws per chain
            name, draws = m.split("@")
            rows.append(run_uqrecon(post, name, args, ref, draws=int(draws)))
        elif ":" in m:            # "hmc:4" (default chain method) or "hmc:4v" (vectorised)
            name, chains = m.split(":")
            cfg = {"chain_method": "vectorized"} if chains.endswith("v") else {}
            rows.append(run_uqrecon(post, name, args, ref, chains=int(chains.rstrip("v")),
                                    **cfg))
        else:
            rows.append(run_uqrecon(post, m, args, ref))
    return [f"## Samplers on {args.size}x{args.size} parallel beam, 30 angles, 1 % noise, "
          f"GMRF delta=10 ({args.chains} chain(s), {args.num_warmup} warmup, "
          f"{args.num_samples} draws, float32, {jax.devices()[0].platform})", "",
          table(rows, "Reference problem (errors vs exact float64 Cholesky)")]


def tv_section(args):
    """TV prior at ``--tv-size``: MYULA and SK-ROCK on TV itself (exact prox), HMC and
    NUTS on Huber-smoothed TV (low-rank preconditioner at the mode). No exact reference:
    ESS per gradient evaluation is the figure (SK-ROCK: s gradients per step)."""
    op2, _, lik2, _, _ = reference_problem(args.tv_size)
    tv = TV(op2.domain_shape, 20.0)
    smooth = Posterior(lik2, SmoothedNorm(tv, 0.01))
    rows = []
    for m in args.tv_methods.split(","):
        if m in ("myula", "skrock"):
            rows.append(run_uqrecon(Posterior(lik2, tv), m, args))
        else:
            rows.append(run_uqrecon(smooth, m, args, preconditioner="lowrank"))
    return [table(rows, f"TV prior at {args.tv_size}x{args.tv_size} (weight 20; HMC/NUTS on "
                        f"Huber-smoothed TV, eps 0.01; {args.chains} chain(s), "
                        f"{args.num_samples} draws)")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--kernel", default="auto", choices=KERNELS,
                    help="how the ray transform is applied (RayTransform's kernel)")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--num-warmup", type=int, default=500)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--methods",
                    default="exact,hmc,nuts,mala,rto,gibbs,numpyro,cuqipy-nuts,cuqipy-rto",
                    help="comma-separated; 'hmc:16v' = 16 vmapped chains ('hmc:4' in the "
                         "default chain method), 'exact@20000' = 20000 draws per chain")
    ap.add_argument("--precond-warmup", type=int, default=150,
                    help="warmup of uqrecon's whitened samplers (nuts, hmc, mala): only the "
                         "step size is tuned, the preconditioner is built beforehand")
    ap.add_argument("--tv", action="store_true", help="also run the 128x128 TV comparison")
    ap.add_argument("--tv-size", type=int, default=128)
    ap.add_argument("--tv-methods", default="myula,skrock,hmc,nuts")
    ap.add_argument("--out", default="out/samplers.md",
                    help="markdown output (copy what you keep into benchmarks/results/)")
    ap.add_argument("--ref-cache", default="",
                    help="npz path for the exact reference, e.g. /tmp/ref{size}.npz")
    args = ap.parse_args()

    md = []
    methods = [m for m in args.methods.split(",") if m]
    if methods:
        md += main_section(args, methods)
    if args.tv:
        md += tv_section(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

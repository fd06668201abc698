"""Exact TV gold standard (method='gsm') against SK-ROCK / MYULA, side by side in one run.

Tables (markdown on stdout and in ``--out``):

1. **Efficiency at size N** (default 128x128 sparse-view CT, 30 views, 1 % noise, TV
   weight 10 as in the main job): GSM with the options ``gold.reference`` gives it (HMC
   moves from 64x64 up) and SK-ROCK at its default step, 4 chains each,
   min/median bulk ESS, min tail ESS, max split R-hat, gradient-equivalents (operator
   products A^T A), min-ESS per second and per gradient, and their ratio.
2. **Bias of the proximal samplers at their defaults**, measured against a converged GSM
   run of the same posterior at a size where all three converge (default 32x32, 20
   views): pixel-averaged std ratio and relative mean error (GSM is exact: its own
   Monte Carlo error is printed beside).
3. **CG iterations per exact draw**: linear-Gaussian perturbation-optimisation (GMRF prior)
   with and without the circulant preconditioner, at 128 and 256 (``--parts cg``).
4. **GSM's image step**: CG iterations and seconds per sweep with the one-level circulant
   and the two-level (block-aggregate) preconditioner, at 128 and 256 (``--parts gsm-cg``).
5. **GSM's CG tolerance**: 1e-5 vs the default 1e-4 at size N (``--parts tol``, not in
   the default parts).
6. **HMC moves beside GSM's sweeps** (option ``hmc_moves``): GSM alone against GSM with
   ``k`` HMC moves per sweep at size N (``--parts hmc-moves --hmc-moves 0,5``, not in the
   default parts).
7. **Any GSM option** (``--parts option --option hmc_steps --values 10,20 --with
   hmc_moves=5``): one row per value, the other options fixed by ``--with``.
8. **Coarse block size of the two-level preconditioner** (``--parts coarse --blocks
   4,5,8``): seconds and CG iterations per 4-chain sweep (vmapped, 5 HMC moves, one BLAS
   thread: as ``gold.reference`` runs GSM) at each block size, at size N.

Run: ``JAX_PLATFORMS=cpu python benchmarks/gold_tv.py [--size 128] [--gsm-samples 300]``.
Timings are wall-clock on this machine under whatever load it has; ratios come from the
same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import uqrecon
from uqrecon import gold
from uqrecon.linalg import pcg
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.problems import sparse_view_ct
from uqrecon.uq.diagnostics import ess_bulk, ess_tail, rhat


def tv_posterior(size, views, weight=10.0):
    p = sparse_view_ct(size, views)
    return p, Posterior(Gaussian(p.operator, p.data, sigma=p.sigma), TV((size, size), weight))


def summarize(name, res, wall):
    """One table row from a Result: ESS/R-hat from its diagnostics when ``sample`` or
    ``gold.reference`` computed them (recomputing costs minutes for many chains), else
    from its draws; gradient-equivalents counting warm-up and set-up."""
    diag = res.diagnostics
    d = res.draws
    if all(k in diag for k in ("ess_bulk", "ess_tail", "rhat")):
        eb, et, rh = (np.asarray(diag[k]) for k in ("ess_bulk", "ess_tail", "rhat"))
    else:
        eb, et, rh = ess_bulk(d), ess_tail(d), rhat(d)
    grads = sum(int(diag.get(k, 0)) for k in
                ("num_grad_evals", "num_grad_evals_warmup", "num_grad_evals_setup"))
    return {"method": name, "chains": int(d.shape[0]), "draws": int(d.shape[0] * d.shape[1]),
            "min_ess_bulk": float(eb.min()), "median_ess_bulk": float(np.median(eb)),
            "min_ess_tail": float(et.min()), "max_rhat": float(rh.max()),
            "grads": grads, "wall_s": wall,
            "min_ess_per_s": float(eb.min()) / wall,
            "min_ess_per_grad": float(eb.min()) / max(grads, 1),
            "acceptance": float(np.mean(diag.get("acceptance_rate", np.nan)))}


def efficiency(size, views, gsm_samples, skrock_samples, seed):
    _, post = tv_posterior(size, views)
    rows = []
    options = gold.gsm_reference_options(post)   # the gold method as the library runs it
    t = time.perf_counter()
    res = uqrecon.sample(post, method="gsm", num_chains=4, num_warmup=50,
                         num_samples=gsm_samples, seed=seed, progress=False, **options)
    label = ", ".join(f"{k}={v}" for k, v in options.items())
    rows.append(summarize(f"gsm (exact{', ' + label if label else ''})", res,
                          time.perf_counter() - t))
    cg = np.asarray(res.diagnostics["cg_iterations"])
    rows[-1]["cg_per_step"] = float(cg.mean())
    if "hmc_acceptance" in res.diagnostics:
        rows[-1]["hmc_acceptance"] = float(np.mean(res.diagnostics["hmc_acceptance"]))
    t = time.perf_counter()
    res = uqrecon.sample(post, method="skrock", num_chains=4, num_warmup=200,
                         num_samples=skrock_samples, seed=seed, progress=False)
    rows.append(summarize("skrock (default step)", res, time.perf_counter() - t))
    return rows


def bias(size, views, seed):
    _, post = tv_posterior(size, views)
    ref = uqrecon.sample(post, method="gsm", num_chains=4, num_warmup=100, num_samples=2000,
                         seed=seed, progress=False)
    ess = ess_bulk(np.asarray(ref.draws))
    rows = [{"method": "gsm (reference)", "min_ess_bulk": float(ess.min()),
             "std_ratio": 1.0, "mean_rel_error": 0.0,
             "mc_se_std_ratio": float(np.mean(1 / np.sqrt(2 * ess)))}]
    for method, n in (("skrock", 20_000), ("myula", 20_000)):
        res = uqrecon.sample(post, method=method, num_chains=4, num_warmup=2000,
                             num_samples=n, thin=10, seed=seed, progress=False)
        e = ess_bulk(np.asarray(res.draws))
        rows.append({"method": f"{method} (default step)", "min_ess_bulk": float(e.min()),
                     "std_ratio": float(np.mean(res.std / ref.std)),
                     "mean_rel_error": float(np.linalg.norm(res.mean - ref.mean)
                                             / np.linalg.norm(ref.mean))})
    return rows


@jax.jit
def _pcg_iterations(form, symbol, b):
    """CG iterations to relative residual 1e-4 with the circulant preconditioner of
    ``symbol`` (all ones: none), jitted once on the form (a pytree)."""
    from uqrecon.linalg import circulant_solve
    return pcg(form.precision, b, circulant_solve(symbol), 1e-4, 5000).iterations


def circulant_pcg_iterations(size, views, seed=0):
    """CG iterations (to relative residual 1e-4) for one PO draw of the GMRF posterior,
    without and with the circulant preconditioner of ``sample(method='exact',
    solver='cg')`` and ``gold.exact_gaussian`` (a Fourier model of the whole precision
    from its point-spread function), at its floor and at the earlier floor 1e-3."""
    from uqrecon.inference.exact import perturbed_rhs
    from uqrecon.linalg import circulant_symbol
    p = sparse_view_ct(size, views)
    post = Posterior(Gaussian(p.operator, p.data, sigma=p.sigma), GMRF((size, size), 100.0))
    form = post.gaussian_form()
    b = perturbed_rhs(form, jax.random.PRNGKey(seed))
    symbols = {"none": jnp.ones((size, size), jnp.float32),
               "circulant": circulant_symbol(form.precision, form.shape, jnp.float32),
               "circulant, floor 1e-3 (before 2026-11-29)":
                   circulant_symbol(form.precision, form.shape, jnp.float32, 1e-3)}
    return {name: int(_pcg_iterations(form, sym, b)) for name, sym in symbols.items()}


@jax.jit
def _gsm_step(key, state, params):
    from uqrecon.inference.samplers import gsm
    return gsm.gsm_step(key, state, params)


def gsm_sweep_cost(size, views, sweeps, seed=0):
    """CG iterations and seconds per GSM sweep (one chain, the operator pair), with the
    one-level circulant preconditioner (``coarse=0``) and the two-level one (``"auto"``),
    from the same start (the truth) and the same keys; means over the last half of
    ``sweeps`` sweeps (the first ones leave the start). Both chains are exact: only the
    cost differs."""
    from uqrecon.inference.samplers import gsm
    prob, post = tv_posterior(size, views)
    rows = []
    for coarse in (0, "auto"):
        params, _ = gsm.gsm_params(post, gsm.default_tol(jnp.float32), 5000, dense_max=0,
                                   coarse=coarse)
        state = gsm.gsm_init(jax.random.PRNGKey(seed), jnp.asarray(prob.truth, jnp.float32),
                             params)
        key = jax.random.PRNGKey(seed + 1)
        state, _ = _gsm_step(key, state, params)          # compile
        state.x.block_until_ready()
        its, secs = [], []
        for _ in range(sweeps):
            key, k = jax.random.split(key)
            t = time.perf_counter()
            state, _ = _gsm_step(k, state, params)
            state.x.block_until_ready()
            secs.append(time.perf_counter() - t)
            its.append(int(state.cg_iterations))
        half = slice(sweeps // 2, None)
        rows.append({"size": size, "preconditioner":
                     "one-level (circulant)" if coarse == 0
                     else f"two-level, {params.coarse_blocks} blocks",
                     "cg_per_sweep": float(np.mean(its[half])),
                     "s_per_sweep": float(np.mean(secs[half]))})
        print(rows[-1], flush=True)
    return rows


@jax.jit
def _gsm_sweep_of_chains(keys, states, params):
    from uqrecon.inference.samplers import gsm
    return jax.vmap(gsm.gsm_step, in_axes=(0, 0, None))(keys, states, params)


def vmapped_sweep_seconds(params, start, chains=4, burn=8, sweeps=15, seed=0):
    """Seconds per sweep of ``chains`` vmapped GSM chains (one BLAS thread, as the runner
    runs GSM) and their CG iterations per sweep, all chains started at ``start`` and
    advanced ``burn`` warmup sweeps (compilation included), then timed over ``sweeps``
    sweeps in sampling mode (anchor and HMC step frozen), the chains moving on.

    Returns:
        ``(seconds per sweep, CG iterations of every timed sweep and chain)``.
    """
    from threadpoolctl import threadpool_limits
    from uqrecon.inference.samplers import gsm
    state = gsm.gsm_init(jax.random.PRNGKey(seed), jnp.asarray(start, jnp.float32), params)
    states = jax.tree_util.tree_map(lambda a: jnp.stack([a] * chains), state)
    key = jax.random.PRNGKey(seed + 1)
    with threadpool_limits(1, user_api="blas"):
        for _ in range(burn):
            key, k = jax.random.split(key)
            states, _ = _gsm_sweep_of_chains(jax.random.split(k, chains), states, params)
        states = jax.vmap(gsm.gsm_finish_warmup, in_axes=(0, None))(states, params)
        jax.block_until_ready(states)
        its, t = [], time.perf_counter()
        for _ in range(sweeps):
            key, k = jax.random.split(key)
            states, _ = _gsm_sweep_of_chains(jax.random.split(k, chains), states, params)
            its.append(np.asarray(states.cg_iterations))
        jax.block_until_ready(states)
    return (time.perf_counter() - t) / sweeps, np.asarray(its)


def coarse_sweep_cost(size, views, blocks, sweeps=15, chains=4, hmc_moves=5, seed=0):
    """Seconds and CG iterations per sweep of ``chains`` vmapped GSM chains
    (:func:`vmapped_sweep_seconds`, from the truth) at each coarse block size in
    ``blocks`` (``"auto"`` allowed, 0: one-level), with ``hmc_moves`` HMC moves; the same
    keys for every row. The sampler is exact at any block size: only the cost differs."""
    from uqrecon.inference.samplers import gsm
    prob, post = tv_posterior(size, views)
    rows = []
    for b in blocks:
        params, _ = gsm.gsm_params(post, gsm.default_tol(jnp.float32), 5000, dense_max=0,
                                   coarse=b, hmc_moves=hmc_moves)
        wall, its = vmapped_sweep_seconds(params, prob.truth, chains, sweeps=sweeps,
                                          seed=seed)
        cb = params.coarse_blocks      # None: one-level preconditioner (coarse=0)
        nc = 0 if cb is None else int(np.prod([-(-s // c) for s, c in zip(post.shape, cb)]))
        rows.append({"size": size, "blocks": str(b), "block": 0 if cb is None else cb[0],
                     "coarse_unknowns": nc, "cg_per_sweep": float(np.mean(its)),
                     "s_per_sweep": wall})
        print(rows[-1], flush=True)
    return rows


def option_comparison(size, views, samples, option, values, seed=0, fixed=None):
    """GSM (default preconditioner) at each value of one option, 4 chains x (50 +
    ``samples``) sweeps, one after the other in this process; ``fixed`` holds other GSM
    options common to every row. Wall time counts set-up, compilation and warmup;
    gradient-equivalents count CG iterations and, with ``hmc_moves``, the HMC moves'
    gradients (one ``A^T A`` each)."""
    _, post = tv_posterior(size, views)
    fixed = dict(fixed or {})
    label = "".join(f" {k}={v:g}" for k, v in fixed.items())
    rows = []
    for value in values:
        t = time.perf_counter()
        res = uqrecon.sample(post, method="gsm", num_chains=4, num_warmup=50,
                             num_samples=samples, seed=seed, progress=False,
                             **{**fixed, option: value})
        rows.append(summarize(f"gsm {option}={value:g}{label}", res, time.perf_counter() - t))
        rows[-1]["cg_per_step"] = float(np.asarray(res.diagnostics["cg_iterations"]).mean())
        if "hmc_acceptance" in res.diagnostics:
            rows[-1]["hmc_acceptance"] = float(np.mean(res.diagnostics["hmc_acceptance"]))
        print(rows[-1], flush=True)
    return rows


def table(rows, cols):
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
            + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--views", type=int, default=30)
    ap.add_argument("--gsm-samples", type=int, default=300)
    ap.add_argument("--skrock-samples", type=int, default=3000)
    ap.add_argument("--bias-size", type=int, default=32)
    ap.add_argument("--parts", default="efficiency,bias,cg,gsm-cg")
    ap.add_argument("--sweeps", type=int, default=20, help="GSM sweeps per row of gsm-cg")
    ap.add_argument("--hmc-moves", default="0,5",
                    help="HMC moves per GSM sweep compared by --parts hmc-moves")
    ap.add_argument("--option", default="hmc_steps", help="GSM option compared by --parts option")
    ap.add_argument("--values", default="10,20", help="its values (numbers)")
    ap.add_argument("--with", dest="fixed", default="hmc_moves=5",
                    help="other GSM options of --parts option, e.g. 'hmc_moves=5,tol=1e-4'")
    ap.add_argument("--blocks", default="auto,4,5,8",
                    help="coarse block sizes compared by --parts coarse")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/gold_tv.json")
    a = ap.parse_args()
    parts = a.parts.split(",")
    results = {"load_before": os.getloadavg()}
    if "cg" in parts:
        results["cg"] = {s: circulant_pcg_iterations(s, v) for s, v in ((128, 30), (256, 60))}
        print("PO draw, GMRF, CG iterations to 1e-4:", results["cg"], flush=True)
    if "gsm-cg" in parts:
        results["gsm_cg"] = [r for s, v in ((128, 30), (256, 60))
                             for r in gsm_sweep_cost(s, v, a.sweeps, a.seed)]
        print(table(results["gsm_cg"], ["size", "preconditioner", "cg_per_sweep",
                                         "s_per_sweep"]), flush=True)
    if "tol" in parts:
        results["tol"] = option_comparison(a.size, a.views, a.gsm_samples, "tol",
                                           (1e-5, 1e-4), a.seed)
        print(table(results["tol"], ["method", "draws", "min_ess_bulk", "median_ess_bulk",
                                     "min_ess_tail", "max_rhat", "cg_per_step", "wall_s",
                                     "min_ess_per_s", "acceptance"]), flush=True)
    if "hmc-moves" in parts:
        moves = [int(k) for k in a.hmc_moves.split(",")]
        results["hmc_moves"] = option_comparison(a.size, a.views, a.gsm_samples,
                                                 "hmc_moves", moves, a.seed)
        print(table(results["hmc_moves"], ["method", "draws", "min_ess_bulk",
                                           "median_ess_bulk", "min_ess_tail", "max_rhat",
                                           "grads", "wall_s", "min_ess_per_s",
                                           "min_ess_per_grad", "acceptance",
                                           "hmc_acceptance"]), flush=True)
    if "option" in parts:
        def number(text):
            return int(text) if text.lstrip("-").isdigit() else float(text)
        fixed = {k: number(v) for k, v in (kv.split("=") for kv in a.fixed.split(",") if kv)}
        values = [number(v) for v in a.values.split(",")]
        results["option"] = option_comparison(a.size, a.views, a.gsm_samples, a.option,
                                              values, a.seed, fixed)
        print(table(results["option"], ["method", "draws", "min_ess_bulk",
                                         "median_ess_bulk", "min_ess_tail", "max_rhat",
                                         "grads", "wall_s", "min_ess_per_s",
                                         "min_ess_per_grad", "acceptance",
                                         "hmc_acceptance"]), flush=True)
    if "coarse" in parts:
        blocks = [b if b == "auto" else int(b) for b in a.blocks.split(",")]
        results["coarse"] = coarse_sweep_cost(a.size, a.views, blocks, seed=a.seed)
        print(table(results["coarse"], ["size", "blocks", "block", "coarse_unknowns",
                                        "cg_per_sweep", "s_per_sweep"]), flush=True)
    if "bias" in parts:
        results["bias"] = bias(a.bias_size, 20, a.seed)
        print(table(results["bias"], ["method", "min_ess_bulk", "std_ratio",
                                      "mean_rel_error", "mc_se_std_ratio"]), flush=True)
    if "efficiency" in parts:
        rows = efficiency(a.size, a.views, a.gsm_samples, a.skrock_samples, a.seed)
        rows[0]["ratio_min_ess_per_s_vs_skrock"] = rows[0]["min_ess_per_s"] / rows[1]["min_ess_per_s"]
        results["efficiency"] = rows
        print(table(rows, ["method", "draws", "min_ess_bulk", "median_ess_bulk",
                           "min_ess_tail", "max_rhat", "grads", "wall_s", "min_ess_per_s",
                           "min_ess_per_grad", "acceptance", "hmc_acceptance"]), flush=True)
    results["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

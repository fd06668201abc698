"""Catalogue leaderboard: uqrecon's methods and external samplers on the same posteriors,
in the same run, scored against the certified references (issue 13, item 3).

Per entry every applicable method runs with one budget (``--chains`` chains of
``--samples`` draws after ``--warmup`` warm-up steps) and is scored by
:func:`uqrecon.catalogue.score` through :func:`uqrecon.catalogue.run`: std and mean
error, mean marginal W1, reference coverage of the 90 % intervals, min bulk ESS per
second and per gradient. External samplers run in raw (unwhitened, unconstrained)
coordinates as their users would run them, with their default adaptation:

* numpyro NUTS (``numpyro.infer.hmc.hmc`` with ``potential_fn_gen`` on the posterior's
  potential; diagonal mass matrix adapted in warm-up);
* blackjax NUTS with ``window_adaptation``; blackjax MCLMC tuned by
  ``mclmc_find_L_and_step_size`` (``num_steps`` = the draws to come, blackjax's default
  fractions, diagonal preconditioning);
* CUQIpy 1.5 NUTS, LinearRTO and RegularizedLinearRTO (numpy, float64, CSR system matrix)
  in their own venv ``.venv-cuqi`` through a subprocess (this file is also the worker:
  ``--cuqipy-worker``), where the entry is one CUQIpy can express: a Gaussian likelihood
  and a GMRF prior (plus non-negativity for RegularizedLinearRTO). MRI's complex forward
  model is stacked into real and imaginary rows; the exported problem is checked against
  the posterior's own potential before it is used.

Each JAX adapter is one module-level ``jax.jit`` taking the posterior pytree as an
argument; its compile seconds are taken from JAX's monitoring events, as uqrecon's own.
Gradient samplers are skipped on non-smooth posteriors ("not applicable: non-smooth").

    JAX_PLATFORMS=cpu python benchmarks/leaderboard.py              # the full board
    JAX_PLATFORMS=cpu python benchmarks/leaderboard.py --quick      # a smoke run

Writes ``benchmarks/results/leaderboard.{md,json,png}`` (``--out`` prefix).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--cuqipy-worker"]:
    # runs under .venv-cuqi (no JAX there): nothing below this block is imported
    import argparse
    import time

    import numpy as np
    import scipy.sparse as sp

    def _cuqipy_worker(argv):
        ap = argparse.ArgumentParser()
        ap.add_argument("problem")
        ap.add_argument("out")
        ap.add_argument("--method", choices=("nuts", "linearrto", "reglinearrto"))
        ap.add_argument("--num-samples", type=int)
        ap.add_argument("--num-warmup", type=int)
        ap.add_argument("--chain", type=int, default=0)
        ap.add_argument("--maxit", type=int, default=200)
        a = ap.parse_args(argv)
        import cuqi

        with np.load(a.problem) as f:
            A = sp.csr_matrix((f["A_data"], f["A_indices"], f["A_indptr"]),
                              shape=tuple(f["A_shape"]))
            R = sp.csr_matrix((f["R_data"], f["R_indices"], f["R_indptr"]),
                              shape=tuple(f["R_shape"]))
            data, sigma, m = f["data"], float(f["sigma"]), f["prior_mean"]
        n = A.shape[1]
        Q = (R.T @ R).tocsr()
        if a.method != "nuts" and R.shape[0] != R.shape[1]:
            # CUQIpy's Gaussian wants a square root of the precision: the GMRF's
            # difference operator is not square, so its Cholesky factor (Q is
            # banded; computed before the clock starts, as benchmarks/cuqipy_baseline.py)
            R = sp.csr_matrix(np.linalg.cholesky(Q.toarray()).T)
            R.eliminate_zeros()
        np.random.seed(1000 + a.chain)
        t0 = time.perf_counter()
        if a.method == "nuts":
            def logpdf(v):
                r = (A @ v - data) / sigma
                d = v - m
                return -0.5 * (r @ r) - 0.5 * (d @ (Q @ d))

            def gradient(v):
                return -(A.T @ ((A @ v - data) / sigma ** 2)) - Q @ (v - m)

            post = cuqi.distribution.UserDefinedDistribution(
                dim=n, logpdf_func=logpdf, gradient_func=gradient)
            sampler = cuqi.sampler.NUTS(post)
            # dual averaging at every warm-up step (see benchmarks/cuqipy_baseline.py)
            sampler.warmup(a.num_warmup, tune_freq=1.0 / max(a.num_warmup, 1))
            t1 = time.perf_counter()
            nodes_w = int(np.sum(sampler.num_tree_node_list))
            sampler.sample(a.num_samples)
            nodes = int(np.sum(sampler.num_tree_node_list))
            grads_run, grads_warm = nodes - nodes_w, nodes_w
        else:
            model = cuqi.model.LinearModel(A)
            if a.method == "linearrto":
                x = cuqi.distribution.Gaussian(m, sqrtprec=R)
            else:
                x = cuqi.implicitprior.RegularizedGaussian(m, sqrtprec=R,
                                                           constraint="nonnegativity")
            y = cuqi.distribution.Gaussian(model @ x, cov=sigma ** 2)
            post = cuqi.distribution.JointDistribution(x, y)(y=data)
            cls = (cuqi.sampler.LinearRTO if a.method == "linearrto"
                   else cuqi.sampler.RegularizedLinearRTO)
            sampler = cls(post, maxit=a.maxit)
            t1 = time.perf_counter()
            sampler.sample(a.num_samples)
            # an upper bound: each draw is one inner solve of at most maxit iterations,
            # each iteration one product with A and one with A^T (= one gradient)
            grads_run, grads_warm = a.num_samples * a.maxit, 0
        t2 = time.perf_counter()
        draws = np.asarray(sampler.get_samples().samples).T[-a.num_samples:]
        np.savez(a.out, draws=draws.astype(np.float32), setup_s=t1 - t0, run_s=t2 - t1,
                 grads_run=grads_run, grads_warm=grads_warm,
                 version=cuqi.__version__)

    _cuqipy_worker(sys.argv[2:])
    sys.exit(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uqrecon import catalogue as C  # noqa: E402
from uqrecon.diagnostics import diagnose  # noqa: E402
from uqrecon.models.identity import model_identity  # noqa: E402
from uqrecon.result import Result, make_provenance  # noqa: E402

ENTRIES = ["ct_sparse30_gmrf_32", "ct_sparse30_cauchy_16", "ct_sparse30_tv_16",
           "ct_lowdose_poisson_16", "mri_cart4_gmrf_16", "ct_sparse30_wavelet_16",
           "ct_sparse30_gmrfpos_16"]
QUICK_ENTRIES = ["ct_sparse30_gmrf_16", "ct_sparse30_tv_16"]
CUQI_PYTHON = Path(__file__).resolve().parents[1] / ".venv-cuqi" / "bin" / "python"


# --------------------------------------------------------------------------------------
# JAX adapters: module-level jits on the posterior pytree
# --------------------------------------------------------------------------------------
def _neg_logdensity_gen(post):
    """numpyro's ``potential_fn_gen``: the posterior's potential in unconstrained
    coordinates (built while tracing, from the traced posterior)."""
    return lambda z: -post.logdensity_unconstrained(z)


def _to_images(post, zs):
    return jax.vmap(jax.vmap(post.transform.forward))(zs)


@partial(jax.jit, static_argnames=("num_warmup", "num_samples"))
def numpyro_nuts_chains(post, keys, inits, num_warmup, num_samples):
    """numpyro NUTS (default diagonal adaptation), chains one after another.

    Returns:
        ``(images (chains, draws, *shape), leapfrog steps (chains, warmup + draws),
        divergent (chains, warmup + draws))``.
    """
    from numpyro.infer.hmc import hmc

    def one(args):
        key, init = args
        init_kernel, sample_kernel = hmc(potential_fn_gen=_neg_logdensity_gen, algo="NUTS")
        k0, _ = jax.random.split(key)
        state = init_kernel(init, num_warmup, model_args=(post,), rng_key=k0)

        def body(s, _):
            s = sample_kernel(s, model_args=(post,))
            return s, (s.z, s.num_steps, s.diverging)

        _, (zs, steps, div) = jax.lax.scan(body, state, None,
                                           length=num_warmup + num_samples)
        return zs[num_warmup:], steps, div

    zs, steps, div = jax.lax.map(one, (keys, inits))
    return _to_images(post, zs), steps, div


@partial(jax.jit, static_argnames=("num_warmup", "num_samples"))
def blackjax_nuts_chains(post, keys, inits, num_warmup, num_samples):
    """blackjax NUTS after ``window_adaptation`` (diagonal), chains one after another.

    Returns:
        ``(images, sampling steps (chains, draws), divergent (chains, draws),
        warm-up steps (chains, warmup))``.
    """
    import blackjax

    logdensity = post.logdensity_unconstrained

    def one(args):
        key, init = args
        k0, k1 = jax.random.split(key)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), winfo = warm.run(k0, init, num_steps=num_warmup)
        kernel = blackjax.nuts(logdensity, **params)

        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.num_integration_steps, info.is_divergent)

        _, (zs, steps, div) = jax.lax.scan(body, state, jax.random.split(k1, num_samples))
        return zs, steps, div, winfo.info.num_integration_steps

    zs, steps, div, wsteps = jax.lax.map(one, (keys, inits))
    return _to_images(post, zs), steps, div, wsteps


MCLMC_GRADS_PER_STEP = 2      # isokinetic McLachlan, blackjax's default integrator


@partial(jax.jit, static_argnames=("num_samples",))
def blackjax_mclmc_chains(post, keys, inits, num_samples):
    """blackjax MCLMC tuned by ``mclmc_find_L_and_step_size`` as its docs show
    (``num_steps`` = the draws to come, default fractions, diagonal preconditioning).

    Returns:
        ``(images, tuning integrator steps (chains,), non-finite steps (chains, draws))``.
    """
    import blackjax
    from blackjax.mcmc import mclmc

    logdensity = post.logdensity_unconstrained

    def one(args):
        key, init = args
        k0, k1, k2 = jax.random.split(key, 3)
        state = mclmc.init(position=init, logdensity_fn=logdensity, rng_key=k0)
        state, tuned, tsteps = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=mclmc.build_kernel(), num_steps=num_samples, state=state,
            rng_key=k1, logdensity_fn=logdensity, diagonal_preconditioning=True)
        alg = blackjax.mclmc(logdensity, L=tuned.L, step_size=tuned.step_size,
                             inverse_mass_matrix=tuned.inverse_mass_matrix)

        def body(s, k):
            s, info = alg.step(k, s)
            return s, (s.position, ~info.nonans if hasattr(info, "nonans")
                       else jnp.zeros((), bool))

        _, (zs, bad) = jax.lax.scan(body, state, jax.random.split(k2, num_samples))
        return zs, jnp.int32(tsteps), bad

    zs, tsteps, bad = jax.lax.map(one, (keys, inits))
    return _to_images(post, zs), tsteps, bad


def _starts(post, seed, num_chains):
    """Chains start at N(0, 1) noise in the unconstrained space (no uqrecon MAP or
    preconditioner: what a plain user of these libraries has)."""
    key = jax.random.PRNGKey(seed)
    k_init, k_run = jax.random.split(key)
    inits = jax.random.normal(k_init, (num_chains, *post.shape), post.dtype)
    return jax.random.split(k_run, num_chains), inits


def _timed(fn, post, *args, **static):
    """Run the jitted ``fn``: (outputs, compile s, run s). Compile seconds are what JAX's
    monitoring events report for this call (uqrecon's CompileMonitor, as its samplers
    record): a repeat call on a same-shaped posterior takes the cached executable and
    reports none."""
    from uqrecon.inference.runner import CompileMonitor

    with CompileMonitor() as mon:
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(post, *args, **static))
        wall = time.perf_counter() - t0
    return out, mon.compile_s, wall - mon.compile_s


def _result(post, label, draws, *, exactness, grads_run, grads_warmup, compile_s, run_s,
            setup_s=0.0, divergences=0, seed=0, config=None, extra=None):
    draws = np.asarray(draws)
    diag = dict(diagnose(draws), num_grad_evals=int(grads_run),
                num_grad_evals_warmup=int(grads_warmup), divergences=int(divergences))
    if extra:
        diag.update(extra)
    prov = make_provenance(label, config or {}, seed=seed, dtype=draws.dtype,
                           exactness=exactness, **model_identity(post))
    return Result.from_draws(draws, diagnostics=diag, provenance=prov,
                             timings={"setup_s": setup_s, "compile_s": compile_s,
                                      "run_s": run_s,
                                      "total_s": setup_s + compile_s + run_s})


def _need_smooth(post):
    if not post.is_smooth:
        raise C.NotApplicable("non-smooth")


def numpyro_nuts(post, *, seed, num_chains, num_samples, num_warmup):
    """numpyro NUTS on the raw potential (a :func:`uqrecon.catalogue.run` callable)."""
    _need_smooth(post)
    keys, inits = _starts(post, seed, num_chains)
    (x, steps, div), c, r = _timed(numpyro_nuts_chains, post, keys, inits,
                                   num_warmup=num_warmup, num_samples=num_samples)
    steps, div = np.asarray(steps), np.asarray(div)
    return _result(post, "numpyro NUTS", x, exactness="asymptotically exact",
                   grads_run=steps[:, num_warmup:].sum(),
                   grads_warmup=steps[:, :num_warmup].sum() + num_chains,
                   compile_s=c, run_s=r, divergences=div[:, num_warmup:].sum(), seed=seed,
                   config={"numpyro": "NUTS, diag mass, target 0.8, max depth 10"})


def blackjax_nuts(post, *, seed, num_chains, num_samples, num_warmup):
    """blackjax NUTS with ``window_adaptation`` (a :func:`uqrecon.catalogue.run` callable)."""
    _need_smooth(post)
    keys, inits = _starts(post, seed, num_chains)
    (x, steps, div, wsteps), c, r = _timed(blackjax_nuts_chains, post, keys, inits,
                                           num_warmup=num_warmup, num_samples=num_samples)
    return _result(post, "blackjax NUTS", x, exactness="asymptotically exact",
                   grads_run=np.sum(steps), grads_warmup=np.sum(wsteps) + num_chains,
                   compile_s=c, run_s=r, divergences=np.sum(div), seed=seed,
                   config={"blackjax": "NUTS, window_adaptation (diag)"})


def blackjax_mclmc(post, *, seed, num_chains, num_samples, num_warmup):
    """blackjax MCLMC, tuned by ``mclmc_find_L_and_step_size`` (``num_warmup`` unused:
    blackjax's tuner sizes its phases from the draws to come)."""
    _need_smooth(post)
    keys, inits = _starts(post, seed, num_chains)
    (x, tsteps, bad), c, r = _timed(blackjax_mclmc_chains, post, keys, inits,
                                    num_samples=num_samples)
    g = MCLMC_GRADS_PER_STEP
    return _result(post, "blackjax MCLMC", x, exactness="biased",
                   grads_run=g * num_chains * num_samples,
                   grads_warmup=g * np.sum(tsteps), compile_s=c, run_s=r, seed=seed,
                   divergences=np.sum(bad),
                   config={"blackjax": "MCLMC, desired_energy_var 5e-4, diag precond"})


# --------------------------------------------------------------------------------------
# CUQIpy: the problem in CSR form, checked against the posterior, run in .venv-cuqi
# --------------------------------------------------------------------------------------
def _gmrf_base(name):
    """The linear-Gaussian part (likelihood + GMRF) of an entry CUQIpy can express, and
    whether it adds non-negativity; raises NotApplicable otherwise."""
    e = C.entry(name)
    if e.likelihood != "gaussian" or e.prior not in ("gmrf", "gmrf_nonneg"):
        raise C.NotApplicable("CUQIpy needs a Gaussian likelihood and a GMRF prior here")
    post = C.posterior(name)
    if e.prior == "gmrf_nonneg":
        from uqrecon.models import Posterior
        post = Posterior(post.likelihood, [p for p in post.priors
                                           if type(p).__name__ != "NonNegative"])
    form = post.gaussian_form()
    if form is None:
        raise C.NotApplicable("no Gaussian form")
    return post, form, e.prior == "gmrf_nonneg"


def _dense_columns(apply, shape, dtype):
    n = int(np.prod(shape))
    eye = jnp.eye(n, dtype=dtype).reshape(n, *shape)
    cols = jax.lax.map(apply, eye, batch_size=128)
    return np.asarray(cols).reshape(n, -1).T


def cuqipy_problem(name):
    """``(A, R, data, sigma, prior_mean)`` of entry ``name`` as float64 numpy/CSR, with
    ``potential(x) = |A x - data|^2 / (2 sigma^2) + |R (x - m)|^2 / 2 + const`` checked
    against the posterior's own potential on random images."""
    import scipy.sparse as sp

    post, form, _ = _gmrf_base(name)
    op = form.operator
    A = np.asarray(op.to_dense())
    A = A.reshape(-1, int(np.prod(post.shape)))
    y = np.asarray(form.data).ravel()
    if np.iscomplexobj(A) or np.iscomplexobj(y):
        A = np.concatenate([A.real, A.imag])
        y = np.concatenate([y.real, y.imag])
    A = A.astype(np.float64)
    y = y.astype(np.float64)
    R = _dense_columns(form.prior_precision_sqrt, post.shape, post.dtype).astype(np.float64)
    m = np.asarray(form.prior_mean, np.float64).ravel()
    tau = float(form.noise_precision)
    sigma = tau ** -0.5

    def pot(x):
        r = A @ x - y
        d = R @ (x - m)
        return 0.5 * r @ r / sigma ** 2 + 0.5 * d @ d

    rng = np.random.default_rng(0)
    xs = [np.asarray(C.truth(name), np.float64).ravel() + 0.05 * rng.normal(size=A.shape[1])
          for _ in range(3)]
    ours = [float(post.potential(jnp.asarray(x.reshape(post.shape), post.dtype))) for x in xs]
    theirs = [pot(x) for x in xs]
    for i in (1, 2):   # potentials agree up to a constant
        d_o, d_t = ours[i] - ours[0], theirs[i] - theirs[0]
        if not abs(d_o - d_t) <= 1e-3 * max(abs(d_t), 1.0):
            raise RuntimeError(f"{name}: the CSR export does not reproduce the posterior's "
                               f"potential ({d_o:.6g} vs {d_t:.6g})")
    A, R = sp.csr_matrix(A), sp.csr_matrix(R)
    A.eliminate_zeros()
    R.eliminate_zeros()
    return A, R, y, sigma, m


def _csr_parts(M, prefix):
    return {f"{prefix}_data": M.data, f"{prefix}_indices": M.indices,
            f"{prefix}_indptr": M.indptr, f"{prefix}_shape": np.asarray(M.shape)}


CUQI_TIMEOUT_S = 600


def _cuqipy(method, post, name, seed, num_chains, num_samples, num_warmup, maxit=200):
    if not CUQI_PYTHON.exists():
        raise C.NotApplicable(f"{CUQI_PYTHON} missing (python3 -m venv .venv-cuqi && "
                              ".venv-cuqi/bin/pip install cuqipy)")
    _, _, nonneg = _gmrf_base(name)
    if method == "reglinearrto" and not nonneg:
        raise C.NotApplicable("no non-negativity constraint (LinearRTO is the exact one)")
    if method != "reglinearrto" and nonneg:
        raise C.NotApplicable("constrained (CUQIpy NUTS/LinearRTO have no constraint)")
    t0 = time.perf_counter()
    A, R, y, sigma, m = cuqipy_problem(name)
    export_s = time.perf_counter() - t0
    chains, setup, run, gr, gw = [], 0.0, 0.0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        prob = Path(tmp) / "problem.npz"
        np.savez(prob, data=y, sigma=sigma, prior_mean=m, **_csr_parts(A, "A"),
                 **_csr_parts(R, "R"))
        for c in range(num_chains):
            out = Path(tmp) / f"out{c}.npz"
            cmd = [str(CUQI_PYTHON), str(Path(__file__).resolve()), "--cuqipy-worker",
                   str(prob), str(out), "--method", method, "--num-samples",
                   str(num_samples), "--num-warmup", str(num_warmup), "--chain",
                   str(seed * 100 + c), "--maxit", str(maxit)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=CUQI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"CUQIpy {method} chain {c} ran past "
                                   f"{CUQI_TIMEOUT_S} s and was stopped") from None
            if done.returncode:
                raise RuntimeError(f"CUQIpy worker failed: {done.stderr[-800:]}")
            with np.load(out) as f:
                chains.append(f["draws"])
                setup += float(f["setup_s"])
                run += float(f["run_s"])
                gr += int(f["grads_run"])
                gw += int(f["grads_warm"])
                version = str(f["version"])
    draws = np.stack(chains).reshape(num_chains, num_samples, *post.shape)
    label = {"nuts": "CUQIpy NUTS", "linearrto": "CUQIpy LinearRTO",
             "reglinearrto": "CUQIpy RegularizedLinearRTO"}[method]
    # RegularizedLinearRTO's law is not the truncated posterior (a projected RTO)
    exactness = {"nuts": "asymptotically exact", "linearrto": "exact",
                 "reglinearrto": "biased"}[method]
    return _result(post, label, draws, exactness=exactness, grads_run=gr, grads_warmup=gw,
                   compile_s=0.0, run_s=run, setup_s=setup + export_s, seed=seed,
                   config={"cuqipy": version, "maxit": maxit, "csr_nnz_A": int(A.nnz),
                           "float": "64", "chains": "one subprocess each"})


def cuqipy_nuts(post, *, entry, seed, num_chains, num_samples, num_warmup):
    """CUQIpy NUTS in ``.venv-cuqi`` (a :func:`uqrecon.catalogue.run` callable)."""
    return _cuqipy("nuts", post, entry, seed, num_chains, num_samples, num_warmup)


def cuqipy_linearrto(post, *, entry, seed, num_chains, num_samples, num_warmup):
    """CUQIpy LinearRTO (CGLS, maxit 200) in ``.venv-cuqi``."""
    return _cuqipy("linearrto", post, entry, seed, num_chains, num_samples, num_warmup)


def cuqipy_reglinearrto(post, *, entry, seed, num_chains, num_samples, num_warmup):
    """CUQIpy RegularizedLinearRTO (non-negativity, FISTA, maxit 200) in ``.venv-cuqi``."""
    return _cuqipy("reglinearrto", post, entry, seed, num_chains, num_samples, num_warmup)


# --------------------------------------------------------------------------------------
# The board
# --------------------------------------------------------------------------------------
def external_methods(name):
    """The external samplers (CUQIpy's take the entry name: they need its CSR export)."""
    return {"numpyro NUTS": numpyro_nuts, "blackjax NUTS": blackjax_nuts,
            "blackjax MCLMC": blackjax_mclmc,
            "CUQIpy NUTS": (cuqipy_nuts, {"entry": name}),
            "CUQIpy LinearRTO": (cuqipy_linearrto, {"entry": name}),
            "CUQIpy RegularizedLinearRTO": (cuqipy_reglinearrto, {"entry": name})}


def uqrecon_methods(name):
    """uqrecon's methods that fit an entry (the runner marks the rest not applicable)."""
    e = C.entry(name)
    post = C.posterior(name)
    if not post.is_smooth:          # TV, l1-wavelet: the exact split sampler + proximal
        return {"gsm": "gsm", "myula": "myula", "skrock": "skrock"}
    out = {}
    if post.gaussian_form() is not None:
        out["exact"] = "exact"
    out.update({"nuts": "nuts", "mclmc": "mclmc"})
    if e.prior != "gmrf_nonneg":
        out["meanfield"] = "meanfield"
    return out


def _load():
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []


def reference_info(name):
    ref = C.reference(name)
    info = ref.provenance["catalogue"]
    cert = info["certificate"]
    out = {"method": info["gold_method"], "exactness": info["exactness"],
           "build_s": info.get("build_s"), "certificate": "pass" if cert["pass"] else "FAIL",
           "draws": info["num_draws_total"] or "exact"}
    if "max_rhat" in cert:
        out.update(max_rhat=cert["max_rhat"]["value"], min_ess_bulk=cert["min_ess_bulk"]["value"],
                   min_ess_tail=cert["min_ess_tail"]["value"])
    return out


def figure(rows, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(dict.fromkeys(r["entry"] for r in rows))
    labels = sorted({r["method"] for r in rows if r["status"] == "ok"})
    markers = dict(zip(labels, "osD^v<>pPX*hH+x1234"))
    cmap = plt.get_cmap("tab20")
    colors = {m: cmap(i % 20) for i, m in enumerate(labels)}
    ncol = min(4, len(entries))
    nrow = -(-len(entries) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.2 * ncol, 9), 3.6 * nrow + 1.2),
                             squeeze=False)
    for ax, name in zip(axes.flat, entries):
        for r in rows:
            if r["entry"] != name or r["status"] != "ok":
                continue
            x = r.get("ess_min_per_s_total")
            if x is None:          # approximations: no ESS; drawn at a fixed left edge
                x = 1e-3
            bad = r.get("biased") or r.get("converged") is False
            ax.scatter(x, r["std_error"], marker=markers[r["method"]], s=60,
                       facecolors="none" if bad else colors[r["method"]],
                       edgecolors=colors[r["method"]], linewidths=1.5)
            if bad:
                ax.scatter(x, r["std_error"], marker="x", s=18, color="red", linewidths=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("min bulk ESS / wall s (incl. compile)", fontsize=8)
        ax.set_ylabel("relative std error", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker=markers[m], ls="", color=colors[m], label=m)
               for m in labels]
    handles.append(plt.Line2D([], [], marker="x", ls="", color="red",
                              label="biased or unconverged (hollow marker, red x)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.7 / (3.6 * nrow + 1.2), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _command(args):
    return ("JAX_PLATFORMS=cpu MPLBACKEND=Agg python benchmarks/leaderboard.py"
            + (" --quick" if args.quick else "")
            + (f" --entries {args.entries}" if args.entries else "")
            + ("" if args.quick else f" --chains {args.chains} --samples {args.samples} "
               f"--warmup {args.warmup}") + (" --no-external" if args.no_external else ""))


def write(out, budget, entries, rows, refs, loads, elapsed, cmds, quick=False, done=True):
    """Write the markdown, JSON and figure (after every entry, so a stopped run keeps
    what it finished). ``elapsed``/``cmds``/``loads``: lists, one per process run."""
    out = Path(out)
    finished = list(dict.fromkeys(r["entry"] for r in rows))
    refs = {k: v for k, v in refs.items() if k in finished}
    out.parent.mkdir(parents=True, exist_ok=True)
    md = [f"# Catalogue leaderboard{' (quick smoke run)' if quick else ''}", "",
          "" if done else f"**Partial: {len(finished)} of {len(entries)} entries done.**", "",
          f"Budget per method and entry: {budget['num_chains']} chains x "
          f"{budget['num_samples']} draws after {budget['num_warmup']} warm-up steps "
          "(approximations: their defaults). Ranked by mean marginal W1 to the certified "
          "reference. ESS/s uses the sampling run's seconds; 'ESS/s wall' the whole call "
          "(set-up, compilation, warm-up); 'ESS/grad all' counts warm-up and set-up "
          "gradients too (CUQIpy RTO: an upper bound, maxit x draws). External samplers "
          "run in raw coordinates from N(0, 1) starts with their default adaptation. "
          "Flags: BIASED (the method's stationary law is not the posterior), UNCONVERGED "
          "(max split R-hat >= 1.01 over pixels, for MCMC), divergences.", "",
          f"Device: {jax.devices()[0].platform}, {os.cpu_count()} CPU cores shared with "
          f"other jobs; /proc/loadavg (1/5/15 min) before and after each entry: "
          + " | ".join("; ".join("/".join(x) for x in part) for part in loads)
          + ". Took " + " and ".join(f"{e / 60:.1f} min" for e in elapsed)
          + (" (processes run side by side)" if len(elapsed) > 1 else "")
          + ". Seconds are inflated by the load; compare ratios within one entry.", "",
          "Command: " + " ; ".join(f"`{c}`" for c in cmds), "",
          "## References (shipped, certified)", "",
          "| entry | reference method | build s | certificate | max R-hat | min bulk / tail ESS "
          "| draws |", "|---|---|---|---|---|---|---|"]
    for name, i in refs.items():
        stats = (f"{i['max_rhat']:.4f} | {i['min_ess_bulk']:.0f} / {i['min_ess_tail']:.0f}"
                 if "max_rhat" in i else "- | -")
        md.append(f"| {name} | {i['method']} ({i['exactness']}) | "
                  f"{i['build_s']:.1f} | {i['certificate']} | {stats} | {i['draws']} |")
    md += ["", "Build seconds as stored with each reference by `benchmarks/catalogue_build.py` "
           "(wall clock on the machine that built it, compilation included).", "",
           "## Leaderboard", "", C.leaderboard_markdown(rows)]
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        md += ["## Failures", ""] + [f"- {r['entry']} / {r['method']}: {r['status']}"
                                     for r in failed] + [""]
    Path(f"{out}.md").write_text("\n".join(md))
    Path(f"{out}.json").write_text(json.dumps(
        {"budget": budget, "commands": cmds, "loadavg": loads, "elapsed_s": elapsed,
         "entries": entries,
         "references": refs, "rows": C.leaderboard_json(rows)}, indent=1,
        default=str))
    figure(rows, f"{out}.png")
    return md


def merge(paths, out, note=None):
    """Combine leaderboards of runs made side by side (same budget) into ``out``."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for p in parts:     # the first runs wrote one command / load list / time per file
        if "commands" not in p:
            p["commands"] = [p.pop("command")]
            p["loadavg"] = [p["loadavg"]]
            p["elapsed_s"] = [p["elapsed_s"]]
        p.setdefault("entries", list(dict.fromkeys(r["entry"] for r in p["rows"])))
        for r in p["rows"]:   # rule added after these runs: exact draws need no R-hat test
            if r.get("exactness") == "exact" and r.get("converged_by", "").startswith("max"):
                r["converged"], r["converged_by"] = True, "exact draws"
    budgets = {json.dumps(p["budget"], sort_keys=True) for p in parts}
    if len(budgets) != 1:
        raise ValueError(f"'--merge': runs with different budgets {sorted(budgets)}")
    rows, refs, entries = [], {}, []
    for p in parts:
        for name in p["entries"]:
            if name not in entries:
                entries.append(name)
        for r in p["rows"]:
            if r["entry"] not in refs or refs[r["entry"]] is p:
                refs[r["entry"]] = p
                rows.append(r)
    refs = {n: p["references"][n] for n, p in refs.items()}
    order = {n: i for i, n in enumerate(entries)}
    rows.sort(key=lambda r: order[r["entry"]])        # stable: ranks stay in order
    done = all(n in refs for n in entries)
    md = write(out, parts[0]["budget"], entries, rows, refs,
               [x for p in parts for x in p["loadavg"]],
               [x for p in parts for x in p["elapsed_s"]],
               [x for p in parts for x in p["commands"]] + [
                   "python benchmarks/leaderboard.py --merge " + " ".join(paths)],
               done=done)
    if note:
        text = Path(f"{out}.md").read_text().replace("\n## References", f"\n{note}\n\n## References", 1)
        Path(f"{out}.md").write_text(text)
    print("\n".join(md))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 entries, tiny budget")
    ap.add_argument("--entries", default=None, help="comma-separated catalogue names")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--no-external", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/leaderboard")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine the JSON of runs made side by side (first run of an "
                         "entry wins) into --out; runs nothing")
    ap.add_argument("--note", default=None, help="with --merge: a paragraph to add")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.note)
    entries = (args.entries.split(",") if args.entries
               else QUICK_ENTRIES if args.quick else ENTRIES)
    budget = ({"num_chains": 2, "num_samples": 60, "num_warmup": 40} if args.quick else
              {"num_chains": args.chains, "num_samples": args.samples,
               "num_warmup": args.warmup})
    for n in entries:
        C.entry(n)
    t_start = time.time()
    loads = [_load()]
    rows, refs = [], {}
    for name in entries:
        refs[name] = reference_info(name)
        methods = dict(uqrecon_methods(name))
        if not args.no_external:
            methods.update(external_methods(name))
        print(f"== {name}: {', '.join(methods)}  (load {' '.join(_load())})", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block = C.leaderboard([name], methods, budget=budget, seed=0)
        for r in block:
            print(f"   {r['method']:28s} {r['status'][:70]:10s} "
                  + (f"std err {r['std_error']:.3f} W1 {r['w1_marginal']:.2e} "
                     f"wall {r['wall_s']:.1f}s" if r["status"] == "ok" else ""), flush=True)
        rows += block
        loads.append(_load())
        write(args.out, budget, entries, rows, refs, [loads], [time.time() - t_start],
              [_command(args)], args.quick, done=False)
    md = write(args.out, budget, entries, rows, refs, [loads], [time.time() - t_start],
               [_command(args)], args.quick, done=True)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

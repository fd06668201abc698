"""Deep-learning UQ benchmark: training/inference speed and the evaluation tables.

Sections (all on the current JAX device; CPU unless a GPU is present):

1. ``speed``  -- training time per epoch at 64x64 (an "epoch" is ``--epoch-steps`` steps
   of ``--batch`` freshly simulated images) and inference time for T=32 MC-dropout
   passes / M=5 ensemble members at 128x128, batched.
2. ``test``   -- networks trained on random ellipses (undersampled MRI, 64x64), judged on
   held-out Shepp-Logan and brain phantoms: PSNR/SSIM of the mean, 90 % coverage,
   |error|-std correlation, AUSE; then the out-of-distribution check (a bright insert
   absent from training: epistemic std inside / outside the insert).
3. ``gold``   -- a well-specified problem: images drawn from a GMRF prior, MRI data with
   the same noise; the deep methods beside the exact GMRF posterior
   (``uqrecon.gold.exact_gaussian``) on the same data.

    python benchmarks/deep.py                  # everything, CPU-sized defaults
    python benchmarks/deep.py --sections gold --steps 400

Prints markdown tables and writes ``out/deep/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from uqrecon import phantoms
from uqrecon.deep import (Task, UNet, evaluate, measure, mri_task, ood_ratio,
                          predict, train, with_insert)
from uqrecon.deep.data import simulate

LR = 2e-3
BETA = 0.5     # beta-NLL: keeps the mean learning while the variance head trains


def _table(rows, cols):
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)   # noqa: E731
    return head + "\n".join("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |"
                            for r in rows)


def _models(features):
    """MC-dropout network (dropout 0.1) and ensemble member (no dropout), both with the
    heteroscedastic head."""
    return (UNet(features, dropout_rate=0.1, heteroscedastic=True),
            UNet(features, dropout_rate=0.0, heteroscedastic=True))


def _train_all(task, features, steps, batch, members, ckpt, seed=0):
    """Train (or, from checkpoints in ``ckpt``, resume/reload) both networks."""
    mc_model, ens_model = _models(features)
    opt = optax.adam(LR)
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    t0 = time.perf_counter()
    mc_state, mc_loss = train(mc_model, task, seed, steps, batch_size=batch, optimizer=opt,
                              loss="nll", beta=BETA, checkpoint=f"{ckpt}_mc.msgpack")
    t1 = time.perf_counter()
    ens_state, ens_loss = train(ens_model, task, seed + 1, steps, batch_size=batch,
                                optimizer=opt, loss="nll", beta=BETA, num_members=members,
                                checkpoint=f"{ckpt}_ens{members}.msgpack")
    t2 = time.perf_counter()
    print(f"  MC-dropout net: {steps} steps in {t1 - t0:.1f} s (final loss "
          f"{mc_loss[-20:].mean():.4f}); ensemble of {members}: {t2 - t1:.1f} s "
          f"(0 s when reloaded from checkpoint)")
    return (mc_model, mc_state.params), (ens_model, ens_state.params)


def _methods(trained, x0, y, key, passes):
    (mc_model, mc_params), (ens_model, ens_params) = trained
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "mc_dropout": predict(mc_model, mc_params, x0, y, k1, method="mc_dropout",
                              num_passes=passes),
        "ensemble": predict(ens_model, ens_params, x0, y, k2, method="ensemble"),
        "heteroscedastic only": predict(mc_model, mc_params, x0, y, k3,
                                        method="deterministic"),
    }


def _row(name, res, truth):
    ev = evaluate(res, truth)
    return {"method": name, "psnr": ev["psnr"], "ssim": ev["ssim"],
            "coverage_90": ev["coverage_90"], "pearson |err|-std": ev["pearson_error_std"],
            "ause": ev["ause"], "mean std": float(res.std.mean())}


def _average(rows):
    out = {}
    for r in rows:
        acc = out.setdefault(r["method"], {"method": r["method"], "_n": 0})
        acc["_n"] += 1
        for k, v in r.items():
            if isinstance(v, float):
                acc[k] = acc.get(k, 0.0) + v
    for acc in out.values():
        n = acc.pop("_n")
        for k, v in acc.items():
            if isinstance(v, float):
                acc[k] = v / n
    return list(out.values())


# --------------------------------------------------------------------------------------
def speed(args):
    print("\n## Speed")
    task = mri_task((64, 64), acceleration=4, noise_level=0.02)
    mc_model, ens_model = _models(tuple(args.features))
    opt = optax.adam(LR)
    out = {}
    for name, model, members in (("unet", mc_model, None), ("ensemble5", ens_model, 5)):
        t0 = time.perf_counter()
        train(model, task, 0, 1, batch_size=args.batch, optimizer=opt, loss="nll",
              beta=BETA, num_members=members)           # compile + one step
        t1 = time.perf_counter()
        train(model, task, 0, 1 + args.epoch_steps, batch_size=args.batch, optimizer=opt,
              loss="nll", beta=BETA, num_members=members)
        t2 = time.perf_counter()
        # second call: compiled step cached, 1 + epoch_steps steps from a fresh init
        step_s = (t2 - t1) / (1 + args.epoch_steps)
        out[name] = {"first_call_s": t1 - t0, "step_s": step_s,
                     "epoch_s": step_s * args.epoch_steps}
        print(f"  train {name} 64x64 batch {args.batch}: first call {t1 - t0:.2f} s, "
              f"{step_s * 1e3:.1f} ms/step, epoch ({args.epoch_steps} steps, "
              f"{args.epoch_steps * args.batch} images) {step_s * args.epoch_steps:.1f} s")

    big = mri_task((128, 128), acceleration=4, noise_level=0.02)
    batch = jax.jit(lambda k: simulate(big, k, args.infer_batch))(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    p_mc = mc_model.init(key, batch.x0, batch.y)["params"]
    p_ens = jax.vmap(lambda k: ens_model.init(k, batch.x0, batch.y)["params"])(
        jax.random.split(key, 5))
    for name, model, params, method in (("mc_dropout T=32", mc_model, p_mc, "mc_dropout"),
                                        ("ensemble M=5", ens_model, p_ens, "ensemble")):
        r = predict(model, params, batch.x0, batch.y, key, method=method, num_passes=32)[0]
        out[name] = dict(r.timings)
        print(f"  infer {name} 128x128 batch {args.infer_batch}: compile "
              f"{r.timings['compile_s']:.2f} s, run {r.timings['run_s']:.3f} s "
              f"({r.timings['run_s'] / args.infer_batch * 1e3:.1f} ms/image) on "
              f"{jax.devices()[0].platform}")
    return out


# --------------------------------------------------------------------------------------
def test_set(args):
    print("\n## Held-out test set (MRI 4x, 64x64, trained on random ellipses)")
    shape = (64, 64)
    task = mri_task(shape, acceleration=4, noise_level=0.02)
    trained = _train_all(task, tuple(args.features), args.steps, args.batch, args.members,
                         os.path.join(args.out, "ckpt", f"test_{args.steps}"))
    sl, brain = phantoms.shepp_logan(shape), phantoms.brain_mri(shape)
    truths = jnp.stack([sl, brain, sl[::-1], brain[:, ::-1]])
    data = measure(task, jax.random.PRNGKey(100), truths)
    res = _methods(trained, data.x0, data.y, jax.random.PRNGKey(5), args.passes)
    rows = []
    for i, truth in enumerate(np.asarray(truths)):
        for name, rs in res.items():
            rows.append(_row(name, rs[i], truth))
        rows.append({"method": "zero-filled input", "psnr": float(
            evaluate_psnr(data.x0[i], truth))})
    table = _average(rows)
    cols = ["method", "psnr", "ssim", "coverage_90", "pearson |err|-std", "ause", "mean std"]
    print(_table(table, cols))

    print("\n## Out-of-distribution insert (bright disc, value 1.5 > any training value)")
    ood_imgs, masks = zip(*[with_insert(t, center=(0.25, -0.3), radius=0.15, value=1.5)
                            for t in truths[:2]])
    ood = measure(task, jax.random.PRNGKey(101), jnp.stack(ood_imgs))
    res_ood = _methods(trained, ood.x0, ood.y, jax.random.PRNGKey(6), args.passes)
    ood_rows = []
    for name in ("mc_dropout", "ensemble"):
        for i in range(2):
            r_in, r_ref = res_ood[name][i], res[name][i]
            m = np.asarray(masks[i])
            epi_in = np.sqrt(r_in.diagnostics["epistemic_variance"])[m].mean()
            epi_ref = np.sqrt(r_ref.diagnostics["epistemic_variance"])[m].mean()
            ood_rows.append({"method": name, "image": ["shepp_logan", "brain"][i],
                             "ratio inside/outside": ood_ratio(r_in, m),
                             "same region without insert": ood_ratio(r_ref, m),
                             "rise in region (x)": float(epi_in / epi_ref),
                             "abs err in insert": float(np.abs(
                                 r_in.mean - np.asarray(ood_imgs[i]))[m].mean())})
    print(_table(ood_rows, ["method", "image", "ratio inside/outside",
                            "same region without insert", "rise in region (x)",
                            "abs err in insert"]))
    return {"table": table, "ood": ood_rows}


def evaluate_psnr(x, truth):
    from uqrecon.uq.metrics import psnr

    return psnr(np.asarray(x), np.asarray(truth))


# --------------------------------------------------------------------------------------
def _gmrf_sampler(shape, delta, mean):
    """Exact GMRF prior draws ``m + C z`` with ``C C^T = Q^{-1}`` (dense; small images)."""
    from uqrecon.models import GMRF

    prior = GMRF(shape, delta=delta, mean=mean)
    n = shape[0] * shape[1]
    eye = jnp.eye(n).reshape(n, *shape)
    q = np.asarray(jax.vmap(prior.precision)(eye).reshape(n, n), np.float64)
    chol = np.linalg.cholesky(q)
    c = jnp.asarray(np.linalg.inv(chol).T, jnp.float32)       # (L^-T), C C^T = Q^-1
    return prior, lambda key: mean + (c @ jax.random.normal(key, (n,))).reshape(shape)


def gold(args):
    from uqrecon.gold import exact_gaussian
    from uqrecon.models import GMRF, ComplexGaussian, Posterior
    from uqrecon.uq import compare

    shape, delta, mean = (32, 32), 20.0, 0.5
    print(f"\n## Well-specified: GMRF prior (delta={delta}, mean {mean}), MRI 4x "
          f"{shape[0]}x{shape[1]}, 3 % noise; deep methods vs the exact posterior")
    _, sampler = _gmrf_sampler(shape, delta, mean)
    base = mri_task(shape, acceleration=4, noise_level=0.03)
    task = Task(base.operator, base.noise_level, base.reconstruct, sampler)
    trained = _train_all(task, (16, 32), args.steps, args.batch, args.members,
                         os.path.join(args.out, "ckpt", f"gold_{args.steps}"), seed=10)
    truths = jax.vmap(sampler)(jax.random.split(jax.random.PRNGKey(200), args.gold_images))
    data = measure(task, jax.random.PRNGKey(201), truths)
    res = _methods(trained, data.x0, data.y, jax.random.PRNGKey(7), args.passes)
    rows, cmp_rows = [], []
    for i, truth in enumerate(np.asarray(truths)):
        sigma = base.noise_level * float(jnp.max(jnp.abs(task.operator(truths[i]))))
        post = Posterior(ComplexGaussian(task.operator, data.y[i], sigma),
                         GMRF(shape, delta=delta, mean=mean))
        exact = exact_gaussian(post, seed=i)
        exact_draws = exact.replace(draws=np.asarray(exact.sample(jax.random.PRNGKey(i),
                                                                  512))[None])
        rows.append(_row("exact GMRF posterior", exact_draws, truth))
        for name, rs in res.items():
            rows.append(_row(name, rs[i], truth))
            c = compare(rs[i], exact, truth)
            cmp_rows.append({"method": name, "mean_error": c["mean_error"],
                             "std_error": c["std_error"], "std_ratio": c["std_ratio"]})
    table = _average(rows)
    cols = ["method", "psnr", "ssim", "coverage_90", "pearson |err|-std", "ause", "mean std"]
    print(_table(table, cols))
    print("\nAgainst the exact posterior (relative errors of mean and std; std ratio):")
    cmp_table = _average(cmp_rows)
    print(_table(cmp_table, ["method", "mean_error", "std_error", "std_ratio"]))
    return {"table": table, "vs_exact": cmp_table}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=["speed", "test", "gold"],
                    choices=["speed", "test", "gold"])
    ap.add_argument("--steps", type=int, default=300, help="training steps per network")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--passes", type=int, default=32)
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--epoch-steps", type=int, default=20)
    ap.add_argument("--infer-batch", type=int, default=4)
    ap.add_argument("--gold-images", type=int, default=4)
    ap.add_argument("--out", default="out/deep")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0]}, jax {jax.__version__}")
    results = {"args": vars(args), "device": str(jax.devices()[0])}
    for name in args.sections:
        results[name] = {"speed": speed, "test": test_set, "gold": gold}[name](args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=lambda o: np.asarray(o).tolist())
    print(f"\nwrote {os.path.join(args.out, 'results.json')}")


if __name__ == "__main__":
    main()

"""Deep-learning UQ benchmark: learning curves, evaluation tables, OOD check and speed.

Sections (all on the current JAX device; CPU unless a GPU is present):

``ct``, ``mri``  -- held-out test set. Networks are trained on random ellipses (sparse-view
    CT, 30 angles, FBP input / 4x Cartesian MRI, zero-filled input; 64x64, 2 % noise)
    and judged on modified Shepp-Logan and brain phantoms (and their mirror images, two
    noise draws each): PSNR/SSIM of the mean, 90 % coverage, calibration error,
    Pearson |error|-std, AUSE, for MC dropout, deep ensemble, heteroscedastic network and
    ensemble + heteroscedastic (the aleatoric/epistemic split). Learning curves (train
    loss, held-out loss, held-out PSNR vs step) are printed for every network.
``gold``  -- a well-specified problem: images drawn from a GMRF prior, MRI 4x 32x32; the
    deep methods beside the exact GMRF posterior (``uqrecon.gold.exact_gaussian``) on the
    same data, with ``uqrecon.compare`` figures against it.
``ood``  -- bright insert absent from training (value 1.5 > any training value): epistemic
    std in the insert region with the insert over the same region without it, over
    images x insert positions x noise draws, with a 95 % interval (uses the ``ct``/``mri``
    networks: their checkpoints are reloaded, or they are trained first).
``speed``  -- training time per step/epoch at 64x64 (single net; ensemble of 5 trained
    sequentially and with vmap) and inference time for T=32 MC-dropout passes / M=5
    members at 128x128, batched; ratios against one network in the same run.

Every network is checkpointed under ``--out``; a rerun reloads instead of retraining.

    nice -n 15 python benchmarks/deep.py --sections ct mri gold ood speed

Each section writes ``{out}/{section}.md``; the available ones are collected into
``--md`` (default ``benchmarks/results/deep.md``), raw numbers into ``{out}/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from uqrecon import phantoms
from uqrecon.deep import (Task, UNet, ct_task, default_optimizer, evaluate, held_out_loss,
                          measure, mri_task, predict, train, with_insert)
from uqrecon.deep.data import simulate
from uqrecon.uq.metrics import psnr

BETA = 0.5     # beta-NLL: keeps the mean learning while the variance head trains
LR = 2e-3
SECTIONS = ("ct", "mri", "gold", "ood", "speed")
COLS = ["method", "psnr", "ssim", "coverage_90", "calib_err", "pearson", "ause", "mean_std"]


def _table(rows, cols):
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)   # noqa: E731
    return head + "\n".join("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |"
                            for r in rows)


def _task(name, shape):
    if name == "ct":
        return ct_task(shape, num_angles=30, noise_level=0.02)
    return mri_task(shape, acceleration=4, noise_level=0.02)


def _test_images(shape):
    """Held-out test truths: modified Shepp-Logan, brain phantom and their mirror images."""
    sl, brain = phantoms.shepp_logan(shape), phantoms.brain_mri(shape)
    return jnp.stack([sl, brain, sl[:, ::-1], brain[::-1]]), ["shepp_logan", "brain",
                                                               "shepp_logan_lr", "brain_ud"]


def _models(features):
    """MC-dropout network (dropout 0.1) and ensemble member (no dropout), both with the
    heteroscedastic head (trained with beta-NLL)."""
    return (UNet(features, dropout_rate=0.1, heteroscedastic=True),
            UNet(features, dropout_rate=0.0, heteroscedastic=True))


class _Curve:
    """Training callback: held-out loss on simulated ellipses and PSNR of the
    deterministic prediction on the held-out test images, every ``callback_every`` steps."""

    def __init__(self, model, val, test):
        self.model, self.val, self.test, self.rows = model, val, test, []
        self.apply = jax.jit(lambda p, x0, y: model.apply({"params": p}, x0, y)[0])

    def __call__(self, step, state):
        pred = np.asarray(self.apply(state.params, self.test.x0, self.test.y))
        truth = np.asarray(self.test.x)
        self.rows.append({
            "step": step,
            "held_out_nll": held_out_loss(self.model, state.params, self.val, "nll", BETA),
            "held_out_mse": held_out_loss(self.model, state.params, self.val, "mse"),
            "test_psnr": float(np.mean([psnr(p, t) for p, t in zip(pred, truth)]))})


def _curve_table(curve, losses, window=50):
    rows = []
    for r in curve:
        s = r["step"]
        lo = losses[max(0, s - window):s]
        rows.append(dict(r, train_loss=float(np.mean(lo)) if len(lo) else float("nan")))
    return _table(rows, ["step", "train_loss", "held_out_nll", "held_out_mse", "test_psnr"])


def _train_logged(name, model, task, seed, args, ckpt, val, test, members=None):
    """Train one network (or a sequential ensemble) with a learning curve; reload if the
    checkpoint is complete. Ensemble members train ``args.ensemble_steps`` steps."""
    curves = []
    steps = args.steps if members is None else args.ensemble_steps

    def cb(step, state):
        if step == 0 or not curves:      # a new member, or a run resumed mid-way
            curves.append(_Curve(model, val, test))
        curves[-1](step, state)

    t0 = time.perf_counter()
    state, losses = train(model, task, seed, steps, batch_size=args.batch,
                          optimizer=default_optimizer(steps, LR), loss="nll", beta=BETA,
                          num_members=members, checkpoint=ckpt, checkpoint_every=100,
                          callback=cb, callback_every=max(steps // 8, 1))
    dt = time.perf_counter() - t0
    side = ckpt + ".curve.json"          # the learning curve, kept beside the checkpoint
    if curves:
        info = {"seconds": dt, "curve": curves[0].rows}
        with open(side, "w") as f:
            json.dump(info, f)
    else:
        info = json.load(open(side)) if os.path.exists(side) else {"seconds": None,
                                                                     "curve": None}
    md = [f"**{name}**: {steps} steps x batch {args.batch}"
          + (f" x {members} members (sequential)" if members else "")
          + (f", {info['seconds']:.0f} s" if info["seconds"] else "")
          + ("" if curves else " (reloaded from checkpoint)")]
    if info["curve"]:
        md.append("\nLearning curve" + (" (member 0)" if members else "")
                  + " -- train loss = mean beta-NLL of the previous 50 steps; held-out: 64 "
                  "fresh images from the training distribution (dropout off); test PSNR: "
                  "the held-out test images, deterministic prediction:\n")
        md.append(_curve_table(info["curve"], losses if members is None else losses[:, 0]))
    print("\n".join(md), flush=True)
    return state, "\n".join(md), info


def _trained(task_name, args, log=True):
    shape = (args.size, args.size)
    task = _task(task_name, shape)
    truths, _ = _test_images(shape)
    test = measure(task, jax.random.PRNGKey(100), truths)
    val = jax.jit(lambda k: simulate(task, k, 64))(jax.random.PRNGKey(99))
    mc_model, ens_model = _models(tuple(args.features))
    root = os.path.join(args.out, "ckpt", f"{task_name}{args.size}_{args.steps}_"
                        f"{'-'.join(map(str, args.features))}")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    mc_state, md1, info1 = _train_logged("MC-dropout U-Net (dropout 0.1, heteroscedastic)",
                                         mc_model, task, 0, args, root + "_mc.msgpack", val,
                                         test)
    ens_state, md2, info2 = _train_logged("Ensemble (U-Nets without dropout, heteroscedastic)",
                                          ens_model, task, 1, args,
                                          f"{root}_ens{args.members}_{args.ensemble_steps}"
                                          ".msgpack", val, test, members=args.members)
    return {"task": task, "mc": (mc_model, mc_state.params),
            "ens": (ens_model, ens_state.params), "md": md1 + "\n\n" + md2,
            "train": {"mc": info1, "ensemble": info2}}


def _methods(tr, x0, y, key, passes):
    """The four methods (and MC dropout + heteroscedastic) from the two trained networks:
    plain MC dropout / plain ensemble use the means only (epistemic), 'heteroscedastic'
    is member 0 alone (aleatoric only), the '+ heteroscedastic' rows the full split."""
    (mc_model, mc_params), (ens_model, ens_params) = tr["mc"], tr["ens"]
    member0 = jax.tree.map(lambda a: a[0], ens_params)
    k = jax.random.split(key, 5)
    return {
        "MC dropout (T=%d)" % passes: predict(mc_model, mc_params, x0, y, k[0],
                                              method="mc_dropout", num_passes=passes,
                                              aleatoric=False),
        "ensemble (M=%d)" % args_members(ens_params): predict(
            ens_model, ens_params, x0, y, k[1], method="ensemble", aleatoric=False),
        "heteroscedastic (1 net)": predict(ens_model, member0, x0, y, k[2],
                                           method="deterministic"),
        "ensemble + heteroscedastic": predict(ens_model, ens_params, x0, y, k[3],
                                              method="ensemble"),
        "MC dropout + heteroscedastic": predict(mc_model, mc_params, x0, y, k[4],
                                                method="mc_dropout", num_passes=passes),
    }


def args_members(params):
    return int(jax.tree.leaves(params)[0].shape[0])


def _row(name, res, truth):
    ev = evaluate(res, truth)
    d = res.diagnostics
    split = ({"epi_std": float(np.sqrt(d["epistemic_variance"]).mean()),
              "alea_std": float(np.sqrt(d["aleatoric_variance"]).mean())}
             if "epistemic_variance" in d else {})
    return {"method": name, "psnr": ev["psnr"], "ssim": ev["ssim"],
            "coverage_90": ev["coverage_90"], "calib_err": ev["calibration_error"],
            "pearson": ev["pearson_error_std"], "ause": ev["ause"],
            "mean_std": float(res.std.mean()), **split}


def _average(rows):
    """Mean of every float column per method, with the standard error of PSNR."""
    groups = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    out = []
    for name, rs in groups.items():
        acc = {"method": name, "n": len(rs)}
        for k in rs[0]:
            if isinstance(rs[0][k], float):
                acc[k] = float(np.mean([r[k] for r in rs]))
        if len(rs) > 1 and "psnr" in acc:
            acc["psnr_se"] = float(np.std([r["psnr"] for r in rs], ddof=1) / math.sqrt(len(rs)))
        out.append(acc)
    return out


# --------------------------------------------------------------------------------------
def test_section(task_name, args):
    label = {"ct": "Sparse-view CT (30 angles over [0, pi), FBP input)",
             "mri": "Cartesian MRI 4x (random lines, 8 % centre, zero-filled input)"}[task_name]
    title = f"## {label}, {args.size}x{args.size}, 2 % noise: held-out test set"
    print("\n" + title, flush=True)
    tr = _trained(task_name, args)
    task = tr["task"]
    truths, names = _test_images((args.size, args.size))
    rows = []
    for rep in range(args.noise_draws):
        data = measure(task, jax.random.PRNGKey(1000 + rep), truths)
        res = _methods(tr, data.x0, data.y, jax.random.PRNGKey(50 + rep), args.passes)
        for i, truth in enumerate(np.asarray(truths)):
            rows.append({"method": "input (" + ("FBP" if task_name == "ct" else
                                                "zero-filled") + ")",
                         "psnr": psnr(np.asarray(data.x0[i]), truth),
                         "ssim": float(evaluate_ssim(data.x0[i], truth))})
            for name, rs in res.items():
                rows.append(_row(name, rs[i], truth))
    table = _average(rows)
    cols = ["method", "n", "psnr", "psnr_se", "ssim", "coverage_90", "calib_err", "pearson",
            "ause", "mean_std", "epi_std", "alea_std"]
    md = (f"{title}\n\nTrained on random ellipses; test: {', '.join(names)}, "
          f"{args.noise_draws} noise draws each (n = images x draws; psnr_se = standard error "
          f"over them). calib_err = mean |coverage(a) - a| over a = 0.05..0.99; pearson = "
          f"corr(|error|, std); epi_std / alea_std = mean epistemic / aleatoric std.\n\n"
          + _table(table, cols) + "\n\n" + tr["md"] + "\n")
    print(_table(table, cols), flush=True)
    return md, {"table": table, "train": tr["train"]}


def evaluate_ssim(x, truth):
    from uqrecon.uq.metrics import ssim

    return ssim(np.asarray(x), np.asarray(truth))


# --------------------------------------------------------------------------------------
def ood_section(args):
    title = "## Out-of-distribution insert (bright disc, value 1.5 > any training value)"
    print("\n" + title, flush=True)
    md = [title, "", "Per case (test image x insert position x noise draw): rise = mean "
          "epistemic std inside the insert region with the insert / the same region of the "
          "same image and noise without it; ratio = inside / outside the region with the "
          "insert. Geometric mean over cases with a 95 % t-interval on log(rise); "
          "'rises?' = yes when the interval's lower end is above 1.", ""]
    centers = [(0.25, -0.3), (-0.3, 0.2), (0.0, 0.35)]
    rows, raw = [], {}
    for task_name in ("ct", "mri"):
        tr = _trained(task_name, args)
        task = tr["task"]
        truths, _ = _test_images((args.size, args.size))
        rises, ratios, err_std = {}, {}, {}
        for rep in range(args.noise_draws):
            for ci, c in enumerate(centers):
                ins, masks = zip(*[with_insert(t, center=c, radius=0.15, value=1.5)
                                   for t in truths])
                key = jax.random.PRNGKey(2000 + rep)
                base = measure(task, key, truths)
                ood = measure(task, key, jnp.stack(ins))    # same noise key
                kp = jax.random.PRNGKey(60 + 10 * rep + ci)
                r0 = _methods(tr, base.x0, base.y, kp, args.passes)
                r1 = _methods(tr, ood.x0, ood.y, kp, args.passes)
                for name in r0:
                    if name.startswith("heteroscedastic"):
                        continue
                    for i, m in enumerate(masks):
                        m = np.asarray(m)
                        e1 = np.sqrt(r1[name][i].diagnostics["epistemic_variance"])
                        e0 = np.sqrt(r0[name][i].diagnostics["epistemic_variance"])
                        rises.setdefault(name, []).append(e1[m].mean() / e0[m].mean())
                        ratios.setdefault(name, []).append(e1[m].mean() / e1[~m].mean())
                        err = np.abs(r1[name][i].mean - np.asarray(ins[i]))[m].mean()
                        err_std.setdefault(name, []).append(err / r1[name][i].std[m].mean())
        for name in rises:
            lr = np.log(np.asarray(rises[name], np.float64))
            n = lr.size
            half = float(__import__("scipy.stats").stats.t.ppf(0.975, n - 1)
                         * lr.std(ddof=1) / math.sqrt(n))
            lo, hi = math.exp(lr.mean() - half), math.exp(lr.mean() + half)
            rows.append({"task": task_name, "method": name, "cases": n,
                         "rise (geo mean)": math.exp(lr.mean()),
                         "95% CI": f"[{lo:.3g}, {hi:.3g}]",
                         "cases rising": f"{int(np.sum(lr > 0))}/{n}",
                         "ratio in/out": float(np.exp(np.mean(np.log(ratios[name])))),
                         "|err|/std in insert": float(np.mean(err_std[name])),
                         "rises?": "yes" if lo > 1 else ("no" if hi < 1 else "unclear")})
        raw[task_name] = {k: np.asarray(v).tolist() for k, v in rises.items()}
    cols = ["task", "method", "cases", "rise (geo mean)", "95% CI", "cases rising",
            "ratio in/out", "|err|/std in insert", "rises?"]
    md.append(_table(rows, cols))
    print(md[-1], flush=True)
    return "\n".join(md) + "\n", {"table": rows, "rises": raw}


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


def gold_section(args):
    from uqrecon.gold import exact_gaussian
    from uqrecon.models import GMRF, ComplexGaussian, Posterior
    from uqrecon.uq import compare

    shape, delta, mean = (32, 32), 20.0, 0.5
    title = (f"## Well-specified: GMRF prior (delta={delta}, mean {mean}), MRI 4x "
             f"{shape[0]}x{shape[1]}, 3 % noise; deep methods vs the exact posterior")
    print("\n" + title, flush=True)
    _, sampler = _gmrf_sampler(shape, delta, mean)
    base = mri_task(shape, acceleration=4, noise_level=0.03)
    task = Task(base.operator, base.noise_level, base.reconstruct, sampler)
    truths = jax.vmap(sampler)(jax.random.split(jax.random.PRNGKey(200), args.gold_images))
    data = measure(task, jax.random.PRNGKey(201), truths)
    val = jax.jit(lambda k: simulate(task, k, 64))(jax.random.PRNGKey(99))
    gargs = argparse.Namespace(**dict(vars(args), steps=args.gold_steps,
                                      ensemble_steps=args.gold_steps))
    mc_model, ens_model = _models((16, 32))
    root = os.path.join(args.out, "ckpt", f"gold_{args.gold_steps}")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    mc_state, md1, _ = _train_logged("MC-dropout U-Net (16, 32)", mc_model, task, 10, gargs,
                                     root + "_mc.msgpack", val, data)
    ens_state, md2, _ = _train_logged("Ensemble (16, 32)", ens_model, task, 11, gargs,
                                      root + "_ens.msgpack", val, data, members=args.members)
    tr = {"mc": (mc_model, mc_state.params), "ens": (ens_model, ens_state.params)}
    res = _methods(tr, data.x0, data.y, jax.random.PRNGKey(7), args.passes)
    rows, cmp_rows = [], []
    for i, truth in enumerate(np.asarray(truths)):
        sigma = base.noise_level * float(jnp.max(jnp.abs(task.operator(truths[i]))))
        post = Posterior(ComplexGaussian(task.operator, data.y[i], sigma),
                         GMRF(shape, delta=delta, mean=mean))
        exact = exact_gaussian(post, seed=i)
        rows.append({"method": "input (zero-filled)",
                     "psnr": psnr(np.asarray(data.x0[i]), truth)})
        rows.append(_row("exact GMRF posterior", exact, truth))
        for name, rs in res.items():
            rows.append(_row(name, rs[i], truth))
            c = compare(rs[i], exact, truth)
            cmp_rows.append({"method": name, "mean_error": c["mean_error"],
                             "std_error": c["std_error"], "std_ratio": c["std_ratio"]})
    table = _average(rows)
    cols = ["method", "n", "psnr", "psnr_se", "ssim", "coverage_90", "calib_err", "pearson",
            "ause", "mean_std"]
    cmp_table = _average(cmp_rows)
    md = (f"{title}\n\nTraining and test images are exact GMRF prior draws with the same "
          f"operator and noise, so the exact posterior is the Bayes-optimal answer. "
          f"{args.gold_images} test images.\n\n" + _table(table, cols)
          + "\n\nAgainst the exact posterior (`uqrecon.compare`: relative error of mean and "
          "std, mean std / exact mean std):\n\n"
          + _table(cmp_table, ["method", "mean_error", "std_error", "std_ratio"])
          + "\n\n" + md1 + "\n\n" + md2 + "\n")
    print(_table(table, cols) + "\n\n" + _table(cmp_table, ["method", "mean_error",
                                                           "std_error", "std_ratio"]),
          flush=True)
    return md, {"table": table, "vs_exact": cmp_table}


# --------------------------------------------------------------------------------------
def speed_section(args):
    title = f"## Speed ({jax.devices()[0].platform}, jax {jax.__version__})"
    print("\n" + title, flush=True)
    task = _task("mri", (64, 64))
    mc_model, ens_model = _models(tuple(args.features))
    opt = default_optimizer(1000, LR)
    rows = []

    def timed(model, members, mode, steps):
        kw = dict(batch_size=args.batch, optimizer=opt, loss="nll", beta=BETA,
                  num_members=members, ensemble_mode=mode)
        t0 = time.perf_counter()
        train(model, task, 0, 1, **kw)                 # compile + one step
        t1 = time.perf_counter()
        train(model, task, 0, 1 + steps, **kw)         # cached compile, fresh init
        t2 = time.perf_counter()
        return t1 - t0, (t2 - t1) / (1 + steps)

    base_first, base = timed(mc_model, None, "auto", args.epoch_steps)
    for name, model, members, mode, steps in (
            ("U-Net, 1 net", mc_model, None, "auto", args.epoch_steps),
            (f"ensemble M={args.members}, sequential", ens_model, args.members, "sequential",
             max(args.epoch_steps // args.members, 2)),
            (f"ensemble M={args.members}, vmap", ens_model, args.members, "vmap", 3)):
        first, step = (base_first, base) if members is None else timed(model, members, mode,
                                                                       steps)
        m = members or 1
        rows.append({"what": f"train {name}", "size": "64x64", "batch": args.batch,
                     "first call s": first, "s / step": step,
                     "epoch s": step * args.epoch_steps, "ratio vs 1 net": step / base,
                     "per member vs 1 net": step / m / base})
        print(rows[-1], flush=True)

    big = _task("mri", (128, 128))
    batch = jax.jit(lambda k: simulate(big, k, args.infer_batch))(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    p_mc = mc_model.init(key, batch.x0, batch.y)["params"]
    p_ens = jax.vmap(lambda k: ens_model.init(k, batch.x0, batch.y)["params"])(
        jax.random.split(key, 5))
    one = None
    for name, model, params, method in (
            ("1 pass (deterministic)", mc_model, p_mc, "deterministic"),
            ("MC dropout T=32", mc_model, p_mc, "mc_dropout"),
            ("ensemble M=5", ens_model, p_ens, "ensemble")):
        r = predict(model, params, batch.x0, batch.y, key, method=method, num_passes=32)[0]
        one = one or r.timings["run_s"]
        rows.append({"what": f"infer {name}", "size": "128x128", "batch": args.infer_batch,
                     "first call s": r.timings["compile_s"] + r.timings["run_s"],
                     "s / batch": r.timings["run_s"],
                     "ms / image": r.timings["run_s"] / args.infer_batch * 1e3,
                     "ratio vs 1 pass": r.timings["run_s"] / one})
        print(rows[-1], flush=True)
    cols = ["what", "size", "batch", "first call s", "s / step", "epoch s", "s / batch",
            "ms / image", "ratio vs 1 net", "per member vs 1 net", "ratio vs 1 pass"]
    md = (f"{title}\n\nU-Net features {tuple(args.features)}, heteroscedastic head; an epoch "
          f"is {args.epoch_steps} steps x batch {args.batch} freshly simulated images; an "
          f"ensemble step trains all members one step ('per member' divides by M). "
          f"Shared 2-core CPU: absolute times drift, the ratios are the figures to keep.\n\n"
          + _table(rows, cols) + "\n")
    print(_table(rows, cols), flush=True)
    return md, {"rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=600, help="training steps, MC-dropout net")
    ap.add_argument("--ensemble-steps", type=int, default=300,
                    help="training steps per ensemble member")
    ap.add_argument("--gold-steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--passes", type=int, default=32)
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--noise-draws", type=int, default=2)
    ap.add_argument("--epoch-steps", type=int, default=20)
    ap.add_argument("--infer-batch", type=int, default=4)
    ap.add_argument("--gold-images", type=int, default=4)
    ap.add_argument("--out", default="out/deep")
    ap.add_argument("--md", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "deep.md"))
    args = ap.parse_args()
    print(f"device: {jax.devices()[0]}, jax {jax.__version__}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    runs = {"ct": lambda: test_section("ct", args), "mri": lambda: test_section("mri", args),
            "gold": lambda: gold_section(args), "ood": lambda: ood_section(args),
            "speed": lambda: speed_section(args)}
    for name in args.sections:
        t0 = time.perf_counter()
        md, res = runs[name]()
        took = time.perf_counter() - t0
        md += (f"\n_Section run time {took / 60:.1f} min; command: `nice -n 15 python "
               f"benchmarks/deep.py --sections {name} --steps {args.steps} --ensemble-steps "
               f"{args.ensemble_steps} --gold-steps {args.gold_steps} --members "
               f"{args.members}`._\n")
        with open(os.path.join(args.out, f"{name}.md"), "w") as f:
            f.write(md)
        results[name] = dict(res, args=vars(args), seconds=took, device=str(jax.devices()[0]))
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=lambda o: np.asarray(o).tolist())
    parts = [open(os.path.join(args.out, f"{s}.md")).read() for s in SECTIONS
             if os.path.exists(os.path.join(args.out, f"{s}.md"))]
    os.makedirs(os.path.dirname(args.md), exist_ok=True)
    with open(args.md, "w") as f:
        f.write("# Deep-learning UQ: evaluation tables and speed\n\n"
                "Written by `benchmarks/deep.py` (sections collected from "
                f"`{args.out}/*.md`).\n\n" + "\n\n".join(parts))
    print(f"\nwrote {path} and {args.md}")


if __name__ == "__main__":
    main()

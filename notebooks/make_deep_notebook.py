"""Builds notebooks/deep_uq.ipynb and executes it in place:
    JAX_PLATFORMS=cpu python notebooks/make_deep_notebook.py notebooks/deep_uq.ipynb
(needs the notebook extra: pip install -e .[notebook]). The notebook reads
``UQRECON_NOTEBOOK_SIZE``: ``full`` (default; what is saved) or ``small`` (16x16 images,
a few training steps: what tests/test_notebooks.py runs in CI). The cells are those of the
notebook as first written by hand, with the size switch added."""
import os
import sys

import nbformat as nbf
from nbclient import NotebookClient

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell
cells = [
md("""# Deep-learning uncertainty maps: MC dropout, deep ensembles, aleatoric vs epistemic

A small heteroscedastic U-Net post-processes the FBP of sparse-view CT (20 angles, 2 % noise,
32x32 so that the whole notebook runs on a CPU in a few minutes). Training data are simulated
on the fly from random ellipses with the same operator and noise model as the Bayesian side;
the test image is the modified Shepp-Logan phantom, never seen in training. The evaluation
tables at 64x64 (CT and MRI), the comparison with the exact posterior and the OOD statistics
are in `benchmarks/deep.py` / `benchmarks/results/deep.md`.
`UQRECON_NOTEBOOK_SIZE=small` runs the same code at 16x16 with a few dozen training steps
(what CI does: the networks learn nothing there; those numbers are not meant to be read)."""),
code("""import os, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
SIZE = os.environ.get("UQRECON_NOTEBOOK_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"UQRECON_NOTEBOOK_SIZE must be 'full' or 'small', got {SIZE!r}")
SMALL = SIZE == "small"
import jax, jax.numpy as jnp, numpy as np
import matplotlib
import matplotlib.pyplot as plt
matplotlib.rcParams["figure.dpi"] = 70
from uqrecon import phantoms
from uqrecon.deep import (UNet, ct_task, train, default_optimizer, held_out_loss, measure,
                          simulate, predict, evaluate, with_insert, ood_ratio, qoi_variance,
                          mc_dropout_predictions)
from uqrecon.uq.metrics import psnr

shape = (16, 16) if SMALL else (32, 32)
# training steps (MC-dropout net, each ensemble member), ensemble size, held-out images,
# dropout passes, learning curve every ... steps, ROI corner and width, smoothing window
mc_steps, ens_steps, members, num_val, passes, every, r0, c0, w, win = (
    (20, 10, 2, 8, 4, 10, 6, 5, 4, 5) if SMALL else (800, 300, 3, 64, 32, 100, 12, 10, 8, 25))
task = ct_task(shape, num_angles=20, noise_level=0.02)
# U-Net channels per level; small mode (the CI check) a two-level toy: compiling the
# three-level net dominated that run
features = (4, 8) if SMALL else (16, 32, 64)
mc_net = UNet(features, dropout_rate=0.1, heteroscedastic=True)    # MC dropout
ens_net = UNet(features, dropout_rate=0.0, heteroscedastic=True)   # ensemble member
truth = phantoms.shepp_logan(shape)
data = measure(task, jax.random.PRNGKey(42), truth[None])
val = jax.jit(lambda k: simulate(task, k, num_val))(jax.random.PRNGKey(99))   # held-out ellipses"""),
md("""## Train with beta-NLL (Gaussian NLL weighted by the stop-gradient variance^0.5)

Adam with warm-up and cosine decay (`default_optimizer`). The callback records the held-out
loss (64 fresh ellipse images) and the PSNR on the Shepp-Logan test image."""),
code("""def curve_recorder(model, rows):
    apply = jax.jit(lambda p: model.apply({"params": p}, data.x0, data.y)[0])
    def cb(step, state):
        rows.append((step, held_out_loss(model, state.params, val, "nll", 0.5),
                     held_out_loss(model, state.params, val, "mse"),
                     psnr(np.asarray(apply(state.params)[0]), np.asarray(truth))))
    return cb

t0 = time.perf_counter()
mc_curve = []
mc_state, mc_loss = train(mc_net, task, 0, mc_steps, batch_size=8, loss="nll", beta=0.5,
                          optimizer=default_optimizer(mc_steps, 2e-3),
                          callback=curve_recorder(mc_net, mc_curve), callback_every=every)
t1 = time.perf_counter()
ens_state, ens_loss = train(ens_net, task, 1, ens_steps, batch_size=8, loss="nll", beta=0.5,
                            optimizer=default_optimizer(ens_steps, 2e-3), num_members=members)
t2 = time.perf_counter()
print(f"MC-dropout net: {mc_steps} steps in {t1 - t0:.0f} s; ensemble of {members} x {ens_steps} steps "
      f"(sequential) in {t2 - t1:.0f} s")
print("FBP input PSNR on Shepp-Logan:", round(psnr(np.asarray(data.x0[0]), np.asarray(truth)), 2))
for row in mc_curve:
    print("step %4d  held-out beta-NLL %.4f  held-out MSE %.5f  test PSNR %.2f" % row)"""),
code("""smooth = lambda a: np.convolve(a, np.ones(win) / win, mode="valid")
c = np.asarray(mc_curve)
fig, ax = plt.subplots(1, 3, figsize=(11, 2.8))
ax[0].plot(smooth(mc_loss), label="MC-dropout net (train)")
for m in range(ens_loss.shape[1]):
    ax[0].plot(smooth(ens_loss[:, m]), lw=0.8, label=f"member {m} (train)")
ax[0].plot(c[:, 0], c[:, 1], "ko-", ms=3, label="MC net, held-out")
ax[0].set_xlabel("step"); ax[0].set_ylabel("beta-NLL"); ax[0].legend(fontsize=7)
ax[1].plot(c[:, 0], c[:, 2], "o-"); ax[1].set_xlabel("step"); ax[1].set_ylabel("held-out MSE")
ax[2].plot(c[:, 0], c[:, 3], "o-"); ax[2].axhline(psnr(np.asarray(data.x0[0]), np.asarray(truth)),
                                                 color="k", ls="--", label="FBP input")
ax[2].set_xlabel("step"); ax[2].set_ylabel("Shepp-Logan PSNR (dB)"); ax[2].legend()
fig.tight_layout()"""),
md("""## Predict on held-out Shepp-Logan: one `Result` per image, as for every other method"""),
code("""(r_mc,) = predict(mc_net, mc_state.params, data.x0, data.y, jax.random.PRNGKey(0),
                  method="mc_dropout", num_passes=passes)
(r_ens,) = predict(ens_net, ens_state.params, data.x0, data.y, jax.random.PRNGKey(1),
                   method="ensemble")
for name, r in (("MC dropout + het.", r_mc), ("ensemble + het.", r_ens)):
    ev = evaluate(r, np.asarray(truth))
    print(f"{name:18s} PSNR {ev['psnr']:.2f} dB  SSIM {ev['ssim']:.3f}  "
          f"coverage90 {ev['coverage_90']:.3f}  calib. error {ev['calibration_error']:.3f}  "
          f"pearson |err|-std {ev['pearson_error_std']:.3f}  AUSE {ev['ause']:.3f}")"""),
md("""## The maps

Total std splits into epistemic (spread of the passes' / members' means) and aleatoric (mean
predicted variance) exactly by the law of total variance; the mutual information is the
entropy form of the epistemic part."""),
code("""def show(r, title):
    d = r.diagnostics
    maps = [truth, data.x0[0], r.mean, np.abs(r.mean - truth), r.std,
            np.sqrt(d["epistemic_variance"]), np.sqrt(d["aleatoric_variance"]),
            d["mutual_information"]]
    names = ["truth", "FBP input", "mean", "|error|", "total std", "epistemic std",
             "aleatoric std", "mutual information"]
    fig, ax = plt.subplots(1, 8, figsize=(16, 2.3))
    for a, m, n in zip(ax, maps, names):
        im = a.imshow(np.asarray(m), cmap="gray" if n in ("truth", "FBP input", "mean") else "magma")
        a.set_title(n, fontsize=9); a.axis("off"); fig.colorbar(im, ax=a, fraction=0.046)
    fig.suptitle(title); fig.tight_layout()

show(r_mc, f"MC dropout (T = {passes}) + heteroscedastic head")
show(r_ens, f"deep ensemble (M = {members}) + heteroscedastic head")"""),
md("""## Calibration curve and sparsification"""),
code("""fig, ax = plt.subplots(1, 2, figsize=(8, 3))
for name, r in (("MC dropout", r_mc), ("ensemble", r_ens)):
    ev = evaluate(r, np.asarray(truth))
    lv, cov = ev["calibration"]
    ax[0].plot(lv, cov, "o-", ms=3, label=name)
    sp = ev["sparsification"]
    ax[1].plot(sp["fractions"], sp["curve"], label=name)
ax[0].plot([0, 1], [0, 1], "k--", lw=0.8); ax[0].set_xlabel("nominal level"); ax[0].set_ylabel("coverage")
ax[1].plot(sp["fractions"], sp["oracle"], "k--", lw=0.8, label="oracle")
ax[1].set_xlabel("fraction removed"); ax[1].set_ylabel("normalised mean |error|")
ax[0].legend(); ax[1].legend(); fig.tight_layout()"""),
md("""## Out of distribution: a bright insert absent from training

Value 1.5 is above anything in training. Same noise key with and without the insert, so the
change in epistemic std in the insert region is due to the insert alone. The statistics over
many images/positions/noise draws are in `benchmarks/results/deep.md`."""),
code("""ood_img, mask = with_insert(truth, center=(0.25, -0.3), radius=0.2, value=1.5)
base = measure(task, jax.random.PRNGKey(43), truth[None])
ood = measure(task, jax.random.PRNGKey(43), ood_img[None])
rows = []
for name, net, params, method in (("MC dropout", mc_net, mc_state.params, "mc_dropout"),
                                  ("ensemble", ens_net, ens_state.params, "ensemble")):
    (o,) = predict(net, params, ood.x0, ood.y, jax.random.PRNGKey(2), method=method)
    (b,) = predict(net, params, base.x0, base.y, jax.random.PRNGKey(2), method=method)
    m = np.asarray(mask)
    e_o, e_b = np.sqrt(o.diagnostics["epistemic_variance"]), np.sqrt(b.diagnostics["epistemic_variance"])
    print(f"{name:11s} epistemic std in region: {e_o[m].mean():.4f} with insert, "
          f"{e_b[m].mean():.4f} without (x{e_o[m].mean() / e_b[m].mean():.2f}); "
          f"inside/outside ratio {ood_ratio(o, mask):.2f}; |error| in insert {np.abs(o.mean - ood_img)[m].mean():.3f}")
    rows.append((name, o, e_o, e_b))
fig, ax = plt.subplots(1, 6, figsize=(15, 2.6))
panels = [(ood_img, "image with insert", "gray"), (rows[0][1].mean, "MC-dropout mean", "gray")]
for name, o, e_o, e_b in rows:
    panels += [(e_b, f"{name} epistemic std, no insert", "magma"),
               (e_o, f"{name} epistemic std, insert", "magma")]
for a, (m, n, cm) in zip(ax, panels):
    im = a.imshow(np.asarray(m), cmap=cm); a.set_title(n, fontsize=8); a.axis("off")
    fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout()"""),
md("""## A quantity of interest: mean value in a region

Epistemic vs aleatoric variance by double sampling (outer: dropout passes; inner: draws from
each pass's Gaussian)."""),
code("""region = np.zeros(shape, bool); region[r0:r0 + w, c0:c0 + w] = True
w = jnp.asarray(region / region.sum())
preds = mc_dropout_predictions(mc_net, mc_state.params, data.x0, data.y, jax.random.PRNGKey(0), passes)
one = type(preds)(preds.means[:, 0], preds.variances[:, 0])
q = qoi_variance(lambda x: jnp.sum(w * x), one, jax.random.PRNGKey(9), num_inner=256)
print({k: round(float(v), 6) for k, v in q.items()}, "truth:", round(float(jnp.sum(w * truth)), 4))"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
path = sys.argv[1]
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
nbf.write(nb, path)
print("wrote", path)

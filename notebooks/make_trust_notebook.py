"""Builds notebooks/trust.ipynb and executes it in place:
    JAX_PLATFORMS=cpu python notebooks/make_trust_notebook.py notebooks/trust.ipynb
(needs the notebook extra: pip install -e .[notebook]). The notebook reads
``UQRECON_NOTEBOOK_SIZE``: ``full`` (default; what is saved) or ``small`` (16x16, few
replicates: what tests/test_notebooks.py runs in CI)."""
import nbformat as nbf
from nbclient import NotebookClient

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell
cells = [
md("""# Can we trust the uncertainty? A walk through `uqrecon`'s trust tools

One image's posterior std says little on its own. This notebook asks the questions a
reader of a CT reconstruction would ask, over **replicated experiments** (many truths, many
noise draws) on a 32x32 sparse-view CT problem with a GMRF model — small enough that the
exact posterior is cheap, so every approximation can be judged against it:

1. Are the credible intervals calibrated? (exact posterior vs mean-field VI; well-specified vs
   misspecified truths)
2. Can conformal calibration repair an over-confident method, with a guarantee?
3. Is a structure (a small lesion) really there — and does the test refuse a hallucinated one?
4. Bootstrap UQ for a reconstruction map with no posterior (FBP), and the posterior of a
   region-of-interest quantity.

It runs in a few minutes on 2 CPU cores (`JAX_PLATFORMS=cpu`).
`UQRECON_NOTEBOOK_SIZE=small` runs the same code at 16x16 with a handful of replicates
(what CI does; its numbers are not meant to be read)."""),
code("""import os
os.environ.setdefault("JAX_PLATFORMS", "cpu")
SIZE = os.environ.get("UQRECON_NOTEBOOK_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"UQRECON_NOTEBOOK_SIZE must be 'full' or 'small', got {SIZE!r}")
SMALL = SIZE == "small"
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
%matplotlib inline
from IPython.display import Image, Markdown, display

import uqrecon
from uqrecon.models import GMRF, TV, Gaussian, Posterior
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators.tomo import sparse_view
from uqrecon.phantoms import shepp_logan
from uqrecon import uq

size = 16 if SMALL else 32
# replicates: exact (prior truths), exact (ellipses), mean-field; mean-field calibration half;
# bootstrap resamples
n_exact, n_mf, n_cal, n_boot = (8, 26, 22, 10) if SMALL else (100, 40, 25, 100)
lesion_kw = dict(radius=1.5, ring_width=1.0) if SMALL else {}   # lesion size in pixels (section 3)
A = sparse_view((size, size), num_angles=30)
truth = shepp_logan((size, size))
y, sigma = relative_gaussian_noise(jax.random.PRNGKey(0), A(truth), 0.01)
post = Posterior(Gaussian(A, y, sigma=float(sigma)), GMRF((size, size), delta=100.0))
exact = uqrecon.gold.exact_gaussian(post)
print(f"sigma = {float(sigma):.4g}; exact posterior: mean std {exact.std.mean():.4f}")"""),
md("""## 1. Calibration over replicated experiments

`replicated_calibration` draws (truth, data) pairs for the model of `post` — truths from
the GMRF prior itself (well specified: the exact posterior *must* be calibrated) or random
ellipses (misspecified) — runs the method on each replicate and pools pixel coverage at
every level, with a band from the spread over replicates (pixels of one image are
correlated, so the naive binomial band would be far too narrow). The MSE-ball curve asks
the image-level question: is `||x - mean||^2` below the method's level-a quantile of
`||draw - mean||^2` in a fraction a of the replicates?"""),
code("""reports = [
    uq.replicated_calibration(post, "exact", truths="prior", num_replicates=n_exact, seed=1),
    uq.replicated_calibration(post, "exact", truths="ellipses", num_replicates=n_exact, seed=2),
    uq.replicated_calibration(post, "meanfield", truths="prior", num_replicates=n_mf, seed=3),
]
display(Markdown(uq.calibration_table(reports)))
for r in reports:
    print(f"{r.label:22s} calibrated: {r.check()['calibrated']}")
plt.close(uq.calibration_figure(reports, "trust_calibration.png"))   # shown once, as saved
display(Image("trust_calibration.png"))"""),
md("""The exact posterior is calibrated when the model is right, and under-covers when the
truths are not GMRF-like (the model, not the sampler, is wrong). Mean-field VI is
over-confident: its std `1/sqrt(P_ii)` ignores the strong pixel correlations of a
sparse-view CT posterior.

## 2. Conformal repair, with a finite-sample guarantee

Split the mean-field replicates: fit on a calibration half, check on the other half.
`fit_error_bound` scales the std (`|x - mean| <= lambda std`) by conformal risk control:
the expected fraction of uncovered pixels in a fresh image is at most alpha. `fit_rcps`
(risk-controlling prediction sets, Hoeffding-Bentkus bound) makes the stronger statement
P(risk > alpha) <= delta over calibration sets."""),
code("""mf = reports[2].replicates
cal, test = mf.subset(np.arange(n_cal)), mf.subset(np.arange(n_cal, mf.num_replicates))
bound = uq.fit_error_bound(cal.truths, cal.means, cal.stds, alpha=0.1)
rcps = uq.fit_rcps(cal.truths, cal.means, cal.lower, cal.upper, alpha=0.1, delta=0.1)
raw = 1 - test.pixel_coverage[:, np.argmin(abs(test.levels - 0.9))].mean()
repaired = 1 - bound.coverage(test.truths, test.means, test.stds).mean()
print(f"mean-field's own 90 % intervals leave {raw:.3f} of the pixels uncovered")
print(f"conformal std bound (lambda = {bound.scale:.2f}): {repaired:.3f} uncovered (target <= 0.1)")
print(f"RCPS lambda = {rcps.lam:.2f};", bound.guarantee)"""),
md("""## 3. Is this structure real?

A planted lesion (a small disc) is either present, faint, absent, or *hallucinated* — painted
onto the reconstruction although the truth lacks it, as a network might. BUQO (Repetti,
Pereyra & Wiaux 2019) needs no sampling: it rejects "absent" when no image without the
structure lies in a conservative highest-posterior-density region. The sampling test
estimates P(absent | y) from exact posterior draws. The naive rule trusts the picture."""),
code("""rows = []
for case in uq.CASES:
    les = uq.planted_lesion(0, case, (size, size), **lesion_kw)
    y_l, s_l = relative_gaussian_noise(jax.random.PRNGKey(7), A(jnp.asarray(les.truth, jnp.float32)), 0.005)
    lik = Gaussian(A, y_l, sigma=float(s_l))
    tv_post = Posterior(lik, TV((size, size), 10.0))
    g_post = Posterior(lik, GMRF((size, size), delta=10.0))
    x_map, _ = uqrecon.map_estimate(tv_post)
    candidate = uq.hallucinated_candidate(les, np.asarray(x_map)) if case == "hallucinated" else np.asarray(x_map)
    b = uq.buqo_test(tv_post, les.structure, alpha=0.05, x_map=x_map)
    t = uq.sampling_test(uqrecon.gold.exact_gaussian(g_post), les.structure, alpha=0.05)
    rows.append((case, les.absent_is_true, float(uq.contrast(les.structure, candidate)) > 0,
                 b.rejected, round(b.ratio, 2), t.rejected, round(t.prob_absent, 3)))
display(Markdown("| case | absent in truth | picture says present | BUQO (TV) confirms | BUQO ratio | "
                 "sampling (GMRF) confirms | P(absent) |\\n|---|---|---|---|---|---|---|\\n" +
                 "\\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)))"""),
md("""Neither test confirms the absent or the hallucinated disc; the picture does. BUQO is
conservative (the price of needing no samples): it confirms the strong lesion, not the
faint one; the sampling test, with the exact posterior, finds both.

## 4. Bootstrap for a map with no posterior, and the risk of an ROI quantity

FBP has no posterior. The equivariant bootstrap (Tachella & Pereyra 2024) resamples data
through rotated copies of the estimate, so errors in the operator's null space show up —
the naive parametric bootstrap (identity group) cannot see them."""),
code("""fbp_map = uq.FBPReconstruction(A)
boot = uq.equivariant_bootstrap(fbp_map, A, y, float(sigma), jax.random.PRNGKey(4), group="rotate", num_resamples=n_boot)
naive = uq.naive_bootstrap(fbp_map, A, y, float(sigma), jax.random.PRNGKey(4), num_resamples=n_boot)
fig, ax = plt.subplots(1, 3, figsize=(10, 3.2))
err = np.abs(np.asarray(boot.mean) - np.asarray(truth))
vmax = float(err.max())
for a, img, title in zip(ax, (err, naive.std, boot.std),
                         ("|FBP - truth|", "naive bootstrap std", "equivariant bootstrap std")):
    im = a.imshow(img, vmin=0, vmax=vmax); a.set_title(title, fontsize=9); a.axis("off")
fig.colorbar(im, ax=ax, shrink=0.8); plt.show()
print(f"mean |error| {err.mean():.3f}; naive std {naive.std.mean():.3f}; equivariant std {boot.std.mean():.3f}")"""),
code("""region = np.zeros((size, size), bool)   # a 4x4 ROI inside the head (2x2 in small mode)
r0, c0, w = (9, 6, 2) if SMALL else (18, 13, 4)
region[r0:r0 + w, c0:c0 + w] = True
q = [uq.roi_mean(region), uq.roi_contrast(region)]
mfr = uqrecon.approximate(post, method="meanfield", seed=0)
summ = {name: uq.roi_posterior(res, q) for name, res in (("exact", exact), ("meanfield", mfr))}
print("truth:", {qq.name: round(float(uq.evaluate_quantity(qq, np.asarray(truth))), 4) for qq in q})
for name, out in summ.items():
    print(f"{name:9s}", {k: (round(v.mean, 4), round(v.std, 4)) for k, v in out.items()})
for k in summ["exact"]:
    print(f"{k}: mean-field std / exact std = {summ['meanfield'][k].std / summ['exact'][k].std:.2f}")
pix = float(np.mean(mfr.std[region]) / np.mean(exact.std[region]))
print(f"pixel std in the ROI: mean-field / exact = {pix:.2f}")"""),
md("""For a linear quantity such as the ROI mean, the exact posterior's std is `sqrt(w^T C w)`
with the full covariance. Mean-field VI's pixel stds are too small, but it also drops the
pixel correlations, so its error on an ROI quantity can go either way (compare the ratios
above): pixelwise calibration does not certify the number a clinician reads off a region,
which is why `roi_posterior` computes it from the method's own draws or factors, and why
it should be checked against the exact posterior (or over replicates) like the pixels.

Size and power over many replicates: `benchmarks/trust_calibration.py`,
`benchmarks/trust_structure.py`, `benchmarks/trust_bootstrap.py`."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
import sys, os
path = sys.argv[1]
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}).execute()
nbf.write(nb, path)
print("wrote", path)

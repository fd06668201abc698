"""Builds the notebook gallery and executes each notebook in place:

    JAX_PLATFORMS=cpu python notebooks/make_gallery.py                 # all four, full size
    JAX_PLATFORMS=cpu python notebooks/make_gallery.py quickstart mri  # some of them

Notebooks: quickstart, limited_angle, mri, byo_operator (needs the notebook extra:
pip install -e .[notebook]). Every notebook reads ``UQRECON_NOTEBOOK_SIZE``: ``full``
(default) or ``small`` (16x16 images and few draws: what ``tests/test_notebooks.py``
runs in CI). The saved notebooks are executed at full size; the kernel imports uqrecon
from ``PYTHONPATH`` / the installed package. ``--no-execute`` writes the cells only.
"""
import os
import sys

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

# ---------------------------------------------------------------------------------------
# shared cells
# ---------------------------------------------------------------------------------------
SETUP = '''import os, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
SIZE = os.environ.get("UQRECON_NOTEBOOK_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"UQRECON_NOTEBOOK_SIZE must be 'full' or 'small', got {SIZE!r}")
SMALL = SIZE == "small"     # CI: tiny images and few draws, same code path

import jax, jax.numpy as jnp, numpy as np
import matplotlib
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
import uqrecon
from uqrecon.report import convergence_status
%matplotlib inline
matplotlib.rcParams["figure.dpi"] = 60     # after uqrecon.report, which selects Agg on import


class timed:
    """Prints how long a block took: wall time and CPU time of this kernel (all threads)."""
    log = {}

    def __init__(self, label):
        self.label = label

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall, cpu = time.perf_counter() - self.t, time.process_time() - self.c
        timed.log[self.label] = (wall, cpu)
        print(f"[{self.label}: {wall:.1f} s wall, {cpu:.1f} s CPU]")


def verdict(name, result):
    """One line: has this method converged, by the Result's own diagnostics?"""
    status, reasons = convergence_status(result)
    return f"- **{name}**: {status} ({'; '.join(reasons)})"


def table(ct, cols):
    """A compare_table restricted to some columns, as markdown."""
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in ct.rows]
    return "\\n".join(rows)


def timing_table():
    rows = ["| step | wall (s) | CPU (s) |", "|---|---|---|"]
    rows += [f"| {k} | {w:.1f} | {c:.1f} |" for k, (w, c) in timed.log.items()]
    return "\\n".join(rows)'''

TIMING_NOTE = md("""Wall times depend on the machine and on whatever else runs on it; CPU time
counts every thread of this kernel (JAX uses all cores), so CPU > wall means the cores
were busy in parallel. The first call of each method includes JAX's compilation.""")


# ---------------------------------------------------------------------------------------
# quickstart
# ---------------------------------------------------------------------------------------
def quickstart():
    return [
md("""# Quickstart: the posterior of a sparse-view CT scan, three ways

A 32x32 Shepp-Logan phantom seen from 30 parallel-beam views with 1 % Gaussian noise, a
Gaussian Markov random field (GMRF) prior. This posterior is Gaussian, so its exact mean,
pixel std and credible intervals are computable (`uqrecon.gold.exact_gaussian`): the
gold standard. We compare two general-purpose methods against it:

- **NUTS** (asymptotically exact MCMC; here on whitened coordinates), and
- **mean-field variational inference** (a fast Gaussian approximation with a diagonal
  covariance).

`UQRECON_NOTEBOOK_SIZE=small` runs the same code at 16x16 with few draws (what CI does)."""),
code(SETUP + '''

from uqrecon.models import GMRF, Gaussian
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators import fbp, sparse_view
from uqrecon.phantoms import shepp_logan

n = 16 if SMALL else 32
chains, draws, warmup = (2, 100, 100) if SMALL else (4, 500, 300)
with timed("problem set-up"):
    A = sparse_view((n, n), num_angles=30)           # native JAX ray transform
    truth = shepp_logan((n, n))
    y, sigma = relative_gaussian_noise(jax.random.PRNGKey(0), A(truth), 0.01)
    post = uqrecon.Posterior(Gaussian(A, y, sigma=float(sigma)), GMRF((n, n), delta=100.0))
    x_fbp = np.asarray(fbp(A, y))
print(f"{n}x{n} image, data {A.range_shape}, sigma = {float(sigma):.4g}; "
      f"NUTS: {chains} chains x {draws} draws after {warmup} warm-up")'''),
md("## 1. Exact posterior, NUTS, mean-field VI"),
code('''with timed("exact posterior"):
    exact = uqrecon.gold.exact_gaussian(post)       # dense Cholesky of the precision
with timed("NUTS"):
    nuts = uqrecon.sample(post, method="nuts", num_chains=chains, num_samples=draws,
                          num_warmup=warmup, seed=0, progress=False)
with timed("mean-field VI"):
    vi = uqrecon.approximate(post, method="meanfield", seed=0)'''),
md("""Did they converge? Each `Result` carries its own diagnostics (R-hat and ESS per
pixel for MCMC; VI's stopping flag). The verdict below applies the report's rules
(max split R-hat <= 1.01 over all pixels, min bulk ESS >= 100, no divergences)."""),
code('''display(Markdown("\\n".join([verdict("exact", exact), verdict("NUTS", nuts),
                              verdict("mean-field VI", vi)])))
d = nuts.diagnostics
print(f"NUTS: acceptance {float(d['acceptance_rate']):.2f}, {int(d['divergences'])} divergences, "
      f"max R-hat {float(d['rhat_max']):.4f}, min bulk ESS {float(d['ess_bulk_min']):.0f} "
      f"of {chains * draws} draws, {int(d['num_grad_evals'])} gradients")
if convergence_status(nuts)[0] != "converged":
    display(Markdown(
        "NUTS is flagged **not converged** by the strict criterion (every one of the "
        f"{n * n} pixels must have R-hat <= 1.01). Without a gold standard, run it longer "
        "(`num_samples`) before trusting its numbers; here the exact posterior lets us "
        "measure its error directly (next table)."))'''),
md("""## 2. Against the gold standard

`mean_error` / `std_error`: relative L2 error of the mean and of the pixel-std map
against the exact posterior; `std_ratio` < 1: too narrow; `ref_coverage_90`: fraction of
exact-posterior draws inside the method's 90 % intervals (0.9 if right); `coverage_90`:
the same for the true image (this measures the *model*, not only the method)."""),
code('''ct = uqrecon.compare_table({"exact": exact, "NUTS": nuts, "mean-field VI": vi}, exact,
                           truth=truth)
display(Markdown(table(ct, ["method", "mean_error", "std_error", "std_ratio",
                            "ref_coverage_90", "coverage_90", "psnr", "num_grad_evals"])))
r = {row["method"]: row for row in ct.rows}
display(Markdown(
    f"NUTS's std map is within {100 * r['NUTS']['std_error']:.1f} % of the exact one; "
    f"mean-field VI's std is {r['mean-field VI']['std_ratio']:.2f} times the exact std "
    f"(its 90 % intervals hold {100 * r['mean-field VI']['ref_coverage_90']:.0f} % of exact "
    "draws): a diagonal covariance ignores the strong pixel correlations of CT."))'''),
md("## 3. Mean and std maps"),
code('''stds = {"exact": exact.std, "NUTS": nuts.std, "mean-field VI": vi.std}
vmax = max(float(s.max()) for s in stds.values())
fig, ax = plt.subplots(1, 6, figsize=(15, 2.8))
for a, (img, title) in zip(ax[:3], ((truth, "truth"), (x_fbp, "FBP"), (exact.mean, "exact posterior mean"))):
    a.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=1); a.set_title(title, fontsize=9)
for a, (name, s) in zip(ax[3:], stds.items()):
    im = a.imshow(s, cmap="magma", vmin=0, vmax=vmax); a.set_title(f"{name} std", fontsize=9)
for a in ax: a.axis("off")
fig.colorbar(im, ax=ax[3:], shrink=0.8); plt.show()'''),
md("""## 4. A credible interval

`Result.interval(0.9)` gives pixelwise equal-tailed 90 % intervals (from the draws for
NUTS, from the Gaussian for the exact posterior and VI). Along one image row:"""),
code('''row = n // 2 + n // 8
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(np.asarray(truth)[row], "k-", lw=2, label="truth")
for (name, res), col in zip((("exact", exact), ("NUTS", nuts), ("mean-field VI", vi)), ("C0", "C1", "C2")):
    lo, hi = res.interval(0.9)
    ax.fill_between(np.arange(n), lo[row], hi[row], color=col, alpha=0.25, label=f"{name} 90 %")
    ax.plot(res.mean[row], color=col, lw=1)
ax.set_xlabel("pixel (column)"); ax.set_title(f"row {row}: posterior means and 90 % intervals")
ax.legend(fontsize=7, ncol=2); plt.show()
for name, res in (("exact", exact), ("NUTS", nuts), ("mean-field VI", vi)):
    lo, hi = res.interval(0.9)
    inside = float(np.mean((np.asarray(truth) >= lo) & (np.asarray(truth) <= hi)))
    print(f"{name:14s} mean 90 % width {np.mean(hi - lo):.4f}; covers {100 * inside:.0f} % of true pixels")'''),
md("""Even the exact posterior covers fewer than 90 % of the *true* pixels: a GMRF prior
is not a good model of a piecewise-constant phantom (see `trust.ipynb` for calibration
over replicated experiments). The approximation error is the gap to the exact row.

## 5. How long each step took"""),
code('display(Markdown(timing_table()))'),
TIMING_NOTE,
md("""For this linear-Gaussian posterior `exact` is the right tool; NUTS is there for the
non-Gaussian ones (Huber-TV, Cauchy, Poisson, constraints), where it is checked the same
way against `uqrecon.gold.reference`."""),
    ]


# ---------------------------------------------------------------------------------------
# limited angle
# ---------------------------------------------------------------------------------------
def limited_angle():
    return [
md("""# Limited-angle CT: where the uncertainty goes, and why

Parallel-beam views over only [0°, 90°) (45 views), 1 % noise, a 24x24 Shepp-Logan
phantom (at 24x24 the exact TV reference of section 4 meets its convergence criteria in one
round, about a CPU-minute; at 32x32 it needed three rounds and ~3.5 CPU-minutes). By the Fourier slice theorem the view at angle θ measures the image's 2D
Fourier transform along one line through the origin; a limited angular range leaves a
**missing wedge** of frequencies about which the data say nothing. The posterior must
fall back on the prior there, and its uncertainty goes exactly there.

With a GMRF prior the posterior is Gaussian, so its full covariance is available
exactly; we look at it in the Fourier domain and along its principal directions, and
compare with the same number of views spread over 180°. Then a TV prior, whose exact
posterior `uqrecon.gold.reference` samples with the exact Gaussian-scale-mixture sampler.
`UQRECON_NOTEBOOK_SIZE=small`: 16x16 and a short TV run (CI)."""),
code(SETUP + '''

import math
from uqrecon.models import GMRF, TV, Gaussian
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators import fbp, limited_angle, sparse_view
from uqrecon.phantoms import shepp_logan

n = 16 if SMALL else 24
truth = shepp_logan((n, n))
ops = {"limited [0°, 90°)": limited_angle((n, n), angle_range=(0.0, math.pi / 2), num_angles=45),
       "full [0°, 180°)": sparse_view((n, n), num_angles=45)}
posts, exact, fbps = {}, {}, {}
for i, (name, A) in enumerate(ops.items()):
    y, sigma = relative_gaussian_noise(jax.random.PRNGKey(i), A(truth), 0.01)
    posts[name] = uqrecon.Posterior(Gaussian(A, y, sigma=float(sigma)), GMRF((n, n), delta=100.0))
    fbps[name] = np.asarray(fbp(A, y))
    with timed(f"exact posterior, {name}"):
        exact[name] = uqrecon.gold.exact_gaussian(posts[name])
LIM, FULL = list(ops)'''),
md("## 1. Pixel std: limited vs full angular range (same number of views, same noise)"),
code('''vmax = max(float(r.std.max()) for r in exact.values())
fig, ax = plt.subplots(2, 4, figsize=(11, 5.6))
for i, name in enumerate(ops):
    r = exact[name]
    panels = [(fbps[name], "FBP", "gray", (0, 1)), (r.mean, "posterior mean", "gray", (0, 1)),
              (np.abs(r.mean - np.asarray(truth)), "|mean - truth|", "magma", (0, None)),
              (r.std, "posterior std", "magma", (0, vmax))]
    for a, (img, t, cm, (lo, hi)) in zip(ax[i], panels):
        im = a.imshow(img, cmap=cm, vmin=lo, vmax=hi); a.set_title(f"{name}: {t}", fontsize=8)
        a.axis("off"); fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout(); plt.show()
for name, r in exact.items():
    err = np.abs(r.mean - np.asarray(truth))
    print(f"{name:18s} mean std {r.std.mean():.4f}, mean |error| {err.mean():.4f}")'''),
md("""## 2. The missing wedge, in the Fourier domain

For a Gaussian posterior with covariance `C`, the variance of Fourier coefficient `k`
is `(F C F^H)_kk` (`F` the unitary 2D DFT). Dividing by the prior's variance at the same
frequency gives how much the data reduced the uncertainty there: ratio ≈ 1, nothing was
learned; ≪ 1, well measured. The first column shows what the operator measures,
`(F A^T A F^H)_kk`, to locate the measured wedge without assuming the geometry's
angle convention."""),
code('''N = n * n
eye = np.eye(N).reshape(N, n, n)
Fm = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(eye, axes=(-2, -1)), norm="ortho"),
                     axes=(-2, -1)).reshape(N, N).T           # column j = F e_j
fdiag = lambda M: np.real(np.sum((Fm @ M) * np.conj(Fm), axis=1)).reshape(n, n)
prior = posts[LIM].priors[0]
Q = np.asarray(jax.vmap(prior.precision)(jnp.asarray(eye, jnp.float32))).reshape(N, N)
prior_var = fdiag(np.linalg.inv(Q.astype(np.float64)))
fig, ax = plt.subplots(2, 2, figsize=(7, 6.4))
ratios = {}
for i, (name, A) in enumerate(ops.items()):
    Ad = np.asarray(A.to_dense(jnp.float32), np.float64).reshape(-1, N)
    ratios[name] = fdiag(np.asarray(exact[name].gaussian["cov"], np.float64)) / prior_var
    im0 = ax[i, 0].imshow(np.log10(fdiag(Ad.T @ Ad) + 1e-6), cmap="viridis")
    ax[i, 0].set_title(f"{name}: log10 measured energy", fontsize=8)
    im1 = ax[i, 1].imshow(ratios[name], cmap="magma", vmin=0, vmax=1)
    ax[i, 1].set_title(f"{name}: posterior / prior variance", fontsize=8)
    for a, im in ((ax[i, 0], im0), (ax[i, 1], im1)):
        a.set_xlabel("k_x"); a.set_ylabel("k_y"); a.set_xticks([]); a.set_yticks([])
        fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout(); plt.show()'''),
md("""The variance ratio is near 1 inside the wedge the views missed (and at high
frequencies, where the 1 % noise hides everything) and small where the views sampled.
Next: the same ratio as a function of the *direction* of the frequency, averaged over a
band of mid frequencies."""),
code('''ky, kx = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
radius, angle = np.hypot(ky, kx), np.degrees(np.arctan2(ky, kx)) % 180
band = (radius >= n / 8) & (radius <= n / 4)
edges = np.arange(0, 181, 15)
fig, ax = plt.subplots(figsize=(7, 3))
for name, ratio in ratios.items():
    per = [ratio[band & (angle >= a) & (angle < b)].mean() for a, b in zip(edges[:-1], edges[1:])]
    ax.plot(edges[:-1] + 7.5, per, "o-", label=name)
    print(f"{name:18s} posterior/prior variance by frequency direction (15° bins): "
          + " ".join(f"{p:.2f}" for p in per))
ax.set_xlabel("direction of the frequency vector (degrees, array axes)")
ax.set_ylabel("posterior / prior variance"); ax.set_ylim(0, 1.05); ax.legend(fontsize=8)
ax.set_title(f"frequencies with {n // 8} <= |k| <= {n // 4}"); plt.show()'''),
md("""With views over 180° every direction is measured about equally; over 90° half of the
directions keep (almost) their prior variance. The posterior's uncertainty is not spread
over the image at random: it lives in the directions the scanner never looked along.

## 3. The principal directions of the posterior

The leading eigenvectors of `C` are the image patterns the data constrain least. For the
limited-angle posterior they are oriented stripes (frequencies in the missing wedge);
their square roots of eigenvalues are the posterior std along them."""),
code('''fig, ax = plt.subplots(2, 4, figsize=(10, 5))
for i, name in enumerate(ops):
    w, V = np.linalg.eigh(np.asarray(exact[name].gaussian["cov"], np.float64))
    for j in range(4):
        v = V[:, -1 - j].reshape(n, n); lim = np.abs(v).max()
        ax[i, j].imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim); ax[i, j].axis("off")
        ax[i, j].set_title(f"{name}\\nmode {j + 1}: std {np.sqrt(w[-1 - j]):.3f}", fontsize=8)
    print(f"{name:18s} std along the top 4 directions: {np.sqrt(w[::-1][:4]).round(3)}; "
          f"median over all directions {np.sqrt(np.median(w)):.4f}")
fig.tight_layout(); plt.show()'''),
md("""## 4. A TV prior: its exact posterior

A GMRF smooths every edge; a total-variation prior keeps sharp edges and is a better model
of this phantom. Its posterior is not Gaussian, but `uqrecon.gold.reference` samples it
exactly (Gaussian-scale-mixture Gibbs with exact Gaussian image steps: no smoothing, no
step-size bias) and runs rounds until split R-hat < 1.01 and bulk/tail ESS >= 400 on every
pixel, or stops and says it did not get there."""),
code('''tv_post = uqrecon.Posterior(posts[LIM].likelihood, TV((n, n), weight=10.0))
opts = dict(num_samples=100, num_warmup=20, max_rounds=1) if SMALL else {}
with timed("TV reference (exact GSM sampler)"):
    tv = uqrecon.gold.reference(tv_post, seed=0, use_cache=False, **opts)
p = tv.provenance
display(Markdown(verdict("TV reference", tv)))
print(f"gold method {p['gold_method']} ({p['exactness']}); draws {tv.draws.shape[:2]} "
      f"(chains, kept draws); converged: {p['converged']}")'''),
code('''g = exact[LIM]
vmax = max(float(g.std.max()), float(tv.std.max()))
fig, ax = plt.subplots(1, 5, figsize=(13, 2.8))
panels = [(truth, "truth", "gray", 1), (g.mean, "GMRF mean", "gray", 1), (tv.mean, "TV mean", "gray", 1),
          (g.std, "GMRF std", "magma", vmax), (tv.std, "TV std", "magma", vmax)]
for a, (img, t, cm, hi) in zip(ax, panels):
    im = a.imshow(np.asarray(img), cmap=cm, vmin=0, vmax=hi); a.set_title(f"limited angle: {t}", fontsize=8)
    a.axis("off")
fig.colorbar(im, ax=ax[3:], shrink=0.8); plt.show()
for name, r in (("GMRF", g), ("TV", tv)):
    err = np.abs(r.mean - np.asarray(truth))
    lo, hi = r.interval(0.9)
    cov = np.mean((np.asarray(truth) >= lo) & (np.asarray(truth) <= hi))
    print(f"{name:5s} mean |error| {err.mean():.4f}; mean std {r.std.mean():.4f}; "
          f"90 % intervals cover {100 * cov:.0f} % of true pixels; "
          f"corr(|error|, std) {np.corrcoef(err.ravel(), r.std.ravel())[0, 1]:.2f}")'''),
md("""Both posteriors are exact for their own model; they differ because the models do.
Coverage of the true image measures the model (how well the prior describes the
phantom) as much as the computation.

## 5. How long each step took"""),
code('display(Markdown(timing_table()))'),
TIMING_NOTE,
    ]


# ---------------------------------------------------------------------------------------
# MRI
# ---------------------------------------------------------------------------------------
def mri():
    return [
md("""# Undersampled multi-coil MRI: real and complex images

Cartesian MRI, `y_c = M F (S_c x) + noise`: 8 birdcage coil sensitivities `S_c`
(complex), a centred orthonormal FFT `F`, a random line mask `M` (fastMRI style, 3x
acceleration), complex Gaussian noise. `uqrecon.operators.CartesianMRI` takes the image
dtype: **real** (`float32`: a magnitude-like image; the adjoint is taken for the real
inner product) or **complex** (`complex64`: magnitude and phase).

Part 1 runs the posterior machinery on a real image model. Part 2 runs it on a complex
image (magnitude and phase) and checks it against the exact posterior computed by hand.
32x32 brain phantom;
`UQRECON_NOTEBOOK_SIZE=small`: 16x16, 4 coils (CI)."""),
code(SETUP + '''

from uqrecon.models import GMRF, ComplexGaussian
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators import CartesianMRI, birdcage_maps, random_line_mask
from uqrecon.phantoms import brain_mri

n, coils = (16, 4) if SMALL else (32, 8)
shape = (n, n)
mask = random_line_mask(shape, acceleration=3, center_fraction=0.15, seed=0)
sens = birdcage_maps(shape, coils)
truth = brain_mri(shape)                                     # real, values in [0, 1]
A = CartesianMRI(mask, sens)                                 # real image (float32)
y, sigma = relative_gaussian_noise(jax.random.PRNGKey(0), A(truth), 0.02)
print(A, f"acceleration {A.acceleration:.2f}, data {y.shape} {y.dtype}, sigma {float(sigma):.4g}")
fig, ax = plt.subplots(1, 4, figsize=(10, 2.6))
for a, (img, t) in zip(ax, ((truth, "truth"), (mask, "k-space mask"), (np.abs(sens[0]), "|S_0|"),
                            (np.abs(A.zero_filled(y)), "zero-filled |A^H y|"))):
    a.imshow(np.asarray(img), cmap="gray"); a.set_title(t, fontsize=9); a.axis("off")
plt.show()'''),
md("""## 1. A real image: exact posterior, mean-field VI, MALA

A GMRF prior, `ComplexGaussian` likelihood (real and imaginary parts of the noise each
N(0, sigma^2)). The exact Gaussian posterior is the gold standard."""),
code('''post = uqrecon.Posterior(ComplexGaussian(A, y, sigma=float(sigma)), GMRF(shape, delta=20.0))
chains, draws = (2, 100) if SMALL else (4, 500)
with timed("exact posterior"):
    exact = uqrecon.gold.exact_gaussian(post)
with timed("mean-field VI"):
    vi = uqrecon.approximate(post, method="meanfield", seed=0)
with timed("MALA (preconditioned)"):
    mala = uqrecon.sample(post, method="mala", num_chains=chains, num_samples=draws,
                          num_warmup=draws, seed=0, progress=False)
display(Markdown("\\n".join([verdict("exact", exact), verdict("mean-field VI", vi),
                              verdict("MALA", mala)])))
ct = uqrecon.compare_table({"exact": exact, "mean-field VI": vi, "MALA": mala}, exact, truth=truth)
display(Markdown(table(ct, ["method", "mean_error", "std_error", "std_ratio",
                            "ref_coverage_90", "coverage_90", "psnr"])))'''),
code('''vmax = max(float(r.std.max()) for r in (exact, vi, mala))
fig, ax = plt.subplots(1, 5, figsize=(13, 2.7))
panels = [(exact.mean, "exact mean", "gray", 1), (np.abs(exact.mean - np.asarray(truth)), "|error|", "magma", None),
          (exact.std, "exact std", "magma", vmax), (vi.std, "mean-field VI std", "magma", vmax),
          (mala.std, "MALA std", "magma", vmax)]
for a, (img, t, cm, hi) in zip(ax, panels):
    im = a.imshow(np.asarray(img), cmap=cm, vmin=0, vmax=hi); a.set_title(t, fontsize=9); a.axis("off")
    fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout(); plt.show()
print("exact std averaged over each image column:", np.round(exact.std.mean(axis=0), 3))
print("exact std averaged over each image row:   ", np.round(exact.std.mean(axis=1), 3))'''),
md("""The mask keeps whole k-space lines, so what is missing is aliasing along one image
axis; the coil sensitivities disentangle part of it (SENSE). Mean-field VI's std is
too small (`std_ratio`), and MALA's verdict above says whether its chains can be read
without the exact posterior at hand.

## 2. A complex image

MRI images carry a phase. Here the truth is the same magnitude with a smooth phase ramp,
the operator `CartesianMRI(mask, sens, image_dtype=complex64)`. Every method that makes
sense for a complex Gaussian posterior samples or fits it in *real coordinates*
`(Re x, Im x)` and returns a complex Result (its `variance` is `E|x - mean|^2`, the sum of
the two parts' variances). We call each entry point and print what happens — a failure
would be shown, not hidden."""),
code('''yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
ztruth = jnp.asarray(np.asarray(truth) * np.exp(1j * np.pi / 3 * (xx + 0.5 * yy)), jnp.complex64)
Az = CartesianMRI(mask, sens, image_dtype=jnp.complex64)
yz, sz = relative_gaussian_noise(jax.random.PRNGKey(1), Az(ztruth), 0.02)
zpost = uqrecon.Posterior(ComplexGaussian(Az, yz, sigma=float(sz)), GMRF(shape, delta=20.0))
print("posterior dtype:", zpost.dtype, "| potential at the truth:", float(zpost.potential(ztruth)),
      "| gradient dtype:", jax.grad(lambda x: zpost.smooth_potential(x))(ztruth).dtype)

attempts = {
    "map_estimate": lambda: uqrecon.map_estimate(zpost),
    "gold.exact_gaussian": lambda: uqrecon.gold.exact_gaussian(zpost),
    "sample(method='exact')": lambda: uqrecon.sample(zpost, method="exact", num_chains=1, num_samples=10, progress=False),
    "sample(method='mala')": lambda: uqrecon.sample(zpost, method="mala", num_chains=1, num_samples=10, num_warmup=10, progress=False),
    "approximate(method='meanfield')": lambda: uqrecon.approximate(zpost, method="meanfield"),
}
outcome, rows = {}, ["| call on a complex image | outcome |", "|---|---|"]
for name, fn in attempts.items():
    try:
        outcome[name] = fn()
        rows.append(f"| `{name}` | works |")
    except Exception as e:          # shown, not hidden
        msg = str(e).splitlines()[0][:160].replace("|", "/")
        rows.append(f"| `{name}` | **fails**: {type(e).__name__}: {msg} |")
display(Markdown("\\n".join(rows)))'''),
code('''if "map_estimate" in outcome:
    zmap, info = outcome["map_estimate"]
    zmap = np.asarray(zmap)
    fig, ax = plt.subplots(1, 4, figsize=(10, 2.6))
    for a, (img, t, cm) in zip(ax, ((np.abs(ztruth), "|truth|", "gray"), (np.angle(ztruth), "phase of truth", "twilight"),
                                    (np.abs(zmap), "|MAP|", "gray"), (np.angle(zmap), "phase of MAP", "twilight"))):
        a.imshow(np.asarray(img), cmap=cm); a.set_title(t, fontsize=9); a.axis("off")
    plt.show()
    print(f"complex MAP: relative error {np.linalg.norm(zmap - np.asarray(ztruth)) / np.linalg.norm(np.asarray(ztruth)):.3f}, "
          f"converged: {info.get('converged')}")'''),
md("""The proximal samplers (MYULA, SK-ROCK), the GSM and Gibbs samplers have no complex
version and refuse a complex image before any set-up, as do complex posteriors that are
not linear-Gaussian. To check the library's complex posterior, compute it here by hand:
real and imaginary parts are jointly Gaussian with precision `P = tau A^H A + Q` acting on
the complex vector, each part's variance is `Re (P^{-1})_jj`, and `E|x_j - mean_j|^2` is
twice that."""),
code('''Ad = np.asarray(Az.to_dense(jnp.complex64), np.complex128).reshape(-1, n * n)
Q = np.asarray(jax.vmap(zpost.priors[0].precision)(jnp.eye(n * n, dtype=jnp.float32).reshape(-1, n, n))).reshape(n * n, n * n)
tau = 1.0 / float(sz) ** 2
with timed("complex exact posterior (numpy, by hand)"):
    P = tau * Ad.conj().T @ Ad + Q
    C = np.linalg.inv(P)
    zmean = (C @ (tau * Ad.conj().T @ np.asarray(yz).ravel())).reshape(shape)
    zstd = np.sqrt(np.real(np.diag(C))).reshape(shape)      # std of the real part (= of the imaginary part)
fig, ax = plt.subplots(1, 3, figsize=(8, 2.6))
for a, (img, t, cm) in zip(ax, ((np.abs(zmean), "|posterior mean|", "gray"),
                                (zstd, "std of Re x (= of Im x)", "magma"),
                                (exact.std, "real-image model: std", "magma"))):
    im = a.imshow(img, cmap=cm); a.set_title(t, fontsize=9); a.axis("off"); fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout(); plt.show()
print(f"mean pixel std: complex model {zstd.mean():.4f} (each of Re, Im); real-image model {exact.std.mean():.4f}")
if "gold.exact_gaussian" in outcome:
    zex = outcome["gold.exact_gaussian"]
    print("uqrecon's exact complex posterior vs the hand computation: max |mean difference| "
          f"{np.abs(np.asarray(zex.mean) - zmean).max():.2e}, max relative std difference "
          f"{np.abs(np.asarray(zex.std) / np.sqrt(2) / zstd - 1).max():.2e}")'''),
md("""The complex model is more uncertain than the real one: the real model *knows* the
imaginary part is zero, which halves the unknowns the same data must pin down.

## 3. How long each step took"""),
code('display(Markdown(timing_table()))'),
TIMING_NOTE,
    ]


# ---------------------------------------------------------------------------------------
# bring your own operator
# ---------------------------------------------------------------------------------------
def byo_operator():
    return [
md("""# Bring your own forward operator

Everything in uqrecon talks to the forward model through a `LinearOperator` (apply,
adjoint, shapes, dtypes). Two ways to plug in an operator uqrecon does not ship:

1. **`from_odl`**: any linear [ODL](https://odlgroup.github.io/odl/) operator, run on the
   host through a callback (JAX derivatives use the transpose derived from ODL's adjoint).
   Here: ODL's own ray transform with the ASTRA CPU backend.
2. **`MatrixOperator`**: a system matrix (dense or `scipy.sparse`) from anywhere — a
   vendor's projector, a measured point-spread function. Here: a sparse blur matrix.

Check the adjoint, then run a posterior on each. 32x32 images;
`UQRECON_NOTEBOOK_SIZE=small`: 16x16 (CI)."""),
code(SETUP + '''

import odl
import scipy.sparse as sps
from odl.applications.tomo import Parallel2dGeometry, RayTransform as OdlRayTransform
from uqrecon.models import GMRF, Gaussian
from uqrecon.noise import relative_gaussian_noise
from uqrecon.operators import MatrixOperator, adjoint_mismatch, from_odl, sparse_view
from uqrecon.phantoms import shepp_logan

n = 16 if SMALL else 32
chains, draws = (2, 100) if SMALL else (4, 500)
truth = shepp_logan((n, n))'''),
md("""## 1. An ODL operator

Note ODL's `adjoint` is taken for its spaces' weighted inner products; the bridge
converts it to the plain (Euclidean) transpose, which is what a likelihood needs.
`adjoint_mismatch` checks `<A x, y> = <x, A^T y>` on random vectors."""),
code('''space = odl.uniform_discr([-1, -1], [1, 1], (n, n), dtype="float32")
geometry = Parallel2dGeometry(odl.uniform_partition(0, np.pi, 20),
                              odl.uniform_partition(-1.5, 1.5, int(1.5 * n)))
odl_op = OdlRayTransform(space, geometry, impl="astra_cpu")
A_odl = from_odl(odl_op)
print(A_odl.domain_shape, "->", A_odl.range_shape, A_odl.domain_dtype)
print("relative adjoint mismatch:", float(adjoint_mismatch(A_odl, jax.random.PRNGKey(0))))
y, sigma = relative_gaussian_noise(jax.random.PRNGKey(1), A_odl(truth), 0.01)
post_odl = uqrecon.Posterior(Gaussian(A_odl, y, sigma=float(sigma)), GMRF((n, n), delta=100.0))
with timed("ODL operator: exact posterior"):
    exact_odl = uqrecon.gold.exact_gaussian(post_odl)
with timed("ODL operator: mean-field VI"):
    vi_odl = uqrecon.approximate(post_odl, method="meanfield", seed=0)
display(Markdown("\\n".join([verdict("exact", exact_odl), verdict("mean-field VI", vi_odl)])))
ct = uqrecon.compare_table({"exact": exact_odl, "mean-field VI": vi_odl}, exact_odl, truth=truth)
display(Markdown(table(ct, ["method", "mean_error", "std_error", "std_ratio", "ref_coverage_90", "psnr"])))'''),
md("""Every application of `A_odl` is a call back into Python and ASTRA, so methods that
need thousands of operator products (MCMC) are slow through the bridge; the exact
posterior needs the operator densified once (one application per pixel) and is cheap at
this size. When the matrix fits in memory, take it once and hand it to `MatrixOperator`:
the same posterior then runs at JAX speed."""),
code('''with timed("densify the ODL operator"):
    M = np.asarray(A_odl.to_dense(jnp.float32)).reshape(-1, n * n)
A_mat = MatrixOperator(sps.csr_matrix(np.where(np.abs(M) > 0, M, 0.0)), domain_shape=(n, n),
                       range_shape=A_odl.range_shape)
print(f"{A_mat.matrix.nse} non-zeros of {M.size} ({100 * A_mat.matrix.nse / M.size:.1f} %), sparse: {A_mat.is_sparse}")
post_mat = uqrecon.Posterior(Gaussian(A_mat, y, sigma=float(sigma)), GMRF((n, n), delta=100.0))
exact_mat = uqrecon.gold.exact_gaussian(post_mat)
print(f"same posterior? max |mean difference| {np.abs(exact_mat.mean - exact_odl.mean).max():.2e}, "
      f"max |std difference| {np.abs(exact_mat.std - exact_odl.std).max():.2e} "
      f"(std scale {exact_odl.std.mean():.3g})")'''),
md("""## 2. A sparse system matrix: deblurring

A Gaussian point-spread function (std 1.2 pixels, truncated at 3 std) written as a
`scipy.sparse` matrix, 2 % noise. We sample the posterior with NUTS and grade it against
the exact posterior."""),
code('''r, s = 3, 1.2
offs = [(i, j, np.exp(-(i * i + j * j) / (2 * s * s))) for i in range(-r, r + 1) for j in range(-r, r + 1)
        if i * i + j * j <= 9 * s * s]
wsum = sum(w for *_, w in offs)
rows, cols, vals = [], [], []
for p in range(n):
    for q in range(n):
        for i, j, w in offs:
            if 0 <= p + i < n and 0 <= q + j < n:
                rows.append(p * n + q); cols.append((p + i) * n + q + j); vals.append(w / wsum)
B = sps.csr_matrix((vals, (rows, cols)), shape=(n * n, n * n))
blur = MatrixOperator(B, domain_shape=(n, n), range_shape=(n, n))
print(blur.domain_shape, "->", blur.range_shape, f"{B.nnz} non-zeros;",
      "adjoint mismatch", float(adjoint_mismatch(blur, jax.random.PRNGKey(0))))
yb, sb = relative_gaussian_noise(jax.random.PRNGKey(2), blur(truth), 0.02)
post_b = uqrecon.Posterior(Gaussian(blur, yb, sigma=float(sb)), GMRF((n, n), delta=20.0))
with timed("blur: exact posterior"):
    exact_b = uqrecon.gold.exact_gaussian(post_b)
with timed("blur: NUTS"):
    nuts_b = uqrecon.sample(post_b, method="nuts", num_chains=chains, num_samples=draws,
                            num_warmup=draws, seed=0, progress=False)
display(Markdown("\\n".join([verdict("exact", exact_b), verdict("NUTS", nuts_b)])))
ct = uqrecon.compare_table({"exact": exact_b, "NUTS": nuts_b}, exact_b, truth=truth)
display(Markdown(table(ct, ["method", "mean_error", "std_error", "std_ratio", "ref_coverage_90",
                            "coverage_90", "psnr", "num_grad_evals"])))'''),
code('''vmax = max(float(exact_b.std.max()), float(nuts_b.std.max()))
fig, ax = plt.subplots(1, 5, figsize=(13, 2.7))
panels = [(truth, "truth", "gray", 1), (yb, "blurred, noisy data", "gray", 1),
          (nuts_b.mean, "NUTS mean", "gray", 1), (exact_b.std, "exact std", "magma", vmax),
          (nuts_b.std, "NUTS std", "magma", vmax)]
for a, (img, t, cm, hi) in zip(ax, panels):
    im = a.imshow(np.asarray(img), cmap=cm, vmin=0, vmax=hi); a.set_title(t, fontsize=9); a.axis("off")
fig.colorbar(im, ax=ax[3:], shrink=0.8); plt.show()'''),
md("""Writing an operator from scratch is the third way: subclass `LinearOperator`
with `@operator_dataclass`, implement `_apply` (the adjoint defaults to JAX's exact
`linear_transpose`); see `docs/interfaces.md`.

## 3. How long each step took"""),
code('display(Markdown(timing_table()))'),
TIMING_NOTE,
    ]


NOTEBOOKS = {"quickstart": quickstart, "limited_angle": limited_angle, "mri": mri,
             "byo_operator": byo_operator}


def build(name: str, folder: str, execute: bool = True):
    from nbclient import NotebookClient
    nb = nbf.v4.new_notebook(cells=NOTEBOOKS[name](), metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    path = os.path.join(folder, f"{name}.ipynb")
    if execute:
        t0 = __import__("time").perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": folder}}).execute()
        print(f"executed {name} in {__import__('time').perf_counter() - t0:.0f} s "
              f"(UQRECON_NOTEBOOK_SIZE={os.environ.get('UQRECON_NOTEBOOK_SIZE', 'full')})")
    nbf.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    unknown = [a for a in args if a not in NOTEBOOKS]
    if unknown:
        sys.exit(f"unknown notebook(s) {unknown}; choose from {sorted(NOTEBOOKS)}")
    out = os.path.dirname(os.path.abspath(__file__))
    for name in args or list(NOTEBOOKS):
        build(name, out, execute="--no-execute" not in sys.argv)

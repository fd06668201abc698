"""Deep UQ: networks, on-the-fly data, training/resume, MC dropout, ensembles, the split.

Small on purpose (32x32, a few training steps): full training lives in benchmarks/deep.py.
"""

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, stats

from uqrecon.deep import (LearnedGradientDescent, Predictions, Task, UNet, ct_task,
                          default_optimizer, deterministic_predictions, entropy_split,
                          evaluate, gradient_step_size, held_out_loss,
                          mc_dropout_predictions, measure, mri_task, ood_ratio, predict,
                          qoi_variance, simulate, to_result, train, variance_split,
                          with_insert)
from uqrecon.result import Result

SHAPE = (32, 32)
OPT = optax.adam(3e-3)      # one object: train() calls share the compiled step


@pytest.fixture(scope="module")
def task():
    return mri_task(SHAPE, acceleration=4, noise_level=0.03, seed=0)


@pytest.fixture(scope="module")
def unet():
    return UNet(features=(4, 8), dropout_rate=0.2, heteroscedastic=True)


@pytest.fixture(scope="module")
def trained(task, unet):
    """A heteroscedastic U-Net trained a few NLL steps (shared by several tests)."""
    return train(unet, task, 0, 20, batch_size=2, optimizer=OPT, loss="nll")


@pytest.fixture(scope="module")
def ensemble(task, unet):
    """Two members trained side by side with vmap."""
    return train(unet, task, 0, 2, batch_size=2, optimizer=OPT, loss="nll", num_members=2,
                 ensemble_mode="vmap")


@pytest.fixture(scope="module")
def held_out(task):
    from uqrecon.phantoms import shepp_logan

    x = jnp.stack([shepp_logan(SHAPE), shepp_logan(SHAPE)[::-1]])
    return measure(task, jax.random.PRNGKey(7), x)


# -- data and networks -------------------------------------------------------------------
def test_simulate_shapes_noise_and_seed(task):
    sim = jax.jit(lambda k: simulate(task, k, 3))
    b = sim(jax.random.PRNGKey(1))
    assert b.x.shape == b.x0.shape == (3, *SHAPE)
    assert b.y.shape == (3, *task.operator.range_shape) and jnp.iscomplexobj(b.y)
    np.testing.assert_array_equal(b.y, sim(jax.random.PRNGKey(1)).y)
    # noise std is noise_level * max|Ax| per image, on real and imaginary parts
    clean = task.operator(b.x)
    resid = (b.y - clean)[0]
    sigma = task.noise_level * float(jnp.max(jnp.abs(clean[0])))
    est = float(jnp.sqrt(jnp.mean(jnp.real(resid) ** 2 + jnp.imag(resid) ** 2) / 2))
    assert abs(est / sigma - 1) < 5 / math.sqrt(2 * 2 * resid.size)   # 5 standard errors
    # zero-filled input is the operator's own adjoint reconstruction
    np.testing.assert_allclose(b.x0[0], task.operator.adjoint(b.y[0]), rtol=1e-5, atol=1e-6)


def test_ct_task_feeds_fbp():
    """Sparse-view CT task: data from the ray transform, network input its FBP."""
    from uqrecon.operators.fbp import fbp

    ct = ct_task(SHAPE, num_angles=20, noise_level=0.0)
    b = jax.jit(lambda k: simulate(ct, k, 2))(jax.random.PRNGKey(0))
    assert b.y.shape == (2, *ct.operator.range_shape) and ct.operator.range_shape[0] == 20
    np.testing.assert_allclose(b.y, ct.operator(b.x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.x0, fbp(ct.operator, b.y, filter="hann"), rtol=1e-4,
                               atol=1e-5)
    rel = np.linalg.norm(b.x0 - b.x) / np.linalg.norm(b.x)
    assert rel < 0.5                      # an FBP of the phantom, not noise


@pytest.mark.parametrize("hetero", [False, True])
def test_network_shapes(task, hetero):
    b = jax.eval_shape(lambda k: simulate(task, k, 2), jax.random.PRNGKey(2))
    lgd = LearnedGradientDescent(task.operator, gradient_step_size(task.operator),
                                 num_iters=2, features=4, memory=2, heteroscedastic=hetero)
    for model in (UNet(features=(4, 8), heteroscedastic=hetero), lgd):
        fwd = lambda k, x0, y: model.apply(model.init(k, x0, y), x0, y)
        mean, log_var = jax.eval_shape(fwd, jax.random.PRNGKey(0), b.x0, b.y)
        assert mean.shape == b.x0.shape and mean.dtype == jnp.float32
        assert (log_var is None) == (not hetero)
        if hetero:
            assert log_var.shape == b.x0.shape


def test_training_lowers_held_out_loss(task, unet, trained):
    """NLL training on simulated ellipses lowers the NLL on a fixed held-out batch."""
    held_out = jax.jit(lambda k: simulate(task, k, 8))(jax.random.PRNGKey(123))
    state0, _ = train(unet, task, 0, 0, batch_size=2, optimizer=OPT, loss="nll")
    state, losses = trained
    assert losses.shape == (20,) and np.all(np.isfinite(losses))

    def nll(params):
        p = deterministic_predictions(unet, params, held_out.x0, held_out.y)
        m, v = p.means[0], p.variances[0]
        return float(0.5 * jnp.mean(jnp.log(v) + (held_out.x - m) ** 2 / v))

    assert nll(state.params) < nll(state0.params) - 0.5
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_learned_gradient_descent_trains(task):
    """The unrolled network (A and A^H inside, complex k-space data) trains."""
    lgd = LearnedGradientDescent(task.operator, gradient_step_size(task.operator),
                                 num_iters=2, features=4, memory=2, heteroscedastic=True)
    state0, _ = train(lgd, task, 0, 0, batch_size=2, optimizer=OPT, loss="nll")
    state, losses = train(lgd, task, 0, 2, batch_size=2, optimizer=OPT, loss="nll")
    assert losses.shape == (2,) and np.all(np.isfinite(losses))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                   jax.tree.leaves(state0.params))]
    assert all(moved)          # every layer, including each iteration's CNN, is trained


def test_mse_training_beats_the_input(task):
    """Regression guard for 'the network learned nothing': 60 MSE steps with the default
    optimizer cut the held-out MSE well below that of the zero-filled input."""
    net = UNet(features=(16, 32), dropout_rate=0.0)
    held_out = jax.jit(lambda k: simulate(task, k, 16))(jax.random.PRNGKey(321))
    state, losses = train(net, task, 0, 60, batch_size=8)
    input_mse = float(jnp.mean((held_out.x0 - held_out.x) ** 2))
    assert held_out_loss(net, state.params, held_out) < 0.8 * input_mse
    # at initialisation the residual head returns the input exactly
    state0, _ = train(net, task, 0, 0, batch_size=8)
    np.testing.assert_allclose(held_out_loss(net, state0.params, held_out), input_mse,
                               rtol=1e-6)


def test_default_optimizer_schedule_and_cache():
    opt = default_optimizer(100, 1e-3)
    assert opt is default_optimizer(100, 1e-3)        # cached: compiled steps are reused
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    sizes = []
    for _ in range(100):                               # unit gradient: |update| = lr(t)
        upd, state = opt.update({"w": jnp.full(3, 0.1)}, state, params)
        sizes.append(float(jnp.abs(upd["w"][0])))
    sizes = np.asarray(sizes)
    assert sizes[0] < 1e-4 and sizes.argmax() in (4, 5)         # 5 % linear warm-up
    np.testing.assert_allclose(sizes.max(), 1e-3, rtol=1e-3)
    assert sizes[-1] < 0.05 * sizes.max()                        # cosine decay to 2 %
    with pytest.raises(ValueError, match="num_steps"):
        default_optimizer(0)


def test_callback_and_held_out_loss(task, unet):
    seen = []
    state, losses = train(unet, task, 2, 5, batch_size=2, optimizer=OPT, loss="nll",
                          callback=lambda step, st: seen.append((step, int(st.step))),
                          callback_every=2)
    assert seen == [(0, 0), (2, 2), (4, 4), (5, 5)]
    batch = jax.jit(lambda k: simulate(task, k, 2))(jax.random.PRNGKey(3))
    mean, log_var = unet.apply({"params": state.params}, batch.x0, batch.y)
    want = 0.5 * jnp.mean(log_var + (batch.x - mean) ** 2 * jnp.exp(-log_var))
    np.testing.assert_allclose(held_out_loss(unet, state.params, batch, "nll"), want,
                               rtol=1e-5)
    with pytest.raises(TypeError, match="callback"):
        train(unet, task, 2, 1, optimizer=OPT, loss="nll", callback=3)


# -- checkpoint / resume -----------------------------------------------------------------
def test_resume_is_exact(task, unet, tmp_path):
    """train(6) == train(3) interrupted + resumed to 6, bit for bit (weights, Adam, key)."""
    ref_state, ref_losses = train(unet, task, 1, 6, batch_size=2, optimizer=OPT, loss="nll")
    ckpt = str(tmp_path / "run.msgpack")
    s3, l3 = train(unet, task, 1, 3, batch_size=2, optimizer=OPT, loss="nll",
                   checkpoint=ckpt, checkpoint_every=2)
    assert l3.shape == (3,)
    state, losses = train(unet, task, 1, 6, batch_size=2, optimizer=OPT, loss="nll",
                          checkpoint=ckpt)
    assert int(state.step) == 6
    np.testing.assert_array_equal(losses, ref_losses)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_array_equal(a, b)
    # a checkpoint from a different configuration is refused, not mixed in
    with pytest.raises(ValueError, match="checkpoint"):
        train(unet, task, 1, 8, batch_size=3, optimizer=OPT, loss="nll", checkpoint=ckpt)
    with pytest.raises(ValueError, match="num_steps"):
        train(unet, task, 1, 4, batch_size=2, optimizer=OPT, loss="nll", checkpoint=ckpt)


def test_ensemble_members_match_individual_runs(task, unet, ensemble):
    """vmapped ensemble training == training each member alone with its split key."""
    state, losses = ensemble
    assert losses.shape == (2, 2)
    k1 = jax.random.split(jax.random.PRNGKey(0), 2)[1]
    single, single_losses = train(unet, task, k1, 2, batch_size=2, optimizer=OPT, loss="nll")
    np.testing.assert_allclose(losses[:, 1], single_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-6)
    p = jax.tree.leaves(state.params)[0]
    assert not np.allclose(p[0], p[1])        # members start from different seeds


def test_sequential_ensemble_matches_vmap_and_resumes(task, unet, ensemble, tmp_path):
    """Members trained one after another == the vmapped ensemble (same split keys), and a
    sequential run interrupted mid-ensemble resumes to the same weights."""
    state_v, losses_v = ensemble
    kw = dict(batch_size=2, optimizer=OPT, loss="nll", num_members=2,
              ensemble_mode="sequential")
    state_s, losses_s = train(unet, task, 0, 2, **kw)
    assert losses_s.shape == (2, 2)
    # the losses are means of O(1) terms that cancel (one is -0.0099): float32 rounding
    # of the terms, ~1e-7 each, is the floor (atol), whatever the loss's own size; the
    # other member's losses differ by 1.09 (members swapped: seen), and a member trained
    # on other keys or batches by far more than 1e-6
    np.testing.assert_allclose(losses_s, losses_v, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state_s.params), jax.tree.leaves(state_v.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    ckpt = str(tmp_path / "ens.msgpack")
    train(unet, task, 0, 1, **kw, checkpoint=ckpt)          # both members at step 1
    os.remove(ckpt + ".member1")                            # member 1 'never ran'
    state_r, losses_r = train(unet, task, 0, 2, **kw, checkpoint=ckpt)
    np.testing.assert_array_equal(losses_r, losses_s)
    for a, b in zip(jax.tree.leaves(state_r), jax.tree.leaves(state_s)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ensemble_mode"):
        train(unet, task, 0, 1, num_members=2, ensemble_mode="parallel")


# -- MC dropout, ensembles, Result ---------------------------------------------------------
def test_mc_dropout_passes_differ_and_are_seeded(unet, trained, held_out):
    params = trained[0].params
    a = mc_dropout_predictions(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(3), 4)
    b = mc_dropout_predictions(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(3), 4)
    c = mc_dropout_predictions(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(4), 4)
    assert a.means.shape == a.variances.shape == (4, 2, *SHAPE)
    np.testing.assert_array_equal(a.means, b.means)
    assert not np.allclose(a.means, c.means)
    assert not np.allclose(a.means[0], a.means[1])     # passes use different masks
    # each vmapped pass equals the same pass run on its own
    k1 = jax.random.split(jax.random.PRNGKey(3), 4)[1]
    m1, _ = jax.jit(lambda k: unet.apply({"params": params}, held_out.x0, held_out.y,
                                         deterministic=False, rngs={"dropout": k}))(k1)
    np.testing.assert_allclose(a.means[1], m1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["mc_dropout", "deterministic"])
def test_predict_returns_results(unet, trained, held_out, method):
    rs = predict(unet, trained[0].params, held_out.x0, held_out.y, jax.random.PRNGKey(5),
                 method=method, num_passes=4, num_draws=10)
    assert len(rs) == 2 and all(isinstance(r, Result) for r in rs)
    r = rs[0]
    s = 4 if method == "mc_dropout" else 1
    assert r.mean.shape == r.variance.shape == SHAPE
    assert r.draws.shape == (1, 12 if s == 4 else 10, *SHAPE)   # ceil(10 / s) per member
    d = r.diagnostics
    np.testing.assert_allclose(r.variance, d["epistemic_variance"] + d["aleatoric_variance"],
                               rtol=1e-6)
    assert d["num_members"] == s and d["mutual_information"].shape == SHAPE
    if method == "deterministic":
        assert np.all(d["epistemic_variance"] == 0)
    else:       # the same passes without the predicted variances: epistemic part only
        (e, _) = predict(unet, trained[0].params, held_out.x0, held_out.y,
                         jax.random.PRNGKey(5), method=method, num_passes=4,
                         aleatoric=False)
        np.testing.assert_allclose(e.variance, d["epistemic_variance"], rtol=1e-6)
        assert np.all(e.diagnostics["aleatoric_variance"] == 0)
        assert e.provenance["config"]["aleatoric"] is False
    assert r.provenance["method"] == method
    assert {"compile_s", "run_s", "total_s"} <= set(r.timings)
    lo, hi = r.interval(0.9)
    assert np.all(lo <= hi)


def test_ensemble_predict(unet, ensemble, held_out):
    params = ensemble[0].params
    (r, _) = predict(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(0),
                     method="ensemble")
    members = [deterministic_predictions(unet, jax.tree.map(lambda a: a[i], params),
                                         held_out.x0, held_out.y).means[0, 0]
               for i in range(2)]
    means = np.stack(members)
    np.testing.assert_allclose(r.mean, means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.diagnostics["epistemic_variance"], means.var(0),
                               rtol=1e-3, atol=1e-9)
    assert r.provenance["config"]["num_members"] == 2


# -- the split ---------------------------------------------------------------------------
def _random_predictions(key, s=7, shape=(5, 6)):
    k1, k2 = jax.random.split(key)
    means = jax.random.normal(k1, (s, *shape))
    variances = jnp.exp(jax.random.normal(k2, (s, *shape)))
    return means, variances


def test_variance_split_is_the_mixture_variance():
    means, variances = _random_predictions(jax.random.PRNGKey(0))
    split = variance_split(means, variances)
    m, v = np.asarray(means, np.float64), np.asarray(variances, np.float64)
    mix_mean = m.mean(0)
    mix_var = (v + m ** 2).mean(0) - mix_mean ** 2          # second moment of the mixture
    np.testing.assert_allclose(split["total"], mix_var, rtol=1e-5)
    np.testing.assert_allclose(split["epistemic"], m.var(0), rtol=1e-5)
    np.testing.assert_allclose(split["aleatoric"], v.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(split["total"], split["epistemic"] + split["aleatoric"])
    assert np.all(variance_split(means)["aleatoric"] == 0)


def test_float64_in_float64_out():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        p = Predictions(jnp.asarray(rng.random((3, 4, 4))), jnp.asarray(rng.random((3, 4, 4))))
        r = to_result(p, jax.random.PRNGKey(0), method="x")
        assert r.mean.dtype == r.variance.dtype == r.draws.dtype == np.float64
    assert variance_split(jnp.ones((2, 3, 3)))["total"].dtype == jnp.float32


def test_result_draws_sample_the_mixture():
    means, variances = _random_predictions(jax.random.PRNGKey(1), s=4, shape=(3, 3))
    r = to_result(Predictions(means, variances), jax.random.PRNGKey(2), method="x",
                  num_draws=20000)
    draws = r.draws[0]
    n = draws.shape[0]
    # sample variance vs mixture variance: relative standard error about sqrt(kurtosis/n)
    np.testing.assert_allclose(draws.var(0), r.variance, rtol=8 * math.sqrt(3 / n))
    np.testing.assert_allclose(draws.mean(0), r.mean, atol=6 * math.sqrt(r.variance.max() / n))


def test_entropy_split_bounds_the_exact_mixture_information():
    means, variances = _random_predictions(jax.random.PRNGKey(3), s=3, shape=(2,))
    e = entropy_split(means, variances)
    assert np.all(e["mutual_information"] >= 0)
    # exact mutual information of a one-pixel mixture by quadrature
    m, v = np.asarray(means[:, 0], np.float64), np.asarray(variances[:, 0], np.float64)
    pdf = lambda x: np.mean(stats.norm.pdf(x, m, np.sqrt(v)))
    lo, hi = (m - 12 * np.sqrt(v)).min(), (m + 12 * np.sqrt(v)).max()
    h_mix = integrate.quad(lambda x: -pdf(x) * np.log(max(pdf(x), 1e-300)), lo, hi,
                           limit=400)[0]
    exact_mi = h_mix - np.mean(0.5 * np.log(2 * np.pi * np.e * v))
    np.testing.assert_allclose(e["aleatoric_entropy"][0],
                               np.mean(0.5 * np.log(2 * np.pi * np.e * v)), rtol=1e-5)
    assert 0 <= exact_mi <= float(e["mutual_information"][0]) + 1e-6
    # identical members: no epistemic part, no information
    same = entropy_split(jnp.ones((4, 3)), jnp.full((4, 3), 0.5))
    np.testing.assert_allclose(same["mutual_information"], 0, atol=1e-6)


def test_qoi_double_sampling_matches_closed_form():
    """Region mean f(x) = w.x: epistemic Var_s(w.m_s), aleatoric mean_s sum w^2 v_s."""
    s, k = 8, 4000
    means, variances = _random_predictions(jax.random.PRNGKey(4), s=s, shape=(8, 8))
    region = jnp.zeros((8, 8), bool).at[2:6, 1:5].set(True)
    w = region / region.sum()
    f = lambda x: jnp.sum(w * x)
    out = qoi_variance(f, Predictions(means, variances), jax.random.PRNGKey(5), num_inner=k)
    m, v, wn = (np.asarray(a, np.float64) for a in (means, variances, w))
    aleatoric = np.mean(np.sum(wn ** 2 * v, axis=(1, 2)))
    epistemic = np.var(np.sum(wn * m, axis=(1, 2)))
    # relative standard error of an average of s sample variances: sqrt(2 / (k s))
    np.testing.assert_allclose(out["aleatoric"], aleatoric, rtol=5 * math.sqrt(2 / (k * s)))
    # inner-mean noise var aleatoric/k enters epistemic; 5 standard errors of that noise
    tol = 5 * math.sqrt(aleatoric / k) * 2 * math.sqrt(epistemic) + 3 * aleatoric / k
    assert abs(float(out["epistemic_debiased"]) - epistemic) < tol
    np.testing.assert_allclose(out["total"], out["epistemic"] + out["aleatoric"], rtol=1e-5)
    # no aleatoric part: the epistemic variance is exactly that of f over the means
    out0 = qoi_variance(f, Predictions(means, None), jax.random.PRNGKey(5), num_inner=2)
    np.testing.assert_allclose(out0["epistemic"], epistemic, rtol=1e-5)
    assert float(out0["aleatoric"]) == 0


# -- evaluation and OOD ------------------------------------------------------------------
def test_ood_insert_and_ratio():
    img, mask = with_insert(jnp.zeros((64, 64)), center=(0.0, 0.0), radius=0.5, value=2.0)
    assert abs(mask.mean() - math.pi * 0.25 / 4) < 0.01      # disc area / square area
    assert np.all(img[mask] == 2.0) and np.all(img[~mask] == 0.0)
    epi = np.where(mask, 9.0, 1.0)          # variance 9 inside, 1 outside: std ratio 3
    r = Result(np.zeros((64, 64)), epi, diagnostics={"epistemic_variance": epi})
    np.testing.assert_allclose(ood_ratio(r, mask), 3.0, rtol=1e-6)


def test_evaluate_against_direct_computation(unet, trained, held_out):
    (r, _) = predict(unet, trained[0].params, held_out.x0, held_out.y, jax.random.PRNGKey(6),
                     method="mc_dropout", num_passes=4)
    truth = np.asarray(held_out.x[0])
    ev = evaluate(r, truth)
    lo, hi = r.interval(0.9)
    np.testing.assert_allclose(ev["coverage_90"], np.mean((truth >= lo) & (truth <= hi)))
    mse = np.mean((r.mean - truth) ** 2)
    np.testing.assert_allclose(ev["psnr"], 10 * np.log10(1.0 / mse), rtol=1e-4)
    rho = stats.pearsonr(np.abs(r.mean - truth).ravel(), r.std.ravel())[0]
    np.testing.assert_allclose(ev["pearson_error_std"], rho, rtol=1e-4, atol=1e-6)
    assert -1 <= ev["ssim"] <= 1 and ev["ause"] >= 0
    levels, cover = ev["calibration"]
    assert levels.shape == cover.shape and np.all(np.diff(cover) >= -1e-12)
    np.testing.assert_allclose(ev["calibration_error"], np.mean(np.abs(cover - levels)))


# -- bad inputs --------------------------------------------------------------------------
def test_bad_inputs(task, unet, trained, held_out):
    params = trained[0].params
    with pytest.raises(ValueError, match="method"):
        predict(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(0), method="bnn")
    with pytest.raises(ValueError, match="num_passes"):
        predict(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(0), num_passes=0)
    with pytest.raises(ValueError, match="aleatoric"):
        predict(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(0),
                method="deterministic", aleatoric=False)
    with pytest.raises(ValueError, match="num_draws"):
        to_result(Predictions(jnp.ones((2, 3, 3)), None), jax.random.PRNGKey(0), method="x",
                  num_draws=0)
    with pytest.raises(ValueError, match="num_passes"):
        mc_dropout_predictions(unet, params, held_out.x0, held_out.y, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="x0"):
        predict(unet, params, held_out.x0[0], held_out.y, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="loss"):
        train(unet, task, 0, 1, loss="l1")
    with pytest.raises(ValueError, match="loss"):
        train(UNet(features=(4, 8)), task, 0, 1, loss="nll")
    with pytest.raises(ValueError, match="num_steps"):
        train(unet, task, 0, -1)
    with pytest.raises(ValueError, match="beta"):
        train(unet, task, 0, 1, loss="nll", beta=2.0)
    with pytest.raises(ValueError, match="num_members"):
        train(unet, task, 0, 1, num_members=0)
    with pytest.raises(TypeError, match="key"):
        train(unet, task, "seed", 1)
    with pytest.raises(ValueError, match="x0"):
        UNet(features=(4, 8, 16)).init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30)))
    lgd = LearnedGradientDescent(task.operator, 1.0, num_iters=1, features=4)
    with pytest.raises(ValueError, match="'y'"):
        lgd.init(jax.random.PRNGKey(0), held_out.x0, held_out.y[:, :5])
    with pytest.raises(ValueError, match="variances"):
        entropy_split(jnp.ones((2, 3)), None)
    with pytest.raises(ValueError, match="num_inner"):
        qoi_variance(jnp.sum, Predictions(jnp.ones((2, 3, 3)), None), jax.random.PRNGKey(0), 1)
    with pytest.raises(ValueError, match="noise_level"):
        Task(task.operator, -0.1, task.reconstruct, task.phantom)
    with pytest.raises(TypeError, match="operator"):
        Task(np.eye(3), 0.1, task.reconstruct, task.phantom)
    with pytest.raises(ValueError, match="batch_size"):
        simulate(task, jax.random.PRNGKey(0), 0)

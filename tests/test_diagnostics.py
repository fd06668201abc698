"""R-hat / ESS against ArviZ, convergence warnings, and Welford exactness."""

import os
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ArviZ's FutureWarning about its refactor
    import arviz as az  # noqa: E402

from uqrecon.uq import diagnostics as D  # noqa: E402


def _ar1(rng, chains, draws, pixels, phi):
    x = np.empty((chains, draws, pixels))
    x[:, 0] = rng.normal(size=(chains, pixels))
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi ** 2) * rng.normal(size=(chains, pixels))
    return x


def _cases():
    rng = np.random.default_rng(0)
    return {
        "iid": rng.normal(size=(4, 60, 5)),
        "ar1_0.9_odd_draws": _ar1(rng, 3, 101, 5, 0.9),
        "ar1_0.99": _ar1(rng, 2, 120, 4, 0.99),
        "ar1_negative": _ar1(rng, 4, 80, 4, -0.6),
        "shifted_chains": rng.normal(size=(4, 50, 4)) + 0.7 * np.arange(4)[:, None, None],
        "ties": rng.integers(0, 3, size=(4, 40, 4)).astype(float),
    }


def _arviz(fn, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([fn(x[:, :, i], **kw) for i in range(x.shape[2])])


@pytest.mark.parametrize("case", list(_cases()))
def test_matches_arviz(case):
    x = _cases()[case]
    got = D.diagnose(x)
    np.testing.assert_allclose(got["ess_bulk"], _arviz(az.ess, x, method="bulk"), rtol=1e-6)
    np.testing.assert_allclose(got["ess_tail"], _arviz(az.ess, x, method="tail"), rtol=1e-6)
    np.testing.assert_allclose(got["rhat"], _arviz(az.rhat, x, method="rank"), rtol=1e-6)
    # the one-pass diagnose equals the individual functions
    np.testing.assert_array_equal(got["ess_bulk"], D.ess_bulk(x))
    np.testing.assert_array_equal(got["ess_tail"], D.ess(x, "tail"))
    np.testing.assert_array_equal(got["rhat"], D.rhat(x))


@pytest.mark.parametrize("case", list(_cases()))
def test_jax_backend_matches_arviz(case, monkeypatch):
    """The device backend (the default on a GPU, where hundreds of chains' draws live)
    against ArviZ, in float32, in chunks of 3 pixels (several chunks, the last padded
    with 1 or 2 copies unless the pixel count is a multiple of 3); plus a NaN and a
    constant pixel, which must come out as in numpy.

    Would catch: ranks without tie averaging, a wrong Geyer truncation, a padded pixel or
    chunk out of order, a NaN pixel not flagged (each mutation-checked).
    """
    x = _cases()[case]
    monkeypatch.setattr(D, "_DEVICE_CHUNK_ELEMENTS", 3 * x.shape[0] * x.shape[1])
    got = D.diagnose(x, backend="jax")
    # float32 against float64: ESS measured within 1e-5 here; R-hat within 5e-4, because
    # the folded draws |x - median| of the tail R-hat tie (or not) at float32 resolution
    # (e.g. the two draws the median lies between), which moves their ranks by 1/2
    rtol = 2e-4
    np.testing.assert_allclose(got["ess_bulk"], _arviz(az.ess, x, method="bulk"), rtol=rtol)
    np.testing.assert_allclose(got["ess_tail"], _arviz(az.ess, x, method="tail"), rtol=rtol)
    np.testing.assert_allclose(got["rhat"], _arviz(az.rhat, x, method="rank"), rtol=1e-3)
    odd = np.concatenate([x, np.ones(x.shape[:2] + (1,)), x[:, :, :1]], axis=2)
    odd[0, 1, -1] = np.nan
    got, want = D.diagnose(odd, backend="jax"), D.diagnose(odd, backend="numpy")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3 if k == "rhat" else rtol,
                                   err_msg=k)


def test_backend_choice_and_validation(monkeypatch):
    """The default backend is numpy on a CPU (bit-equal to ``backend='numpy'``) and jax
    on an accelerator; a misspelt backend and bad draws are named before any work; no
    pixels give empty arrays, as in numpy."""
    x = np.random.default_rng(1).normal(size=(2, 20, 3))
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert D.diagnose(x)["ess_bulk"].tolist() == D.diagnose(x, backend="numpy")[
        "ess_bulk"].tolist()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert D._backend(None) == "jax"
    assert D.diagnose(np.zeros((2, 8, 0)), backend="jax")["rhat"].shape == (0,)
    with pytest.raises(ValueError, match="backend"):
        D.diagnose(x, backend="cuda")
    with pytest.raises(ValueError, match="4 draws"):
        D.diagnose(jnp.zeros((2, 3, 5)), backend="jax")


def test_average_ranks_match_scipy_on_ties():
    """``_ranks`` (argsort plus running max/min over tie groups) equals
    ``scipy.stats.rankdata(method='average')`` on rows with no ties, a few ties, long
    tie runs at either end and all-equal rows. Would catch: ranks of the sorted order
    without averaging (ordinal ranks), a tie group's end or start off by one, or a
    reversed accumulate."""
    from scipy import stats
    rng = np.random.default_rng(3)
    for trial in range(300):
        p, m = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        if trial % 3 == 0:
            a = rng.normal(size=(p, m))
        else:
            a = rng.integers(0, int(rng.integers(1, 10)), size=(p, m)).astype(float)
        np.testing.assert_array_equal(D._ranks(a),
                                      stats.rankdata(a, method="average", axis=1))


def test_sorted_row_quantiles_and_normal_scores_are_numpys():
    """:func:`diagnose` reads the tail ESS's quantiles and the folded R-hat's median off
    the rows it sorts for the ranks, and looks Blom's scores up in a table: both must be
    numpy's values bit for bit (``np.quantile``'s 'linear' method with its two-sided
    interpolation; ``ndtri`` of every element), or the indicators ``x <= q`` flip where
    ``q`` lands on a draw. Would catch: one-sided interpolation (``a + (b - a) t`` for
    every ``t``), an index off by one, a score table shifted by one half-rank (each
    mutation-checked)."""
    from scipy import special
    rng = np.random.default_rng(4)
    for m in (4, 5, 8, 33, 400, 1000, 4000):
        srt = np.sort(rng.normal(size=(50, m)), axis=1)
        for prob in (0.0, 0.05, 0.3, 0.5, 0.95, 1.0):
            np.testing.assert_array_equal(D._quantile_sorted(srt, prob),
                                          np.quantile(srt, prob, axis=1), err_msg=(m, prob))
        ties = rng.integers(0, 5, size=(20, m)).astype(float)
        for a in (srt, ties):
            ranks = D._ranks(a)
            np.testing.assert_array_equal(D._normal_scores(ranks, m),
                                          special.ndtri((ranks - 0.375) / (m + 0.25)))


def test_image_shape_chunking_and_single_chain(monkeypatch):
    rng = np.random.default_rng(1)
    x = _ar1(rng, 1, 64, 12, 0.5).reshape(1, 64, 3, 4).astype(np.float32)
    monkeypatch.setattr(D, "_CHUNK_ELEMENTS", 100)      # forces many pixel chunks
    got = D.diagnose(x)
    assert got["ess_bulk"].shape == (3, 4) and np.all(np.isnan(got["rhat"]))
    ref = _arviz(az.ess, x.reshape(1, 64, 12).astype(np.float64), method="bulk")
    np.testing.assert_allclose(got["ess_bulk"].ravel(), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="draws"):
        D.rhat(x)                                     # R-hat needs two chains


def test_threaded_chunks_equal_one_pass(monkeypatch):
    """The host backend's pool of threads (forced to 3 threads and ~20 chunks here, so
    it runs on a 1-core machine too) gives what one pass over all pixels gives, bit for
    bit, with a NaN pixel, a constant pixel, tied values and an odd draw count. Would
    catch: a chunk's results written to another chunk's pixels, the NaN mask applied
    to the wrong chunk, anything in the threaded path that moves a value (a 1e-12 shift
    of its inputs), the pool not used (each mutation-checked)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([_ar1(rng, 3, 41, 50, 0.7),
                        rng.integers(0, 3, size=(3, 41, 9)).astype(float),
                        np.ones((3, 41, 1))], axis=2)
    x[1, 5, 17] = np.nan
    whole = D.diagnose(x)
    pools = []

    class Recorded(D.ThreadPoolExecutor):
        def __init__(self, workers):
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(D, "ThreadPoolExecutor", Recorded)
    monkeypatch.setattr(D, "_num_threads", lambda: 3)
    monkeypatch.setattr(D, "_CHUNK_ELEMENTS", 3 * 3 * 41 * 3)    # 3 pixels per chunk
    got = D.diagnose(x)
    assert pools == [3], pools                  # the pool ran, with 3 threads
    for k in whole:
        np.testing.assert_array_equal(got[k], whole[k], err_msg=k)
    assert np.isnan(got["rhat"][17]) and np.isfinite(got["rhat"][16])


def test_autocorrelation_lowers_ess():
    rng = np.random.default_rng(2)
    iid = D.ess_bulk(rng.normal(size=(4, 200, 3)))
    ar = D.ess_bulk(_ar1(rng, 4, 200, 3, 0.95))
    # AR(1) with phi=0.95 has integrated autocorrelation time ~39: ESS ~ 800/39 ~ 20
    assert np.all(ar < 60) and np.all(iid > 400)


def test_add_diagnostics():
    from uqrecon.result import Result

    x = np.random.default_rng(6).normal(size=(2, 30, 2, 2))
    r = D.add_diagnostics(Result.from_draws(x, diagnostics={"acceptance_rate": 0.8}))
    assert r.diagnostics["acceptance_rate"] == 0.8
    np.testing.assert_array_equal(r.diagnostics["rhat"], D.rhat(x))
    with pytest.raises(ValueError, match="draws"):
        D.add_diagnostics(Result(r.mean, r.variance))


def test_nan_pixel_and_bad_input():
    x = np.random.default_rng(3).normal(size=(2, 20, 3))
    x[0, 5, 1] = np.nan
    out = D.diagnose(x)
    assert np.isnan(out["ess_bulk"][1]) and np.isfinite(out["ess_bulk"][[0, 2]]).all()
    with pytest.raises(ValueError, match="draws"):
        D.ess_bulk(np.zeros((2, 3, 4)))               # fewer than 4 draws
    with pytest.raises(TypeError, match="draws"):
        D.ess_bulk(np.array([["a"] * 5] * 2))
    with pytest.raises(ValueError, match="method"):
        D.ess(x, "mean")


def test_summarize_and_check_convergence():
    rng = np.random.default_rng(4)
    ess = rng.uniform(50, 500, size=(8, 8))
    rh = rng.uniform(1.0, 1.005, size=(8, 8))
    s = D.summarize(ess, rh)
    assert s["ess_bulk_min"] == ess.min() and s["ess_bulk_median"] == np.median(ess)
    assert s["rhat_max"] == rh.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.check_convergence(ess_bulk=ess + 100, rhat=rh)
    rh[3, 3] = 1.2
    with pytest.warns(D.ConvergenceWarning, match="R-hat"):
        assert not D.check_convergence(rhat=rh)
    with pytest.warns(D.ConvergenceWarning, match="ESS"):
        assert not D.check_convergence(ess_bulk=ess, min_ess=100)


def test_welford_exact_with_chunks_and_chains():
    rng = np.random.default_rng(5)
    data = (3.0 + rng.normal(size=(4, 37, 5, 6))).astype(np.float32)   # chains, draws, image
    def run_chain(chain):
        st = D.welford_init((5, 6), jnp.float32)
        for a, b in [(0, 1), (1, 19), (19, 37)]:                        # uneven chunks
            st = D.welford_update(st, chain[a:b])
        return st

    states = [run_chain(data[c]) for c in range(4)]
    m0, v0 = D.welford_finalize(states[0])
    np.testing.assert_allclose(m0, data[0].mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(v0, data[0].var(0, dtype=np.float64), rtol=2e-5)
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)
    mean, var = D.welford_finalize(D.welford_merge(stacked))
    flat = data.reshape(-1, 5, 6).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, flat.var(0), rtol=2e-5)
    _, var1 = D.welford_finalize(D.welford_merge(stacked), ddof=1)
    np.testing.assert_allclose(var1, flat.var(0, ddof=1), rtol=2e-5)
    # vmapped over chains gives the same per-chain states
    vm = jax.jit(jax.vmap(D.welford_update))(jax.vmap(lambda _: D.welford_init((5, 6)))(jnp.arange(4)),
                                    jnp.asarray(data))
    np.testing.assert_allclose(vm.m2, stacked.m2, rtol=2e-5)
    # the empty state is the identity of combine
    e = D.welford_combine(D.welford_init((5, 6)), states[1])
    np.testing.assert_array_equal(e.mean, states[1].mean)
    with pytest.raises(ValueError, match="batch"):
        D.welford_update(D.welford_init((5, 6)), data[0, :, :4])

"""Result: validation, intervals, Gaussian sampling, ArviZ export, save/load."""

import os
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from uqrecon.result import Result, make_provenance  # noqa: E402
from uqrecon.uq.diagnostics import ess_bulk  # noqa: E402


@pytest.fixture
def draws():
    rng = np.random.default_rng(0)
    return (1.0 + 0.5 * rng.normal(size=(3, 40, 4, 5))).astype(np.float32)


def test_from_draws_and_intervals(draws):
    r = Result.from_draws(draws)
    flat = draws.reshape(-1, 4, 5).astype(np.float64)
    np.testing.assert_allclose(r.mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(r.variance, flat.var(0), rtol=1e-5)
    np.testing.assert_allclose(r.std, np.sqrt(r.variance))
    assert r.shape == (4, 5) and r.dtype == np.float32 and r.mean.dtype == np.float32
    assert (r.num_chains, r.num_draws) == (3, 40)
    lo, hi = r.interval(0.8)
    np.testing.assert_allclose(lo, np.quantile(flat, 0.1, axis=0), rtol=1e-6)
    np.testing.assert_allclose(hi, np.quantile(flat, 0.9, axis=0), rtol=1e-6)
    q = r.quantile([0.1, 0.5])
    assert q.shape == (2, 4, 5)
    np.testing.assert_allclose(q[1], np.median(flat, axis=0), rtol=1e-6)


def test_gaussian_interval_and_quantile():
    m = np.array([[0.0, 1.0], [2.0, -1.0]])
    v = np.array([[1.0, 4.0], [0.25, 0.0]])
    r = Result(m, v)
    lo, hi = r.interval(0.9)
    pos = v > 0                                      # zero variance: a point mass
    want_lo, want_hi = stats.norm.interval(0.9, loc=m[pos], scale=np.sqrt(v[pos]))
    np.testing.assert_allclose(lo[pos], want_lo, rtol=1e-12)
    np.testing.assert_allclose(hi[pos], want_hi, rtol=1e-12)
    assert lo[1, 1] == hi[1, 1] == m[1, 1]
    np.testing.assert_allclose(r.quantile(0.3)[pos], stats.norm.ppf(0.3, m[pos], np.sqrt(v[pos])),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="level"):
        r.interval(1.5)
    with pytest.raises(ValueError, match="'q'"):
        r.quantile(2.0)


def test_validation_errors(draws):
    m = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="variance"):
        Result(m, np.ones((5, 4)))
    with pytest.raises(ValueError, match="variance"):
        Result(m, -np.ones((4, 5)))
    with pytest.raises(ValueError, match="variance"):
        Result(m, np.full((4, 5), np.nan))
    bad = m.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="mean"):
        Result(bad, np.ones((4, 5)))
    with pytest.raises(ValueError, match="draws"):
        Result(m, np.ones((4, 5)), draws=draws[:, :, :, :4])
    with pytest.raises(ValueError, match="draws"):
        Result(m, np.ones((4, 5)), draws=draws[0])          # chain axis missing
    with pytest.raises(TypeError, match="diagnostics"):
        Result(m, np.ones((4, 5)), diagnostics=[1, 2])
    with pytest.raises(TypeError, match="mean"):
        Result(m.astype(str), np.ones((4, 5)))
    # a complex image has a complex mean but always a real variance (E|x - mean|^2),
    # and its draws are complex too
    with pytest.raises(TypeError, match="variance"):
        Result(m.astype(complex), np.ones((4, 5), complex))
    with pytest.raises(TypeError, match="draws"):
        Result(m.astype(complex), np.ones((4, 5)), draws=draws)
    with pytest.raises(ValueError, match="kind"):
        Result(m, np.ones((4, 5)), gaussian={"kind": "full", "diag": np.ones(20)})
    with pytest.raises(ValueError, match="factor"):
        Result(m, np.ones((4, 5)), gaussian={"kind": "lowrank", "diag": np.ones(20),
                                             "factor": np.ones((19, 2))})
    with pytest.raises(ValueError, match="unused"):
        Result(m, np.ones((4, 5)), gaussian={"kind": "diag", "diag": np.ones(20),
                                             "factor": np.ones((20, 2))})
    Result(m, np.ones((4, 5)), gaussian={"kind": "diag", "diag": np.ones(20), "factor": None})
    with pytest.raises(ValueError, match="Gaussian"):
        Result(m, np.ones((4, 5))).sample(jax.random.PRNGKey(0), 3)


def test_jax_inputs_and_float64():
    r = Result(jnp.ones((2, 3)), jnp.ones((2, 3)), diagnostics={"ess_bulk": jnp.ones((2, 3))},
               timings={"compile_s": 1.5, "run_s": 2.0})
    assert isinstance(r.mean, np.ndarray) and isinstance(r.diagnostics["ess_bulk"], np.ndarray)
    assert r.timings["total_s"] == 3.5
    r64 = Result.from_draws(np.ones((1, 4, 2, 2), np.float64))
    assert r64.mean.dtype == np.float64 and r64.interval(0.5)[0].dtype == np.float64


def test_gaussian_factors_and_sampling():
    rng = np.random.default_rng(1)
    shape, n = (2, 3), 6
    f = rng.normal(size=(n, 2)) * 0.5
    d = rng.uniform(0.1, 0.5, n)
    g = {"kind": "lowrank", "mean": rng.normal(size=shape), "diag": d, "factor": f}
    r = Result.from_gaussian(g)
    cov = np.diag(d) + f @ f.T
    np.testing.assert_allclose(r.variance.ravel(), np.diag(cov), rtol=1e-12)
    num = 10000
    x = r.sample(jax.random.PRNGKey(0), num)
    assert x.shape == (num, *shape)
    np.testing.assert_array_equal(x, r.sample(0, num))             # same key (int seed)
    # sampling error of a covariance entry: se_ij = sqrt((c_ii c_jj + c_ij^2) / N)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / num)
    assert np.all(np.abs(np.cov(x.reshape(num, n).T) - cov) < 5 * se)
    assert np.all(np.abs(x.mean(0) - g["mean"]) < 5 * np.sqrt(r.variance / num))
    dense = Result.from_gaussian({"kind": "dense", "mean": g["mean"], "cov": cov})
    np.testing.assert_allclose(dense.variance, r.variance, rtol=1e-12)
    xd = dense.sample(jax.random.PRNGKey(1), num).reshape(num, n)
    assert np.all(np.abs(np.cov(xd.T) - cov) < 5 * se)


def test_to_inference_data_matches_arviz(draws):
    acc = np.random.default_rng(2).uniform(size=(3, 40))
    r = Result.from_draws(draws, diagnostics={"acceptance_rate": acc, "ess_bulk": ess_bulk(draws),
                                              "divergences": np.zeros((3, 40), bool)},
                          provenance=make_provenance("nuts", {"step_size": 0.1}, seed=3))
    idata = r.to_inference_data()
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "x_dim_0", "x_dim_1")
    np.testing.assert_array_equal(x.values, draws)
    np.testing.assert_array_equal(idata.sample_stats["acceptance_rate"].values, acc)
    assert "diverging" in idata.sample_stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
        want = az.ess(idata, method="bulk")["x"].values
    np.testing.assert_allclose(r.diagnostics["ess_bulk"], want, rtol=1e-6)
    with pytest.raises(ValueError, match="draws"):
        Result(r.mean, r.variance).to_inference_data()


def test_save_load_round_trip(tmp_path, draws):
    rng = np.random.default_rng(3)
    r = Result.from_draws(
        draws,
        diagnostics={"ess_bulk": rng.random((4, 5)), "acceptance_rate": np.float32(0.8),
                     "num_grad_evals": 12345, "step_size": [0.1, 0.2, 0.3], "flag": None},
        timings={"compile_s": 1.25, "run_s": 3.5},
        provenance={"method": "nuts", "config": {"max_tree_depth": 10, "shape": (4, 5),
                                                "nested": {"x": float("nan")}},
                    "seed": 0, "dtype": "float32"},
        gaussian={"kind": "lowrank", "diag": np.ones(20), "factor": rng.normal(size=(20, 3))},
    )
    path = r.save(tmp_path / "res")
    assert path.endswith(".npz")
    s = Result.load(path)
    for field in ("mean", "variance", "draws"):
        a, b = getattr(r, field), getattr(s, field)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for k in ("mean", "diag", "factor"):
        np.testing.assert_array_equal(r.gaussian[k], s.gaussian[k])
    assert s.gaussian["kind"] == "lowrank"
    np.testing.assert_array_equal(s.diagnostics["ess_bulk"], r.diagnostics["ess_bulk"])
    assert type(s.diagnostics["acceptance_rate"]) is np.float32
    assert s.diagnostics["num_grad_evals"] == 12345 and s.diagnostics["flag"] is None
    assert s.diagnostics["step_size"] == [0.1, 0.2, 0.3]
    assert s.timings == r.timings
    assert s.provenance["config"]["shape"] == (4, 5)
    assert np.isnan(s.provenance["config"]["nested"]["x"])
    # a result without draws or Gaussian factors round-trips too
    t = Result(r.mean, r.variance)
    u = Result.load(t.save(tmp_path / "plain.npz"))
    assert u.draws is None and u.gaussian is None
    with pytest.raises(TypeError, match="provenance"):
        Result(r.mean, r.variance, provenance={"f": object()}).save(tmp_path / "bad")


def test_load_names_the_file_when_it_is_not_a_result(tmp_path, draws):
    """A truncated save, a file that is not an archive, a plain numpy archive and a missing
    path each raise an error naming the path (not zipfile/numpy internals, never a hint to
    set ``allow_pickle``). Catches: dropping the wrapping in ``Result.load`` (zipfile's
    BadZipFile / numpy's EOFError reach the user)."""
    path = Result.from_draws(draws).save(tmp_path / "good.npz")
    blob = open(path, "rb").read()
    bad = {"truncated.npz": blob[: len(blob) // 2], "text.npz": b"not an archive\n"}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=r"'path' .*%s.* not a readable saved uqrecon "
                                             r"Result" % name) as info:
            Result.load(tmp_path / name)
        assert "allow_pickle" not in str(info.value)
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="not a saved uqrecon Result"):
        Result.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="'path'"):
        Result.load(tmp_path / "missing")

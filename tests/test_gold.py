"""Gold standards: exact Gaussian posteriors and cached multi-chain MCMC references."""

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_laplace import ct_matrix, ct_posterior, dense_reference, rel, x64  # noqa: F401
from uqrecon.gold import cache_key, exact_gaussian, mcmc_reference, posterior_hash
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.result import Result


def test_exact_gaussian_dense_matches_numpy(x64):  # noqa: F811
    post, _ = ct_posterior(np.float64)
    mean, std, P = dense_reference(post)
    ex = exact_gaussian(post)
    assert ex.provenance["solver"] == "dense_cholesky" and ex.mean.dtype == np.float64
    assert rel(ex.mean, mean) < 1e-10 and rel(ex.std, std) < 1e-10
    C = np.linalg.inv(P)
    assert np.allclose(ex.gaussian["cov"], C, rtol=0, atol=1e-10 * np.abs(C).max())


def test_exact_gaussian_large_path_respects_its_stated_error(x64):  # noqa: F811
    post, _ = ct_posterior(np.float64)
    mean, std, _ = dense_reference(post)
    ex = exact_gaussian(post, dense_max=10, num_samples=200, seed=0)
    se = ex.provenance["variance_rel_se"]
    assert se == pytest.approx(math.sqrt(2 / 200)) and ex.gaussian is None
    assert rel(ex.mean, mean) < 1e-6                 # CG to tol 1e-10 in float64
    ratio = ex.variance / std ** 2
    within = np.mean(np.abs(ratio - 1) < 3 * se)
    print(f"\nsampled exact variances: {within:.1%} of pixels within 3 stated SE")
    assert within > 0.95


def test_exact_gaussian_says_when_its_cg_stopped_short():
    """A CG path cut at ``maxiter`` is not exact: the Result says converged False with
    the residual, warns, and the catalogue's certificate refuses it (it used to pass as
    'exact by construction'). The same call with the default cap converges and passes.
    Catches a truncated solve reported as exact, and a warning that points into the
    library (``stacklevel`` not counting the ``full_precision`` wrapper)."""
    from uqrecon import catalogue
    post, _ = ct_posterior()
    with pytest.warns(RuntimeWarning, match="not exact") as record:
        cut = exact_gaussian(post, dense_max=10, num_samples=4, maxiter=2)
    # the warning names the caller's line, not the entry points' precision wrapper
    assert {os.path.basename(w.filename) for w in record} == {"test_gold.py"}
    assert cut.diagnostics["converged"] is False and "maxiter=2" in cut.diagnostics["reason"]
    cert = catalogue.certify(cut)
    assert not cert["pass"] and not cert["solver_converged"]["pass"]
    full = exact_gaussian(post, dense_max=10, num_samples=4)
    assert full.diagnostics["converged"] is True and catalogue.certify(full)["pass"]


def test_coverage_of_prior_drawn_truths_is_nominal():
    """90 % exact-posterior intervals cover 90 +/- 2 % of pixels, averaged over problems
    whose truth is drawn from the prior (and data from the likelihood)."""
    size, num_problems = 8, 80
    A, range_shape = ct_matrix(size, 4)
    op = MatrixOperator(A.astype(np.float32), domain_shape=(size, size),
                        range_shape=range_shape)
    prior = GMRF((size, size), delta=20.0)
    n = size * size
    Q = np.stack([np.asarray(prior.precision(jnp.asarray(e, jnp.float32))).ravel()
                  for e in np.eye(n, dtype=np.float32).reshape(n, size, size)], axis=1)
    R = np.linalg.cholesky(0.5 * (Q + Q.T).astype(np.float64))
    sigma = 0.05
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(num_problems):
        truth = np.linalg.solve(R.T, rng.normal(size=n))            # x ~ N(0, Q^{-1})
        data = A @ truth + sigma * rng.normal(size=A.shape[0])
        post = Posterior(Gaussian(op, jnp.asarray(data.reshape(range_shape), jnp.float32),
                                  sigma), prior)
        lo, hi = exact_gaussian(post).interval(0.9)
        t = truth.reshape(size, size)
        covered.append(np.mean((lo <= t) & (t <= hi)))
    covered = np.asarray(covered)
    se = covered.std(ddof=1) / math.sqrt(num_problems)
    print(f"\ncoverage of 90 % intervals over {num_problems} prior-drawn problems: "
          f"{covered.mean():.4f} +/- {se:.4f} (SE)")
    assert se < 0.02 / 3                      # the replicate count resolves +/- 2 %
    assert abs(covered.mean() - 0.9) < 0.02


def tiny_posterior(delta=5.0, shift=0.0):
    A, range_shape = ct_matrix(4, 3)
    op = MatrixOperator(A.astype(np.float32), domain_shape=(4, 4), range_shape=range_shape)
    data = A @ np.linspace(0, 1, 16) + shift
    return Posterior(Gaussian(op, jnp.asarray(data.reshape(range_shape), jnp.float32), 0.1),
                     GMRF((4, 4), delta=delta))


def test_mcmc_reference_is_cached_and_never_stale(tmp_path):
    kw = dict(method="exact", num_chains=4, num_samples=300, cache_dir=tmp_path,
              progress=False)
    post = tiny_posterior()
    first = mcmc_reference(post, **kw)
    assert first.provenance["cache"]["hit"] is False
    assert first.provenance["converged"] and first.provenance["max_rhat"] < 1.01
    assert first.provenance["min_ess_bulk"] >= 400
    assert os.path.exists(first.provenance["cache"]["path"])

    t0 = time.perf_counter()
    second = mcmc_reference(tiny_posterior(), **kw)      # an equal, separately built posterior
    load_s = time.perf_counter() - t0
    assert second.provenance["cache"]["hit"] is True
    assert np.array_equal(second.draws, first.draws) and np.array_equal(second.mean, first.mean)
    assert second.provenance["cache_key"] == first.provenance["cache_key"]
    print(f"\nreference: computed in {first.timings['total_s']:.2f} s, loaded in {load_s:.3f} s")

    changed = {
        "data": (tiny_posterior(shift=1e-3), {}),
        "prior": (tiny_posterior(delta=5.001), {}),
        "config": (post, {"num_samples": 301}),
    }                       # seed and method changes: see test_posterior_hash_sees_every_input
    keys = {first.provenance["cache_key"]}
    for what, (p, extra) in changed.items():
        res = mcmc_reference(p, **{**kw, **extra})
        assert res.provenance["cache"]["hit"] is False, what
        keys.add(res.provenance["cache_key"])
    assert len(keys) == 1 + len(changed)
    assert len(os.listdir(tmp_path)) == 1 + len(changed)


def test_posterior_hash_sees_every_input():
    base = posterior_hash(tiny_posterior())
    assert posterior_hash(tiny_posterior()) == base
    assert posterior_hash(tiny_posterior(shift=1e-6)) != base
    assert posterior_hash(tiny_posterior(delta=5.0 + 1e-5)) != base
    key = cache_key(tiny_posterior(), "nuts", {"seed": 0})
    assert cache_key(tiny_posterior(), "nuts", {"seed": 0}) == key
    assert cache_key(tiny_posterior(), "mala", {"seed": 0}) != key
    assert cache_key(tiny_posterior(), "nuts", {"seed": 1}) != key
    assert cache_key(tiny_posterior(), "nuts", {"seed": 0, "init": np.zeros(3)}) != key
    assert cache_key(tiny_posterior(), "nuts", {"seed": 0, "init": np.ones(3)}) != cache_key(
        tiny_posterior(), "nuts", {"seed": 0, "init": np.zeros(3)})


def test_mcmc_reference_extends_in_rounds_until_the_criteria_hold(tmp_path):
    post = tiny_posterior()
    res = mcmc_reference(post, method="exact", num_chains=4, num_samples=50, min_ess=300,
                         use_cache=False, progress=False)
    # 200 independent draws cannot have bulk ESS >= 300; the second round doubles them
    assert res.provenance["rounds"] >= 2 and res.draws.shape[1] >= 100
    assert res.provenance["converged"] and res.provenance["min_ess_bulk"] >= 300
    assert res.provenance["cache"]["path"] is None


def test_reference_rounds_diagnose_once_per_round(monkeypatch):
    """R-hat/ESS cost ~0.5 us per draw-pixel on the host (minutes per round for many
    chains at 128x128): each round must compute them once, over all draws so far, not
    also inside ``sample`` on the round's own draws. Would catch: ``mcmc_reference``
    calling ``sample`` without ``diagnose=False`` (then the patched ``sample``-level
    diagnose raises), or ``sample`` ignoring that option; and a ``diagnose=False`` that
    also dropped the reference's own diagnostics."""
    import importlib
    sample_module = importlib.import_module("uqrecon.inference.sample")  # not the function

    def forbidden(draws):
        raise AssertionError("sample() computed diagnostics inside a reference round")

    monkeypatch.setattr(sample_module, "diagnose", forbidden)
    res = mcmc_reference(tiny_posterior(), method="exact", num_chains=4, num_samples=50,
                         min_ess=300, use_cache=False, progress=False)
    assert res.provenance["rounds"] >= 2
    assert res.diagnostics["ess_bulk"].shape == (4, 4) and res.diagnostics["rhat_max"] > 0
    with pytest.raises(AssertionError, match="inside a reference round"):
        sample_module.sample(tiny_posterior(), method="exact", num_chains=2,
                             num_samples=8, progress=False)
    monkeypatch.undo()
    quiet = sample_module.sample(tiny_posterior(), method="exact", num_chains=2,
                                 num_samples=8, progress=False, diagnose=False)
    assert "ess_bulk" not in quiet.diagnostics and quiet.draws.shape[:2] == (2, 8)
    # the Result says it was not diagnosed (and a default one that it was)
    assert quiet.provenance["config"]["diagnose"] is False
    loud = sample_module.sample(tiny_posterior(), method="exact", num_chains=2,
                                num_samples=8, progress=False)
    assert loud.provenance["config"]["diagnose"] is True and "rhat" in loud.diagnostics
    with pytest.raises(ValueError, match="'diagnose'"):
        sample_module.sample(tiny_posterior(), method="exact", num_samples=8,
                             progress=False, diagnose="no")


def test_next_round_asks_for_what_the_criteria_miss():
    """Round sizing (:func:`uqrecon.gold._next_round`): multiples of the chunk (100
    here, 500 in the last case), the missing fraction by the criteria's scaling with no
    margin, at least one chunk, at most a doubling, the doubling for a non-finite R-hat or
    ESS. Catches a rule that ignores the bulk or tail ESS or R-hat, one that adds a margin
    again (the former 20 % lengthens four of the cases), one whose rounding adds a unit
    for a hair over a whole number or drops a needed one (a guard rounded to 0.1 unit),
    one without the cap, and one that lets a NaN R-hat pass as 1 or fails on an infinite
    one (``math.ceil(inf)`` raised)."""
    from uqrecon.gold import _next_round
    ok = dict(rhat_max=1.01, min_ess=400)
    # bulk ESS 350 of 400 after 1000: 8/7 * 1000 - 1000 = 143 -> two units
    assert _next_round(1000, 100, 1.005, 350, 900, **ok) == 200
    # the tail ESS is the worst: 2 * 1000 - 1000 = 1000 (= the cap, the 1000 there are)
    assert _next_round(1000, 100, 1.005, 900, 200, **ok) == 1000
    assert _next_round(1000, 100, 1.005, 900, 250, **ok) == 600
    # R-hat 1.015 after 500: 1.5 * 500 - 500 = 250 -> three units
    assert _next_round(500, 100, 1.015, 900, 900, **ok) == 300
    # R-hat 1.0115 after 2000: 1.15 * 2000 - 2000 = 300 (a hair over in binary) -> 3 units
    assert _next_round(2000, 100, 1.0115, 900, 900, **ok) == 300
    # R-hat 1.01102 after 1000: 102 -> two units (a guard rounding to 0.1 unit gives one)
    assert _next_round(1000, 100, 1.01102, 900, 900, **ok) == 200
    # non-finite diagnostics: the doubling
    assert _next_round(600, 100, float("nan"), 900, 900, **ok) == 600
    assert _next_round(600, 100, float("inf"), 900, 900, **ok) == 600
    assert _next_round(600, 100, 1.001, float("nan"), 900, **ok) == 600
    # R-hat 1.03 after 3000: needs 6000 more -> capped at the 3000 there are
    assert _next_round(3000, 100, 1.03, 900, 900, **ok) == 3000
    # only a divergence missing: one unit
    assert _next_round(2000, 500, 1.001, 900, 900, **ok) == 500


def test_later_rounds_keep_the_first_rounds_step_without_warmup(tmp_path):
    """HMC references continue at the median of the first round's tuned step sizes with no
    new warmup: the provenance records no warmup gradients after round one. Catches a
    continuation that re-tunes (wasted warmup) or silently drops the tuned step."""
    post = tiny_posterior()
    res = mcmc_reference(post, method="hmc", num_chains=2, num_samples=40, num_warmup=40,
                         min_ess=5000, max_rounds=2, cache_dir=tmp_path)
    assert res.provenance["rounds"] == 2
    first = mcmc_reference(post, method="hmc", num_chains=2, num_samples=40,
                           num_warmup=40, min_ess=5000, max_rounds=1, cache_dir=tmp_path)
    step = first.provenance["tuned_step_size"]
    assert res.provenance["tuned_step_size"] == step
    from uqrecon import sample
    second = sample(post, method="hmc", num_chains=2, num_samples=40, num_warmup=0,
                    seed=1, init=first.draws[:, -1], init_jitter=0.0, step_size=step,
                    progress=False)
    np.testing.assert_allclose(second.diagnostics["step_size"], step, rtol=1e-6)
    np.testing.assert_allclose(res.draws[:, 40:], second.draws, rtol=1e-5, atol=1e-6)


def test_later_rounds_run_at_the_tuned_step_not_at_a_given_start():
    """A ``step_size`` passed to a reference is where the first round's tuning starts;
    later rounds (no warmup) must run at the tuned step. Would catch the given start
    winning over the tuned step (``setdefault``: rounds 2+ then ran untuned, at 0.01
    here, with draws unlike a continuation at the tuned step)."""
    from uqrecon import sample
    post = tiny_posterior()
    res = mcmc_reference(post, method="hmc", num_chains=2, num_samples=40, num_warmup=40,
                         min_ess=5000, max_rounds=2, use_cache=False, step_size=0.01,
                         progress=False)
    step = res.provenance["tuned_step_size"]
    assert res.provenance["rounds"] == 2 and abs(step / 0.01 - 1) > 0.5
    second = sample(post, method="hmc", num_chains=2, num_samples=40, num_warmup=0,
                    seed=1, init=res.draws[:, 39], init_jitter=0.0, step_size=step,
                    progress=False)
    np.testing.assert_allclose(res.draws[:, 40:], second.draws, rtol=1e-5, atol=1e-6)


def test_gsm_hmc_moves_keep_their_tuned_step_in_later_rounds(tmp_path):
    """A GSM reference with HMC moves continues at the median of the first round's tuned
    HMC step (option ``hmc_step_size``) with no new warmup; the second round's draws equal
    a plain continuation at that step. Catches a continuation that treats GSM as untuned
    (later rounds would restart the HMC moves at their untuned initial step)."""
    from uqrecon import sample
    from uqrecon.models import TV
    from uqrecon.inference.samplers.gsm import default_hmc_step

    lik = tiny_posterior().likelihood
    post = Posterior(lik, TV(tuple(lik.operator.domain_shape), 2.0))
    opts = dict(num_chains=2, num_samples=40, num_warmup=40, min_ess=5000, hmc_moves=2)
    res = mcmc_reference(post, method="gsm", max_rounds=2, cache_dir=tmp_path, **opts)
    assert res.provenance["rounds"] == 2
    first = mcmc_reference(post, method="gsm", max_rounds=1, cache_dir=tmp_path, **opts)
    step = first.provenance["tuned_step_size"]
    n = int(np.prod(lik.operator.domain_shape))
    assert step is not None and abs(step / default_hmc_step(n) - 1) > 0.01   # tuned
    assert res.provenance["tuned_step_size"] == step
    second = sample(post, method="gsm", num_chains=2, num_samples=40, num_warmup=0,
                    seed=1, init=first.draws[:, -1], init_jitter=0.0, hmc_moves=2,
                    hmc_step_size=step, progress=False)
    np.testing.assert_allclose(second.diagnostics["step_size"], step, rtol=1e-6)
    np.testing.assert_allclose(res.draws[:, 40:], second.draws, rtol=1e-5, atol=1e-6)


class _Died(Exception):
    pass


def _count_chunks(monkeypatch, die_after=None, probe=None):
    """Wrap the runner's compiled chunk: count its calls and, with ``die_after``, raise
    at the next call after that many (the process 'dies' between two chunks, after the
    runner saved its checkpoint); ``probe()`` runs before every chunk."""
    from uqrecon.inference import runner
    real, calls = runner._chunk, []

    def counted(*args, **kwargs):
        if die_after is not None and len(calls) == die_after:
            raise _Died
        if probe is not None:
            probe()
        calls.append(kwargs["length"])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_chunk", counted)
    return calls


def test_a_reference_that_dies_resumes_without_rerunning_what_it_finished(tmp_path,
                                                                         monkeypatch):
    """A reference killed in its second round, started again with the same arguments,
    reads round one back from disk and continues round two from the runner's checkpoint:
    it runs exactly the chunks the killed call had not finished, and its draws are the
    uninterrupted run's, bit for bit; what the killed process left half-written goes.
    While rounds run, their folder is locked against a second maker. Would catch:
    completed rounds not saved or not read back (round one re-run: 4 more chunks), the
    running round not checkpointed (its first chunk re-run: 1 more), a resumed round that
    restarts from other states or seeds (draws differ), leftovers kept, no lock."""
    import fcntl
    post = tiny_posterior()
    kw = dict(method="hmc", num_chains=2, num_samples=40, num_warmup=40, min_ess=5000,
              max_rounds=3, chunk_size=20, progress=False)
    locked = []

    def lock_is_held():          # another open file description cannot take the lock
        (work,) = [p for p in (tmp_path / "full").iterdir() if p.name.endswith(".rounds")]
        with open(work / "lock") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked.append(False)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                locked.append(True)

    calls = _count_chunks(monkeypatch, probe=lock_is_held)
    full = mcmc_reference(post, cache_dir=tmp_path / "full", **kw)
    assert locked and all(locked)
    assert full.provenance["rounds"] == 3 and full.provenance["rounds_loaded"] == 0
    # round 1: 2 warmup + 2 sampling chunks; rounds 2 and 3 at most double what exists
    assert calls[:4] == [20] * 4 and len(calls) >= 6
    total = len(calls)

    monkeypatch.undo()
    _count_chunks(monkeypatch, die_after=5)        # dies after round 2's first chunk
    with pytest.raises(_Died):
        mcmc_reference(post, cache_dir=tmp_path / "killed", **kw)
    (work,) = [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".rounds")]
    assert sorted(q.name for q in work.iterdir()) == ["lock", "round-0.npz", "round-1.run"]
    (work / "round-0.run").mkdir()                   # as if it died before removing these
    (work / "round-1.4242.tmp.npz").write_bytes(b"half")

    monkeypatch.undo()
    calls = _count_chunks(monkeypatch)
    resumed = mcmc_reference(post, cache_dir=tmp_path / "killed", **kw)
    assert len(calls) == total - 5
    assert resumed.provenance["rounds_loaded"] == 1 and resumed.provenance["rounds"] == 3
    np.testing.assert_array_equal(resumed.draws, full.draws)
    assert resumed.diagnostics["num_grad_evals"] == full.diagnostics["num_grad_evals"]
    assert sorted(q.name for q in work.iterdir()) == [
        "lock", "round-0.npz", "round-1.npz", "round-2.npz"]        # unconverged: kept


def test_a_cache_hit_leaves_rounds_that_another_call_is_making(tmp_path, monkeypatch):
    """A converged reference loaded from the cache removes a leftover rounds folder only
    when nobody is making those rounds (the same rounds asked for with another
    ``max_rounds`` share it). Would catch: a cache hit deleting another process's rounds
    in the making; a dead process's leftovers never removed."""
    import fcntl
    post = tiny_posterior()
    kw = dict(method="exact", num_chains=4, num_samples=300, progress=False,
              cache_dir=tmp_path)
    assert mcmc_reference(post, **kw).provenance["converged"]
    _count_chunks(monkeypatch, die_after=1)        # the same rounds, another max_rounds
    with pytest.raises(_Died):
        mcmc_reference(post, max_rounds=4, **kw)
    monkeypatch.undo()
    (rounds,) = [p for p in tmp_path.iterdir() if p.name.endswith(".rounds")]
    with open(rounds / "lock", "a") as held:       # as if that call were still running
        fcntl.flock(held, fcntl.LOCK_EX)
        assert mcmc_reference(post, **kw).provenance["cache"]["hit"]
        assert rounds.is_dir()
    assert mcmc_reference(post, **kw).provenance["cache"]["hit"]
    assert not rounds.exists()


def test_a_round_begun_under_other_settings_starts_again(tmp_path, monkeypatch):
    """A round whose checkpoint was written under other defaults (here the chain method,
    which differs between CPU and GPU and is not part of the rounds' key) starts again
    with a warning instead of refusing every later call. Would catch: the runner's
    mismatch error passed through (the reference could then only be made after deleting
    its folder by hand)."""
    import importlib
    sample_module = importlib.import_module("uqrecon.inference.sample")
    post = tiny_posterior()
    kw = dict(method="hmc", num_chains=2, num_samples=40, num_warmup=40, min_ess=5000,
              max_rounds=2, chunk_size=20, progress=False, cache_dir=tmp_path)
    _count_chunks(monkeypatch, die_after=5)
    with pytest.raises(_Died):
        mcmc_reference(post, **kw)
    monkeypatch.undo()
    other = "vectorized" if sample_module.default_chain_method("hmc") == "sequential" \
        else "sequential"
    monkeypatch.setattr(sample_module, "default_chain_method", lambda *a, **k: other)
    calls = _count_chunks(monkeypatch)
    with pytest.warns(RuntimeWarning, match="begun with other settings"):
        res = mcmc_reference(post, **kw)
    assert res.provenance["rounds"] == 2 and res.provenance["rounds_loaded"] == 1
    assert len(calls) == 2                        # round 2 whole, round 1 read back


def test_an_unconverged_reference_goes_on_with_more_rounds(tmp_path, monkeypatch):
    """A reference that stopped unconverged after ``max_rounds=2`` keeps its rounds; asked
    again with ``max_rounds=3`` it reads both back and runs only round three, giving the
    draws of a 3-round run from scratch. A converged reference leaves no rounds behind.
    Rounds read back are diagnosed only where needed: after the last of them (to size
    round three) and after round three. The unconverged reference writes no cache file
    (its draws would be on disk twice); the same call again reads its rounds back and
    runs nothing. Would catch: the rounds keyed with ``max_rounds`` (nothing found: all
    rounds re-run), an unconverged reference deleting its rounds or writing a cache file,
    a converged one keeping them, diagnostics recomputed for every round read back."""
    import uqrecon.diagnostics as diagnostics_module
    post = tiny_posterior()
    kw = dict(method="hmc", num_chains=2, num_samples=40, num_warmup=40, min_ess=5000,
              chunk_size=20, progress=False)
    three = mcmc_reference(post, cache_dir=tmp_path / "a", max_rounds=3, **kw)
    two = mcmc_reference(post, cache_dir=tmp_path / "b", max_rounds=2, **kw)
    assert not two.provenance["converged"]
    # not cached (its draws live in the rounds only); asked again, it reads them back
    assert [p.suffix for p in (tmp_path / "b").iterdir()] == [".rounds"]
    calls = _count_chunks(monkeypatch)
    again = mcmc_reference(post, cache_dir=tmp_path / "b", max_rounds=2, **kw)
    assert not calls and again.provenance["rounds_loaded"] == 2
    np.testing.assert_array_equal(again.draws, two.draws)
    real_diagnose, diagnosed = diagnostics_module.diagnose, []
    monkeypatch.setattr(diagnostics_module, "diagnose",
                        lambda d: diagnosed.append(d.shape[1]) or real_diagnose(d))
    more = mcmc_reference(post, cache_dir=tmp_path / "b", max_rounds=3, **kw)
    assert diagnosed == [two.draws.shape[1], three.draws.shape[1]]
    assert more.provenance["rounds_loaded"] == 2
    np.testing.assert_array_equal(more.diagnostics["rhat"], three.diagnostics["rhat"])
    assert sum(calls) == three.draws.shape[1] - two.draws.shape[1]
    np.testing.assert_array_equal(more.draws, three.draws)
    done = mcmc_reference(post, cache_dir=tmp_path / "c", method="exact", num_chains=4,
                          num_samples=300, progress=False)
    assert done.provenance["converged"]
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".rounds")]


def test_gold_bad_input():
    post = tiny_posterior()
    from uqrecon.models import TV

    with pytest.raises(ValueError, match="gaussian_form"):
        exact_gaussian(Posterior(post.likelihood, TV((4, 4)).smoothed(0.1)))
    with pytest.raises(ValueError, match="'num_chains'"):
        mcmc_reference(post, num_chains=1, use_cache=False)
    with pytest.raises(ValueError, match="'num_samples'"):
        exact_gaussian(post, num_samples=1)


@pytest.mark.parametrize("dense_max", [4096, 50])
def test_exact_gaussian_second_call_compiles_nothing(dense_max):
    """Jitted on the posterior pytree: a same-shaped problem reuses the compiled code."""
    from compile_count import CompileCount

    first, _ = ct_posterior(seed=0)
    second, _ = ct_posterior(seed=1)
    with CompileCount() as c1:
        exact_gaussian(first, dense_max=dense_max, num_samples=16)
    with CompileCount() as c2:
        exact_gaussian(second, dense_max=dense_max, num_samples=16)
    assert len(c1.names) > 0 and len(c2.names) == 0, (c1.names, c2.names)


# --------------------------------------------------------------------------------------
# gold.reference: the exact method, its exactness class, the full criteria
# --------------------------------------------------------------------------------------
def _tv_posterior(weight=2.0, smooth=False):
    from uqrecon.models import TV
    base = tiny_posterior()
    tv = TV((4, 4), weight)
    return Posterior(base.likelihood, tv.smoothed(0.05) if smooth else tv)


def test_reference_picks_the_exact_method_for_each_posterior():
    """Dispatch: linear-Gaussian -> exact draws; TV with a Gaussian likelihood -> gsm;
    Huber-TV (smooth, 16 pixels) -> whitened HMC; TV with a constraint -> a clear error (no exact method),
    never a silent biased fallback."""
    from uqrecon import gold
    from uqrecon.models import NonNegative
    assert gold.gold_method(tiny_posterior()) == "exact"
    assert gold.gold_method(_tv_posterior()) == "gsm"
    assert gold.gold_method(_tv_posterior(smooth=True)) == "hmc"
    constrained = Posterior(tiny_posterior().likelihood,
                            [_tv_posterior().priors[0], NonNegative((4, 4))])
    with pytest.raises(ValueError, match="no exact method"):
        gold.reference(constrained)
    ex = gold.reference(tiny_posterior())
    assert ex.provenance["exactness"] == "exact" and ex.provenance["gold_standard"]


def test_reference_runs_gsm_rounds_to_the_full_criteria(tmp_path):
    """A TV reference: rounds continue until R-hat < 1.01 and bulk *and* tail ESS >= 400
    on every pixel (catches a criteria check that forgets the tail ESS: the first round of
    4 x 60 draws cannot reach 400 of either), and it is labelled asymptotically exact."""
    from uqrecon import gold
    from uqrecon.uq.diagnostics import ess_tail, rhat
    res = gold.reference(_tv_posterior(), num_samples=60, num_warmup=50, max_rounds=6,
                         cache_dir=tmp_path)
    prov = res.provenance
    assert prov["gold_method"] == "gsm" and prov["exactness"] == "asymptotically exact"
    assert prov["rounds"] >= 2 and prov["converged"] and prov["gold_standard"]
    assert np.min(ess_tail(res.draws)) >= 400 and np.max(rhat(res.draws)) < 1.01
    assert prov["min_ess_tail"] >= 400 and prov["divergences"] == 0


def test_a_biased_method_is_never_a_gold_standard(tmp_path):
    """An SK-ROCK run that meets every convergence criterion is still labelled biased and
    not a gold standard (its stationary law is not the posterior)."""
    from uqrecon import gold
    res = gold.mcmc_reference(_tv_posterior(), method="skrock", num_samples=2000,
                              num_warmup=200, thin=2, max_rounds=2, cache_dir=tmp_path)
    assert res.provenance["exactness"] == "biased"
    assert res.provenance["gold_standard"] is False


def test_results_record_their_model_and_compare_flags_a_model_change(tmp_path):
    """Every Result built on a Posterior records ``posterior_hash``/``model``, and
    ``compare`` marks a row graded against another model's reference as a model change
    (``same_model`` False, a note; refused with ``require_same_model=True``). Catches: a
    method that forgets to record its model, a hash that ignores the prior's weight (the
    two posteriors differ only in ``delta``), a compare that grades across models
    silently, or one that flags a same-model row."""
    from uqrecon import approximate, sample
    from uqrecon.uq import compare
    from uqrecon.uq.compare import same_model

    post, other = tiny_posterior(), tiny_posterior(delta=6.0)
    ref = exact_gaussian(post)
    cached = mcmc_reference(post, method="exact", num_chains=2, num_samples=100,
                            cache_dir=tmp_path, max_rounds=1)
    hit = mcmc_reference(post, method="exact", num_chains=2, num_samples=100,
                         cache_dir=tmp_path, max_rounds=1)
    same = [sample(post, method="exact", num_chains=2, num_samples=100, progress=False),
            approximate(post, method="laplace", rank=8), cached, hit]
    for r in [ref] + same:
        assert r.provenance["posterior_hash"] == posterior_hash(post)
        assert "GMRF" in r.provenance["model"] and "4x4 float32" in r.provenance["model"]
        row = compare(r, ref, require_same_model=True)
        assert row["same_model"] is True and not any("model change" in n for n in row.notes)
    changed = approximate(other, method="laplace", rank=8)
    assert same_model(changed, ref) is False
    row = compare(changed, ref)
    assert row["same_model"] is False
    assert any(n.startswith("model change") for n in row.notes)
    with pytest.raises(ValueError, match="require_same_model"):
        compare(changed, ref, require_same_model=True)
    unknown = Result.from_gaussian({"kind": "diag", "mean": ref.mean, "diag": ref.variance})
    assert compare(unknown, ref)["same_model"] is None


@pytest.mark.parametrize("side,given,expected", [(64, None, 5), (63, None, None),
                                                  (64, 0, 0), (64, 2, 2)])
def test_reference_gives_gsm_hmc_moves_from_64x64_up(monkeypatch, side, given, expected):
    """``gold.reference`` hands GSM ``hmc_moves=GSM_HMC_MOVES`` (5) from
    ``GSM_HMC_MIN_PIXELS`` (64x64) pixels up, nothing below, and a user's own
    ``hmc_moves`` (0 included) wins; the benchmarks read the same rule from
    ``gsm_reference_options``. Catches the rule dropped, its threshold moved, or the
    defaults overriding the user. (The run itself is stubbed: only the options are
    checked.)"""
    from uqrecon import gold
    from uqrecon.models import TV
    from uqrecon.operators.matrix import MatrixOperator

    n = side * side
    op = MatrixOperator(np.ones((1, n), np.float32), domain_shape=(side, side))
    post = Posterior(Gaussian(op, jnp.zeros((1,)), sigma=1.0), TV((side, side), 1.0))
    seen = {}

    class Stop(Exception):
        pass

    def stub(posterior, method, **kwargs):
        seen.update(kwargs, method=method)
        raise Stop

    monkeypatch.setattr(gold, "mcmc_reference", stub)
    extra = {} if given is None else {"hmc_moves": given}
    with pytest.raises(Stop):
        gold.reference(post, **extra)
    assert seen["method"] == "gsm"
    assert seen.get("hmc_moves") == expected
    assert gold.gsm_reference_options(post).get("hmc_moves") == (5 if side == 64 else None)

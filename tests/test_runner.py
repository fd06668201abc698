"""The chunked multi-chain runner: Welford statistics, thinning, chunking invariance,
exact resume from checkpoints, draws on disk, device sharding, Result export."""

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import run_chains, sample
from uqrecon.inference.samplers.langevin import mala
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.matrix import MatrixOperator
from uqrecon.result import Result

D = 6
_P = np.diag(np.linspace(1.0, 4.0, D)).astype(np.float32)


class _Gauss(NamedTuple):
    """N(0, P^{-1}) as a MALA target (a pytree: it travels in the sampler's params)."""

    P: jax.Array

    def logdensity(self, x):
        return -0.5 * x @ (self.P @ x)

    def to_image(self, z):
        return z

    def from_image(self, x):
        return x


_MALA = mala(_Gauss(jnp.asarray(_P)), 0.3)   # (Sampler, params)


def _run(**kw):
    base = dict(num_warmup=80, num_samples=120, chunk_size=40, progress=False)
    base.update(kw)
    return run_chains(*_MALA, jnp.ones((3, D)), jax.random.PRNGKey(7), **base)


def test_welford_matches_kept_draws_and_counts():
    out = _run()
    draws = np.asarray(out.draws, np.float64)
    assert draws.shape == (3, 120, D)
    np.testing.assert_allclose(out.mean, draws.mean(axis=(0, 1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.variance, draws.reshape(-1, D).var(axis=0, ddof=1),
                               rtol=1e-4)
    np.testing.assert_allclose(out.chain_mean, draws.mean(axis=1), rtol=1e-4, atol=1e-5)
    assert out.num_grad_evals == 3 * 120 and out.num_grad_evals_warmup == 3 * 80
    assert np.all((out.acceptance_rate > 0.2) & (out.acceptance_rate < 1.0))
    again = _run()
    assert again.timings["num_compiles"] == 0           # the executables were reused
    assert again.timings["compile_s"] == 0.0
    np.testing.assert_array_equal(again.draws, out.draws)


def test_thinning_keeps_every_thin_th_iteration_and_welford_sees_all():
    full, thinned = _run(), _run(thin=4)
    np.testing.assert_array_equal(thinned.draws, full.draws[:, 3::4])
    np.testing.assert_array_equal(thinned.mean, full.mean)
    assert thinned.draws.shape[1] == 30


def test_a_sampler_that_asks_runs_with_one_blas_thread_and_the_limit_is_restored():
    """A sampler that declares ``one_blas_thread`` (GSM: LAPACK in every step) runs with
    the process's BLAS libraries limited to one thread, so OpenBLAS's spinning idle
    threads do not take cores from XLA's (``runner.one_blas_thread``); afterwards the
    caller's setting is back, also when the run raises. Other samplers keep the caller's
    threads (a chunk of exact draws is one large triangular solve). Catches: the limit
    dropped (2 threads seen in the callback), applied to every sampler, or not undone."""
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS)
    from threadpoolctl import threadpool_info, threadpool_limits

    from uqrecon.inference.samplers.gsm import gsm_sampler

    assert gsm_sampler().one_blas_thread and not _MALA[0].one_blas_thread

    def blas_threads():
        return {d["filepath"]: d["num_threads"] for d in threadpool_info()
                if d["user_api"] == "blas"}

    asking = (_MALA[0]._replace(one_blas_thread=True), _MALA[1])
    seen, plain = [], []
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for n in before.values()), before
        run_chains(*asking, jnp.ones((3, D)), jax.random.PRNGKey(7), num_warmup=40,
                   num_samples=40, chunk_size=40, progress=False,
                   callback=lambda info: seen.append(blas_threads()))
        after = blas_threads()
        _run(callback=lambda info: plain.append(blas_threads()))

        def fail(info):
            raise RuntimeError("stop")
        with pytest.raises(RuntimeError, match="stop"):
            run_chains(*asking, jnp.ones((3, D)), jax.random.PRNGKey(7), num_warmup=40,
                       num_samples=40, chunk_size=40, progress=False, callback=fail)
        after_error = blas_threads()
    assert seen and all(n == 1 for s in seen for n in s.values()), seen
    assert plain and all(s == before for s in plain), plain
    assert after == before and after_error == before


def test_chunking_does_not_change_the_chain():
    a, b = _run(chunk_size=40), _run(chunk_size=120)
    np.testing.assert_array_equal(a.draws, b.draws)
    np.testing.assert_array_equal(a.step_size, b.step_size)


def test_same_seed_same_result_other_seed_differs():
    a, b = _run(), _run()
    np.testing.assert_array_equal(a.draws, b.draws)
    c = run_chains(*_MALA, jnp.ones((3, D)), jax.random.PRNGKey(8), num_warmup=80,
                   num_samples=120, chunk_size=40, progress=False)
    assert not np.array_equal(a.draws, c.draws)


class _Kill(Exception):
    pass


@pytest.mark.parametrize("on_disk", [False, True])
def test_resume_after_kill_is_bitwise_identical(tmp_path, on_disk):
    """Killed after 3 of 5 chunks (2 warmup + 1 sampling), resumed from the checkpoint:
    only the 2 remaining chunks run (counted by the callback, which the runner calls
    after every chunk it executes, and by ``chunks_run``), and the draws, statistics,
    step sizes and counters are identical to an uninterrupted run. Catches a runner
    that ignores or mis-reads the checkpoint: restarting from scratch gives the same
    draws (same seed) but runs 5 chunks."""
    ref = _run()
    assert ref.timings["chunks_run"] == 5
    calls = []

    def killer(info):
        calls.append(info)
        if len(calls) == 3:
            raise _Kill

    ck = tmp_path / "ck"
    dd = tmp_path / "draws" if on_disk else None
    with pytest.raises(_Kill):
        _run(checkpoint_dir=ck, draws_dir=dd, callback=killer)
    assert calls[-1]["phase"] == "sampling"
    after = []
    resumed = _run(checkpoint_dir=ck, draws_dir=dd, callback=after.append)
    assert [(c["phase"], c["done"]) for c in after] == [("sampling", 80), ("sampling", 120)]
    assert resumed.timings["chunks_run"] == 2
    np.testing.assert_array_equal(np.asarray(resumed.draws), ref.draws)
    np.testing.assert_array_equal(resumed.mean, ref.mean)
    np.testing.assert_array_equal(resumed.variance, ref.variance)
    np.testing.assert_array_equal(resumed.step_size, ref.step_size)
    np.testing.assert_array_equal(resumed.acceptance_rate, ref.acceptance_rate)
    assert resumed.num_grad_evals == ref.num_grad_evals
    if on_disk:
        assert isinstance(resumed.draws, np.memmap)
        np.testing.assert_array_equal(np.load(dd / "draws.npy"), ref.draws)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    _run(checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _run(checkpoint_dir=tmp_path, num_samples=160)


def test_bad_runner_arguments():
    with pytest.raises(ValueError, match="multiple of thin"):
        _run(thin=7)
    with pytest.raises(ValueError, match="chunk_size"):
        _run(thin=4, chunk_size=30)


def test_chains_sharded_over_four_devices_match_one_device():
    """With 4 (host) devices the chains are sharded; the draws equal the 1-device run."""
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, sys
        sys.path.insert(0, %r)
        from test_runner import _run
        out = _run()
        print(len(jax.devices()), out.num_devices)
        np.save(sys.argv[1], np.asarray(out.draws))
    """ % os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shard_{os.getpid()}.npy")
    res = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    n_dev, used = res.stdout.split()[-2:]
    assert n_dev == "4" and used == "3"       # 3 chains: the largest divisor is 3 devices
    np.testing.assert_allclose(np.load(path), _run().draws, rtol=1e-5, atol=1e-6)
    os.remove(path)


def test_sample_result_diagnostics_export_and_roundtrip(tmp_path):
    """The Result carries per-pixel diagnostics, timings and provenance; exports to ArviZ
    and survives save/load."""
    rng = np.random.default_rng(0)
    op = MatrixOperator(rng.normal(size=(20, 16)).astype(np.float32), domain_shape=(4, 4))
    data = jnp.asarray(rng.normal(size=20), jnp.float32)
    post = Posterior(Gaussian(op, data, sigma=0.5), GMRF((4, 4), delta=2.0))
    r = sample(post, method="exact", num_chains=2, num_samples=200, seed=3, progress=False)
    d = r.diagnostics
    for key in ("ess_bulk", "ess_tail", "rhat"):
        assert d[key].shape == (4, 4)
    assert d["num_grad_evals"] == 0 and d["acceptance_rate"] == 1.0
    assert set(r.timings) >= {"compile_s", "run_s", "setup_s", "total_s"}
    assert r.provenance["seed"] == 3 and r.provenance["dtype"] == "float32"
    idata = r.to_inference_data()
    assert idata.posterior["x"].shape == (2, 200, 4, 4)
    back = Result.load(r.save(tmp_path / "r"))
    np.testing.assert_array_equal(back.draws, r.draws)
    np.testing.assert_array_equal(back.mean, r.mean)


def test_low_ess_warns():
    """A sampler that barely moves triggers the convergence warning."""
    rng = np.random.default_rng(0)
    op = MatrixOperator(rng.normal(size=(20, 16)).astype(np.float32), domain_shape=(4, 4))
    post = Posterior(Gaussian(op, jnp.zeros(20), sigma=0.5), GMRF((4, 4), delta=2.0))
    with pytest.warns(Warning, match="ESS|R-hat"):
        sample(post, method="ula", step_size=1e-5, num_chains=2, num_warmup=0,
               num_samples=100, progress=False)


def test_iid_stream_block_path_equals_step_path():
    """A Sampler with ``draw`` (exact Gaussian draws) runs a chunk as one batched call;
    it must give what the step-by-step loop gives from the same keys: draws, Welford
    mean/variance and thinning, across chunk boundaries."""
    from uqrecon.inference.exact import DenseGaussian, dense_sampler
    rng = np.random.default_rng(2)
    B = rng.normal(size=(D, D))
    R = jnp.asarray(np.linalg.cholesky(B @ B.T + D * np.eye(D)), jnp.float32)
    dense = DenseGaussian(jnp.asarray(rng.normal(size=D), jnp.float32), R)
    block, params = dense_sampler(dense)
    stepwise = block._replace(draw=None)
    kw = dict(num_warmup=0, num_samples=90, thin=3, chunk_size=30, progress=False)
    init = jnp.broadcast_to(dense.mean, (2, D))
    a = run_chains(block, params, init, jax.random.PRNGKey(4), **kw)
    b = run_chains(stepwise, params, init, jax.random.PRNGKey(4), **kw)
    assert a.draws.shape == b.draws.shape == (2, 30, D)
    np.testing.assert_allclose(a.draws, b.draws, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-4)
    np.testing.assert_allclose(a.acceptance_rate, 1.0)
    assert a.num_grad_evals == b.num_grad_evals == 0


def test_default_chunk_of_an_iid_stream_is_large_and_even():
    """Without ``chunk_size`` the runner checkpoints every 100 kept draws, but an i.i.d.
    stream (exact draws: one blocked solve per chunk, faster the larger the block) gets
    chunks of ~``_IID_CHUNK_ELEMENTS`` values over all chains, chosen to divide the run
    where a divisor lies within 2x of that size (one chunk length, one compilation).
    Would catch: exact draws back in blocks of 100, a last chunk of another length where
    an even split exists, a chunk that is not a multiple of ``thin``, a target that
    ignores ``thin``, a divisor below 100 (each mutation-checked). That ``run_chains``
    passes all chains' values, not one process's share, is not tested here."""
    from uqrecon.inference import runner as R
    from uqrecon.inference.exact import EXACT_DENSE
    step_only = EXACT_DENSE._replace(draw=None)
    assert R._default_chunk_size(step_only, 10_000, 1, 4096) == 100
    assert R._default_chunk_size(step_only, 1000, 5, 4096) == 500
    most = R._IID_CHUNK_ELEMENTS // 4096                   # 4096 draws of a 64x64 image
    assert R._default_chunk_size(EXACT_DENSE, 1000, 1, 4096) == 1000
    assert R._default_chunk_size(EXACT_DENSE, 20_000, 1, 4096) == 4000     # 5 x 4000
    assert R._default_chunk_size(EXACT_DENSE, 10_000, 1, 4096) == 2500     # 4 x 2500
    assert R._default_chunk_size(EXACT_DENSE, 10_007, 1, 4096) == most     # a prime
    assert R._default_chunk_size(EXACT_DENSE, 40_000, 1, 4 * 4096) == 1000  # 4 chains
    assert R._default_chunk_size(EXACT_DENSE, 10_000, 4, 4096) == 2500      # 4 x 625 kept
    # 4 chains of 256x256: ~64 draws make the target; never below 100 (3599 = 59 x 61)
    assert R._default_chunk_size(EXACT_DENSE, 3599, 1, 4 * 65536) == 100
    for n, thin, values in ((10_000, 4, 4096), (90, 3, 8), (6, 6, 1), (500, 1, 4 * 16384)):
        c = R._default_chunk_size(EXACT_DENSE, n, thin, values)
        assert c % thin == 0 and thin <= c <= n and (n // thin) % (c // thin) == 0, (n, c)

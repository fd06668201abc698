"""Chain execution (issue 11): ``chain_method="vectorized"`` (vmapped chains) versus
``"sequential"`` (chains one after another inside the compiled chunk), and the NUTS
depth-cap report.

Problems are 16x16 CT GMRF posteriors (12 angles), a few dozen iterations.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import run_chains, sample
from uqrecon.inference.sample import default_chain_method
from uqrecon.models import GMRF, Gaussian, Posterior
from uqrecon.operators.tomo import sparse_view
from compile_count import CompileCount

N = 16


def _posterior(seed=0, noise=0.01):
    """16x16, 12 angles, GMRF prior; ``seed`` and ``noise`` change the data only."""
    op = sparse_view((N, N), 12)
    g = np.linspace(-1, 1, N)
    X, Y = np.meshgrid(g, g, indexing="ij")
    clean = np.asarray(op(jnp.asarray(((X ** 2 + Y ** 2) < 0.5).astype(np.float32))))
    sigma = noise * float(np.abs(clean).max())
    data = jnp.asarray(clean + sigma * np.random.default_rng(seed).normal(size=clean.shape),
                       jnp.float32)
    return Posterior(Gaussian(op, data, sigma=sigma), GMRF((N, N), delta=10.0))


def _sample(post, **kw):
    base = dict(method="nuts", num_chains=2, num_warmup=30, num_samples=30, chunk_size=15,
                seed=3, progress=False)
    base.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample(post, **base)


def test_sequential_and_vectorized_give_the_same_draws_per_chain():
    """Both modes use the same per-chain keys, so every chain's draws agree up to the
    rounding of a batched versus an unbatched product, and the provenance records the
    mode. The run is short on purpose: NUTS amplifies float32 rounding (over 30 + 30
    iterations the chains stay within ~1e-3 but one multinomial pick in 60 can differ,
    0.3 on one draw), so longer runs agree in law, not draw for draw. Catches: keys
    split or folded differently in one mode (e.g. a ``lax.map`` over chains that reuses
    one key, or states/keys zipped out of order), a mode that silently runs the other
    one, and a provenance without ``chain_method``."""
    post = _posterior()
    kw = dict(num_warmup=3, num_samples=6, chunk_size=3)
    seq = _sample(post, **kw)        # the default for NUTS on CPU (asserted below)
    vec = _sample(post, chain_method="vectorized", **kw)
    assert seq.provenance["config"]["chain_method"] == "sequential"
    assert vec.provenance["config"]["chain_method"] == "vectorized"
    assert seq.draws.shape == vec.draws.shape == (2, 6, N, N)
    np.testing.assert_allclose(seq.draws, vec.draws, rtol=0, atol=1e-3)
    assert np.abs(seq.draws[0] - seq.draws[1]).max() > 0.05     # chains are distinct
    assert seq.diagnostics["num_grad_evals"] == vec.diagnostics["num_grad_evals"]
    # the default (sequential for NUTS on CPU) is what ran and was recorded
    assert jax.default_backend() == "cpu" and default_chain_method("nuts") == "sequential"
    assert default_chain_method("nuts", "cpu") == "sequential"
    assert default_chain_method("nuts", "gpu") == "vectorized"
    assert default_chain_method("hmc", "cpu") == default_chain_method("mala", "cpu") \
        == "vectorized"
    assert default_chain_method("hmc", "gpu") == "vectorized"
    assert default_chain_method("chees", "cpu") == default_chain_method("skrock", "cpu") \
        == "vectorized"


@pytest.mark.parametrize("bad", ["parallel", "Sequential", None, 1])
def test_chain_method_is_validated(bad):
    """An unknown mode is a ValueError naming the option, raised by ``sample`` before
    any set-up and by ``run_chains``. Catches: a typo silently falling back to a
    default, or ``None`` passed explicitly to run_chains accepted."""
    post = _posterior()
    if bad is not None:
        with pytest.raises(ValueError, match="chain_method"):
            sample(post, method="nuts", chain_method=bad, progress=False)
    from uqrecon.inference.samplers.langevin import mala
    from uqrecon.inference.samplers.base import Whitened
    from uqrecon.inference.samplers.hmc import IdentityPreconditioner
    sampler, params = mala(Whitened(post, IdentityPreconditioner(jnp.zeros((N, N)))), 0.1)
    with pytest.raises(ValueError, match="chain_method"):
        run_chains(sampler, params, jnp.zeros((2, N, N)), jax.random.PRNGKey(0),
                   num_warmup=1, num_samples=1, progress=False, chain_method=bad)




@pytest.mark.parametrize("method", ["nuts"])   # the chunk's sequential path is the
def test_second_call_compiles_nothing_in_sequential_mode(method):   # same for any sampler
    """A second same-shaped call (other data, other noise, other seed) in sequential
    mode compiles nothing. Catches: a jit of a closure over the chains (e.g. a
    ``lax.map`` body built per call and jitted), the chain method or mesh passed as a
    traced or unhashable argument, a per-call wrapper around the chunk."""
    first, second = _posterior(0, 0.01), _posterior(1, 0.03)
    jax.block_until_ready((first, second))
    kw = dict(method=method, num_warmup=10, num_samples=20, chunk_size=10,
              chain_method="sequential")
    with CompileCount() as control:
        _sample(first, seed=0, **kw)
    assert control.names                   # the counter sees compilations at all
    with CompileCount() as count:
        r2 = _sample(second, seed=1, **kw)
    assert count.names == [], count.names
    assert r2.diagnostics["num_compiles"] == 0


def test_nuts_reports_the_iterations_stopped_by_the_depth_cap():
    """With ``max_num_doublings=1`` no tree can turn (two states span a fraction of a
    period), so every sampling iteration of every chain is counted as capped, warmup
    ones are not; the dense-preconditioned default depth is 5 and is recorded.
    Catches: warmup iterations counted, the count lost between chunks, a capped flag
    that is also set when a tree turned, a wrong default depth."""
    post = _posterior()
    r = _sample(post, max_num_doublings=1)
    np.testing.assert_array_equal(r.diagnostics["max_depth_hits"], [30, 30])
    assert r.diagnostics["max_depth_fraction"] == 1.0
    d = _sample(post)
    assert d.provenance["config"]["max_num_doublings"] == 5
    assert 0 <= d.diagnostics["max_depth_fraction"] < 1.0


def _toy_run(num_chains=4, chain_method="sequential", sampler="mala"):
    """The runner's toy target (6-D Gaussian; cheap to compile) under MALA, or under NUTS
    (a vmapped ``while_loop`` per iteration)."""
    from test_runner import _MALA, D, _Gauss, _P
    if sampler == "mala":
        built = _MALA
    else:
        from uqrecon.inference.samplers.hmc import nuts
        built = nuts(_Gauss(jnp.asarray(_P)), 3, initial_step_size=0.3)
    return run_chains(*built, jnp.ones((num_chains, D)) + jnp.arange(num_chains)[:, None],
                      jax.random.PRNGKey(7), num_warmup=20, num_samples=30, chunk_size=10,
                      progress=False, chain_method=chain_method)


def _on_two_devices(code, *args, env_extra=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
               + (env_extra or ""), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_chains_sharded_over_devices_match_one_device(chain_method):
    """With 2 host devices both modes run a ``shard_map`` (each device maps or vmaps over
    its own 2 chains); the draws equal the 1-device run's. Catches: specs that split the
    chain axis wrongly (chains swapped or duplicated), params sharded instead of
    replicated. (Checked: reversing the chain order inside ``_chains_in_turn`` fails
    the sequential case.) The sampler is the runner tests' toy MALA: the shard_map path is
    the same for every sampler, and NUTS on a CT posterior cost ~90 s here for nothing
    more."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shard_{os.getpid()}.npy")
    out = _on_two_devices("""
        import sys
        import jax, numpy as np
        sys.path.insert(0, %r)
        from test_chain_method import _toy_run
        r = _toy_run(chain_method=sys.argv[2])
        print(len(jax.devices()), r.num_devices)
        np.save(sys.argv[1], np.asarray(r.draws))
    """ % os.path.dirname(__file__), path, chain_method)
    assert out.split()[-2:] == ["2", "2"]
    one = _toy_run(chain_method=chain_method)
    assert one.num_devices == 1
    np.testing.assert_allclose(np.load(path), one.draws, rtol=1e-5, atol=1e-6)
    os.remove(path)


def test_sharded_chunks_need_no_communication_between_devices(tmp_path):
    """Chains are independent, so a chunk sharded over devices must hold no collective.
    In vectorised mode a plain ``vmap`` over sharded chains is partitioned by XLA, and
    every vmapped ``while_loop`` (here NUTS's tree) then all-reduces its condition over
    the devices on each iteration (checked: without the ``shard_map`` the compiled chunk
    holds all-reduces and this test fails). (The GSM hang on 2 host devices was another
    fault, a batched Cholesky: ``test_gsm.py``.) Reads the compiled HLO that XLA dumps
    for the runner's chunks (both modes, one subprocess)."""
    _on_two_devices("""
        import sys
        sys.path.insert(0, %r)
        from test_chain_method import _toy_run
        for mode in ("vectorized", "sequential"):
            assert _toy_run(chain_method=mode, sampler="nuts").num_devices == 2
    """ % os.path.dirname(__file__), env_extra=f"--xla_dump_to={tmp_path}")
    texts = [f.read_text() for f in tmp_path.glob("*_chunk*after_optimizations.txt")]
    assert len(texts) >= 2, sorted(f.name for f in tmp_path.iterdir())[:20]   # both modes
    found = [op for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all")
             if any(op + "(" in t for t in texts)]
    assert found == []


class _Kill(Exception):
    pass


def test_sequential_resume_is_bitwise_identical_and_mode_is_fingerprinted(tmp_path):
    """NUTS in sequential mode killed after 2 of 3 chunks and resumed: only the last
    chunk runs and draws, step sizes, gradient and depth-cap counts equal an
    uninterrupted run's; a sequential checkpoint is refused by a vectorized run (the
    two agree only up to rounding). Catches: the capped count or the chain method left
    out of the checkpoint/fingerprint, a resume that restarts the keys."""
    from uqrecon.inference.sample import METHODS
    key = jax.random.PRNGKey(5)
    built = METHODS["nuts"](_posterior(), key, {"max_num_doublings": 2}, 2, jnp.float32)

    def run(**kw):
        return run_chains(built.sampler, built.params, built.init_positions, key,
                          num_warmup=10, num_samples=20, chunk_size=10, progress=False,
                          **kw)

    ref = run(chain_method="sequential")
    calls = []

    def killer(info):
        calls.append(info)
        if len(calls) == 2:
            raise _Kill

    with pytest.raises(_Kill):
        run(chain_method="sequential", checkpoint_dir=tmp_path, callback=killer)
    # the refusal names the setting that differs (a changed default must be findable)
    with pytest.raises(ValueError, match="checkpoint_dir.*chain_method: 'sequential' in the "
                                         "checkpoint, 'vectorized' now"):
        run(chain_method="vectorized", checkpoint_dir=tmp_path)
    resumed = run(chain_method="sequential", checkpoint_dir=tmp_path)
    assert resumed.timings["chunks_run"] == 1
    np.testing.assert_array_equal(resumed.draws, ref.draws)
    np.testing.assert_array_equal(resumed.step_size, ref.step_size)
    np.testing.assert_array_equal(resumed.num_capped, ref.num_capped)
    assert resumed.num_grad_evals == ref.num_grad_evals
    assert ref.num_capped.sum() > 0


def test_a_checkpoint_of_another_state_layout_is_refused(tmp_path):
    """A checkpoint whose chain states have another layout than the sampler builds now
    (HMC's state gained a Halton counter: blackjax's ``HMCState`` became
    ``DynamicHMCState``) is refused with :class:`CheckpointMismatch` before any step,
    although every recorded setting matches. Catches: a resume that trusts the
    fingerprint alone (the old state then failed inside the first step with an
    AttributeError)."""
    import blackjax
    from uqrecon.inference.checkpoint import (CheckpointMismatch, load_checkpoint,
                                              save_checkpoint)
    from uqrecon.inference.sample import METHODS
    key = jax.random.PRNGKey(5)
    built = METHODS["hmc"](_posterior(), key, {}, 2, jnp.float32)

    def run(**kw):
        return run_chains(built.sampler, built.params, built.init_positions, key,
                          num_warmup=10, num_samples=10, chunk_size=10, progress=False,
                          chain_method="vectorized", **kw)

    def killer(info):        # dies after the first chunk (warmup), checkpoint written
        raise _Kill

    with pytest.raises(_Kill):
        run(checkpoint_dir=tmp_path, callback=killer)
    ck = load_checkpoint(tmp_path)
    inner = ck["states"].inner
    assert hasattr(inner, "random_generator_arg")       # today's layout was saved
    old = blackjax.mcmc.hmc.HMCState(inner.position, inner.logdensity, inner.logdensity_grad)
    save_checkpoint(tmp_path, {**ck, "states": ck["states"]._replace(inner=old)})
    with pytest.raises(CheckpointMismatch, match="another layout"):
        run(checkpoint_dir=tmp_path)
    save_checkpoint(tmp_path, ck)                        # the genuine one still resumes
    assert run(checkpoint_dir=tmp_path).timings["chunks_run"] == 1

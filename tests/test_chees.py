"""ChEES-HMC through ``sample`` (issue 11, item 5: blackjax's newer samplers).

The 16x16 linear-Gaussian CT posterior of ``tests/ct_gmrf.py`` (12 angles, GMRF
delta=10), exact mean and pixel std from a dense float64 inverse (independent of
uqrecon's solvers). The first run is made once per module (a fixture, its XLA
compilations counted) so the compile-once test only pays for the second call.
"""

import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.inference import sample
from compile_count import CompileCount
from ct_gmrf import ct_gmrf
from mc_error import zscores
from std_normal import StdNormal

setup_helpers = importlib.import_module("uqrecon.inference.methods.common")
RUN = dict(num_chains=4, num_warmup=200, num_samples=1000, progress=False)


def _run(post, seed, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # R-hat noise of short runs is not tested here
        with CompileCount() as count:
            r = sample(post, method="chees", seed=seed, **{**RUN, **kw})
    return r, count.names


@pytest.fixture(scope="module")
def ct():
    return ct_gmrf(16, 12, 0, 0.01)


@pytest.fixture(scope="module")
def first(ct):
    return _run(ct[0], 1)


def test_chees_matches_exact_posterior(ct, first):
    """Mean and pixel std within 4 Monte Carlo s.e. (from the ESS of the draws and of
    their squared deviations, ``tests/mc_error.py``) for >= 99 % of pixels, ESS >= 100
    everywhere, and the pixel-averaged std ratio within 2 % of 1.

    Power: with 4 x 1000 draws the ESS of the squared deviations is 650-1,030 (that of
    the draws ~3,300), so one pixel's std has a s.e. of ~1.6-2 % and the average over
    256 pixels far less (measured ratio 1.002). A 10 % variance error moves the ratio by
    ~5 % and fails the 2 % bound: the target's log density multiplied by 1/0.9 gave
    0.95; the draws rescaled to 0.9 / 1.1 times the variance give 0.951 / 1.051 (and
    0.9 fails the z-test on 14 % of pixels). Catches a wrong target or image map, a
    Metropolis test that is skipped (the jittered trajectories then carry the
    integrator's bias), chains stuck by a bad tuning."""
    _, mean, std = ct
    r, _ = first
    d = r.diagnostics
    z_mean, z_std = zscores(r, mean, std)
    assert d["ess_bulk"].min() >= 100
    assert np.mean(z_mean < 4) >= 0.99, np.sort(z_mean.ravel())[-5:]
    assert np.mean(z_std < 4) >= 0.99, np.sort(z_std.ravel())[-5:]
    assert abs(np.mean(r.std / std) - 1) < 0.02, np.mean(r.std / std)
    assert 0.5 < d["acceptance_rate"] < 0.95 and d["divergences"] == 0


def test_provenance_and_gradient_accounting(first):
    """The Result says what ran: asymptotically exact, the tuned step size and mean
    leapfrog count (their product the trajectory length), the tuning's gradients as
    warmup and none spent by the runner on a warmup of its own."""
    r, _ = first
    cfg = r.provenance["config"]
    assert r.provenance["exactness"] == "asymptotically exact"
    assert cfg["step_size"] > 0 and cfg["num_leapfrog"] >= 1
    assert cfg["trajectory_length"] == pytest.approx(cfg["step_size"] * cfg["num_leapfrog"],
                                                     rel=1e-5)
    assert cfg["num_warmup"] == RUN["num_warmup"] and cfg["preconditioner"] == "dense"
    assert cfg["tuning_held_at_cap"] == 0.0
    d = r.diagnostics
    assert d["num_grad_evals_warmup"] >= RUN["num_chains"] * RUN["num_warmup"]
    assert d["num_grad_evals"] >= RUN["num_chains"] * RUN["num_samples"]


def test_a_trajectory_at_its_cap_is_reported(ct):
    """With ``max_leapfrog_steps=1`` blackjax's clip holds the tuning's trajectory at
    one step throughout (the criterion reaches ~7 steps on this posterior when free):
    ``sample`` warns and the provenance records the share of the tuning held at the cap
    (catches a cap that silently holds the tuning back). The default run (cap 1000) is
    never held (checked in the provenance test). With a cap of 2 the clip held only
    ~20 % of the time, below the warning's 50 %."""
    with pytest.warns(RuntimeWarning, match="max_leapfrog_steps"):
        r = sample(ct[0], method="chees", seed=1, num_chains=4, num_warmup=100,
                   num_samples=20, progress=False, max_leapfrog_steps=1)
    assert r.provenance["config"]["tuning_held_at_cap"] > 0.5


@jax.jit
def _vmapped_step(keys, states, params):
    """One ChEES step of every chain (module-level: compiled once for the test)."""
    from uqrecon.inference.samplers.chees import CHEES
    return jax.vmap(CHEES.step, in_axes=(0, 0, None))(keys, states, params)


def test_chains_take_the_same_number_of_steps_every_iteration():
    """Vmapped chains started apart integrate the same, jittered, number of leapfrog
    steps in every iteration: the lockstep that lets ChEES batch chains without NUTS's
    waste. Catches a per-chain jitter (e.g. a chain-dependent Halton index: chains
    started at indices 5 and 6 fail it) and a jitter that is lost (constant steps)."""
    from uqrecon.inference.samplers.chees import CHEES, CheesParams
    params = CheesParams(StdNormal(jnp.ones((), jnp.float32)), jnp.float32(0.3),
                         jnp.float32(10.0), jnp.ones(8, jnp.float32), jnp.int32(5))
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    states = jax.vmap(lambda k, x: CHEES.init(k, x, params))(keys, x0)
    counts = []
    for t in range(8):
        states, info = _vmapped_step(jax.random.split(jax.random.PRNGKey(t + 2), 4),
                                     states, params)
        counts.append(np.asarray(info.num_grad_evals))
    counts = np.stack(counts)                     # (iterations, chains)
    assert (counts == counts[:, :1]).all(), counts
    assert len(set(counts[:, 0])) > 1 and counts.min() >= 1 and counts.max() <= 10, counts


def test_second_call_compiles_nothing(first):
    """A second call on other data with another noise level compiles nothing: not the
    set-up, not the cross-chain tuner, not the runner's chunk. Catches a tuner jitted
    over a closure, tuned values baked into the trace as Python floats, a Sampler
    built from closures."""
    r1, names1 = first
    post2, _, _ = ct_gmrf(16, 12, 1, 0.03)
    jax.block_until_ready(post2)
    r2, names2 = _run(post2, 2)
    assert names2 == [], names2
    assert len(names1) > 0 and r1.diagnostics["num_compiles"] == len(names1)
    assert r2.diagnostics["num_compiles"] == 0
    assert not np.allclose(r1.mean, r2.mean)


@pytest.mark.parametrize("options,name", [
    ({"target_acceptance": 1.5}, "target_acceptance"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"max_leapfrog_steps": 0}, "max_leapfrog_steps"),
    ({"step_size": 0.0}, "step_size"),
    ({"num_warmup": 10}, "num_warmup"),
    ({"num_chains": 1}, "num_chains"),
    ({"preconditioner": "diag"}, "preconditioner"),
])
def test_bad_options_raise_before_setup(ct, monkeypatch, options, name):
    """Bad values raise ValueError naming the option before any set-up (the patched
    reference image would fail the test if it were reached)."""
    def no_setup(*a, **k):
        raise AssertionError("set-up reached before the options were checked")
    monkeypatch.setattr(setup_helpers, "reference_image", no_setup)
    with pytest.raises(ValueError, match=name):
        sample(ct[0], method="chees", progress=False, **options)


def test_unknown_option_is_named_before_setup(ct, monkeypatch):
    monkeypatch.setattr(setup_helpers, "reference_image",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("set-up")))
    with pytest.raises(TypeError, match="unknown options.*path_length"):
        sample(ct[0], method="chees", progress=False, path_length=2.0)

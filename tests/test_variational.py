"""Mean-field and low-rank Gaussian VI on a linear-Gaussian CT posterior.

For a Gaussian target ``N(m, P^{-1})`` the optimal mean-field Gaussian is known in closed
form: mean ``m`` and variances ``1 / P_ii`` (the conditional variances). That is the
untuned reference the mean-field fit is checked against; the exact posterior (dense
float64 inverse) gives the under-dispersion ratio. The low-rank family contains the
mean-field one, so its reverse KL to the posterior must be lower.
"""


import jax
import numpy as np
import pytest

from test_laplace import ct_posterior, dense_reference, rel
from uqrecon.inference.approximate import approximate
from uqrecon.models import TV, Posterior


def reverse_kl(mean_q, cov_q, mean_p, P):
    """KL(q || p) for Gaussians, p given by its precision ``P`` (float64)."""
    n = P.shape[0]
    d = np.ravel(mean_q) - np.ravel(mean_p)
    _, logdet_q = np.linalg.slogdet(cov_q)
    _, logdet_P = np.linalg.slogdet(P)
    return 0.5 * (np.trace(P @ cov_q) + d @ P @ d - n - logdet_q - logdet_P)


@pytest.fixture(scope="module")
def problem():
    post, truth = ct_posterior()
    mean, std, P = dense_reference(post)
    return post, mean, std, P


@pytest.fixture(scope="module")
def meanfield_fit(problem):
    post = problem[0]
    return approximate(post, "meanfield", seed=0)


def test_meanfield_gets_the_mean_and_the_conditional_variances(problem, meanfield_fit):
    post, mean, std, P = problem
    mf = meanfield_fit
    assert mf.diagnostics["converged"]
    assert mf.gaussian["kind"] == "diag" and mf.dtype == np.float32
    mf_std_closed = 1.0 / np.sqrt(np.diag(P)).reshape(post.shape)
    ratio = float(mf.std.mean() / std.mean())
    print(f"\nmean-field VI: mean err {rel(mf.mean, mean):.4f}, std err vs closed form "
          f"{rel(mf.std, mf_std_closed):.4f}, mean std / exact mean std = {ratio:.3f} "
          f"(closed form {mf_std_closed.mean() / std.mean():.3f}), "
          f"{mf.diagnostics['num_steps']} steps")
    assert rel(mf.mean, mean) < 0.02
    # stochastic optimisation: a few per cent of Monte Carlo error on the std remains
    assert rel(mf.std, mf_std_closed) < 0.05
    # under-dispersion: mean-field cannot see the correlations
    assert ratio < 0.9
    assert np.all(mf_std_closed <= std + 1e-7)    # conditional <= marginal, always


def test_lowrank_vi_improves_on_meanfield(problem, meanfield_fit):
    post, mean, std, P = problem
    lr = approximate(post, "lowrank", rank=10, seed=0)
    assert lr.gaussian["kind"] == "lowrank" and lr.gaussian["factor"].shape == (100, 10)
    g_mf, g_lr = meanfield_fit.gaussian, lr.gaussian
    cov_mf = np.diag(g_mf["diag"].ravel().astype(np.float64))
    F = g_lr["factor"].astype(np.float64)
    cov_lr = np.diag(g_lr["diag"].ravel().astype(np.float64)) + F @ F.T
    kl_mf = reverse_kl(g_mf["mean"], cov_mf, mean, P)
    kl_lr = reverse_kl(g_lr["mean"], cov_lr, mean, P)
    print(f"\nKL(q||p): mean-field {kl_mf:.2f}, low-rank(10) {kl_lr:.2f}; std ratio "
          f"{lr.std.mean() / std.mean():.3f} vs mean-field "
          f"{meanfield_fit.std.mean() / std.mean():.3f}")
    assert kl_lr < kl_mf
    assert rel(lr.mean, mean) < 0.02


def test_draws_on_demand_and_determinism(problem, meanfield_fit):
    post = problem[0]
    draws = meanfield_fit.sample(jax.random.PRNGKey(0), 4000)
    assert draws.shape == (4000, *post.shape)
    # sample variance of 4000 draws: relative SE sqrt(2/4000) = 2.2 % per pixel
    assert np.mean(np.abs(draws.var(0) / meanfield_fit.variance - 1) < 0.067) > 0.95
    again = approximate(post, "meanfield", seed=0)
    assert np.array_equal(again.mean, meanfield_fit.mean)
    assert np.array_equal(again.variance, meanfield_fit.variance)
    assert again.provenance["seed"] == 0 and again.provenance["method"] == "meanfield"


def test_stl_estimator_reaches_the_same_fit(problem, meanfield_fit):
    post = problem[0]
    stl = approximate(post, "meanfield", estimator="stl", seed=1)
    assert rel(stl.mean, meanfield_fit.mean) < 0.02
    assert rel(stl.std, meanfield_fit.std) < 0.05


def test_iteration_cap_warns_and_reports_not_converged(problem):
    post = problem[0]
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = approximate(post, "meanfield", max_iter=100, window=50, seed=0)
    assert not res.diagnostics["converged"] and res.diagnostics["num_steps"] == 100


def test_bad_input_is_rejected_with_named_arguments(problem):
    post = problem[0]
    nonsmooth = Posterior(post.likelihood, TV(post.shape))
    with pytest.raises(ValueError, match="'posterior'.*non-smooth"):
        approximate(nonsmooth, "meanfield")
    with pytest.raises(ValueError, match="'num_mc'"):
        approximate(post, "meanfield", num_mc=0)
    with pytest.raises(ValueError, match="'estimator'"):
        approximate(post, "meanfield", estimator="score")
    with pytest.raises(ValueError, match="'init'"):
        approximate(post, "lowrank", init=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="'rank'"):
        approximate(post, "lowrank", rank=0)
    with pytest.raises(ValueError, match="'learning_rate'"):
        approximate(post, "lowrank", learning_rate=-1.0)

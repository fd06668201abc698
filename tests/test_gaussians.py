"""Typed Gaussian families (``uqrecon.gaussians``; issue 11, item 3).

Every family is checked against its own dense covariance, formed here with numpy from
the arrays that define it (``diag``; ``diag + F F^T``; ``cov``), on a 2x3 image and on a
complex 2x2 image (six or eight real coordinates): coordinate variances, ``w^T C w``,
trace, rescaling, the Mapping view and the round trip through ``Result.save``, and the
draws' covariance.
"""

import jax
import numpy as np
import pytest

from uqrecon.gaussians import (DenseGaussian, DiagonalGaussian, GaussianFactors,
                               LowRankGaussian, UpdatedDiagonalGaussian, gaussian_factors)
from uqrecon.result import Result

SHAPE = (2, 3)


def _spec(kind, shape=SHAPE, complex_mean=False, seed=0):
    """A spec dict and the dense covariance it stands for (numpy, float64)."""
    rng = np.random.default_rng(seed)
    n = 2 * int(np.prod(shape)) if complex_mean else int(np.prod(shape))
    mean = rng.normal(size=shape)
    if complex_mean:
        mean = mean + 1j * rng.normal(size=shape)
    diag = rng.uniform(0.5, 2.0, size=n)
    factor = rng.normal(size=(n, 2))
    if kind == "diag":
        return {"kind": "diag", "mean": mean, "diag": diag}, np.diag(diag)
    if kind == "lowrank":
        return ({"kind": "lowrank", "mean": mean, "diag": diag, "factor": factor},
                np.diag(diag) + factor @ factor.T)
    if kind == "diag_update":       # V D-orthonormal: V = D^{-1/2} Q, Q^T Q = I
        q, _ = np.linalg.qr(rng.normal(size=(n, 3)))
        v = q / np.sqrt(diag)[:, None]
        theta = np.array([0.3, 1.7, 6.0])
        cov = np.diag(1 / diag) - (v * (1 - 1 / theta)) @ v.T
        return ({"kind": "diag_update", "mean": mean, "precision": diag, "vectors": v,
                 "theta": theta}, cov)
    B = rng.normal(size=(n, n))
    cov = B @ B.T + np.eye(n)
    return {"kind": "dense", "mean": mean, "cov": cov}, cov


@pytest.mark.parametrize("complex_mean", [False, True])
@pytest.mark.parametrize("kind,cls", [("diag", DiagonalGaussian),
                                      ("lowrank", LowRankGaussian),
                                      ("dense", DenseGaussian),
                                      ("diag_update", UpdatedDiagonalGaussian)])
def test_each_family_agrees_with_its_dense_covariance(kind, cls, complex_mean):
    """Variances, ``w^T C w``, trace, dense covariance and ``scaled`` match the covariance
    built here from the defining arrays. Catches a family that drops a term (the
    low-rank part of ``w^T C w``), scales the factor by ``s^2`` instead of ``s``, or
    orders complex coordinates other than ``[Re; Im]``."""
    spec, C = _spec(kind, complex_mean=complex_mean)
    g = gaussian_factors(spec, SHAPE)
    assert isinstance(g, cls) and isinstance(g, GaussianFactors) and g.kind == kind
    n = C.shape[0]
    assert g.size == n
    np.testing.assert_allclose(g.covariance(), C, rtol=1e-12)
    np.testing.assert_allclose(g.coordinate_variance().reshape(-1), np.diag(C), rtol=1e-12)
    pix = np.diag(C).reshape(g.coordinate_shape)
    np.testing.assert_allclose(g.variance(), pix[0] + pix[1] if complex_mean else pix,
                               rtol=1e-12)
    w = np.random.default_rng(5).normal(size=n)
    assert g.quadratic_form(w) == pytest.approx(w @ C @ w, rel=1e-12)
    assert g.trace() == pytest.approx(np.trace(C), rel=1e-12)
    np.testing.assert_allclose(g.scaled(1.7).covariance(), 1.7 ** 2 * C, rtol=1e-12)
    moved = g.with_mean(np.zeros(SHAPE, g.mean.dtype))
    np.testing.assert_allclose(moved.covariance(), C, rtol=1e-12)
    assert not np.any(moved.mean)


@pytest.mark.parametrize("kind", ["diag", "lowrank", "dense", "diag_update"])
def test_mapping_view_and_save_round_trip(kind, tmp_path):
    """``dict(g)`` is a valid spec that gives the same family back, and a saved Result
    loads with the same typed factors (the file stores the Mapping view)."""
    spec, C = _spec(kind)
    g = gaussian_factors(spec, SHAPE)
    assert set(g) == set(spec) and g["kind"] == kind
    again = gaussian_factors(dict(g), SHAPE)
    assert type(again) is type(g)
    np.testing.assert_allclose(again.covariance(), C)
    r = Result.from_gaussian(spec)
    loaded = Result.load(r.save(tmp_path / "r"))
    assert type(loaded.gaussian) is type(g)
    np.testing.assert_allclose(loaded.gaussian.covariance(), C)
    np.testing.assert_allclose(loaded.variance, np.diag(C).reshape(SHAPE), rtol=1e-6)


@pytest.mark.parametrize("kind", ["diag", "lowrank", "dense", "diag_update"])
def test_draws_have_the_family_covariance(kind):
    """20,000 draws: every entry of their sample covariance within 5 standard errors of
    ``C`` (s.e. ``sqrt((C_ii C_jj + C_ij^2) / N)``, ~1 % of a variance). Power: a
    variance 10 % off is ~10 s.e. on the diagonal (mutation: deviations times
    sqrt(0.9) fails on every kind; a low-rank draw without its factor part fails)."""
    spec, C = _spec(kind, seed=3)
    g = gaussian_factors(spec, SHAPE)
    N = 20000
    x = g.deviations(jax.random.PRNGKey(1), N)
    assert x.shape == (N, C.shape[0])
    S = x.T @ x / N
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / N)
    z = np.abs(S - C) / se
    assert z.max() < 5, z.max()
    r = Result.from_gaussian(spec)
    draws = r.sample(jax.random.PRNGKey(1), 5)
    np.testing.assert_allclose(draws.reshape(5, -1) - r.mean.reshape(-1),
                               g.deviations(jax.random.PRNGKey(1), 5), rtol=1e-5, atol=1e-5)


def test_bad_factors_are_named():
    """Missing, misshaped or unused arrays are errors naming the entry."""
    spec, _ = _spec("lowrank")
    with pytest.raises(ValueError, match="needs 'factor'"):
        gaussian_factors({**spec, "factor": None}, SHAPE)
    with pytest.raises(ValueError, match="factor"):
        gaussian_factors({**spec, "factor": np.ones((5, 2))}, SHAPE)
    with pytest.raises(ValueError, match="unused entries"):
        gaussian_factors({**spec, "cov": np.eye(6)}, SHAPE)
    with pytest.raises(ValueError, match="kind"):
        gaussian_factors({**spec, "kind": "sparse"}, SHAPE)
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_factors({**spec, "diag": -np.ones(6)}, SHAPE)

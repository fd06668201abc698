"""The numerical ground floor (uqrecon.linalg) against numpy references on small matrices."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqrecon.linalg import (default_tol, dense_from_matvec, eigh_sqrt, identity,
                            lanczos_eigh, largest_eigenvalue, pcg, psd_factor,
                            randomized_eigh)


def _spd(n, cond, seed):
    """A random SPD matrix with eigenvalues log-spaced over [1, cond] (float64)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (U * np.logspace(0, np.log10(cond), n)) @ U.T


def _matvec(M, dtype=jnp.float32):
    A = jnp.asarray(M, dtype)
    return lambda v: A @ v


@functools.partial(jax.jit, static_argnums=2)
def _lanczos(H, v0, steps, m=None):
    """Lanczos on the dense ``H`` (pencil with ``diag(m)`` if given), jitted once."""
    mv = lambda v: H @ v                            # noqa: E731
    if m is None:
        return lanczos_eigh(mv, v0, steps)
    return lanczos_eigh(mv, v0, steps, mass=lambda v: m * v, mass_solve=lambda v: v / m)


@functools.partial(jax.jit, static_argnums=(2,))
def _randomized(L, key, k):
    return randomized_eigh(lambda v: L @ v, key, L.shape[0], k)


def test_pcg_solves_a_random_spd_system_to_its_tolerance():
    """Catches a CG that stops before the tolerance, reports the recursive instead of the
    true residual, or loses the iteration count: the solution, the reported relres and
    the iterations are checked against numpy."""
    n = 60
    M = _spd(n, 100.0, 0)
    b = np.random.default_rng(1).normal(size=n)
    out = pcg(_matvec(M), jnp.asarray(b, jnp.float32), tol=1e-5, maxiter=500)
    true = np.linalg.norm(b - M @ np.asarray(out.x, np.float64)) / np.linalg.norm(b)
    assert float(out.relres) <= 1e-5 and true <= 1.5e-5
    np.testing.assert_allclose(float(out.relres), true, rtol=0.2)   # it is the true residual
    assert 0 < int(out.iterations) <= n and not bool(out.stagnated)
    np.testing.assert_allclose(out.x, np.linalg.solve(M, b), rtol=1e-3, atol=1e-4)
    # the default tolerance is the one rule, and a capped solve says it stopped short
    assert default_tol(jnp.float32) == 1e-5 and default_tol(jnp.float64) == 1e-8
    assert default_tol(jnp.complex128) == 1e-8
    capped = pcg(_matvec(M), jnp.asarray(b, jnp.float32), tol=1e-5, maxiter=3)
    assert int(capped.iterations) == 3 and float(capped.relres) > 1e-5
    assert not bool(capped.stagnated)


def test_preconditioning_reduces_iterations():
    """Catches a preconditioner that is ignored (or applied wrongly): on an
    ill-conditioned, diagonally dominant system Jacobi preconditioning must cut the CG
    iterations several-fold and still solve to tolerance."""
    n = 200
    rng = np.random.default_rng(2)
    d = np.logspace(0, 5, n)
    off = rng.normal(size=(n, n)) * 0.01
    off = (off + off.T) * np.sqrt(np.outer(d, d)) / n     # small next to the diagonal
    M = np.diag(d) + off
    b = jnp.asarray(rng.normal(size=n), jnp.float32)
    dinv = jnp.asarray(1.0 / d, jnp.float32)
    plain = pcg(_matvec(M), b, identity, tol=1e-4, maxiter=5000)
    pre = pcg(_matvec(M), b, lambda r: dinv * r, tol=1e-4, maxiter=5000)
    assert float(pre.relres) <= 1e-4 and float(plain.relres) <= 1e-4
    assert int(pre.iterations) * 4 < int(plain.iterations), (pre.iterations, plain.iterations)


def test_stagnation_stops_early_in_float32_and_says_so():
    """Catches a CG that, asked for a tolerance below the float32 rounding floor, runs
    to maxiter (or falsely reports convergence from its recursive residual): it must stop
    long before maxiter with ``stagnated`` set and a relres that is the true (floor)
    residual, above tol, and a solution as good as float32 allows."""
    n = 100
    M = _spd(n, 100.0, 3)
    b = np.random.default_rng(4).normal(size=n)
    maxiter = 20000
    out = pcg(_matvec(M), jnp.asarray(b, jnp.float32), tol=1e-10, maxiter=maxiter)
    true = np.linalg.norm(b - M @ np.asarray(out.x, np.float64)) / np.linalg.norm(b)
    assert bool(out.stagnated)
    assert int(out.iterations) < maxiter // 40
    assert float(out.relres) > 1e-10 and true > 1e-10
    np.testing.assert_allclose(float(out.relres), true, rtol=0.5)
    assert true < 1e-3                                   # at the floor, not lost
    # the same system at an attainable tolerance converges and does not stagnate
    ok = pcg(_matvec(M), jnp.asarray(b, jnp.float32), tol=1e-3, maxiter=maxiter)
    assert float(ok.relres) <= 1e-3 and not bool(ok.stagnated)


def test_power_iteration_and_lanczos_match_numpy_eigh():
    """Catches a wrong eigenvalue (e.g. the smallest, an unnormalised Rayleigh quotient,
    a mis-ordered or mis-assembled tridiagonal) from power iteration, Lanczos (plain and
    generalized with a mass matrix) or the randomized eigensolver."""
    n = 30
    H = _spd(n, 50.0, 5)
    H[0, 0] += 200.0                    # a clear spectral gap for power iteration
    ref = np.linalg.eigvalsh(H)
    v0 = jnp.asarray(np.random.default_rng(6).normal(size=n), jnp.float32)
    top = largest_eigenvalue(_matvec(H), v0, num_iter=500, rtol=1e-7)
    np.testing.assert_allclose(float(top), ref[-1], rtol=1e-4)

    eig = _lanczos(jnp.asarray(H, jnp.float32), v0, n)
    np.testing.assert_allclose(np.asarray(eig.values), ref[::-1], rtol=1e-4, atol=1e-3)
    V = np.asarray(eig.vectors, np.float64)
    np.testing.assert_allclose(V.T @ V, np.eye(n), atol=1e-4)
    np.testing.assert_allclose(H @ V[:, 0], ref[-1] * V[:, 0], atol=1e-2)

    m = np.linspace(1.0, 3.0, n)        # pencil (H, diag(m)): eigenvalues of D^-1/2 H D^-1/2
    ref_g = np.linalg.eigvalsh(H / np.sqrt(np.outer(m, m)))
    mj = jnp.asarray(m, jnp.float32)
    eig_g = _lanczos(jnp.asarray(H, jnp.float32), v0, n, mj)
    np.testing.assert_allclose(np.asarray(eig_g.values), ref_g[::-1], rtol=1e-4, atol=1e-3)
    Vg = np.asarray(eig_g.vectors, np.float64)
    np.testing.assert_allclose(Vg.T @ (m[:, None] * Vg), np.eye(n), atol=1e-4)

    rng = np.random.default_rng(7)                 # rank-5 matrix: randomized is exact
    F = rng.normal(size=(n, 5))
    L = F @ F.T
    ref_l = np.linalg.eigvalsh(L)[::-1][:5]
    eig_r = _randomized(jnp.asarray(L, jnp.float32), jax.random.PRNGKey(0), 10)
    np.testing.assert_allclose(np.asarray(eig_r.values)[:5], ref_l, rtol=1e-4)


@pytest.mark.parametrize("batch_size", [None, 4, 256])
def test_dense_from_matvec_is_the_matrix(batch_size):
    """Catches a transposed, mis-reshaped or chunk-dropping dense build: a rectangular
    map on 2D inputs (n = 10, not a multiple of the chunk of 4) must give back exactly its
    matrix, and ``symmetrize`` the symmetric part."""
    rng = np.random.default_rng(8)
    A = rng.normal(size=(7, 10)).astype(np.float32)
    Aj = jnp.asarray(A)
    got = dense_from_matvec(lambda v: (Aj @ v.ravel()).reshape(7, 1), 10, jnp.float32,
                            in_shape=(2, 5), batch_size=batch_size)
    assert got.shape == (7, 10)
    np.testing.assert_allclose(got, A, rtol=1e-6, atol=1e-6)
    S = rng.normal(size=(10, 10)).astype(np.float32)
    sym = dense_from_matvec(_matvec(S), 10, jnp.float32, symmetrize=True,
                            batch_size=batch_size)
    np.testing.assert_allclose(sym, 0.5 * (S + S.T), rtol=1e-6, atol=1e-6)


def test_psd_square_roots_square_back():
    """Catches a wrong square-root factor (e.g. ``V lam V^T`` instead of ``V sqrt(lam)``,
    a missing floor, or an inverse factor that is not the inverse): ``L L^T`` and ``S S^T``
    give the matrix back, ``W W^T`` its inverse, and a singular covariance still gets an
    exact factor."""
    M = _spd(12, 1e3, 9)
    L = psd_factor(M)
    np.testing.assert_allclose(L @ L.T, M, rtol=1e-10, atol=1e-10)
    rng = np.random.default_rng(10)
    F = rng.normal(size=(12, 4))
    singular = F @ F.T                              # rank 4: Cholesky fails, eigh fallback
    Ls = psd_factor(singular)
    np.testing.assert_allclose(Ls @ Ls.T, singular, atol=1e-10)

    S, W, ok = eigh_sqrt(jnp.asarray(M, jnp.float32), 0.0)
    S, W = np.asarray(S, np.float64), np.asarray(W, np.float64)
    assert bool(ok)
    np.testing.assert_allclose(S @ S.T, M, rtol=1e-4, atol=1e-3 * np.abs(M).max())
    np.testing.assert_allclose(W.T @ S, np.eye(12), atol=1e-4)
    np.testing.assert_allclose(W @ W.T, np.linalg.inv(M), rtol=1e-3,
                               atol=1e-3 * np.abs(np.linalg.inv(M)).max())
    # an indefinite matrix gets |lam| floored at floor * max|lam| (SoftAbs)
    lam = np.array([-4.0, 1e-6, 2.0])
    S2, _, _ = eigh_sqrt(jnp.diag(jnp.asarray(lam, jnp.float32)), 1e-3)
    np.testing.assert_allclose(np.sort(np.diag(np.asarray(S2 @ S2.T))), [4e-3, 2.0, 4.0],
                               rtol=1e-5)


def test_posterior_entry_points_trace_matmuls_at_full_precision(monkeypatch):
    """``sample``, ``approximate``, ``map_estimate`` and ``gold.reference`` trace the
    forward model's matrix product under ``default_matmul_precision("highest")`` (on
    NVIDIA GPUs the default is TF32: the exact posterior mean of the 64x64 CT reference
    problem came out 4.6 % off on an H200), each Result records it, and a user's own
    setting wins.

    The CPU computes float32 products exactly either way, so the test records the
    precision in force when the operator is traced. Would catch: the decorator dropped
    from ``sample``, ``approximate``, ``map_estimate``, ``exact_gaussian`` (the
    linear-Gaussian branch of ``gold.reference``) or ``mcmc_reference``, or the wrapper
    overriding a user's setting. Not covered: ``reference``'s own decorator (its branches
    carry theirs) and ``compare`` (no forward model inside).
    """
    import uqrecon
    from uqrecon.models import Gaussian, GMRF, Posterior
    from uqrecon.operators import MatrixOperator

    seen = []

    def recording(original):
        def method(self, *args, **kwargs):
            seen.append(jax.config.jax_default_matmul_precision)
            return original(self, *args, **kwargs)
        return method

    # _apply: traced forward model; to_dense: the exact reference's dense path
    for name in ("_apply", "to_dense"):
        monkeypatch.setattr(MatrixOperator, name, recording(getattr(MatrixOperator, name)))
    rng = np.random.default_rng(0)

    def post(rows, shape):
        """A posterior of shapes used nowhere else (one per call, so every call traces
        instead of reusing an executable compiled by another test or call)."""
        n = int(np.prod(shape))
        op = MatrixOperator(jnp.asarray(rng.normal(size=(rows, n)), jnp.float32), shape,
                            (rows,))
        y = jnp.asarray(rng.normal(size=rows), jnp.float32)
        return Posterior(Gaussian(op, y, sigma=0.5), GMRF(shape, 2.0))

    calls = {
        "sample": lambda: uqrecon.sample(post(13, (5, 3)), method="mala", num_chains=2,
                                         num_samples=8, num_warmup=8, progress=False),
        "approximate": lambda: uqrecon.approximate(post(11, (3, 7)), method="laplace",
                                                   rank=5),
        "map_estimate": lambda: uqrecon.map_estimate(post(9, (2, 11)), max_iter=5),
        # the linear-Gaussian branch of gold.reference runs gold.exact_gaussian
        "gold.reference": lambda: uqrecon.gold.reference(post(7, (13, 2)),
                                                         use_cache=False),
        "gold.mcmc_reference": lambda: uqrecon.gold.mcmc_reference(
            post(6, (3, 5)), "hmc", num_chains=2, num_samples=8, num_warmup=8,
            max_rounds=1, use_cache=False),
    }
    for name, call in calls.items():
        seen.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # 8-draw chains: convergence warnings
            result = call()
        assert seen and set(seen) == {"highest"}, (name, seen)
        if hasattr(result, "provenance"):               # map_estimate returns arrays
            assert result.provenance["matmul_precision"] == "highest", name
    seen.clear()
    with jax.default_matmul_precision("bfloat16"):
        uqrecon.map_estimate(post(9, (2, 11)), max_iter=7)
    assert seen and set(seen) == {"bfloat16"}, seen


def test_every_posterior_entry_point_is_wrapped_for_full_precision():
    """The public functions that compute posteriors or Gaussian draws from them carry
    ``linalg.full_precision`` (the behaviour itself is checked by tracing in the test
    above for the first five). Would catch: the decorator dropped from any of them, e.g.
    when a function is rewritten; a new entry point must be added here."""
    import uqrecon
    from uqrecon import gold
    from uqrecon.uq import bootstrap, calibration, structure

    entry_points = [
        uqrecon.sample, uqrecon.approximate, uqrecon.map_estimate, gold.reference,
        gold.exact_gaussian, gold.mcmc_reference, uqrecon.compare,
        calibration.exact_gaussian_method, calibration.run_replicates,
        structure.minimize_potential_over_absent_set, structure.buqo_test,
        bootstrap.response_matrix, bootstrap.gaussian_mean_reconstruction,
        bootstrap.equivariant_bootstrap, bootstrap.naive_bootstrap]
    unwrapped = [f.__name__ for f in entry_points if not getattr(f, "full_precision", False)]
    assert not unwrapped, unwrapped

"""Low-rank Laplace approximation: a Gaussian at the mode with a matrix-free Hessian.

The Hessian ``H`` of the potential at the mode is only ever applied to vectors
(forward-over-reverse Hessian-vector products, or Gauss-Newton products for non-Gaussian
likelihoods). Relative to an SPD *base* precision ``M`` with covariance ``M^{-1}``, the
pencil ``H v = theta M v`` is partly diagonalised by Lanczos (or a randomized
eigensolver), and the covariance is the low-rank update

    Gamma = M^{-1} - V diag(1 - 1/theta) V^T,      V^T M V = I,

keeping the ``rank`` pairs with the largest ``|log theta|`` -- the optimal low-rank
update of Spantini et al. (2015) / Bui-Thanh et al. (2013). Two bases:

* ``'prior'`` (linear-Gaussian posteriors, i.e. ``posterior.gaussian_form()`` exists):
  ``M = Q``, the prior precision, and ``theta = 1 + lambda`` with ``lambda`` the
  eigenvalues of the prior-preconditioned data-misfit Hessian, so
  ``Gamma_post = Gamma_pr - V diag(lambda / (1 + lambda)) V^T``. Exact as the rank
  reaches the number of informed directions. Up to ``dense_max`` pixels the pencil is
  whitened by the Cholesky factor of ``Q``; beyond, Lanczos runs in the ``Q`` inner
  product with ``Q^{-1}`` applied by CG.
* ``'diag'`` (anything smooth: smoothed TV, Cauchy, Poisson likelihoods): no prior
  covariance exists, so ``M = D`` is a diagonal estimate of the Hessian itself (Bekas et
  al. 2007, Rademacher probes), and the low-rank part corrects the directions where
  ``H`` differs most from ``D``. Exact at full rank for any positive ``D``; for a
  non-Gaussian likelihood (Poisson) ``H`` is the Gauss-Newton curvature by default.

Pixel variances never form an ``n x n`` matrix: ``diag(M^{-1})`` minus the low-rank
correction. ``diag(Q^{-1})`` is computed exactly (dense Cholesky of ``Q``) up to
``dense_max`` pixels; beyond, the pixel variances are the sample variances of
``num_variance_samples`` exact draws of the approximation, with relative standard error
``sqrt(2 / N)`` per pixel, recorded in the result's diagnostics.

What it captures: the local curvature at the mode, hence the exact posterior for linear
Gaussian models at full rank. It cannot capture skew, heavy tails or boundary effects of
constraints (e.g. positivity), nor the mean shift of a non-Gaussian posterior.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .lanczos import Eigh, cg_solve, lanczos_eigh, randomized_eigh

__all__ = ["laplace", "laplace_approximation", "LaplaceApproximation", "diagonal_estimate"]


class LaplaceApproximation(NamedTuple):
    """``N(mean, M^{-1} - V diag(1 - 1/theta) V^T)`` in factored form (flat vectors).

    ``base_sample(key)`` draws ``u ~ N(0, M^{-1})``; ``mass(v) = M v``; ``base_variance``
    is ``diag(M^{-1})`` when known exactly, else ``None``; ``base_cov`` is the dense
    ``M^{-1}`` for small problems, else ``None``.
    """

    mean: jax.Array
    theta: jax.Array
    vectors: jax.Array
    mass: Callable
    base_sample: Callable
    base_variance: jax.Array | None
    base_cov: jax.Array | None

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` exact draws ``(num, n)``: ``u - V diag(1 - theta^-1/2) V^T M u``."""
        g = 1.0 - jax.lax.rsqrt(self.theta)

        def one(k):
            u = self.base_sample(k)
            return self.mean + u - self.vectors @ (g * (self.vectors.T @ self.mass(u)))

        return jax.lax.map(one, jax.random.split(key, num), batch_size=min(num, 16))

    def variance(self) -> jax.Array | None:
        """Exact pixel variances of the approximation, when ``diag(M^{-1})`` is known."""
        if self.base_variance is None:
            return None
        c = 1.0 - 1.0 / self.theta
        return self.base_variance - jnp.sum(self.vectors ** 2 * c, axis=1)

    def covariance(self) -> jax.Array | None:
        """The dense covariance (small problems only), else ``None``."""
        if self.base_cov is None:
            return None
        c = 1.0 - 1.0 / self.theta
        return self.base_cov - (self.vectors * c) @ self.vectors.T


def _default_tol(dtype) -> float:
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def diagonal_estimate(matvec: Callable, key: jax.Array, n: int, num_probes: int,
                      dtype) -> jax.Array:
    """Stochastic diagonal of a symmetric operator, ``mean_k z_k * (H z_k)`` with
    Rademacher ``z_k`` (Bekas, Kokiopoulou and Saad 2007); unbiased, error
    ``sqrt(sum_{j != i} H_ij^2 / num_probes)`` per entry."""
    z = jax.random.rademacher(key, (num_probes, n), dtype)
    hz = jax.lax.map(matvec, z, batch_size=min(num_probes, 8))
    return jnp.mean(z * hz, axis=0)


def _eig(solver, matvec, key, n, steps, dtype, mass, mass_solve, power_iters):
    if 2 * steps >= n and mass is None:
        # half the spectrum or more: n products cost about as much as the Lanczos steps,
        # and dense eigh is cheaper than full reorthogonalisation and more accurate
        theta, vecs = jnp.linalg.eigh(_dense(matvec, n, dtype))
        return Eigh(theta[::-1], vecs[:, ::-1])
    if solver == "lanczos":
        v0 = jax.random.normal(key, (n,), dtype)
        return lanczos_eigh(matvec, v0, steps, mass=mass, mass_solve=mass_solve)
    return randomized_eigh(matvec, key, n, steps, dtype=dtype, power_iters=power_iters,
                           mass=mass, mass_solve=mass_solve)


def _select(theta, vectors, rank):
    """The ``rank`` pairs with the largest ``|log theta|`` (optimal truncation)."""
    tiny = jnp.finfo(theta.dtype).tiny
    theta = jnp.maximum(theta, tiny)
    order = jnp.argsort(-jnp.abs(jnp.log(theta)))[:rank]
    return theta[order], vectors[:, order]


def _dense(matvec, n, dtype):
    eye = jnp.eye(n, dtype=dtype)
    cols = jax.lax.map(matvec, eye, batch_size=min(n, 256))
    return 0.5 * (cols + cols.T)


def _prior_base(form, n, shape, dtype, dense_max, tol, maxiter):
    """Prior precision ``Q`` and draws from ``N(0, Q^{-1})``; for small ``n`` also the
    dense Cholesky factor ``R`` (``Q = R R^T``), else ``None`` (``Q^{-1}`` by CG)."""
    def mass(v):
        return form.prior_precision(v.reshape(shape)).reshape(-1)

    if n > dense_max:
        L = form.prior_precision_sqrt

        def base_sample(k):
            eps = jax.random.normal(k, L.range_shape, dtype)
            rhs = jnp.real(L.adjoint(eps)).reshape(-1).astype(dtype)
            return cg_solve(mass, rhs, tol=tol, maxiter=maxiter)[0]

        return mass, base_sample, None
    R = jnp.linalg.cholesky(_dense(mass, n, dtype))
    if not bool(jnp.all(jnp.isfinite(R))):
        raise ValueError("laplace: the prior precision is singular (improper prior, e.g. "
                         "a GMRF with periodic/neumann boundary) or not numerically "
                         "positive definite; use preconditioner='diag'")

    def base_sample(k):
        eps = jax.random.normal(k, (n,), dtype)
        return jax.scipy.linalg.solve_triangular(R.T, eps, lower=False)

    return mass, base_sample, R


def laplace_approximation(posterior, key: jax.Array, *, rank: int = 50, mode=None,
                          preconditioner: str = "auto", solver: str = "lanczos",
                          oversample: int = 10, power_iters: int = 1,
                          hessian: str = "gauss_newton", num_probes: int = 32,
                          dense_max: int = 4096, cg_tol: float | None = None,
                          cg_maxiter: int = 5000, map_config: dict | None = None
                          ) -> tuple[LaplaceApproximation, dict]:
    """Build the factored low-rank Laplace approximation; returns ``(approx, info)``.

    See :func:`laplace` for the arguments. ``info`` records the base, the mode's
    linear-solve residual (Gaussian case), and the eigenvalues found.
    """
    _check_args(posterior, rank, preconditioner, solver, oversample, hessian, num_probes,
                mode)
    shape = tuple(posterior.shape)
    dtype = jnp.dtype(posterior.dtype)
    n = math.prod(shape)
    tol = _default_tol(dtype) if cg_tol is None else float(cg_tol)
    form = posterior.gaussian_form()
    if preconditioner == "auto":
        preconditioner = "prior" if form is not None else "diag"
    if preconditioner == "prior" and form is None:
        raise ValueError("preconditioner='prior' needs a linear-Gaussian 'posterior' "
                         "(posterior.gaussian_form() is None); use preconditioner='diag'")
    info = {"preconditioner": preconditioner}
    k_eig, k_diag = jax.random.split(key)

    # -- mode ------------------------------------------------------------------------
    if mode is not None:
        x0 = jnp.asarray(mode, dtype).reshape(-1)
    elif form is not None:
        prec = lambda v: form.precision(v.reshape(shape)).reshape(-1)  # noqa: E731
        rhs = jnp.asarray(form.rhs, dtype).reshape(-1)
        if n <= dense_max:      # dense Cholesky: error ~ cond(P) eps, below CG's tol
            x0 = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(_dense(prec, n, dtype)),
                                             True), rhs)
        else:
            x0, res = jax.jit(lambda b: cg_solve(prec, b, tol=tol, maxiter=cg_maxiter))(rhs)
            info["mode_cg_relres"] = float(res)
    else:
        from uqrecon.map import map_estimate

        x_map, map_info = map_estimate(posterior, **(map_config or {}))
        info["map"] = {k: v for k, v in map_info.items() if isinstance(v, (str, int, float, bool))}
        x0 = jnp.asarray(x_map, dtype).reshape(-1)
    steps = min(n, rank + oversample)

    # -- eigenpairs of the pencil ----------------------------------------------------
    if preconditioner == "prior":
        A, tau = form.operator, form.noise_precision

        def misfit(v):
            return (tau * jnp.real(A.normal(v.reshape(shape)))).reshape(-1).astype(dtype)

        mass, base_sample, R = _prior_base(form, n, shape, dtype, dense_max, tol, cg_maxiter)
        if R is None:           # Lanczos in the Q inner product, Q^{-1} by CG
            mass_solve = lambda v: cg_solve(mass, v, tol=tol, maxiter=cg_maxiter)[0]  # noqa: E731
            eig = jax.jit(lambda k: _eig(solver, misfit, k, n, steps, dtype, mass,
                                         mass_solve, power_iters))(k_eig)
            vectors = eig.vectors
            base_var = base_cov = None
        else:                   # whitened by the Cholesky factor: more accurate in float32
            tri = jax.scipy.linalg.solve_triangular
            whitened = lambda w: tri(R, misfit(tri(R.T, w, lower=False)), lower=True)  # noqa: E731
            eig = jax.jit(lambda k: _eig(solver, whitened, k, n, steps, dtype, None, None,
                                         power_iters))(k_eig)
            vectors = tri(R.T, eig.vectors, lower=False)
            Rinv = tri(R, jnp.eye(n, dtype=dtype), lower=True)
            base_cov = Rinv.T @ Rinv
            base_var = jnp.sum(Rinv ** 2, axis=0)
        theta = 1.0 + jnp.maximum(eig.values, 0.0)
    else:
        hvp = posterior.gauss_newton_vp if hessian == "gauss_newton" else posterior.hessian_vp
        x_img = x0.reshape(shape)

        def hmat(v):
            return hvp(x_img, v.reshape(shape)).reshape(-1).astype(dtype)

        d = jax.jit(lambda k: diagonal_estimate(hmat, k, n, num_probes, dtype))(k_diag)
        floor = 1e-3 * jnp.mean(jnp.abs(d))
        d = jnp.maximum(d, floor)
        info["diag_clipped"] = int(jnp.sum(d <= floor))
        s = jax.lax.rsqrt(d)
        mass = lambda v: d * v  # noqa: E731
        base_sample = lambda k: jax.random.normal(k, (n,), dtype) * s  # noqa: E731
        base_var = 1.0 / d
        base_cov = jnp.diag(base_var) if n <= dense_max else None
        # the pencil (H, D) in D-whitened coordinates: S H S with S = D^{-1/2}
        eig = jax.jit(lambda k: _eig(solver, lambda w: s * hmat(s * w), k, n, steps, dtype,
                                     None, None, power_iters))(k_eig)
        theta, vectors = eig.values, s[:, None] * eig.vectors
    theta, vectors = _select(theta, vectors, rank)
    info["eigenvalues"] = np.asarray(theta)
    approx = LaplaceApproximation(x0, theta, vectors, mass, base_sample, base_var, base_cov)
    return approx, info


def laplace(posterior, key: jax.Array, *, rank: int = 50, mode=None,
            preconditioner: str = "auto", solver: str = "lanczos", oversample: int = 10,
            power_iters: int = 1, hessian: str = "gauss_newton", num_probes: int = 32,
            dense_max: int = 4096, num_variance_samples: int = 200,
            cg_tol: float | None = None, cg_maxiter: int = 5000,
            map_config: dict | None = None):
    """Low-rank Laplace approximation of ``posterior``; returns a Gaussian ``Result``.

    ``rank``: eigenpairs kept (``solver`` 'lanczos' or 'randomized' computes
    ``rank + oversample``). ``mode``: the MAP image if known (else CG on the normal
    equations for linear-Gaussian posteriors, ``uqrecon.map_estimate`` otherwise).
    ``preconditioner``: 'prior' | 'diag' | 'auto' (see the module docstring).
    ``hessian``: 'gauss_newton' or 'exact' (forward-over-reverse) for the 'diag' base.
    Up to ``dense_max`` pixels the result carries the dense covariance (``gaussian``
    of kind 'dense'); beyond, pixel variances are exact for the 'diag' base and
    estimated from ``num_variance_samples`` draws for the 'prior' base.
    """
    from uqrecon.result import Result, make_provenance

    t0 = time.perf_counter()
    approx, info = laplace_approximation(
        posterior, key, rank=rank, mode=mode, preconditioner=preconditioner, solver=solver,
        oversample=oversample, power_iters=power_iters, hessian=hessian,
        num_probes=num_probes, dense_max=dense_max, cg_tol=cg_tol, cg_maxiter=cg_maxiter,
        map_config=map_config)
    shape = tuple(posterior.shape)
    var = approx.variance()
    diagnostics = {"eigenvalues": info["eigenvalues"], "rank": int(approx.theta.shape[0]),
                   "preconditioner": info["preconditioner"]}
    for k in ("mode_cg_relres", "diag_clipped", "map"):
        if k in info:
            diagnostics[k] = info[k]
    if var is None:
        if not isinstance(num_variance_samples, (int, np.integer)) or num_variance_samples < 2:
            raise ValueError("'num_variance_samples' must be an integer >= 2, got "
                             f"{num_variance_samples!r}")
        draws = approx.sample(jax.random.fold_in(key, 1), num_variance_samples)
        var = jnp.mean((draws - approx.mean) ** 2, axis=0)
        diagnostics["variance_estimator"] = (
            f"sample variance of {num_variance_samples} exact draws of the approximation "
            "(prior draws by CG)")
        diagnostics["variance_rel_se"] = math.sqrt(2.0 / num_variance_samples)
    else:
        diagnostics["variance_estimator"] = "exact"
    var = np.maximum(np.asarray(var), 0.0)  # rounding can give -eps where var ~ 0
    cov = approx.covariance()
    gaussian = None if cov is None else {"kind": "dense", "mean": np.asarray(approx.mean),
                                         "cov": np.asarray(cov)}
    config = {"rank": rank, "preconditioner": info["preconditioner"], "solver": solver,
              "oversample": oversample, "power_iters": power_iters, "hessian": hessian,
              "num_probes": num_probes, "dense_max": dense_max,
              "num_variance_samples": num_variance_samples, "cg_tol": cg_tol,
              "cg_maxiter": cg_maxiter, "mode": None if mode is None else "given"}
    elapsed = time.perf_counter() - t0
    return Result(mean=np.asarray(approx.mean).reshape(shape), variance=var.reshape(shape),
                  diagnostics=diagnostics, timings={"total_s": elapsed},
                  provenance=make_provenance("laplace", config, dtype=posterior.dtype),
                  gaussian=gaussian)


def _check_args(posterior, rank, preconditioner, solver, oversample, hessian, num_probes,
                mode):
    if not getattr(posterior, "is_smooth", False):
        raise ValueError("'posterior' has non-smooth terms; the Laplace approximation needs "
                         "a smooth potential (use a smoothed prior)")
    n = math.prod(posterior.shape)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= n:
        raise ValueError(f"'rank' must be an integer in [1, {n}], got {rank!r}")
    if not isinstance(oversample, (int, np.integer)) or oversample < 0:
        raise ValueError(f"'oversample' must be a non-negative integer, got {oversample!r}")
    if preconditioner not in ("auto", "prior", "diag"):
        raise ValueError("'preconditioner' must be 'auto', 'prior' or 'diag', got "
                         f"{preconditioner!r}")
    if solver not in ("lanczos", "randomized"):
        raise ValueError(f"'solver' must be 'lanczos' or 'randomized', got {solver!r}")
    if hessian not in ("gauss_newton", "exact"):
        raise ValueError(f"'hessian' must be 'gauss_newton' or 'exact', got {hessian!r}")
    if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
        raise ValueError(f"'num_probes' must be a positive integer, got {num_probes!r}")
    if mode is not None and tuple(np.shape(mode)) != tuple(posterior.shape):
        raise ValueError(f"'mode' has shape {tuple(np.shape(mode))}, expected "
                         f"{tuple(posterior.shape)}")

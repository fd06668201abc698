"""CUQIpy baseline for ``benchmarks/samplers.py`` (runs in its own venv: CUQIpy pins an
older numpy than JAX wants).

Reads the problem written by ``samplers.py`` (system matrix and prior square-root
precision as CSR, data, noise std), builds the same linear-Gaussian posterior in CUQIpy
(``x ~ N(0, Q^{-1})`` with ``Q = L^T L`` the GMRF precision, ``y ~ N(A x, sigma^2 I)``)
and runs NUTS or LinearRTO; writes draws and timings. Set up once with::

    python3 -m venv .venv-cuqi && .venv-cuqi/bin/pip install cuqipy
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp


def _csr(f, name):
    return sp.csr_matrix((f[f"{name}_data"], f[f"{name}_indices"], f[f"{name}_indptr"]),
                         shape=tuple(f[f"{name}_shape"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("problem")
    ap.add_argument("out")
    ap.add_argument("--method", choices=("nuts", "linearrto"), default="nuts")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--num-warmup", type=int, default=500)
    ap.add_argument("--maxit", type=int, default=200, help="LinearRTO CGLS iterations")
    args = ap.parse_args()

    import cuqi

    with np.load(args.problem) as f:
        A, L = _csr(f, "A"), _csr(f, "L")
        data, sigma = f["data"], float(f["sigma"])
    n = A.shape[1]
    Q = (L.T @ L).tocsr()
    if args.method == "linearrto":
        # LinearRTO needs a square root of the prior precision; CUQIpy's sparse Gaussian
        # takes one (its density would need cholmod, which RTO never calls). Q is banded,
        # so its Cholesky factor is sparse; computed before the clock starts.
        R = sp.csr_matrix(np.linalg.cholesky(Q.toarray()).T)
        R.eliminate_zeros()
    t0 = time.perf_counter()
    if args.method == "linearrto":
        model = cuqi.model.LinearModel(A)
        x = cuqi.distribution.Gaussian(np.zeros(n), sqrtprec=R)
        y = cuqi.distribution.Gaussian(model @ x, cov=sigma ** 2)
        posterior = cuqi.distribution.JointDistribution(x, y)(y=data)
    else:
        # the same (unnormalised) posterior and its gradient with the same sparse matrices,
        # as CUQIpy documents for custom targets (UserDefinedDistribution)
        def logpdf(v):
            r = (A @ v - data) / sigma
            return -0.5 * (r @ r) - 0.5 * (v @ (Q @ v))

        def gradient(v):
            return -(A.T @ ((A @ v - data) / sigma ** 2)) - Q @ v

        posterior = cuqi.distribution.UserDefinedDistribution(
            dim=n, logpdf_func=logpdf, gradient_func=gradient)
    np.random.seed(0)
    if args.method == "nuts":
        sampler = cuqi.sampler.NUTS(posterior)
        # dual averaging at every warmup step (Hoffman & Gelman): CUQIpy's default
        # tune_freq=0.1 adapts only 10 times, and on this posterior the chain then
        # sticks (measured: min ESS 1.3 of 1000 draws)
        sampler.warmup(args.num_warmup, tune_freq=1.0 / args.num_warmup)
        t1 = time.perf_counter()
        sampler.sample(args.num_samples)
        steps = int(np.sum(sampler.num_tree_node_list))   # warmup and sampling
    else:
        sampler = cuqi.sampler.LinearRTO(posterior, maxit=args.maxit)
        t1 = time.perf_counter()
        sampler.sample(args.num_samples)
        steps = args.num_samples * args.maxit     # an upper bound (CGLS may stop early)
    t2 = time.perf_counter()
    draws = np.asarray(sampler.get_samples().samples).T[-args.num_samples:]
    np.savez(args.out, draws=draws.astype(np.float32), run_s=t2 - t1, total_s=t2 - t0,
             steps=steps)


if __name__ == "__main__":
    main()

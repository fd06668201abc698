"""Does a GPU's default float32 matrix product (TF32 on NVIDIA) move the exact Gaussian
reference or MCMC draws? Compares them with a float64 Cholesky made on the CPU.

Two steps, because the float64 reference is made where float64 is cheap and exact:

1. on the CPU: ``python benchmarks/gpu_precision_check.py save`` writes
   ``gpu_precision_ref.npz`` (mean and std of the 64x64 GMRF reference problem of
   ``samplers.py`` by ``samplers.exact_posterior``, numpy float64);
2. on the GPU, once per precision:
   ``python benchmarks/gpu_precision_check.py compare`` and
   ``JAX_DEFAULT_MATMUL_PRECISION=highest python benchmarks/gpu_precision_check.py compare``
   print the relative errors of ``gold.reference`` (exact Gaussian, dense path) and of
   256 vectorized HMC chains (300 + 300).

Since ``linalg.full_precision`` the entry points use "highest" unless a precision is set,
so the first command measures the default only with ``JAX_DEFAULT_MATMUL_PRECISION=default``
or with the code before that change. Results: ``results/gpu.md`` section 5.
"""

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import samplers  # noqa: E402

import uqrecon  # noqa: E402
from uqrecon.models import GMRF, Posterior  # noqa: E402

REF = "gpu_precision_ref.npz"


def main(mode):
    op, truth, lik, sigma, data = samplers.reference_problem()
    post = Posterior(lik, GMRF(op.domain_shape, 10.0))
    if mode == "save":
        mean, std = samplers.exact_posterior(op, post, sigma, data)
        np.savez(REF, mean=mean, std=std)
        return
    ref = np.load(REF)

    def rel(a, b):
        return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))

    tag = os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "default")
    ex = uqrecon.gold.reference(post, use_cache=False)
    print(tag, "exact: mean/std rel err vs CPU float64", rel(ex.mean, ref["mean"]),
          rel(ex.std, ref["std"]), flush=True)
    res = uqrecon.sample(post, method="hmc", num_chains=256, num_warmup=300,
                         num_samples=300, seed=0, progress=False, chain_method="vectorized")
    print(tag, "hmc 256: mean/std rel err vs CPU float64", rel(res.mean, ref["mean"]),
          rel(res.std, ref["std"]), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("save", "compare"):
        sys.exit("usage: gpu_precision_check.py save|compare")
    main(sys.argv[1])

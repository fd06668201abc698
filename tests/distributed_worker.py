"""One process of the two-process run in ``tests/test_distributed.py`` (not a test file).

Usage: ``python distributed_worker.py PROCESS_ID PORT OUT.npz``. Joins a two-process
``jax.distributed`` group on localhost (CPU, gloo collectives), runs
:func:`build_and_sample` and writes the Result's moments, draws and diagnostics to
``OUT.npz.PROCESS_ID.npz`` (every process returns the whole run).
"""

import sys

import numpy as np

NUM_CHAINS = 4


def build_and_sample():
    """Exact draws, 4 chains, on an 8x8 sparse-view CT posterior with a GMRF prior
    (float32): the cheapest method to compile; the runner's split, keys, Welford merge
    and gathering are the same for every method."""
    import jax
    import uqrecon
    from uqrecon.models import GMRF, Gaussian
    from uqrecon.operators import sparse_view
    from uqrecon.phantoms import shepp_logan

    A = sparse_view((8, 8), num_angles=6)
    x = shepp_logan((8, 8))
    y = A(x) + 0.02 * jax.random.normal(jax.random.PRNGKey(1), A.range_shape)
    post = uqrecon.Posterior(Gaussian(A, y, sigma=0.02), GMRF((8, 8), delta=20.0))
    return uqrecon.sample(post, method="exact", num_chains=NUM_CHAINS,
                          num_samples=80, seed=5, progress=False,
                          chain_method="sequential", chunk_size=40)


def main():
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid)
    res = build_and_sample()
    np.savez(f"{out}.{pid}.npz", mean=res.mean, variance=res.variance, draws=res.draws,
             rhat=res.diagnostics["rhat"], num_devices=res.diagnostics["num_devices"])
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

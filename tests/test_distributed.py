"""Chains over several JAX processes (``jax.distributed``): the run split over two local
CPU processes must be the single-process run.

Two worker processes (``tests/distributed_worker.py``) join a ``jax.distributed`` group
on localhost with gloo collectives; each runs 2 of the 4 chains (exact draws) and gathers the
others'. Reference: the same call in this (single) process. The chains use the same keys
and the same sequential per-chain program, so the draws, moments and R-hat must agree
bit for bit (measured: they do).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(out):
    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), port, str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"worker {i} failed:\n{logs[i][-3000:]}"
    return [dict(np.load(f"{out}.{i}.npz")) for i in range(2)]


def test_two_processes_reproduce_the_single_process_run(tmp_path):
    """Each process runs its own half of the chains and returns the whole run.

    Catches: a process running chains with another share's keys (both processes would
    return chains 0-1 twice: the draws of chains 2-3 differ from the single-process run's),
    moments not merged across processes (the mean of 2 chains differs from that of 4 by
    far more than rounding), draws / R-hat / device counts of one process only, and the
    two processes returning different results.
    """
    sys.path.insert(0, str(WORKER.parent))
    try:
        from distributed_worker import build_and_sample
    finally:
        sys.path.pop(0)
    single = build_and_sample()
    runs = _run_two_processes(tmp_path / "run")
    for r in runs:
        assert r["draws"].shape == single.draws.shape          # (4 chains, 80, 8, 8)
        np.testing.assert_array_equal(r["draws"], single.draws)
        np.testing.assert_array_equal(r["mean"], single.mean)
        np.testing.assert_array_equal(r["variance"], single.variance)
        np.testing.assert_array_equal(r["rhat"], single.diagnostics["rhat"])
        assert int(r["num_devices"]) == 2 * single.diagnostics["num_devices"]
    # the chains really differ from one another (a share run twice would be caught above)
    assert not np.allclose(single.draws[0], single.draws[2])


def test_chains_must_split_evenly_over_processes(monkeypatch):
    """An uneven split is refused with a message naming num_chains (it would silently
    drop or duplicate chains)."""
    import jax
    from uqrecon.inference import runner

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert runner._process_share(4) == (2, 2)
    with pytest.raises(ValueError, match="num_chains"):
        runner._process_share(3)

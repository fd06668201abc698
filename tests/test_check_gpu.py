"""scripts/check_gpu.py, the post-install check of ``pip install -e .[cuda]``: it runs
on the CPU at a tiny size with ``--allow-cpu`` (timings, adjoint test, MALA sanity),
refuses to pass without a GPU otherwise, and its sanity checks flag bad results."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_gpu.py"
TINY = ["--size", "16", "--views", "8", "--repeat", "2", "--post-size", "8",
        "--chains", "4", "--num-warmup", "50", "--num-samples", "50"]


def _run(*argv):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True,
                          text=True, env=env, timeout=900)


def test_runs_on_cpu_at_a_tiny_size(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("--allow-cpu", *TINY, "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "devices: cpu" in proc.stdout and proc.stdout.rstrip().endswith("OK")
    res = json.loads(out.read_text())
    assert list(res) == ["cpu"]
    cpu = res["cpu"]
    assert cpu["projector_shape"] == [16, 16] and cpu["chains"] == 4
    assert cpu["forward_ms"] > 0 and cpu["adjoint_ms"] > 0 and cpu["mala_run_s"] > 0
    assert cpu["adjoint_mismatch"] < 1e-3
    assert 0.2 < cpu["mala_acceptance"] < 0.95
    assert cpu["mala_mean_rel_error"] < 0.1


def test_fails_clearly_without_a_gpu():
    proc = _run(*TINY)
    assert proc.returncode == 2
    assert "no GPU backend" in proc.stderr and "--allow-cpu" in proc.stderr


def test_sanity_checks_flag_bad_results():
    spec = importlib.util.spec_from_file_location("check_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    good = {"adjoint_mismatch": 1e-7, "mala_acceptance": 0.6, "mala_mean_rel_error": 0.02}
    assert mod.sanity(good, "gpu") == []
    bad = {"adjoint_mismatch": 0.5, "mala_acceptance": 0.01, "mala_mean_rel_error": 0.5}
    problems = mod.sanity(bad, "gpu")
    assert len(problems) == 3 and all(p.startswith("gpu:") for p in problems)
    assert len(mod.sanity({**good, "mala_acceptance": None}, "gpu")) == 1

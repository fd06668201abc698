"""Suite-wide hygiene.

Every test module compiles its own XLA programs (other shapes, other posteriors), and
JAX keeps each compiled executable, with its constants, for the life of the process.
Over the whole suite one process grew past 3 GB and CI's run died in XLA's compiler
(a segmentation fault in ``backend_compile_and_load``, 380 tests in). Dropping the
caches after each module keeps a worker's memory at what one module needs; no test
relies on a program compiled by another module (the compile-once tests count
compilations within one test).

Gold-standard caches go to a fresh directory per test process, never to the user's
``~/.cache``: a reference cached by an earlier run must not let a test pass without
computing it, and two xdist workers must not share one.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
import resource
import tempfile

import jax
import pytest

os.environ["UQRECON_CACHE"] = tempfile.mkdtemp(prefix="uqrecon-test-cache-")

# Test files, longest-running first (per-file CPU seconds of a full run, UQRECON_CPU_TIMES
# below, re-measured Nov 29 2026; the rest, cheaper than test_posterior's ~20 s, in their
# earlier order). ``make test`` runs
# ``-n 2 --dist loadfile --no-loadscope-reorder``: xdist then hands whole files to the two
# workers in collection order (by default it sorts them by number of tests, which put
# 30-75 s files such as test_x64, test_gibbs and test_chain_method last), so
# longest-first leaves only short files for the end and the workers finish together.
# A file missing here (a new one) is collected first: an unknown cost is treated as a
# large one. Order only: no test depends on it, and a stale list costs time, not
# correctness.
SLOWEST_FIRST = """
    test_samplers test_notebooks test_deep test_gsm test_complex test_problems_cli
    test_compile_once test_chain_method test_laplace test_exact test_mclmc test_variational
    test_gold test_catalogue test_interop test_whitening test_tomo test_sbc test_runner
    test_mri test_bootstrap test_map test_chees test_conformal test_gibbs test_structure
    test_calibration test_x64 test_distributed test_report test_posterior
    test_check_gpu test_operators_base test_priors test_likelihoods test_docs
    test_masks test_compare test_risk test_diagnostics test_metrics test_prox
    test_result test_phantoms test_linalg test_fbp test_odl_bridge_x64
    test_report_browser test_layering
""".split()


def pytest_collection_modifyitems(session, config, items):
    """Files in SLOWEST_FIRST order (unlisted ones first)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # stable: tests keep their order within a file, and files stay contiguous
    items.sort(key=lambda item: rank.get(Path(str(item.path)).stem, -1))


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs_after_each_module():
    yield
    jax.clear_caches()
    gc.collect()


# Per-file CPU seconds (user + sys, this process and its reaped children such as notebook
# kernels), written when UQRECON_CPU_TIMES names a directory: one JSON per process
# (xdist worker). The machine is shared, so CPU time, not wall time, is what a cut is
# measured by; see tests/cpu_times.py to sum the files.
_CPU_DIR = os.environ.get("UQRECON_CPU_TIMES")
_cpu_by_file: dict[str, float] = {}
_cpu_last = [None]


def _cpu_now() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


# With UQRECON_CPU_TIMES set, the seconds JAX spends tracing, lowering and compiling
# (its own monitoring events) are summed per file too, under "<file>:compile": the share
# of a file's CPU that compilation takes decides whether a cut should aim at fewer
# programs or at less work per program.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_secs = [0.0]


def _on_duration(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_secs[0] += duration


if _CPU_DIR is not None:
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _CPU_DIR is None:
        yield
        return
    if _cpu_last[0] is None:
        _cpu_last[0] = _cpu_now()
    _compile_secs[0] = 0.0
    yield
    now = _cpu_now()
    stem = Path(str(item.path)).stem
    _cpu_by_file[stem] = _cpu_by_file.get(stem, 0.0) + now - _cpu_last[0]
    key = stem + ":compile"
    _cpu_by_file[key] = _cpu_by_file.get(key, 0.0) + _compile_secs[0]
    _cpu_last[0] = now
    if nextitem is None or Path(str(nextitem.path)).stem != stem:
        _write_cpu_times()      # after each file, so an interrupted run still reports


def _write_cpu_times():
    Path(_CPU_DIR).mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(_CPU_DIR) / f"cpu-{worker}-{os.getpid()}.json", "w") as f:
        json.dump(_cpu_by_file, f, indent=1, sort_keys=True)

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

# One BLAS thread per test process, set before numpy loads OpenBLAS (``import jax`` below
# loads it). ``make test`` runs two xdist workers on two cores; OpenBLAS's default two
# threads per process then busy-wait against the other worker, and tests that make many
# small BLAS calls crawl. Measured on the 2-core machine, Nov 30 2026: the float64 scipy
# L-BFGS-B reference of test_variational's low-rank test (~20,000 iterations on 256 x 256
# matrices) 6.6 s idle; beside two busy processes 28.2 s with the default, 8.9 s with one
# thread; in the full suite 112 s before, 32 s after. Inherited by what the tests spawn (notebook
# kernels, CLI and distributed workers). An explicit setting in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import jax  # noqa: E402
import pytest

os.environ["UQRECON_CACHE"] = tempfile.mkdtemp(prefix="uqrecon-test-cache-")

# XLA's CPU backend emits fused loops with its legacy emitters in the test processes (and
# in what they spawn: notebook kernels, CLI and distributed workers inherit XLA_FLAGS).
# Read once, when the backend starts, so it holds for the whole process. Like the
# optimisation level below it changes how the compiled code is generated and rounds
# (float32 ulps), not what it computes, and it makes compiling cheaper. Measured on the
# 2-core machine, Nov 30 2026, CPU seconds of one pytest process (default -> legacy
# emitters): test_exact + test_laplace 160 -> 110, test_gsm 193 -> 173, test_mclmc +
# test_runner 125 -> 121, test_catalogue 64 -> 55; no file got slower. The whole suite
# (clean clone, 2 workers, load 2-3): 2,495 -> 1,365 CPU-s, 21:26 -> 11:48 wall. It
# surfaced a real bug (catalogue references accepted by fingerprint were graded as
# another model) and an SK-ROCK chain stuck outside its box (test_samplers).
# UQRECON_TEST_XLA_DEFAULT=1 keeps XLA's defaults (this flag and every file's level).
if os.environ.get("UQRECON_TEST_XLA_DEFAULT", "") in ("", "0"):
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in ("--xla_cpu_use_fusion_emitters=false", os.environ.get("XLA_FLAGS", ""))
        if f)

# Test files, longest-running first (per-file CPU seconds of full runs, UQRECON_CPU_TIMES
# below, re-measured Nov 29 2026, each file at its XLA level, see FAST_COMPILE_FILES).
# ``make test`` runs ``-n 2 --dist loadfile --no-loadscope-reorder``: xdist then hands
# whole files to the two workers in collection order (by default it sorts them by number
# of tests, which put 30-75 s files such as test_x64, test_gibbs and test_chain_method
# last), so longest-first leaves only short files for the end and the workers finish
# together.
# A file missing here (a new one) is collected first: an unknown cost is treated as a
# large one. Order only: no test depends on it, and a stale list costs time, not
# correctness.
SLOWEST_FIRST = """
    test_samplers test_notebooks test_gsm test_problems_cli test_chain_method test_mclmc
    test_complex test_laplace test_deep test_exact test_variational test_compile_once
    test_catalogue test_tomo test_whitening test_runner test_gold test_interop
    test_chees test_sbc test_conformal test_structure test_accounting test_operators_base
    test_check_gpu test_gibbs test_report test_distributed test_calibration test_map test_bootstrap
    test_docs test_x64 test_mri test_priors test_prox test_posterior test_likelihoods
    test_report_browser test_linalg test_fbp test_phantoms test_odl_bridge_x64
    test_compare test_risk test_diagnostics test_metrics test_gaussians test_result
    test_layering test_masks
""".split()


def pytest_collection_modifyitems(session, config, items):
    """Files in SLOWEST_FIRST order (unlisted ones first)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # stable: tests keep their order within a file, and files stay contiguous
    items.sort(key=lambda item: rank.get(Path(str(item.path)).stem, -1))


# XLA's optimisation level per file. About 60 % of the suite's CPU is XLA compiling
# programs that then run for milliseconds (UQRECON_CPU_TIMES below records it per file),
# so the files listed here compile with ``jax_disable_most_optimizations`` (backend
# optimisation level 0, no expensive LLVM passes). It changes how fast the compiled code
# runs and its rounding (float32 ulps), not what it computes. Chosen by measurement: two
# full runs on Nov 29 2026, every file at the default level and every file at level 0,
# CPU seconds per file (default -> level 0): test_deep 206 -> 81, test_laplace 131 -> 82,
# test_compile_once 111 -> 78, test_complex 108 -> 85, test_problems_cli 126 -> 107,
# test_gold 71 -> 42, test_bootstrap 37 -> 19, test_mri 34 -> 17, test_sbc 46 -> 33,
# test_map 34 -> 23, test_interop 52 -> 41, test_x64 25 -> 19, smaller files 5-40 % less.
# Left at the default level:
# - files whose compiled code runs long enough that optimising it pays: test_samplers
#   361 -> 680, test_mclmc 85 -> 232, test_gsm 162 -> 218, test_variational 79 -> 100,
#   test_whitening 51 -> 73, test_gibbs 27 -> 39 (and any new file);
# - files whose subject is the compiled program's exact rounding: bit-for-bit equality
#   of sharded and unsharded chains (test_runner, test_chain_method, test_distributed),
#   the catalogue's posterior hashes (test_catalogue), and the projector kernels, whose
#   node-index arithmetic is written to survive XLA's FMA contraction, which only an
#   optimised compile can check (test_tomo, test_operators_base, test_fbp).
# UQRECON_TEST_XLA_DEFAULT=1 compiles every file at the default level.
FAST_COMPILE_FILES = set("""
    test_deep test_laplace test_compile_once test_complex test_problems_cli test_gold
    test_accounting test_bootstrap test_mri test_sbc test_map test_interop test_x64 test_risk
    test_posterior test_priors test_linalg test_phantoms test_likelihoods test_prox
    test_metrics test_result test_compare test_gaussians
""".split())


@pytest.fixture(autouse=True, scope="module")
def _xla_optimisation_level(request):
    fast = (Path(str(request.path)).stem in FAST_COMPILE_FILES
            and os.environ.get("UQRECON_TEST_XLA_DEFAULT", "") in ("", "0"))
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", fast or before)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


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
_backend_secs = [0.0]     # of which XLA's backend compile (the rest is JAX tracing)


def _on_duration(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_secs[0] += duration
    if event == _COMPILE_EVENTS[2]:
        _backend_secs[0] += duration


if _CPU_DIR is not None:
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _CPU_DIR is None:
        yield
        return
    if _cpu_last[0] is None:
        _cpu_last[0] = _cpu_now()
    _compile_secs[0] = _backend_secs[0] = 0.0
    yield
    now = _cpu_now()
    stem = Path(str(item.path)).stem
    _cpu_by_file[stem] = _cpu_by_file.get(stem, 0.0) + now - _cpu_last[0]
    key = stem + ":compile"
    _cpu_by_file[key] = _cpu_by_file.get(key, 0.0) + _compile_secs[0]
    key = stem + ":backend"
    _cpu_by_file[key] = _cpu_by_file.get(key, 0.0) + _backend_secs[0]
    _cpu_last[0] = now
    if nextitem is None or Path(str(nextitem.path)).stem != stem:
        _write_cpu_times()      # after each file, so an interrupted run still reports


def _write_cpu_times():
    Path(_CPU_DIR).mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(_CPU_DIR) / f"cpu-{worker}-{os.getpid()}.json", "w") as f:
        json.dump(_cpu_by_file, f, indent=1, sort_keys=True)

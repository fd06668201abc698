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
import os
from pathlib import Path
import tempfile

import jax
import pytest

os.environ["UQRECON_CACHE"] = tempfile.mkdtemp(prefix="uqrecon-test-cache-")

# Test files, longest-running first (from per-test durations of full CI runs and per-file
# CPU times, Nov 2026; files never measured are ordered by test count). ``make test`` runs
# ``-n 2 --dist loadfile --no-loadscope-reorder``: xdist then hands whole files to the two
# workers in collection order (by default it sorts them by number of tests, which put
# 30-75 s files such as test_x64, test_gibbs and test_chain_method last), so
# longest-first leaves only short files for the end and the workers finish together.
# A file missing here (a new one) is collected first: an unknown cost is treated as a
# large one. Order only: no test depends on it, and a stale list costs time, not
# correctness.
SLOWEST_FIRST = """
    test_samplers test_gsm test_compile_once test_problems_cli test_laplace test_deep
    test_mclmc test_chain_method test_gold test_calibration test_variational
    test_conformal test_bootstrap test_structure test_x64 test_gibbs test_sbc test_runner
    test_report test_exact test_map test_posterior test_operators_base test_priors
    test_likelihoods test_tomo test_masks test_mri test_compare test_risk test_diagnostics
    test_metrics test_prox test_result test_phantoms test_linalg test_fbp
    test_odl_bridge_x64 test_layering
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

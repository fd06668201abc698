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
import tempfile

import jax
import pytest

os.environ["UQRECON_CACHE"] = tempfile.mkdtemp(prefix="uqrecon-test-cache-")


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs_after_each_module():
    yield
    jax.clear_caches()
    gc.collect()

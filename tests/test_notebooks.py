"""Executes every saved notebook, ``notebooks/*.ipynb``, in small mode.

Each notebook runs top to bottom with nbclient in a fresh ``python3`` kernel, with
``UQRECON_NOTEBOOK_SIZE=small`` (16x16 images, few draws, tiny networks) and the kernel's
working directory a temporary folder (nothing is written into the repository). The
kernel imports uqrecon from this checkout (its root is put first on ``PYTHONPATH``).

What it catches: any cell that raises — a renamed or removed API the notebooks call
(function, keyword, Result field, diagnostics key), a changed return type, a shape or
dtype error, an import that broke — i.e. notebooks that no longer run against the
library as it is. What it does not check: the numbers or figures in the saved outputs
(those are from the full-size run made by ``notebooks/make_gallery.py`` /
``make_trust_notebook.py`` / ``make_deep_notebook.py``), nor running time.

The kernels compile with XLA's CPU backend at optimisation level 0 (``KERNEL_XLA_FLAGS``):
at 16x16 a notebook's time is XLA compiling, not running, and the flag changes how fast
the compiled code is, not what it computes (up to rounding); it cannot make a raising cell
pass.

Skipped only when nbclient, nbformat or ipykernel cannot be imported (they are in the
``test`` extra, so CI has them).
"""

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))

# Measured (kernel CPU seconds, small mode, one kernel at a time on the shared 2-core dev
# machine, Nov 2026; without -> with these flags): deep_uq 140.8 -> 42.6, mri 47.6 -> 32.4,
# quickstart 47.8 -> 40.8. Not used for the pytest processes themselves: there
# --xla_backend_optimization_level=0 cut tests/test_laplace.py from 156 to 92 CPU s but
# more than doubled tests/test_mclmc.py (108 -> 246 CPU s, long runs of compiled code),
# and --xla_llvm_disable_expensive_passes alone saved nothing measurable on either.
KERNEL_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("UQRECON_NOTEBOOK_SIZE", "small")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_FLAGS", " ".join(
        f for f in (KERNEL_XLA_FLAGS, os.environ.get("XLA_FLAGS", "")) if f))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{os.path.basename(path)} failed in small mode:\n{str(e)[-3000:]}",
                    pytrace=False)

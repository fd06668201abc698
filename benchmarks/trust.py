"""Can we trust the uncertainty? All of issue 12's benchmarks, one after the other.

Runs, each with its default settings and writing its own results file:

- ``trust_calibration.py``: replicated calibration of exact / Laplace / mean-field VI
  (well specified and misspecified) and conformal repair over independent calibration
  sets -> ``results/trust_calibration.md``;
- ``trust_structure.py``: BUQO vs the sampling test vs the naive rule on planted lesions
  (size and power) -> ``results/trust_structure.md``;
- ``trust_bootstrap.py``: equivariant vs naive bootstrap of FBP and MAP, ROI risk and
  abstention -> ``results/trust_bootstrap.md``.

    JAX_PLATFORMS=cpu python benchmarks/trust.py            # ~25 min on 2 cores
    JAX_PLATFORMS=cpu python benchmarks/trust.py structure  # one part
"""

from __future__ import annotations

import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("calibration", "structure", "bootstrap")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parts = argv or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"trust.py: unknown part(s) {bad}; choose among {PARTS}")
    sys.path.insert(0, HERE)
    for part in parts:
        t = time.perf_counter()
        print(f"== trust_{part}.py ==", flush=True)
        importlib.import_module(f"trust_{part}").main([])
        print(f"== trust_{part}.py: {time.perf_counter() - t:.0f} s ==", flush=True)


if __name__ == "__main__":
    main()

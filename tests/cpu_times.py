"""Sum the per-file CPU seconds written by tests/conftest.py (UQRECON_CPU_TIMES=DIR).

Usage: python tests/cpu_times.py DIR [DIR_BEFORE]  -- prints files by CPU, slowest first,
with the seconds JAX spent tracing, lowering and compiling in each (where recorded).
"""

import json
import sys
from pathlib import Path


def load(d):
    out = {}
    for f in Path(d).glob("cpu-*.json"):
        for k, v in json.loads(f.read_text()).items():
            out[k] = out.get(k, 0.0) + v
    return out


if __name__ == "__main__":
    now = load(sys.argv[1])
    before = load(sys.argv[2]) if len(sys.argv) > 2 else {}
    files = {k: v for k, v in now.items() if ":" not in k}
    for k, v in sorted(files.items(), key=lambda kv: -kv[1]):
        b = before.get(k)
        c = now.get(k + ":compile")
        extra = f"  backend {now[k + ':backend']:7.1f}" if k + ":backend" in now else ""
        print(f"{k:32s} {v:8.1f}" + (f"  compile {c:7.1f}" if c is not None else "") + extra
              + (f"  before {b:8.1f}" if b is not None else ""))
    compiled = sum(v for k, v in now.items() if k.endswith(":compile"))
    backend = sum(v for k, v in now.items() if k.endswith(":backend"))
    print(f"{'TOTAL':32s} {sum(files.values()):8.1f}  compile {compiled:7.1f}"
          f"  backend {backend:7.1f}"
          + (f"  before {sum(v for k, v in before.items() if ':' not in k):8.1f}"
             if before else ""))

"""Sum the per-file CPU seconds written by tests/conftest.py (UQRECON_CPU_TIMES=DIR).

Usage: python tests/cpu_times.py DIR [DIR_BEFORE]  -- prints files by CPU, slowest first.
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
    for k, v in sorted(now.items(), key=lambda kv: -kv[1]):
        b = before.get(k)
        print(f"{k:32s} {v:8.1f}" + (f" {b:8.1f}" if b is not None else ""))
    print(f"{'TOTAL':32s} {sum(now.values()):8.1f}"
          + (f" {sum(before.values()):8.1f}" if before else ""))

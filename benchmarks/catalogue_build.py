"""(Re)build the catalogue references that ship with uqrecon and print what each took.

Usage::

    python benchmarks/catalogue_build.py                 # every shipped entry
    python benchmarks/catalogue_build.py NAME [NAME ...]  # these entries (ships them)
    python benchmarks/catalogue_build.py --out DIR ...    # write elsewhere

Each reference is built from scratch by :func:`uqrecon.catalogue.build` (exact Gaussian
posterior, or the exact MCMC method with >= 4 x 2,500 draws extended until posteriordb's
criteria hold) and written in compact form to ``uqrecon/catalogue_data/NAME.npz``.
Times are wall-clock on whatever machine runs it (compilation included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from uqrecon import catalogue


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="entries (default: every shipped one)")
    p.add_argument("--out", default=catalogue.DATA_DIR, help="output folder")
    args = p.parse_args(argv)
    todo = args.names or catalogue.shipped()
    if not todo:
        p.error("no entries given and none shipped")
    failed = 0
    print("| entry | method | build s | certificate | max R-hat | min bulk / tail ESS "
          "| draws | file kB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in todo:
        path = os.path.join(args.out, f"{name}.npz")
        t0 = time.perf_counter()
        ref = catalogue.build(name, path=path)
        wall = time.perf_counter() - t0
        info = ref.provenance["catalogue"]
        cert = info["certificate"]
        failed += not cert["pass"]
        rhat = cert.get("max_rhat", {}).get("value")
        bulk = cert.get("min_ess_bulk", {}).get("value")
        tail = cert.get("min_ess_tail", {}).get("value")
        stats = ("-", "-") if rhat is None else (f"{rhat:.4f}", f"{bulk:.0f} / {tail:.0f}")
        draws = info["num_draws_total"] or "exact"
        print(f"| {name} | {info['gold_method']} | {wall:.1f} | "
              f"{'pass' if cert['pass'] else 'FAIL'} | {stats[0]} | {stats[1]} | {draws} | "
              f"{os.path.getsize(path) / 1024:.0f} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

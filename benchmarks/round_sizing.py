"""How ``gold.reference`` sizes its rounds: a rule replayed on measured R-hat trajectories.

A reference runs a first round, diagnoses all pixels, and while the criteria (split R-hat
< 1.01, bulk and tail ESS >= 400 on every pixel) fail, runs another round sized by
``gold._next_round``. What that rule costs depends on how the largest of the pixels'
R-hats falls with the run's length, which only long runs show. This script

1. for each of ``--seeds``, runs the 128x128 TV gold standard (``--size``; ``--views``
   defaults to ``size * 30 // 128`` as in ``gpu.py``) with ``gold.reference``'s
   first-round settings (GSM with its HMC moves, 4 chains, 100 warmup sweeps, chunks of
   100) for ``--draws`` draws per chain, and records max R-hat and min bulk / tail ESS
   of the first n draws for every n in steps of 100 (``--out``, JSON; the draws
   themselves are not kept);
2. replays round-sizing rules on those trajectories: the first round's n, then the rule's
   next n, until the criteria hold at some n, counting sweeps and diagnoses, and prices
   them with a sweep's and a diagnosis's cost (``--sweep-s``, ``--diag-s``: per 4-chain
   sweep, and per draw per chain diagnosed; the defaults come from 128x128 on this
   2-core CPU, ``benchmarks/results/gold_tv.md`` section 1e says how), plus
   ``--round-s`` of set-up a round (an estimate).

The replay is an estimate; ``benchmarks/gpu.py --parts gold`` times the real thing.

Run: ``JAX_PLATFORMS=cpu python benchmarks/round_sizing.py --seeds 1,2 --out traj.json``
then ``python benchmarks/round_sizing.py --replay traj.json`` (several files may be
given, comma-separated).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from uqrecon import gold


def trajectory(post, seed, draws, warmup=100, step=100):
    """Max R-hat, min bulk ESS and min tail ESS of the first n draws, n = step, 2 step, ...
    of one run with ``gold.reference``'s first-round settings; and its seconds."""
    import uqrecon
    from uqrecon.diagnostics import diagnose
    t = time.perf_counter()
    res = uqrecon.sample(post, "gsm", num_chains=4, num_warmup=warmup, num_samples=draws,
                         seed=seed, chunk_size=step, diagnose=False, progress=False,
                         **gold.gsm_reference_options(post))
    wall = time.perf_counter() - t
    d = np.asarray(res.draws)
    rows = {}
    for n in range(step, draws + 1, step):
        g = diagnose(d[:, :n])
        rows[str(n)] = [float(np.max(g["rhat"])), float(np.min(g["ess_bulk"])),
                        float(np.min(g["ess_tail"]))]
        print(seed, n, [f"{v:.4f}" for v in rows[str(n)]], flush=True)
    return {"stats": rows, "wall_s": wall, "sweeps": warmup + draws}


def former_rule(have, unit, max_rhat, min_ess_bulk, min_ess_tail, rhat_max, min_ess):
    """``gold._next_round`` as of commit ca7bce5: the same scaling plus 20 %."""
    factor = max(1.0, min_ess / max(min_ess_bulk, 1e-12), min_ess / max(min_ess_tail, 1e-12),
                 (max_rhat - 1.0) / (rhat_max - 1.0))
    missing = 1.2 * factor * have - have
    return min(max(math.ceil(missing / unit), 1), max(have // unit, 1)) * unit


def replay(stats, rule, first=500, unit=100, warmup=100, sweep_s=0.275, diag_s=0.0065,
           round_s=1.5):
    """``(draws per chain, rounds, seconds)`` of a reference whose rounds ``rule`` sizes,
    or None if the trajectory ends first."""
    n, rounds, seconds = first, 0, warmup * sweep_s
    while str(n) in stats:
        rhat, bulk, tail = stats[str(n)]
        rounds += 1
        seconds += diag_s * n + round_s
        if rhat < 1.01 and bulk >= 400 and tail >= 400:
            return n, rounds, seconds + n * sweep_s
        n += rule(n, unit, rhat, bulk, tail, 1.01, 400)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="", help="seeds to run, e.g. 1,2,4")
    ap.add_argument("--draws", type=int, default=1200)
    ap.add_argument("--size", type=int, default=128, help="image side (sparse-view CT)")
    ap.add_argument("--views", type=int, default=None, help="default: size * 30 // 128")
    ap.add_argument("--out", default="round_sizing.json")
    ap.add_argument("--replay", default="", help="trajectory JSON files to replay (their "
                    "runs' names must differ: a later file's 'seed N' replaces an earlier's)")
    ap.add_argument("--sweep-s", type=float, default=0.275)
    ap.add_argument("--diag-s", type=float, default=0.0065)
    ap.add_argument("--round-s", type=float, default=1.5)
    a = ap.parse_args()
    if a.seeds:
        from gold_tv import tv_posterior     # benchmarks/ is the script's folder
        if a.draws % 100:
            raise ValueError(f"--draws must be a multiple of 100 (the chunk), got {a.draws}")
        _, post = tv_posterior(a.size, a.views or a.size * 30 // 128)
        out = {}
        for seed in (int(s) for s in a.seeds.split(",")):
            out[f"seed {seed}"] = trajectory(post, seed, a.draws)
            with open(a.out, "w") as fh:
                json.dump(out, fh, indent=1)
    if a.replay:
        runs = {}
        for path in a.replay.split(","):
            with open(path) as fh:
                runs.update(json.load(fh))
        rules = {"former (+20 %)": former_rule, "gold._next_round": gold._next_round}
        cost = dict(sweep_s=a.sweep_s, diag_s=a.diag_s, round_s=a.round_s)
        print("| first round | rule | " + " | ".join(runs) + " | runs converged | mean s | max s |")
        print("|---|---|" + "---|" * (len(runs) + 3))
        for first in (400, 500, 600, 700):
            for name, rule in rules.items():
                got = [replay(r["stats"], rule, first=first, **cost) for r in runs.values()]
                cells = ["-" if g is None else f"{g[0]} / {g[1]} / {g[2]:.0f}" for g in got]
                # mean and max over the runs whose trajectory reaches the criteria under
                # this rule (their number is printed: rows may cover different runs)
                secs = [g[2] for g in got if g is not None]
                summary = (f"{len(secs)} | {np.mean(secs):.0f} | {max(secs):.0f}" if secs
                           else "0 | - | -")
                print(f"| {first} | {name} | " + " | ".join(cells) + f" | {summary} |")


if __name__ == "__main__":
    main()

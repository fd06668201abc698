"""What the ray-transform benchmarks share: their operators, their case loop, their output.

``operators.py``, ``likelihood_gradient.py`` and ``ray_kernels.py`` time the same
parallel- and fan-beam operators over ``size/views`` cases and write one markdown table;
``operators_match.py`` writes one too. (Imported by sibling scripts: a script's own folder
is first on ``sys.path``.)
"""

from __future__ import annotations

import argparse
import pathlib

from uqrecon.operators.tomo import fan_beam, sparse_view


def ct_operator(kind: str, n: int, views: int, kernel: str = "auto"):
    """The benchmarks' ``n x n`` operator with ``views`` views: parallel beam, or fan beam
    with source and detector at 4 and 2 image half-widths from the centre."""
    if kind == "parallel":
        return sparse_view((n, n), views, kernel=kernel)
    return fan_beam((n, n), views, src_radius=4.0, det_radius=2.0, kernel=kernel)


def write_report(text: str, path) -> None:
    """Print the table and write it to ``path`` (parent folders created)."""
    print(text)
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def run_cases(description: str, bench, table, *, cases, reps: int, out: str, argv=None,
              extra=None):
    """Parse ``--cases size/views ... --geometries ... --reps --out`` (plus ``extra``'s
    arguments), run ``bench(kind, n, views, reps, args)`` for every case and geometry
    (it returns a row or a list of rows), and write ``table(rows, reps)``.

    Returns:
        The rows.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cases", nargs="+", default=cases, help="size/views, e.g. 128/30")
    parser.add_argument("--geometries", nargs="+", default=["parallel", "fan"])
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--out", default=out)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases:
        n, views = (int(v) for v in case.split("/"))
        for kind in args.geometries:
            got = bench(kind, n, views, args.reps, args)
            for row in got if isinstance(got, list) else [got]:
                rows.append(row)
                print(row, flush=True)
    write_report(table(rows, args.reps), args.out)
    return rows

"""How closely the JAX ray transforms match ODL's astra_cpu RayTransform.

Relative L2 difference ``||A_jax x - A_astra x|| / ||A_astra x||`` on the modified
Shepp-Logan phantom, for every geometry case of the test suite at 64, 128 and 256 pixels,
plus FBP (Ram-Lak, Hann) against ODL's ``fbp_op`` on the same sinogram. Prints a markdown
table and writes it to ``--out`` (default ``out/operators_match.md``).

    python benchmarks/operators_match.py [--sizes 64 128 256] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import odl
from odl.applications import tomo

from _ct import write_report
from uqrecon.operators.fbp import fbp
from uqrecon.operators.tomo import RayTransform, fan_beam, limited_angle, sparse_view


def cases(n: int):
    """Geometry cases at ``n`` pixels (the names used in tests/test_tomo.py)."""
    space = odl.uniform_discr([-1, -1], [1, 1], (n, n), dtype="float32")
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, math.pi, 60))
    nonuni = tomo.Parallel2dGeometry(odl.nonuniform_partition(angles),
                                     odl.uniform_partition(-1.5, 1.5, int(1.5 * n) | 1))
    return {
        "full angle, 180 views": lambda: sparse_view((n, n), 180),
        "sparse view, 30 views": lambda: sparse_view((n, n), 30),
        "limited [0, pi/2), 90 views": lambda: limited_angle((n, n), (0, math.pi / 2), 90),
        "limited [0, pi/3), 60 views": lambda: limited_angle((n, n), (0, math.pi / 3), 60),
        f"non-square {3 * n // 4}x{n}, odd det": lambda: sparse_view(
            (3 * n // 4, n), 60, num_det=int(1.3 * n) | 1),
        "non-uniform angles (60)": lambda: RayTransform(space, nonuni),
        "ODL parallel_beam_geometry (90)": lambda: RayTransform(
            space, tomo.parallel_beam_geometry(space, num_angles=90)),
        "fan beam src 4 det 2 (180)": lambda: fan_beam((n, n), 180, 4.0, 2.0),
        "fan beam src 2 det 1, odd det (90)": lambda: fan_beam(
            (n, n), 90, 2.0, 1.0, num_det=int(1.9 * n) | 1),
    }


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def run(sizes):
    forward = jax.jit(lambda op, x: op(x))
    rows = []
    for n in sizes:
        for name, make in cases(n).items():
            op = make()
            odl_op = op.odl_operator("astra_cpu")
            x = np.array(odl.core.phantom.shepp_logan(op.space, modified=True).data, np.float32)
            ref = odl_op(odl_op.domain.element(x.copy()))
            row = {"case": name, "size": "x".join(map(str, op.domain_shape)),
                   "sino": "x".join(map(str, op.range_shape)),
                   "forward": rel(forward(op, jnp.asarray(x)), ref.data)}
            if op.plan.kind == "parallel":
                for filt, odl_name in (("ramlak", "Ram-Lak"), ("hann", "Hann")):
                    want = tomo.fbp_op(odl_op, filter_type=odl_name)(ref).data
                    got = fbp(op, jnp.asarray(np.array(ref.data)), filt)
                    row[f"fbp {filt}"] = rel(got, want)
                if name.startswith("full angle"):
                    row["fbp vs phantom"] = rel(fbp(op, jnp.asarray(np.array(ref.data))), x)
            rows.append(row)
            print(_fmt_row(row), flush=True)
    return rows


COLS = ["case", "size", "sino", "forward", "fbp ramlak", "fbp hann", "fbp vs phantom"]


def _fmt(v):
    return f"{v:.2e}" if isinstance(v, float) else ("-" if v is None else str(v))


def _fmt_row(row):
    return "| " + " | ".join(_fmt(row.get(c)) for c in COLS) + " |"


def table(rows) -> str:
    head = ("Relative L2 difference to ODL astra_cpu (forward) and to ODL fbp_op (FBP), "
            "modified Shepp-Logan, float32.\n\n")
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    return head + "\n".join(lines + [_fmt_row(r) for r in rows]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--out", default="out/operators_match.md")
    args = parser.parse_args(argv)
    write_report(table(run(args.sizes)), args.out)


if __name__ == "__main__":
    main()

"""Sub-commands of ``python -m uqrecon.cli`` that work on saved state (nothing re-run).

* ``uqrecon report RUN_DIR``: rebuild a run's report (figures, ``comparison.md``/``.json``
  per model, ``summary.md``/``.json``, ``index.html``) from the ``result_<method>.npz``
  files and ``problem.npz`` the main job saved.
* ``uqrecon compare A.npz B.npz ... [--reference R.npz] [--truth T]``: the verdicts and
  the comparison table of saved Results against a reference (default: the first file),
  printed as markdown (or JSON with ``--json``).

``python -m uqrecon.cli`` with no sub-command still runs the main job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

__all__ = ["run_subcommand", "load_truth", "compare_saved"]


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uqrecon report",
        description="Regenerate a run's report (index.html, summary.md, figures, tables) "
                    "from its saved Results, without re-running anything.")
    p.add_argument("run_dir", help="a run folder written by the main job (e.g. out/demo)")
    p.add_argument("--truth", default=None,
                   help="true image (.npy, or .npz with a 'truth' array) for runs saved "
                        "without problem.npz")
    p.add_argument("--baseline", default=None, help="baseline image (.npy), optional")
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uqrecon compare",
        description="Compare saved Results (result_*.npz, uqrecon.Result.save) against a "
                    "reference: verdicts in words, then the comparison table (markdown).")
    p.add_argument("results", nargs="+", help="saved Results (.npz)")
    p.add_argument("--reference", default=None,
                   help="the reference Result (.npz; default: the first of RESULTS)")
    p.add_argument("--truth", default=None,
                   help="true image: .npy, an .npz with a 'truth' array (e.g. a run's "
                        "problem.npz), or a run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    return p


def load_truth(path):
    """A true image from ``.npy``, an ``.npz`` with a ``truth`` array, or a run folder.

    Args:
        path: file or folder.

    Returns:
        The image (numpy array).
    """
    from .report_html import PROBLEM_FILE
    if os.path.isdir(path):
        path = os.path.join(path, PROBLEM_FILE)
    if not os.path.exists(path):
        raise SystemExit(f"uqrecon: --truth {path!r}: no such file")
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data:
        if "truth" not in data.files:
            raise SystemExit(f"uqrecon: --truth {path!r}: an .npz needs a 'truth' array "
                             f"(has {data.files})")
        return data["truth"]


def _name_of(path: str) -> str:
    stem = os.path.basename(path)
    stem = stem[:-4] if stem.endswith(".npz") else stem
    return stem[len("result_"):] if stem.startswith("result_") else stem


def compare_saved(paths, reference=None, truth=None) -> dict:
    """Verdicts and comparison rows of saved Results against a reference.

    Args:
        paths: saved Result files.
        reference: the reference's file (default: ``paths[0]``).
        truth: true image or None.

    Returns:
        ``{'reference', 'verdicts' (list of Verdict), 'rows' (ordered), 'notes'}``.
    """
    from .report import assess, table_rows, _with_diagnostics
    from .uq.compare import compare_table
    ref_path = reference or paths[0]
    names = [_name_of(p) for p in paths]
    if len(set(names)) < len(names):     # same stems from different folders
        names = [os.path.relpath(p) for p in paths]
    results = {}
    for n, p in zip(names, paths):
        results[n] = _with_diagnostics(_load(p))
    ref_name = _name_of(ref_path) if reference else names[0]
    ref = results[names[0]] if not reference else _with_diagnostics(_load(ref_path))
    table = compare_table(results, ref, truth, reference_name=ref_name).to_dict()
    verdicts = [assess(n, r, row, is_reference=(not reference and n == names[0]))
                for (n, r), row in zip(results.items(), table["rows"])]
    return {"reference": ref_name, "verdicts": verdicts,
            "rows": table_rows(table["rows"], verdicts), "notes": table["notes"]}


def _load(path):
    from .result import Result
    try:
        return Result.load(path)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"uqrecon: {err}") from None


def _report(argv) -> int:
    args = _report_parser().parse_args(argv)
    from .cli import _summary_markdown
    from .report_html import regenerate_run, write_index_html
    truth = None if args.truth is None else load_truth(args.truth)
    baseline = None if args.baseline is None else np.load(args.baseline)
    try:
        summary = regenerate_run(args.run_dir, truth=truth, baseline=baseline)
    except FileNotFoundError as err:
        raise SystemExit(f"uqrecon report: {err}") from None
    with open(os.path.join(args.run_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    with open(os.path.join(args.run_dir, "summary.md"), "w") as fh:
        fh.write(_summary_markdown(summary))
    path = write_index_html(args.run_dir, summary)
    print(f"report regenerated from saved Results: {os.path.abspath(path)}")
    return 0


def _compare(argv) -> int:
    args = _compare_parser().parse_args(argv)
    from .report import table_markdown, verdict_markdown
    truth = None if args.truth is None else load_truth(args.truth)
    try:
        out = compare_saved(args.results, reference=args.reference, truth=truth)
    except ValueError as err:
        raise SystemExit(f"uqrecon compare: {err}") from None
    if args.json:
        print(json.dumps({"reference": out["reference"], "rows": out["rows"],
                          "verdicts": [v.to_dict() for v in out["verdicts"]],
                          "notes": out["notes"]}, indent=2, default=str))
    else:
        print(f"# Comparison against `{out['reference']}`\n\n### Verdicts\n\n"
              f"{verdict_markdown(out['verdicts'])}\n\n### Metrics\n\n"
              f"{table_markdown(out['rows'], out['notes'])}")
    return 0


def run_subcommand(argv) -> int:
    """Run ``argv[0]`` ('report' or 'compare') with the rest of ``argv``.

    Args:
        argv: the command line after the program name.

    Returns:
        The exit status.
    """
    commands = {"report": _report, "compare": _compare}
    if not argv or argv[0] not in commands:
        raise SystemExit(f"uqrecon: unknown sub-command; choose among {sorted(commands)}")
    return commands[argv[0]](list(argv[1:]))


if __name__ == "__main__":
    sys.exit(run_subcommand(sys.argv[1:]))

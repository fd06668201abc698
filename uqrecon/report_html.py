"""One self-contained HTML page per run: ``<out>/index.html``.

The page is offline: figures are embedded as base64 PNG ``data:`` URIs, the style sheet
is inline, there is no script. It shows the problem, then per model a verdict table in
words (converged or not, exactness class, same model as the reference or not, distance to
the reference, over- or under-confidence), the figures written by
:func:`uqrecon.report.write_report`, the comparison table (the column order of
:data:`uqrecon.report.COLUMN_ORDER`, unconverged rows greyed and labelled), timings and
provenance.

``render_index_html(page)`` is pure (a dict in, a string out); ``collect_page`` reads what
the main job wrote (``summary.json``, ``problem.npz``, each model's ``comparison.json`` and
PNGs); ``write_index_html`` does both and writes the file; ``regenerate_run`` rebuilds every
model's report from the saved ``result_<method>.npz`` files without re-running anything.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from typing import Mapping

import numpy as np

from uqrecon.report import COLUMN_ORDER, _json_default, model_title  # noqa: F401

__all__ = ["render_index_html", "collect_page", "write_index_html", "png_data_uri",
           "problem_rows", "load_problem_state", "save_problem_state", "regenerate_run",
           "result_path"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROBLEM_FILE = "problem.npz"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.4em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}th{background:#f3f3f3;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
table.comparison{border-collapse:separate;border-spacing:0}
table.comparison th,table.comparison td{border-width:0 1px 1px 0}table.comparison th{border-top-width:1px}
table.comparison th:first-child,table.comparison td:first-child{position:sticky;left:0;z-index:1;
background-color:#fff;border-left-width:1px}
table.comparison th:first-child{background-color:#f3f3f3}
table.comparison tr.not-converged td:first-child{background-color:#eee}
table.comparison tr.unchecked td:first-child{background-color:#f6f6f6}
tr.not-converged td{background:repeating-linear-gradient(135deg,#eee,#eee 6px,#e2e2e2 6px,#e2e2e2 12px);
color:#666}
tr.unchecked td{background:#f6f6f6;color:#555}
.badge{display:inline-block;padding:0 .45em;border-radius:.3em;font-weight:600;font-size:.85em;white-space:nowrap}
.badge.ok{background:#d7f0dc;color:#155724}.badge.bad{background:#b00020;color:#fff}
.badge.warn{background:#fff1c2;color:#6b4e00}.badge.info{background:#e3ecf8;color:#1d3f73}
.note{font-size:.85em;color:#555}.warn-box{background:#fff6e0;border-left:4px solid #e0a800;padding:.4em .8em}
.bad-box{background:#fdecee;border-left:4px solid #b00020;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#444}
details{margin:.4em 0}summary{cursor:pointer}code,pre{font-size:.85em}pre{white-space:pre-wrap}
"""


# --------------------------------------------------------------------------------------
# problem state saved beside the results (truth and baseline are not in any Result)
# --------------------------------------------------------------------------------------
def save_problem_state(folder, truth, baseline, info: Mapping) -> str:
    """Write ``<folder>/problem.npz``: truth, baseline and a JSON description.

    Args:
        folder: the run folder.
        truth: true image.
        baseline: classical reconstruction (or None).
        info: JSON-able description (name, kind, config, sigma, seed, dtype,
            baseline_name, extent, axis_unit, ...).

    Returns:
        The path written.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, PROBLEM_FILE)
    arrays = {"truth": np.asarray(truth), "info": np.array(json.dumps(dict(info),
                                                                       default=_json_default))}
    if baseline is not None:
        arrays["baseline"] = np.asarray(baseline)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_problem_state(folder) -> tuple:
    """Read ``<folder>/problem.npz`` (see :func:`save_problem_state`).

    Args:
        folder: the run folder.

    Returns:
        ``(truth, baseline or None, info dict)``.

    Raises:
        FileNotFoundError: the run folder has no ``problem.npz`` (a run made before it
            was saved): pass the truth explicitly.
    """
    path = os.path.join(folder, PROBLEM_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} not found: the run folder does not hold the problem's truth "
            "(runs made before it was saved); give the true image with --truth")
    with np.load(path, allow_pickle=False) as data:
        truth = data["truth"]
        baseline = data["baseline"] if "baseline" in data.files else None
        info = json.loads(str(data["info"]))
    return truth, baseline, info


def result_path(model_folder, name: str) -> str:
    """Where the main job saves the Result named ``name`` (``result_<name>.npz``)."""
    return os.path.join(model_folder, "result_" + str(name).replace(" ", "_") + ".npz")


# --------------------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def png_data_uri(path) -> str:
    """``data:image/png;base64,...`` for a PNG file.

    Args:
        path: a PNG file.

    Returns:
        The data URI.

    Raises:
        ValueError: the file is not a PNG.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(PNG_MAGIC):
        raise ValueError(f"{path!r} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _operator_words(info: Mapping) -> str:
    cfg = info.get("config", {}) or {}
    name = info.get("name", "")
    if name == "sparse_view_ct":
        return f"parallel-beam ray transform, {cfg.get('num_angles')} views over [0, 180) deg"
    if name == "limited_angle_ct":
        lo, hi = cfg.get("angle_range", [0.0, math.pi / 2])
        return (f"parallel-beam ray transform, {cfg.get('num_angles')} views over "
                f"[{math.degrees(lo):.0f}, {math.degrees(hi):.0f}) deg")
    if name == "fan_beam_ct":
        return (f"fan-beam ray transform (flat detector), {cfg.get('num_angles')} views "
                "over 360 deg")
    if name == "mri":
        coils = cfg.get("num_coils")
        return (f"Cartesian MRI, {cfg.get('acceleration')}x undersampling, "
                f"{cfg.get('mask')} mask" + (f", {coils} coils" if coils else ", single coil"))
    return str(info.get("operator", name or "unknown"))


def problem_rows(info: Mapping) -> list:
    """(label, value) pairs describing the problem, for the page's first table.

    Args:
        info: the ``problem.npz`` description (see :func:`save_problem_state`).

    Returns:
        A list of ``(label, value)`` strings.
    """
    cfg = info.get("config", {}) or {}
    shape = info.get("shape")
    rows = [("problem", info.get("name", "?")), ("forward operator", _operator_words(info))]
    if shape:
        rows.append(("image", f"{shape[0]} x {shape[1]} pixels"
                     + (f", phantom {cfg['phantom']}" if cfg.get("phantom") else "")))
    ext = info.get("extent")
    if ext:
        rows.append(("domain", f"x in [{ext[0]:g}, {ext[1]:g}], y in [{ext[2]:g}, {ext[3]:g}] "
                     f"({info.get('axis_unit') or 'units of the reconstruction space'})"))
    else:
        rows.append(("domain", "no physical extent recorded: axes are in pixels"))
    if info.get("noise_level") is not None:
        rows.append(("noise", f"Gaussian, std {100 * float(info['noise_level']):g} % of "
                     f"max|Ax| (sigma = {float(info.get('sigma', float('nan'))):.4g})"))
    rows += [("numerics", f"{info.get('dtype', '?')}"), ("seed", str(info.get("seed", "?")))]
    return rows


# --------------------------------------------------------------------------------------
# the page (pure)
# --------------------------------------------------------------------------------------
def _badge(verdict: Mapping) -> str:
    status = verdict.get("status")
    if status == "not converged":
        return '<span class="badge bad">NOT CONVERGED</span>'
    if status == "unchecked":
        return '<span class="badge warn">convergence unchecked</span>'
    return '<span class="badge ok">converged</span>'


def _row_class(verdict: Mapping | None) -> str:
    if not verdict:
        return ""
    return {"not converged": ' class="not-converged"',
            "unchecked": ' class="unchecked"'}.get(verdict.get("status"), "")


def _verdict_table(verdicts: Mapping) -> str:
    out = ['<table class="verdicts" id="verdicts"><thead><tr><th>method</th><th>status</th>'
           '<th>exactness</th><th>same model as the reference</th><th>verdict in words</th>'
           '</tr></thead><tbody>']
    for name, v in verdicts.items():
        same = {True: "yes", False: "NO: model change", None: "unknown"}[v.get("same_model")]
        exact = v.get("exactness", "unknown")
        exact_badge = ("bad" if exact == "biased" else "warn" if exact.startswith("biased")
                       else "ok" if exact in ("exact", "asymptotically exact") else "warn")
        role = ' <span class="badge info">reference</span>' if v.get("role") == "reference" else ""
        out.append(f'<tr{_row_class(v)}><td><b>{_e(v.get("label", name))}</b>{role}</td>'
                   f"<td>{_badge(v)}</td>"
                   f'<td><span class="badge {exact_badge}">{_e(exact)}</span></td>'
                   f"<td>{_e(same)}</td><td>{_e(v.get('sentence', ''))}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _comparison_table(table: list, columns: list, verdicts: Mapping) -> str:
    out = ['<div class="scroll"><table class="comparison"><thead><tr>']
    # long snake_case names may wrap after an underscore: ~30 columns in less width
    out += [f"<th>{_e(c).replace('_', '_<wbr>')}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in table:
        v = verdicts.get(str(row.get("method")))
        cells = []
        for c in columns:
            val = row.get(c)
            if c == "method" and v:
                cells.append(f"<td><b>{_e(v.get('label', val))}</b></td>")
            elif c == "status" and v:
                cells.append(f"<td>{_badge(v)}</td>")
            elif c == "same_model":
                cells.append(f"<td>{_e({True: 'yes', False: 'NO', None: '-'}[val])}</td>")
            else:
                cls = ' class="num"' if isinstance(val, (int, float)) else ""
                cells.append(f"<td{cls}>{_e(_num(val))}</td>")
        out.append(f"<tr{_row_class(v)}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _figure(uri: str | None, alt: str, caption: str) -> str:
    if not uri:
        return f'<p class="note">({_e(alt)}: figure missing)</p>'
    return (f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}'
            "</figcaption></figure>")


def _kv_table(rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _model_section(model: Mapping) -> str:
    parts = [f'<h2 id="{_e(model["key"])}">{_e(model["title"])}</h2>']
    ref = model.get("reference", {})
    line = (f"Gold standard: <b>{_e(ref.get('name', '?'))}</b> "
            f"(exactness: {_e(ref.get('exactness') or '?')}).")
    conv = ref.get("convergence")
    if conv:
        met = bool(conv.get("converged"))
        line += (f" Reference criteria (split R-hat &lt; 1.01, bulk and tail ESS &ge; 400 on "
                 f"every pixel, no divergences) <b>{'met' if met else 'NOT met'}</b>: max R-hat "
                 f"{_num(conv.get('max_rhat'))}, min bulk / tail ESS "
                 f"{_num(conv.get('min_ess_bulk'))} / {_num(conv.get('min_ess_tail'))}, "
                 f"{_num(conv.get('divergences'))} divergences after "
                 f"{_num(conv.get('rounds'))} round(s).")
        if not met:
            line = f'<div class="bad-box">{line} Every row below is graded against a ' \
                   "reference that did not converge: read them with care.</div>"
    parts.append(f"<p>{line}</p>")
    mp = model.get("map")
    if mp:
        ok = mp.get("converged")
        flag = ("" if ok is None or bool(ok) else
                ' <span class="badge bad">MAP NOT CONVERGED</span> the optimiser stopped '
                "short, so this image is not the mode; a method started from it (VI) or "
                "centred on it (Laplace) in this model inherits the error.")
        parts.append(f"<p>MAP: PSNR {_num(mp.get('psnr'))} dB, {_num(mp.get('iterations'))} "
                     f"iterations, converged: {_num(ok)}.{flag}</p>")
    verdicts = model.get("verdicts", {})
    bad = [v.get("label", n) for n, v in verdicts.items() if v.get("status") == "not converged"]
    if bad:
        parts.append(f'<div class="bad-box"><b>Not converged:</b> {_e(", ".join(bad))}. '
                     "Their maps are hatched, their calibration curves grey and dashed, "
                     "their table rows greyed: they are not posterior estimates.</div>")
    parts.append("<h3>Verdicts</h3>")
    parts.append(_verdict_table(verdicts))
    figs = model.get("figures", {})
    unit = model.get("axis_words", "")
    parts.append("<h3>Figures</h3>")
    parts.append(_figure(figs.get("maps"), "maps",
                         "Each method's mean (Laplace: its mode, the MAP), pixel std and "
                         "|mean - truth|. One colour scale per column, set by the converged "
                         f"rows. {unit}"))
    parts.append(_figure(figs.get("calibration"), "calibration",
                         "Fraction of pixels whose true value lies in the method's "
                         "equal-tailed credible interval, against the interval's level. On "
                         "the diagonal: calibrated; below: overconfident. Unconverged "
                         "methods are grey, dashed and labelled (not converged); biased "
                         "samplers dotted; model changes dash-dotted."))
    parts.append(_figure(figs.get("std_vs_error"), "std vs error",
                         "|error| against std per pixel, one panel per method, shared axes. "
                         "A useful std grows with the error; about a third of the points lie "
                         "above the 1:1 line even for a calibrated Gaussian."))
    parts.append("<h3>Comparison with the gold standard (and the truth)</h3>")
    parts.append(_comparison_table(model.get("table", []), model.get("columns", []), verdicts))
    empty = model.get("empty_columns") or []
    if empty:
        parts.append(f'<p class="note">Columns empty in every row, left out: '
                     f'{_e(", ".join(empty))} (see the notes).</p>')
    notes = model.get("notes") or {}
    if notes:
        parts.append("<ul class='note'>" + "".join(
            f"<li><b>{_e(m)}</b>: {_e(n)}</li>" for m, ns in notes.items() for n in ns)
            + "</ul>")
    parts.append('<p class="note">mean_error / std_error: relative L2 error of the mean / '
                 "pixel std against the reference; std_ratio: mean std over the "
                 "reference's (&lt; 1: overconfident); ref_coverage_XX: reference mass inside "
                 "the method's XX % intervals; coverage_XX: fraction of true pixels inside; "
                 "rhat_max / ess_bulk_min: worst pixel.</p>")
    timings = model.get("timings") or []
    if timings:
        parts.append("<h3>Timings</h3>")
        parts.append('<table><thead><tr><th>method</th><th>wall s (main job)</th>'
                     "<th>compile s</th><th>run s</th><th>gradient evaluations</th></tr>"
                     "</thead><tbody>" + "".join(
                         f"<tr{_row_class(model.get('verdicts', {}).get(t['method']))}>"
                         f"<td>{_e(model.get('verdicts', {}).get(t['method'], {}).get('label', t['method']))}</td>"
                         + "".join(
                             f'<td class="num">{_e(_num(t.get(k)))}</td>'
                             for k in ("wall_s", "compile_s", "run_s", "num_grad_evals"))
                         + "</tr>" for t in timings) + "</tbody></table>")
    prov = model.get("provenance") or {}
    if prov:
        parts.append("<h3>Provenance</h3>")
        for name, p in prov.items():
            parts.append(f"<details><summary>{_e(name)}</summary><pre>"
                         f"{_e(json.dumps(p, indent=1, default=_json_default))}</pre></details>")
    return "\n".join(parts)


def _trust_section(trust: Mapping) -> str:
    """The trust section (:mod:`uqrecon.trust`): calibration verdicts over replicates,
    conformal repair, structure-test decisions, and their figures."""
    s = trust.get("summary", {})
    out = ["<h2 id='trust'>Trust: calibration over replicated experiments, conformal repair, "
           "structure tests</h2>"]
    if "skipped" in s:
        out.append(f"<p class='note'>Skipped: {_e(s['skipped'])}.</p>")
        return "\n".join(out)
    out.append("<p>The run's operator and noise level with its GMRF model. A method is "
               "<i>calibrated</i> when its pixel coverage is within 2 % of nominal at every "
               "level and its MSE-ball curve lies in its band; truths drawn from the prior "
               "make the model well specified, random ellipses do not.</p>")
    rows = [("setting", "replicates", "90 % pixel coverage", "ECE", "verdict")]
    rows += [(c["setting"], c["replicates"], _num(c["coverage_90"]), _num(c["ece_pixel"]),
              c["calibrated"]) for c in s.get("calibration", [])]
    # a NOT calibrated method is a finding, not a failed run: a red badge, no greyed row
    verdict = {True: '<span class="badge ok">calibrated</span>',
               False: '<span class="badge bad">NOT calibrated</span>'}
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in rows[0]) + "</tr>"
               + "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r[:-1])
                         + f"<td>{verdict[bool(r[-1])]}</td></tr>"
                         for r in rows[1:]) + "</table>")
    conf = s.get("conformal")
    if conf:
        out.append(f"<p>Conformal repair of {_e(conf['label'])} (alpha = {_num(conf['alpha'])}"
                   f"): its own 90 % intervals leave {_num(conf['raw_risk'])} of the pixels "
                   f"uncovered; the conformal std-bound {_num(conf['bound_risk_mean'])} "
                   f"(allowed {_num(conf['bound_risk_band'])}), RCPS "
                   f"{_num(conf['rcps_risk_mean'])} with P(risk &gt; alpha) = "
                   f"{_num(conf['rcps_violation_rate'])}.</p>")
    words = {True: "structure confirmed", False: "not confirmed", None: "undecided"}

    def decision(r, key, extra=""):
        text = _e(words[r[key]] + extra)
        # confirming a lesion that is absent from the truth is the one error never allowed
        return f'<span class="badge bad">{text}</span>' if r["h0_true"] and r[key] else text

    head = ("lesion", "absent in truth", "picture's contrast > 0", "BUQO, GMRF", "BUQO, TV",
            "sampling test, GMRF (P(absent))")
    rows = [(_e(r["case"]), "yes" if r["h0_true"] else "no", decision(r, "naive_rejects"),
             decision(r, "buqo_gmrf"), decision(r, "buqo_tv"),
             decision(r, "sampling_gmrf", f" ({_num(r['p_absent_gmrf'])})"))
            for r in s.get("structure", [])]
    if rows:
        out.append("<p>Is the planted lesion real? (level 0.05; a test must never confirm "
                   "an absent or hallucinated one: such a confirmation is shown in red)</p>")
        out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>"
                             for r in rows) + "</table>")
    for key, caption in (("calibration", "Pixel coverage and MSE-ball coverage against the "
                          "nominal level over replicated experiments"),
                         ("structure", "Planted lesion: truth, TV MAP, and the closest "
                          "structure-free image BUQO found")):
        uri = trust.get("figures", {}).get(key)
        if uri:
            out.append(_figure(uri, key, caption))
    return "\n".join(out)


def render_index_html(page: Mapping) -> str:
    """The report page as a string (pure: no file access).

    Args:
        page: ``{'title', 'problem': [(label, value), ...], 'lines': [str, ...],
            'models': [model, ...], 'provenance': {...}}``; a model is ``{'key', 'title',
            'reference': {'name', 'exactness', 'convergence'}, 'map', 'verdicts'
            (name -> Verdict.to_dict()), 'figures' (name -> data URI), 'table',
            'columns', 'empty_columns', 'notes', 'timings', 'provenance', 'axis_words'}``.

    Returns:
        The HTML document.
    """
    models = page.get("models", [])
    toc = " &middot; ".join(f'<a href="#{_e(m["key"])}">{_e(m["title"])}</a>' for m in models)
    body = [f"<h1>{_e(page.get('title', 'uqrecon report'))}</h1>",
            f"<p class='note'>{toc}</p>" if toc else "",
            "<h2>Problem</h2>", _kv_table(page.get("problem", []))]
    body += [f"<p>{_e(line)}</p>" for line in page.get("lines", [])]
    body.append("<p class='note'>How to read: each model is judged against a gold standard of "
                "<i>the same model</i>. A verdict first says whether the method converged "
                "(unconverged rows are not results and are greyed, hatched or dashed "
                "everywhere), its exactness class, then how far it is from the gold standard "
                "and whether its uncertainty is too small (overconfident) or too large.</p>")
    body += [_model_section(m) for m in models]
    if page.get("trust"):
        body.append(_trust_section(page["trust"]))
    prov = page.get("provenance")
    if prov:
        body.append("<h2>Provenance of the run</h2>")
        body.append(f"<pre>{_e(json.dumps(prov, indent=1, default=_json_default))}</pre>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(page.get('title', 'uqrecon report'))}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b)
            + "\n</body></html>\n")


# --------------------------------------------------------------------------------------
# reading a run folder
# --------------------------------------------------------------------------------------
def _axis_words(extent, unit) -> str:
    if extent is None:
        return "Axes in pixels (the problem records no physical extent)."
    return (f"Axes: position on the reconstruction domain [{extent[0]:g}, {extent[1]:g}] x "
            f"[{extent[2]:g}, {extent[3]:g}] ({unit or 'domain units'}).")


def _timings(model: Mapping, comparison: Mapping) -> list:
    wall = model.get("timings", {}) or {}
    rows = {str(r.get("method")): r for r in comparison.get("rows", [])}
    names = list(rows) + [n for n in wall if n not in rows]
    out = []
    for n in names:
        r = rows.get(n, {})
        out.append({"method": n, "wall_s": wall.get(n), "compile_s": r.get("compile_s"),
                    "run_s": r.get("run_s"), "num_grad_evals": r.get("num_grad_evals")})
    return out


def _provenance_of(model_folder, names) -> dict:
    """Provenance of each saved Result (read from the npz header only: cheap)."""
    out = {}
    for n in names:
        path = result_path(model_folder, n)
        if not os.path.exists(path):
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["__header__"]))
            prov = _plain_header(header["fields"].get("provenance"))
        except (OSError, ValueError, KeyError):
            continue
        out[n] = prov
    return out


def _plain_header(value):
    """Decode a Result header field without its arrays (arrays shown as '<array>')."""
    if isinstance(value, list):
        return [_plain_header(v) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return "<array>"
        if "__dict__" in value:
            return {k: _plain_header(v) for k, v in value["__dict__"].items()}
        if "__tuple__" in value:
            return [_plain_header(v) for v in value["__tuple__"]]
        if "__float__" in value:
            return value["__float__"]
    return value


def collect_page(out_dir, summary: Mapping) -> dict:
    """The page dict for :func:`render_index_html` from a run folder.

    Args:
        out_dir: the run folder (holding ``summary.json``'s model folders).
        summary: the run summary (``summary.json``).

    Returns:
        The page dict (figures embedded as data URIs).
    """
    try:
        _, _, info = load_problem_state(out_dir)
    except FileNotFoundError:
        info = {}
    problem = problem_rows(info) if info else [("problem", summary.get("problem", "?")),
                                                ("numerics", summary.get("dtype", "?")),
                                                ("seed", summary.get("seed", "?"))]
    lines = []
    base = summary.get("baseline")
    if base:
        lines.append(f"{base['name']} (classical baseline) PSNR: {base['psnr']:.2f} dB.")
    if summary.get("total_seconds") is not None:
        lines.append(f"Main job: {summary['total_seconds']:.0f} s in all.")
    if summary.get("regenerated"):
        lines.append(summary["regenerated"])
    models = []
    for key, model in summary.get("models", {}).items():
        folder = os.path.join(out_dir, key)
        with open(os.path.join(folder, "comparison.json")) as fh:
            comp = json.load(fh)
        figures = {}
        for fig, fname in (comp.get("figures") or {}).items():
            path = os.path.join(folder, fname)
            if os.path.exists(path):
                figures[fig] = png_data_uri(path)
        names = [str(r.get("method")) for r in comp.get("rows", [])]
        models.append({
            "key": key, "title": model_title(model.get("prior", {"name": key})),
            "reference": {"name": model.get("reference", comp.get("reference")),
                          "exactness": model.get("reference_exactness"),
                          "convergence": model.get("reference_convergence")},
            "map": model.get("map"), "verdicts": comp.get("verdicts", {}),
            "figures": figures, "table": comp.get("table", comp.get("rows", [])),
            "columns": comp.get("columns") or list(COLUMN_ORDER),
            "empty_columns": comp.get("empty_columns", []), "notes": comp.get("notes", {}),
            "timings": _timings(model, comp),
            "provenance": _provenance_of(folder, names),
            "axis_words": _axis_words(comp.get("extent"), comp.get("axis_unit"))})
    trust = None
    if summary.get("trust"):
        folder = os.path.join(out_dir, "trust")
        trust = {"summary": summary["trust"], "figures": {
            key: png_data_uri(os.path.join(folder, f"{key}.png"))
            for key in ("calibration", "structure")
            if os.path.exists(os.path.join(folder, f"{key}.png"))}}
    kind = info.get("name", "run") if info else "run"
    shape = info.get("shape") if info else None
    title = f"uqrecon report: {kind}" + (f", {shape[0]}x{shape[1]}" if shape else "")
    return {"title": title, "problem": problem, "lines": lines, "models": models,
            "trust": trust, "provenance": {k: summary[k] for k in ("dtype", "seed", "versions")
                           if k in summary}}


def write_index_html(out_dir, summary: Mapping) -> str:
    """Write ``<out_dir>/index.html`` for the run (see :func:`collect_page`).

    Args:
        out_dir: the run folder.
        summary: the run summary.

    Returns:
        The path written.
    """
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_index_html(collect_page(out_dir, summary)))
    return path


def regenerate_run(out_dir, truth=None, baseline=None) -> dict:
    """Rebuild every model's report in a run folder from its saved Results.

    Reads ``summary.json``, ``problem.npz`` (or the given ``truth``/``baseline``) and each
    model's ``result_<method>.npz``; rewrites figures, ``comparison.md``/``.json`` and
    returns the updated summary (the caller writes ``summary.json``, ``summary.md`` and
    ``index.html``). Intervals and coverages come from the draws saved (thinned by the
    main job's ``--keep-draws``); means, variances and convergence diagnostics are those
    of all draws.

    Args:
        out_dir: the run folder.
        truth: the true image (default: ``problem.npz``'s).
        baseline: the baseline image (default: ``problem.npz``'s).

    Returns:
        The updated summary dict.

    Raises:
        FileNotFoundError: no ``summary.json``, no truth, or a missing Result file.
    """
    from uqrecon.report import write_report
    from uqrecon.result import Result

    spath = os.path.join(out_dir, "summary.json")
    if not os.path.exists(spath):
        raise FileNotFoundError(f"{spath!r} not found: is {out_dir!r} a run folder written "
                                "by the main job (python -m uqrecon.cli)?")
    with open(spath) as fh:
        summary = json.load(fh)
    info = {}
    if truth is None:
        truth, saved_baseline, info = load_problem_state(out_dir)
        baseline = saved_baseline if baseline is None else baseline
    else:
        try:
            info = load_problem_state(out_dir)[2]
        except FileNotFoundError:
            info = {}
    baseline_name = info.get("baseline_name") or summary.get("baseline", {}).get("name", "baseline")
    for key, model in summary.get("models", {}).items():
        folder = os.path.join(out_dir, key)
        with open(os.path.join(folder, "comparison.json")) as fh:
            names = [str(r["method"]) for r in json.load(fh)["rows"]]
        results = {}
        for n in names:
            path = result_path(folder, n)
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path!r} not found: the saved Result of {n!r}")
            results[n] = Result.load(path)
        written = write_report(folder, results, truth, baseline,
                               reference_name=model.get("reference", names[0]),
                               baseline_name=baseline_name, extent=info.get("extent"),
                               axis_unit=info.get("axis_unit"),
                               title=model_title(model.get("prior", {"name": key})))
        with open(written["json"]) as fh:
            model["comparison"] = json.load(fh)
        model["report"] = written["markdown"]
    summary["regenerated"] = ("Regenerated from the saved Results (python -m uqrecon.cli "
                              "report): intervals and coverages use the draws kept in them.")
    return summary

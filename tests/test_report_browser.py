"""The HTML report in a real browser: headless Chromium opens a tiny run's index.html.

Driver: the ``chromium`` binary alone, ``--headless --dump-dom`` on a copy of the page with
a small probe script injected first in ``<head>``. The probe records console errors,
uncaught exceptions and failed loads from the start, and on the ``load`` event (after every
image has loaded or failed) writes what the rendered page shows -- each image's
``complete``/``naturalWidth``, each verdict row's rendered text and computed colours,
the page's scroll width -- as JSON into a ``<pre>`` that ``--dump-dom`` prints. No Python
package, no DevTools client, nothing downloaded: it works offline.

No Chromium found (``$UQRECON_CHROMIUM``, then ``chromium``, ``chromium-browser``,
``google-chrome`` on PATH): the tests skip, saying so -- unless ``UQRECON_REQUIRE_BROWSER=1``
(``.ci/run`` sets it after installing chromium), then they fail.

Shown to fail by hand (then reverted) on the real page of ``test_page_renders``: one
base64 image with its first characters replaced (``naturalWidth`` 0: "image 'maps' did not
load"); the verdict table's ``id``/class renamed (no verdict table found); the stuck row's
``not-converged`` class and badge removed (the row is not flagged); a ``<script>`` calling
an undefined function (console error). ``test_probe_catches_broken_pages`` makes those
breakages in one page and checks each is reported, so the checks cannot go vacuous.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from test_report import _run_folder  # noqa: E402
from uqrecon.report_html import write_index_html  # noqa: E402

METHODS = ["exact", "nuts", "myula stuck"]
STUCK = "myula stuck"

# Runs before anything else on the page: console.error, uncaught errors and failed
# resource loads (error events do not bubble; a capturing listener on window sees them).
_PROBE = r"""<script>(function(){
var errs=[];window.__probeErrors=errs;
var ce=console.error;console.error=function(){errs.push('console.error: '+[].join.call(arguments,' '));return ce.apply(console,arguments);};
window.addEventListener('error',function(e){var t=e.target;
 errs.push(t&&t!==window&&t.tagName?('failed to load <'+t.tagName.toLowerCase()+'> '+(t.alt||'')):('uncaught: '+e.message));},true);
window.addEventListener('unhandledrejection',function(e){errs.push('unhandled rejection: '+e.reason);});
function css(el){var s=getComputedStyle(el);return {color:s.color,background:s.backgroundColor,image:s.backgroundImage,
 display:s.display,visibility:s.visibility,opacity:s.opacity};}
function box(el){var r=el.getBoundingClientRect();return [r.width,r.height];}
window.addEventListener('load',function(){
 var out={errors:errs,
  images:[].map.call(document.images,function(i){return {alt:i.alt,complete:i.complete,
   naturalWidth:i.naturalWidth,width:i.getBoundingClientRect().width};}),
  verdictTables:[].map.call(document.querySelectorAll('table.verdicts'),function(t){
   return [].map.call(t.tBodies[0]?t.tBodies[0].rows:[],function(r){
    var b=r.cells[1]&&r.cells[1].querySelector('.badge'),n=r.cells[0].querySelector('b')||r.cells[0];
    return {method:n.innerText.trim(),text:r.innerText,cls:r.className,
     cell:css(r.cells[0]),badge:b?{text:b.innerText,box:box(b),css:css(b)}:null};});}),
  bodyText:document.body.innerText,
  scrollWidth:document.documentElement.scrollWidth,clientWidth:document.documentElement.clientWidth};
 var p=document.createElement('pre');p.id='uqrecon-probe';p.textContent=JSON.stringify(out);
 document.body.appendChild(p);});
})();</script>"""


def find_chromium():
    """The Chromium executable to use, or None."""
    for name in (os.environ.get("UQRECON_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        msg = ("no Chromium found ($UQRECON_CHROMIUM, chromium, chromium-browser, "
               "google-chrome): install it (Debian: apt-get install chromium) to check the "
               "HTML report in a browser")
        if os.environ.get("UQRECON_REQUIRE_BROWSER") == "1":
            pytest.fail("UQRECON_REQUIRE_BROWSER=1 but " + msg)
        pytest.skip(msg)
    return exe


def probe(chromium, html: str, workdir) -> dict:
    """Render ``html`` (a whole page) in headless Chromium at 1280x900 and return what
    the injected probe saw."""
    page = re.sub(r"<head>", "<head>" + _PROBE, html, count=1)
    assert page != html, "page has no <head>"
    path = os.path.join(workdir, "probed.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--disable-dev-shm-usage", "--window-size=1280,900",
           f"--user-data-dir={os.path.join(workdir, 'profile')}", "--dump-dom",
           "file://" + os.path.abspath(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="uqrecon-probe">(.*?)</pre>', done.stdout, re.S)
    assert m, (f"the probe did not report (chromium exit {done.returncode}):\n"
               f"{done.stderr[-3000:]}")
    import html as html_mod
    return json.loads(html_mod.unescape(m.group(1)))


def problems(seen: dict, methods=METHODS, stuck=STUCK) -> list:
    """Everything wrong with a rendered page, as sentences (empty: the page is fine)."""
    out = [f"JavaScript/console error: {e}" for e in seen["errors"]]
    if not seen["images"]:
        out.append("no images on the page")
    for img in seen["images"]:
        if not (img["complete"] and img["naturalWidth"] > 0):
            out.append(f"image {img['alt']!r} did not load ({img})")
        elif img["width"] <= 0:
            out.append(f"image {img['alt']!r} is not displayed ({img})")
    if seen["scrollWidth"] > seen["clientWidth"]:
        out.append(f"page overflows horizontally ({seen['scrollWidth']} > "
                   f"{seen['clientWidth']} px)")
    if len(seen["verdictTables"]) != 1:
        out.append(f"{len(seen['verdictTables'])} verdict tables, expected 1")
        return out
    # a row's label is the method's name, possibly followed by " (not converged, ...)"
    labels = [r["method"] for r in seen["verdictTables"][0]]
    rows = {m: r for r in seen["verdictTables"][0] for m in methods
            if r["method"] == m or r["method"].startswith(m + " (")}
    if len(labels) != len(methods) or sorted(rows) != sorted(methods):
        out.append(f"verdict rows {labels}, expected one per method {methods}")
    good = [rows[m] for m in methods if m != stuck and m in rows]
    bad = rows.get(stuck)
    for r in good:
        if "NOT CONVERGED" in r["text"] or "not-converged" in r["cls"]:
            out.append(f"converged method {r['method']!r} is flagged: {r['text']!r}")
    if bad is not None:
        badge = bad["badge"] or {}
        shown = (badge.get("text") == "NOT CONVERGED" and min(badge.get("box", [0])) > 0
                 and badge["css"]["visibility"] == "visible"
                 and float(badge["css"]["opacity"]) > 0.5
                 and badge["css"]["color"] != badge["css"]["background"])
        if not shown:
            out.append(f"stuck method's badge is not a visible NOT CONVERGED ({badge})")
        if good and (bad["cell"]["background"], bad["cell"]["image"]) == (
                good[0]["cell"]["background"], good[0]["cell"]["image"]):
            out.append("stuck method's row is not greyed/hatched: same cell background as "
                       f"a converged row ({bad['cell']})")
        if good and badge.get("css") and good[0]["badge"] and \
                badge["css"]["background"] == good[0]["badge"]["css"]["background"]:
            out.append("stuck method's badge has the converged badge's colour")
    if f"Not converged: {stuck}" not in seen["bodyText"]:
        out.append("no visible 'Not converged: ...' box for the stuck method")
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """index.html of a toy run (exact reference, converged NUTS, stuck MYULA)."""
    out, _, _, summary = _run_folder(tmp_path_factory.mktemp("browser"),
                                     np.random.default_rng(0))
    with open(write_index_html(out, summary), encoding="utf-8") as fh:
        return fh.read()


def test_page_renders(chromium, page, tmp_path):
    """In Chromium at 1280 px: every <img> (maps, calibration, std vs error) loaded
    (complete, naturalWidth > 0) and is displayed, one verdict table with a row per
    method, the stuck sampler's row carries a visible NOT CONVERGED badge (coloured unlike
    the converged badge) and a greyed/hatched background unlike the converged rows, the
    "Not converged: ..." box is rendered, the page does not overflow horizontally, and no
    console error or failed load. Catches: a broken data URI, a missing verdict table or
    row, a flag hidden or unstyled by CSS, a stray script error."""
    seen = probe(chromium, page, tmp_path)
    assert len(seen["images"]) == 3, seen["images"]
    assert problems(seen) == []


def test_probe_catches_broken_pages(chromium, page, tmp_path):
    """The same checks on one page broken five ways each report their breakage: a
    corrupted base64 image, the converged NUTS row dropped from the verdict table, the
    stuck row's class and badge stripped, the flag box removed, a script error. Catches:
    a probe that stopped looking (every check silently passing)."""
    broken = re.sub(r"(data:image/png;base64,)iVBOR", r"\1AAAAA", page, count=1)
    broken = re.sub(r"<tr><td><b>nuts</b>.*?</tr>", "", broken, count=1, flags=re.S)
    rows = broken.split("<tr")
    rows = [r.replace(' class="not-converged"', "", 1).replace(
        '<span class="badge bad">NOT CONVERGED</span>', "converged", 1)
        if r.startswith(' class="not-converged"><td><b>myula stuck') else r for r in rows]
    broken = "<tr".join(rows)
    broken = re.sub(r"<b>Not converged:</b>", "", broken, count=1)
    broken = broken.replace("</body>", "<script>undefinedFunction()</script></body>")
    assert broken.count("iVBOR") == page.count("iVBOR") - 1
    found = problems(probe(chromium, broken, tmp_path))
    for expected in ("did not load", "verdict rows", "badge is not a visible NOT CONVERGED",
                     "not greyed/hatched", "'Not converged: ...' box", "JavaScript/console"):
        assert any(expected in p for p in found), (expected, found)

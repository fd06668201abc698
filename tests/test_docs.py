"""The documentation: the Sphinx API reference builds without a warning, and every public
function and method documents its arguments and its return value (Google style, the
form ``sphinx.ext.napoleon`` renders).

The docstring check walks the public API the reference covers: the names the package
top level exports, ``uqrecon.operators``, ``uqrecon.models``, ``uqrecon.gold``,
``uqrecon.uq``, ``uqrecon.deep``, ``uqrecon.inference``, ``uqrecon.result.Result`` and
``uqrecon.linalg``. A function or method that takes parameters needs an ``Args:`` section
naming each of them; one that returns a value needs a ``Returns:`` section (``Yields:``
for a generator). Constructors are not checked (a class's fields are described in its
docstring's prose).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Modules whose public names the reference documents (``__all__`` where the module has
# one, else every public function and class defined in uqrecon that it holds).
PUBLIC_MODULES = ("uqrecon", "uqrecon.operators", "uqrecon.models", "uqrecon.gold",
                  "uqrecon.uq", "uqrecon.deep", "uqrecon.inference", "uqrecon.linalg",
                  "uqrecon.catalogue", "uqrecon.interop")
# Single objects of other modules that are public API.
PUBLIC_OBJECTS = ("uqrecon.result.Result",)

# Functions whose docstrings may fail the check for now (none today). Each entry must go
# when its docstring passes: test_allow_list_is_current fails on an entry that passes or
# no longer exists, so the list cannot go stale.
ALLOWED_FAILURES: frozenset[str] = frozenset()

# Parameters a docstring need not name.
IMPLICIT_PARAMS = {"self", "cls"}

_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\s*(\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(\([^)]*\))?\s*:")


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a docstring: header -> the names its entries document.

    An entry is a line of the section's first indentation level of the form
    ``name: ...`` or ``name (type): ...`` (several names separated by commas allowed).
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        header = m.group(2)
        names: list[str] = []
        body_indent = None
        i += 1
        while i < len(lines):
            line = lines[i]
            if line.strip():
                ind = len(line) - len(line.lstrip())
                if ind <= indent:
                    break
                if body_indent is None:
                    body_indent = ind
                if ind == body_indent:
                    e = _ENTRY.match(line)
                    if e:
                        names += [n.strip().lstrip("*") for n in e.group(1).split(",")]
            i += 1
        out[header] = names
        # a section header with no indented body is prose ending in a colon
        if body_indent is None:
            del out[header]
    return out


def _unwrap(obj):
    """The Python function behind a staticmethod/classmethod/jit/functools wrapper."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def _returns_value(func) -> str | None:
    """``"Returns"`` if the function returns a value, ``"Yields"`` for a generator, else None."""
    ann = inspect.signature(func).return_annotation
    if ann is None or ann == "None":
        return None
    try:
        src = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    tree = ast.parse(src)
    fdef = tree.body[0]
    found = None
    stack = list(ast.iter_child_nodes(fdef))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return "Yields"
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            found = "Returns"
        stack.extend(ast.iter_child_nodes(node))
    return found


def _params(sig: inspect.Signature, skip=()) -> list[str]:
    return [p.name for p in sig.parameters.values()
            if p.name not in IMPLICIT_PARAMS and p.name not in skip]


def check_function(func, doc: str | None = None, params=None) -> list[str]:
    """What the docstring of ``func`` lacks (empty when it passes)."""
    doc = func.__doc__ if doc is None else doc
    secs = sections(doc)
    problems = []
    if params is None:
        params = _params(inspect.signature(func))
    if params:
        documented = set(secs.get("Args", []))
        if "Args" not in secs:
            problems.append("no Args: section")
        else:
            missing = [p for p in params if p not in documented]
            if missing:
                problems.append(f"Args: lacks {', '.join(missing)}")
    kind = _returns_value(func)
    if kind and kind not in secs:
        problems.append(f"no {kind}: section")
    return problems


def _is_uqrecon(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("uqrecon")


def _module_members(modname: str):
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")]
    for name in names:
        obj = getattr(mod, name)
        if inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or callable(obj):
            if _is_uqrecon(_unwrap(obj)) or _is_uqrecon(obj):
                yield f"{modname}.{name}", obj


def check_class(cls) -> dict[str, list[str]]:
    """Failures of the public methods a class defines or inherits from a uqrecon base
    class, keyed by the qualified name of the function."""
    out = {}
    for base in cls.__mro__:
        if not _is_uqrecon(base):
            continue
        for name, attr in vars(base).items():
            if name.startswith("_") or isinstance(attr, property):
                continue
            if not isinstance(attr, (staticmethod, classmethod)) and not inspect.isfunction(
                    _unwrap(attr)):
                continue
            func = _unwrap(attr)
            if not inspect.isfunction(func) or not _is_uqrecon(func):
                continue
            key = f"{func.__module__}.{func.__qualname__}"
            if key in out:
                continue
            problems = check_function(func)
            if problems:
                out[key] = problems
    return out


def public_objects():
    """(name, object) of every public function and class the reference documents."""
    seen = {}
    for modname in PUBLIC_MODULES:
        for name, obj in _module_members(modname):
            seen.setdefault(id(obj), (name, obj))
    for path in PUBLIC_OBJECTS:
        modname, attr = path.rsplit(".", 1)
        obj = getattr(importlib.import_module(modname), attr)
        seen.setdefault(id(obj), (path, obj))
    return list(seen.values())


def collect_failures() -> dict[str, list[str]]:
    """Every public function/method whose docstring lacks Args:/Returns: entries, keyed
    by the qualified name of the function where it is defined."""
    failures = {}
    for _, obj in public_objects():
        if inspect.isclass(obj):
            failures.update(check_class(obj))
            continue
        func = _unwrap(obj)
        if not inspect.isfunction(func):
            continue
        problems = check_function(func)
        if problems:
            failures[f"{func.__module__}.{func.__qualname__}"] = problems
    return failures


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
def test_public_functions_document_args_and_returns():
    failures = {k: v for k, v in collect_failures().items() if k not in ALLOWED_FAILURES}
    assert not failures, "docstrings lacking Args:/Returns: entries:\n" + "\n".join(
        f"  {k}: {'; '.join(v)}" for k, v in sorted(failures.items()))


def test_allow_list_is_current():
    failures = collect_failures()
    passing = sorted(ALLOWED_FAILURES - set(failures))
    assert not passing, f"allow-listed but passing (or gone): remove {passing}"


def test_the_walk_covers_the_public_api():
    walked = {id(obj) for _, obj in public_objects()}
    for expected in ("uqrecon.sample", "uqrecon.approximate", "uqrecon.map_estimate",
                     "uqrecon.operators.sparse_view", "uqrecon.models.GMRF",
                     "uqrecon.uq.fit_rcps", "uqrecon.deep.train", "uqrecon.inference.run_chains",
                     "uqrecon.gold.reference", "uqrecon.linalg.pcg",
                     "uqrecon.result.Result"):
        modname, attr = expected.rsplit(".", 1)
        assert id(getattr(importlib.import_module(modname), attr)) in walked, expected


def _good(x, *, level=0.9, **kwargs):
    """Doc.

    Args:
        x: an image.
        level: a level.
        **kwargs: options.

    Returns:
        Something.
    """
    return x


def _no_returns(x):
    """Doc.

    Args:
        x: an image.
    """
    return x


def _missing_arg(x, y):
    """Doc.

    Args:
        x (array): an image.

    Returns:
        Something.
    """
    return x + y


def _procedure(x) -> None:
    """Doc.

    Args:
        x: an image.
    """


def _prose(x):
    """Returns ``x``, documented in prose only."""
    return x


def _generator(n):
    """Doc.

    Args:
        n: how many.
    """
    yield from range(n)


def test_the_check_flags_what_is_missing():
    assert check_function(_good) == []
    assert check_function(_procedure) == []
    assert check_function(_no_returns) == ["no Returns: section"]
    assert check_function(_missing_arg) == ["Args: lacks y"]
    assert check_function(_generator) == ["no Yields: section"]
    assert check_function(_prose) == ["no Args: section", "no Returns: section"]


def _sphinx(srcdir, outdir):
    import sphinx  # noqa: F401  (docs dependencies: pip install -e .[test])

    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-c", str(DOCS), str(srcdir), str(outdir)],
        capture_output=True, text=True, env=env, timeout=600)


def test_api_reference_builds_without_warnings(tmp_path):
    proc = _sphinx(DOCS, tmp_path / "html")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    for page in ("index", "interfaces", "api/uqrecon", "api/operators", "api/models",
                 "api/inference", "api/result", "api/uq", "api/gold", "api/deep",
                 "api/linalg"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    text = (tmp_path / "html" / "api" / "uqrecon.html").read_text()
    assert 'id="uqrecon.sample"' in text and "Parameters" in text


def test_a_warning_fails_the_build(tmp_path):
    """The same configuration on a page with broken RST: ``-W`` must fail the build."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.rst").write_text("Broken\n======\n\n* a list\nthat ends badly\n")
    proc = _sphinx(src, tmp_path / "html")
    assert proc.returncode != 0
    assert "WARNING" in proc.stderr

"""The package's import layering: no module imports from a layer above its own.

Layers, lowest first (each may import only from its own layer or those below; lazy
imports inside functions count too):

0. ``uqrecon.linalg``: the numerical ground floor (CG, eigensolvers, dense-from-matvec,
   PSD square roots); imports no other uqrecon module.
1. ``uqrecon.diagnostics``, ``uqrecon.result``, ``uqrecon.gaussians``, ``uqrecon.noise``,
   ``uqrecon.phantoms``:
   array-level diagnostics, the Result container, simulation helpers.
2. ``uqrecon.operators``: forward models.
3. ``uqrecon.models``: likelihoods, priors, posteriors.
4. ``uqrecon.map``: MAP estimation (used by inference for modes).
5. ``uqrecon.inference``: samplers, approximations, the runner.
6. ``uqrecon.uq``: evaluation of results (``uq.diagnostics`` is layer 1's module under
   its user-facing path).
7. ``uqrecon.problems``, ``uqrecon.gold``, ``uqrecon.deep``, ``uqrecon.report`` (with ``report_html``, ``report_cli``), ``uqrecon.trust``,
   ``uqrecon.catalogue``, ``uqrecon.interop``,
   ``uqrecon.cli`` and the package ``__init__``: applications built on everything below.
"""

import ast
from pathlib import Path

import uqrecon

LAYERS = {
    "linalg": 0,
    "diagnostics": 1, "result": 1, "gaussians": 1, "noise": 1, "phantoms": 1,
    "operators": 2,
    "models": 3,
    "map": 4,
    "inference": 5,
    "uq": 6,
    "problems": 7, "gold": 7, "deep": 7, "report": 7, "report_html": 7,
    "report_cli": 7, "trust": 7, "catalogue": 7, "interop": 7, "cli": 7, "__init__": 7,
}

ROOT = Path(uqrecon.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("uqrecon", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """The layer of an absolute ``uqrecon...`` module name (the package itself is top)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["__init__"]


def _imports(source: str, module: str, is_package: bool):
    """``(line, imported module)`` for every uqrecon import in ``source``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "uqrecon":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "uqrecon":
                continue
            if target == "uqrecon":          # `from uqrecon import diagnostics`
                for alias in node.names:     # a submodule, or a name of the package
                    sub = alias.name in LAYERS and alias.name != "__init__"
                    yield node.lineno, f"uqrecon.{alias.name}" if sub else "uqrecon"
            else:
                yield node.lineno, target


def _violations(source: str, path: Path):
    module = _module_name(path)
    own = _layer(module)
    out = []
    for line, target in _imports(source, module, path.name == "__init__.py"):
        if _layer(target) > own:
            out.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} (layer {own}) "
                       f"imports {target} (layer {_layer(target)})")
    return out


def test_no_module_imports_from_a_higher_layer():
    """Fails on any import (top-level or lazy) of a higher layer, e.g. models importing
    inference, or inference importing uq; and on a top-level name missing from LAYERS."""
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        name = _module_name(path).split(".")
        assert len(name) == 1 or name[1] in LAYERS, f"{path}: not assigned to a layer"
    bad = [v for path in files for v in _violations(path.read_text(), path)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_checker_sees_relative_absolute_and_lazy_upward_imports():
    """The checker itself: an upward import in each syntax is reported, a downward one
    is not (so the test above cannot pass by seeing nothing)."""
    post = ROOT / "models" / "posterior.py"
    lazy = "def f():\n    from ..inference.exact import cg\n"
    assert _violations(lazy, post)
    assert _violations("import uqrecon.uq.metrics\n", post)
    assert _violations("from uqrecon import inference\n", post)
    assert _violations("from ...uq.diagnostics import rhat\n",
                       ROOT / "inference" / "samplers" / "gibbs.py")
    assert _violations("from . import diagnostics\n", ROOT / "linalg.py")
    assert not _violations("from ..linalg import pcg\nfrom ..operators.base import x\n",
                           post)

"""What a posterior *is*, for provenance: a content hash and a one-line description.

Every Result made from a :class:`~uqrecon.models.Posterior` (samplers, approximations,
gold standards) records both in its provenance (``posterior_hash``, ``model``), so that
:func:`uqrecon.uq.compare` can tell an approximation error from a *model change*: a
Huber-TV approximation graded against an exact-TV reference differs from it partly
because the model differs, and the comparison must say so.

The hash covers the pytree structure, static fields (by value, recursively) and every
array leaf (data, operator tables, hyperparameters, dtype) of the posterior's canonical
form (:func:`uqrecon.operators.base.canonical_form`: without data an operator derives
only to run faster, such as a ray transform's stored sparse matrix): two posteriors hash
equal only if they define the same density in the same precision.
"""

from __future__ import annotations

import hashlib
import re

import jax
import numpy as np

from ..operators.base import canonical_form

__all__ = ["posterior_hash", "describe", "model_identity"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _update_static(h, obj, depth=0, seen=None):
    """Feed a static (non-array-leaf) value into the hash by value, recursively."""
    seen = set() if seen is None else seen
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        h.update(f"array{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return
    if isinstance(obj, (str, bytes, int, float, bool, complex, type(None))):
        h.update(repr(obj).encode())
        return
    if isinstance(obj, (tuple, list)):
        h.update(f"{type(obj).__name__}{len(obj)}(".encode())
        for o in obj:
            _update_static(h, o, depth + 1, seen)
        h.update(b")")
        return
    if isinstance(obj, dict):
        h.update(b"dict(")
        for k in sorted(obj, key=repr):
            _update_static(h, k, depth + 1, seen)
            _update_static(h, obj[k], depth + 1, seen)
        h.update(b")")
        return
    h.update(f"{type(obj).__module__}.{type(obj).__qualname__}:".encode())
    h.update(_ADDRESS.sub("", repr(obj)).encode())
    if id(obj) in seen or depth > 4:
        return
    seen.add(id(obj))
    attrs = {}
    if hasattr(obj, "__dict__"):
        attrs.update(vars(obj))
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            attrs[slot] = getattr(obj, slot)
    for k in sorted(attrs):
        v = attrs[k]
        if callable(v) and not hasattr(v, "__array__"):
            h.update(f"{k}=callable:{getattr(v, '__qualname__', type(v).__name__)}".encode())
            continue
        h.update(k.encode())
        _update_static(h, v, depth + 1, seen)


def _walk_treedef(h, treedef):
    data = treedef.node_data()
    if data is not None:
        typ, aux = data
        h.update(f"{typ.__module__}.{typ.__qualname__}".encode())
        _update_static(h, aux)
    h.update(f"[{treedef.num_leaves}]".encode())
    for child in treedef.children():
        _walk_treedef(h, child)


def posterior_hash(posterior) -> str:
    """SHA-256 of a posterior: its pytree structure, static fields and array leaves.

    Args:
        posterior: a uqrecon Posterior (any pytree).

    Returns:
        The hex digest, a string.
    """
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(canonical_form(posterior))
    h.update(_ADDRESS.sub("", str(treedef)).encode())
    _walk_treedef(h, treedef)
    for leaf in leaves:
        a = np.asarray(leaf)
        h.update(f"leaf{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _term(obj) -> str:
    name = type(obj).__name__
    if hasattr(obj, "isotropic"):
        name += "(isotropic)" if obj.isotropic else "(anisotropic)"
    return name


def describe(posterior) -> str:
    """One line naming the model: likelihood, priors, constraint, shape and dtype, e.g.
    ``"Gaussian likelihood | priors: TV(isotropic) | 64x64 float32"``.

    Args:
        posterior: a :class:`~uqrecon.models.Posterior`.

    Returns:
        The description (for tables and notes; identity is decided by the hash).
    """
    parts = [f"{type(posterior.likelihood).__name__} likelihood"]
    priors = getattr(posterior, "priors", ())
    parts.append("priors: " + (", ".join(_term(p) for p in priors) or "none"))
    if getattr(posterior, "constraint", None) is not None:
        parts.append(f"constraint: {type(posterior.constraint).__name__}")
    if getattr(posterior, "hyperpriors", None):
        parts.append("hyperpriors on: " + ", ".join(sorted(posterior.hyperpriors)))
    shape = "x".join(str(s) for s in posterior.shape)
    parts.append(f"{shape} {np.dtype(posterior.dtype).name}")
    return " | ".join(parts)


def model_identity(posterior) -> dict:
    """``{"posterior_hash": ..., "model": ...}`` for a Result's provenance.

    Args:
        posterior: a :class:`~uqrecon.models.Posterior`.

    Returns:
        The hash (:func:`posterior_hash`) and the description (:func:`describe`).
    """
    return {"posterior_hash": posterior_hash(posterior), "model": describe(posterior)}

"""Any linear ODL operator as a JAX LinearOperator (host callback + custom VJP).

For geometries with no native JAX kernel (3D cone beam, helical, ...) or any other ODL
operator. Forward and adjoint run ODL on the host through ``jax.pure_callback``;
reverse-mode derivatives use the Euclidean transpose derived from ODL's adjoint, so
``jax.grad`` of a loss through the bridge agrees with a native operator. vmap runs the
callback sequentially; forward-mode (``jvp``) is not available through the callback.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import LinearOperator, operator_dataclass, static_field

__all__ = ["ODLOperator", "from_odl"]


class _Handle:
    """Hashable-by-identity holder so an ODL operator can be pytree metadata."""

    __slots__ = ("op",)

    def __init__(self, op):
        self.op = op

    def __hash__(self):
        return id(self.op)

    def __eq__(self, other):
        return isinstance(other, _Handle) and other.op is self.op


def _weights(space):
    """The inner-product weight of an ODL space: a scalar or an array (1.0 if none)."""
    w = getattr(space, "weighting", None)
    if w is None:
        return 1.0
    const = getattr(w, "const", None)
    if const is not None:
        return float(const)
    arr = getattr(w, "array", None)
    if arr is not None:
        return np.asarray(arr.data if hasattr(arr, "data") else arr)
    raise TypeError(f"from_odl: unsupported weighting {type(w).__name__} on space {space}")


def _host_call(op, space, arr):
    """Apply an ODL operator to a numpy array on the host; returns a fresh numpy array."""
    # astra needs writable, C-contiguous arrays of the space's dtype.
    x = np.array(arr, dtype=space.dtype, order="C", copy=True)
    return np.array(op(space.element(x)).data, copy=True)


@operator_dataclass
class ODLOperator(LinearOperator):
    """A linear ODL operator; ``adjoint`` is the Euclidean (unweighted) transpose.

    ODL's ``op.adjoint`` is the adjoint for the spaces' weighted inner products,
    ``<Ax, y>_wr = <x, A* y>_wd``; the plain transpose is ``A^T y = wd * A*(y / wr)``.
    """

    handle: Any = static_field()
    domain_shape: tuple = static_field()
    range_shape: tuple = static_field()

    def __init__(self, odl_operator):
        _check_odl_operator(odl_operator)
        object.__setattr__(self, "handle", _Handle(odl_operator))
        object.__setattr__(self, "domain_shape", tuple(odl_operator.domain.shape))
        object.__setattr__(self, "range_shape", tuple(odl_operator.range.shape))

    @property
    def odl_operator(self):
        return self.handle.op

    @property
    def domain_dtype(self):
        return jnp.dtype(self.odl_operator.domain.dtype)

    @property
    def range_dtype(self):
        return jnp.dtype(self.odl_operator.range.dtype)

    def _apply(self, x):
        return _bridge_forward(self.handle, x)

    def _adjoint(self, y):
        return _bridge_transpose(self.handle, y)


def _check_odl_operator(op):
    for attr in ("domain", "range", "adjoint"):
        if not hasattr(op, attr):
            raise TypeError(f"from_odl: 'odl_operator' must be an ODL Operator, got "
                            f"{type(op).__name__}")
    if not getattr(op, "is_linear", False):
        raise ValueError("from_odl: 'odl_operator' must be linear (op.is_linear is False)")
    for name in ("domain", "range"):
        if not hasattr(getattr(op, name), "shape"):
            raise TypeError(f"from_odl: the operator's {name} must be a discretized space")


def _forward_host(handle, x):
    op = handle.op
    return _host_call(op, op.domain, x)


def _transpose_host(handle, y):
    op = handle.op
    wd, wr = _weights(op.domain), _weights(op.range)
    out = _host_call(op.adjoint, op.range, np.asarray(y) / wr) * wd
    return out.astype(op.domain.dtype, copy=False)


def _callback(fn, handle, arg, shape, dtype):
    out = jax.ShapeDtypeStruct(shape, dtype)
    return jax.pure_callback(lambda a: fn(handle, a), out, arg, vmap_method="sequential")


# Forward and transpose are each other's VJP, so derivatives of any order compose.
@jax.custom_vjp
def _forward_core(handle_box, x):
    h = handle_box.handle
    return _callback(_forward_host, h, x, h.op.range.shape, jnp.dtype(h.op.range.dtype))


def _forward_fwd(handle_box, x):
    return _forward_core(handle_box, x), handle_box


def _forward_bwd(handle_box, g):
    return None, _transpose_core(handle_box, g)


_forward_core.defvjp(_forward_fwd, _forward_bwd)


@jax.custom_vjp
def _transpose_core(handle_box, y):
    h = handle_box.handle
    return _callback(_transpose_host, h, y, h.op.domain.shape, jnp.dtype(h.op.domain.dtype))


def _transpose_fwd(handle_box, y):
    return _transpose_core(handle_box, y), handle_box


def _transpose_bwd(handle_box, g):
    return None, _forward_core(handle_box, g)


_transpose_core.defvjp(_transpose_fwd, _transpose_bwd)


@operator_dataclass
class _HandleBox:
    """A leaf-free pytree carrying the handle, so custom_vjp sees no array in it."""

    handle: Any = static_field()


def _bridge_forward(handle, x):
    h = handle.op
    x = x.astype(jnp.dtype(h.domain.dtype))
    return _forward_core(_HandleBox(handle), x)


def _bridge_transpose(handle, y):
    h = handle.op
    y = y.astype(jnp.dtype(h.range.dtype))
    return _transpose_core(_HandleBox(handle), y)


def from_odl(odl_operator) -> ODLOperator:
    """Wrap a linear ODL operator as a :class:`LinearOperator` (host callback)."""
    return ODLOperator(odl_operator)

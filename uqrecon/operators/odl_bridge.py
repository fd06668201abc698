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
        """The ODL domain's dtype, as the active x64 setting makes it."""
        return _active(self.odl_operator.domain.dtype)

    @property
    def range_dtype(self):
        """The ODL range's dtype, as the active x64 setting makes it."""
        return _active(self.odl_operator.range.dtype)

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


def _active(dtype):
    """``dtype`` as the active x64 setting makes it (float64 -> float32 when x64 is off)."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _callback(fn, handle, arg, shape, dtype):
    """Run ``fn(handle, arg)`` on the host; the result has the ODL space's dtype as the
    active x64 setting makes it.

    A 64-bit result crosses the callback boundary as ``uint32`` words and is bitcast
    back: JAX canonicalises a callback's numpy result with the x64 flag of the thread
    that runs it, and a local ``with jax.enable_x64(True):`` does not reach XLA's
    callback thread, so a float64 result would arrive as float32 and be rejected
    ("Incorrect output dtype").
    """
    dtype = _active(dtype)
    words = dtype.itemsize // 4 if dtype in (jnp.float64, jnp.complex128) else 0

    def host(a):
        out = np.ascontiguousarray(fn(handle, a), dtype=dtype)
        return out.view(np.uint32).reshape(*shape, words) if words else out

    if not words:
        out = jax.ShapeDtypeStruct(shape, dtype)
        return jax.pure_callback(host, out, arg, vmap_method="sequential")
    out = jax.ShapeDtypeStruct((*shape, words), jnp.uint32)
    raw = jax.pure_callback(host, out, arg, vmap_method="sequential")
    if dtype == jnp.float64:
        return jax.lax.bitcast_convert_type(raw, jnp.float64)
    parts = jax.lax.bitcast_convert_type(raw.reshape(*raw.shape[:-1], 2, 2), jnp.float64)
    return jax.lax.complex(parts[..., 0], parts[..., 1])


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
    x = x.astype(_active(h.domain.dtype))
    return _forward_core(_HandleBox(handle), x)


def _bridge_transpose(handle, y):
    h = handle.op
    y = y.astype(_active(h.range.dtype))
    return _transpose_core(_HandleBox(handle), y)


def from_odl(odl_operator) -> ODLOperator:
    """Wrap a linear ODL operator as a :class:`LinearOperator` (host callback).

    Args:
        odl_operator: a linear ``odl.Operator``.

    Returns:
        An :class:`ODLOperator`.
    """
    return ODLOperator(odl_operator)

"""A system matrix (dense or sparse) as a LinearOperator on 2D images."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from .base import LinearOperator, operator_dataclass, static_field

__all__ = ["MatrixOperator"]


@operator_dataclass
class MatrixOperator(LinearOperator):
    """``y = A @ x.ravel()`` reshaped to ``range_shape``.

    ``matrix`` may be a numpy or JAX array, a ``scipy.sparse`` matrix or a JAX ``BCOO``
    (sparse stays sparse: a CT system matrix has a few per cent non-zeros). Images keep
    their shape: pass ``domain_shape`` (default: a vector of length ``A.shape[1]``).
    The adjoint is the explicit conjugate transpose.
    """

    matrix: jax.Array
    domain_shape: tuple = static_field()
    range_shape: tuple = static_field()

    def __init__(self, matrix, domain_shape=None, range_shape=None):
        matrix = _to_jax_matrix(matrix)
        m, n = matrix.shape
        domain_shape = (n,) if domain_shape is None else tuple(int(s) for s in domain_shape)
        range_shape = (m,) if range_shape is None else tuple(int(s) for s in range_shape)
        if math.prod(domain_shape) != n:
            raise ValueError(f"MatrixOperator: domain_shape {domain_shape} has "
                             f"{math.prod(domain_shape)} entries but 'matrix' has {n} columns")
        if math.prod(range_shape) != m:
            raise ValueError(f"MatrixOperator: range_shape {range_shape} has "
                             f"{math.prod(range_shape)} entries but 'matrix' has {m} rows")
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "domain_shape", domain_shape)
        object.__setattr__(self, "range_shape", range_shape)

    @property
    def domain_dtype(self):
        dt = jnp.dtype(self.matrix.dtype)
        return jnp.finfo(dt).dtype if not jnp.issubdtype(dt, jnp.complexfloating) else dt

    @property
    def range_dtype(self):
        return jnp.dtype(self.matrix.dtype)

    @property
    def is_sparse(self) -> bool:
        return isinstance(self.matrix, jsparse.BCOO)

    def _apply(self, x):
        return (self.matrix @ x.reshape(-1)).reshape(self.range_shape)

    def _adjoint(self, y):
        yv = y.reshape(-1)
        complex_ = jnp.issubdtype(self.matrix.dtype, jnp.complexfloating)
        yc = jnp.conj(yv) if complex_ else yv
        if self.is_sparse:
            out = self.matrix.T @ yc
        else:
            # ``y @ A``, not ``A.T @ y``: with ``A`` a jit argument XLA's CPU backend copies
            # the transpose on every call (measured 46 ms against 2 ms at 4096 x 4096)
            out = yc @ self.matrix
        return (jnp.conj(out) if complex_ else out).reshape(self.domain_shape)

    def to_dense(self, dtype=None):
        """The matrix (a sparse one densified).

        Args:
            dtype: dtype of the result (None: the matrix's).

        Returns:
            The dense matrix, shape ``(size_out, size_in)``.
        """
        mat = self.matrix.todense() if self.is_sparse else self.matrix
        return mat if dtype is None else mat.astype(dtype)


def _to_jax_matrix(matrix):
    """Validate and convert a dense/sparse matrix to a JAX array or BCOO."""
    try:
        import scipy.sparse as sps
    except ImportError:  # pragma: no cover - scipy is a dependency
        sps = None
    if sps is not None and sps.issparse(matrix):
        if matrix.ndim != 2:
            raise ValueError(f"MatrixOperator: 'matrix' must be 2D, got {matrix.ndim}D")
        coo = matrix.tocoo()
        if not np.all(np.isfinite(coo.data)):
            raise ValueError("MatrixOperator: 'matrix' contains NaN or inf")
        return jsparse.BCOO.from_scipy_sparse(coo)
    if isinstance(matrix, jsparse.BCOO):
        if matrix.ndim != 2:
            raise ValueError(f"MatrixOperator: 'matrix' must be 2D, got {matrix.ndim}D")
        return matrix
    arr = np.asarray(matrix) if not isinstance(matrix, jax.Array) else matrix
    if arr.ndim != 2:
        raise ValueError(f"MatrixOperator: 'matrix' must be 2D, got shape {tuple(arr.shape)}")
    if not (jnp.issubdtype(arr.dtype, jnp.number)):
        raise TypeError(f"MatrixOperator: 'matrix' must be numeric, got dtype {arr.dtype}")
    if not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError("MatrixOperator: 'matrix' contains NaN or inf")
    arr = jnp.asarray(arr)
    if not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = arr.astype(jnp.result_type(float))
    return arr

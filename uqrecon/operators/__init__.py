"""Forward operators: linear maps in JAX with exact adjoints."""

from .base import (Adjoint, Composed, FunctionOperator, Identity, LinearOperator,
                   Scaled, Stacked, Summed, adjoint_mismatch, operator_dataclass,
                   static_field)
from .matrix import MatrixOperator
from .odl_bridge import ODLOperator, from_odl

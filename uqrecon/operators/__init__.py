"""Forward operators: linear maps in JAX with exact adjoints."""

from .base import (Adjoint, Composed, FunctionOperator, Identity, LinearOperator,
                   Scaled, Stacked, Summed, adjoint_mismatch, operator_dataclass,
                   static_field)
from .matrix import MatrixOperator
from .odl_bridge import ODLOperator, from_odl
from .coils import birdcage_maps
from .masks import (FASTMRI_4X, FASTMRI_8X, equispaced_line_mask, random_line_mask,
                    variable_density_mask)
from .mri import CartesianMRI, fft2c, ifft2c
from .fbp import fbp
from .tomo import RayTransform, fan_beam, limited_angle, sparse_view

"""Gaussian variational inference: mean-field and low-rank-plus-diagonal families,
optimised so that they converge on ill-conditioned posteriors or say they did not."""

from .lowrank import lowrank
from .meanfield import meanfield

__all__ = ["meanfield", "lowrank"]

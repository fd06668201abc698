"""Gaussian variational inference: mean-field and low-rank-plus-diagonal families."""

from .lowrank import LowRank, lowrank
from .meanfield import GaussianFamily, MeanField, meanfield, optimise_elbo

__all__ = ["meanfield", "lowrank", "MeanField", "LowRank", "GaussianFamily",
           "optimise_elbo"]

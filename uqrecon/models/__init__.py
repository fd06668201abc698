"""Probabilistic models: likelihoods, priors, hyperpriors and the Posterior interface."""

from .constraints import (Box, IdentityTransform, NonNegative, SigmoidTransform,
                          SoftplusTransform)
from .hyper import Gamma
from .likelihoods import ComplexGaussian, Gaussian, PoissonEmission, PoissonTransmission
from .numpyro_prior import NumpyroPrior
from .posterior import GaussianForm, Posterior
from .priors import GMRF, CauchyMRF, FiniteDifference, GaussianPrior
from .tv import TV, SmoothedNorm
from .wavelets import WAVELETS, WaveletL1, WaveletTransform

__all__ = [
    "Gaussian", "ComplexGaussian", "PoissonTransmission", "PoissonEmission",
    "GaussianPrior", "GMRF", "CauchyMRF", "FiniteDifference",
    "TV", "SmoothedNorm", "WaveletL1", "WaveletTransform", "WAVELETS",
    "NonNegative", "Box", "IdentityTransform", "SoftplusTransform", "SigmoidTransform",
    "Gamma", "Posterior", "GaussianForm", "NumpyroPrior",
]

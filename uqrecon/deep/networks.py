"""Small reconstruction networks (flax.linen) with dropout and an optional Gaussian head.

Every network has the same call signature so training and the UQ methods never ask which
one they hold::

    mean, log_var = model.apply(variables, x0, y, deterministic=True)
    # with dropout active (MC dropout / training):
    mean, log_var = model.apply(variables, x0, y, deterministic=False,
                                rngs={"dropout": key})

``x0`` is the initial reconstruction (FBP or zero-filled), shape ``(batch, H, W)``;
``y`` is the measured data, shape ``(batch, *operator.range_shape)`` (ignored by the
U-Net). ``mean`` has the shape of ``x0``; ``log_var`` is the per-pixel log variance of
the heteroscedastic Gaussian head, or ``None`` when ``heteroscedastic=False``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from uqrecon.operators.base import LinearOperator

__all__ = ["UNet", "LearnedGradientDescent", "gradient_step_size"]


class _ConvBlock(nn.Module):
    """Two 3x3 convolutions with GELU, each followed by dropout (active in MC dropout)."""

    features: int
    dropout_rate: float

    @nn.compact
    def __call__(self, h, deterministic: bool):
        for _ in range(2):
            h = nn.gelu(nn.Conv(self.features, (3, 3))(h))
            h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
        return h


def _head(h, x0, heteroscedastic: bool):
    """1x1 conv to a residual correction of ``x0`` and, optionally, a log variance."""
    out = nn.Conv(2 if heteroscedastic else 1, (1, 1), kernel_init=nn.initializers.zeros)(h)
    mean = x0 + out[..., 0]
    if not heteroscedastic:
        return mean, None
    # start near a small predicted variance (log 1e-2) so the NLL begins well scaled
    return mean, out[..., 1] + jnp.log(jnp.asarray(1e-2, out.dtype))


def _check_images(x0, name="x0"):
    if x0.ndim != 3:
        raise ValueError(f"argument '{name}' must have shape (batch, H, W), got {x0.shape}")


class UNet(nn.Module):
    """U-Net post-processing an initial reconstruction (residual: output = x0 + net(x0)).

    ``features`` gives the channels per level; H and W must be divisible by
    ``2 ** (len(features) - 1)``.
    """

    features: Sequence[int] = (16, 32, 64)
    dropout_rate: float = 0.1
    heteroscedastic: bool = False

    @nn.compact
    def __call__(self, x0, y=None, *, deterministic: bool = True):
        _check_images(x0)
        levels = len(self.features)
        factor = 2 ** (levels - 1)
        if x0.shape[1] % factor or x0.shape[2] % factor:
            raise ValueError(
                f"argument 'x0': image shape {x0.shape[1:]} must be divisible by {factor} "
                f"for a U-Net with {levels} levels")
        h = x0[..., None]
        skips = []
        for i, f in enumerate(self.features):
            h = _ConvBlock(f, self.dropout_rate)(h, deterministic)
            if i < levels - 1:
                skips.append(h)
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
        for f, skip in zip(reversed(self.features[:-1]), reversed(skips)):
            h = nn.ConvTranspose(f, (2, 2), strides=(2, 2))(h)
            h = _ConvBlock(f, self.dropout_rate)(jnp.concatenate([h, skip], -1), deterministic)
        return _head(h, x0, self.heteroscedastic)


def gradient_step_size(operator: LinearOperator) -> float:
    """``1 / ||A||^2``: scales the data-fit gradient fed to the unrolled network.

    Args:
        operator: the forward operator.

    Returns:
        A float.
    """
    return float(1.0 / operator.norm() ** 2)


class LearnedGradientDescent(nn.Module):
    """Unrolled learned gradient descent (Adler & Oktem; Barbano et al. for UQ).

    Each of ``num_iters`` iterations computes the data-fit gradient
    ``g = step_size * A^H (A x - y)`` with the forward operator and its adjoint, and a
    small CNN (own weights per iteration) maps ``[x, g, memory]`` to an update of ``x``
    and of ``memory`` channels carried between iterations.
    """

    operator: LinearOperator
    step_size: float
    num_iters: int = 5
    features: int = 32
    memory: int = 5
    dropout_rate: float = 0.1
    heteroscedastic: bool = False

    @nn.compact
    def __call__(self, x0, y, *, deterministic: bool = True):
        _check_images(x0)
        if y is None or y.shape[1:] != tuple(self.operator.range_shape):
            raise ValueError(
                f"argument 'y' must have shape (batch, *{tuple(self.operator.range_shape)}), "
                f"got {None if y is None else y.shape}")
        if self.num_iters < 1:
            raise ValueError(f"num_iters must be >= 1, got {self.num_iters}")
        x = x0
        mem = jnp.zeros((*x0.shape, self.memory), x0.dtype)
        for _ in range(self.num_iters):
            resid = self.operator(x) - y
            g = self.step_size * jnp.real(self.operator.adjoint(resid)).astype(x.dtype)
            h = jnp.concatenate([x[..., None], g[..., None], mem], -1)
            h = nn.gelu(nn.Conv(self.features, (3, 3))(h))
            h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
            h = nn.gelu(nn.Conv(self.features, (3, 3))(h))
            h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
            upd = nn.Conv(1 + self.memory, (3, 3))(h)
            x = x + upd[..., 0]
            mem = nn.relu(upd[..., 1:])
        return _head(h, x, self.heteroscedastic)

"""FBP in JAX against ODL's fbp_op (astra_cpu) and against known images."""

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import odl
import pytest
from odl.applications import tomo

from uqrecon.operators.fbp import fbp
from uqrecon.operators.tomo import fan_beam, limited_angle, sparse_view

_fbp = jax.jit(fbp, static_argnums=(2, 3))


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def shepp_logan(op):
    return np.array(odl.core.phantom.shepp_logan(op.space, modified=True).data)


@pytest.mark.parametrize("make", [lambda: sparse_view((64, 64), 60),
                                  lambda: limited_angle((48, 64), (0.0, math.pi / 2), 30)])
@pytest.mark.parametrize("filt,odl_name,scaling", [("ramlak", "Ram-Lak", 1.0),
                                                   ("hann", "Hann", 0.7)])
def test_matches_odl_fbp_op(make, filt, odl_name, scaling):
    op = make()
    odl_op = op.odl_operator("astra_cpu")
    sino = odl_op(odl_op.domain.element(np.array(shepp_logan(op), np.float32)))
    ref = tomo.fbp_op(odl_op, filter_type=odl_name, frequency_scaling=scaling)(sino).data
    out = _fbp(op, jnp.asarray(np.array(sino.data)), filt, scaling)
    assert out.shape == op.domain_shape and out.dtype == jnp.float32
    assert rel(out, ref) < 1e-4, rel(out, ref)


def test_reconstructs_from_180_views():
    op = sparse_view((64, 64), 180)
    xs = np.asarray(op.space.meshgrid[0]), np.asarray(op.space.meshgrid[1])
    blob = np.exp(-((xs[0] - 0.2) ** 2 + (xs[1] + 0.1) ** 2) / (2 * 0.25 ** 2))
    sl = shepp_logan(op)
    truth = np.stack([blob, sl]).astype(np.float32)
    recon = np.asarray(_fbp(op, op(jnp.asarray(truth)), "ramlak", 1.0))
    backprojection = np.asarray(op.adjoint(op(jnp.asarray(truth))))
    # smooth image: FBP is nearly exact; Shepp-Logan: edges and the thin skull limit it
    assert rel(recon[0], blob) < 0.02, rel(recon[0], blob)
    assert rel(recon[1], sl) < 0.35, rel(recon[1], sl)
    # the filter matters: unfiltered back-projection is far off even after best scaling
    bp = backprojection[1] * np.vdot(backprojection[1], sl) / np.vdot(backprojection[1],
                                                                    backprojection[1])
    assert rel(bp, sl) > 2 * rel(recon[1], sl)


def test_batch_matches_single():
    op = sparse_view((24, 24), 20)
    y = jax.random.normal(jax.random.PRNGKey(0), (2, *op.range_shape))
    out = _fbp(op, y, "hann", 1.0)
    np.testing.assert_allclose(out[1], _fbp(op, y[1], "hann", 1.0), rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    op = sparse_view((16, 16), 8)
    y = jnp.zeros(op.range_shape)
    with pytest.raises(ValueError, match="filter"):
        fbp(op, y, filter="gauss")
    with pytest.raises(ValueError, match="frequency_scaling"):
        fbp(op, y, frequency_scaling=0.0)
    with pytest.raises(ValueError, match="sinogram"):
        fbp(op, jnp.zeros((8, 3)))
    with pytest.raises(TypeError, match="operator"):
        fbp(np.eye(3), y)
    with pytest.raises(ValueError, match="operator"):
        fbp(fan_beam((16, 16), 8, 3.0, 1.0), y)

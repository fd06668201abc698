"""Native JAX ray transforms: match ODL/ASTRA, exact adjoints, JAX transforms, errors."""

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import odl
import pytest
from hypothesis import assume, given, settings, strategies as st
from odl.applications import tomo

from uqrecon.operators.base import adjoint_mismatch
from uqrecon.operators.tomo import RayTransform, fan_beam, limited_angle, sparse_view


# jitted entry points: operators with equal geometry share one compilation (the ODL
# metadata compares by value), and tests stay within their time budget
_forward = jax.jit(lambda op, x: op(x))
_mismatch = jax.jit(adjoint_mismatch, static_argnums=2)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def astra_sino(op, image):
    """ODL's astra_cpu ray transform of a float32 image (copied: ASTRA needs writable)."""
    odl_op = op.odl_operator("astra_cpu")
    return odl_op(odl_op.domain.element(np.array(image, dtype=np.float32))).data


def phantom(op):
    return np.array(odl.core.phantom.shepp_logan(op.space, modified=True).data)


def _nonuniform():
    space = odl.uniform_discr([-1, -1], [1, 1], (48, 48), dtype="float32")
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, math.pi, 25))
    apart = odl.nonuniform_partition(angles)
    return RayTransform(space, tomo.Parallel2dGeometry(apart, odl.uniform_partition(-1.5, 1.5, 69)))


def _odl_default():
    # ODL's own geometry helper: detector cells smaller than a pixel (3 candidates/view)
    space = odl.uniform_discr([-1, -1], [1, 1], (64, 64), dtype="float32")
    return RayTransform(space, tomo.parallel_beam_geometry(space, num_angles=40))


CASES = {
    "full_angle": lambda: sparse_view((64, 64), 90),
    "sparse_view_30": lambda: sparse_view((64, 64), 30),
    "limited_90deg": lambda: limited_angle((64, 64), (0.0, math.pi / 2), 45),
    "limited_60deg": lambda: limited_angle((64, 64), (0.0, math.pi / 3), 30),
    "non_square_odd_det": lambda: sparse_view((48, 64), 40, num_det=71),
    "non_uniform_angles": _nonuniform,
    "odl_parallel_beam_geometry": _odl_default,
    "fan_beam": lambda: fan_beam((64, 64), 60, 4.0, 2.0),
    "fan_beam_short_source_odd_det": lambda: fan_beam((48, 64), 45, 2.0, 1.0, num_det=101),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_astra_cpu(name):
    op = CASES[name]()
    x = phantom(op)
    ref = astra_sino(op, x)
    out = _forward(op, jnp.asarray(x))
    assert out.shape == ref.shape == op.range_shape
    assert out.dtype == jnp.float32
    # the target is 0.1 %; both projectors are the same kernel, so float32 agreement
    assert rel(out, ref) < 1e-4, rel(out, ref)


def test_line_integral_scaling_closed_form():
    # ones on [-1, 1]^2: the central ray at angle 0 has length 2, off-centre rays too
    op = sparse_view((32, 32), 4, num_det=31)
    y = np.asarray(op(jnp.ones((32, 32))))
    a0 = int(np.argmin(np.abs(np.asarray(op.geometry.angles) - math.pi / 8)))
    assert y.shape == (4, 31)
    # at pi/8 a ray through the centre crosses the square over 2 / cos(pi/8)
    np.testing.assert_allclose(y[a0, 15], 2.0 / math.cos(math.pi / 8), rtol=1e-5)


@pytest.mark.parametrize("name", ["full_angle", "non_square_odd_det", "fan_beam"])
def test_adjoint_identity_float32(name):
    op = CASES[name]()
    for seed in range(3):
        assert float(_mismatch(op, jax.random.PRNGKey(seed), None)) < 1e-5


@pytest.mark.parametrize("name", ["non_uniform_angles", "fan_beam"])
def test_adjoint_identity_float64(name):
    op = CASES[name]()
    with jax.enable_x64(True):
        shapes = jax.eval_shape(lambda o: (o(jnp.zeros(o.domain_shape, jnp.float64)),
                                           o.adjoint(jnp.zeros(o.range_shape, jnp.float64))),
                                op)
        assert [s.dtype for s in shapes] == [jnp.float64, jnp.float64]
        assert float(_mismatch(op, jax.random.PRNGKey(1), jnp.float64)) < 1e-10


@pytest.mark.parametrize("make", [
    lambda: sparse_view((24, 20), 17, num_det=33),
    # cells of ~0.3 pixel: 7 candidate cells per pixel and view
    lambda: sparse_view((24, 20), 17, num_det=33, det_width=0.8),
    # fan: adjoint transposes the two-gather form of the forward, which uses run gathers
    lambda: fan_beam((24, 20), 13, 2.0, 1.0, num_det=29)])
def test_adjoint_equals_linear_transpose(make):
    # the operator's adjoint against JAX's own transpose of the forward pass
    op = make()
    with jax.enable_x64(True):
        y = jax.random.normal(jax.random.PRNGKey(3), op.range_shape, jnp.float64)
        x0 = jnp.zeros(op.domain_shape, jnp.float64)
        (ref,) = jax.jit(lambda o, v: jax.linear_transpose(o._apply, x0)(v))(op, y)
        out = jax.jit(lambda o, v: o.adjoint(v))(op, y)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-10, atol=1e-12)


@settings(max_examples=3, deadline=None)
@given(rows=st.integers(5, 16), cols=st.integers(5, 16), num_angles=st.integers(1, 8),
       num_det=st.integers(3, 30), start=st.floats(-3.2, 3.2),
       span=st.floats(0.05, 2 * math.pi), width=st.floats(0.5, 4.0))
def test_adjoint_property(rows, cols, num_angles, num_det, start, span, width):
    space = odl.uniform_discr([-rows / 20, -cols / 20], [rows / 20, cols / 20], (rows, cols),
                              dtype="float32")
    geom = tomo.Parallel2dGeometry(odl.uniform_partition(start, start + span, num_angles),
                                   odl.uniform_partition(-width / 2, width / 2, num_det))
    op = RayTransform(space, geom)
    # a wide detector with few cells can miss the image entirely (A = 0): need one ray
    # within the image's inscribed circle
    assume(np.min(np.abs(geom.det_partition.meshgrid[0])) < min(rows, cols) / 20)
    with jax.enable_x64(True):
        assert float(_mismatch(op, jax.random.PRNGKey(0), jnp.float64)) < 1e-10


@pytest.mark.parametrize("make", [lambda: sparse_view((16, 16), 7),
                                  lambda: fan_beam((16, 16), 8, 3.0, 1.0)])
def test_jit_vmap_grad(make):
    op = make()
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16))
    data = jax.random.normal(jax.random.PRNGKey(1), op.range_shape)

    @jax.jit
    def run(o, x):
        batched = o(x)                                    # leading axis -> vmap
        singles = jax.lax.map(o, x)                       # one image at a time
        back = jax.vmap(o.adjoint)(batched)
        g = jax.grad(lambda v: 0.5 * jnp.sum((o(v) - data) ** 2))(x[0])
        return batched, singles, back, o.adjoint(batched[2]), g, o.adjoint(o(x[0]) - data)

    batched, singles, back, back2, g, g_ref = run(op, x)
    assert batched.shape == (3, *op.range_shape)
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back[2], back2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


def test_static_metadata_hashes_by_value():
    a, b = sparse_view((16, 16), 5), sparse_view((16, 16), 5)
    assert a.geometry is not b.geometry
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(sparse_view((16, 16), 6))
    assert a.domain_shape == (16, 16) and a.range_shape == (5, a.geometry.det_partition.shape[0])
    assert a.odl_operator().range.shape == a.range_shape


def test_factories_defaults():
    op = sparse_view((32, 32), 30)
    assert op.space.min_pt.tolist() == [-1.0, -1.0] and op.space.max_pt.tolist() == [1.0, 1.0]
    la = limited_angle((32, 32))
    assert la.range_shape[0] == 90
    assert float(np.max(la.geometry.angles)) < math.pi / 2
    fb = fan_beam((32, 32), 20, 3.0, 1.0)
    assert fb.range_shape[0] == 20 and fb.geometry.src_radius == 3.0


def test_bad_inputs():
    space1d = odl.uniform_discr(-1, 1, 10)
    geom = tomo.Parallel2dGeometry(odl.uniform_partition(0, 1, 3), odl.uniform_partition(-1, 1, 5))
    with pytest.raises(ValueError, match="space"):
        RayTransform(space1d, geom)
    with pytest.raises(TypeError, match="space"):
        RayTransform(np.zeros((4, 4)), geom)
    space = odl.uniform_discr([-1, -1], [1, 1], (8, 8))
    with pytest.raises(TypeError, match="geometry"):
        RayTransform(space, "parallel")
    with pytest.raises(ValueError, match="angle_range"):
        limited_angle((16, 16), (1.0, 1.0))
    with pytest.raises(ValueError, match="num_angles"):
        sparse_view((16, 16), 0)
    with pytest.raises(ValueError, match="src_radius"):
        fan_beam((16, 16), 10, 0.0, 1.0)
    with pytest.raises(ValueError, match="det_radius"):
        fan_beam((16, 16), 10, 3.0, -1.0)
    with pytest.raises(ValueError, match="src_radius"):
        fan_beam((16, 16), 10, 1.2, 1.0)        # source inside the image's circle
    with pytest.raises(ValueError, match="shape"):
        sparse_view((16,), 10)
    with pytest.raises(ValueError, match="shape"):
        sparse_view((16, 0), 10)
    op = sparse_view((16, 16), 4)
    with pytest.raises(ValueError, match="'x'"):
        op(jnp.zeros((15, 16)))
    with pytest.raises(ValueError, match="'y'"):
        op.adjoint(jnp.zeros((16, 16)))

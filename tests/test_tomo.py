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
from uqrecon.operators import tomo as tomo_module
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


def _nonuniform(kernel="auto"):
    space = odl.uniform_discr([-1, -1], [1, 1], (48, 48), dtype="float32")
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, math.pi, 25))
    apart = odl.nonuniform_partition(angles)
    return RayTransform(space, tomo.Parallel2dGeometry(apart, odl.uniform_partition(-1.5, 1.5, 69)),
                        kernel=kernel)


def _odl_default(kernel="auto"):
    # ODL's own geometry helper: detector cells smaller than a pixel (3 candidates/view)
    space = odl.uniform_discr([-1, -1], [1, 1], (64, 64), dtype="float32")
    return RayTransform(space, tomo.parallel_beam_geometry(space, num_angles=40), kernel=kernel)


CASES = {
    "full_angle": lambda **k: sparse_view((64, 64), 90, **k),
    "sparse_view_30": lambda **k: sparse_view((64, 64), 30, **k),
    "limited_90deg": lambda **k: limited_angle((64, 64), (0.0, math.pi / 2), 45, **k),
    "limited_60deg": lambda **k: limited_angle((64, 64), (0.0, math.pi / 3), 30, **k),
    "non_square_odd_det": lambda **k: sparse_view((48, 64), 40, num_det=71, **k),
    "non_uniform_angles": _nonuniform,
    "odl_parallel_beam_geometry": _odl_default,
    "fan_beam": lambda **k: fan_beam((64, 64), 60, 4.0, 2.0, **k),
    "fan_beam_short_source_odd_det": lambda **k: fan_beam((48, 64), 45, 2.0, 1.0, num_det=101,
                                                          **k),
}
KERNELS = ("sparse", "on_the_fly")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_astra_cpu(name, kernel):
    """Both ways of applying the matrix against ASTRA (catches a wrong node, weight or
    scaling in either the on-the-fly kernels or the stored matrix)."""
    op = CASES[name](kernel=kernel)
    assert op.kernel == kernel
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


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["full_angle", "non_square_odd_det", "fan_beam"])
def test_adjoint_identity_float32(name, kernel):
    op = CASES[name](kernel=kernel)
    for seed in range(3):
        assert float(_mismatch(op, jax.random.PRNGKey(seed), None)) < 1e-5


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["non_uniform_angles", "fan_beam"])
def test_adjoint_identity_float64(name, kernel):
    op = CASES[name](kernel=kernel)
    with jax.enable_x64(True):
        shapes = jax.eval_shape(lambda o: (o(jnp.zeros(o.domain_shape, jnp.float64)),
                                           o.adjoint(jnp.zeros(o.range_shape, jnp.float64))),
                                op)
        assert [s.dtype for s in shapes] == [jnp.float64, jnp.float64]
        assert float(_mismatch(op, jax.random.PRNGKey(1), jnp.float64)) < 1e-10


@pytest.mark.parametrize("make", [
    lambda: sparse_view((24, 20), 17, num_det=33, kernel="on_the_fly"),
    # cells of ~0.3 pixel: 7 candidate cells per pixel and view
    lambda: sparse_view((24, 20), 17, num_det=33, det_width=0.8, kernel="on_the_fly"),
    # fan: adjoint transposes the two-gather form of the forward, which uses run gathers
    lambda: fan_beam((24, 20), 13, 2.0, 1.0, num_det=29, kernel="on_the_fly")])
def test_adjoint_equals_linear_transpose(make):
    """The on-the-fly kernels' hand-written adjoint against JAX's own transpose of the
    forward pass. (The stored matrix's transpose is its own second table by construction;
    ``test_sparse_matches_on_the_fly`` checks both tables against these kernels.)"""
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
    op = RayTransform(space, geom, kernel="on_the_fly")
    # a wide detector with few cells can miss the image entirely (A = 0): need one ray
    # within the image's inscribed circle
    assume(np.min(np.abs(geom.det_partition.meshgrid[0])) < min(rows, cols) / 20)
    with jax.enable_x64(True):
        assert float(_mismatch(op, jax.random.PRNGKey(0), jnp.float64)) < 1e-10
    # the stored matrix of the same random geometry is the kernel's matrix
    _assert_same_matrix(RayTransform(space, geom, kernel="sparse"), op)


def _assert_same_matrix(sparse, fly, dtype=jnp.float32, tol=1e-5):
    """``sparse`` and ``fly`` apply the same matrix: forward and adjoint agree on random
    inputs to float rounding, relative to the largest output entry."""
    kx, ky = jax.random.split(jax.random.PRNGKey(7))
    x = jax.random.uniform(kx, fly.domain_shape, dtype)
    y = jax.random.uniform(ky, fly.range_shape, dtype)
    for a, b in ((_forward(sparse, x), _forward(fly, x)),
                 (_backward(sparse, y), _backward(fly, y))):
        assert a.dtype == b.dtype == dtype
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 0
        assert float(jnp.max(jnp.abs(a - b))) <= tol * scale, float(jnp.max(jnp.abs(a - b))) / scale


_backward = jax.jit(lambda op, y: op.adjoint(y))


@pytest.mark.parametrize("make", [
    lambda **k: sparse_view((64, 64), 30, **k),
    lambda **k: sparse_view((48, 40), 17, num_det=33, det_width=0.8, **k),
    lambda **k: limited_angle((32, 32), (0.3, 1.4), 20, **k),
    lambda **k: fan_beam((64, 64), 30, 3.0, 2.0, **k),      # a ray along a pixel boundary
    lambda **k: fan_beam((40, 48), 23, 3.0, 1.0, num_det=61, **k)])
def test_sparse_matches_on_the_fly(make):
    """The stored matrix (``kernel="sparse"``) is the on-the-fly kernels' matrix.

    Catches a node or weight rule in ``_joseph.coo`` / ``_fan.coo`` that differs from the
    kernels (checked: weights built in float64 instead of the kernels' float32 put the
    64x64 fan geometry's boundary ray half on each side, a 0.8 % error; swapping the
    two Joseph weights, 0.3-1 %), a transposed pixel numbering for axis-1 rays, or a
    ray order that ignores the fan tables' permutation."""
    sparse, fly = make(kernel="sparse"), make(kernel="on_the_fly")
    assert (sparse.kernel, fly.kernel) == ("sparse", "on_the_fly")
    _assert_same_matrix(sparse, fly)


def test_sparse_matrix_follows_the_default_float():
    """Under ``jax_enable_x64`` the stored weights are computed in float64, as the kernels
    compute them for float64 images (the fan geometry's boundary ray then splits in
    halves; float32 weights would put it on one side: a 0.8 % difference)."""
    with jax.enable_x64(True):
        sparse = fan_beam((64, 64), 30, 3.0, 2.0, kernel="sparse")
        fly = fan_beam((64, 64), 30, 3.0, 2.0, kernel="on_the_fly")
        assert all(v.dtype == jnp.float64 for v in sparse.ell.fwd.val)
        _assert_same_matrix(sparse, fly, jnp.float64, 1e-12)


def test_kernel_option(monkeypatch):
    """``kernel``: validated by name; ``"auto"`` stores the matrix on CPU below the size
    bound only, and never on an accelerator; a stored matrix is what both directions
    read (checked in the jaxpr: catches a direction left on the fly)."""
    with pytest.raises(ValueError, match="'kernel'"):
        sparse_view((16, 16), 4, kernel="dense")
    assert sparse_view((16, 16), 4).kernel == "sparse"            # the tests run on CPU
    bound = tomo_module._sparse_entries_bound(sparse_view((16, 16), 4).plan)
    monkeypatch.setattr(tomo_module, "SPARSE_MAX_ENTRIES", bound - 1)
    assert sparse_view((16, 16), 4).kernel == "on_the_fly"
    assert sparse_view((16, 16), 4, kernel="sparse").kernel == "sparse"
    monkeypatch.setattr(tomo_module, "SPARSE_MAX_ENTRIES", bound)
    assert sparse_view((16, 16), 4).kernel == "sparse"
    # both directions read the stored tables, and they hold the same matrix
    op, fly = sparse_view((16, 16), 4, kernel="sparse"), sparse_view((16, 16), 4,
                                                                    kernel="on_the_fly")
    x = jnp.ones((16, 16))
    reads = lambda f, v: "uqrecon_ell_matvec" in str(jax.make_jaxpr(f)(v))
    assert reads(op._apply, x) and reads(op._adjoint, op(x))
    assert not reads(fly._apply, x) and not reads(fly._adjoint, fly(x))
    np.testing.assert_allclose(op(x), fly(x), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(tomo_module.jax, "default_backend", lambda: "gpu")
    assert sparse_view((16, 16), 4).kernel == "on_the_fly"
    assert fan_beam((16, 16), 4, 3.0, 1.0).kernel == "on_the_fly"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("make", [lambda **k: sparse_view((16, 16), 7, **k),
                                  lambda **k: fan_beam((16, 16), 8, 3.0, 1.0, **k)])
def test_jit_vmap_grad(make, kernel):
    op = make(kernel=kernel)
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


def test_posterior_identity_ignores_the_stored_matrix():
    """A posterior's content hash and catalogue fingerprint are those of its canonical
    form: the same model hashes the same whether its ray transform stores the sparse
    matrix (CPU) or computes on the fly (accelerators), while another geometry still
    hashes differently. Catches hashing the raw pytree (the stored tables then make the
    two kernels' hashes and fingerprints differ)."""
    from uqrecon import catalogue
    from uqrecon.models import GMRF, Gaussian, Posterior
    from uqrecon.models.identity import posterior_hash

    y = jnp.ones(sparse_view((16, 16), 6).range_shape)

    def post(kernel, views=6):
        return Posterior(Gaussian(sparse_view((16, 16), views, kernel=kernel), y, 0.1),
                         GMRF((16, 16), 1.0))

    sparse, fly = post("sparse"), post("on_the_fly")
    assert sparse.likelihood.operator.kernel == "sparse"
    assert posterior_hash(sparse) == posterior_hash(fly)
    assert catalogue.fingerprint(sparse) == catalogue.fingerprint(fly)
    other = Posterior(Gaussian(sparse_view((16, 16), 6, angle_range=(0.0, 3.0)), y, 0.1),
                      GMRF((16, 16), 1.0))
    assert posterior_hash(other) != posterior_hash(sparse)


def test_auto_bounds_the_transposed_table_and_replace_rebuilds(monkeypatch):
    """``"auto"`` also bounds the transposed table, which narrow detector cells make
    larger than the forward one (here 25,632 against 20,480 stored entries): with the
    bound between the two sizes it computes on the fly, also when the estimate made
    before building lets it through (as for fan beams, whose transposed table is known
    only once built; patched here). ``dataclasses.replace`` keeps the stored form and
    rebuilds it from the copy's own tables. Catches a bound on the forward table alone
    (the check after building) and a replaced copy that keeps stale tables (or raises on
    the ``ell`` field)."""
    import dataclasses

    op = sparse_view((16, 16), 8, num_det=80, det_width=0.3, kernel="sparse")
    assert op.ell.adj.size > op.ell.fwd.size
    monkeypatch.setattr(tomo_module, "SPARSE_MAX_ENTRIES", op.ell.fwd.size)
    monkeypatch.setattr(tomo_module, "_sparse_entries_bound", lambda plan: op.ell.fwd.size)
    assert sparse_view((16, 16), 8, num_det=80, det_width=0.3).kernel == "on_the_fly"
    other = sparse_view((16, 16), 8, num_det=80, det_width=0.4, kernel="on_the_fly")
    copy = dataclasses.replace(op, tables=other.tables)
    assert copy.kernel == "sparse"
    _assert_same_matrix(copy, other)

"""Phantoms: ODL references, range/shape/determinism, JAX transformations, bad inputs;
and birdcage coil maps."""

import jax
import jax.numpy as jnp
import numpy as np
import odl
import pytest
from odl.core.phantom.geometric import ellipsoid_phantom
from odl.core.phantom.transmission import shepp_logan_ellipsoids

from uqrecon import phantoms as P
from uqrecon.operators.coils import birdcage_maps

SHAPES = [(64, 64), (37, 50)]


def _in_unit_range(x):
    x = np.asarray(x)
    return x.min() >= 0.0 and x.max() <= 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_shepp_logan_is_odls(shape):
    space = odl.uniform_discr([-1, -1], [1, 1], shape)
    for modified, scale in ((True, 1.0), (False, 0.5)):
        x = P.shepp_logan(shape, modified=modified)
        assert x.shape == shape and x.dtype == jnp.float32 and _in_unit_range(x)
        ref = odl.core.phantom.shepp_logan(space, modified=modified).data * scale
        np.testing.assert_allclose(x, ref, atol=1e-6)
        assert np.asarray(x).max() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_jax_ellipse_rasteriser_matches_odl(shape):
    """Same layout and rotation convention as ODL, to the pixel (float64; values differ
    only by the summation order of overlapping ellipses, ~1e-16)."""
    space = odl.uniform_discr([-1, -1], [1, 1], shape)
    sl = np.array(shepp_logan_ellipsoids(2, modified=True))
    rnd = np.asarray(P._random_ellipse_params(jax.random.key(3), 25, jnp.float32), np.float64)
    raster = jax.jit(P.ellipse_phantom, static_argnums=1, static_argnames="dtype")
    with jax.enable_x64(True):
        for ellipses in (sl, rnd):
            ours = raster(ellipses, shape, dtype=jnp.float64)
            ref = ellipsoid_phantom(space, ellipses.tolist()).data
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_random_ellipses_range_determinism_and_transforms():
    shape = (32, 32)
    keys = jax.random.split(jax.random.key(0), 4)
    single = jax.jit(lambda k: P.random_ellipses(k, shape, num_ellipses=15))
    batch = jax.vmap(single)(keys)
    assert batch.shape == (4, *shape) and batch.dtype == jnp.float32
    assert _in_unit_range(batch)
    one = single(keys[1])
    np.testing.assert_allclose(batch[1], one, atol=1e-6)          # vmap == single
    np.testing.assert_array_equal(one, single(keys[1]))           # same key, same image
    for a in range(4):                                            # different keys differ
        for b in range(a):
            assert not np.array_equal(batch[a], batch[b])
    for img in np.asarray(batch):                                 # not blank, not saturated
        assert 0.05 < np.mean(img > 0) < 0.95
        assert len(np.unique(np.round(img, 4))) > 3


def test_brain_mri_structure_and_complex_version():
    shape = (64, 64)
    x = np.asarray(P.brain_mri(shape))
    assert x.shape == shape and x.dtype == np.float32 and _in_unit_range(x)
    xx, yy = (np.asarray(g) for g in P.grid(shape))

    def value_at(px, py):
        i, j = np.argmin(np.abs(xx[:, 0] - px)), np.argmin(np.abs(yy[0] - py))
        return x[i, j]

    assert value_at(0.0, 0.95) < 0.05                       # background outside the head
    assert value_at(-0.2, 0.35) > 0.65                      # white matter
    assert value_at(-0.12, 0.09) < 0.25                     # lateral ventricle (CSF)
    assert value_at(0.3, 0.3) > 0.9                         # lesion
    hard = np.asarray(P.brain_mri(shape, edge_width=0.0))
    layer_values = np.append(P.BRAIN_ELLIPSES[:, 0], 0.0)       # painted, not summed
    assert all(np.isclose(layer_values, v, atol=1e-6).any() for v in np.unique(hard))
    z = np.asarray(P.brain_mri(shape, complex_valued=True))
    assert np.iscomplexobj(z) and z.shape == shape
    np.testing.assert_allclose(np.abs(z), x, atol=1e-6)
    phase = np.angle(z)[x > 0.3]
    assert np.ptp(phase) > 0.5                              # a real (smooth) phase
    inside = x > 0.3
    grad = np.abs(np.diff(np.angle(z), axis=0))[inside[1:] & inside[:-1]]
    assert grad.max() < 0.2                                 # smooth: no phase wraps


def test_phantom_bad_inputs():
    with pytest.raises(ValueError, match="'shape'"):
        P.shepp_logan((0, 8))
    with pytest.raises(TypeError, match="'shape'"):
        P.brain_mri(8)
    with pytest.raises(TypeError, match="'key'"):
        P.random_ellipses(0, (8, 8))
    with pytest.raises(ValueError, match="'num_ellipses'"):
        P.random_ellipses(jax.random.key(0), (8, 8), num_ellipses=0)
    with pytest.raises(TypeError, match="'dtype'"):
        P.random_ellipses(jax.random.key(0), (8, 8), dtype=jnp.int32)
    with pytest.raises(ValueError, match="'ellipses'"):
        P.ellipse_phantom(np.zeros((3, 5)), (8, 8))
    with pytest.raises(ValueError, match="'edge_width'"):
        P.brain_mri((8, 8), edge_width=-1.0)


def test_birdcage_maps_normalisation_and_geometry():
    shape, nc = (24, 32), 8
    s = np.asarray(birdcage_maps(shape, nc))
    assert s.shape == (nc, *shape) and s.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(s) ** 2, axis=0), 1.0, rtol=1e-5)
    raw = np.asarray(birdcage_maps(shape, nc, normalize=False))
    h, w = shape
    for c in range(nc):
        # |S_c| = 1 / distance to coil c at angle 2 pi c / nc on the circle of radius 1.5
        # in coordinates ((j - w/2) / (w/2), (i - h/2) / (h/2)) (sigpy's convention)
        cx, cy = 1.5 * np.cos(2 * np.pi * c / nc), 1.5 * np.sin(2 * np.pi * c / nc)
        i, j = 5, 7
        d = np.hypot((j - w / 2) / (w / 2) - cx, (i - h / 2) / (h / 2) - cy)
        assert abs(raw[c, i, j]) == pytest.approx(1 / d, rel=1e-6)
        # the coil is most sensitive at the image pixel nearest to it
        ii, jj = np.unravel_index(np.argmax(np.abs(raw[c])), shape)
        assert np.hypot((jj - w / 2) / (w / 2) - cx, (ii - h / 2) / (h / 2) - cy) < 1.5 - 0.9
    np.testing.assert_allclose(s, raw / np.sqrt(np.sum(np.abs(raw) ** 2, 0)), atol=1e-6)
    with pytest.raises(ValueError, match="'num_coils'"):
        birdcage_maps(shape, 0)
    with pytest.raises(ValueError, match="'radius'"):
        birdcage_maps(shape, 4, radius=0.5)
    with pytest.raises(ValueError, match="'shape'"):
        birdcage_maps((8,), 4)
    with pytest.raises(TypeError, match="'dtype'"):
        birdcage_maps(shape, 4, dtype=jnp.float32)

"""Test images on ``[-1, 1]^2`` with values in ``[0, 1]``, in ODL's array layout.

Layout: ``x[i, j] = f(x_i, y_j)`` with axis 0 the ``x`` axis, on the cells of
``odl.uniform_discr([-1, -1], [1, 1], shape)``. Like ODL's phantoms, shapes are evaluated
at coordinates stretched so that the outermost cell midpoints sit at ``+-1``
(``x_i = -1 + 2 i / (H - 1)``, see :func:`grid`). Ellipses use ODL's parametrisation
``(value, axis_1, axis_2, center_x, center_y, rotation)``, so the JAX rasteriser
:func:`ellipse_phantom` reproduces ``odl.core.phantom.ellipsoid_phantom``.

No real CT or MR image ships offline with the installed packages (scikit-image fetches
its MR data with ``pooch``), so there is no ``real_image`` here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["grid", "ellipse_phantom", "shepp_logan", "random_ellipses", "brain_mri",
           "BRAIN_ELLIPSES"]


def _check_shape(shape) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"'shape' must be a tuple of two ints, got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be two positive ints (H, W), got {shape}")
    return shape


def _check_float_dtype(dtype, name="dtype"):
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"'{name}' must be a floating dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"'{name}' must be a floating dtype, got {dt}")
    return dt


def grid(shape, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Phantom coordinates ``(X, Y)``, each of ``shape``, ``X`` varying along axis 0.

    ODL's convention for phantoms: the cell midpoints rescaled to ``[-1, 1]`` (0 for an
    axis of length 1), i.e. ``linspace(-1, 1, n)``.
    """
    h, w = _check_shape(shape)
    x = jnp.linspace(-1.0, 1.0, h, dtype=dtype) if h > 1 else jnp.zeros(1, dtype)
    y = jnp.linspace(-1.0, 1.0, w, dtype=dtype) if w > 1 else jnp.zeros(1, dtype)
    return jnp.meshgrid(x, y, indexing="ij")


def _ellipse_radius(e, xx, yy):
    """ODL's normalised radius: ``<= 1`` inside the ellipse ``e`` (a row of 6 numbers)."""
    _, a, b, x0, y0, theta = (e[k] for k in range(6))
    c, s = jnp.cos(theta), jnp.sin(theta)
    dx, dy = xx - x0, yy - y0
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (u / a) ** 2 + (v / b) ** 2


def ellipse_phantom(ellipses, shape, edge_width: float = 0.0, dtype=jnp.float32) -> jax.Array:
    """Sum of ellipse indicators times their values (not clipped); jit/vmap-able in ``ellipses``.

    ``ellipses`` is ``(n, 6)``: ``(value, axis_1, axis_2, center_x, center_y, rotation)``.
    ``edge_width > 0`` replaces each indicator by a logistic ramp of that width in units of
    the ellipse's normalised radius (smooth edges, e.g. for MRI-like images).
    """
    dtype = _check_float_dtype(dtype)
    ellipses = jnp.asarray(ellipses, dtype)
    if ellipses.ndim != 2 or ellipses.shape[1] != 6:
        raise ValueError(f"'ellipses' must have shape (n, 6), got {ellipses.shape}")
    edge_width = float(edge_width)
    if not (math.isfinite(edge_width) and edge_width >= 0):
        raise ValueError(f"'edge_width' must be a finite number >= 0, got {edge_width!r}")
    xx, yy = grid(shape, dtype)

    def one(e):
        r2 = _ellipse_radius(e, xx, yy)
        if edge_width == 0.0:
            inside = (r2 <= 1).astype(dtype)
        else:
            inside = jax.nn.sigmoid((1.0 - jnp.sqrt(r2)) / edge_width)
        return e[0] * inside

    return jnp.sum(jax.vmap(one)(ellipses), axis=0)


def shepp_logan(shape, modified: bool = True, dtype=jnp.float32) -> jax.Array:
    """Shepp-Logan phantom from ODL (``odl.core.phantom.shepp_logan``).

    The modified phantom already lies in ``[0, 1]``; the original one (values up to 2) is
    divided by 2. Clipped to ``[0, 1]`` against ODL's round-off (it nudges two values by
    5e-17).
    """
    import odl  # deferred: ODL is slow to import and only needed here

    shape = _check_shape(shape)
    dtype = _check_float_dtype(dtype)
    space = odl.uniform_discr([-1, -1], [1, 1], shape)
    data = np.asarray(odl.core.phantom.shepp_logan(space, modified=bool(modified)).data)
    if not modified:
        data = data / 2.0
    return jnp.asarray(np.clip(data, 0.0, 1.0), dtype)


def _check_key(key):
    ok = isinstance(key, jax.Array) and (
        (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ())
        or (key.dtype == jnp.uint32 and key.shape == (2,)))
    if not ok:
        raise TypeError(f"'key' must be one JAX PRNG key (jax.random.key(seed) or "
                        f"jax.random.PRNGKey(seed)); use jax.vmap for a batch of keys; "
                        f"got {type(key).__name__} {getattr(key, 'shape', '')}")


def _random_ellipse_params(key, num_ellipses: int, dtype):
    """DIVal-like random ellipses: centres in ``[-0.7, 0.7]^2``, exponential axes."""
    kv, ka, kc, kt = jax.random.split(key, 4)
    value = jax.random.uniform(kv, (num_ellipses,), dtype, -0.4, 1.0)
    axes = jnp.clip(0.03 + 0.2 * jax.random.exponential(ka, (num_ellipses, 2), dtype),
                    0.03, 0.8)
    centre = jax.random.uniform(kc, (num_ellipses, 2), dtype, -0.7, 0.7)
    theta = jax.random.uniform(kt, (num_ellipses, 1), dtype, 0.0, 2 * jnp.pi)
    return jnp.concatenate([value[:, None], axes, centre, theta], axis=1)


def random_ellipses(key, shape, num_ellipses: int = 20, dtype=jnp.float32) -> jax.Array:
    """Random ellipse image for training data, values clipped to ``[0, 1]``.

    ``num_ellipses`` ellipses with values in ``[-0.4, 1]``, axes ``0.03 + Exp(mean 0.2)``
    (at most 0.8), centres uniform in ``[-0.7, 0.7]^2``, uniform rotations; overlaps add.
    Pure in ``key`` (same key, same image), so ``jax.vmap`` over keys gives a batch;
    ``shape``, ``num_ellipses`` and ``dtype`` must be static under ``jit``.
    """
    _check_key(key)
    shape = _check_shape(shape)
    if not isinstance(num_ellipses, (int, np.integer)) or num_ellipses < 1:
        raise ValueError(f"'num_ellipses' must be a positive int, got {num_ellipses!r}")
    dtype = _check_float_dtype(dtype)
    params = _random_ellipse_params(key, int(num_ellipses), dtype)
    return jnp.clip(ellipse_phantom(params, shape, dtype=dtype), 0.0, 1.0)


#: T1-weighted-like axial brain slice as painted layers ``(value, a, b, x0, y0, rotation)``:
#: each layer *replaces* what lies under it (values are absolute grey levels).
BRAIN_ELLIPSES = np.array([
    [0.85, 0.92, 0.74, 0.00, 0.00, 0.0],    # scalp / subcutaneous fat (bright)
    [0.08, 0.86, 0.68, 0.00, 0.00, 0.0],    # skull (cortical bone, dark)
    [0.25, 0.82, 0.64, 0.00, 0.00, 0.0],    # CSF in the subarachnoid space
    [0.50, 0.79, 0.61, 0.00, 0.00, 0.0],    # grey matter
    [0.72, 0.66, 0.49, 0.00, 0.00, 0.0],    # white matter
    [0.50, 0.10, 0.08, 0.05, 0.16, 0.0],    # deep grey nuclei (thalamus), left
    [0.50, 0.10, 0.08, 0.05, -0.16, 0.0],   # deep grey nuclei (thalamus), right
    [0.12, 0.26, 0.055, -0.12, 0.09, -0.25],  # lateral ventricle, left
    [0.12, 0.26, 0.055, -0.12, -0.09, 0.25],  # lateral ventricle, right
    [0.12, 0.06, 0.02, 0.08, 0.00, 0.0],    # third ventricle
    [0.25, 0.28, 0.02, -0.50, 0.00, 0.0],   # interhemispheric fissure (CSF)
    [0.95, 0.045, 0.045, 0.30, 0.30, 0.0],  # small bright lesion
])


def brain_mri(shape, complex_valued: bool = False, edge_width: float = 0.02,
              phase_strength: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Brain-like MRI phantom: scalp, skull, CSF, grey/white matter, ventricles, a lesion.

    Layers of :data:`BRAIN_ELLIPSES` are painted in order with logistic edges of width
    ``edge_width`` (normalised-radius units; 0 for hard edges). With ``complex_valued``
    the magnitude is multiplied by a smooth phase ``phase_strength * pi * (0.3 x - 0.2 y
    + 0.25 (x^2 + y^2) - 0.25)`` (a linear plus quadratic field, as from B0 offsets) and
    a complex array is returned; its magnitude is the real phantom.
    """
    shape = _check_shape(shape)
    dtype = _check_float_dtype(dtype)
    edge_width = float(edge_width)
    if not (math.isfinite(edge_width) and edge_width >= 0):
        raise ValueError(f"'edge_width' must be a finite number >= 0, got {edge_width!r}")
    phase_strength = float(phase_strength)
    if not math.isfinite(phase_strength):
        raise ValueError(f"'phase_strength' must be finite, got {phase_strength!r}")
    xx, yy = grid(shape, dtype)
    img = jnp.zeros(shape, dtype)
    for e in jnp.asarray(BRAIN_ELLIPSES, dtype):
        r2 = _ellipse_radius(e, xx, yy)
        if edge_width == 0.0:
            inside = (r2 <= 1).astype(dtype)
        else:
            inside = jax.nn.sigmoid((1.0 - jnp.sqrt(r2)) / edge_width)
        img = img + inside * (e[0] - img)      # paint: convex blend towards the layer value
    img = jnp.clip(img, 0.0, 1.0)
    if not complex_valued:
        return img
    phase = phase_strength * jnp.pi * (0.3 * xx - 0.2 * yy + 0.25 * (xx ** 2 + yy ** 2) - 0.25)
    return img * jnp.exp(1j * phase.astype(dtype))

"""Sampling masks: fastMRI line-mask semantics, statistics over seeds, determinism."""

import numpy as np
import pytest

from uqrecon.operators.masks import (FASTMRI_4X, FASTMRI_8X, equispaced_line_mask,
                                     random_line_mask, variable_density_mask)

SETTINGS = [FASTMRI_4X, FASTMRI_8X]


def _lines(mask, axis=-1):
    """The 1D line pattern of a line mask, after checking every line is all-or-nothing."""
    lines = mask.any(axis=0) if axis in (-1, 1) else mask.any(axis=1)
    full = np.broadcast_to(lines[None, :] if axis in (-1, 1) else lines[:, None], mask.shape)
    np.testing.assert_array_equal(mask, full)
    return lines


def _center_block(n, center_fraction):
    num_low = int(round(n * center_fraction))
    pad = (n - num_low + 1) // 2
    return np.arange(pad, pad + num_low)


@pytest.mark.parametrize("setting", SETTINGS)
def test_random_line_mask_statistics_match_fastmri(setting):
    """E[#lines] = N / acceleration: a 5-sigma check of the binomial mean over 200 seeds."""
    n, seeds = 320, 200
    acc, cf = setting["acceleration"], setting["center_fraction"]
    centre = _center_block(n, cf)
    counts = []
    for seed in range(seeds):
        lines = _lines(random_line_mask((4, n), seed=seed, **setting))
        assert lines[centre].all()
        counts.append(lines.sum())
    num_low = len(centre)
    p = (n / acc - num_low) / (n - num_low)
    sigma_of_mean = np.sqrt((n - num_low) * p * (1 - p) / seeds)
    assert abs(np.mean(counts) - n / acc) < 5 * sigma_of_mean
    # outer lines independent Bernoulli(p): the count variance is binomial (the sample
    # variance of 200 draws has relative std sqrt(2/199) ~ 0.1; 5 sigma)
    assert abs(np.var(counts, ddof=1) / ((n - num_low) * p * (1 - p)) - 1) < 0.5


@pytest.mark.parametrize("n", [63, 64, 320, 368])
def test_center_block_contains_dc_of_centred_kspace(n):
    """fastMRI's centre block is centred on index n // 2, the DC of CartesianMRI's layout."""
    for setting in SETTINGS:
        block = _center_block(n, setting["center_fraction"])
        assert block[0] <= n // 2 <= block[-1]
        assert len(block) == round(n * setting["center_fraction"])
        lines = _lines(equispaced_line_mask((2, n), seed=0, **setting))
        assert lines[block].all()


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("n", [64, 320, 372])
def test_equispaced_line_mask_structure(setting, n):
    acc, cf = setting["acceleration"], setting["center_fraction"]
    num_low = int(round(n * cf))
    spacing = acc * (num_low - n) / (num_low * acc - n)
    centre = _center_block(n, cf)
    for seed in range(5):
        lines = _lines(equispaced_line_mask((3, n), seed=seed, **setting))
        # centre block plus round(offset + k * spacing) for one offset in [0, round(spacing))
        candidates = []
        for offset in range(int(round(spacing))):
            expected = np.zeros(n, bool)
            expected[centre] = True
            expected[np.around(np.arange(offset, n - 1, spacing)).astype(int)] = True
            candidates.append(np.array_equal(lines, expected))
        assert any(candidates), f"seed {seed}: not centre block + equispaced lines"
        # total ~ N / acceleration: off by at most the offset and the centre overlap
        assert abs(lines.sum() - n / acc) <= 2


def test_line_masks_deterministic_per_seed_and_seed_dependent():
    for fn in (random_line_mask, equispaced_line_mask):
        a = fn((16, 64), seed=7, **FASTMRI_4X)
        np.testing.assert_array_equal(a, fn((16, 64), seed=7, **FASTMRI_4X))
        assert a.dtype == np.bool_ and a.shape == (16, 64)
        distinct = {fn((16, 64), seed=s, **FASTMRI_4X).tobytes() for s in range(10)}
        assert len(distinct) > 1


def test_line_mask_axis_zero_samples_rows():
    cols = random_line_mask((20, 12), seed=3, axis=-1, acceleration=2, center_fraction=0.1)
    rows = random_line_mask((12, 20), seed=3, axis=0, acceleration=2, center_fraction=0.1)
    np.testing.assert_array_equal(rows, cols.T)
    _lines(rows, axis=0)


def test_fastmri_extremes():
    full = random_line_mask((4, 30), acceleration=1, center_fraction=0.0, seed=0)
    assert full.all()
    only_centre = random_line_mask((4, 100), acceleration=10, center_fraction=0.1, seed=0)
    np.testing.assert_array_equal(np.flatnonzero(_lines(only_centre)), _center_block(100, 0.1))
    np.testing.assert_array_equal(
        equispaced_line_mask((4, 100), acceleration=10, center_fraction=0.1, seed=0),
        only_centre)


@pytest.mark.parametrize("shape, acc", [((64, 64), 4), ((33, 20), 8), ((16, 16), 1.5)])
def test_variable_density_mask_exact_count_and_centre(shape, acc):
    m = variable_density_mask(shape, acc, seed=0, center_radius=0.2)
    assert m.dtype == np.bool_ and m.shape == shape
    assert m.sum() == round(shape[0] * shape[1] / acc)
    h, w = shape
    ky = (np.arange(h) - h // 2) / (h / 2)
    kx = (np.arange(w) - w // 2) / (w / 2)
    r = np.hypot(ky[:, None], kx[None, :])
    assert m[r < 0.2].all() and m[h // 2, w // 2]


def test_variable_density_mask_density_decays_and_seeds():
    shape = (64, 64)
    masks = np.stack([variable_density_mask(shape, 4, seed=s) for s in range(20)])
    ky = (np.arange(64) - 32) / 32
    r = np.hypot(ky[:, None], ky[None, :])
    density = masks.mean(axis=0)
    rings = [density[(r >= lo) & (r < lo + 0.2)].mean() for lo in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert all(a > b for a, b in zip(rings, rings[1:]))
    np.testing.assert_array_equal(masks[3], variable_density_mask(shape, 4, seed=3))
    assert len({m.tobytes() for m in masks}) == len(masks)
    uniform = variable_density_mask(shape, 4, seed=0, decay=0.0, center_radius=0.0)
    assert uniform.sum() == 1024


def test_bad_mask_arguments():
    with pytest.raises(ValueError, match="'acceleration'"):
        random_line_mask((8, 8), acceleration=0.5)
    with pytest.raises(ValueError, match="'acceleration'"):
        equispaced_line_mask((8, 8), acceleration=float("nan"))
    with pytest.raises(ValueError, match="'center_fraction'"):
        random_line_mask((8, 8), center_fraction=1.0)
    with pytest.raises(ValueError, match="'center_fraction'"):
        equispaced_line_mask((8, 8), center_fraction=-0.1)
    with pytest.raises(ValueError, match="'center_fraction'"):
        random_line_mask((8, 100), acceleration=8, center_fraction=0.5)   # over budget
    with pytest.raises(ValueError, match="'shape'"):
        random_line_mask((8,))
    with pytest.raises(TypeError, match="'shape'"):
        equispaced_line_mask(8)
    with pytest.raises(ValueError, match="'axis'"):
        random_line_mask((8, 8), axis=2)
    with pytest.raises(ValueError, match="'acceleration'"):
        variable_density_mask((8, 8), acceleration=0.9)
    with pytest.raises(ValueError, match="'center_radius'"):
        variable_density_mask((16, 16), acceleration=8, center_radius=0.9)
    with pytest.raises(ValueError, match="'decay'"):
        variable_density_mask((8, 8), decay=-1)


@pytest.mark.parametrize("make", [random_line_mask, equispaced_line_mask])
def test_a_mask_that_would_keep_no_line_is_refused(make):
    """``acceleration`` above the number of lines, with no centre block, used to return an
    all-False mask silently (a forward operator that measures nothing). Fails (both
    masks) with the budget check and the empty-draw check removed; either check alone
    refuses these settings."""
    with pytest.raises(ValueError, match="'acceleration'=1000"):
        make((32, 32), acceleration=1000, center_fraction=0.0)
    assert make((32, 32), acceleration=32, center_fraction=0.0).any()

"""A count from a product of floats, rounded down without losing whole counts to round-off."""

from __future__ import annotations

import numpy as np

#: added before ``floor``: far below any genuine fractional part of a count, far above the
#: round-off of a float product (``0.29 * 100 = 28.999999999999996``)
ROUND_OFF = 1e-9


def whole_count(x):
    """``floor(x)`` for a count written as a float expression, e.g. ``rate * n``.

    In binary floating point ``0.29 * 100`` is ``28.999999999999996``: a plain ``floor``
    would give 28 where the count meant is 29. :data:`ROUND_OFF` is added first.

    Args:
        x: a float or an array of floats.

    Returns:
        An ``int`` for a scalar ``x``, else an integer array.
    """
    out = np.floor(np.asarray(x, float) + ROUND_OFF).astype(int)
    return int(out) if out.ndim == 0 else out

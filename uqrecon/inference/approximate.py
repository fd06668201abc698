"""``approximate(posterior, method=...)``: one entry point for Gaussian approximations.

Methods are looked up in a registry (``APPROXIMATIONS``); each has the common shape
``method(posterior, key, **config) -> Result``. The seed (or key) used is written into
the result's provenance so a run can be repeated exactly.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..linalg import full_precision
from .accounting import CallClock, complex_result, with_prelude
from .laplace import laplace
from .variational import lowrank, meanfield

__all__ = ["approximate", "APPROXIMATIONS", "register_approximation"]

APPROXIMATIONS: dict[str, Callable] = {
    "meanfield": meanfield,
    "lowrank": lowrank,
    "laplace": laplace,
}


def register_approximation(name: str, fn: Callable) -> None:
    """Add ``fn(posterior, key, **config) -> Result`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"'name' must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"'fn' must be callable, got {type(fn).__name__}")
    APPROXIMATIONS[name] = fn


@full_precision
def approximate(posterior, method: str = "laplace", *, key: jax.Array | None = None,
                seed: int | None = None, **config):
    """Gaussian approximation of ``posterior`` by ``method`` ('meanfield', 'lowrank',
    'laplace'); ``config`` goes to the method. Give ``key`` or ``seed`` (default seed 0);
    the same seed gives the same result.

    Args:
        posterior: a :class:`~uqrecon.models.Posterior`.
        method: ``'meanfield'``, ``'lowrank'`` or ``'laplace'``.
        key: JAX PRNG key (exclusive with ``seed``).
        seed: integer seed (None and no key: 0).
        **config: options of the method (e.g. ``rank``, ``tol``, ``num_steps``).

    Returns:
        A :class:`~uqrecon.result.Result` with Gaussian factors (``gaussian``), diagnostics
        and provenance.
    """
    from ..models.hyper import check_posterior
    check_posterior(posterior)
    if method not in APPROXIMATIONS:
        raise ValueError(f"unknown 'method' {method!r}; choose one of "
                         f"{sorted(APPROXIMATIONS)}")
    if posterior.constraint is not None:
        raise ValueError("'posterior' has a constraint (e.g. NonNegative), which a Gaussian "
                         "approximation on all of R^n cannot represent; drop it or sample "
                         "with 'myula'/'skrock'/'nuts'")
    if key is not None and seed is not None:
        raise ValueError("give either 'key' or 'seed', not both")
    with CallClock() as prelude:   # the key compiles once per process: count it here
        if key is None:
            seed = 0 if seed is None else seed
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"'seed' must be an integer, got {seed!r}")
            key = jax.random.PRNGKey(int(seed))
        cplx = jnp.issubdtype(jnp.dtype(posterior.dtype), jnp.complexfloating)
        if cplx:
            # a complex image is approximated in its real coordinates (Re x, Im x): the
            # Gaussian factors are those of that real vector (see uqrecon.result)
            target = posterior.real_coordinates(owner=f"approximate(method={method!r})")
            from ..models.realview import to_real
            for name in ("init", "mode"):     # complex starting images -> real coordinates
                if config.get(name) is not None and jnp.iscomplexobj(jnp.asarray(config[name])):
                    config = {**config, name: to_real(config[name])}
        else:
            target = posterior
    result = APPROXIMATIONS[method](target, key, **config)
    result = (complex_result(result, posterior, prelude) if cplx
              else with_prelude(result, prelude))
    provenance = dict(result.provenance)
    provenance["method"] = method
    provenance["seed"] = None if seed is None else int(seed)
    if seed is None:
        provenance["key"] = np.asarray(jax.random.key_data(key)).tolist()
    return result.replace(provenance=provenance)

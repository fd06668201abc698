"""What every inference method's Result says about its own call, measured one way.

Samplers (``sample``), variational and Laplace approximations (``approximate``) and the
exact Gaussian reference (``uqrecon.gold.exact_gaussian``) all time their call with a
:class:`CallClock` and pack their output with :func:`method_result`, so the fields mean
the same everywhere:

* ``timings["total_s"]``: wall seconds of the call (the clock's block);
* ``timings["compile_s"]``: seconds JAX spent tracing, lowering and compiling inside it,
  from JAX's own monitoring events (an executable taken from a cache costs none);
* ``timings["setup_s"]`` (where a method separates it): set-up work, compilation excluded;
* ``timings["run_s"]``: the rest, ``total - compile - setup``;
* ``diagnostics["num_compiles"]``: XLA compilations that really happened in the call (a
  second call on a same-shaped problem reports 0);
* ``provenance``: method, configuration, seed, dtype (float32 or float64, as used),
  library versions, device, the exactness class and the model's identity.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax

__all__ = ["CompileMonitor", "CallClock", "method_result", "with_prelude", "APPROXIMATION"]

# The exactness class of Gaussian approximations (VI, Laplace): neither exact nor
# asymptotically exact for a general posterior (exact only where the family contains it).
APPROXIMATION = "approximation"

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_BACKEND_COMPILE = _COMPILE_EVENTS[2]


class CompileMonitor:
    """Counts the XLA compilations (and sums the time spent tracing, lowering and
    compiling) that happen while it is active, from JAX's own monitoring events: an
    executable taken from a cache fires none, so this counts what really compiled.
    Global: compilations of other threads in the same process are counted too."""

    BACKEND = _BACKEND_COMPILE

    def __init__(self):
        self.num_compiles = 0
        self.compile_s = 0.0
        self.names: list[str] = []

    def _listener(self, event, duration, **kw):
        if event in _COMPILE_EVENTS:
            self.compile_s += float(duration)
        if event == _BACKEND_COMPILE:
            self.num_compiles += 1
            self.names.append(str(kw.get("fun_name", "?")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


class CallClock(CompileMonitor):
    """A :class:`CompileMonitor` that also keeps the wall clock of its block.

    ``with CallClock() as clock: ...`` then ``clock.timings(setup_s=...)``. Reading the
    timings inside the block gives the figures so far.
    """

    def __enter__(self):
        self._t0 = time.perf_counter()
        self._t1 = None
        return super().__enter__()

    def __exit__(self, *exc):
        self._t1 = time.perf_counter()
        return super().__exit__(*exc)

    @property
    def total_s(self) -> float:
        end = self._t1 if self._t1 is not None else time.perf_counter()
        return end - self._t0

    def timings(self, setup_s: float | None = None) -> dict:
        """``{"compile_s", "run_s", "total_s"}`` (and ``"setup_s"`` when given, which
        must exclude compilation): ``run_s = total - compile - setup``, never negative."""
        total = self.total_s
        out = {"compile_s": self.compile_s}
        if setup_s is not None:
            out["setup_s"] = max(float(setup_s), 0.0)
        out["run_s"] = max(total - self.compile_s - out.get("setup_s", 0.0), 0.0)
        out["total_s"] = total
        return out


def method_result(posterior, method: str, config: Mapping | None, clock: CallClock, *,
                  mean, variance, exactness: str, draws=None,
                  diagnostics: Mapping[str, Any] | None = None, gaussian=None, seed=None,
                  setup_s: float | None = None, **provenance: Any):
    """The :class:`~uqrecon.result.Result` of one inference call.

    Args:
        posterior: the posterior the method ran on (its dtype and identity go into the
            provenance).
        method: the method's name as the user asked for it.
        config: the options that determine the output.
        clock: the call's :class:`CallClock` (closed or still running).
        mean, variance: pixel mean and variance, the posterior's image shape.
        exactness: ``"exact"``, ``"asymptotically exact"``, ``"biased"`` or
            :data:`APPROXIMATION`.
        draws: ``(chains, draws, *shape)`` or None.
        diagnostics: method-specific diagnostics; ``num_compiles`` is added.
        gaussian: Gaussian factors of an approximation (see :class:`Result`).
        seed: the seed, if the method is random.
        setup_s: set-up seconds excluding compilation, for methods that separate them.
        **provenance: further provenance fields (solver, variance estimator, ...).

    Returns:
        The Result.
    """
    from uqrecon.models.identity import model_identity
    from uqrecon.result import Result, make_provenance

    diagnostics = dict(diagnostics or {})
    diagnostics["num_compiles"] = clock.num_compiles
    prov = make_provenance(method, config, seed=seed, dtype=posterior.dtype,
                           exactness=exactness, **model_identity(posterior), **provenance)
    return Result(mean=mean, variance=variance, draws=draws, diagnostics=diagnostics,
                  timings=clock.timings(setup_s), provenance=prov, gaussian=gaussian)


def with_prelude(result, *clocks: CallClock):
    """``result`` with the work of ``clocks`` -- clocks around what the entry point did
    before the method's own clock started (e.g. making the PRNG key, which compiles
    once per process) or after it stopped (e.g. turning a complex image's real
    coordinates back into complex ones) -- added to its timings and compile count, so
    the Result accounts for the whole call."""
    t = dict(result.timings)
    t["compile_s"] = t.get("compile_s", 0.0) + sum(c.compile_s for c in clocks)
    t["total_s"] = t.get("total_s", 0.0) + sum(c.total_s for c in clocks)
    t["run_s"] = max(t["total_s"] - t["compile_s"] - t.get("setup_s", 0.0), 0.0)
    d = dict(result.diagnostics)
    d["num_compiles"] = d.get("num_compiles", 0) + sum(c.num_compiles for c in clocks)
    return result.replace(timings=t, diagnostics=d)


def complex_result(result, posterior, *clocks: CallClock):
    """``result``, computed on ``posterior.real_coordinates()``, as the Result of the
    complex ``posterior``: images back to complex (:meth:`Result.from_real_coordinates`),
    the provenance naming the complex model, its dtype and the coordinates used; the
    conversion's work and that of ``clocks`` (the caller's conversions before the method
    ran) added to its timings (:func:`with_prelude`). Shared by ``sample``,
    ``approximate`` and ``gold.exact_gaussian``."""
    import jax.numpy as jnp

    from ..models.identity import model_identity
    from ..result import Result
    with CallClock() as back:
        prov = {**result.provenance, **model_identity(posterior),
                "dtype": jnp.dtype(posterior.dtype).name,
                "coordinates": "real: (Re x, Im x) on a leading axis"}
        out = Result.from_real_coordinates(result, provenance=prov)
    return with_prelude(out, *clocks, back)

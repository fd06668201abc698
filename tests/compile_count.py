"""Counting XLA compilations in tests, independently of uqrecon's own counter
(:class:`uqrecon.inference.accounting.CompileMonitor`, which the tests check against this).

JAX fires ``/jax/core/compile/backend_compile_duration`` once per XLA compilation and
never for an executable taken from jit's cache.
"""

import jax

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class CompileCount:
    """Context manager: ``names`` lists the functions XLA compiled while it was active."""

    def __init__(self):
        self.names = []

    def _listener(self, event, duration, **kw):
        if event == BACKEND_COMPILE:
            self.names.append(kw.get("fun_name"))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

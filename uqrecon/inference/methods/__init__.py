"""One module per sampling method: its options (popped and validated before any
expensive work), defaults and set-up, turning a Posterior into a static
:class:`~uqrecon.inference.samplers.base.Sampler`, its ``params`` pytree and the chains'
starting images (:class:`~.common.Built`). :func:`uqrecon.inference.sample` picks the
builder from :data:`uqrecon.inference.sample.METHODS`; the kernels themselves live in
:mod:`uqrecon.inference.samplers`.

Every builder has the signature ``build(post, key, cfg, num_chains, dtype)`` (plus
``num_warmup`` for the methods tuned in the set-up: MCLMC, MAMS, ChEES).
"""

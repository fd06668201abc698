"""Walk a jaxpr and the jaxprs nested in its equations (loops, conds, custom rules, pjit)."""


def equations(jaxpr):
    """Every equation of ``jaxpr`` (a Jaxpr or ClosedJaxpr) and of its sub-jaxprs."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)

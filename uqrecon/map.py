"""Maximum a posteriori estimation through the ``Posterior`` interface.

``map_estimate(posterior)`` picks L-BFGS (optax, zoom line search) for smooth,
unconstrained posteriors and FISTA (accelerated proximal gradient with adaptive restart,
step ``1 / post.lipschitz()``) otherwise; ``'adam'`` and ``'pdhg'`` (Condat-Vu primal-dual
for TV / wavelet-l1 penalties plus a constraint) are available by name. Every method stops
when the relative change of the iterate falls below ``tol`` and runs in one compiled loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .linalg import full_precision

__all__ = ["map_estimate"]

_METHODS = ("auto", "lbfgs", "adam", "fista", "pdhg")


def _rel_change(new, old):
    return jnp.linalg.norm((new - old).ravel()) / jnp.maximum(
        jnp.linalg.norm(new.ravel()), jnp.finfo(jnp.real(new).dtype).tiny)


def _to_real(x):
    """Complex images are optimised as (real, imag) pairs: optax works on real arrays."""
    return jnp.stack([jnp.real(x), jnp.imag(x)]) if jnp.iscomplexobj(x) else x


def _from_real(r, like):
    return (r[0] + 1j * r[1]).astype(like.dtype) if jnp.iscomplexobj(like) else r


def _loop(step_fn, carry0, max_iter, tol):
    """Run ``step_fn(carry) -> (carry, x_new, x_old)`` until converged; returns
    ``(carry, iterations, converged)``."""

    def cond(state):
        k, _, change = state
        return (k < max_iter) & (change > tol)

    def body(state):
        k, carry, _ = state
        carry, new, old = step_fn(carry)
        return k + 1, carry, _rel_change(new, old)

    leaf = jax.tree_util.tree_leaves(carry0)[0]
    big = jnp.asarray(jnp.inf, jnp.real(leaf).dtype)
    k, carry, change = jax.lax.while_loop(cond, body, (0, carry0, big))
    return carry, k, change <= tol


def _smooth_solver(potential, x0, optimizer, uses_state, max_iter, tol):
    """Optax loop minimising ``potential``; returns ``(x, iterations, converged, gradient
    evaluations)``. For L-BFGS every zoom line-search step evaluates value and gradient
    once (the first one's value and gradient are reused by the next iteration through
    the state). Also used by the samplers to find the unconstrained mode."""
    f_real = lambda r: potential(_from_real(r, x0))
    r0 = _to_real(x0)
    vg = (optax.value_and_grad_from_state(f_real) if uses_state
          else lambda r, state: jax.value_and_grad(f_real)(r))

    def step(carry):
        r, state, evals = carry
        value, grad = vg(r, state=state)
        updates, state = optimizer.update(grad, state, r, value=value, grad=grad,
                                          value_fn=f_real)
        r_new = optax.apply_updates(r, updates)
        if uses_state:
            evals = evals + jnp.asarray(
                optax.tree_utils.tree_get(state, "num_linesearch_steps"), jnp.int32)
        else:
            evals = evals + 1
        return (r_new, state, evals), r_new, r

    (r, _, evals), k, conv = _loop(step, (r0, optimizer.init(r0), jnp.int32(0)),
                                   max_iter, tol)
    # L-BFGS: one value-and-grad at x0 before the first line search
    return _from_real(r, x0), k, conv, evals + (1 if uses_state else 0)


@functools.partial(jax.jit, static_argnames=("method",))
def _run_smooth(post, x0, max_iter, tol, learning_rate, method):
    """Compiled once per posterior structure/shape and method: the posterior is a pytree
    argument, ``max_iter``, ``tol`` and ``learning_rate`` are traced."""
    opt = optax.lbfgs() if method == "lbfgs" else optax.adam(learning_rate)
    return _smooth_solver(post.smooth_potential, x0, opt, method == "lbfgs", max_iter, tol)


def _fista(post, x0, step, max_iter, tol):
    """FISTA with O'Donoghue-Candes gradient restart (monotone in practice)."""

    def one(carry):
        x, y, t = carry
        x_new = post.prox(y - step * post.grad_smooth_potential(y), step)
        restart = jnp.real(jnp.vdot((y - x_new).ravel(), (x_new - x).ravel())) > 0
        t = jnp.where(restart, 1.0, t)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y_new = x_new + ((t - 1.0) / t_new) * (x_new - x)
        return (x_new, y_new, t_new), x_new, x

    one_t = jnp.ones((), jnp.real(x0).dtype)
    (x, _, _), k, conv = _loop(one, (x0, x0, one_t), max_iter, tol)
    return x, k, conv


@jax.jit
def _run_fista(post, x0, step, max_iter, tol):
    """FISTA compiled once per posterior structure/shape (one gradient per iteration)."""
    return _fista(post, x0, step, max_iter, tol)


def _pdhg(post, x0, lip, max_iter, tol, ratio):
    """Condat-Vu: ``min f(x) + sum_i g_i(K_i x) + i_C(x)`` with projected dual steps."""
    pens = [t for t in post.nonsmooth if not t.is_constraint]
    if any(not hasattr(t, "analysis_operator") for t in pens):
        raise ValueError("map_estimate: method 'pdhg' needs penalties of the form "
                         "w |K x| (TV, WaveletL1) and at most a constraint")
    ops = [t.analysis_operator for t in pens]
    cons = post.constraint
    project = (lambda v: v) if cons is None else cons.project
    knorm2 = sum(op.norm() ** 2 for op in ops) if ops else jnp.asarray(0.0)
    knorm2 = jnp.maximum(knorm2, jnp.finfo(jnp.float32).tiny)
    c = ratio * jnp.sqrt(knorm2) if ops else 0.5 * lip    # no penalty: step 1/L
    tau = 1.0 / (0.5 * lip + c)
    sigma = 0.99 * c / knorm2                          # 1/tau - sigma ||K||^2 >= lip/2

    def one(carry):
        x, qs = carry
        g = post.grad_smooth_potential(x) + sum(op.adjoint(q) for op, q in zip(ops, qs))
        x_new = project(x - tau * g)
        bar = 2.0 * x_new - x
        qs = tuple(t.project_dual(q + sigma * op(bar)) for t, op, q in zip(pens, ops, qs))
        return (x_new, qs), x_new, x

    qs0 = tuple(jnp.zeros(op.range_shape, x0.dtype) for op in ops)
    (x, _), k, conv = _loop(one, (x0, qs0), max_iter, tol)
    return x, k, conv


@jax.jit
def _run_pdhg(post, x0, lip, max_iter, tol, ratio):
    """Condat-Vu compiled once per posterior structure/shape (one gradient per iteration)."""
    return _pdhg(post, x0, lip, max_iter, tol, ratio)


def _default_x0(post):
    zero = jnp.zeros(post.shape, post.dtype)
    return zero if post.constraint is None else post.transform.forward(zero)


@full_precision
def map_estimate(posterior, x0=None, method="auto", max_iter=1000, tol=1e-6, *,
                 learning_rate=1e-2, pdhg_ratio=1.0, key=None):
    """The MAP image and ``info`` (method, iterations, converged, objective, step).

    ``method``: ``'auto'`` (L-BFGS if ``posterior`` is smooth and unconstrained, else
    FISTA), ``'lbfgs'``, ``'adam'`` (``learning_rate``), ``'fista'`` or ``'pdhg'``.
    ``x0`` defaults to zeros (mapped into the constraint set if there is one).

    Args:
        posterior: a :class:`~uqrecon.models.Posterior`.
        x0: starting image (None: zeros, projected onto the constraint set).
        method: ``'auto'``, ``'lbfgs'``, ``'adam'``, ``'fista'`` or ``'pdhg'``.
        max_iter: maximum number of iterations.
        tol: relative tolerance of the stopping rule.
        learning_rate: Adam's learning rate.
        pdhg_ratio: PDHG's ratio of primal to dual step size.
        key: JAX PRNG key (used for the Lipschitz estimate).

    Returns:
        A pair ``(x_map, info)``: the MAP image and a dict of method, iterations, converged,
        objective, step.
    """
    from .models.hyper import check_posterior
    check_posterior(posterior, 'map_estimate')
    if method not in _METHODS:
        raise ValueError(f"map_estimate: argument 'method' must be one of {_METHODS}, "
                         f"got {method!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 1:
        raise ValueError(f"map_estimate: argument 'max_iter' must be a positive int, "
                         f"got {max_iter!r}")
    if not isinstance(tol, (int, float, np.floating)) or not (0 < tol < np.inf):
        raise ValueError(f"map_estimate: argument 'tol' must be a number > 0, got {tol!r}")
    max_iter = int(max_iter)
    post = posterior
    x0 = _default_x0(post) if x0 is None else jnp.asarray(x0, post.dtype)
    if tuple(x0.shape) != post.shape:
        raise ValueError(f"map_estimate: argument 'x0' has shape {tuple(x0.shape)}, "
                         f"expected {post.shape}")
    if not bool(jnp.all(jnp.isfinite(x0))):
        raise ValueError("map_estimate: argument 'x0' contains NaN or inf")
    smooth_unconstrained = not post.nonsmooth
    if method == "auto":
        method = "lbfgs" if smooth_unconstrained else "fista"
    if method in ("lbfgs", "adam") and not smooth_unconstrained:
        raise ValueError(f"map_estimate: method {method!r} needs a smooth unconstrained "
                         f"posterior; use 'fista' or 'pdhg' (non-smooth terms: "
                         f"{[type(t).__name__ for t in post.nonsmooth]})")
    info = {"method": method}
    dt = jnp.real(x0).dtype
    iters_cap, tol_t = jnp.int32(max_iter), jnp.asarray(tol, dt)
    if method in ("lbfgs", "adam"):
        x, k, conv, evals = _run_smooth(post, x0, iters_cap, tol_t,
                                        jnp.asarray(learning_rate, dt), method)
        num_grad = int(evals)
    else:
        lip = post.lipschitz(key, x=x0)
        info["lipschitz"] = float(lip)
        if method == "fista":
            step = 1.0 / lip
            info["step"] = float(step)
            x, k, conv = _run_fista(post, x0, jnp.asarray(step, dt), iters_cap, tol_t)
        else:
            x, k, conv = _run_pdhg(post, x0, jnp.asarray(lip, dt), iters_cap, tol_t,
                                   jnp.asarray(pdhg_ratio, dt))
        num_grad = int(k)
    # num_grad_evals: gradients of the smooth potential in the optimisation loop (the
    # power iteration behind the Lipschitz constant is not counted)
    info.update(iterations=int(k), converged=bool(conv), num_grad_evals=num_grad,
                objective=float(post.potential(x)))
    return x, info

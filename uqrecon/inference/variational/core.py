"""Machinery shared by the Gaussian VI methods: compiled kernels, Monte Carlo estimators,
the Newton-CG mean step and the stopping rule.

Compile once
------------
Every kernel here is a module-level ``jax.jit`` that takes the posterior (a registered
pytree) and the variational parameters / optimiser state as *arguments*; only shapes and
options (family, draws per batch, number of groups, Hessian kind, window) are static.
Loop lengths that change between rounds (batches per round) are traced values. A second
call on a posterior of the same structure (other data, other noise level, other
hyperparameter values) therefore compiles nothing.

Estimators (for any Gaussian family ``q`` with free mean)
---------------------------------------------------------
Draws come in antithetic pairs ``mu +/- s`` (``s = sigma * eps`` for mean-field):

* mean gradient ``G = E_q[grad U(x)]`` from ``(g+ + g-) / 2``: the first-order noise
  term cancels, and for a quadratic potential ``G`` is exact (no Monte Carlo error);
* curvature ``E_q[d^2 U / dx_i^2]`` by Stein's identity ``E[eps_i d_i U(x)] / sigma_i``
  from ``eps * (g+ - g-) / (2 sigma)``, with the control variate ``eps * (M s) / sigma``
  whose expectation ``diag(M)`` is known exactly, ``M`` the (Gauss-Newton) Hessian at an
  anchor point: unbiased for any anchor; exact for a quadratic potential;
* for Adam (:func:`adam_window`), the reparameterisation gradient of ``E_q[U]`` with the
  same ``M``: the quadratic ``(x - mu)^T M (x - mu) / 2`` is subtracted draw by draw and
  its exact expectation ``tr(M Sigma) / 2`` differentiated instead.

The exact ``diag(M)`` costs ``n`` products with unit vectors (:func:`hessian_diagonal`),
affordable up to ``EXACT_DIAG_MAX`` pixels by default; above, the estimators run without
the control variate and their Monte Carlo error (measured) sets the cost.

Stopping rule
-------------
Progress is judged on *steps*, in parameter units, against their own Monte Carlo noise:
a round's draws are split into ``groups`` independent groups; their spread gives the
step's standard error; :func:`step_stats` turns a step and its standard errors into an
estimate of the systematic (noise-free) step with an upper confidence bound, and
:class:`Contraction` turns the mean's step into a distance to its fixed point. A method
has converged when those bounds are below the tolerances, i.e. the optimum is, with
high confidence, within ``tol`` of the returned point. An ELBO plateau is never enough.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ...linalg import pcg
from ..accounting import APPROXIMATION, method_result

__all__ = ["GROUPS", "EXACT_DIAG_MAX", "draw", "entropy", "log_q", "hessian_diagonal",
           "meanfield_round", "newton_step", "mean_update", "adam_window", "adam_init",
           "fit_adam", "step_stats", "StepStats", "Contraction",
           "check_common", "initial_mean", "vi_result"]

GROUPS = 8                       # independent groups per round (standard errors)
EXACT_DIAG_MAX = 16384           # 'auto': exact Hessian diagonal up to 128 x 128 pixels
_ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)


# --------------------------------------------------------------------------------------
# Gaussian families on flat vectors (the kind is static: 'diag' or 'lowrank')
#   diag:    x = mu + exp(log_sigma) * e,                       e ~ N(0, I_n)
#   lowrank: x = mu + exp(log_d) * (e1 + W e2),  cov = D (I + W W^T) D,  e = (e1, e2)
# --------------------------------------------------------------------------------------
def noise_dim(kind, params):
    n = params["mu"].shape[0]
    return n if kind == "diag" else n + params["W"].shape[1]


def draw(kind, params, eps):
    """``(S, noise_dim)`` standard normals -> ``(S, n)`` draws of ``q``."""
    if kind == "diag":
        return params["mu"] + jnp.exp(params["log_sigma"]) * eps
    n = params["mu"].shape[0]
    scaled = eps[:, :n] + eps[:, n:] @ params["W"].T
    return params["mu"] + jnp.exp(params["log_d"]) * scaled


def _capacitance(W):
    return jnp.eye(W.shape[1], dtype=W.dtype) + W.T @ W


def _logdet(kind, params):
    if kind == "diag":
        return 2 * jnp.sum(params["log_sigma"])
    return 2 * jnp.sum(params["log_d"]) + jnp.linalg.slogdet(_capacitance(params["W"]))[1]


def entropy(kind, params):
    n = params["mu"].shape[0]
    return 0.5 * _logdet(kind, params) + 0.5 * n * (1.0 + math.log(2 * math.pi))


def log_q(kind, params, x):
    """Log density of ``(S, n)`` points."""
    n = params["mu"].shape[0]
    if kind == "diag":
        r = (x - params["mu"]) * jnp.exp(-params["log_sigma"])
        quad = jnp.sum(r * r, axis=-1)
    else:
        W = params["W"]
        r = (x - params["mu"]) * jnp.exp(-params["log_d"])
        t = r @ W
        quad = jnp.sum(r * r, axis=-1) - jnp.sum(
            t * jnp.linalg.solve(_capacitance(W), t.T).T, axis=-1)
    return -0.5 * (quad + _logdet(kind, params) + n * math.log(2 * math.pi))


def scale(kind, params):
    """Per-pixel scale of the family's diagonal part (the CG preconditioner)."""
    return jnp.exp(params["log_sigma"] if kind == "diag" else params["log_d"])


# --------------------------------------------------------------------------------------
# Posterior on flat vectors
# --------------------------------------------------------------------------------------
def _value_and_grad(post, X):
    """Potential values and gradients at ``(S, n)`` points."""
    shape = tuple(post.shape)
    v, g = post.value_and_grad_smooth_potential(X.reshape((X.shape[0], *shape)))
    return v, g.reshape(X.shape).astype(X.dtype)


def _potential(post, X):
    shape = tuple(post.shape)
    return post.smooth_potential(X.reshape((X.shape[0], *shape)))


def _hvp(post, x, hessian):
    """``v -> M v`` on flat vectors, ``M`` the Gauss-Newton or exact Hessian at ``x``."""
    shape = tuple(post.shape)
    fn = post.gauss_newton_vp if hessian == "gauss_newton" else post.hessian_vp
    xi = x.reshape(shape)
    return lambda v: fn(xi, v.reshape(shape)).reshape(-1).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("hessian", "batch"))
def hessian_diagonal(post, x, *, hessian, batch):
    """Exact ``diag(M)`` at ``x`` from ``n`` products with unit vectors (``batch`` at a
    time): ``n`` gradient-equivalents, so used up to ``EXACT_DIAG_MAX`` pixels."""
    n = x.shape[0]
    hv = jax.vmap(_hvp(post, x, hessian))

    def block(i0):
        E = jax.nn.one_hot(i0 + jnp.arange(batch), n, dtype=x.dtype)   # rows past n: 0
        return jnp.sum(E * hv(E), axis=1)

    return jax.lax.map(block, jnp.arange(0, n, batch)).reshape(-1)[:n]


# --------------------------------------------------------------------------------------
# Mean-field rounds: G and the curvature estimate in independent groups
# --------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("pairs", "groups", "hessian", "control"))
def meanfield_round(post, mu, sigma, anchor, key, num_batches, *, pairs, groups, hessian,
                    control):
    """``groups`` independent sets of estimates for ``q = N(mu, diag(sigma^2))``, each from
    ``num_batches`` batches of ``pairs`` antithetic pairs. Returns a dict of ``(groups,
    n)`` group means: ``G`` (``E_q[grad U]``), ``a`` (Stein's curvature terms
    ``eps (g+ - g-) / (2 sigma)``), and with ``control`` the control variate
    ``c = eps (M s) / sigma`` (``E[c] = diag(M)``) with ``ac`` and ``cc`` for its
    regression coefficient; and ``U`` (groups,), the mean potential."""
    n, dtype = mu.shape[0], mu.dtype
    mv = jax.vmap(_hvp(post, anchor, hessian)) if control else None

    def batch(k):
        e = jax.random.normal(k, (pairs, n), dtype)
        s = sigma * e
        vals, g = _value_and_grad(post, jnp.concatenate([mu + s, mu - s]))
        gp, gm = g[:pairs], g[pairs:]
        a = e * (0.5 * (gp - gm)) / sigma
        out = {"G": jnp.sum(0.5 * (gp + gm), 0), "a": jnp.sum(a, 0),
               "U": jnp.sum(vals) / 2}
        if control:
            c = e * mv(s) / sigma
            out.update(c=jnp.sum(c, 0), ac=jnp.sum(a * c, 0), cc=jnp.sum(c * c, 0))
        return out

    def group(kg):
        zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(batch, kg))
        acc = jax.lax.fori_loop(
            0, num_batches,
            lambda i, a: jax.tree.map(jnp.add, a, batch(jax.random.fold_in(kg, i))), zero)
        return jax.tree.map(lambda a: a / (num_batches * pairs), acc)

    return jax.lax.map(group, jax.random.split(key, groups))


def curvature_estimate(stats, anchor_diag):
    """Per-group estimates ``(groups, n)`` of ``E_q[diag hess U]`` from
    :func:`meanfield_round`'s moments: Stein's terms minus ``beta`` times the control
    variate's deviation from its known mean ``diag(M)``, with the per-pixel coefficient
    ``beta = cov(a, c) / var(c)`` (pooled over the round; the variance-minimising
    choice, 1 for a quadratic potential, smaller where ``M`` at the anchor describes the
    curvature under ``q`` poorly, e.g. Huber-TV with a small smoothing)."""
    a = np.asarray(stats["a"], np.float64)
    if "c" not in stats:
        return a, None
    c = np.asarray(stats["c"], np.float64)
    mean = lambda k: np.asarray(stats[k], np.float64).mean(0)   # noqa: E731
    a_m, c_m = a.mean(0), c.mean(0)
    var_c = mean("cc") - c_m * c_m
    cov_ac = mean("ac") - a_m * c_m
    beta = np.where(var_c > 0, cov_ac / np.where(var_c > 0, var_c, 1.0), 0.0)
    beta = np.clip(beta, 0.0, 2.0)
    return a - beta * (c - np.asarray(anchor_diag, np.float64)), beta


# --------------------------------------------------------------------------------------
# Newton-CG step on the mean (any family): solve M d = -G, Jacobi-preconditioned
# --------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("hessian",))
def newton_step(post, points, G, precond, tol, maxiter, *, hessian):
    """Newton step ``-M^{-1} mean(G)`` with ``M`` the (Gauss-Newton) Hessian averaged over
    the rows of ``points`` (the mean alone for a Gaussian posterior, whose Hessian is
    constant; a few draws of ``q`` otherwise, an estimate of ``E_q[M]``, which makes the
    iteration contract faster than ``M(mu)`` where the curvature varies). Preconditioned
    CG (:func:`uqrecon.linalg.pcg`) with the Jacobi-like preconditioner ``S^2``,
    ``S = diag(precond)`` (the family's standard deviations: ``S^2 ~ diag(M)^{-1}``).

    The step's Monte Carlo error comes from one more solve: with ``Ga``, ``Gb`` the means
    of the two halves of the groups, ``v = M^{-1} (Ga - Gb) / 2`` has the covariance of
    the step's noise, so ``|v_i|`` is a one-degree-of-freedom standard error per
    coordinate and ``|v|^2`` estimates the noise's squared norm with ``n`` degrees of
    freedom (solved to 1 %; for a quadratic potential ``Ga = Gb`` up to rounding).
    Returns ``(step, se, cg iterations, relative residual, CG iterations of the noise
    solve)``."""
    shape = tuple(post.shape)
    fn = post.gauss_newton_vp if hessian == "gauss_newton" else post.hessian_vp
    X = points.reshape((points.shape[0], *shape))
    s2 = precond * precond

    def op(v):
        w = jnp.broadcast_to(v.reshape(shape), X.shape)
        return jnp.mean(fn(X, w), axis=0).reshape(-1).astype(v.dtype)

    precondition = lambda r: s2 * r          # noqa: E731
    Gm = jnp.mean(G, axis=0)
    step, it, relres, _, _ = pcg(op, -Gm, precondition, tol, maxiter)
    half = G.shape[0] // 2
    diff = 0.5 * (jnp.mean(G[:half], axis=0) - jnp.mean(G[half:], axis=0))
    v, noise_it, _, _, _ = pcg(op, diff, precondition, 1e-2, maxiter)
    return step, jnp.abs(v), it, relres, noise_it


def curvature_points(mu, scale, key, num):
    """Where the Newton matrix is evaluated: the mean (``num == 0``) or ``num`` antithetic
    draws ``mu +/- scale * e``."""
    if num == 0:
        return mu[None]
    e = jax.random.normal(key, (num // 2, mu.shape[0]), mu.dtype)
    return jnp.concatenate([mu + scale * e, mu - scale * e])


def newton_solve(post, points, G, precond, cg_tol, maxiter, hessian):
    """:func:`newton_step` with host results: ``(step, se, Hessian products, cg
    iterations, relative residual, whether the CG stopped at ``maxiter`` short of
    ``cg_tol``)``."""
    step, se, it, relres, noise_it = newton_step(post, points, G, precond, cg_tol,
                                                 maxiter, hessian=hessian)
    it, relres = int(it), float(relres)
    products = (it + int(noise_it)) * points.shape[0]
    return (np.asarray(step, np.float64), np.asarray(se, np.float64), products, it, relres,
            it >= maxiter and relres > cg_tol)


@functools.partial(jax.jit, static_argnames=("kind", "pairs"))
def smoothed_potential(post, mus, cov, key, *, kind, pairs):
    """``E_q[U]`` for ``q`` of family ``kind`` with covariance parameters ``cov`` and mean
    each row of ``mus``, with common random numbers (antithetic pairs)."""
    e = jax.random.normal(key, (pairs, noise_dim(kind, {"mu": mus[0], **cov})), mus.dtype)
    E = jnp.concatenate([e, -e])
    return jax.lax.map(
        lambda m: jnp.mean(_potential(post, draw(kind, {"mu": m, **cov}, E))), mus)


_ALPHAS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)


def mean_update(post, kind, mu, cov, step, stats, size, tol, key, pairs):
    """Take the shrunken Newton step ``stats['shrink'] * step``; when the step is mostly
    signal and large (above 1 % of ``size`` and ``tol``), the largest of ``(1, 1/2, ...,
    1/16)`` times it that does not raise the smoothed potential ``E_q[U]`` beyond
    rounding (common random numbers): a guard against overshooting on strongly
    non-quadratic potentials. Smaller steps are not searched: the comparison would be
    within the Monte Carlo noise of the step itself. Not for a
    linear-Gaussian posterior: its potential is quadratic and the step (exact, or CG
    iterates, which decrease the quadratic monotonically) never overshoots. Returns
    ``(new mean, step size, potential evaluations)``."""
    alpha, evals = stats["shrink"], 0
    mu64 = np.asarray(mu, np.float64)
    if alpha > 0.5 and stats["systematic"] > tol * size and \
            post.gaussian_form() is None:
        alphas = np.asarray(_ALPHAS) * alpha
        cand = jnp.asarray(mu64[None] + alphas[:, None] * step[None], mu.dtype)
        f = np.asarray(smoothed_potential(post, cand, cov, key, kind=kind, pairs=4 * pairs),
                       np.float64)
        evals = 8 * pairs * len(_ALPHAS)
        slack = 100 * float(jnp.finfo(mu.dtype).eps) * (abs(f[-1]) + mu.shape[0])
        ok = [a for a, fa in zip(alphas[:-1], f[:-1]) if fa <= f[-1] + slack]
        alpha = float(ok[0]) if ok else float(alphas[-2])
    return jnp.asarray(mu64 + alpha * step, mu.dtype), alpha, evals


# --------------------------------------------------------------------------------------
# Adam on the covariance parameters (mean held fixed; it gets Newton steps)
# --------------------------------------------------------------------------------------
@jax.jit
def adam_init(cov, learning_rate):
    state = _ADAM.init(cov)
    return _with_lr(state, learning_rate)


def _with_lr(state, lr):
    hp = dict(state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, hp["learning_rate"].dtype)
    return state._replace(hyperparams=hp)


def _trace_grad(kind, c, anchor_diag, mv):
    """Gradient in ``c`` of ``tr(M Sigma(c)) / 2`` for the family ``kind`` (``M`` through
    ``diag(M)`` and ``mv``): the exact expectation of the control variate's quadratic."""
    if kind == "diag":
        return {"log_sigma": anchor_diag * jnp.exp(2 * c["log_sigma"])}
    d, W = jnp.exp(c["log_d"]), c["W"]
    Y = jax.vmap(mv, in_axes=1, out_axes=1)(d[:, None] * W)         # M D W: rank products
    return {"log_d": anchor_diag * d * d + d * jnp.sum(W * Y, axis=1), "W": d[:, None] * Y}


@functools.partial(jax.jit, static_argnames=("kind", "pairs", "groups", "estimator",
                                             "window", "hessian", "control"))
def adam_window(post, mu, cov, state, key, num_steps, anchor, anchor_diag, *, kind, pairs,
                groups, estimator, window, hessian, control):
    """``num_steps`` (at most ``window``) Adam steps on the covariance parameters ``cov``
    of family ``kind`` with the mean ``mu`` fixed, ``pairs`` antithetic pairs per step.
    With learning rate 0 it is a pure estimator.

    ``control``: the reparameterisation gradient of ``E_q[U]`` gets the control variate
    ``U_a(x) = (x - mu)^T M (x - mu) / 2``, ``M`` the (Gauss-Newton) Hessian at
    ``anchor`` with known diagonal ``anchor_diag``: its Monte Carlo gradient is
    subtracted and its exact gradient ``d tr(M Sigma) / 2`` added (one product with
    ``M`` per pair, plus ``rank`` for the low-rank family). Unbiased for any anchor;
    for a quadratic potential the covariance gradient is then exact.

    Returns ``(cov, state, Polyak average of cov over the window, ELBO per step (padded
    with NaN), G per group (groups, n), covariance gradient per group (groups, p))``:
    step ``i`` goes to group ``i mod groups``."""
    n, dtype = mu.shape[0], mu.dtype
    flat0, _ = jax.flatten_util.ravel_pytree(cov)
    dim = noise_dim(kind, {"mu": mu, **cov})
    mv = _hvp(post, anchor, hessian) if control else None

    def estimate(c, e):
        E = jnp.concatenate([e, -e])
        x_of = lambda cc: draw(kind, {"mu": mu, **cc}, E)      # noqa: E731
        X, vjp = jax.vjp(x_of, c)
        vals, gx = _value_and_grad(post, X)
        S = X.shape[0]
        cot = gx
        if control:
            Ms = jax.vmap(mv)(X[:pairs] - mu)
            cot = gx - jnp.concatenate([Ms, -Ms])
        if estimator == "stl":
            p_sg = jax.lax.stop_gradient({"mu": mu, **c})
            glq = jax.grad(lambda xx: jnp.sum(log_q(kind, p_sg, xx)))(X)
            (gc,) = vjp((cot + glq) / S)
        else:
            (gc,) = vjp(cot / S)
            gent = jax.grad(lambda cc: entropy(kind, {"mu": mu, **cc}))(c)
            gc = jax.tree.map(jnp.subtract, gc, gent)
        if control:
            gc = jax.tree.map(jnp.add, gc, _trace_grad(kind, c, anchor_diag, mv))
        elbo = entropy(kind, {"mu": mu, **c}) - jnp.mean(vals)
        return gc, jnp.mean(gx, axis=0), elbo

    def body(i, carry):
        c, st, avg, elbos, Gs, Cs, counts = carry
        e = jax.random.normal(jax.random.fold_in(key, i), (pairs, dim), dtype)
        gc, gmean, elbo = estimate(c, e)
        upd, st = _ADAM.update(gc, st, c)
        c = optax.apply_updates(c, upd)
        avg = jax.tree.map(lambda a, b: a + (b - a) / (i + 1), avg, c)
        j = i % groups
        Gs = Gs.at[j].add(gmean)
        Cs = Cs.at[j].add(jax.flatten_util.ravel_pytree(gc)[0])
        return c, st, avg, elbos.at[i].set(elbo), Gs, Cs, counts.at[j].add(1)

    init = (cov, state, cov, jnp.full((window,), jnp.nan, dtype),
            jnp.zeros((groups, n), dtype), jnp.zeros((groups, flat0.size), dtype),
            jnp.zeros((groups,), dtype))
    c, st, avg, elbos, Gs, Cs, counts = jax.lax.fori_loop(
        0, jnp.minimum(num_steps, window), body, init)
    counts = jnp.maximum(counts, 1)[:, None]
    return c, st, avg, elbos, Gs / counts, Cs / counts


# --------------------------------------------------------------------------------------
# Stopping rule
# --------------------------------------------------------------------------------------
class StepStats(dict):
    """``norm``: l2 norm of the estimated step; ``noise``: its Monte Carlo error (l2 of
    the standard errors); ``systematic``: the noise-free part, estimated;
    ``upper``: a ~3-sigma upper confidence bound on it; ``shrink``: the James-Stein
    factor ``max(0, 1 - noise^2 / norm^2)`` applied to the step."""


def step_stats(step, se, weight=None) -> StepStats:
    """Statistics of a step estimated with per-coordinate standard errors ``se``.
    ``weight`` (e.g. ``1/n``) turns sums of squares into means (rms units)."""
    step = np.asarray(step, np.float64).ravel()
    se = np.asarray(se, np.float64).ravel()
    w = 1.0 if weight is None else float(weight)
    s2, n2 = w * float(step @ step), w * float(se @ se)
    sys2 = s2 - n2
    # sd of ||step||^2 - ||se||^2: chi-square spread of the noise, plus the cross term
    sd = math.sqrt(2 * w * w * float(np.sum(se ** 4)) + 4 * max(sys2, 0.0) * w * float(
        np.max(se ** 2, initial=0.0)))
    return StepStats(norm=math.sqrt(s2), noise=math.sqrt(n2),
                     systematic=math.sqrt(max(sys2, 0.0)),
                     upper=math.sqrt(max(sys2 + 3 * sd, 0.0)),
                     shrink=max(0.0, 1.0 - n2 / s2) if s2 > 0 else 0.0)


class Contraction:
    """A posteriori error bound for the mean's iteration, which converges linearly
    (inexact Newton: a CG solve stopped short, float32 rounding, a Gauss-Newton matrix
    that is not ``E_q[hess U]``, a line search): if the steps shrink by a factor ``rho``
    a round, the distance from the current point to the fixed point is at most
    ``|step| / (1 - rho)``. A step alone is no certificate: a CG capped at a few
    iterations makes small steps far from the optimum.

    ``rho`` is measured on *reference rounds*: steps that were clearly signal (Monte
    Carlo noise below a third of the step, so they show the iteration, not the noise)
    and above ``floor`` (a tenth of the tolerance; smaller steps are often rounding,
    which does not contract). Their geometric-mean shrinkage over the last (up to) three
    intervals, ``(s_last / s_j)^(1 / (k_last - k_j))``, is the rate; after the last
    reference round, when the current step is small or noisy, the shrinkage since then,
    ``(upper_now / s_last)^(1 / (k_now - k_last))``, may lower it (evidence that the steps
    kept shrinking). With no reference round, ``rho = 1/2`` from the second round on
    (e.g. a start at the optimum, where every step is rounding).
    """

    def __init__(self):
        self.signal, self.round, self.rho = [], 0, 1.0

    def peek(self, stats, floor) -> float:
        """The factor :meth:`update` would return, without recording the round."""
        other = Contraction()
        other.signal, other.round = list(self.signal), self.round
        return other.update(stats, floor)

    def update(self, stats, floor) -> float:
        """Record this round's step statistics; returns the bound's factor
        ``1 / (1 - rho)`` (``inf`` when no contraction is established)."""
        k = self.round
        self.round += 1
        if stats["shrink"] >= 0.9 and stats["systematic"] > floor:
            self.signal.append((k, stats["systematic"]))
        chain = self.signal[-4:]
        if len(chain) >= 2:
            (k0, s0), (k1, s1) = chain[0], chain[-1]
            rho = (s1 / s0) ** (1.0 / (k1 - k0))
            if k1 < k:               # this round is not a reference round
                rho = min(rho, (stats["upper"] / s1) ** (1.0 / (k - k1)))
        elif len(chain) == 1 and chain[0][0] < k:
            rho = (stats["upper"] / chain[0][1]) ** (1.0 / (k - chain[0][0]))
        else:
            rho = 0.5 if k >= 1 and not chain else 1.0
        self.rho = rho
        return 1.0 / (1.0 - rho) if rho < 1 else math.inf


# --------------------------------------------------------------------------------------
# Arguments, start, result
# --------------------------------------------------------------------------------------
def check_positive(name: str, val) -> None:
    """A ValueError naming ``name`` unless ``val`` is a finite number > 0 (not a bool)."""
    if not isinstance(val, (int, float, np.floating, np.integer)) or isinstance(
            val, bool) or not np.isfinite(val) or val <= 0:
        raise ValueError(f"'{name}' must be a positive number, got {val!r}")


def check_common(posterior, *, num_mc, max_iter, tol, var_tol, init, init_scale, hessian):
    """Shared argument checks (outside jit)."""
    if not getattr(posterior, "is_smooth", False):
        raise ValueError("'posterior' has non-smooth terms (e.g. TV without smoothing); "
                         "variational inference needs a smooth potential: use a smoothed "
                         "prior")
    for name, val in (("num_mc", num_mc), ("max_iter", max_iter)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"'{name}' must be a positive integer, got {val!r}")
    if num_mc % 2:
        raise ValueError(f"'num_mc' must be even (draws come in antithetic pairs), got "
                         f"{num_mc!r}")
    for name, val in (("tol", tol), ("var_tol", var_tol), ("init_scale", init_scale)):
        check_positive(name, val)
    if hessian not in ("gauss_newton", "exact"):
        raise ValueError(f"'hessian' must be 'gauss_newton' or 'exact', got {hessian!r}")
    if init is not None and tuple(np.shape(init)) != tuple(posterior.shape):
        raise ValueError(f"'init' has shape {tuple(np.shape(init))}, expected "
                         f"{tuple(posterior.shape)}")


def initial_mean(posterior, init) -> jax.Array:
    """Flat initial mean: ``init`` if given, else zeros, in the posterior dtype."""
    n = math.prod(posterior.shape)
    if init is None:
        return jnp.zeros(n, posterior.dtype)
    return jnp.asarray(np.asarray(init).reshape(-1), posterior.dtype)


def default_cg_tol(dtype) -> float:
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def vi_result(posterior, method, kind, mean, diag, factor, diagnostics, config, clock):
    """Package fitted Gaussian factors as a :class:`uqrecon.result.Result` (through
    :func:`uqrecon.inference.accounting.method_result`; ``clock`` timed the fit)."""
    shape = tuple(posterior.shape)
    mean = np.asarray(mean).reshape(shape)
    diag = np.asarray(diag)
    var = diag if factor is None else diag + np.sum(np.asarray(factor) ** 2, axis=1)
    gaussian = {"kind": kind, "mean": mean, "diag": diag.reshape(shape),
                "factor": None if factor is None else np.asarray(factor)}
    return method_result(posterior, method, config, clock, mean=mean,
                         variance=np.asarray(var).reshape(shape), diagnostics=diagnostics,
                         gaussian=gaussian, exactness=APPROXIMATION)


def progress_bar(enabled, total, desc):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False)


def solver_options(posterior, hessian_diagonal, cg_tol, cg_maxiter, curvature_draws):
    """The options shared by mean-field and low-rank VI, validated and defaulted:
    ``(exact_diag, cg_tol, cg_maxiter, curvature_draws)``."""
    if hessian_diagonal not in ("auto", "exact", "none"):
        raise ValueError("'hessian_diagonal' must be 'auto', 'exact' or 'none', got "
                         f"{hessian_diagonal!r}")
    n = math.prod(posterior.shape)
    exact_diag = hessian_diagonal == "exact" or (
        hessian_diagonal == "auto" and n <= EXACT_DIAG_MAX)
    cg_tol = default_cg_tol(posterior.dtype) if cg_tol is None else cg_tol
    cg_maxiter = n if cg_maxiter is None else cg_maxiter
    check_cg(cg_tol, cg_maxiter)
    return exact_diag, cg_tol, cg_maxiter, check_curvature_draws(posterior, curvature_draws)


def check_cg(cg_tol, cg_maxiter):
    if not isinstance(cg_tol, (int, float, np.floating)) or isinstance(cg_tol, bool) or \
            not 0 < cg_tol < 1:
        raise ValueError(f"'cg_tol' must lie in (0, 1), got {cg_tol!r}")
    if isinstance(cg_maxiter, bool) or not isinstance(cg_maxiter, (int, np.integer)) or \
            cg_maxiter < 1:
        raise ValueError(f"'cg_maxiter' must be a positive integer, got {cg_maxiter!r}")


def check_curvature_draws(posterior, curvature_draws) -> int:
    """Default: 0 (the mean) when the posterior is linear-Gaussian (constant Hessian),
    else 4 draws."""
    if curvature_draws is None:
        return 0 if posterior.gaussian_form() is not None else 4
    if isinstance(curvature_draws, bool) or not isinstance(curvature_draws, (
            int, np.integer)) or curvature_draws < 0 or curvature_draws % 2:
        raise ValueError("'curvature_draws' must be a non-negative even integer, got "
                         f"{curvature_draws!r}")
    return int(curvature_draws)


def check_adam(*, learning_rate, window, elbo_tol, estimator, lr_decay, num_decays):
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"'window' must be an integer >= 2, got {window!r}")
    for name, val in (("learning_rate", learning_rate), ("elbo_tol", elbo_tol)):
        if not isinstance(val, (int, float, np.floating)) or isinstance(val, bool) or \
                not np.isfinite(val) or val <= 0:
            raise ValueError(f"'{name}' must be a positive number, got {val!r}")
    if not isinstance(lr_decay, (int, float, np.floating)) or not 0 < lr_decay < 1:
        raise ValueError(f"'lr_decay' must lie in (0, 1), got {lr_decay!r}")
    if isinstance(num_decays, bool) or not isinstance(num_decays, (int, np.integer)) or \
            num_decays < 0:
        raise ValueError(f"'num_decays' must be a non-negative integer, got {num_decays!r}")
    if estimator not in ("analytic", "stl"):
        raise ValueError(f"'estimator' must be 'analytic' or 'stl', got {estimator!r}")


def initial_log_scale(post, mu, exact_diag, hessian, init_scale):
    """Starting ``log`` standard deviations: ``-log(diag M)/2`` at ``mu`` when the exact
    diagonal is affordable (the mean-field optimum of a Gaussian target), else
    ``log(init_scale)``. Returns ``(log scale, diag(M) or None, products used)``."""
    n = mu.shape[0]
    if not exact_diag:
        return jnp.full(n, math.log(init_scale), mu.dtype), None, 0
    batch = min(n, 32)
    diag = hessian_diagonal(post, mu, hessian=hessian, batch=batch)
    d = np.asarray(diag, np.float64)
    log_s = np.where(d > 0, -0.5 * np.log(np.where(d > 0, d, 1.0)), math.log(init_scale))
    return jnp.asarray(log_s, mu.dtype), diag, batch * math.ceil(n / batch)


def family_variance(kind, params):
    """Marginal variances of ``q`` (numpy float64); ``params`` needs no mean."""
    if kind == "diag":
        return np.exp(2 * np.asarray(params["log_sigma"], np.float64))
    d2 = np.exp(2 * np.asarray(params["log_d"], np.float64))
    W = np.asarray(params["W"], np.float64)
    return d2 * (1.0 + np.sum(W * W, axis=1))


def fit_adam(post, key, kind, mu, cov, *, num_mc, tol, var_tol, max_iter, hessian, cg_tol,
             cg_maxiter, learning_rate, window, elbo_tol, estimator, lr_decay, num_decays,
             progress, setup_grad_evals, name, curvature_draws, anchor_diag=None):
    """Adam on the covariance parameters ``cov`` of family ``kind`` in compiled windows,
    a Newton-CG step on the mean after each window (from the window's ``E_q[grad U]``),
    the ELBO-plateau learning-rate schedule, and a convergence *check* at each plateau
    at the last learning rate: with the parameters fixed (the window's Polyak average)
    and fresh draws, the mean's distance to its fixed point (Newton step times the
    :class:`Contraction` factor) must be below ``tol`` and the covariance gradient
    (dimensionless parameters: for ``log sigma`` it is the relative error of the
    variance) below ``var_tol`` rms, both as 3-sigma upper bounds; and, because that
    gradient is small along directions of low curvature even far from the optimum, the
    marginal variances must have moved by less than ``var_tol / 2`` (rms, relative)
    since the previous check, at least a quarter of the run earlier (so the first check
    never passes). A check limited by its own noise doubles the draws of the next.
    Returns ``(params, diagnostics)``."""
    n, dtype = mu.shape[0], mu.dtype
    pairs = num_mc // 2
    rank = cov["W"].shape[1] if kind == "lowrank" else 0
    control = anchor_diag is not None
    anchor = mu
    anchor_diag = jnp.zeros(n, dtype) if anchor_diag is None else anchor_diag
    window_kw = dict(kind=kind, pairs=pairs, groups=GROUPS, estimator=estimator,
                     window=window, hessian=hessian, control=control)
    step_cost = num_mc + control * (pairs + rank)       # gradient-equivalents per step
    state = adam_init(cov, learning_rate)
    avg = cov
    p = sum(int(np.size(v)) for v in jax.tree.leaves(cov))
    trace, means, ses, checks = [], [], [], []
    decays, lr, used, grads, hvps = 0, learning_rate, 0, 0, 0
    verify_windows, converged, last, next_check = 1, False, None, 0
    v_prev, prev_used = None, 0
    contraction = Contraction()
    bar = progress_bar(progress, max_iter, name)

    def mean_step(G, params, maxiter):
        nonlocal hvps, key
        key, kc = jax.random.split(key)
        sc = scale(kind, params)
        pts = curvature_points(mu, sc, kc, curvature_draws)
        step, se, products, *_ = newton_solve(post, pts, G, sc, cg_tol, maxiter, hessian)
        hvps += products
        return step, step_stats(step, se)

    while used < max_iter:
        steps = min(window, max_iter - used)
        key, kw = jax.random.split(key)
        cov, state, avg, el, G, _ = adam_window(post, mu, cov, state, kw, steps, anchor,
                                                anchor_diag, **window_kw)
        used += steps
        grads += steps * step_cost
        el = np.asarray(el, np.float64)[:steps]
        if not np.all(np.isfinite(el)):
            raise FloatingPointError("ELBO became non-finite; lower 'learning_rate' or "
                                     "start closer to the posterior ('init', 'init_scale')")
        trace.extend(el.tolist())
        step, ms = mean_step(G, {"mu": mu, **cov}, cg_maxiter)
        size = math.sqrt(float(np.sum(np.asarray(mu, np.float64) ** 2))
                         + float(np.sum(family_variance(kind, cov))))
        contraction.update(ms, 0.1 * tol * size)
        key, kl = jax.random.split(key)
        mu, _, evals = mean_update(post, kind, mu, cov, step, ms, size, tol, kl, pairs)
        grads += evals
        means.append(float(el.mean()))
        ses.append(float(el.std(ddof=1) / math.sqrt(steps)) if steps > 1 else 0.0)
        if bar is not None:
            bar.update(steps)
            bar.set_postfix(elbo=f"{means[-1]:.5g}", lr=f"{lr:.2g}")
        if not (len(means) >= 2 and abs(means[-1] - means[-2]) <= (
                elbo_tol * n + 2.0 * math.hypot(ses[-1], ses[-2]))):
            continue
        means.append(math.nan)          # compare windows of one rate and one check only
        ses.append(math.nan)
        if decays < num_decays:
            decays += 1
            lr *= lr_decay
            state = _with_lr(state, lr)
            continue
        if used < next_check:
            continue
        # -- check at fixed parameters (learning rate 0) with fresh draws
        frozen = _with_lr(state, 0.0)
        Gs, Cs = [], []
        for _ in range(verify_windows):
            key, kv = jax.random.split(key)
            *_, Gv, Cv = adam_window(post, mu, avg, frozen, kv, window, anchor,
                                     anchor_diag, **window_kw)
            Gs.append(np.asarray(Gv, np.float64))
            Cs.append(np.asarray(Cv, np.float64))
            grads += window * step_cost
        Gv, Cv = np.mean(Gs, axis=0), np.mean(Cs, axis=0)
        params = {"mu": mu, **avg}
        # the certificate's step comes from a full CG (n iterations), whatever cg_maxiter:
        # a CG stopped short makes small steps far from the optimum
        step, ms = mean_step(jnp.asarray(Gv, dtype), params, max(cg_maxiter, n))
        size = math.sqrt(float(np.sum(np.asarray(mu, np.float64) ** 2))
                         + float(np.sum(family_variance(kind, params))))
        cs = step_stats(Cv.mean(0), Cv.std(0, ddof=1) / math.sqrt(GROUPS), weight=1.0 / p)
        bound = ms["upper"] * contraction.update(ms, 0.1 * tol * size)
        last = {"iteration": used, "check_draws": verify_windows * window * num_mc,
                "mean_step": ms["systematic"] / size, "mean_step_upper": ms["upper"] / size,
                "mean_error_bound": bound / size, "contraction": contraction.rho,
                "mean_mc_error": ms["noise"] / size, "cov_grad": cs["systematic"],
                "cov_grad_upper": cs["upper"], "cov_grad_mc_error": cs["noise"]}
        # the covariance gradient is small in directions of low curvature even far from
        # the optimum: also require the marginal variances to have stopped moving over
        # an interval of at least a quarter of the run so far
        v_now = family_variance(kind, avg)
        drift = math.inf if v_prev is None else float(
            np.sqrt(np.mean((v_now / v_prev - 1.0) ** 2)))
        last.update(var_drift=drift, drift_steps=used - prev_used)
        v_prev, prev_used = v_now, used
        checks.append(last)
        key, kl = jax.random.split(key)
        mu, _, evals = mean_update(post, kind, mu, avg, step, ms, size, tol, kl, pairs)
        grads += evals
        mean_ok, cov_ok = bound <= tol * size, cs["upper"] <= var_tol
        if mean_ok and cov_ok and drift <= 0.5 * var_tol:
            converged = True
            break
        if (not mean_ok and ms["shrink"] < 0.5) or (not cov_ok and cs["shrink"] < 0.5):
            verify_windows = min(2 * verify_windows, 8)     # the check's own noise
        # checks cost at most half the run; drift measured over >= a quarter of it
        next_check = used + max(verify_windows * window, 5 * window, used // 4)
    if bar is not None:
        bar.close()
    if converged:
        reason = "tolerances met at a check with fixed parameters"
    else:
        reason = f"'max_iter'={max_iter} Adam steps used"
        if last is None:
            reason += "; the ELBO never reached a plateau at the last learning rate"
        else:
            drift = ("no earlier check to show that the variances stopped moving"
                     if math.isinf(last["var_drift"]) else
                     f"the marginal variances moved by {last['var_drift']:.2e} rms over "
                     f"the last {last['drift_steps']} steps (at most var_tol/2)")
            reason += (f"; at the last check the mean's Newton step was "
                       f"{last['mean_step']:.2e} (3-sigma bound "
                       f"{last['mean_step_upper']:.2e}, distance to the optimum at most "
                       f"{last['mean_error_bound']:.2e}, tol={tol:g}), the covariance "
                       f"gradient {last['cov_grad']:.2e} rms (bound "
                       f"{last['cov_grad_upper']:.2e}, var_tol={var_tol:g}) and {drift}")
        warnings.warn(f"{name} did not converge: {reason}; results may be inaccurate",
                      RuntimeWarning, stacklevel=4)
    diagnostics = {"converged": converged, "reason": reason, "num_steps": used,
                   "num_grad_evals": grads + hvps + setup_grad_evals,
                   "num_gradients": grads, "num_hessian_products": hvps + setup_grad_evals,
                   "elbo_trace": np.asarray(trace),
                   "final_elbo": float(np.mean(trace[-window:])), "checks": checks}
    if last is not None:
        diagnostics.update({k: v for k, v in last.items() if k not in ("iteration",
                                                                        "check_draws")})
    return {"mu": mu, **avg}, diagnostics

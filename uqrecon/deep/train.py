"""Training loop with on-the-fly data, deep ensembles and exact checkpoint/resume.

The whole training state (weights, optimizer state, step, RNG key) is one pytree
:class:`TrainState`; one step is a pure function of it, so ``train(n)`` and
``train(k)`` followed by a resumed ``train(n)`` give bit-identical weights. Deep
ensembles train ``num_members`` states (different seeds, so different initial weights,
data and dropout masks) either one after another (``ensemble_mode="sequential"``, the
CPU default: XLA's CPU convolutions batch badly under ``vmap``, measured ~30x slower
than one network for 5 members) or side by side with ``vmap`` (``"vmap"``, the default on
GPU). Both give the same members.

The default optimizer (:func:`default_optimizer`) is Adam with a linear warm-up, cosine
decay over the run and gradient-norm clipping: with a constant learning rate of 1e-3 and
a few hundred steps the networks barely move away from their (residual, identity) start.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import flax.serialization as fser
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .data import Task, simulate

__all__ = ["TrainState", "init_state", "loss_value", "held_out_loss", "train",
           "default_optimizer", "save_checkpoint", "load_checkpoint", "LOSSES",
           "ENSEMBLE_MODES"]

LOSSES = ("mse", "nll")
ENSEMBLE_MODES = ("auto", "sequential", "vmap")


@functools.lru_cache(maxsize=32)
def default_optimizer(num_steps: int, learning_rate: float = 2e-3,
                      warmup_fraction: float = 0.05, final_fraction: float = 0.02,
                      clip_norm: float = 1.0) -> optax.GradientTransformation:
    """Adam with warm-up, cosine decay to ``final_fraction * learning_rate`` and clipping.

    The schedule spans ``num_steps`` steps (linear warm-up over the first
    ``warmup_fraction`` of them). Cached: the same arguments return the same object, so
    repeated :func:`train` calls reuse the compiled step.

    Args:
        num_steps: length of the schedule.
        learning_rate: peak learning rate.
        warmup_fraction: fraction of the steps spent warming up.
        final_fraction: final learning rate over the peak.
        clip_norm: global gradient-norm clip.

    Returns:
        An ``optax.GradientTransformation``.
    """
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"argument 'num_steps' must be >= 1, got {num_steps}")
    if not float(learning_rate) > 0:
        raise ValueError(f"argument 'learning_rate' must be > 0, got {learning_rate}")
    warmup = max(1, int(round(float(warmup_fraction) * num_steps)))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, float(learning_rate), warmup, max(num_steps, warmup + 1),
        float(final_fraction) * float(learning_rate))
    return optax.chain(optax.clip_by_global_norm(float(clip_norm)), optax.adam(schedule))


class TrainState(NamedTuple):
    """Everything training needs to continue: weights, optimizer state, step, RNG key."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def _raw_key(key) -> jax.Array:
    """uint32 key data (serialisable) from a typed key, a raw key or an int seed."""
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"argument 'key' must be a PRNG key or an int seed, got "
                        f"{type(key).__name__}")
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(f"argument 'key' must be a PRNG key or an int seed, got "
                        f"dtype {key.dtype} shape {key.shape}")
    return key


def init_state(model, task: Task, key, optimizer: optax.GradientTransformation,
               ) -> TrainState:
    """Initialise weights (from a dummy batch of ``task``) and optimizer state (pure)."""
    k_init, k_run = jax.random.split(key)
    dummy = simulate(task, k_init, 1)
    params = model.init(k_init, dummy.x0, dummy.y, deterministic=True)["params"]
    return TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32), k_run)


def loss_value(model, params, batch, key, loss: str = "mse", beta: float = 0.0):
    """Training loss on one batch with dropout active.

    ``"mse"``: mean squared error of the predicted mean. ``"nll"``: mean Gaussian negative
    log-likelihood ``0.5 * (log s^2 + (x - m)^2 / s^2)`` per pixel (constant dropped),
    which trains the heteroscedastic head; with ``beta > 0`` each pixel's term is weighted
    by ``stop_gradient(s^2) ** beta`` (beta-NLL, Seitzer et al. 2022), which keeps the
    mean learning where the plain NLL lets the variance absorb the error.
    """
    mean, log_var = model.apply({"params": params}, batch.x0, batch.y,
                                deterministic=False, rngs={"dropout": key})
    return _loss_from(mean, log_var, batch.x, loss, beta)


def held_out_loss(model, params, batch, loss: str = "mse", beta: float = 0.0) -> float:
    """The training loss of :func:`loss_value` on a fixed batch with dropout off.

    For learning curves: the same quantity as the training loss, on data the network
    never saw (``"nll"`` here is the plain NLL; with ``beta > 0`` it is weighted as in
    training).

    Args:
        model: the flax network.
        params: its parameters.
        batch: a fixed :class:`Batch`.
        loss: ``'mse'`` or ``'nll'``.
        beta: weight of the beta-NLL.

    Returns:
        The loss, a float.
    """
    _check_loss(model, loss, beta)
    return float(_held_out_jit(model, loss, float(beta), params, batch))


def _held_out(model, loss, beta, params, batch):
    mean, log_var = model.apply({"params": params}, batch.x0, batch.y, deterministic=True)
    return _loss_from(mean, log_var, batch.x, loss, beta)


def _loss_from(mean, log_var, x, loss, beta):
    if loss == "mse":
        return jnp.mean((mean - x) ** 2)
    nll = 0.5 * (log_var + (x - mean) ** 2 * jnp.exp(-log_var))
    if beta:
        nll = nll * jax.lax.stop_gradient(jnp.exp(beta * log_var))
    return jnp.mean(nll)


_held_out_jit = jax.jit(_held_out, static_argnums=(0, 1, 2))


def _check_loss(model, loss, beta):
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"argument 'beta' must be in [0, 1], got {beta}")
    if loss not in LOSSES:
        raise ValueError(f"argument 'loss' must be one of {LOSSES}, got {loss!r}")
    if loss == "nll" and not getattr(model, "heteroscedastic", False):
        raise ValueError("argument 'loss'='nll' needs a model with heteroscedastic=True")


def _step(state: TrainState, model, task: Task, optimizer, batch_size: int, loss: str,
          beta: float):
    """One optimisation step on a freshly simulated batch (pure)."""
    key, k_data, k_drop = jax.random.split(state.key, 3)
    batch = simulate(task, k_data, batch_size)
    value, grads = jax.value_and_grad(
        lambda p: loss_value(model, p, batch, k_drop, loss, beta))(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1, key), value


def _ensemble_step(state: TrainState, model, task, optimizer, batch_size, loss, beta):
    """:func:`_step` for every member of a stacked ensemble state, vectorised."""
    return jax.vmap(lambda s: _step(s, model, task, optimizer, batch_size, loss, beta))(state)


# module-level jit with the configuration static: repeated train() calls with the same
# model, task and optimizer objects reuse the compiled step
_STATIC = ("model", "task", "optimizer", "batch_size", "loss", "beta")
_jit_step = jax.jit(_step, static_argnames=_STATIC)
_jit_ensemble_step = jax.jit(_ensemble_step, static_argnames=_STATIC)
_jit_init = jax.jit(init_state, static_argnames=("model", "task", "optimizer"))
_jit_ensemble_init = jax.jit(
    lambda keys, model, task, optimizer: jax.vmap(
        lambda k: init_state(model, task, k, optimizer))(keys),
    static_argnames=("model", "task", "optimizer"))


def save_checkpoint(path, state: TrainState, losses, config: dict) -> None:
    """Write state, loss history and run config to a msgpack file (atomically).

    Args:
        path: file to write.
        state: the training state.
        losses: loss history.
        config: run configuration stored with it.
    """
    blob = fser.msgpack_serialize({
        "state": fser.to_state_dict(jax.device_get(state)),
        "losses": np.asarray(losses, np.float64),
        "config": {k: str(v) for k, v in config.items()},
    })
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def load_checkpoint(path, template: TrainState, config: dict | None = None):
    """Read a checkpoint into the structure (and dtypes) of ``template``.

    Returns ``(state, losses)``. With ``config``, a checkpoint written by a run with a
    different configuration is refused (ValueError) instead of silently mixed.

    Args:
        path: checkpoint file.
        template: a state of the expected structure.
        config: configuration the checkpoint must have been written with (None: not
            checked).

    Returns:
        A pair ``(state, losses)``.
    """
    with open(path, "rb") as f:
        blob = fser.msgpack_restore(f.read())
    if config is not None:
        saved = blob.get("config", {})
        want = {k: str(v) for k, v in config.items()}
        if saved != want:
            raise ValueError(f"argument 'checkpoint' {path!s} was written with config {saved}, "
                             f"this run has {want}")
    state = fser.from_state_dict(template, blob["state"])
    state = jax.tree.map(lambda t, v: jnp.asarray(v, dtype=jnp.asarray(t).dtype),
                         template, state)
    return state, np.asarray(blob["losses"], np.float64)


def _resolve_mode(ensemble_mode: str) -> str:
    if ensemble_mode not in ENSEMBLE_MODES:
        raise ValueError(f"argument 'ensemble_mode' must be one of {ENSEMBLE_MODES}, got "
                         f"{ensemble_mode!r}")
    if ensemble_mode == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "vmap"
    return ensemble_mode


def _member_path(checkpoint, member: int):
    return None if checkpoint is None else f"{checkpoint}.member{member}"


def train(model, task: Task, key, num_steps: int, *, batch_size: int = 8,
          optimizer: optax.GradientTransformation | None = None, loss: str = "mse",
          beta: float = 0.0, num_members: int | None = None, ensemble_mode: str = "auto",
          checkpoint=None, checkpoint_every: int = 100, callback=None,
          callback_every: int = 100):
    """Train ``model`` on data simulated from ``task`` for ``num_steps`` steps in total.

    ``loss`` and ``beta`` are those of :func:`loss_value`; ``optimizer`` defaults to
    :func:`default_optimizer` ``(num_steps)`` (Adam 2e-3, warm-up, cosine decay over this
    run, clipping). Pass the same ``model``, ``task`` and ``optimizer`` objects to reuse
    the compiled step across calls.

    ``num_members=M`` trains a deep ensemble of M members (leading axis M on every leaf
    of the returned state; member ``i`` is seeded by ``split(key, M)[i]``), one after
    another (``ensemble_mode="sequential"``) or side by side with ``vmap`` (``"vmap"``);
    ``"auto"`` picks sequential on CPU and vmap elsewhere. The two give the same members
    up to float round-off.

    With ``checkpoint`` (a file path) the state is saved every ``checkpoint_every`` steps
    and at the end (sequential ensembles: one file per member, ``{checkpoint}.member{i}``);
    if the file exists, training resumes from it and stops at ``num_steps`` total steps,
    so an interrupted run loses nothing (a checkpoint from a different seed, loss, batch
    size, ensemble size or default-optimizer schedule is refused; a custom optimizer is
    not stored, so pass the same one).

    ``callback(step, state)`` is called before the first step and after every
    ``callback_every`` steps and the last one (e.g. to record a held-out loss with
    :func:`held_out_loss`); for a sequential ensemble it is called for each member in
    turn with that member's state, for a vmapped one with the stacked state.

    Returns ``(state, losses)``: the final :class:`TrainState` and the loss of every step
    (shape ``(num_steps,)``, or ``(num_steps, M)`` for ensembles).

    Args:
        model: the flax network.
        task: the task data are simulated from.
        key: JAX PRNG key.
        num_steps: total number of steps.
        batch_size: images per step.
        optimizer: optax optimizer (None: :func:`default_optimizer`).
        loss: ``'mse'`` or ``'nll'``.
        beta: weight of the beta-NLL.
        num_members: ensemble size (None: one network).
        ensemble_mode: ``'auto'``, ``'sequential'`` or ``'vmap'``.
        checkpoint: checkpoint file path (None: no checkpoints).
        checkpoint_every: steps between checkpoints.
        callback: ``callback(step, state)`` (None: none).
        callback_every: steps between callback calls.

    Returns:
        A pair ``(state, losses)``.
    """
    if int(num_steps) < 0:
        raise ValueError(f"argument 'num_steps' must be >= 0, got {num_steps}")
    if int(batch_size) < 1:
        raise ValueError(f"argument 'batch_size' must be >= 1, got {batch_size}")
    if num_members is not None and int(num_members) < 1:
        raise ValueError(f"argument 'num_members' must be >= 1, got {num_members}")
    if int(checkpoint_every) < 1:
        raise ValueError(f"argument 'checkpoint_every' must be >= 1, got {checkpoint_every}")
    if int(callback_every) < 1:
        raise ValueError(f"argument 'callback_every' must be >= 1, got {callback_every}")
    if callback is not None and not callable(callback):
        raise TypeError(f"argument 'callback' must be callable, got {type(callback).__name__}")
    _check_loss(model, loss, beta)
    mode = _resolve_mode(ensemble_mode) if num_members is not None else None
    config = {"batch_size": batch_size, "loss": loss, "beta": float(beta),
              "num_members": num_members, "model": type(model).__name__,
              "key": np.asarray(_raw_key(key)).tolist()}
    if optimizer is None:
        optimizer = default_optimizer(max(int(num_steps), 1))
        config["optimizer"] = f"default_optimizer({max(int(num_steps), 1)})"
    key = _raw_key(key)
    static = dict(model=model, task=task, optimizer=optimizer, batch_size=int(batch_size),
                  loss=loss, beta=float(beta))
    if mode == "sequential":
        states, losses = [], []
        for i, k in enumerate(jax.random.split(key, int(num_members))):
            state = _jit_init(model=model, task=task, key=k, optimizer=optimizer)
            member_config = dict(config, member=i)
            state, lo = _run(state, _jit_step, static, int(num_steps),
                             _member_path(checkpoint, i), int(checkpoint_every),
                             member_config, callback, int(callback_every))
            states.append(state)
            losses.append(lo)
        state = jax.tree.map(lambda *a: jnp.stack(a), *states)
        return state, np.stack(losses, axis=1).reshape(int(num_steps), int(num_members))
    if mode == "vmap":
        keys = jax.random.split(key, int(num_members))
        state = _jit_ensemble_init(keys, model=model, task=task, optimizer=optimizer)
        jitted = _jit_ensemble_step
    else:
        state = _jit_init(model=model, task=task, key=key, optimizer=optimizer)
        jitted = _jit_step
    state, losses = _run(state, jitted, static, int(num_steps), checkpoint,
                         int(checkpoint_every), config, callback, int(callback_every))
    shape = (len(losses),) if num_members is None else (len(losses), int(num_members))
    return state, losses.reshape(shape)


def _run(state, jitted, static, num_steps, checkpoint, checkpoint_every, config, callback,
         callback_every):
    """The step loop shared by single networks and both ensemble modes."""
    losses = []
    if checkpoint is not None and os.path.exists(checkpoint):
        state, done = load_checkpoint(checkpoint, state, config)
        losses = list(done)
    done_steps = int(np.ravel(state.step)[0])
    if done_steps > num_steps:
        raise ValueError(f"argument 'num_steps'={num_steps} is below the {done_steps} steps "
                         f"already in checkpoint {checkpoint}")
    if callback is not None and done_steps == 0:
        callback(0, state)
    for i in range(done_steps, num_steps):
        state, value = jitted(state, **static)
        losses.append(np.asarray(value, np.float64))
        if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == num_steps):
            save_checkpoint(checkpoint, state, losses, config)
        if callback is not None and ((i + 1) % callback_every == 0 or i + 1 == num_steps):
            callback(i + 1, state)
    return state, np.asarray(losses, np.float64)

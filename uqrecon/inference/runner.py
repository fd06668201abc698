"""One chunked, multi-chain loop for every sampler.

Chains run either vectorised with ``vmap`` (``chain_method="vectorized"``) or one after
another inside the same compiled chunk with ``lax.map`` (``"sequential"``); with several
devices they are sharded over them either way (a ``shard_map``: each device vmaps or
maps over its own chains, with no communication between devices inside a chunk). Under
``jax.distributed`` (several processes, e.g. one per GPU host) the chains are split
evenly over the processes, each process runs its share on its own devices, and at the
end every process gathers the others' Welford states, draws and statistics, so all of
them return the same :class:`RunOutput` as one process running every chain would. A
vmapped ``while_loop`` runs until its longest lane is done, so with NUTS every
vectorised iteration costs the longest of the chains' trees; in sequential mode a
chain's long tree delays no other chain, but the chains' gradients are no longer batched
into one matrix product. Steps run in ``lax.scan`` chunks of one module-level jitted
function that takes the sampler's functions as a static argument and the problem
(``params``) as a traced one, so it compiles once per problem *structure* for the whole
process, not once per call (no executable cache of our own: jit's). Compile and run time
are measured apart from JAX's compilation events. Between chunks: progress bar,
checkpoint, and draws written to memory or to a ``.npy`` memmap on disk. Every
post-warmup iteration enters a per-pixel Welford mean/variance; only every ``thin``-th
is kept as a draw, so memory stays bounded however long the run.

Randomness: the key of chain ``c`` at iteration ``t`` of phase ``p`` is
``fold_in(fold_in(split(key, C)[c], p), t)``, independent of the chunking, so a resumed
run reproduces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jax.experimental import multihost_utils

from ..diagnostics import welford_finalize, welford_init, welford_merge, welford_update
from .accounting import CompileMonitor
from .checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from .samplers.base import Sampler

__all__ = ["RunOutput", "run_chains", "CHAIN_METHODS",
           "check_chain_method", "one_blas_thread"]

CHAIN_METHODS = ("vectorized", "sequential")

_PHASE_INIT, _PHASE_WARMUP, _PHASE_SAMPLE = 0, 1, 2


@dataclass
class RunOutput:
    """Raw output of :func:`run_chains` (host arrays), turned into a Result by ``sample``."""

    mean: np.ndarray                 # (*shape) over all chains and post-warmup iterations
    variance: np.ndarray             # (*shape) unbiased, pooled over chains
    chain_mean: np.ndarray           # (C, *shape)
    chain_variance: np.ndarray       # (C, *shape)
    draws: np.ndarray | None         # (C, S, *shape), memmap when written to disk
    traces: dict[str, np.ndarray]    # name -> (C, S) scalars per kept draw
    acceptance_rate: np.ndarray      # (C,) mean over sampling iterations
    divergences: np.ndarray          # (C,) count over sampling iterations
    step_size: np.ndarray            # (C,) final step size
    num_capped: np.ndarray           # (C,) sampling iterations stopped at the length cap
    num_grad_evals: int              # sampling phase, all chains
    num_grad_evals_warmup: int       # warmup phase, all chains
    nonfinite_chains: np.ndarray     # (C,) bool: a state went NaN/inf
    timings: dict[str, float] = field(default_factory=dict)
    num_devices: int = 1


def check_chain_method(chain_method) -> str:
    """``chain_method`` if it is one of :data:`CHAIN_METHODS`, else a ValueError naming it.

    Args:
        chain_method: ``"vectorized"`` (chains vmapped) or ``"sequential"`` (chains run
            one after another inside the compiled chunk).

    Returns:
        The validated name.
    """
    if not isinstance(chain_method, str) or chain_method not in CHAIN_METHODS:
        raise ValueError(f"'chain_method' must be one of {list(CHAIN_METHODS)}, got "
                         f"{chain_method!r}")
    return chain_method


def _chain_keys(key, num_chains):
    return jax.random.split(key, num_chains)


def _one_chain(sampler: Sampler, length: int, thin: int, params, state, wf, key, t0, phase):
    """``length`` steps of one chain from iteration ``t0``; every ``thin``-th position kept.

    Warmup and sampling share it (``phase`` is traced): in warmup the Welford update is
    masked out and the draws it returns are discarded.
    """
    pkey = jax.random.fold_in(key, phase)
    collect = phase == _PHASE_SAMPLE
    dtype = sampler.position(state, params).dtype

    def inner(carry, t):
        state, wf, acc, grads, divs, bad, ss, caps = carry
        state, info = sampler.step(jax.random.fold_in(pkey, t), state, params)
        x = sampler.position(state, params)
        bad = bad | ~jnp.all(jnp.isfinite(x))
        wf = jax.tree_util.tree_map(lambda new, old: jnp.where(collect, new, old),
                                    welford_update(wf, x[None]), wf)
        acc = acc + jnp.where(jnp.isfinite(info.acceptance), info.acceptance, 0.0)
        return (state, wf, acc, grads + info.num_grad_evals.astype(jnp.int32),
                divs + info.divergent.astype(jnp.int32), bad,
                jnp.asarray(info.step_size, dtype),
                caps + jnp.asarray(info.capped).astype(jnp.int32)), None

    def outer(carry, j):
        carry, _ = jax.lax.scan(inner, carry, t0 + j * thin + jnp.arange(thin))
        return carry, (sampler.position(carry[0], params), sampler.trace(carry[0], params))

    carry = (state, wf, jnp.zeros((), dtype), jnp.int32(0), jnp.int32(0),
             jnp.bool_(False), jnp.zeros((), dtype), jnp.int32(0))
    carry, (draws, traces) = jax.lax.scan(outer, carry, jnp.arange(length // thin))
    state, wf, acc, grads, divs, bad, ss, caps = carry
    return state, wf, (acc, grads, divs, bad, ss, caps), draws, traces


def _one_chain_iid(sampler: Sampler, length: int, thin: int, params, state, wf, key, t0,
                   phase):
    """An i.i.d. stream: the draws of iterations ``t0 .. t0+length-1`` in one batched
    call, from the same per-iteration keys as the step-by-step loop of :func:`_one_chain`."""
    pkey = jax.random.fold_in(key, phase)
    keys = jax.vmap(lambda t: jax.random.fold_in(pkey, t))(t0 + jnp.arange(length))
    xs = jax.vmap(sampler.draw, in_axes=(0, None))(keys, params)
    dtype = xs.dtype
    bad = ~jnp.all(jnp.isfinite(xs))
    wf = jax.tree_util.tree_map(lambda new, old: jnp.where(phase == _PHASE_SAMPLE, new, old),
                                welford_update(wf, xs), wf)
    kept = xs[thin - 1::thin]
    stats = (jnp.asarray(length, dtype), jnp.int32(0), jnp.int32(0), bad,
             jnp.zeros((), dtype), jnp.int32(0))
    return xs[-1], wf, stats, kept, {}


# An i.i.d. stream's chunk holds about this many values (chains x draws x pixels): its
# draws are one blocked solve, whose speed grows with the block (dense 4096-pixel factor,
# 2-core CPU: ~1,000 draws/s in blocks of 100, ~10,000 in blocks of 4096).
_IID_CHUNK_ELEMENTS = 1 << 24


def _default_chunk_size(sampler: Sampler, num_samples: int, thin: int, values: int) -> int:
    """Iterations per compiled chunk when the caller gives none: 100 kept draws (a
    checkpoint every 100), or for an i.i.d. stream (``sampler.draw``) up to ``most``,
    as many as make ~``_IID_CHUNK_ELEMENTS`` values over all chains (``values``: chains
    x pixels; all of the run's chains, not one process's share, so the draws do not
    depend on how many processes ran), at least 100 -- and there the largest divisor of
    the kept draws between ``max(100, most / 2)`` and ``most`` when one exists, so that
    every chunk has one length and compiles once (10,000 draws: chunks of 2500, not
    4096 + 4096 + 1808). A multiple of ``thin`` and at most ``num_samples``."""
    num_kept = num_samples // thin
    kept = 100
    if sampler.draw is not None:
        most = max(kept, _IID_CHUNK_ELEMENTS // max(values * thin, 1))
        kept = num_kept if num_kept <= most else next(
            (d for d in range(most, max(100, most // 2) - 1, -1) if num_kept % d == 0),
            most)
    return thin * max(1, min(kept, num_kept))


def _chains_in_turn(params, states, wf, keys, t0, phase, sampler, length, thin):
    """Every chain of the (local) batch, one after another (``lax.map``)."""
    one = _one_chain if sampler.draw is None else _one_chain_iid
    return jax.lax.map(
        lambda a: one(sampler, length, thin, params, a[0], a[1], a[2], t0, phase),
        (states, wf, keys))


def _chains_together(params, states, wf, keys, t0, phase, sampler, length, thin):
    """Every chain of the (local) batch at once (``vmap``)."""
    one = _one_chain if sampler.draw is None else _one_chain_iid
    return jax.vmap(lambda s, w, k: one(sampler, length, thin, params, s, w, k, t0,
                                        phase))(states, wf, keys)


@partial(jax.jit, static_argnames=("sampler", "length", "thin", "chain_method", "mesh"))
def _chunk(params, states, wf, keys, t0, phase, *, sampler: Sampler, length: int, thin: int,
           chain_method: str = "vectorized", mesh=None):
    """``length`` iterations of every chain, jitted once at module level: the Sampler
    (module-level functions), the loop structure, the chain method and the device mesh
    are static; everything that varies between problems (``params``) and between chunks
    (states, ``t0``) is traced.

    ``chain_method="vectorized"``: chains vmapped (a NUTS iteration lasts as long as the
    longest tree of all chains); ``"sequential"``: ``lax.map`` over chains. With a
    ``mesh`` (several devices) either runs inside a ``shard_map``, so every device vmaps
    or maps over its own chains and never waits for another device. (A plain vmap over
    sharded chains lets XLA partition it, and every vmapped ``while_loop`` -- a CG solve,
    a NUTS tree -- then all-reduces its condition across the devices on every iteration,
    as the compiled chunk shows; ``tests/test_chain_method.py``.)"""
    chains = _chains_together if chain_method == "vectorized" else _chains_in_turn
    run = partial(chains, sampler=sampler, length=length, thin=thin)
    if mesh is None:
        return run(params, states, wf, keys, t0, phase)
    # check_vma=False: blackjax's kernels mix per-device values and replicated constants
    # in lax.cond branches, which the varying-axis check rejects; each device's chains
    # are independent, so there is nothing for it to check
    P = jax.sharding.PartitionSpec
    return jax.shard_map(run, mesh=mesh, in_specs=(P(), P("chains"), P("chains"),
                                                   P("chains"), P(), P()),
                         out_specs=P("chains"), check_vma=False)(params, states, wf, keys,
                                                                 t0, phase)


@partial(jax.jit, static_argnames=("sampler",))
def _init_states(params, keys, positions, *, sampler: Sampler):
    """Every chain's initial state from its starting image (phase-0 keys)."""
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, _PHASE_INIT))(keys)
    return jax.vmap(sampler.init, in_axes=(0, 0, None))(init_keys, positions, params)


def _check_state_layout(stored, sampler, params, keys, positions, checkpoint_dir):
    """Raise :class:`CheckpointMismatch` unless the checkpoint's chain states have the
    structure, shapes and dtypes of the states this sampler builds now (``eval_shape``:
    nothing runs). The fingerprint records the run's settings, not the state's layout,
    which changes with the sampler's code (HMC's state gained a Halton counter): an old
    checkpoint must be refused, not fail inside the first step."""
    now = jax.eval_shape(partial(_init_states, sampler=sampler), params, keys, positions)

    def layout(tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return treedef, [(tuple(np.shape(x)),
                          str(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype))
                         for x in leaves]
    try:
        same = layout(stored) == layout(now)
    except (TypeError, ValueError):
        same = False
    if not same:
        raise CheckpointMismatch(
            f"checkpoint_dir={str(checkpoint_dir)!r} holds chain states of another layout "
            f"(written by another version of the sampler: {type(stored).__name__} of "
            f"{jax.tree_util.tree_structure(stored)} against "
            f"{jax.tree_util.tree_structure(now)} now); use another directory")


@partial(jax.jit, static_argnames=("sampler",))
def _finish_warmup(params, states, *, sampler: Sampler):
    return jax.vmap(sampler.finish_warmup, in_axes=(0, None))(states, params)


def _process_share(num_chains):
    """``(first, count)``: the chains this process runs under ``jax.distributed`` (the
    ``num_chains`` split evenly over ``jax.process_count()`` processes; ``(0, num_chains)``
    in a single process)."""
    procs = jax.process_count()
    if num_chains % procs:
        raise ValueError(f"num_chains ({num_chains}) must be a multiple of the number of "
                         f"JAX processes ({procs}) so every process runs as many chains")
    count = num_chains // procs
    return jax.process_index() * count, count


def _gather_chains(tree):
    """Concatenate every process's chains (leading axis) of a pytree of host arrays."""
    if jax.process_count() == 1:
        return tree
    return jax.tree_util.tree_map(
        lambda a: np.asarray(multihost_utils.process_allgather(np.asarray(a), tiled=True)),
        tree)


def _sum_over_processes(value: int) -> int:
    if jax.process_count() == 1:
        return int(value)
    return int(np.sum(multihost_utils.process_allgather(np.asarray([value], np.int64))))


def _chain_sharding(num_chains):
    """``(sharding, mesh, number of devices)``: chains split over the largest number of
    this process's devices that divides ``num_chains`` (``(None, None, 1)`` on one
    device)."""
    devices = jax.local_devices()
    d = max(k for k in range(1, len(devices) + 1) if num_chains % k == 0)
    if d == 1:
        return None, None, 1
    mesh = jax.sharding.Mesh(np.array(devices[:d]), ("chains",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("chains")), mesh, d


def _fingerprint(**kw):
    return {k: (v if not isinstance(v, np.ndarray) else v.tolist()) for k, v in kw.items()}


def _fingerprint_difference(stored: dict, now: dict) -> str:
    """The settings two fingerprints disagree on, e.g. ``chain_method: 'vectorized' in the
    checkpoint, 'sequential' now`` (a changed default is then named, not just refused)."""
    def short(v):
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."
    keys = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    return "; ".join(f"{k}: {short(stored.get(k))} in the checkpoint, {short(now.get(k))} now"
                     for k in keys)


def run_chains(sampler: Sampler, params, init_positions, key, *, num_warmup: int,
               num_samples: int, thin: int = 1, chunk_size: int | None = None,
               checkpoint_dir=None, draws_dir=None, keep_draws: bool = True,
               progress: bool = True,
               callback: Callable[[dict], Any] | None = None,
               fingerprint: dict | None = None,
               chain_method: str = "vectorized") -> RunOutput:
    """Run ``C = len(init_positions)`` chains of ``sampler`` on ``params``: warmup, then
    sampling.

    ``sampler`` is a static :class:`Sampler` (module-level functions) and ``params`` the
    pytree its functions take (posterior, preconditioner, step sizes...); the chunk is
    jitted once per (sampler, chunk length, thin, params structure and shapes) for the
    whole process, so a second run on a same-shaped problem compiles nothing.

    ``num_samples`` counts post-warmup iterations; every one enters the Welford mean and
    variance, every ``thin``-th is kept (``num_samples // thin`` draws per chain).
    ``chunk_size`` (a multiple of ``thin``) is the number of iterations per compiled chunk.
    With ``checkpoint_dir`` the state is saved after every chunk and a run started with
    the same arguments resumes from it. With ``draws_dir`` draws go to
    ``draws_dir/draws.npy`` (a memmap) instead of memory. ``callback(info)`` is called
    after each chunk (``info``: phase, iterations done, total). ``timings`` holds
    ``compile_s`` (tracing, lowering and XLA compilation that actually happened in this
    call), ``run_s`` (the rest of the chunks' wall time), ``num_compiles`` (XLA
    compilations in this call) and ``chunks_run`` (chunks executed by this call: after a
    resume, only the ones the checkpoint did not hold).

    ``chain_method``: ``"vectorized"`` vmaps the chains (their gradients batch into one
    matrix product, but a vmapped while loop, e.g. a NUTS tree, runs until its longest
    lane is done); ``"sequential"`` runs them one after another inside the same compiled
    chunk (``lax.map``), so one chain's long NUTS tree does not stall the others. Both
    use the same per-chain keys, so a chain's draws agree between the two up to
    floating-point rounding (a batched product sums in another order). With several
    devices the chains are sharded over them in both modes. It is part of the
    checkpoint's fingerprint (a resumed run is bitwise identical only in the same mode).

    Several processes (``jax.distributed.initialize`` called before): process ``i`` of
    ``P`` runs chains ``i C/P .. (i+1) C/P - 1`` (same keys as in one process, so the
    union of the processes' chains is the single-process run) on its local devices, with
    its checkpoint and memory-mapped draws in ``<dir>/process-i-of-P``; at the end the
    Welford states, draws, traces and counters of all processes are gathered
    (``multihost_utils.process_allgather``), so every process returns the whole run.
    ``timings`` stay the process's own; ``num_devices`` counts the devices of all
    processes.

    Args:
        sampler: the :class:`Sampler`.
        params: the pytree its functions take.
        init_positions: initial positions, one per chain.
        key: JAX PRNG key.
        num_warmup: warm-up iterations per chain.
        num_samples: post-warmup iterations per chain.
        thin: keep every ``thin``-th draw.
        chunk_size: iterations per compiled chunk (None: automatic).
        checkpoint_dir: folder for resumable checkpoints.
        draws_dir: folder for memory-mapped draws.
        keep_draws: keep the draws (False: only the running moments).
        progress: show a progress bar.
        callback: called with an info dict after each chunk.
        fingerprint: extra entries of the checkpoint's fingerprint.
        chain_method: ``'vectorized'`` or ``'sequential'``.

    Returns:
        A :class:`RunOutput` (host arrays).
    """
    chain_method = check_chain_method(chain_method)
    monitor = CompileMonitor().__enter__()
    try:
        with one_blas_thread(getattr(sampler, "one_blas_thread", False)):
            return _run_chains(monitor, sampler, params, init_positions, key,
                               num_warmup=num_warmup, num_samples=num_samples, thin=thin,
                               chunk_size=chunk_size, checkpoint_dir=checkpoint_dir,
                               draws_dir=draws_dir, keep_draws=keep_draws,
                               progress=progress, callback=callback, fingerprint=fingerprint,
                               chain_method=chain_method)
    finally:
        monitor.__exit__()


@contextlib.contextmanager
def one_blas_thread(active: bool = True):
    """A context in which every BLAS/LAPACK library loaded in this process (scipy's
    OpenBLAS, which XLA's CPU backend calls for Cholesky, triangular solves and
    eigendecompositions, and numpy's) uses one thread; the previous setting is restored
    on exit. ``active=False``: a null context.

    Why: OpenBLAS's idle threads spin for a while after every call, so a LAPACK call
    inside every step of a compiled chunk (GSM factorises its coarse 1024 x 1024 matrix
    every sweep) leaves threads taking cores away from XLA's own for the rest of the
    sweep. Measured on 2 cores, 128x128 sparse-view CT, GSM with ``hmc_moves=5``, 4
    vectorised chains x 25 sweeps, alternating in one process: 15.0 s with one BLAS
    thread against 15.8 s with two (5 %); one chain without HMC moves: 108 against 143 ms
    per sweep. ``run_chains`` applies it only to samplers that declare it
    (``Sampler.one_blas_thread``): a chunk of exact Gaussian draws is one large
    triangular solve, which keeps its threads. threadpoolctl lets one thread at a time
    control a pthreads OpenBLAS: two runs in different Python threads do not both get
    the limit.
    """
    if not active:
        yield
        return
    import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK: loaded before limiting)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _run_chains(monitor, sampler, params, init_positions, key, *, num_warmup, num_samples,
                thin, chunk_size, checkpoint_dir, draws_dir, keep_draws, progress, callback,
                fingerprint, chain_method):
    if not isinstance(sampler, Sampler):
        raise TypeError(f"run_chains: 'sampler' must be a Sampler, got "
                        f"{type(sampler).__name__}")
    init_positions = jnp.asarray(init_positions)
    num_chains = init_positions.shape[0]
    first, C = _process_share(num_chains)     # this process's chains (all of them in one)
    init_positions = init_positions[first:first + C]
    procs = jax.process_count()
    if procs > 1:
        sub = f"process-{jax.process_index()}-of-{procs}"
        checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / sub
        draws_dir = None if draws_dir is None else Path(draws_dir) / sub
    shape = init_positions.shape[1:]
    dtype = init_positions.dtype
    if thin < 1 or num_samples < thin:
        raise ValueError(f"thin must be in [1, num_samples], got thin={thin}, "
                         f"num_samples={num_samples}")
    if num_samples % thin:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of thin ({thin})")
    if chunk_size is None:
        chunk_size = _default_chunk_size(sampler, num_samples, thin,
                                         num_chains * math.prod(shape))
    if chunk_size < 1 or chunk_size % thin:
        raise ValueError(f"chunk_size ({chunk_size}) must be a positive multiple of "
                         f"thin ({thin})")
    num_kept = num_samples // thin
    sharding, mesh, num_devices = _chain_sharding(C)
    put = (lambda t: jax.device_put(t, sharding)) if sharding is not None else (lambda t: t)
    fp = _fingerprint(num_chains=num_chains, first_chain=first, shape=list(shape), dtype=str(dtype), thin=thin,
                      num_warmup=num_warmup, num_samples=num_samples, chunk_size=chunk_size,
                      chain_method=chain_method,
                      key=np.asarray(jax.random.key_data(key) if jnp.issubdtype(
                          key.dtype, jax.dtypes.prng_key) else key),
                      **(fingerprint or {}))

    keys = _chain_keys(key, num_chains)[first:first + C]
    ckpt = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    draws = None
    traces: dict[str, np.ndarray] = {}
    totals = {"acc": np.zeros(C), "grads_s": 0, "grads_w": 0, "divs": np.zeros(C, np.int64),
              "bad": np.zeros(C, bool), "step": np.zeros(C), "warm_done": 0, "samp_done": 0,
              "capped": np.zeros(C, np.int64)}
    if draws_dir is not None and keep_draws:
        Path(draws_dir).mkdir(parents=True, exist_ok=True)
    draws_path = Path(draws_dir) / "draws.npy" if draws_dir is not None else None

    if ckpt is not None:
        if ckpt["fingerprint"] != fp:
            raise CheckpointMismatch(
                f"checkpoint_dir={str(checkpoint_dir)!r} holds a checkpoint of a different "
                f"run (settings differ: {_fingerprint_difference(ckpt['fingerprint'], fp)}); "
                "use another directory, or the checkpoint's settings")
        _check_state_layout(ckpt["states"], sampler, params, keys, init_positions,
                            checkpoint_dir)
        states = put(jax.tree_util.tree_map(jnp.asarray, ckpt["states"]))
        wf = put(jax.tree_util.tree_map(jnp.asarray, ckpt["welford"]))
        totals = ckpt["totals"]
        traces = ckpt["traces"]
        if keep_draws:
            draws = (np.lib.format.open_memmap(draws_path, mode="r+") if draws_path
                     else ckpt["draws"])
    else:
        states = put(_init_states(params, keys, init_positions, sampler=sampler))
        wf = put(jax.vmap(lambda _: welford_init(shape, dtype))(jnp.arange(C)))
        if keep_draws:
            draws = (np.lib.format.open_memmap(draws_path, mode="w+", dtype=dtype,
                                               shape=(C, num_kept, *shape))
                     if draws_path else np.zeros((C, num_kept, *shape), dtype))
    keys = put(keys)

    run_s, chunks_run = 0.0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_warmup + num_samples, initial=totals["warm_done"] +
                   totals["samp_done"], desc="sampling", unit="it")

    def save():
        if checkpoint_dir is None:
            return
        if isinstance(draws, np.memmap):
            draws.flush()
        save_checkpoint(checkpoint_dir, {
            "fingerprint": fp, "states": states, "welford": wf, "totals": totals,
            "traces": traces, "draws": draws if not isinstance(draws, np.memmap) else None})

    for phase, total, done_key in ((_PHASE_WARMUP, num_warmup, "warm_done"),
                                   (_PHASE_SAMPLE, num_samples, "samp_done")):
        if phase == _PHASE_SAMPLE and totals["warm_done"] == num_warmup \
                and totals["samp_done"] == 0 and not totals.get("finished_warmup"):
            states = _finish_warmup(params, states, sampler=sampler)
            totals["finished_warmup"] = True
        while totals[done_key] < total:
            t0 = totals[done_key]
            length = min(chunk_size, total - t0)
            t_run, c_run = time.perf_counter(), monitor.compile_s
            states, wf, stats, chunk_draws, chunk_traces = _chunk(
                params, states, wf, keys, jnp.int32(t0), jnp.int32(phase), sampler=sampler,
                length=length, thin=thin if length % thin == 0 else 1,
                chain_method=chain_method, mesh=mesh)
            acc, grads, divs, bad, step, caps = jax.device_get(stats)
            run_s += time.perf_counter() - t_run - (monitor.compile_s - c_run)
            chunks_run += 1
            grads_total = int(np.asarray(grads, np.int64).sum())
            if phase == _PHASE_SAMPLE:
                totals["acc"] = totals["acc"] + np.asarray(acc, np.float64)
                totals["divs"] = totals["divs"] + np.asarray(divs, np.int64)
                totals["capped"] = totals["capped"] + np.asarray(caps, np.int64)
                totals["grads_s"] += grads_total
                lo, hi = t0 // thin, (t0 + length) // thin
                if keep_draws:
                    draws[:, lo:hi] = np.asarray(chunk_draws)
                for name, val in jax.device_get(chunk_traces).items():
                    traces.setdefault(name, np.zeros((C, num_kept), np.asarray(val).dtype))
                    traces[name][:, lo:hi] = np.asarray(val)
            else:
                totals["grads_w"] += grads_total
            totals["bad"] = totals["bad"] | np.asarray(bad)
            totals["step"] = np.asarray(step, np.float64)
            totals[done_key] = t0 + length
            save()
            if bar is not None:
                bar.update(length)
            if callback is not None:
                callback({"phase": "warmup" if phase == _PHASE_WARMUP else "sampling",
                          "done": totals[done_key], "total": total})
    if bar is not None:
        bar.close()

    if procs > 1:   # every process gets every chain's results
        wf, draws, traces, totals["acc"], totals["divs"], totals["step"], \
            totals["capped"], totals["bad"] = _gather_chains(
                (jax.device_get(wf), None if draws is None else np.asarray(draws), traces,
                 totals["acc"], totals["divs"], totals["step"], totals["capped"],
                 totals["bad"]))
        totals["grads_s"] = _sum_over_processes(totals["grads_s"])
        totals["grads_w"] = _sum_over_processes(totals["grads_w"])
        num_devices = _sum_over_processes(num_devices)
    good = ~totals["bad"]
    if not good.any():
        raise FloatingPointError("every chain reached a non-finite state (NaN/inf); "
                                 "reduce the step size or check the posterior")
    wf = jax.device_get(wf)
    cmean, cvar = (np.asarray(a) for a in jax.vmap(lambda w: welford_finalize(w, ddof=1))(wf))
    mean, var = (np.asarray(a) for a in welford_finalize(
        welford_merge(jax.tree_util.tree_map(lambda a: a[good], wf)), ddof=1))
    return RunOutput(
        mean=mean.astype(dtype), variance=var.astype(dtype), chain_mean=cmean.astype(dtype),
        chain_variance=cvar.astype(dtype), draws=draws, traces=traces,
        acceptance_rate=totals["acc"] / max(num_samples, 1), divergences=totals["divs"],
        step_size=totals["step"], num_capped=totals["capped"],
        num_grad_evals=totals["grads_s"],
        num_grad_evals_warmup=totals["grads_w"], nonfinite_chains=totals["bad"],
        timings={"compile_s": monitor.compile_s, "run_s": run_s,
                 "num_compiles": monitor.num_compiles, "chunks_run": chunks_run},
        num_devices=num_devices)

"""Checkpoints between runner chunks: one pickle of host (numpy) pytrees, written atomically.

A checkpoint holds everything the runner needs to continue bit-for-bit: chain states,
Welford accumulators, counters, kept draws (when in memory), and a fingerprint of the run
configuration so a checkpoint is never resumed into a different run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME", "CheckpointMismatch"]

CHECKPOINT_NAME = "checkpoint.pkl"


class CheckpointMismatch(ValueError):
    """A checkpoint folder holds the checkpoint of a run with other settings."""


def save_checkpoint(directory, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (pytrees of arrays and plain values) to ``directory`` atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(f".{os.getpid()}.tmp")     # two writers never share a file
    host = jax.tree_util.tree_map(
        lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, payload)
    with open(tmp, "wb") as f:
        pickle.dump(host, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(directory) -> dict[str, Any] | None:
    """The payload saved in ``directory``, or None when there is no checkpoint."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    with open(path, "rb") as f:
        return pickle.load(f)

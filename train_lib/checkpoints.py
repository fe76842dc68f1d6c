"""Training checkpoints that survive pre-emption: written atomically, loaded strictly, in the reference's format.

A checkpoint is a ``dict`` with the 2021 reference's keys, ``{'model', 'ema', 'optimizer', 'step'}``, so the
reference's published checkpoints load here (through :func:`models.load_reference_training_state`, which
renames their positional keys and reorders their EMA and optimizer state) and ours are laid out like theirs.

* :func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and renames it over
  the target (``os.replace`` is atomic on POSIX and Windows): a process killed at any moment leaves either the
  previous checkpoint or the new one, never a truncated file.
* :func:`restore_checkpoint` loads with ``weights_only=True`` (allow-listing only the numpy scalar that the
  reference's warm-up learning rate needs) and strictly: a corrupt file, a file that is not a checkpoint, or
  weights that do not fit the model raise :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, MutableMapping

import torch

from models import ExponentialMovingAverage, load_reference_training_state, strip_data_parallel_prefix
from models.checkpoint import NUMPY_FLOAT64_SAFE_GLOBALS
from base_lib.files import atomic_write

#: the keys of a training checkpoint, as the reference writes them
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "step")

TrainState = MutableMapping[str, Any]
"""``{'model': nn.Module, 'ema': ExponentialMovingAverage, 'optimizer': Optimizer, 'step': int}``: the reference's
training state, updated in place by the step function and by :func:`restore_checkpoint`."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model being trained."""


def _check_state(state: TrainState) -> None:
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"the training state lacks {missing}; it needs {list(CHECKPOINT_KEYS)}")
    if not isinstance(state["ema"], ExponentialMovingAverage):
        raise ValueError(f"state['ema'] must be a models.ExponentialMovingAverage, got {type(state['ema']).__name__}")


def checkpoint_payload(state: TrainState) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes: the state dicts of model, EMA and optimizer, and the step as an int."""
    _check_state(state)
    return {
        "model": state["model"].state_dict(),
        "ema": state["ema"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
        "step": int(state["step"]),
    }


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); create the folder if needed.

    Temporary files that an earlier writer of ``path`` left behind when it was killed are removed first.
    """
    path = Path(path)
    payload = checkpoint_payload(state)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-save (one writer per path)
        stale.unlink(missing_ok=True)
    return atomic_write(path, lambda file: torch.save(payload, file))


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint ``dict`` at ``path``, loaded safely; :class:`CheckpointError` naming the file otherwise."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(NUMPY_FLOAT64_SAFE_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # truncated zip, pickle garbage, a disallowed global: all mean "not loadable"
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or any(key not in payload for key in ("model", "step")):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a training checkpoint: expected keys {list(CHECKPOINT_KEYS)}, got {keys}")
    return payload


def restore_checkpoint(path: str | os.PathLike, state: TrainState, map_location: Any = "cpu") -> TrainState:
    """Load the checkpoint at ``path`` into ``state`` (model, EMA, optimizer, step) in place, strictly; return it.

    Both our checkpoints and the reference's load: a ``model`` entry whose keys are the model's own names is
    loaded directly, any other through :func:`models.load_reference_training_state` (positional reference
    names, ``module.`` prefix, reordered EMA and optimizer state). Any mismatch raises :class:`CheckpointError`
    naming the file, and leaves ``state`` as it was.
    """
    _check_state(state)
    path = Path(path)
    payload = load_checkpoint_file(path, map_location)
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint: it lacks {missing}")
    model, ema, optimizer = state["model"], state["ema"], state["optimizer"]
    weights = strip_data_parallel_prefix(payload["model"])
    backup = copy.deepcopy(checkpoint_payload(state))  # put back if any part fails: never a half-loaded state
    try:
        if set(weights) == set(model.state_dict()):
            model.load_state_dict(weights, strict=True)
            ema.load_state_dict(payload["ema"])
            optimizer.load_state_dict(payload["optimizer"])
            step = int(payload["step"])
        else:
            step = load_reference_training_state(payload, model, ema=ema, optimizer=optimizer)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        model.load_state_dict(backup["model"])
        ema.load_state_dict(backup["ema"])
        optimizer.load_state_dict(backup["optimizer"])
        raise CheckpointError(f"checkpoint {path} does not fit this model: {error}") from error
    state["step"] = step
    return state

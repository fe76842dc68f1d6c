"""Training checkpoints that survive pre-emption: written atomically, loaded strictly, in the reference's format.

A checkpoint is a ``dict`` with the 2021 reference's keys, ``{'model', 'ema', 'optimizer', 'step'}``, so the
reference's published checkpoints load here (through :func:`models.load_reference_training_state`, which
renames their positional keys and reorders their EMA and optimizer state) and ours are laid out like theirs.

* :func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and renames it over
  the target (``os.replace`` is atomic on POSIX and Windows): a process killed at any moment leaves either the
  previous checkpoint or the new one, never a truncated file. A file system that refuses the write (no space
  left, read-only) raises :class:`base_lib.files.WriteError` and leaves the previous file as it was.
* A state whose step is not an integer in ``0 .. MAX_STEP`` or whose tensors (weights, EMA, optimizer moments)
  hold a NaN or an infinity is never written: :class:`CheckpointError`.
* The file records the SHA-256 digest of its contents (:func:`payload_digest`, under :data:`DIGEST_KEY`), so a
  file damaged after it was written (a flipped bit in the tensor data, which ``torch.load`` does not notice) is
  refused when read. The reference's files have no digest and load without that check.
* :func:`restore_checkpoint` loads with ``weights_only=True`` (allow-listing only the numpy scalar that the
  reference's warm-up learning rate needs) and strictly: a corrupt file, a file that is not a checkpoint, a digest
  that does not match, non-finite tensors, an invalid step, or weights that do not fit the model raise
  :class:`CheckpointError`, with a one-line message naming the file and the cause.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping

import torch
from torch import Tensor

from models import ExponentialMovingAverage, load_reference_training_state, strip_data_parallel_prefix
from models.checkpoint import NUMPY_FLOAT64_SAFE_GLOBALS
from base_lib.files import atomic_write

#: the keys of a training checkpoint, as the reference writes them
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "step")
#: the key under which our checkpoints record :func:`payload_digest` of the other entries
DIGEST_KEY = "sha256"
#: the largest step a checkpoint may record; anything beyond is a damaged or foreign file, not a training run
MAX_STEP = 10**12

TrainState = MutableMapping[str, Any]
"""``{'model': nn.Module, 'ema': ExponentialMovingAverage, 'optimizer': Optimizer, 'step': int}``: the reference's
training state, updated in place by the step function and by :func:`restore_checkpoint`."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, is damaged or unsound (digest, step, non-finite tensors), or does not
    fit the model being trained; or a state that must not be written."""


def _check_state(state: TrainState, optimizer: bool = True) -> None:
    """``state`` holds what it must: ``{'model', 'ema', 'optimizer', 'step'}`` (without ``'optimizer'`` when
    ``optimizer`` is False: a state that is only restored into, to evaluate or sample)."""
    needed = [key for key in CHECKPOINT_KEYS if optimizer or key != "optimizer"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(f"the training state lacks {missing}; it needs {needed}")
    if not isinstance(state["ema"], ExponentialMovingAverage):
        raise ValueError(f"state['ema'] must be a models.ExponentialMovingAverage, got {type(state['ema']).__name__}")


def checkpoint_payload(state: TrainState) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes (less the digest): the state dicts of model, EMA and optimizer, and the
    step as an int."""
    _check_state(state)
    return {
        "model": state["model"].state_dict(),
        "ema": state["ema"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
        "step": int(state["step"]),
    }


def payload_digest(payload: Mapping[str, Any]) -> str:
    """The SHA-256 digest (hex) of every entry of ``payload`` but :data:`DIGEST_KEY`, in a canonical order.

    Tensors count by dtype, shape and bytes (whatever their device), mappings by their items sorted by key, and
    other values by type and ``repr``: exactly what ``torch.save`` keeps, so the digest of a loaded payload equals
    that of the saved one unless the file changed in between.
    """
    digest = hashlib.sha256()
    _digest_update(digest, {key: value for key, value in payload.items() if key != DIGEST_KEY})
    return digest.hexdigest()


def _digest_update(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"mapping {len(value)};".encode())
        for key, item in sorted(value.items(), key=lambda pair: (type(pair[0]).__name__, str(pair[0]))):
            _digest_update(digest, key)
            _digest_update(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _digest_update(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def _tensors(value: Any, where: str) -> Iterator[tuple[str, Tensor]]:
    """Every tensor inside ``value`` with its location, e.g. ``optimizer['state'][0]['exp_avg']``."""
    if isinstance(value, Tensor):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{where}[{index}]")


def nonfinite_entries(payload: Mapping[str, Any]) -> list[str]:
    """The locations of the tensors of ``payload`` (weights, EMA, optimizer moments) that hold a NaN or an infinity."""
    return [
        where
        for key, value in payload.items()
        for where, tensor in _tensors(value, key)
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())
    ]


def _step_problem(step: Any) -> str | None:
    """Why ``step`` cannot be a checkpoint's step (an integer in ``0 .. MAX_STEP``; the reference may store it as a
    0-d integer tensor), or ``None``."""
    if isinstance(step, Tensor) and step.ndim == 0 and not step.is_floating_point() and step.dtype != torch.bool:
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int):
        return f"its step {step!r} is not an integer"
    if not 0 <= step <= MAX_STEP:
        return f"its step {int(step)} is outside 0..{MAX_STEP}"
    return None


def _payload_problem(payload: Mapping[str, Any]) -> str | None:
    """Why ``payload`` is not a sound training state (an invalid step, non-finite tensors), or ``None``."""
    problem = _step_problem(payload["step"])
    if problem is not None:
        return problem
    bad = nonfinite_entries(payload)
    if bad:
        more = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        return f"it holds NaN or infinite values in {bad[0]}{more}"
    return None


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename) with its digest; create the folder if
    needed. :class:`CheckpointError` (nothing written) if the step is invalid or a tensor is not finite;
    :class:`base_lib.files.WriteError` if the file system refuses the write (the previous file is kept).

    Temporary files that an earlier writer of ``path`` left behind when it was killed are removed first.
    """
    path = Path(path)
    payload = checkpoint_payload(state)
    problem = _payload_problem(payload)
    if problem is not None:
        raise CheckpointError(f"refusing to write checkpoint {path}: {problem}")
    payload[DIGEST_KEY] = payload_digest(payload)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-save (one writer per path)
            stale.unlink(missing_ok=True)
    return atomic_write(path, lambda file: torch.save(payload, file))


def _one_line(error: BaseException) -> str:
    """``error`` as one line: its type and the lines of its message that say what went wrong (``torch.load``'s
    advice about ``weights_only`` dropped: it is exactly what must not be done with a file that fails here)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line.split("WeightsUnpickler error:")[-1].strip() for line in lines
            if not line.startswith(("Weights only load failed", "Check the documentation"))]
    text = " ".join(line for line in kept if line)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint ``dict`` at ``path``, loaded safely and checked (digest if recorded, step, finite
    tensors); :class:`CheckpointError` with a one-line message naming the file and the cause otherwise."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(NUMPY_FLOAT64_SAFE_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # truncated zip, pickle garbage, a disallowed global: all mean "not loadable"
        raise CheckpointError(f"checkpoint {path} cannot be read ({_one_line(error)})") from error
    if not isinstance(payload, dict) or any(key not in payload for key in ("model", "step")):
        keys = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a training checkpoint: expected keys {list(CHECKPOINT_KEYS)}, got {keys}")
    recorded = payload.get(DIGEST_KEY)
    if recorded is not None and not (isinstance(recorded, str) and recorded == payload_digest(payload)):
        raise CheckpointError(
            f"checkpoint {path} is corrupted: its contents do not match the SHA-256 digest recorded when it was written"
        )
    problem = _payload_problem(payload)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is refused: {problem}")
    return payload


def restore_checkpoint(path: str | os.PathLike, state: TrainState, map_location: Any = "cpu") -> TrainState:
    """Load the checkpoint at ``path`` into ``state`` (model, EMA, optimizer, step) in place, strictly; return it.

    A ``state`` without ``'optimizer'`` (to evaluate or sample) receives the model, the EMA and the step; the
    file's optimizer state is checked (digest, finiteness) but not loaded.

    Both our checkpoints and the reference's load: a ``model`` entry whose keys are the model's own names is
    loaded directly, any other through :func:`models.load_reference_training_state` (positional reference
    names, ``module.`` prefix, reordered EMA and optimizer state). Any mismatch raises :class:`CheckpointError`
    naming the file, and leaves ``state`` as it was.
    """
    _check_state(state, optimizer=False)
    path = Path(path)
    payload = load_checkpoint_file(path, map_location)
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint: it lacks {missing}")
    model, ema, optimizer = state["model"], state["ema"], state.get("optimizer")
    weights = strip_data_parallel_prefix(payload["model"])
    # put back if any part fails: never a half-loaded state
    backup = copy.deepcopy({"model": model.state_dict(), "ema": ema.state_dict(),
                            "optimizer": None if optimizer is None else optimizer.state_dict()})
    try:
        if set(weights) == set(model.state_dict()):
            model.load_state_dict(weights, strict=True)
            ema.load_state_dict(payload["ema"])
            if optimizer is not None:
                optimizer.load_state_dict(payload["optimizer"])
            step = int(payload["step"])
        else:
            step = load_reference_training_state(payload, model, ema=ema, optimizer=optimizer)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        model.load_state_dict(backup["model"])
        ema.load_state_dict(backup["ema"])
        if optimizer is not None:
            optimizer.load_state_dict(backup["optimizer"])
        raise CheckpointError(f"checkpoint {path} does not fit this model ({_one_line(error)})") from error
    state["step"] = step
    return state

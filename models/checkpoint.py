"""Safe loading of training checkpoints written by the 2021 reference (``utils.save_checkpoint``).

Such a checkpoint is a ``dict`` with ``'model'`` (the ``state_dict`` of a ``DataParallel``-wrapped network, every
key prefixed with ``module.``), ``'ema'`` (:class:`models.ExponentialMovingAverage` format), ``'optimizer'`` and
``'step'``. During learning-rate warm-up the reference computes the rate with numpy, so the optimizer state holds
a ``numpy.float64``: ``torch.load(weights_only=True)`` rejects the file, and ``weights_only=False`` would run
arbitrary pickled code. :func:`load_reference_checkpoint` allow-lists just what such a scalar needs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import IO, Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

#: globals needed to unpickle a ``numpy.float64`` scalar, and nothing else: the scalar constructor (also under
#: its numpy 1.x path, for checkpoints written with numpy 1), ``numpy.dtype`` and the float64 dtype class
NUMPY_FLOAT64_SAFE_GLOBALS = [
    _numpy_scalar,
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    np.dtype,
    type(np.dtype(np.float64)),
]

DATA_PARALLEL_PREFIX = "module."


def load_reference_checkpoint(path: str | os.PathLike | IO[bytes], map_location: Any = "cpu") -> dict[str, Any]:
    """The raw ``dict`` of a reference training checkpoint, loaded with ``weights_only=True``.

    ``numpy.float64`` scalars (the warm-up learning rate) are allowed through
    :data:`NUMPY_FLOAT64_SAFE_GLOBALS`; any other non-tensor object makes ``torch.load`` raise, as it should.
    ``map_location`` is passed to ``torch.load`` (the CPU by default; the reference saved from its device).
    The keys are left as stored: see :func:`strip_data_parallel_prefix` for the ``'model'`` entry.
    """
    with torch.serialization.safe_globals(NUMPY_FLOAT64_SAFE_GLOBALS):
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"a reference checkpoint is a dict, got {type(checkpoint).__name__}")
    return checkpoint


def strip_data_parallel_prefix(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """``state_dict`` with the ``module.`` prefix of ``torch.nn.DataParallel`` removed from every key that has it."""
    return OrderedDict(
        (key[len(DATA_PARALLEL_PREFIX):] if key.startswith(DATA_PARALLEL_PREFIX) else key, value)
        for key, value in state_dict.items()
    )


# ------------------------------------------------------------------------------------------ reference key mapping
#
# The reference names its modules by position (NCSN++ and DDPM keep every layer in one flat ``all_modules``
# list, so keys read ``all_modules.17.Conv_0.weight``). Our networks name their modules by what they are and
# describe the correspondence with a method ``reference_key_map() -> {reference prefix: our prefix}``, built
# while the network is constructed. Keys are renamed by their longest matching prefix (a prefix matches a key
# when it equals it or is followed by ``.``); tensors are never transformed, so every tensor keeps the
# reference's layout. A model without the method uses the reference's names (NCSNv2, NCSN, the MLP).

PrefixMap = Mapping[str, str]


def reference_key_map(model: torch.nn.Module) -> dict[str, str]:
    """``{reference prefix: our prefix}`` of ``model`` (empty when it uses the reference's own names)."""
    method = getattr(model, "reference_key_map", None)
    return dict(method()) if callable(method) else {}


def _rename(key: str, prefix_map: PrefixMap, sorted_prefixes: list[str]) -> str:
    for prefix in sorted_prefixes:  # longest first
        if key == prefix or key.startswith(prefix + "."):
            return prefix_map[prefix] + key[len(prefix):]
    return key


def _renamed(keys: Iterable[str], prefix_map: PrefixMap) -> list[str]:
    prefixes = sorted(prefix_map, key=len, reverse=True)
    return [_rename(key, prefix_map, prefixes) for key in keys]


def from_reference_keys(model: torch.nn.Module, keys: Iterable[str]) -> list[str]:
    """Our names for the reference ``state_dict`` keys ``keys`` (bare, without ``module.``)."""
    return _renamed(keys, reference_key_map(model))


def to_reference_keys(model: torch.nn.Module, keys: Iterable[str]) -> list[str]:
    """The reference's names for our ``state_dict`` keys ``keys`` (the inverse of :func:`from_reference_keys`)."""
    inverse = {ours: ref for ref, ours in reference_key_map(model).items()}
    return _renamed(keys, inverse)


def to_reference_state_dict(model: torch.nn.Module) -> "OrderedDict[str, Tensor]":
    """``model.state_dict()`` under the reference's key names, e.g. to hand our weights to reference code."""
    state = model.state_dict()
    return OrderedDict(zip(to_reference_keys(model, state.keys()), state.values()))


def _listing(keys: Iterable[str], limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_reference_weights(model: torch.nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load a reference ``state_dict`` into ``model``, built here from the same config, strictly.

    The ``module.`` prefix of ``torch.nn.DataParallel`` is removed, keys are renamed by the model's
    :func:`reference_key_map`, and every tensor must then find its place: a missing key, an unexpected key or a
    shape mismatch raises ``ValueError`` listing them all, before any weight is copied. Dtypes follow the model
    (the reference's float64 ``sigmas`` buffer is cast to the model's buffer dtype by ``load_state_dict``).
    """
    bare = strip_data_parallel_prefix(state_dict)
    renamed = OrderedDict(zip(from_reference_keys(model, bare.keys()), bare.values()))
    if len(renamed) != len(bare):
        raise ValueError("the reference key map sends two reference keys to the same name")
    expected = model.state_dict()
    missing = [key for key in expected if key not in renamed]
    unexpected = [key for key in renamed if key not in expected]
    mismatched = [
        f"{key}: checkpoint {tuple(renamed[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in renamed and renamed[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_listing(to_reference_keys(model, missing))}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_listing(to_reference_keys(model, unexpected))}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        raise ValueError(
            f"the state_dict does not fit {type(model).__name__} (keys in the reference's names): "
            + "; ".join(problems)
        )
    model.load_state_dict(renamed, strict=True)


def _reference_trainable_order(model: torch.nn.Module, reference_keys: Iterable[str]) -> list[str]:
    """Our names of the trainable parameters in the reference's ``model.parameters()`` order.

    The reference's ``state_dict`` lists parameters in ``parameters()`` order (buffers interleaved), so its key
    order, renamed and filtered to our trainable parameters, is the order of its EMA shadow list and of its
    optimizer's parameter indices.
    """
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return [name for name in from_reference_keys(model, reference_keys) if name in trainable]


def load_reference_training_state(
    checkpoint: str | os.PathLike | IO[bytes] | Mapping[str, Any],
    model: torch.nn.Module,
    ema: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: Any = "cpu",
) -> int:
    """Restore a training checkpoint of the reference (``{'model', 'ema', 'optimizer', 'step'}``); return ``step``.

    ``checkpoint`` is a path or file (loaded by :func:`load_reference_checkpoint`) or the loaded ``dict``. The
    raw weights go into ``model`` through :func:`load_reference_weights`. If ``ema`` (a
    :class:`models.ExponentialMovingAverage` built from ``model.parameters()``) is given, it receives the
    reference's shadow weights, reordered from the reference's parameter order to ``model``'s; if
    ``optimizer`` (built over ``model.parameters()`` in one parameter group, as the reference builds it) is given,
    its state is reordered the same way, and a numpy learning rate becomes a Python ``float``.
    """
    state = checkpoint if isinstance(checkpoint, Mapping) else load_reference_checkpoint(checkpoint, map_location)
    needed = {"model", "step"} | ({"ema"} if ema is not None else set()) | ({"optimizer"} if optimizer is not None else set())
    missing = needed - set(state)
    if missing:
        raise ValueError(f"the reference checkpoint lacks {sorted(missing)}; it has {sorted(state)}")
    bare = strip_data_parallel_prefix(state["model"])
    load_reference_weights(model, bare)

    order = _reference_trainable_order(model, bare.keys())
    ours = [name for name, p in model.named_parameters() if p.requires_grad]
    position = {name: i for i, name in enumerate(order)}  # our name -> index in the reference's trainable order
    if ema is not None:
        shadows = list(state["ema"]["shadow_params"])
        if len(shadows) != len(order):
            raise ValueError(f"the checkpoint's EMA holds {len(shadows)} tensors, the model {len(order)} trainable parameters")
        ema.load_state_dict({**state["ema"], "shadow_params": [shadows[position[name]] for name in ours]})
    if optimizer is not None:
        optimizer.load_state_dict(_reordered_optimizer_state(model, state["optimizer"], bare.keys()))
    step = state["step"]
    return int(step.item()) if isinstance(step, Tensor) else int(step)


def _reordered_optimizer_state(
    model: torch.nn.Module, optimizer_state: Mapping[str, Any], reference_keys: Iterable[str]
) -> dict[str, Any]:
    """The reference optimizer's ``state_dict`` with parameter indices renumbered to ``model.parameters()`` order.

    The reference's optimizer holds all parameters (trainable or not) in ``parameters()`` order, which is the
    order of its ``state_dict`` keys with the buffers taken out.
    """
    groups = optimizer_state["param_groups"]
    if len(groups) != 1:
        raise ValueError(f"expected the reference's single optimizer parameter group, got {len(groups)}")
    params = {name for name, _ in model.named_parameters()}
    reference_order = [name for name in from_reference_keys(model, reference_keys) if name in params]
    our_index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    if len(groups[0]["params"]) != len(reference_order):
        raise ValueError(
            f"the optimizer state covers {len(groups[0]['params'])} parameters, the model has {len(reference_order)}"
        )
    renumber = {ref_id: our_index[name] for ref_id, name in zip(groups[0]["params"], reference_order)}
    group = {key: (float(value) if isinstance(value, np.floating) else value) for key, value in groups[0].items()}
    group["params"] = sorted(renumber[i] for i in groups[0]["params"])
    return {
        "state": {renumber[i]: value for i, value in optimizer_state["state"].items()},
        "param_groups": [group],
    }

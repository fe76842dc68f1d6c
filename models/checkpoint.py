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
from typing import IO, Any, Mapping

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

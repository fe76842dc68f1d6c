"""Mixed precision of the network: which low-precision dtype its forward pass runs in, and where that is the default.

The setting is a name: ``'no'`` (float32 throughout), ``'bf16'`` (``torch.autocast`` to bfloat16: matrix products
and convolutions in bf16, everything autocast keeps in float32 stays there), ``'fp16'`` (float16 autocast, CUDA only;
training scales the loss, :func:`train_lib.make_step_fn`) or ``'auto'``, resolved per device by
:func:`resolve_mixed_precision`. Autocast wraps the network call only (:class:`models.ScoreModel`, the training
step's loss): the samplers' state, the SDE's coefficients and the likelihood's integration keep their own dtype.

bf16 is fast only on hardware with bf16 matrix units. Without them oneDNN has no bf16 convolution and torch runs
its reference kernels, many times slower than float32 (``benchmarks/precision.py``). With AVX512-BF16 dot products
but no AMX tiles bf16 is faster, but by too little to change the numbers of a run by default (the README's figures).
Hence the ``'auto'`` rule: bf16 where the device has matrix tiles (CUDA with bf16 support, or AMX), for training and
sampling alike; float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from base_lib.checks import check_choice

MIXED_PRECISION = ("no", "bf16", "fp16")
"""The mixed-precision modes of a network's forward pass."""

PRECISION_SETTINGS = ("auto", *MIXED_PRECISION)
"""The values of the config fields ``training.mixed_precision`` and ``sampling.mixed_precision``."""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=None)
def _cpu_bf16_units() -> tuple[bool, bool]:
    """(oneDNN's bf16 support: AVX512-BF16 or AMX, AMX tiles) of this CPU, asked once."""
    try:
        dot_products = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        dot_products = False
    try:
        tiles = bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        tiles = False
    return dot_products, tiles


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 units that make bf16 autocast fast: CUDA's ``is_bf16_supported``; on the CPU,
    oneDNN's bf16 support (AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_bf16_units()[0]


def bf16_matrix_units(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices on dedicated units fast enough for the backward pass too: a CUDA
    GPU with bf16 support, or a CPU with AMX tiles (not AVX512-BF16 dot products alone)."""
    device = torch.device(device)
    if device.type == "cuda":
        return native_bf16(device)
    return device.type == "cpu" and all(_cpu_bf16_units())


def resolve_mixed_precision(setting: str, device: torch.device | str, name: str = "mixed_precision") -> str:
    """The mode (``'no'``, ``'bf16'``, ``'fp16'``) that ``setting`` means on ``device``.

    ``'auto'``: ``'bf16'`` where :func:`bf16_matrix_units`, else ``'no'``. An explicit mode is returned as it is,
    after checking that the device runs it (``'fp16'`` needs CUDA; autocast runs on CUDA and the CPU only); ``name``
    is the parameter the errors name.
    """
    check_choice(name, setting, PRECISION_SETTINGS)
    device = torch.device(device)
    if setting == "auto":
        return "bf16" if bf16_matrix_units(device) else "no"
    _check_device(setting, device, name)
    return setting


def _check_device(mode: str, device: torch.device, name: str) -> None:
    if mode == "fp16" and device.type != "cuda":
        raise ValueError(f"{name}='fp16' needs a CUDA device, not {device}; use 'bf16', 'auto' or 'no'")
    if mode != "no" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"{name}={mode!r} runs on CUDA and the CPU, not on {device}; use 'no'")


def autocast(mode: str, device: torch.device | str, name: str = "mixed_precision") -> contextlib.AbstractContextManager:
    """The autocast context of a mode (``'no'``, ``'bf16'``, ``'fp16'``; not ``'auto'``) on ``device``: none for
    ``'no'``."""
    check_choice(name, mode, MIXED_PRECISION)
    if mode == "no":
        return contextlib.nullcontext()
    device = torch.device(device)
    _check_device(mode, device, name)
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[mode])

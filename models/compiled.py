"""``torch.compile`` of a score network in place: the forward runs compiled, the module stays the same object.

:func:`compile_network` ``(network, mode)`` installs a ``torch.compile``'d call of the network on the network itself
(as ``nn.Module.compile`` does), so everything that calls ``network(x, labels)`` (the score model, the losses,
``DistributedDataParallel``) runs the compiled forward and backward, while the parameters, the ``state_dict`` keys,
the EMA, the optimizer and the checkpoints see the original module: a checkpoint written with compilation on loads
with it off, and the other way round. A deep copy or a pickle of the network is uncompiled (``nn.Module`` drops the
compiled call from its state).

``mode`` is ``'none'`` (no compilation) or a ``torch.compile`` mode: ``'default'``, ``'reduce-overhead'`` (CUDA
graphs on CUDA), ``'max-autotune'`` (searches kernel configurations: long compilations). Inductor compiles on the CPU
too (it needs a C++ compiler) and on CUDA (Triton). Autocast around the call is traced into the graph, so bf16
autocast compiles with the network.

Compilation happens at the first call of each new kind of call (train or eval mode, with or without autograd, a new
input shape or dtype, autocast on or off): that call is slow. ``on_compile(seconds, calls, autograd)`` is told the
wall time of each call during which Dynamo compiled a new graph, the number of such calls so far and whether autograd
recorded the call, so that a job can log the cost once per compilation. With autograd the backward graph is compiled
later, at the first backward pass through it (outside the call, so not in ``seconds``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

from base_lib.checks import check_choice

#: the values of ``config.model.compile``: no compilation, or a ``torch.compile`` mode
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

CompileReport = Callable[[float, int, bool], None]
"""``on_compile(seconds, compiled_calls, autograd)``: a call that compiled took ``seconds`` (compilation and the call);
``autograd``: the call was recorded for a backward pass, whose graph compiles at the first backward."""


def _graphs_compiled() -> int | None:
    """Dynamo's count of the graphs compiled in this process so far (``None`` where the counter is not available)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def is_compiled(network: nn.Module) -> bool:
    """Whether :func:`compile_network` (or ``nn.Module.compile``) installed a compiled call on ``network``."""
    return getattr(network, "_compiled_call_impl", None) is not None


def compile_network(network: nn.Module, mode: str = "default", on_compile: CompileReport | None = None,
                    **options: Any) -> nn.Module:
    """Compile ``network``'s calls in place with ``torch.compile(mode=mode, **options)`` and return ``network``.

    ``mode='none'`` returns ``network`` untouched. Parameters, buffers and the ``state_dict`` are those of the
    uncompiled module (module docstring). ``on_compile`` is called after each call during which a graph was
    compiled (see :data:`CompileReport`).
    """
    check_choice("mode", mode, COMPILE_MODES)
    if mode == "none":
        return network
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    compiled = torch.compile(network._call_impl, mode=None if mode == "default" else mode, **options)
    if on_compile is None:
        network._compiled_call_impl = compiled
        return network
    compilations = 0

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal compilations
        # timed outside the compiled region: a clock inside the traced forward would break the graph
        graphs, start = _graphs_compiled(), time.perf_counter()
        out = compiled(*args, **kwargs)
        after = _graphs_compiled()
        # without Dynamo's counter only the first call is known to compile; with it, a first call that found its
        # graphs already compiled in this process (another module of the same code) compiled nothing
        if after != graphs or (after is None and compilations == 0):
            compilations += 1
            autograd = isinstance(out, torch.Tensor) and out.requires_grad
            on_compile(time.perf_counter() - start, compilations, autograd)
        return out

    network._compiled_call_impl = call
    return network


@contextlib.contextmanager
def eager(network: nn.Module) -> Iterator[nn.Module]:
    """Run ``network`` uncompiled inside the block, and with the compiled call it had (if any) after it."""
    compiled_call = getattr(network, "_compiled_call_impl", None)
    try:
        yield uncompiled(network)
    finally:
        network._compiled_call_impl = compiled_call


def uncompiled(network: nn.Module) -> nn.Module:
    """Remove a compiled call installed on ``network`` (in place) and return ``network``, which then runs eagerly."""
    network._compiled_call_impl = None
    return network

"""Sampling a signal-conditioned model (SR3 super-resolution, WaveGrad) from a config: the conditions are those of
test-split examples.

A network with a ``condition_map`` (:mod:`models.conditioning`, ``config.model.conditioning``) models
``p(x | c)`` with ``c = condition_map(x0)``. Its samples need a signal each, so the jobs take them from the test
split: sample ``i`` of a run (``main.py --mode sample``, ``--mode eval`` with ``eval.enable_sampling``, the training
snapshots) is drawn for test example ``i mod N`` (``N`` test examples, in dataset order), through any configured
sampler on :meth:`models.ScoreModel.score_fn` ``(y=c)``. The samples then have originals: the jobs save the
originals and the conditions beside the samples (``originals.png``, ``conditions.png``, ``originals.npz``) and
report the PSNR of each sample against its original (:func:`psnr`; Saharia et al. 2021 report PSNR and SSIM).

:func:`sample_given_conditions` ``(exp, x0, generator) -> (x, nfe)`` is the entry point for other jobs (the
super-resolution job of :mod:`jobs.controllable`): the configured sampler conditioned on the signals of ``x0``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import data_lib
from base_lib.config import config_value
from base_lib.files import atomic_write
from models.conditioning import ConditionMap, LowResolution, condition_map_of
from models.score_model import ScoreModel, model_dtype
from samplers.controllable import BlockAverage, LinearMeasurement
from samplers.denoised_projection import consistent_denoised
from samplers.from_config import get_sampling_fn
from sde_lib import SDE, ScoreFn

from .conditional import ConditioningError
from .images import save_image_grid, to_uint8

SamplingFn = Callable[..., tuple[Tensor, int]]
"""``fn(model, generator=None, progress=False) -> (samples, nfe)``, as :func:`samplers.get_sampling_fn`'s."""


def test_examples(config: Any, count: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The first ``count`` examples of the test split in dataset order (example ``i`` is test example ``i mod N``),
    in ``[0, 1]`` (quantized levels ``k / (L - 1)``, not dequantized), on the CPU."""
    dataset = data_lib.get_dataset(config, "test")
    if len(dataset) == 0:
        raise ValueError(f"the test split of {dataset.name} is empty: a signal-conditioned model samples for its examples")
    indices = torch.arange(count) % len(dataset)
    return data_lib.prepare_batch(dataset.gather(indices), dataset.num_levels, dtype=dtype)


def conditioned_sampling_fn(
    config: Any, sde: SDE, model: nn.Module, x0: Tensor, inverse_scaler: Callable[[Tensor], Tensor] | None, eps: float,
) -> SamplingFn:
    """The configured sampler (``config.sampling``) for one sample per row of ``x0`` (the model's space), following
    the score of ``model`` given the signals ``condition_map(x0)``; it returns ``inverse_scaler`` of the samples
    (``None``: the model's space) and the NFE."""
    condition_map = _condition_map(model)
    device = next((p.device for p in model.parameters()), x0.device)
    with torch.no_grad():
        x0 = x0.to(device, model_dtype(model))
        signal = condition_map(x0)
    operator = measurement_of(condition_map) if config_value(config, "sampling.measurement_consistency", False) else None
    if operator is None:
        factory = lambda score_model: score_model.score_fn(y=signal)  # noqa: E731
    else:  # the denoised estimate kept on the images with the measured values (samplers.consistent_denoised)
        y = operator.project(x0)
        factory = lambda score_model: consistent_denoised(sde, score_model.score_fn(y=signal), operator, y)  # noqa: E731
    return get_sampling_fn(config, sde, tuple(x0.shape), inverse_scaler, eps, factory)


def measurement_of(condition_map: ConditionMap) -> LinearMeasurement | None:
    """The linear measurement ``y = A x0`` a condition map's signal is made of (SR3's low-resolution image: the block
    average), or ``None`` for a signal that is not one (a log-mel spectrogram)."""
    return BlockAverage(condition_map.factor) if isinstance(condition_map, LowResolution) else None


def sample_given_conditions(
    exp: Any, x0: Tensor, generator: torch.Generator | None = None, progress: bool = False
) -> tuple[Tensor, int]:
    """Samples ``x ~ p(x | c)`` of the experiment's signal-conditioned network (its current weights: load the EMA
    weights first) for ``c = condition_map(x0)``, one per row of ``x0``, with the configured sampler; ``x0`` and the
    returned ``x`` are in the model's space (after ``exp.scaler``). Returns ``(x, nfe)``."""
    sampling_fn = conditioned_sampling_fn(exp.config, exp.sde, exp.model, x0, None, exp.sampling_eps)
    return sampling_fn(exp.model, generator=generator, progress=progress)


def score_fn_for(score_model: ScoreModel, scaler: Callable[[Tensor], Tensor], examples: Tensor) -> ScoreFn:
    """``score_model.score_fn()``, given the signals of ``examples`` (``[0, 1]``; ``scaler`` maps them to the model's
    space) for a signal-conditioned network: one sample per example (e.g. the conditional likelihood of each)."""
    if score_model.condition_map is None:
        return score_model.score_fn()
    with torch.no_grad():
        signal = score_model.condition_map(scaler(examples))
    return score_model.score_fn(y=signal)


def _condition_map(model: nn.Module) -> ConditionMap:
    condition_map = condition_map_of(model)
    if condition_map is None:
        raise ValueError(f"the network {type(model).__name__} takes no signal (config.model.conditioning is unset)")
    return condition_map


def psnr(x: Tensor, reference: Tensor) -> Tensor:
    """The peak signal-to-noise ratio ``10 log10(1 / MSE)`` in dB of each image of ``x`` against ``reference``, both
    in ``[0, 1]`` ``(N, ...)``; ``(N,)``, ``inf`` for an exact copy."""
    mse = (x.double() - reference.double()).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse)


def mean_and_stderr(values: Tensor) -> tuple[float, float]:
    """The mean of ``values`` and its standard error ``s / sqrt(n)`` (``nan`` for one value)."""
    values = values.double()
    n = values.numel()
    stderr = float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return float(values.mean()), stderr


def save_originals(folder: Path, originals: Tensor, conditions: Tensor) -> dict[str, str]:
    """``originals.npz`` (uint8 ``(N, H, W, C)`` originals and conditions), ``originals.png`` and
    ``conditions.png`` (grids of the first images) in ``folder``, beside the samples drawn for them."""
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / "originals.npz"
    atomic_write(npz, lambda file: np.savez_compressed(file, originals=to_uint8(originals), conditions=to_uint8(conditions)))
    files = {"originals": str(npz)}
    for name, images in (("originals", originals), ("conditions", conditions)):
        files[f"{name}_png"] = str(save_image_grid(images[:64], folder / f"{name}.png"))
    return files


def signal_report(exp: Any, samples: Tensor, folder: Path | None) -> dict[str, Any]:
    """For the samples ``(N, ...)`` in ``[0, 1]`` of a signal-conditioned experiment (sample ``i`` drawn for
    ``exp.signal_examples[i]``): their PSNR against the originals (mean, standard error, count) and the originals
    and conditions saved in ``folder`` (when given)."""
    originals = exp.signal_examples[: samples.shape[0]].to(torch.float32)
    if originals.ndim != 4:  # not images (e.g. waveforms): no 8-bit rounds, no PSNR or pictures here
        return {"count": int(samples.shape[0])}
    # samples are read back from the saved 8-bit rounds: compare with the originals at the same quantization
    originals_8bit = torch.from_numpy(to_uint8(originals)).permute(0, 3, 1, 2).float() / 255.0
    values = psnr(samples.to(torch.float32).cpu(), originals_8bit)
    mean, stderr = mean_and_stderr(values)
    report: dict[str, Any] = {"psnr_mean": mean, "psnr_stderr": stderr, "count": int(values.numel())}
    if folder is not None:
        condition_map = _condition_map(exp.model)
        dtype = model_dtype(exp.model)
        with torch.no_grad():
            signal = condition_map(exp.scaler(originals.to(exp.device, dtype)))
        conditions = exp.inverse_scaler(signal).cpu().float()
        if conditions.ndim == 4 and conditions.shape[1] in (1, 3):
            report["files"] = save_originals(folder, originals, conditions)
    return report


def check_signal_conditioning(config: Any, model: nn.Module) -> None:
    """:class:`jobs.conditional.ConditioningError` when ``config.model.conditioning`` is set but the network of
    ``config.model.name`` takes no signal (it does not support conditioning), or when
    ``config.sampling.measurement_consistency`` is set for a network whose signal is not a linear measurement."""
    name = config_value(config, "model.conditioning", None)
    condition_map = condition_map_of(model)
    if name not in (None, "") and condition_map is None:
        raise ConditioningError(
            f"config.model.conditioning={name!r}, but config.model.name={config_value(config, 'model.name')!r} builds "
            "a network that takes no signal; use 'ncsnpp' (or unset model.conditioning)"
        )
    if config_value(config, "sampling.measurement_consistency", False) and (
        condition_map is None or measurement_of(condition_map) is None
    ):
        raise ConditioningError(
            f"config.sampling.measurement_consistency=True needs a network conditioned on a linear measurement "
            f"(config.model.conditioning='low_resolution'), got config.model.conditioning={name!r}; set it to False"
        )


def check_unconditioned_job(exp: Any, mode: str, allowed: tuple[str, ...] = ()) -> None:
    """A one-line :class:`jobs.ConfigError` when the job ``--mode mode`` (not in ``allowed``) would need the
    unconditional score of a signal-conditioned network, which has none (no null signal)."""
    from .experiment import ConfigError  # experiment.py imports this module

    name = config_value(exp.config, "model.conditioning", None)
    if mode not in allowed and condition_map_of(exp.model) is not None:
        raise ConfigError(
            f"--mode {mode} needs an unconditional score, but the network is conditioned on a signal "
            f"(config.model.conditioning={name!r}); use --mode sample or eval (conditions from the test split)"
            + (f" or {', '.join(allowed)}" if allowed else "")
        )


def signal_examples(config: Any, model: nn.Module, count: int) -> Tensor | None:
    """The test examples ``(count, ...)`` in ``[0, 1]`` whose signals condition the samples of ``model``, or ``None``
    when it takes no signal."""
    if condition_map_of(model) is None:
        return None
    return test_examples(config, count, model_dtype(model))


def sampling_count(config: Any, mode: str, batch: int) -> int:
    """How many conditions a run of ``mode`` samples for: ``eval.num_samples`` (at least one batch) to evaluate or
    sample, one batch of snapshots to train."""
    if mode == "train":
        return batch
    return max(batch, int(config_value(config, "eval.num_samples", batch)))


__all__ = [
    "test_examples",
    "conditioned_sampling_fn",
    "sample_given_conditions",
    "psnr",
    "mean_and_stderr",
    "save_originals",
    "signal_report",
    "signal_examples",
    "score_fn_for",
    "check_signal_conditioning",
    "measurement_of",
    "check_unconditioned_job",
    "sampling_count",
]

"""The ``inpaint``, ``colorize``, ``superresolve`` and ``interpolate`` jobs of ``main.py``: controllable generation with
a trained model.

Each job builds the experiment of ``config`` (:func:`jobs.build_experiment`), loads the latest checkpoint of
``workdir`` under its EMA weights (:func:`jobs.evaluation.latest_checkpoint`, as ``--mode sample`` does),
takes the first test images and writes a PNG and an ``.npz`` into ``workdir/eval_folder`` (default
``controllable``):

* :func:`inpaint`: the first ``NUM_IMAGES`` test images with a region (:data:`MASKS`) to generate, filled in by
  :func:`samplers.controllable.pc_inpaint` with the PC settings of ``config.sampling`` (``predictor``,
  ``corrector``, ``snr``, ``n_steps_each``, ``probability_flow``, ``noise_removal``; where a config sampling with
  another method has none, the reference's ``reverse_diffusion``, ``langevin``, 0.16, 1) and
  ``N = config.model.num_scales`` steps. ``inpaint.png``: rows original | masked (unknown pixels grey) | inpainted.
  ``config.sampling.inpainting`` [``'replacement'``] ``= 'smc'`` uses :func:`samplers.smc_inpaint` instead
  (SMCDiff: asymptotically exact in its ``config.sampling.smc_particles`` [16] particles per image, which multiply
  the cost), with the reverse-diffusion steps of the SDE and ``noise_removal``; for colorization too
  (:func:`samplers.smc_colorize`).
* :func:`colorize`: the same for RGB data with the grey level known (:func:`samplers.controllable.pc_colorize`).
  ``colorize.png``: rows original | grey | colorized.
* :func:`superresolve`: the first ``NUM_IMAGES`` test images reduced to the means of their ``f x f`` blocks
  (``f = config.sampling.superresolution_factor``; unset: ``config.model.low_resolution_factor`` for a model trained
  with ``config.model.conditioning = 'low_resolution'``, else 2) and upsampled back by
  :func:`samplers.controllable.pc_superresolve` (or :func:`samplers.controllable.smc_superresolve` with
  ``config.sampling.inpainting = 'smc'``), with the unconditional score and the settings of the inpainting job. A
  model trained on the low-resolution signal (SR3, :mod:`models.conditioning`) instead samples its own conditional
  with the configured sampler (:func:`_sample_low_resolution_conditional`, the one call site, through
  :func:`jobs.signal_conditioned.sample_given_conditions`).
  ``superresolve.png``: rows original | low resolution (each pixel repeated over its block) | super-resolved;
  ``superresolve.json``: PSNR against the originals (``[0, 1]`` range, the outputs clipped to it; mean and standard
  error over the images), the largest deviation of the outputs' block means from the input (unclipped; float
  rounding for the replacement and SMC methods) and, for the digits, the toolkit's digits classifier's accuracy on
  the outputs and on the originals.
* :func:`interpolate`: ``NUM_PAIRS`` pairs of test images encoded by the probability-flow ODE, their latents
  interpolated spherically at ``NUM_STEPS`` points and decoded (:func:`samplers.controllable.ode_interpolate`,
  ODE options ``config.sampling.ode_method`` / ``rtol`` / ``atol``). ``interpolate.png``: one row per pair,
  the first input, the ``NUM_STEPS`` decoded images, the second input.

Every ``.npz`` holds float32 images ``(N, C, H, W)`` in ``[0, 1]`` (not clipped) and ``nfe``, the batched score
evaluations made. The PC jobs draw their noise from the stream :attr:`jobs.streams.Stream.CONTROLLABLE` of
``config.seed``, the random mask from :attr:`~jobs.streams.Stream.INPAINT_MASK`. Each job holds the workdir's lock
(:func:`jobs.workdir.workdir_lock`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

import data_lib
import models
from base_lib.files import atomic_write
from samplers.common import check_choice
from samplers.controllable import BlockAverage, pc_colorize, pc_inpaint, pc_superresolve, ode_interpolate, smc_superresolve
from samplers.controllable.smc import SMC_PARTICLES, smc_colorize, smc_inpaint
from samplers.from_config import check_continuous_time, sampling_score_transform
from sample_quality.digits import digits_predictions
from samplers.ode import DEFAULT_METHOD
from samplers.pc import available_correctors, available_predictors
from base_lib.config import config_value

from .evaluation import latest_checkpoint, load_ema_weights
from .experiment import ConfigError, EvaluationExperiment, build_experiment
from .images import save_image_grid
from .run import close_log, open_log, step_seed
from .signal_conditioned import check_unconditioned_job, mean_and_stderr, psnr, sample_given_conditions
from .streams import Stream
from .workdir import workdir_lock

MASKS = ("right_half", "center", "random")  # --mask of the inpaint job: the region that is generated
INPAINTING_METHODS = ("replacement", "smc")  # config.sampling.inpainting: pc_inpaint or smc_inpaint
NUM_IMAGES = 16  # test images inpainted or colorized
NUM_PAIRS = 4  # pairs of test images interpolated (images 0-1, 2-3, ...)
NUM_STEPS = 8  # interpolation points per pair, from 0 to 1 inclusive
UNKNOWN_GREY = 0.5  # value shown for the unknown pixels of the masked images


# ------------------------------------------------------------------ inputs
def region_mask(name: str, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask of ``shape`` ``(N, C, H, W)``, True where a pixel is known.

    ``'right_half'``: the columns ``>= W // 2`` are generated; ``'center'``: the central ``H/2 x W/2`` square;
    ``'random'``: each pixel (all channels together) independently with probability 1/2 (from ``generator``).
    """
    check_choice("mask", name, MASKS)
    n, _, height, width = shape
    known = torch.ones((n, 1, height, width), dtype=torch.bool)
    if name == "right_half":
        known[..., width // 2:] = False
    elif name == "center":
        known[..., height // 4: height // 4 + height // 2, width // 4: width // 4 + width // 2] = False
    else:
        known = torch.rand((n, 1, height, width), generator=generator) >= 0.5
    return known.expand(shape)


def _check_test_images(exp: EvaluationExperiment, count: int) -> None:
    """:class:`ConfigError` unless the data are images ``(C, H, W)`` with at least ``count`` in the test split."""
    if len(exp.data_shape) != 3:
        raise ConfigError(f"controllable generation needs images (C, H, W), config.data describes {exp.data_shape}")
    if len(exp.test_ds) < count:
        raise ConfigError(f"the test split of {exp.test_ds.name} has {len(exp.test_ds)} examples, {count} are needed "
                          "(config.data)")


def _test_images(exp: EvaluationExperiment, count: int) -> Tensor:
    """The first ``count`` test images in ``[0, 1]``, on the experiment's device, in the model's dtype."""
    _check_test_images(exp, count)
    batches = data_lib.iterate_batches(exp.test_ds, count, shuffle=False, uniform_dequantization=False,
                                       dtype=exp.batch_dtype)  # levels k / (L - 1), as the evaluation reads them
    return next(iter(batches)).to(exp.device)


def _pc_options(config: Any) -> dict[str, Any]:
    """The PC settings of ``config.sampling`` (the reference's field names), with the defaults of
    :func:`samplers.controllable.pc_inpaint` where the config has none; :class:`ConfigError` for unknown names."""
    get = lambda field, default=...: config_value(config, f"sampling.{field}", default)  # noqa: E731
    try:
        predictor = check_choice("config.sampling.predictor", str(get("predictor", "reverse_diffusion")).lower(), available_predictors())
        corrector = check_choice("config.sampling.corrector", str(get("corrector", "langevin")).lower(), available_correctors())
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return dict(
        predictor=predictor, corrector=corrector, snr=float(get("snr", 0.16)), n_steps=int(get("n_steps_each", 1)),
        probability_flow=bool(get("probability_flow", False)), denoise=bool(get("noise_removal", True)),
    )


def _smc_particles(config: Any) -> int | None:
    """``config.sampling.smc_particles`` [16] when ``config.sampling.inpainting`` [``'replacement'``] is ``'smc'``,
    ``None`` for the replacement method; :class:`ConfigError` for another method (:data:`INPAINTING_METHODS`) or
    a particle count that is not an integer >= 1."""
    method = config_value(config, "sampling.inpainting", "replacement")
    if method not in INPAINTING_METHODS:
        raise ConfigError(f"config.sampling.inpainting must be one of {', '.join(INPAINTING_METHODS)}, got {method!r}")
    if method != "smc":
        return None
    particles = config_value(config, "sampling.smc_particles", SMC_PARTICLES)
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ConfigError(f"config.sampling.smc_particles must be an integer >= 1, got {particles!r}")
    return particles


# ------------------------------------------------------------------ running a job
def _run(config: Any, workdir: str | os.PathLike, eval_folder: str | None, mode: str, name: str, body, images: int,
         check: Callable[[EvaluationExperiment], None] | None = None) -> dict[str, Any]:
    """Under the workdir's lock (as the job ``mode``), build the experiment, check that the test split has ``images``
    images and ``check(exp)`` it (what else the job needs), both before any checkpoint is read, load the latest
    checkpoint's EMA weights, run ``body(exp, folder)``."""
    with workdir_lock(workdir, mode):
        exp = build_experiment(config, workdir, "eval")  # the eval mode opens the test split
        check_unconditioned_job(exp, mode, allowed=("superresolve",))
        _check_test_images(exp, images)
        if check is not None:
            check(exp)
        logger = open_log(exp.layout.log_file, exp.distributed.is_main)
        try:
            path = latest_checkpoint(exp)
            step = load_ema_weights(exp, path)
            folder = exp.layout.workdir / (eval_folder or "controllable")
            logger.info("%s with %s (step %d) under its EMA weights into %s", name, path, step, folder)
            with torch.no_grad():
                report = {"checkpoint": str(path), "step": step, **body(exp, folder)}
            logger.info("%s: %d score evaluations; picture %s", name, report["nfe"], report["png"])
            return report
        finally:
            close_log(logger)


def _save(folder: Path, name: str, rows: list[Tensor], nfe: int, **arrays: Tensor) -> dict[str, Any]:
    """``folder/name.png``: the images of ``rows`` (each ``(n, C, H, W)``) one row each; ``folder/name.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    png = save_image_grid(torch.cat(rows), folder / f"{name}.png", nrow=rows[0].shape[0])
    npz = folder / f"{name}.npz"
    host = {key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).numpy()
            for key, value in arrays.items()}
    np.savez_compressed(npz, nfe=np.int64(nfe), **host)
    return {"png": str(png), "npz": str(npz), "nfe": nfe}


def _known_value_job(
    exp: EvaluationExperiment, folder: Path, name: str, images: Tensor, mask: Tensor, colour: bool, particles: int | None
) -> dict[str, Any]:
    """Inpainting (``colour=False``: ``mask`` known) or colorization (the grey level known) of ``images``, by the
    replacement method, or by SMC with ``particles`` particles per image."""
    generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.CONTROLLABLE))
    options = _pc_options(exp.config)
    score_fn = sampling_score_transform(exp.config, exp.sde)(exp.score_model.score_fn())
    if particles is not None:  # SMC: the reverse-diffusion steps of the SDE, only noise_removal of the PC settings
        options = dict(num_particles=particles, denoise=options["denoise"])
    common = dict(eps=exp.sampling_eps, generator=generator, **options)
    if colour:
        given = images.mean(dim=1, keepdim=True).expand_as(images)
        colorizer = pc_colorize if particles is None else smc_colorize
        x, nfe = colorizer(exp.sde, score_fn, exp.scaler(given), **common)
    else:
        given = torch.where(mask, images, torch.full_like(images, UNKNOWN_GREY))
        inpainter = pc_inpaint if particles is None else smc_inpaint
        x, nfe = inpainter(exp.sde, score_fn, exp.scaler(images), mask, **common)
    result = exp.inverse_scaler(x)
    arrays = {"original": images, "given": given, "result": result}
    if not colour:
        arrays["mask"] = mask
    return _save(folder, name, [images, given, result], nfe, **arrays)


def superresolution_factor(config: Any) -> int:
    """``config.sampling.superresolution_factor``; unset: ``config.model.low_resolution_factor`` [2] for a model
    conditioned on ``'low_resolution'``, else 2. :class:`ConfigError` unless an integer >= 1, and for a conditioned
    model unless it is the factor the model was trained for."""
    conditioned = config_value(config, "model.conditioning", None) == "low_resolution"
    trained = config_value(config, "model.low_resolution_factor", 2) if conditioned else None
    factor = config_value(config, "sampling.superresolution_factor", None)
    factor = (trained if conditioned else 2) if factor is None else factor
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"config.sampling.superresolution_factor must be an integer >= 1, got {factor!r}")
    if conditioned and factor != trained:
        raise ConfigError(f"config.sampling.superresolution_factor={factor}: the model is trained on blocks of "
                          f"config.model.low_resolution_factor={trained}; leave it unset or set it to {trained}")
    return factor


def _sample_low_resolution_conditional(exp: EvaluationExperiment, images: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
    """THE SR3 CALL SITE: a network trained with ``config.model.conditioning = 'low_resolution'`` samples the images
    given ``c = condition_map(x0)`` of the test images ``images`` (``[0, 1]``; :mod:`models.conditioning`, its
    factor ``config.model.low_resolution_factor``) by the configured sampler (``config.sampling.method``) on
    ``ScoreModel.score_fn(y=c)`` (:func:`jobs.signal_conditioned.sample_given_conditions`). Returns the images in
    ``[0, 1]`` and the NFE."""
    x, nfe = sample_given_conditions(exp, exp.scaler(images), generator)
    return exp.inverse_scaler(x), nfe


def _superresolution_figures(exp: EvaluationExperiment, images: Tensor, low: Tensor, result: Tensor,
                             operator: BlockAverage) -> dict[str, Any]:
    """PSNR (``[0, 1]`` data range, outputs clipped to it) mean and standard error over the images, the largest
    deviation of the (unclipped) outputs' block means from ``low``, and for the digits the classifier's accuracy on
    the outputs and on the originals."""
    mean, stderr = mean_and_stderr(psnr(result.clamp(0, 1), images))
    figures = {"psnr": mean, "psnr_stderr": stderr,
               "block_mean_max_deviation": float((operator.block_means(result) - low).abs().max())}
    if exp.test_ds.name == "digits":
        labels = exp.test_ds.labels[: len(images)].cpu()
        figures["digits_accuracy"] = float((digits_predictions(result.clamp(0, 1).cpu()) == labels).double().mean())
        figures["digits_accuracy_originals"] = float((digits_predictions(images.cpu()) == labels).double().mean())
    return figures


# ------------------------------------------------------------------ the jobs
def inpaint(config: Any, workdir: str | os.PathLike, eval_folder: str | None = None, mask: str = "right_half") -> dict[str, Any]:
    """Inpaint the ``mask`` region (:data:`MASKS`) of the first :data:`NUM_IMAGES` test images (module docstring)."""
    check_choice("mask", mask, MASKS)
    particles = _smc_particles(config)

    def body(exp: EvaluationExperiment, folder: Path) -> dict[str, Any]:
        images = _test_images(exp, NUM_IMAGES)
        generator = torch.Generator().manual_seed(step_seed(exp.config, Stream.INPAINT_MASK))
        known = region_mask(mask, tuple(images.shape), generator).to(exp.device)
        method = "replacement" if particles is None else "smc"
        return {"mask": mask, "method": method, **_known_value_job(exp, folder, "inpaint", images, known, False, particles)}

    return _run(config, workdir, eval_folder, "inpaint", f"inpainting ({mask})", body, NUM_IMAGES)


def colorize(config: Any, workdir: str | os.PathLike, eval_folder: str | None = None) -> dict[str, Any]:
    """Colorize the grey levels of the first :data:`NUM_IMAGES` test images of an RGB dataset (module docstring)."""
    particles = _smc_particles(config)

    def check(exp: EvaluationExperiment) -> None:
        if exp.data_shape[0] != 3:
            raise ConfigError(f"--mode colorize needs RGB data (3 channels), config.data describes {exp.data_shape}")

    def body(exp: EvaluationExperiment, folder: Path) -> dict[str, Any]:
        return _known_value_job(exp, folder, "colorize", _test_images(exp, NUM_IMAGES), None, True, particles)

    return _run(config, workdir, eval_folder, "colorize", "colorization", body, NUM_IMAGES, check)


def superresolve(config: Any, workdir: str | os.PathLike, eval_folder: str | None = None) -> dict[str, Any]:
    """Super-resolve the block means of the first :data:`NUM_IMAGES` test images (module docstring)."""
    particles = _smc_particles(config)
    factor = superresolution_factor(config)
    conditioned = config_value(config, "model.conditioning", None) == "low_resolution"
    operator = BlockAverage(factor)

    def check(exp: EvaluationExperiment) -> None:
        _, height, width = exp.data_shape
        if height % factor or width % factor:
            raise ConfigError(f"config.sampling.superresolution_factor={factor} must divide the image size "
                              f"{height}x{width} of config.data")
        if conditioned and models.conditioning.condition_map_of(exp.model) is None:
            raise ConfigError("config.model.conditioning='low_resolution' but the network takes no condition signal")

    def body(exp: EvaluationExperiment, folder: Path) -> dict[str, Any]:
        images = _test_images(exp, NUM_IMAGES)
        low = operator.block_means(images)
        generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.CONTROLLABLE))
        if conditioned:
            method, (result, nfe) = "sr3", _sample_low_resolution_conditional(exp, images, generator)
        else:
            options = _pc_options(exp.config)
            common = dict(eps=exp.sampling_eps, generator=generator)
            score_fn = sampling_score_transform(exp.config, exp.sde)(exp.score_model.score_fn())
            if particles is None:
                method, (x, nfe) = "replacement", pc_superresolve(exp.sde, score_fn, exp.scaler(low), factor, **options, **common)
            else:
                method, (x, nfe) = "smc", smc_superresolve(exp.sde, score_fn, exp.scaler(low), factor, num_particles=particles,
                                                           denoise=options["denoise"], **common)
            result = exp.inverse_scaler(x)
        shown = operator.upsample(low)
        report = {"method": method, "factor": factor, **_save(folder, "superresolve", [images, shown, result], nfe,
                                                             original=images, low_res=low, result=result)}
        report.update(_superresolution_figures(exp, images, low, result, operator))
        json_path = folder / "superresolve.json"
        atomic_write(json_path, lambda file: file.write(json.dumps(report, indent=2).encode()))
        return {**report, "json": str(json_path)}

    return _run(config, workdir, eval_folder, "superresolve", f"super-resolution (x{factor})", body, NUM_IMAGES, check)


def interpolate(config: Any, workdir: str | os.PathLike, eval_folder: str | None = None) -> dict[str, Any]:
    """Interpolate :data:`NUM_PAIRS` pairs of test images through the probability-flow ODE (module docstring)."""

    def body(exp: EvaluationExperiment, folder: Path) -> dict[str, Any]:
        images = _test_images(exp, 2 * NUM_PAIRS)
        first, second = images[0::2], images[1::2]
        alphas = torch.linspace(0, 1, NUM_STEPS, dtype=torch.float64)
        options = dict(method=str(config_value(exp.config, "sampling.ode_method", DEFAULT_METHOD)),
                       rtol=float(config_value(exp.config, "sampling.rtol", 1e-5)),
                       atol=float(config_value(exp.config, "sampling.atol", 1e-5)), eps=exp.sampling_eps)
        path, nfe = ode_interpolate(exp.sde, exp.score_model.score_fn(), exp.scaler(first), exp.scaler(second), alphas, **options)
        path = exp.inverse_scaler(path).transpose(0, 1)  # (pairs, NUM_STEPS, C, H, W)
        rows = [torch.cat([a[None], row, b[None]]) for a, row, b in zip(first, path, second)]
        return _save(folder, "interpolate", rows, nfe, first=first, second=second, path=path, alphas=alphas)

    def check(exp: EvaluationExperiment) -> None:
        try:
            check_continuous_time(exp.score_model.parameterization, "--mode interpolate (the probability-flow ODE)",
                                  exp.sde, "it cannot be interpolated")
        except ValueError as error:
            raise ConfigError(str(error)) from None

    return _run(config, workdir, eval_folder, "interpolate", "interpolation", body, 2 * NUM_PAIRS, check)

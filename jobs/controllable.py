"""The ``inpaint``, ``colorize`` and ``interpolate`` jobs of ``main.py``: controllable generation with a trained model.

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

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

import data_lib
from samplers.common import check_choice
from samplers.controllable import pc_colorize, pc_inpaint, ode_interpolate
from samplers.controllable.smc import SMC_PARTICLES, smc_colorize, smc_inpaint
from samplers.from_config import check_continuous_time
from samplers.ode import DEFAULT_METHOD
from samplers.pc import available_correctors, available_predictors
from base_lib.config import config_value

from .evaluation import latest_checkpoint, load_ema_weights
from .experiment import ConfigError, EvaluationExperiment, build_experiment
from .images import save_image_grid
from .run import close_log, open_log, step_seed
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
    score_fn = exp.score_model.score_fn()
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

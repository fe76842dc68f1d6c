"""The controllable-generation jobs of ``main.py`` (``inpaint``, ``colorize``, ``interpolate``) and the 2-D guidance demo.

A tiny digits model (the README's config, 2 training steps of batch 4, ``N = 20`` noise levels so that PC sampling
makes 40 score evaluations) and a tiny photo-patches model stand in for trained ones: what is checked holds for
any score network.

* Inpainting: the known pixels of the result equal the originals exactly (the replacement method with
  ``noise_removal`` restores them; digits levels ``k / 16`` survive the ``2x - 1`` scaler exactly), the unknown ones
  are generated (not the originals, not grey), NFE = N (1 + n_steps_each).
* Colorization: the grey level (mean of the channels) of the result equals that of the input up to float32
  rounding of the two orthogonal channel maps (1e-5 times the largest value; the tiny model samples without the
  Langevin corrector, whose steps an untrained score's small norm makes huge), NFE = N.
* Interpolation: the ODE is invertible, so the interpolation endpoints (``alpha = 0, 1``) decode to the inputs up
  to the solver error; with ``rtol = atol = 1e-5`` the trained model's round trip is off by 1.4e-3 at most (README
  run), and the bound 1e-2 stays below a sixth of a digits level (1/16).
* The command line: ``--mode inpaint --mask center`` through ``main.py``; a bad mask is refused by the flag parser.
* The guidance demo with the exact scores: every guided panel puts at least 95% of its samples nearest to the
  target component (exact conditional: 1 - 1e-12 for components 3 apart at std 0.3), the unconditional one
  ``1/8 +- 4`` binomial standard errors.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from configs import load_config
from jobs.controllable import (
    MASKS, NUM_IMAGES, NUM_PAIRS, NUM_STEPS, colorize, inpaint, interpolate, region_mask, superresolution_factor,
    superresolve,
)
from jobs.experiment import ConfigError
from jobs.run import train

ROOT = Path(__file__).resolve().parents[1]
N_LEVELS = 20  # model.num_scales of the tiny models: PC makes 2 N evaluations
TINY_RUN = {
    "training.n_iters": 2,
    "training.batch_size": 4,
    "training.log_freq": 1,
    "training.eval_freq": 1,
    "training.snapshot_freq": 2,
    "training.snapshot_freq_for_preemption": 2,
    "training.snapshot_sampling": False,
    "eval.after_training": False,
    "model.num_scales": N_LEVELS,
}
ROUND_TRIP_TOL = 1e-2  # |decode(encode(x)) - x| in [0, 1] units (module docstring)


def tiny_config(name: str):
    config = copy.deepcopy(load_config(ROOT / "configs" / "vp" / f"{name}.py"))
    for path, value in TINY_RUN.items():
        section, field = path.split(".")
        setattr(config[section], field, value)
    return config


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits")
    config = tiny_config("digits_ddpmpp_continuous")
    train(config, workdir)
    return config, workdir


def test_region_masks():
    shape = (2, 1, 8, 8)
    right = region_mask("right_half", shape)
    assert right[..., :4].all() and not right[..., 4:].any()
    center = region_mask("center", shape)
    assert not center[..., 2:6, 2:6].any() and center.sum() == 2 * (64 - 16)
    random = region_mask("random", (64, 3, 8, 8), torch.Generator().manual_seed(0))
    assert (random == random[:, :1]).all()  # all channels of a pixel together
    assert abs(random.double().mean() - 0.5) < 4 * 0.5 / 64  # 4096 fair coins: 4 standard errors
    with pytest.raises(ValueError, match="mask"):
        region_mask("left_half", shape)


def test_inpaint_keeps_known_pixels_exactly(digits_run):
    config, workdir = digits_run
    report = inpaint(config, workdir, mask="right_half")
    assert Path(report["png"]).is_file() and report["nfe"] == 2 * N_LEVELS
    saved = np.load(report["npz"])
    original, result, mask = saved["original"], saved["result"], saved["mask"]
    assert original.shape == result.shape == (NUM_IMAGES, 1, 8, 8) and int(saved["nfe"]) == 2 * N_LEVELS
    assert np.array_equal(result[mask], original[mask])
    assert np.isfinite(result).all() and not np.array_equal(result[~mask], original[~mask])
    assert np.all(saved["given"][~mask] == 0.5)
    assert not mask[..., 4:].any() and mask[..., :4].all()


def test_smc_inpainting_job_keeps_known_pixels_exactly(digits_run):
    """``sampling.inpainting = 'smc'``: SMCDiff with 4 particles per image, one reverse-diffusion step per noise level
    (NFE = N), the known pixels exact; an unknown method is refused before any work."""
    config, workdir = digits_run
    config = copy.deepcopy(config)
    with config.unlocked():
        config.sampling.inpainting, config.sampling.smc_particles = "smc", 4
    report = inpaint(config, workdir, eval_folder="smc", mask="center")
    saved = np.load(report["npz"])
    assert report["method"] == "smc" and report["nfe"] == N_LEVELS
    assert np.array_equal(saved["result"][saved["mask"]], saved["original"][saved["mask"]])
    assert np.isfinite(saved["result"]).all() and not np.array_equal(saved["result"], saved["original"])
    config.sampling.inpainting = "repaint"
    with pytest.raises(ConfigError, match="sampling.inpainting must be one of replacement, smc"):
        inpaint(config, workdir)


def test_superresolve_keeps_the_block_means(digits_run):
    """``--mode superresolve`` (factor 2 by default): the 2x2 block means of the outputs equal the input's up to float32
    rounding (1e-6 times the largest value: the untrained score's Langevin steps blow values up to ~1e5), NFE = 2 N
    (replacement) and N (SMC, 3 particles); the picture's rows, PSNR and the digits classifier's accuracies are
    reported; a factor that does not divide the image size is refused before any work."""
    config, workdir = digits_run
    report = superresolve(config, workdir)
    saved = np.load(report["npz"])
    original, low, result = saved["original"], saved["low_res"], saved["result"]
    assert report["method"] == "replacement" and report["factor"] == 2 and report["nfe"] == 2 * N_LEVELS
    assert original.shape == result.shape == (NUM_IMAGES, 1, 8, 8) and low.shape == (NUM_IMAGES, 1, 4, 4)
    means = result.reshape(NUM_IMAGES, 1, 4, 2, 4, 2).mean(axis=(3, 5))
    rounding = 1e-6 * max(1.0, float(np.abs(result).max()))  # float32 rounding of the block means, relative
    assert np.abs(means - low).max() < rounding and report["block_mean_max_deviation"] < rounding
    assert np.abs(low - original.reshape(NUM_IMAGES, 1, 4, 2, 4, 2).mean(axis=(3, 5))).max() < 1e-7
    assert not np.array_equal(result, original) and np.isfinite(report["psnr"]) and report["psnr_stderr"] > 0
    assert 0 <= report["digits_accuracy"] <= 1 and report["digits_accuracy_originals"] >= 0.9
    assert Path(report["png"]).is_file() and Path(report["json"]).is_file()
    config = copy.deepcopy(config)
    with config.unlocked():
        config.sampling.inpainting, config.sampling.smc_particles = "smc", 3
    report = superresolve(config, workdir, eval_folder="smc_sr")
    saved = np.load(report["npz"])
    rounding = 1e-6 * max(1.0, float(np.abs(saved["result"]).max()))
    assert report["method"] == "smc" and report["nfe"] == N_LEVELS and report["block_mean_max_deviation"] < rounding
    config.sampling.superresolution_factor = 3
    with pytest.raises(ConfigError, match="superresolution_factor=3 must divide the image size 8x8"):
        superresolve(config, workdir)


def test_superresolve_samples_a_low_resolution_conditioned_model(tmp_path):
    """A model trained with ``model.conditioning = 'low_resolution'`` (SR3) samples its own conditional, with the
    configured sampler (``fast``, 20 evaluations in the digits config), given the block means of the test digits."""
    config = tiny_config("digits_sr3_continuous")
    train(config, tmp_path)
    report = superresolve(config, tmp_path)
    saved = np.load(report["npz"])
    assert report["method"] == "sr3" and report["factor"] == 2 and report["nfe"] == config.sampling.nfe
    assert saved["result"].shape == (NUM_IMAGES, 1, 8, 8) and np.isfinite(saved["result"]).all()


def test_superresolution_factor_from_the_config():
    config = tiny_config("digits_ddpmpp_continuous")
    assert superresolution_factor(config) == 2
    with config.unlocked():
        config.sampling.superresolution_factor = 4
        assert superresolution_factor(config) == 4
        config.model.conditioning, config.model.low_resolution_factor = "low_resolution", 4
        assert superresolution_factor(config) == 4
        config.sampling.superresolution_factor = None
        assert superresolution_factor(config) == 4  # unset: the factor the conditioned model is trained on
        config.sampling.superresolution_factor = 2
        with pytest.raises(ConfigError, match="low_resolution_factor=4"):
            superresolution_factor(config)
        config.model.conditioning, config.sampling.superresolution_factor = None, 0
        with pytest.raises(ConfigError, match="superresolution_factor must be an integer >= 1"):
            superresolution_factor(config)


def test_interpolation_endpoints_decode_to_the_inputs(digits_run):
    config, workdir = digits_run
    report = interpolate(config, workdir, eval_folder="latent")
    assert Path(report["png"]).parent == workdir / "latent"
    saved = np.load(report["npz"])
    path = saved["path"]
    assert path.shape == (NUM_PAIRS, NUM_STEPS, 1, 8, 8) and report["nfe"] == int(saved["nfe"]) > 0
    assert np.abs(path[:, 0] - saved["first"]).max() < ROUND_TRIP_TOL
    assert np.abs(path[:, -1] - saved["second"]).max() < ROUND_TRIP_TOL
    # the interior is neither input: the path moves
    assert np.abs(path[:, NUM_STEPS // 2] - saved["first"]).max() > 10 * ROUND_TRIP_TOL


def test_colorize_keeps_the_grey_level(tmp_path):
    config = tiny_config("photo_patches_ddpmpp_continuous")
    with config.unlocked():
        config.sampling.corrector = "none"  # Langevin steps sized by an untrained score's tiny norm blow colours up
    train(config, tmp_path)
    report = colorize(config, tmp_path)
    saved = np.load(report["npz"])
    original, result = saved["original"], saved["result"]
    assert result.shape == (NUM_IMAGES, 3, 16, 16) and report["nfe"] == N_LEVELS
    rounding = 1e-5 * max(1.0, float(np.abs(result).max()))  # float32 rounding of the channel maps, relative
    assert np.abs(result.mean(axis=1) - original.mean(axis=1)).max() < rounding
    assert np.abs(result - original).max() > 0.1  # the colours are generated, not copied
    with config.unlocked():
        config.sampling.inpainting, config.sampling.smc_particles = "smc", 3  # SMCDiff: one step per level
    report = colorize(config, tmp_path, eval_folder="smc")
    saved = np.load(report["npz"])
    assert report["nfe"] == N_LEVELS and np.abs(saved["result"].mean(axis=1) - saved["original"].mean(axis=1)).max() < rounding


def test_main_inpaint_command_and_bad_mask(digits_run):
    config, workdir = digits_run
    flags = [f"--config.{key}={value}" for key, value in TINY_RUN.items()]
    command = [sys.executable, str(ROOT / "main.py"), f"--config={ROOT / 'configs/vp/digits_ddpmpp_continuous.py'}",
               f"--workdir={workdir}", "--mode=inpaint", *flags]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*command, "--mask=center", "--eval_folder=cli"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    mask = np.load(workdir / "cli" / "inpaint.npz")["mask"]
    assert np.array_equal(mask, region_mask("center", mask.shape).numpy())
    bad = subprocess.run([*command, "--mask=left_half"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert bad.returncode != 0 and all(name in bad.stderr for name in MASKS)


def test_guidance_demo(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import guidance_ring
    finally:
        sys.path.remove(str(ROOT / "examples"))
    n = 400
    results = guidance_ring.panels(num_samples=n, num_steps=100, seed=0)
    fractions = {title: guidance_ring.fraction_in_component(samples) for title, (samples, _) in results.items()}
    assert abs(fractions.pop("unconditional") - 1 / 8) < 4 * (1 / 8 * 7 / 8 / n) ** 0.5
    assert all(value >= 0.95 for value in fractions.values()), fractions
    assert guidance_ring.draw(results, tmp_path / "guidance.png").stat().st_size > 10_000

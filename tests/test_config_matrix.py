"""Every shipped config, in every mode, with every sampling method and likelihood setting: it runs, or it is refused
when the config is built, in one line naming a ``config.`` field.

The configs are every file under ``configs/`` but the ``default_*`` bases, ``__init__`` and ``toolkit_fields.py``;
the sampling methods are :data:`samplers.from_config.SAMPLING_METHODS` and the modes the keys of ``main.py``'s
``JOBS`` table, so a config, method or mode added later is covered without editing this file. Each config runs
with :func:`tiny_config`'s overrides (the smallest network of its family, few noise levels, batches of one, loose
solver tolerances), which keep the config's choices of SDE, network family, parameterization, data and
conditioning.

* Sampling (config x method, built in ``sample`` mode): one finite sample of the data shape with NFE > 0, or a
  :class:`jobs.ConfigError` at build. The refusals must be exactly :func:`expected_sampling_refusal`'s: a
  step-indexed network (:data:`STEP_INDEXED`, parameterization ``smld``) with a continuous-time method
  (:data:`samplers.from_config.CONTINUOUS_TIME_METHODS`). Any other refusal, or a missing one, fails.
* Likelihood (config x ``eval.enable_bpd=True``): the ``eval`` build refuses a step-indexed network (before it
  opens the dataset: that refusal must come first, even where the data is absent); otherwise one value is computed
  by :func:`jobs.evaluation.test_likelihood` itself, on the first test example where the data ships with the
  toolkit (:data:`SHIPPED_DATA`), else on a random 8-bit example with the ``sample`` build's pieces.
* Modes (config x ``main.py``'s modes, in-process through ``JOBS``): for the configs whose data ships with the
  toolkit, every mode end to end on a workdir (train one step, which writes one checkpoint; train_classifier; eval;
  sample; inpaint; colorize; interpolate), each writing its outputs or refused as :func:`expected_mode_refusal`
  says (2-D data has no images to inpaint, colorize or interpolate; grey data cannot be colorized; only a config
  with a ``classifier`` section trains a classifier). For the image configs whose data is absent (CIFAR-10,
  CelebA, LSUN, FFHQ, CelebA-HQ: never downloaded), every mode that reads data is refused in one line naming
  ``config.data.root`` (unset, as shipped; and, for one config of each dataset, naming an empty folder), and the
  ``sample`` job runs on an untrained checkpoint (one config of each network family: the sampler of every config
  is run by the sampling matrix).

Classifier-guidance configs sample only with a classifier checkpoint: the sampling and likelihood matrices give
them an untrained one (:func:`write_untrained_classifier`); the mode matrix trains it with ``train_classifier``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pytest
import torch

import data_lib
import models
import sde_lib
from configs import load_config
from jobs.conditional import CLASSIFIER_CHECKPOINT, classifier_config, classifier_folder
from jobs import evaluation
from jobs.experiment import ConfigError, EvaluationExperiment, Experiment, build_experiment
from main import JOBS
from samplers.from_config import CONTINUOUS_TIME_METHODS, SAMPLING_METHODS
from train_lib import save_checkpoint
from train_lib.optim import get_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (ROOT / "configs").rglob("*.py")
                      if not p.name.startswith(("default_", "__")) and p.name != "toolkit_fields.py")
CONFIG_IDS = [str(p.relative_to(ROOT / "configs")) for p in CONFIG_FILES]
MODES = tuple(JOBS)  # main.py's --mode choices

#: datasets that ship with the toolkit (generated, or bundled with scikit-learn / scikit-image): every mode runs
SHIPPED_DATA = frozenset(name.lower() for name in (*data_lib.TOY_DATASETS, "digits", "faces", "photo_patches", "tones"))

#: the configs whose network is step-indexed (parameterization ``smld``: VE SDE, ``training.continuous=False``);
#: they sample with ``pc`` only and have no likelihood. Written out, so that a new refusal is a decision.
STEP_INDEXED = frozenset({
    "ve/celeba_ncsnpp.py",
    "ve/cifar10_ddpm.py",
    "ve/cifar10_ncsnpp.py",
    "ve/ncsn/celeba.py",
    "ve/ncsn/celeba_124.py",
    "ve/ncsn/celeba_1245.py",
    "ve/ncsn/celeba_5.py",
    "ve/ncsn/cifar10.py",
    "ve/ncsn/cifar10_124.py",
    "ve/ncsn/cifar10_1245.py",
    "ve/ncsn/cifar10_5.py",
    "ve/ncsnv2/bedroom.py",
    "ve/ncsnv2/celeba.py",
    "ve/ncsnv2/cifar10.py",
})
CONTINUOUS_TIME_REFUSAL = r"evaluates the score at arbitrary times"
MISSING_DATA = r"config\.data\.root"


# ------------------------------------------------------------------ configs
@functools.lru_cache(maxsize=None)
def _shipped(config_id: str) -> ml_collections.ConfigDict:
    return load_config(ROOT / "configs" / config_id)


def shipped(config_id: str) -> ml_collections.ConfigDict:
    """The config file ``configs/<config_id>`` as shipped (a fresh copy)."""
    return copy.deepcopy(_shipped(config_id))


def _set(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> ml_collections.ConfigDict:
    with config.unlocked():
        for path, value in fields.items():
            *sections, field = path.split(".")
            node = config
            for section in sections:
                node = node[section]
            node[field] = value
    return config


def data_ships(config) -> bool:
    """Whether the data of ``config`` ships with the toolkit (:data:`SHIPPED_DATA`): every mode can run."""
    return str(config.data.dataset).lower() in SHIPPED_DATA


#: the smallest network of each family, by ``config.model.name`` (module docstring of :func:`tiny_config`)
TINY_NETWORKS = {
    "ncsnpp": {"nf": 4, "num_res_blocks": 1},  # GroupNorm min(C // 4, 32) groups; the positional embedding needs nf >= 4
    "ddpm": {"nf": 32, "num_res_blocks": 1},  # DDPM's GroupNorm has 32 groups: nf must be a multiple of 32
    "ncsn": {"nf": 8},
    "ncsnv2_64": {"nf": 8},
    "ncsnv2_128": {"nf": 8},
    "ncsnv2_256": {"nf": 8},
    "mlp": {"nf": 16, "num_layers": 2},
    "dit": {"nf": 8, "depth": 1, "num_heads": 2},  # one block; nf divisible by num_heads and by 4
    "wavegrad": {"nf": 4, "num_layers": 2, "dilation_cycle": 2, "embedding_dim": 8},
    "conditional_mlp": {"nf": 16, "num_layers": 2},
    "conv_classifier": {"nf": 8, "num_res_blocks": 1},
    "mlp_classifier": {"nf": 16, "num_layers": 2},
}
FEW_LEVELS = 4  # model.num_scales of a VE (or EDM) config


def _tiny_network(name: str) -> dict[str, Any]:
    if name not in TINY_NETWORKS:
        pytest.fail(f"a shipped config uses the network {name!r}: add its smallest settings to TINY_NETWORKS")
    return TINY_NETWORKS[name]


def tiny_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` as small as its code paths allow; its SDE, network family, parameterization
    (``training.continuous``), data, sampler, predictor/corrector and conditioning are kept.

    * The network (:data:`TINY_NETWORKS`): NCSN++ / DDPM++ (``ncsnpp``, also EDM's) ``nf=4`` (the least the
      positional embedding takes; GroupNorm's ``min(C // 4, 32)`` groups divide every width), one residual block per
      level; DDPM ``nf=32`` (its GroupNorm has 32 groups), one block; NCSN and NCSNv2 ``nf=8``; the MLPs (``mlp``, ``conditional_mlp``) hidden width ``nf=16``, 2 blocks. The
      classifier of a ``classifier`` section likewise (``conv_classifier`` ``nf=8``, one block; ``mlp_classifier``
      ``nf=16``, 2 blocks).
    * Noise levels, ``model.num_scales``: 4 for VE and EDM (NCSN's class count follows it); for VP and sub-VP the
      smallest ``N > beta_max`` (21 for ``beta_max = 20``): the DDPM discretization's largest step ``beta_max / N``
      must stay below 1, else its tables (``alphas``, read by the PC predictors and correctors) are NaN and so are
      the samples.
    * Image size: the U-Nets (NCSN++, DDPM++, DDPM) of the configs whose data is absent (every reference config,
      32 to 1024 px) run at the smallest size their network takes and still applies attention at:
      ``data.image_size = max(2^(len(ch_mult) - 1), max(attn_resolutions))``: 16 px for the 32 and 64 px configs
      (4 levels, attention at 16x16), 32 px for DDPM's 256 px configs (6 levels), 64 px for NCSN++'s 256 px configs
      (7 levels) and 128 px for its 1024 px configs (8 levels: 1x1 at the bottom). Nothing but the network sees
      these images. The RefineNets (NCSN, NCSNv2: 32 to 128 px) and the configs whose data ships (8 to 25 px) keep
      their size.
    * Batches of one: ``training.batch_size``, ``eval.batch_size`` and ``eval.num_samples``.
    * Loose solvers, few steps: ``sampling.rtol = atol = 0.5`` (ode, adaptive), ``sampling.dt = T / 4`` (sde: 4
      steps), ``sampling.nfe = 4`` (fast), ``sampling.n_steps_each = 1`` (pc); ``eval.likelihood_rtol = atol =
      0.5``, one dequantization.
    * ``device='cpu'``.
    """
    config = copy.deepcopy(config)
    fields: dict[str, Any] = {"device": "cpu"}
    fields.update({f"model.{k}": v for k, v in _tiny_network(config.model.name).items()})
    if "classifier" in config:
        fields.update({f"classifier.model.{k}": v for k, v in _tiny_network(config.classifier.model.name).items()})
        fields["classifier.training.batch_size"] = 1
    sde = sde_lib.get_sde(config)
    if isinstance(sde, (sde_lib.VPSDE, sde_lib.subVPSDE)):
        fields["model.num_scales"] = math.floor(sde.beta_1) + 1
    else:
        fields["model.num_scales"] = FEW_LEVELS
    if not data_ships(config) and config.model.get("ch_mult") is not None:  # the U-Nets, on absent data
        smallest = max(2 ** (len(config.model.ch_mult) - 1), *config.model.get("attn_resolutions", ()))
        fields["data.image_size"] = min(config.data.image_size, smallest)
    fields.update({
        "training.batch_size": 1, "eval.batch_size": 1, "eval.num_samples": 1,
        "sampling.rtol": 0.5, "sampling.atol": 0.5, "sampling.dt": sde.T / 4, "sampling.nfe": 4, "sampling.n_steps_each": 1,
        "eval.likelihood_rtol": 0.5, "eval.likelihood_atol": 0.5, "eval.bpd_num_repeats": 1,
    })
    return _set(config, fields)


def untrained_state(exp: Experiment) -> dict[str, Any]:
    """The experiment's untrained state with an optimizer, as a training checkpoint holds it."""
    return {**exp.state, "optimizer": get_optimizer(exp.config, exp.model.parameters())}


def write_untrained_classifier(config, workdir: Path) -> None:
    """An untrained classifier checkpoint where classifier guidance looks for it (``config.sampling.classifier``
    inside ``workdir``), for configs that sample with classifier guidance; nothing for the others."""
    folder = classifier_folder(config, workdir)
    if folder is None:
        return
    exp = build_experiment(classifier_config(config), folder, "sample", task="classifier")
    save_checkpoint(folder / CLASSIFIER_CHECKPOINT, untrained_state(exp))


def assert_one_line_refusal(error: ConfigError, pattern: str) -> None:
    message = str(error)
    assert "\n" not in message, f"a refusal must be one line:\n{message}"
    assert "config." in message, f"a refusal must name the config field: {message}"
    assert re.search(pattern, message), f"expected /{pattern}/, got: {message}"


def test_the_matrix_covers_every_config_method_and_mode():
    assert len(CONFIG_IDS) >= 49 and "toolkit_fields.py" not in CONFIG_IDS
    assert set(MODES) >= {"train", "eval", "sample", "inpaint", "colorize", "interpolate", "superresolve", "train_classifier"}
    assert set(CONTINUOUS_TIME_METHODS) < set(SAMPLING_METHODS)
    # STEP_INDEXED is exactly the set of configs whose network knows only its N noise levels
    step_indexed = set()
    for config_id in CONFIG_IDS:
        config = shipped(config_id)
        parameterization = models.parameterization_from_config(config, sde_lib.get_sde(config))
        if not parameterization.continuous_time:
            step_indexed.add(config_id)
    assert step_indexed == STEP_INDEXED
    # the configs said to have their data open it without any data folder; the others name none
    for config_id in CONFIG_IDS:
        config = run_config(config_id)
        assert config.data.get("root", "") == "", config_id
        if config_id in SHIPPED_DATA_CONFIGS:
            assert len(data_lib.get_dataset(config, "test")) >= 16, config_id
    assert len(SHIPPED_DATA_CONFIGS) >= 10 and len(ABSENT_DATA_CONFIGS) >= 39


# ------------------------------------------------------------------ 1. sampling: config x method
def expected_sampling_refusal(config_id: str, method: str) -> str | None:
    """The refusal a ``sample`` build must give (a pattern of its message), or ``None`` where it must run."""
    if config_id in STEP_INDEXED and method in CONTINUOUS_TIME_METHODS:
        return rf"config\.sampling\.method='{method}' {CONTINUOUS_TIME_REFUSAL}"
    return None


@pytest.mark.parametrize("method", SAMPLING_METHODS)
@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_every_config_samples_with_every_method_or_refuses_at_build(config_id, method, tmp_path):
    config = _set(tiny_config(shipped(config_id)), {"sampling.method": method})
    write_untrained_classifier(config, tmp_path)
    expected = expected_sampling_refusal(config_id, method)
    if expected is not None:
        with pytest.raises(ConfigError) as refused:
            build_experiment(config, tmp_path, "sample")
        assert_one_line_refusal(refused.value, expected)
        return
    exp = build_experiment(config, tmp_path, "sample")
    x, nfe = exp.sampling_fn(exp.model, generator=torch.Generator().manual_seed(0))
    assert tuple(x.shape) == (1, *exp.data_shape)
    assert torch.isfinite(x).all(), f"{config_id} / {method}: non-finite sample"
    assert nfe > 0


# ------------------------------------------------------------------ 2. likelihood: config x eval.enable_bpd
def one_example(exp: Experiment, generator: torch.Generator) -> data_lib.InMemoryDataset:
    """A one-example test split: the first test example of shipped data, else a random 8-bit image (or a standard
    normal point for 2-D data)."""
    test_ds = getattr(exp, "test_ds", None)
    if test_ds is not None:
        return data_lib.InMemoryDataset(test_ds.name, "test", test_ds.gather(torch.arange(1)), test_ds.num_levels)
    if len(exp.data_shape) == 1:
        return data_lib.InMemoryDataset("random", "test", torch.randn((1, *exp.data_shape), generator=generator), None)
    levels = torch.randint(0, 256, (1, *exp.data_shape), generator=generator, dtype=torch.int64).to(torch.uint8)
    return data_lib.InMemoryDataset("random", "test", levels, 256)


@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_every_config_gives_a_likelihood_or_refuses_at_build(config_id, tmp_path):
    config = _set(tiny_config(shipped(config_id)), {"eval.enable_bpd": True})
    write_untrained_classifier(config, tmp_path)
    if config_id in STEP_INDEXED:  # refused by the eval build, before it reaches the (absent) dataset
        with pytest.raises(ConfigError) as refused:
            build_experiment(config, tmp_path, "eval")
        assert_one_line_refusal(refused.value, rf"config\.eval\.enable_bpd=True .*{CONTINUOUS_TIME_REFUSAL}")
        return
    if data_ships(config):
        exp = build_experiment(config, tmp_path, "eval")
    else:
        with pytest.raises(ConfigError) as refused:
            build_experiment(config, tmp_path, "eval")
        assert_one_line_refusal(refused.value, MISSING_DATA)
        exp = build_experiment(config, tmp_path, "sample")
    fields = {field.name: getattr(exp, field.name) for field in dataclasses.fields(Experiment)}
    test_ds = one_example(exp, torch.Generator().manual_seed(0))
    one_example_exp = EvaluationExperiment(**fields, eval_step_fn=None, test_ds=test_ds)
    report = evaluation.test_likelihood(one_example_exp, 1)
    assert report["count"] == 1 and report["nfe"] > 0 and math.isfinite(report["mean"])
    assert report["unit"] == ("nats" if test_ds.num_levels is None else "bits/dim")


# ------------------------------------------------------------------ 3. modes: config x main.py's modes
#: end-to-end runs: one training step that writes one numbered checkpoint (and its samples); evaluation of the
#: whole (small) test split in one batch; small toy and photo-patch splits
RUN = {
    "training.n_iters": 1, "training.snapshot_freq": 1, "training.snapshot_freq_for_preemption": 1,
    "training.log_freq": 1, "training.eval_freq": 1, "training.snapshot_sampling": True,
    "eval.after_training": False, "eval.begin_ckpt": 1, "eval.end_ckpt": 1, "eval.batch_size": 512,
    "eval.num_samples": 2,  # the fewest the digits metrics take (a covariance)
}
RUN_CLASSIFIER = {"classifier.training.n_iters": 1, "classifier.training.snapshot_freq": 1}
TOY_SPLITS = {"data.num_train": 64, "data.num_test": 16}
PHOTO_PATCHES = {"data.patches_per_image": 8}  # 2 test photos: 16 test patches
#: the order of the end-to-end runs: training first, then what reads its checkpoint (and the classifier's)
ORDER = ("train", "train_classifier")


def run_config(config_id: str) -> ml_collections.ConfigDict:
    """:func:`tiny_config` of the shipped config with the end-to-end settings (:data:`RUN`), the classifier's run
    of one step, and small toy and photo-patch splits."""
    config = _set(tiny_config(shipped(config_id)), RUN)
    if "classifier" in config:
        _set(config, RUN_CLASSIFIER)
    name = str(config.data.dataset).lower()
    if name in data_lib.TOY_DATASETS or name == "tones":
        _set(config, TOY_SPLITS)
    elif name == "photo_patches":
        _set(config, PHOTO_PATCHES)
    return config


def expected_mode_refusal(config, config_id: str, mode: str) -> str | None:
    """The one-line refusal a mode must give on the run of ``config`` (a pattern of its message), or ``None``."""
    images = str(config.data.dataset).lower() not in (*data_lib.TOY_DATASETS, *data_lib.AUDIO_DATASETS)
    if mode == "train_classifier" and "classifier" not in config:
        return r"config\.sampling\.classifier must name"
    if mode in ("inpaint", "colorize", "interpolate") and config.model.get("conditioning"):
        return rf"--mode {mode} needs an unconditional score, but the network is conditioned on a signal \(config\.model\.conditioning="
    if mode in ("inpaint", "colorize", "interpolate", "superresolve") and not images:
        return r"controllable generation needs images \(C, H, W\), config\.data describes"
    if mode == "superresolve" and config.data.image_size % 2:  # the default factor, 2, must divide the image size
        return r"config\.sampling\.superresolution_factor=2 must divide the image size"
    if mode == "colorize" and config.data.num_channels != 3:
        return r"--mode colorize needs RGB data \(3 channels\), config\.data describes"
    if mode == "interpolate" and config_id in STEP_INDEXED:
        return CONTINUOUS_TIME_REFUSAL
    return None


def mode_outputs(mode: str, config, workdir: Path, step: int = 1) -> list[Path]:
    """Files the mode must have written into ``workdir`` (from a checkpoint of ``step``)."""
    if mode == "train":
        return [workdir / "checkpoints" / "checkpoint_1.pth", workdir / "checkpoints-meta" / "checkpoint.pth",
                workdir / "samples" / "iter_1" / "sample.png", workdir / "config.json", workdir / "log.txt"]
    if mode == "train_classifier":
        folder = classifier_folder(config, workdir)
        return [folder / CLASSIFIER_CHECKPOINT, folder / "accuracy.json"]
    if mode == "eval":
        return [workdir / "eval" / "ckpt_1" / "report.json", workdir / "eval" / "ckpt_1" / "samples_0.npz"]
    if mode == "sample":
        return [workdir / "samples" / f"step_{step}" / "samples_0.npz", workdir / "samples" / f"step_{step}" / "samples.png"]
    return [workdir / "controllable" / f"{mode}.png", workdir / "controllable" / f"{mode}.npz"]


SHIPPED_DATA_CONFIGS = [c for c in CONFIG_IDS if data_ships(_shipped(c))]
ABSENT_DATA_CONFIGS = [c for c in CONFIG_IDS if not data_ships(_shipped(c))]


@pytest.mark.parametrize("config_id", SHIPPED_DATA_CONFIGS)
def test_every_mode_runs_end_to_end_or_refuses_at_build(config_id, tmp_path):
    config = run_config(config_id)
    workdir = tmp_path / "run"
    outcomes = {}
    for mode in sorted(MODES, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
        expected = expected_mode_refusal(config, config_id, mode)
        before = sorted(workdir.rglob("*")) if workdir.exists() else []
        if expected is not None:
            with pytest.raises(ConfigError) as refused:
                JOBS[mode](config, workdir, None)
            assert_one_line_refusal(refused.value, expected)
            after = [p for p in sorted(workdir.rglob("*")) if p.name not in (".lock", "log.txt")]
            assert after == [p for p in before if p.name not in (".lock", "log.txt")], f"{mode} wrote files before refusing"
            outcomes[mode] = "refused"
            continue
        JOBS[mode](config, workdir, None)
        missing = [str(p.relative_to(workdir)) for p in mode_outputs(mode, config, workdir) if not p.is_file()]
        assert not missing, f"{mode} did not write {missing}"
        outcomes[mode] = "ran"
    report = json.loads((workdir / "eval" / "ckpt_1" / "report.json").read_text())
    for key in ("loss", "likelihood", "samples"):
        enabled = bool(config.eval.get({"loss": "enable_loss", "likelihood": "enable_bpd", "samples": "enable_sampling"}[key]))
        assert (key in report) == enabled
    if "likelihood" in report:
        assert math.isfinite(report["likelihood"]["mean"]) and report["likelihood"]["count"] > 0
    samples = np.load(workdir / "samples" / "step_1" / "samples_0.npz")["samples"]
    assert samples.shape[0] == 2 and np.isfinite(samples.astype(np.float64)).all()
    assert set(outcomes) == set(MODES)


@pytest.mark.parametrize("config_id", ABSENT_DATA_CONFIGS)
def test_modes_that_read_absent_data_refuse_at_build(config_id, tmp_path):
    """Every mode that reads data is refused in one line naming ``config.data.root`` (unset, as shipped), and
    ``train_classifier`` without a ``classifier`` section in one line naming ``config.sampling.classifier``, before
    anything is written. (``sample`` reads no data: :func:`test_the_sample_job_runs_without_the_data`.)"""
    config = run_config(config_id)
    workdir = tmp_path / "run"
    for mode in MODES:
        if mode == "sample":
            continue
        assert "classifier" not in config
        with pytest.raises(ConfigError) as refused:
            JOBS[mode](config, workdir, None)
        assert_one_line_refusal(refused.value, r"config\.sampling\.classifier must name" if mode == "train_classifier" else MISSING_DATA)
        assert not (workdir / "checkpoints").exists()


#: one config of each network family among those whose data is absent (the sampler of every config is run by the
#: sampling matrix; the sample job around it depends on the data's shape, not on the config)
ABSENT_DATA_FAMILIES = {str(_shipped(c).model.name): c for c in reversed(ABSENT_DATA_CONFIGS)}


@pytest.mark.parametrize("config_id", sorted(ABSENT_DATA_FAMILIES.values()))
def test_the_sample_job_runs_without_the_data(config_id, tmp_path):
    """``--mode sample`` reads no data: on an untrained checkpoint it writes its rounds and picture."""
    config = run_config(config_id)
    workdir = tmp_path / "run"
    exp = build_experiment(config, workdir, "sample")
    save_checkpoint(exp.layout.checkpoint_path(1), untrained_state(exp))
    report = JOBS["sample"](config, workdir, None)
    assert report["count"] == 2 and report["nfe_per_round"][0] > 0
    missing = [str(p) for p in mode_outputs("sample", config, workdir, step=0) if not p.is_file()]
    assert not missing, f"sample did not write {missing}"


#: one config of each dataset whose data is absent
ABSENT_DATASETS = {str(_shipped(c).data.dataset): c for c in reversed(ABSENT_DATA_CONFIGS)}


@pytest.mark.parametrize("dataset", sorted(ABSENT_DATASETS))
def test_a_data_folder_without_the_data_is_refused_in_one_line(dataset, tmp_path):
    """``config.data.root`` naming an empty folder: every mode that reads data names the field and the folder."""
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    config = _set(run_config(ABSENT_DATASETS[dataset]), {"data.root": str(empty)})
    for mode in MODES:
        if mode in ("sample", "train_classifier"):
            continue
        with pytest.raises(ConfigError) as refused:
            JOBS[mode](config, tmp_path / "run", None)
        assert_one_line_refusal(refused.value, rf"config\.data\.root = '{re.escape(str(empty))}' does not hold the dataset")
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_too_few_samples_for_the_digits_metrics_are_refused_before_training(tmp_path):
    """The digits metrics (a covariance of the samples' features) need 2 samples: ``eval.num_samples=1`` is refused
    by ``eval`` at build and by ``train`` with ``eval.after_training`` before the first step."""
    config = _set(run_config("vp/digits_ddpmpp_continuous.py"), {"eval.num_samples": 1, "eval.enable_sampling": True})
    for mode, fields in (("train", {"eval.after_training": True}), ("eval", {})):
        with pytest.raises(ConfigError) as refused:
            JOBS[mode](_set(copy.deepcopy(config), fields), tmp_path, None)
        assert_one_line_refusal(refused.value, r"config\.eval\.num_samples=1: .* need at least 2 samples")
        assert not (tmp_path / "checkpoints").exists()

"""The DDPM++ configs of the embedded image data (faces, photo patches): they validate up front and run the job.

For each config: :func:`build_experiment` accepts it and builds what its docstring states (the dataset's shape,
split sizes and 256 levels; the network's resolutions); the train job runs 2 steps of batch 4 (the real training
loop: data, loss, optimizer, EMA, checkpoints, a snapshot sample), and the sample job draws 4 samples from the
checkpoint it left. The faces' 25x25 resolution admits no down-sampling, which the config's ``ch_mult = (1,)``
reflects: the test also checks that a two-level U-Net is refused before any work. Each case takes a few seconds.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from configs import load_config
from train_lib import restore_checkpoint
from jobs.evaluation import sample
from jobs.experiment import ConfigError, build_experiment
from jobs.run import train

ROOT = Path(__file__).resolve().parents[1]

# config file -> (example shape, train size, test size, feature-map resolutions of the U-Net), as documented
EXPECTED = {
    "faces_ddpmpp_continuous": ((1, 25, 25), 80, 20, (25,)),
    "photo_patches_ddpmpp_continuous": ((3, 16, 16), 1500, 600, (16, 8)),
}
# a run of 2 steps and one tiny sample (every other field as in the config)
TINY_RUN = {
    "training.n_iters": 2,
    "training.batch_size": 4,
    "training.log_freq": 1,
    "training.eval_freq": 1,
    "training.snapshot_freq": 2,
    "training.snapshot_freq_for_preemption": 1,
    "eval.batch_size": 4,
    "eval.num_samples": 4,
}


def load(name: str, overrides: dict | None = None):
    """The config ``configs/vp/{name}.py`` with ``overrides`` (``'section.field': value``) set on a copy."""
    config = copy.deepcopy(load_config(ROOT / "configs" / "vp" / f"{name}.py"))
    for path, value in (overrides or {}).items():
        section, field = path.split(".")
        setattr(config[section], field, value)
    return config


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_builds_what_it_describes(name, tmp_path):
    shape, n_train, n_test, resolutions = EXPECTED[name]
    config = load(name)
    exp = build_experiment(config, tmp_path, "train")
    assert exp.data_shape == shape == exp.train_ds.shape == exp.test_ds.shape
    assert (len(exp.train_ds), len(exp.test_ds)) == (n_train, n_test)
    assert exp.train_ds.num_levels == exp.test_ds.num_levels == 256
    assert exp.sampling_shape == (config.training.batch_size, *shape)
    # one encoder level per resolution, the image_size halved at each level
    assert tuple(shape[-1] // 2**level for level in range(len(exp.model.down))) == resolutions
    # the full job fits the data: at least one full training batch, and one epoch holds several steps
    assert len(exp.train_ds) // config.training.batch_size >= 5


def test_faces_resolution_admits_no_down_sampling(tmp_path):
    """25 is odd: a U-Net with two levels is refused by the up-front validation, naming the constraint."""
    config = load("faces_ddpmpp_continuous", {"model.ch_mult": (1, 2), "model.attn_resolutions": ()})
    with pytest.raises(ConfigError, match=re.escape("image_size=25 must be divisible by 2^(len(ch_mult) - 1) = 2")):
        build_experiment(config, tmp_path, "train")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_two_training_steps_and_a_tiny_sample(name, tmp_path):
    shape = EXPECTED[name][0]
    config = load(name, TINY_RUN)
    initial = [p.detach().clone() for p in build_experiment(config, tmp_path / "init", "train").model.parameters()]
    exp = train(config, tmp_path)
    assert exp.state["step"] == 2

    # the log holds a finite training loss at steps 1 and 2 and a finite test-batch loss
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")
    losses = {int(s): float(v) for s, v in re.findall(r"step (\d+)/2  training_loss (\S+)", log)}
    assert set(losses) == {1, 2} and all(np.isfinite(list(losses.values())))
    assert all(np.isfinite(float(v)) for v in re.findall(r"eval_loss (\S+)", log))

    # the checkpoint of step 2 restores, and the optimizer really moved the weights (same seed, same initial weights)
    restored = build_experiment(config, tmp_path / "restored", "train")
    restore_checkpoint(tmp_path / "checkpoints" / "checkpoint_1.pth", restored.state)
    assert restored.state["step"] == 2
    moved = [not torch.equal(before, after) for before, after in zip(initial, restored.model.parameters())]
    assert sum(moved) > len(moved) // 2

    # the snapshot sample of step 2: 4 images of the data's shape, 8-bit, not all one value
    snapshot = np.load(tmp_path / "samples" / "iter_2" / "sample.npz")["samples"]
    assert snapshot.shape == (4, shape[1], shape[2], shape[0]) and snapshot.dtype == np.uint8
    assert snapshot.std() > 0

    # the sample job reuses the checkpoint: 4 samples, the configured number of score evaluations
    report = sample(config, tmp_path)
    assert report["step"] == 2 and report["count"] == 4
    assert report["nfe_per_round"] == [config.sampling.nfe]
    assert Path(report["png"]).is_file()

"""``build_experiment`` builds what each mode uses, once: the optimizer and the step functions only to train, the
datasets only where a mode reads them; a checkpoint restores into the state of every mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from configs import load_config
from jobs.experiment import EvaluationExperiment, SamplingExperiment, TrainingExperiment, build_experiment
from jobs.run_config import apply_overrides
from train_lib import restore_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _config():
    return apply_overrides(load_config(ROOT / "configs/vp/toy_mlp_continuous.py"),
                           [("model.nf", "16"), ("training.batch_size", "8"), ("eval.batch_size", "8")])


def _fields(cls) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def test_each_mode_gets_its_own_parts(tmp_path):
    config = _config()
    trained = build_experiment(config, tmp_path, "train")
    evaluated = build_experiment(config, tmp_path, "eval")
    sampled = build_experiment(config, tmp_path, "sample")
    assert type(trained) is TrainingExperiment and type(evaluated) is EvaluationExperiment
    assert type(sampled) is SamplingExperiment
    assert set(trained.state) == {"model", "ema", "optimizer", "step"} and trained.state["optimizer"] is trained.optimizer
    assert set(evaluated.state) == set(sampled.state) == {"model", "ema", "step"}
    assert {"optimizer", "train_step_fn"} & (_fields(EvaluationExperiment) | _fields(SamplingExperiment)) == set()
    assert {"eval_step_fn", "test_ds", "train_ds"} & _fields(SamplingExperiment) == set()
    assert evaluated.train_ds is None, "the training split is opened for eval only when bits/dim are asked of it"
    for exp in (trained, evaluated, sampled):
        assert exp.sampling_fn is not None and exp.sampling_shape[1:] == exp.data_shape
    # the same seed builds the same network in every mode
    for exp in (evaluated, sampled):
        assert all(torch.equal(a, b) for a, b in zip(trained.model.parameters(), exp.model.parameters()))


def test_a_checkpoint_restores_into_the_state_of_every_mode(tmp_path):
    config = _config()
    trained = build_experiment(config, tmp_path, "train")
    with torch.no_grad():
        for parameter in trained.model.parameters():
            parameter.add_(0.25)
    trained.state["step"] = 7
    save_checkpoint(tmp_path / "checkpoint.pth", trained.state)
    for mode in ("eval", "sample"):
        exp = build_experiment(config, tmp_path, mode)
        restore_checkpoint(tmp_path / "checkpoint.pth", exp.state)
        assert exp.state["step"] == 7
        assert all(torch.equal(a, b) for a, b in zip(trained.model.parameters(), exp.model.parameters()))

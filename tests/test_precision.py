"""Mixed precision (:mod:`models.precision`): the ``'auto'`` rule, the score model's autocast, and quality guards.

* The rule: ``'auto'`` is bf16 where the device has bf16 matrix tiles (AMX, CUDA), for training and sampling;
  explicit modes are checked against the device, with one-line errors naming the config field.
* The score model in bf16: its output is in the dtype of ``x`` and within bf16's rounding of float32's (the network
  rounds every matrix product to 8 significant bits, ``2^-9`` relative: a relative L2 error of a few ``1e-3``),
  and it differs from float32 (the autocast ran).
* Quality guards on the toy config (the statistic and its noise floor of ``tests/test_training_job.py``: the mean
  sliced Wasserstein distance of 1000 samples to fresh data sets, against the same distance for fresh data, 16
  draws): a model trained in bf16 samples within the bound, and its test loss differs from the float32 run's by no
  more than the seed-to-seed spread of float32 runs (one more float32 run with another seed gives that spread, three
  times it is the tolerance, plus three evaluation standard errors); bf16 sampling of the float32 model from the same
  prior noise is within the bound and within one null standard deviation of float32 sampling.
"""

from __future__ import annotations

import math

import pytest
import torch

import models
import sde_lib
from configs import load_config
from models import precision
from models.precision import resolve_mixed_precision
from train_lib import get_loss_fn, restore_checkpoint
from jobs.experiment import ConfigError, build_experiment
from jobs.run import train

from test_training_job import K_NULL, data, null_distribution, sw_to_reference, toy_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the rule
@pytest.mark.parametrize("units, expected", [((False, False), "no"), ((True, False), "no"), ((True, True), "bf16")])
def test_auto_is_bf16_where_the_cpu_has_matrix_tiles(units, expected, monkeypatch):
    monkeypatch.setattr(precision, "_cpu_bf16_units", lambda: units)
    assert resolve_mixed_precision("auto", "cpu") == expected
    assert precision.native_bf16("cpu") == units[0]
    for mode in ("no", "bf16"):
        assert resolve_mixed_precision(mode, "cpu") == mode


def test_bad_settings_are_one_line_errors_naming_the_field():
    with pytest.raises(ValueError, match=r"^config.sampling.mixed_precision must be one of 'auto', 'no', 'bf16', 'fp16'; got 'fp8'$"):
        resolve_mixed_precision("fp8", "cpu", name="config.sampling.mixed_precision")
    with pytest.raises(ValueError, match=r"^mixed_precision='fp16' needs a CUDA device, not cpu"):
        resolve_mixed_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="mixed_precision must be one of 'no', 'bf16', 'fp16'"):
        models.ScoreModel(torch.nn.Linear(2, 2), sde_lib.VPSDE(), mixed_precision="auto")


def test_config_field_is_checked_before_any_work(tmp_path):
    config = toy_config("vp")
    config.sampling.mixed_precision = "half"
    with pytest.raises(ConfigError, match="config.sampling.mixed_precision must be one of"):
        build_experiment(config, tmp_path, "sample")


# ------------------------------------------------------------------ the score model's autocast
def test_bf16_score_is_float32_within_bf16_rounding():
    config = load_config("configs/vp/digits_ddpmpp_continuous.py")
    torch.manual_seed(0)
    network = models.create_model(config)
    sde = sde_lib.VPSDE()
    full = models.ScoreModel.from_config(config, network, sde).in_precision("no")
    half = full.in_precision("bf16")
    x, t = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.linspace(0.05, 0.95, 16)
    with torch.no_grad():
        exact, rounded = full.score(x, t), half.score(x, t)
    assert rounded.dtype == torch.float32 and torch.isfinite(rounded).all()
    relative = float((rounded - exact).norm() / exact.norm())
    assert 0 < relative < 2e-2, relative


def test_sampling_precision_follows_the_config(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_cpu_bf16_units", lambda: (True, True))
    for setting, expected in (("auto", "bf16"), ("no", "no"), ("bf16", "bf16")):
        config = toy_config("vp")
        config.sampling.mixed_precision = setting
        exp = build_experiment(config, tmp_path / setting, "sample")
        assert exp.score_model.mixed_precision == expected
        assert exp.score_model.in_precision("no").mixed_precision == "no"


# ------------------------------------------------------------------ quality guards
def _ema_network(config, workdir):
    exp = build_experiment(config, workdir, "sample")
    restore_checkpoint(workdir / "checkpoints" / "checkpoint_1.pth", exp.state)
    exp.ema.copy_to(exp.model.parameters())
    return exp


def _samples(config, workdir, mixed_precision: str) -> torch.Tensor:
    config.sampling.mixed_precision = mixed_precision
    exp = _ema_network(config, workdir)
    samples, _ = exp.sampling_fn(exp.model, generator=torch.Generator().manual_seed(1))
    return samples


def _test_loss(config, workdir) -> tuple[float, float]:
    """Mean and standard error of the float32 denoising loss of the EMA weights on 20000 fresh points."""
    exp = _ema_network(config, workdir)
    loss_fn = get_loss_fn(exp.sde, train=False, reduce_mean=True)
    x = exp.scaler(data(20000, 99))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        per_batch = torch.stack([loss_fn(exp.model, chunk, generator) for chunk in x.split(500)])
    return float(per_batch.mean()), float(per_batch.std() / math.sqrt(len(per_batch)))


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """The VP toy config trained in float32 (seeds 42 and 43) and in bf16 (seed 42)."""
    torch.set_num_threads(1)
    runs = {}
    for name, mode, seed in (("float32", "no", 42), ("float32_seed43", "no", 43), ("bf16", "bf16", 42)):
        workdir = tmp_path_factory.mktemp(name)
        config = toy_config("vp", training__mixed_precision=mode)
        config.seed = seed
        train(config, workdir)
        runs[name] = workdir
    return runs


def test_bf16_training_reaches_float32_quality(toy_runs, null_distribution):
    references, null_mean, null_sd = null_distribution
    bound = null_mean + K_NULL * null_sd
    config = lambda: toy_config("vp", sampling__mixed_precision="no")  # noqa: E731
    sw = sw_to_reference(_samples(config(), toy_runs["bf16"], "no"), references)
    assert sw < bound, f"bf16-trained model: SW {sw:.4f} >= bound {bound:.4f}"
    (loss32, se32), (loss43, se43), (loss16, se16) = (
        _test_loss(config(), toy_runs[name]) for name in ("float32", "float32_seed43", "bf16")
    )
    tolerance = 3 * abs(loss32 - loss43) + 3 * math.sqrt(se32**2 + se16**2)
    print(f"test loss float32 {loss32:.5f} (seed 43: {loss43:.5f}), bf16 {loss16:.5f}; tolerance {tolerance:.5f}")
    assert abs(loss16 - loss32) <= tolerance


def test_bf16_sampling_matches_float32_sampling(toy_runs, null_distribution):
    references, null_mean, null_sd = null_distribution
    bound = null_mean + K_NULL * null_sd
    full = _samples(toy_config("vp"), toy_runs["float32"], "no")
    half = _samples(toy_config("vp"), toy_runs["float32"], "bf16")
    assert not torch.equal(full, half)  # the bf16 path ran
    sw_full, sw_half = sw_to_reference(full, references), sw_to_reference(half, references)
    print(f"SW float32 sampling {sw_full:.4f}, bf16 sampling {sw_half:.4f}, null sd {null_sd:.4f}, bound {bound:.4f}")
    assert sw_half < bound and abs(sw_half - sw_full) < null_sd

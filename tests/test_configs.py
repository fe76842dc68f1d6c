"""Every toy (2-D points) config loads and builds the SDE, network and sampler it names, with its parameters.

The image experiments (the reference's set) are checked by ``tests/test_reference_configs.py``.
"""

from pathlib import Path

import pytest
import torch

import configs
import models
import samplers
import sde_lib

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(CONFIG_DIR.rglob("toy_*.py"))
SDE_CLASSES = {"vpsde": sde_lib.VPSDE, "subvpsde": sde_lib.subVPSDE, "vesde": sde_lib.VESDE}


def test_there_are_experiment_configs():
    assert len(EXPERIMENTS) >= 3


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_builds_what_it_names(path):
    config = configs.load_config(path)
    sde = sde_lib.get_sde(config)
    assert type(sde) is SDE_CLASSES[config.training.sde] and sde.N == config.model.num_scales
    if isinstance(sde, sde_lib.VESDE):
        assert (sde.sigma_min, sde.sigma_max) == (config.model.sigma_min, config.model.sigma_max)
    else:
        assert (sde.beta_0, sde.beta_1) == (config.model.beta_min, config.model.beta_max)
    network = models.create_model(config)
    assert isinstance(network, models.get_model(config.model.name))
    assert samplers.get_sampling_fn(config, sde, (4, config.data.dim), None, 1e-3) is not None
    x = torch.randn(4, config.data.dim)
    score = models.ScoreModel.from_config(config, network, sde).score_fn()(x, torch.full((4,), 0.5))
    assert score.shape == x.shape and torch.isfinite(score).all()


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        configs.load_config(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        configs.load_config(empty)

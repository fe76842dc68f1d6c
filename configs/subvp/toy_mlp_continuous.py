"""2-D toy density, MLP score network, subvpsde SDE, continuous-time training."""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "subvpsde"
    return config

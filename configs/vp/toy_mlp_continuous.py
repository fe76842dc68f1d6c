"""2-D toy density, MLP score network, vpsde SDE, continuous-time training."""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    return config

"""2-D toy density, MLP score network, vesde SDE, continuous-time training."""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    # VE: the network outputs the score, scaled by 1 / sigma through a Fourier embedding of log(sigma)
    config.model.embedding_type = "fourier"
    config.model.fourier_scale = 16.0
    config.model.scale_by_sigma = True
    return config

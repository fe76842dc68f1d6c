"""Defaults of the CelebA experiments (64x64 RGB faces), field for field as in the 2021 reference: the CIFAR-10
defaults with the values below changed."""

import ml_collections

from configs.default_cifar10_configs import get_default_configs as get_cifar10_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = get_cifar10_defaults()
    config.sampling.snr = 0.17
    config.eval.begin_ckpt = 1
    config.eval.enable_sampling = True
    config.data.dataset = "CELEBA"
    config.data.image_size = 64
    del config.model["sigma_max"]  # an int (50) for CIFAR-10, a float here: ml-collections will not retype a field
    config.model.sigma_max = 90.0
    return config

"""Defaults of the 256x256 experiments (LSUN scenes; also CelebA-HQ and FFHQ at 256), as in the 2021 reference: the
CIFAR-10 defaults with the values below changed."""

import ml_collections

from configs.default_cifar10_configs import get_default_configs as get_cifar10_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = get_cifar10_defaults()
    training = config.training
    training.batch_size = 64
    training.n_iters = 2400001
    training.snapshot_freq_for_preemption = 5000
    config.sampling.snr = 0.075
    evaluate = config.eval
    evaluate.begin_ckpt = 50
    evaluate.end_ckpt = 96
    evaluate.batch_size = 512
    evaluate.enable_sampling = True
    config.data.dataset = "LSUN"  # the scene is data.category, set by each experiment
    config.data.image_size = 256
    config.model.num_scales = 2000
    config.model.sigma_max = 378
    config.model.dropout = 0.0
    return config

"""CelebA 64 NCSNv2: discrete VE SDE, NCSNv2 (64 px) network, annealed Langevin."""

from configs.default_celeba_configs import get_default_configs


def get_config():
    config = get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.128

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.num_scales = 500
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.lr = 1e-4
    optim.amsgrad = False
    optim.warmup = 0
    optim.grad_clip = -1.0

    return config

"""LSUN bedroom 128 NCSNv2: discrete VE SDE, NCSNv2 (128 px), annealed Langevin."""

from configs.default_lsun_configs import get_default_configs


def get_config():
    config = get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False  # the reference misspelt this field (continuouse), left True, and crashed
    training.batch_size = 128

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 3
    sampling.snr = 0.095

    data = config.data
    data.category = "bedroom"
    data.image_size = 128

    model = config.model
    model.name = "ncsnv2_128"
    model.scale_by_sigma = True
    model.ema_rate = 0.9999
    model.num_scales = 1086
    model.sigma_min = 0.01
    model.sigma_max = 190
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

"""CIFAR-10 NCSN + NCSNv2 techniques 1, 2, 4: discrete VE SDE, NCSN net, annealed Langevin."""

from configs.default_cifar10_configs import get_default_configs


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
    sampling.snr = 0.176

    model = config.model
    model.name = "ncsn"
    model.scale_by_sigma = False
    model.ema_rate = 0.0
    model.num_scales = 232
    # added: the conditional InstanceNorm++ has one row per noise scale (kept equal to it)
    model.num_classes = model.get_ref("num_scales")
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.lr = 0.001
    optim.amsgrad = False
    optim.warmup = 0
    optim.grad_clip = -1.0

    return config

"""CIFAR-10 NCSN++ deep (continuous): VE SDE, NCSN++ (8 blocks per resolution), PC: reverse diffusion + Langevin."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = True
    training.n_iters = 950001

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 8
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.resblock_type = "biggan"
    model.skip_rescale = True
    model.init_scale = 0.0
    model.attention_type = "ddpm"
    model.conv_size = 3
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.fourier_scale = 16

    return config

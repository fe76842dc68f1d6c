"""CelebA-HQ 256 DDPM (discrete): VP SDE, DDPM network, PC: ancestral sampling, no corrector."""

from configs.default_lsun_configs import get_default_configs


def get_config():
    config = get_default_configs()

    training = config.training
    training.sde = "vpsde"
    training.continuous = False
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    data = config.data
    data.dataset = "CelebAHQ"
    data.centered = True
    # the reference's own TFRecord file; this toolkit reads data.root
    data.tfrecords_path = "/atlas/u/yangsong/celeba_hq/-r10.tfrecords"

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.num_scales = 1000
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 1, 2, 2, 4, 4)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True

    optim = config.optim
    optim.lr = 2e-5

    return config

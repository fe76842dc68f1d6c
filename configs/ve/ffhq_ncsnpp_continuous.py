"""FFHQ 1024 NCSN++ (continuous): VE SDE, NCSN++ network, PC: reverse diffusion + Langevin."""

from configs.default_lsun_configs import get_default_configs


def get_config():
    config = get_default_configs()
    # The reference spelt this config out in full without eval.enable_sampling/enable_loss/enable_bpd/bpd_dataset,
    # so its evaluation could not start. Built here on the 256 px (LSUN) defaults, which supply those four fields
    # (and beta_min/beta_max, unused by the VE SDE); every field the reference set keeps its value.

    training = config.training
    training.sde = "vesde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 8

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.15

    data = config.data
    data.dataset = "FFHQ"
    data.image_size = 1024
    # the reference's own TFRecord file; this toolkit reads data.root
    data.tfrecords_path = "/raid/song/ffhq-dataset/ffhq/ffhq-r10.tfrecords"

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = True
    model.ema_rate = 0.9999
    model.num_scales = 2000
    model.sigma_min = 0.01
    model.sigma_max = 1348
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 16
    model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
    model.num_res_blocks = 1
    model.attn_resolutions = (16,)
    model.dropout = 0.0
    model.resamp_with_conv = True
    model.conditional = True
    model.resblock_type = "biggan"
    model.skip_rescale = True
    model.init_scale = 0.0
    model.attention_type = "ddpm"
    model.conv_size = 3
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    model.progressive_combine = "sum"
    model.embedding_type = "fourier"
    model.fourier_scale = 16

    optim = config.optim
    optim.amsgrad = False

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.batch_size = 1024

    return config

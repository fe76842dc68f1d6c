"""16x16 RGB patches of scikit-image's sample photos (256 levels), DDPM++ (continuous), VP SDE.

The DDPM++ settings of ``configs/vp/cifar10_ddpmpp_continuous.py`` (``ncsnpp`` network, positional time
embedding, BigGAN residual blocks, no FIR, no progressive paths) sized for ``(3, 16, 16)`` patches and a few
minutes of training on 2 CPU cores. The photos are first shrunk 4x (box filter), so a 16x16 patch shows a 64x64
region of the original; 300 patches per photo give 1500 training patches (5 photos) and 600 test patches (2
other photos: the split is by source photo, see ``data_lib.embedded.photo_patches``). Two resolutions, 16x16 and
8x8 (``ch_mult = (1, 2)``), attention at 8x8.
"""

import ml_collections

from configs.default_cifar10_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()

    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 32
    training.n_iters = 1000  # about 0.25 s per step on 2 CPU cores: 4 minutes
    training.log_freq = 100
    training.eval_freq = 250  # the loss of one test batch
    training.snapshot_freq = 1000  # one numbered checkpoint (checkpoint_1.pth) and sample grid, at the end
    training.snapshot_freq_for_preemption = 250  # checkpoints-meta: a re-run resumes from here
    training.snapshot_sampling = True

    sampling = config.sampling
    sampling.method = "fast"  # DPM-Solver (UniPC corrector) on the probability-flow ODE
    sampling.nfe = 20  # score evaluations per sample, the last one spent on Tweedie's denoiser (noise_removal)
    sampling.noise_removal = True

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 1
    evaluate.batch_size = 64
    evaluate.num_samples = 64
    evaluate.enable_sampling = True
    evaluate.enable_loss = True
    evaluate.enable_bpd = True
    evaluate.bpd_num_repeats = 1  # uniform dequantizations of the test split
    evaluate.after_training = True  # the train job ends with an evaluation of its last checkpoint
    # the probability-flow ODE of the likelihood (the reference: RK45, 1e-5, Rademacher probes)
    evaluate.hutchinson_type = "Rademacher"
    evaluate.likelihood_method = "dopri5"
    evaluate.likelihood_rtol = 1e-4
    evaluate.likelihood_atol = 1e-4
    evaluate.likelihood_eps = 1e-5

    data = config.data
    data.dataset = "photo_patches"
    data.image_size = 16  # patch side, in pixels of the shrunk photo
    data.num_channels = 3
    data.photo_downscale = 4  # shrink each photo 4x before cropping
    data.patches_per_image = 300  # crops per photo: 1500 train, 600 test
    data.seed = 0  # crop positions
    data.centered = True
    data.random_flip = True
    data.uniform_dequantization = False

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 32
    model.ch_mult = (1, 2)  # 16x16 and 8x8 feature maps
    model.num_res_blocks = 1
    model.attn_resolutions = (8,)
    model.resamp_with_conv = True
    model.conditional = True
    model.resblock_type = "biggan"
    model.skip_rescale = True
    model.init_scale = 0.0
    model.attention_type = "ddpm"
    model.conv_size = 3
    model.fir = False
    model.fir_kernel = [1, 3, 3, 1]
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.embedding_type = "positional"
    model.fourier_scale = 16
    model.dropout = 0.0

    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 200

    config.device = "cpu"
    return config

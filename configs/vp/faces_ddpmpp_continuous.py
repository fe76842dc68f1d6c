"""scikit-image's ``lfw_subset`` faces (25x25 greyscale, 256 levels), DDPM++ (continuous), VP SDE.

The DDPM++ settings of ``configs/vp/cifar10_ddpmpp_continuous.py`` (``ncsnpp`` network, positional time
embedding, BigGAN residual blocks, no FIR, no progressive paths) sized for ``(1, 25, 25)`` images and a few
minutes of training on 2 CPU cores. The dataset has one fixed resolution, 25x25, and no resizing: 25 is odd, so
the U-Net cannot down-sample (``image_size`` must be divisible by ``2^(len(ch_mult) - 1)``); the network works
at the full 25x25 resolution only (``ch_mult = (1,)``), with two residual blocks per side and self-attention at
25x25 (625 positions) for a global receptive field. There are only 80 training faces and 20 test faces
(``data_lib.embedded.faces``): batches of 16 and a short run; expect blurry faces, not fidelity.
"""

import ml_collections

from configs.default_cifar10_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()

    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 16  # 80 training faces: 5 steps per epoch
    training.n_iters = 1000  # about 0.3 s per step on 2 CPU cores: 5 minutes
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
    evaluate.batch_size = 64  # samples per round; the 20 test faces form one batch
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
    data.dataset = "faces"
    data.image_size = 25  # the only size the dataset has
    data.num_channels = 1
    data.centered = True
    data.random_flip = True  # faces are roughly left-right symmetric
    data.uniform_dequantization = False

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 32
    model.ch_mult = (1,)  # one resolution: 25 is odd, so no down-sampling is possible
    model.num_res_blocks = 2
    model.attn_resolutions = (25,)  # global mixing at the only resolution
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

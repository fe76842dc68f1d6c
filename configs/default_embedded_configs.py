"""Defaults of the embedded-data image experiments (digits, faces, photo patches): DDPM++ on the VP SDE, sized for a
CPU, trained, sampled and evaluated in one `main.py` job.

The network has the settings of ``configs/vp/cifar10_ddpmpp_continuous.py`` (``ncsnpp``, positional time
embedding, BigGAN residual blocks, no FIR, no progressive paths) with 32 channels; samples come from DPM-Solver
with 20 score evaluations. Each experiment file sets its data, batch size, length and the network's resolutions.
"""

import ml_collections

from configs.default_cifar10_configs import get_default_configs as get_cifar10_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = get_cifar10_defaults()

    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.log_freq = 100
    training.eval_freq = 250  # the loss of one test batch
    training.snapshot_freq_for_preemption = 250  # checkpoints-meta: a re-run resumes from here
    training.snapshot_sampling = True

    sampling = config.sampling
    sampling.method = "fast"  # DPM-Solver (UniPC corrector) on the probability-flow ODE
    sampling.nfe = 20  # score evaluations per sample, the last one spent on Tweedie's denoiser (noise_removal)
    sampling.noise_removal = True
    sampling.inpainting = "replacement"  # --mode inpaint: the replacement method ([SDE] I.2) or "smc" (SMCDiff)
    sampling.smc_particles = 16  # particles per image of "smc" inpainting

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
    data.centered = True
    data.uniform_dequantization = False

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 32
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

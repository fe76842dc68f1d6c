"""Defaults of the waveform experiments: procedural notes (``tones``, 2048 samples at 8 kHz) and the 1-D score
network ``wavegrad`` (:mod:`models.wavegrad`) on the VP SDE in continuous time, sized to train in minutes on a CPU.

The sections and field names are those of the 2021 reference's configs. Waveforms are continuous values in
``[-1, 1]``: ``data.centered`` stays False (the data scaler is the identity) and the likelihood, when enabled, is
reported in nats per example (not bits/dim: there are no quantization levels).

The network is read through EDM's preconditioning on the VP SDE (``model.parameterization = 'edm'``, Karras et al.
2022: ``D = c_skip x + c_out F(c_in x)``), trained with EDM's loss. In the reference's noise parameterization the
network must return ``eps = x`` almost exactly at high noise: a prior draw of 4 standard deviations whose noise it
underestimates by a few percent grows along the probability-flow ODE into a click, the broadband bursts of
``benchmarks/results/wavegrad_tones.txt``; the skip path ``c_skip x`` carries ``x`` itself and bounds the error of
``D`` by ``sigma_data``. ``sigma_data = 0.25`` is the notes' standard deviation and the loss's ``p_mean`` EDM's -1.2
moved by ``ln(0.25 / 0.5)``, the same noise levels relative to the data's scale.
"""

import ml_collections

from configs.toolkit_fields import add_toolkit_fields


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.batch_size = 32
    training.n_iters = 4000
    training.snapshot_freq = 4000  # one numbered checkpoint and sample folder, at the end
    training.p_mean = -1.9  # EDM's loss: ln(sigma) ~ N(p_mean, p_std^2), EDM's -1.2 for sigma_data 0.5, scaled
    training.p_std = 1.2
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq_for_preemption = 250
    training.snapshot_sampling = True

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "fast"  # DPM-Solver with the UniPC corrector on the probability-flow ODE
    sampling.nfe = 25
    sampling.noise_removal = True
    sampling.clip_denoised = True  # waveforms lie in [-1, 1]: so does the exact denoised estimate
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "none"
    sampling.n_steps_each = 1
    sampling.probability_flow = False
    sampling.snr = 0.16

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 1
    evaluate.batch_size = 100
    evaluate.num_samples = 200  # as many as the test split: the sample metrics compare the two sets
    evaluate.enable_sampling = True
    evaluate.enable_loss = True
    evaluate.enable_bpd = False  # 2048 dimensions: a Hutchinson likelihood costs minutes; enable it to get nats
    evaluate.bpd_dataset = "test"
    evaluate.after_training = True
    evaluate.hutchinson_type = "Rademacher"
    evaluate.likelihood_method = "dopri5"
    evaluate.likelihood_rtol = 1e-4
    evaluate.likelihood_atol = 1e-4

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "tones"
    data.sample_rate = 8000
    data.audio_length = 2048
    data.num_channels = 1  # mono
    data.num_train = 2000
    data.num_test = 200
    data.seed = 0
    data.centered = False  # already in [-1, 1]
    data.random_flip = False
    data.uniform_dequantization = False
    data.root = ""  # wav_folder: the folder of .wav files (the tones need none)

    config.model = model = ml_collections.ConfigDict()
    model.name = "wavegrad"
    model.nf = 64  # residual channels
    model.num_layers = 16  # two cycles of dilations
    model.dilation_cycle = 8  # dilations 1 .. 128 folded frames: a receptive field of the whole note
    model.fold = 8  # 8 samples per frame: the layers run at 1 kHz
    model.parameterization = "edm"  # EDM's preconditioning (module docstring)
    model.sigma_data = 0.25  # the notes' standard deviation
    model.embedding_type = "positional"
    model.embedding_dim = 64
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.dropout = 0.0
    model.sigma_min = 0.01
    model.sigma_max = 20.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0
    optim.optimizer = "Adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 200
    optim.grad_clip = 1.0

    config.seed = 42
    config.device = "cpu"
    return add_toolkit_fields(config)

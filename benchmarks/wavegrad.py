"""Sample quality of a trained waveform run against its test notes, by sampler and number of score evaluations.

    python benchmarks/wavegrad.py [--workdir runs/tones] [--samples 200] [--fast 6 12 25 50] [--pc 100 250]
                                  [--clip-denoised config|on|off]

The run is ``python main.py --config configs/vp/tones_wavegrad.py --workdir runs/tones --mode train``: its recorded
config and the EMA weights of its latest numbered checkpoint. For each sampler setting, ``--samples`` waveforms are
drawn (seeded, in batches of the run's ``eval.batch_size``) and compared with as many test waveforms
(:func:`sample_quality.audio_metrics`):

* ``log_spectrum_distance_db``: RMS over frequency of the difference of the average log-power spectra (dB);
* ``pitch_w1_semitones``: Wasserstein-1 distance between the distributions of estimated fundamental frequencies, in
  semitones; ``note_histogram_tv``: total variation between the histograms of the nearest notes;
* the same figures between as many *training* waveforms and the test set: the noise floor of finite sets.

Printed per setting: sampler, NFE, wall time, the three figures, and the floor once; ``uptime``'s load average.
``--clip-denoised on`` / ``off`` overrides the run's ``config.sampling.clip_denoised`` (the denoised estimate kept in
``[-1, 1]``, :func:`samplers.clip_denoised`).

A run conditioned on log-mel spectrograms (``configs/vp/tones_wavegrad_mel.py``) is a vocoder: each sample is drawn
for the spectrogram of test note ``i`` and compared with that note by its spectral convergence ``||S(x) - S(x_i)||_F
/ ||S(x_i)||_F`` (STFT magnitudes, :func:`models.mel.spectral_convergence`), printed as mean and standard error
beside the figures above.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages

import torch  # noqa: E402

import data_lib  # noqa: E402
from jobs.audio import sample_rate_of  # noqa: E402
from jobs.evaluation import latest_checkpoint, load_ema_weights  # noqa: E402
from jobs.experiment import build_experiment  # noqa: E402
from jobs.run_config import read_record  # noqa: E402
from jobs.signal_conditioned import conditioned_sampling_fn  # noqa: E402
from models.conditioning import condition_map_of  # noqa: E402
from models.mel import spectral_convergence  # noqa: E402
from sample_quality.audio import audio_metrics  # noqa: E402
from samplers.from_config import get_sampling_fn  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/tones", help="a trained tones run (config.json, checkpoints/)")
    parser.add_argument("--samples", type=int, default=200, help="waveforms per setting (and test / train waveforms)")
    parser.add_argument("--fast", type=int, nargs="*", default=[6, 12, 25, 50], help="NFE of the 'fast' sampler")
    parser.add_argument("--pc", type=int, nargs="*", default=[100], help="steps N of the PC sampler (no corrector)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-denoised", choices=("config", "on", "off"), default="config",
                        help="config.sampling.clip_denoised: the run's own setting, or on / off")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(label, config.sampling / model overrides) of every sampler setting asked for."""
    runs = [(f"fast nfe={n}", {"sampling.method": "fast", "sampling.nfe": n}) for n in args.fast]
    runs += [(f"pc N={n}", {"sampling.method": "pc", "sampling.predictor": "reverse_diffusion",
                            "sampling.corrector": "none", "model.num_scales": n}) for n in args.pc]
    return runs


def draw(exp, overrides: dict, count: int, seed: int, test: torch.Tensor) -> tuple[torch.Tensor, int, float]:
    """``count`` samples of the run's model with the sampler of ``overrides`` (a conditioned model: sample ``i`` for
    the signal of ``test[i]``): (samples, NFE per batch, seconds)."""
    config = exp.config.copy_and_resolve_references()
    with config.unlocked():
        for field, value in overrides.items():
            section, name = field.split(".")
            config[section][name] = value
    sde = exp.sde if "model.num_scales" not in overrides else type(exp.sde).from_config(config)
    batch = int(config.eval.batch_size)
    out, nfe, start = [], 0, time.perf_counter()
    for index, first in enumerate(range(0, count, batch)):
        size = min(batch, count - first)
        if condition_map_of(exp.model) is not None:
            sample = conditioned_sampling_fn(config, sde, exp.model, exp.scaler(test[first : first + size]),
                                             exp.inverse_scaler, exp.sampling_eps)
        else:
            sample = get_sampling_fn(config, sde, (size, *exp.data_shape), exp.inverse_scaler, exp.sampling_eps)
        x, nfe = sample(exp.model, generator=torch.Generator().manual_seed(seed * 1000 + index))
        out.append(x)
    return torch.cat(out), nfe, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = read_record(args.workdir)
    if config is None:
        raise SystemExit(f"{args.workdir} holds no config.json: train it first (python main.py --config "
                         "configs/vp/tones_wavegrad.py --workdir runs/tones --mode train)")
    if args.clip_denoised != "config":
        with config.unlocked():
            config.sampling.clip_denoised = args.clip_denoised == "on"
    exp = build_experiment(config, args.workdir, "eval")
    step = load_ema_weights(exp, latest_checkpoint(exp))
    rate = sample_rate_of(exp.config)
    count = min(args.samples, len(exp.test_ds))
    test = exp.test_ds.gather(torch.arange(count))
    train = data_lib.get_dataset(exp.config, "train").gather(torch.arange(count))
    clip = bool(exp.config.sampling.get("clip_denoised", False))
    print(f"run {args.workdir} (step {step}), {count} samples per setting vs {count} test notes, "
          f"{rate} Hz x {exp.data_shape[-1]} samples, {args.threads} threads, clip_denoised {clip}")
    floor = audio_metrics(train, test, None, rate)
    conditioned = condition_map_of(exp.model) is not None
    header = f"{'sampler':<14} {'NFE':>5} {'wall s':>8} {'logspec dB':>11} {'pitch W1 st':>12} {'note TV':>8}"
    header += "  spectral convergence" if conditioned else ""
    print(header)
    print(f"{'train vs test':<14} {'-':>5} {'-':>8} {floor['log_spectrum_distance_db']:>11.3f} "
          f"{floor['pitch_w1_semitones']:>12.3f} {floor['note_histogram_tv']:>8.3f}   (noise floor)")
    with torch.no_grad():
        for label, overrides in settings(args):
            samples, nfe, seconds = draw(exp, overrides, count, args.seed, test)
            m = audio_metrics(samples, test, None, rate)
            line = (f"{label:<14} {nfe:>5} {seconds:>8.1f} {m['log_spectrum_distance_db']:>11.3f} "
                    f"{m['pitch_w1_semitones']:>12.3f} {m['note_histogram_tv']:>8.3f}")
            if conditioned:
                sc = spectral_convergence(samples.cpu(), test)
                line += f"  {float(sc.mean()):.3f} +- {float(sc.std() / len(sc) ** 0.5):.3f}"
            print(line, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} cores (uptime)")


if __name__ == "__main__":
    main()

"""Sampling benchmark: every sampler family on data with an exact score, so the error is the sampler's alone.

For the 2-D 8-Gaussian ring (``GaussianMixture.ring()``, mode std 0.3) under VP, sub-VP and VE it prints, per
sampler: NFE, wall time, the mean log-density of the samples under the true density (with its difference from
fresh data in standard errors), the sliced Wasserstein distance to fresh data (with the null value of two fresh data
sets of the same size), and the within-mode variance error. The within-mode variance is E||x - mu_k(x)||^2 / D over
samples, with mu_k the mode of highest responsibility, relative to the true mode variance (its sampling standard error
is printed). PC uses the reference's Langevin corrector (``langevin``) and ``ald``, whose step depends on ``t`` only.
``--gaussian`` adds a 3x32x32 Gaussian, where the variance error is the mean per-coordinate sample
variance relative to the true one.

``--networks`` times sampling with score networks instead (``ddpmpp_vp``, ``ncsnpp_ve``: the full-size CIFAR-10
DDPM++ and NCSN++ of ``configs/{vp,ve}/cifar10_*_continuous.py``; ``digits_ddpmpp``), with random weights of unit
scale (the time of a sample does not depend on the weights), at ``--batch`` images per batch: DPM-Solver
(``fast_sample``) with ``--nfe`` evaluations and the reference's PC sampler (reverse diffusion + Langevin) with
``--pc-steps`` steps (2 evaluations each). Per row: NFE, wall seconds of one batch, images/s, evaluations x images/s,
and on CUDA the peak memory (``torch.cuda.max_memory_allocated``). ``--bf16`` autocasts the network to bfloat16;
``--compile`` compiles it (:func:`models.compiled.compile_network`). One untimed score evaluation of a batch comes
first, its time printed apart (with ``--compile``: the compilation). ``--device`` is where the networks run; the exact-score rows run on the CPU (``--skip-exact`` leaves
them out).

    python benchmarks/sampling.py [--n 20000] [--threads 2] [--seed 0] [--gaussian] [--device auto|cpu|cuda]
                                  [--networks ddpmpp_vp ncsnpp_ve digits_ddpmpp] [--batch 128] [--nfe 20]
                                  [--pc-steps 100] [--bf16] [--compile [MODE]] [--skip-exact]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages

import models  # noqa: E402
import sde_lib  # noqa: E402
from benchmarks.training import resolve_device  # noqa: E402
from configs import load_config  # noqa: E402
from models.compiled import COMPILE_MODES, compile_network  # noqa: E402
from sample_quality import sliced_wasserstein  # noqa: E402
from samplers import adaptive_sde_sample, fast_sample, ode_sample, pc_sample, sde_sample  # noqa: E402

NETWORKS = {
    "ddpmpp_vp": ROOT / "configs" / "vp" / "cifar10_ddpmpp_continuous.py",
    "ncsnpp_ve": ROOT / "configs" / "ve" / "cifar10_ncsnpp_continuous.py",
    "digits_ddpmpp": ROOT / "configs" / "vp" / "digits_ddpmpp_continuous.py",
}

Sampler = Callable[..., tuple[torch.Tensor, int]]


def sampler_table() -> list[tuple[str, Sampler]]:
    """(label, fn(sde, score_fn, shape, generator) -> (x, nfe)) for each configuration benchmarked."""
    return [
        ("PC rd+langevin 1000", lambda s, f, sh, g: pc_sample(s, f, sh, generator=g)),
        ("PC rd+ald 1000", lambda s, f, sh, g: pc_sample(s, f, sh, corrector="ald", generator=g)),
        ("PC rd 1000 (no corr.)", lambda s, f, sh, g: pc_sample(s, f, sh, corrector="none", generator=g)),
        ("ODE RK45 1e-5 (scipy)", lambda s, f, sh, g: ode_sample(s, f, sh, method="RK45", generator=g)),
        ("ODE dopri5 1e-5", lambda s, f, sh, g: ode_sample(s, f, sh, method="dopri5", generator=g)),
        ("torchsde euler dt=1e-3", lambda s, f, sh, g: sde_sample(s, f, sh, method="euler", dt=1e-3, generator=g)),
        ("torchsde srk dt=1e-2", lambda s, f, sh, g: sde_sample(s, f, sh, method="srk", dt=1e-2, generator=g)),
        ("torchsde milstein dt=1e-3", lambda s, f, sh, g: sde_sample(s, f, sh, method="milstein", dt=1e-3, generator=g)),
        ("torchsde heun dt=1e-2", lambda s, f, sh, g: sde_sample(s, f, sh, method="heun", dt=1e-2, generator=g)),
        ("torchsde euler adapt.1e-3", lambda s, f, sh, g: sde_sample(s, f, sh, method="euler", adaptive=True, rtol=1e-3, atol=1e-3, generator=g)),
        ("adaptive SDE (GGF)", lambda s, f, sh, g: adaptive_sde_sample(s, f, sh, generator=g)),
        ("fast nfe=10", lambda s, f, sh, g: fast_sample(s, f, sh, nfe=10, generator=g)),
        ("fast nfe=20", lambda s, f, sh, g: fast_sample(s, f, sh, nfe=20, generator=g)),
        ("fast nfe=50", lambda s, f, sh, g: fast_sample(s, f, sh, nfe=50, generator=g)),
    ]


def within_mode_variance_error(data: sde_lib.GaussianMixture, x: torch.Tensor) -> tuple[float, float]:
    """(relative error of the within-mode variance, its standard error) for samples ``x`` of the ring."""
    x = x.to(torch.float64)
    means = data.means
    nearest = torch.cdist(x, means).argmin(dim=1)
    per_sample = (x - means[nearest]).square().sum(1) / x.shape[1] / data.variances[0, 0]
    return float(per_sample.mean() - 1.0), float(per_sample.std() / math.sqrt(len(per_sample)))


def ring_rows(sde_name: str, sde: sde_lib.SDE, n: int, seed: int) -> None:
    data = sde_lib.GaussianMixture.ring()
    score = data.score_fn(sde)
    gen = torch.Generator().manual_seed(seed + 1000)
    fresh, fresh2 = data.sample(n, generator=gen), data.sample(n, generator=gen)
    directions = lambda: torch.Generator().manual_seed(seed + 7)  # noqa: E731 - same projections for every row
    logp_fresh = data.log_prob(fresh2)
    se_logp = float(logp_fresh.std() / math.sqrt(n)) * math.sqrt(2)  # SE of a difference of two means
    # the SW null: fresh data sets of the same size against the same reference set
    null = torch.stack([sliced_wasserstein(data.sample(n, generator=gen), fresh, num_projections=128, generator=directions()) for _ in range(5)])
    var_err, var_se = within_mode_variance_error(data, fresh2)
    print(f"\n{sde_name}: n={n}; fresh data: mean log p = {float(logp_fresh.mean()):.4f}, "
          f"SW null = {float(null.mean()):.4f} +- {float(null.std()):.4f}, "
          f"variance error = {100 * var_err:+.2f}% (SE {100 * var_se:.2f}%)")
    print(f"{'sampler':27s} {'NFE':>6s} {'wall s':>8s} {'mean log p':>10s} {'dlogp/SE':>9s} {'SW':>7s} {'var err %':>9s}")
    for label, fn in sampler_table():
        start = time.perf_counter()
        x, nfe = fn(sde, score, (n, 2), torch.Generator().manual_seed(seed))
        wall = time.perf_counter() - start
        logp = data.log_prob(x.to(torch.float64))
        sw = float(sliced_wasserstein(x, fresh, num_projections=128, generator=directions()))
        err, _ = within_mode_variance_error(data, x)
        z = (float(logp.mean()) - float(logp_fresh.mean())) / se_logp
        print(f"{label:27s} {nfe:6d} {wall:8.2f} {float(logp.mean()):10.4f} {z:9.2f} {sw:7.4f} {100 * err:+9.2f}")


def gaussian_rows(sde_name: str, sde: sde_lib.SDE, n: int, seed: int) -> None:
    shape = (3, 32, 32)
    data = sde_lib.GaussianMixture.gaussian(torch.zeros(shape), 0.25)
    score = data.score_fn(sde)
    rel_se = math.sqrt(2.0 / (n - 1) / math.prod(shape))
    print(f"\n{sde_name}, Gaussian N(0, 0.25 I) on 3x32x32, n={n} (variance SE {100 * rel_se:.2f}%)")
    print(f"{'sampler':27s} {'NFE':>6s} {'wall s':>8s} {'var err %':>9s}")
    for label, fn in sampler_table():
        if label.startswith("torchsde") or label.startswith("ODE RK45"):
            continue  # scipy and torchsde paths are benchmarked on the ring; too slow for this size on a laptop CPU
        start = time.perf_counter()
        x, nfe = fn(sde, score, (n, *shape), torch.Generator().manual_seed(seed))
        wall = time.perf_counter() - start
        err = float(x.to(torch.float64).var(dim=0).mean() / 0.25 - 1.0)
        print(f"{label:27s} {nfe:6d} {wall:8.2f} {100 * err:+9.2f}")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rows(key: str, args: argparse.Namespace, device: torch.device) -> None:
    """Sampling time, images/s and peak memory of the network ``key`` (module docstring)."""
    config = load_config(NETWORKS[key])
    config.device = str(device)
    config.model.num_scales = args.pc_steps  # the PC sampler's steps: N of the SDE's discretization
    sde = sde_lib.get_sde(config)
    torch.manual_seed(args.seed)
    network = models.create_model(config).eval()
    with torch.no_grad():  # weights of unit scale: the configs' init_scale 0 makes the output ~0, a trivial sample
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if args.compile != "none":
        network = compile_network(network, args.compile)
    # full precision unless --bf16: the network's own call, with no precision default of the config
    score_model = models.ScoreModel(network, sde, models.parameterization_from_config(config, sde))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast():
            return score_model.score(x, t)

    shape = (args.batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    eps = sde.sampling_eps
    samplers = {
        f"fast nfe={args.nfe}": lambda g: fast_sample(sde, score_fn, shape, nfe=args.nfe, eps=eps, generator=g),
        f"PC rd+langevin {args.pc_steps}": lambda g: pc_sample(sde, score_fn, shape, eps=eps, generator=g, device=device),
    }
    # one score evaluation of a batch, as the samplers make them, untimed: compilation, one-time kernel set-up
    start = time.perf_counter()
    with torch.no_grad():
        score_fn(torch.randn(shape, device=device), torch.full((args.batch,), 0.5, device=device))
    _synchronize(device)
    first_s = time.perf_counter() - start
    params = sum(p.numel() for p in network.parameters())
    precision = "bf16 autocast" if args.bf16 else "float32"
    compiled = f"torch.compile {args.compile!r}" if args.compile != "none" else "eager"
    compiled += f", first evaluation (untimed) {first_s:.1f} s"
    print(f"\n{key}: {NETWORKS[key].relative_to(ROOT)}, {params:,} parameters, batch {args.batch}, {precision}, "
          f"{compiled}, {device}")
    print(f"{'sampler':24s} {'NFE':>6s} {'wall s':>8s} {'images/s':>9s} {'NFE*img/s':>10s} {'peak MiB':>9s}")
    for label, sample in samplers.items():
        generator = torch.Generator(device).manual_seed(args.seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():  # as the jobs sample
            x, nfe = sample(generator)
        _synchronize(device)
        wall = time.perf_counter() - start
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:9.0f}" if device.type == "cuda" else f"{'-':>9s}"
        finite = "" if bool(torch.isfinite(x).all()) else "  (non-finite samples)"
        print(f"{label:24s} {nfe:6d} {wall:8.2f} {args.batch / wall:9.2f} {nfe * args.batch / wall:10.1f} {peak}{finite}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per sampler on the ring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gaussian", action="store_true", help="also run the 3x32x32 Gaussian")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the samplers run (auto: CUDA when present)")
    parser.add_argument("--skip-exact", action="store_true", help="leave out the exact-score rows")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=[],
                        help="also time sampling with these score networks")
    parser.add_argument("--batch", type=int, default=128, help="--networks: images per batch")
    parser.add_argument("--nfe", type=int, default=20, help="--networks: evaluations of the fast sampler")
    parser.add_argument("--pc-steps", type=int, default=100, help="--networks: steps of the PC sampler")
    parser.add_argument("--bf16", action="store_true", help="--networks: bfloat16 autocast of the network")
    parser.add_argument("--compile", nargs="?", const="default", default="none", choices=COMPILE_MODES,
                        help="--networks: torch.compile the network (mode; 'default' when given bare)")
    args = parser.parse_args()
    for name in ("n", "threads", "batch", "nfe", "pc_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {name}; load average {os.getloadavg()[0]:.2f}")
    if not args.skip_exact:
        sdes = {"VP": sde_lib.VPSDE(), "sub-VP": sde_lib.subVPSDE(), "VE": sde_lib.VESDE()}
        print("exact score, float32, on the CPU")
        for name, sde in sdes.items():
            ring_rows(name, sde, args.n, args.seed)
        if args.gaussian:
            for name, sde in sdes.items():
                gaussian_rows(name, sde, 256, args.seed)
    for key in args.networks:
        network_rows(key, args, device)
    if args.networks:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nprocess peak resident memory: {rss:.0f} MiB; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

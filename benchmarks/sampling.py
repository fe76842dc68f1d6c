"""Sampling benchmark: every sampler family on data with an exact score, so the error is the sampler's alone.

For the 2-D 8-Gaussian ring (``GaussianMixture.ring()``, mode std 0.3) under VP, sub-VP and VE it prints, per
sampler: NFE, wall time, the mean log-density of the samples under the true density (with its difference from
fresh data in standard errors), the sliced Wasserstein distance to fresh data (with the null value of two fresh data
sets of the same size), and the within-mode variance error. The within-mode variance is E||x - mu_k(x)||^2 / D over
samples, with mu_k the mode of highest responsibility, relative to the true mode variance (its sampling standard error
is printed). PC uses the reference's Langevin corrector (``langevin``) and ``ald``, whose step depends on ``t`` only.
``--gaussian`` adds a 3x32x32 Gaussian, where the variance error is the mean per-coordinate sample
variance relative to the true one.

    python benchmarks/sampling.py [--n 20000] [--threads 2] [--seed 0] [--gaussian]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch

import sde_lib
from sample_quality import sliced_wasserstein
from samplers import adaptive_sde_sample, fast_sample, ode_sample, pc_sample, sde_sample

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per sampler on the ring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gaussian", action="store_true", help="also run the 3x32x32 Gaussian")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sdes = {"VP": sde_lib.VPSDE(), "sub-VP": sde_lib.subVPSDE(), "VE": sde_lib.VESDE()}
    print(f"torch {torch.__version__}, {args.threads} threads, exact score, float32")
    for name, sde in sdes.items():
        ring_rows(name, sde, args.n, args.seed)
    if args.gaussian:
        for name, sde in sdes.items():
            gaussian_rows(name, sde, 256, args.seed)


if __name__ == "__main__":
    main()

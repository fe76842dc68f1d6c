"""PC correctors on 2-D Gaussian mixtures with the exact score: within-mode variance, strays and mode weights.

Reverse diffusion with each registered Langevin corrector (``langevin``: the reference's batch-averaged step;
``ald``: a step that depends on ``t`` only) and without one, ``snr = 0.16``, one corrector step, ``N = 1000``, on

* the 8-Gaussian ring (``GaussianMixture.ring()``, mode std 0.3), ``--seeds`` runs of ``--n`` samples: the relative
  within-mode variance error ``E||x - mu_k||^2 / (D v_k) - 1`` (``k`` the most probable component), its mean over the
  runs and the standard error of that mean from the spread between runs;
* a mixture of a heavy narrow mode beside light wide ones (weights 0.6 / 0.15 / 0.1 / 0.1 / 0.05, variances 0.01-1),
  one run: the same variance error, the mode weights and their chi^2 statistic against the true weights (4 degrees
  of freedom: 18.5 is the 0.999 quantile).

Both also report the fraction of samples more than 5 standard deviations (RMS over coordinates) from their mode.

    python benchmarks/correctors.py [--n 4000] [--seeds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import torch  # noqa: E402

import sde_lib  # noqa: E402
from samplers import pc_sample  # noqa: E402

CORRECTORS = ("langevin", "ald", "none")


def make_sdes() -> dict[str, sde_lib.LinearSDE]:
    """VP, sub-VP and VE with N = 1000; VE with sigma_max = 20, above the largest distance between modes."""
    return {"VP": sde_lib.VPSDE(N=1000), "subVP": sde_lib.subVPSDE(N=1000), "VE": sde_lib.VESDE(sigma_min=0.01, sigma_max=20.0, N=1000)}


def statistics(data: sde_lib.GaussianMixture, sde: sde_lib.LinearSDE, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(relative within-mode variance error, fraction beyond 5 std, fraction of samples per mode)."""
    x = x.double()
    k = data.component_log_posterior_fn(sde)(x, torch.zeros(len(x), dtype=x.dtype)).argmax(dim=1)
    z2 = ((x - data.means[k]).square() / data.variances[k]).mean(dim=1)
    weights = torch.bincount(k, minlength=data.num_components).double() / len(x)
    return float(z2.mean() - 1.0), float((z2 > 25.0).double().mean()), weights


def sample(sde: sde_lib.LinearSDE, data: sde_lib.GaussianMixture, corrector: str, n: int, seed: int) -> torch.Tensor:
    return pc_sample(sde, data.score_fn(sde), (n, 2), corrector=corrector, generator=torch.Generator().manual_seed(seed))[0]


def ring_rows(sdes: dict[str, sde_lib.LinearSDE], n: int, seeds: int) -> None:
    data = sde_lib.GaussianMixture.ring()
    print(f"\nring, {seeds} runs of {n} samples: within-mode variance error (mean +- SE over runs), fraction beyond 5 std")
    for name, sde in sdes.items():
        for corrector in CORRECTORS:
            start = time.perf_counter()
            runs = [statistics(data, sde, sample(sde, data, corrector, n, seed)) for seed in range(seeds)]
            errors = torch.tensor([r[0] for r in runs])
            strays = sum(r[1] for r in runs) / seeds
            se = float(errors.std() / math.sqrt(seeds)) if seeds > 1 else float("nan")
            print(f"  {name:6s} {corrector:9s} NFE {2000 if corrector != 'none' else 1000:5d}  variance error "
                  f"{100 * float(errors.mean()):+6.2f}% +- {100 * se:.2f}  beyond 5 std {100 * strays:.2f}%  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)


def uneven_rows(sdes: dict[str, sde_lib.LinearSDE], n: int) -> None:
    data = sde_lib.GaussianMixture.uneven()
    print(f"\nuneven mixture, {n} samples; true weights {[round(w, 3) for w in data.weights.tolist()]}")
    for name, sde in sdes.items():
        for corrector in CORRECTORS:
            error, strays, weights = statistics(data, sde, sample(sde, data, corrector, n, seed=0))
            expected = data.weights * n
            chi2 = float(((weights * n - expected).square() / expected).sum())
            print(f"  {name:6s} {corrector:9s} variance error {100 * error:+6.2f}%  beyond 5 std {100 * strays:.2f}%  "
                  f"weights {[round(w, 3) for w in weights.tolist()]}  chi2 {chi2:6.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, exact score; load average "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    sdes = make_sdes()
    ring_rows(sdes, args.n, args.seeds)
    uneven_rows(sdes, args.n)
    print("\nload average " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

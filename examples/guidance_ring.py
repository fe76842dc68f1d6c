"""Classifier guidance and classifier-free guidance on a labelled 2-D mixture, with exact scores: no training.

    python examples/guidance_ring.py --out docs/images/guidance.png

The data are the 8 components of ``GaussianMixture.ring()`` (radius 4, std 0.3), the label of a point its
component. Under the VP SDE the perturbed mixture has an exact score, an exact noise-conditional classifier
``log p_t(y | x)`` (:meth:`GaussianMixture.component_log_posterior_fn`) and exact label-conditional scores
(:meth:`GaussianMixture.component_score_fn`), so each panel shows what a guidance rule does, free of model error.
Panels (reverse-diffusion predictor, ``N = 500`` steps, no corrector; the same prior draw in every panel):
unconditional; classifier guidance to component 0 with scale 1 (Bayes' rule: the conditional ``p(x | y = 0)``) and
4 (``p(x) p(y = 0 | x)^4``); classifier-free guidance with ``w = 0`` (the conditional score) and ``w = 3``. Each
title gives the fraction of samples nearest to component 0 and their standard deviation (per coordinate, averaged;
the component's is 0.3). A few seconds on one CPU core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from samplers.controllable import cfg_score_fn, guided_score_fn
from samplers.pc import pc_sample
from sde_lib import VPSDE, GaussianMixture

TARGET = 0  # the component (label) the guided panels ask for


def panels(num_samples: int = 2000, num_steps: int = 500, seed: int = 0) -> dict[str, tuple[Tensor, int]]:
    """``{title: (samples (num_samples, 2), nfe)}`` for the five panels (module docstring), float64."""
    mixture, sde = GaussianMixture.ring(), VPSDE(N=num_steps)
    score = mixture.score_fn(sde)
    classifier = mixture.component_log_posterior_fn(sde)
    conditional = mixture.component_score_fn(sde)
    rules = {
        "unconditional": score,
        "classifier guidance, scale 1": guided_score_fn(score, classifier, TARGET, scale=1.0),
        "classifier guidance, scale 4": guided_score_fn(score, classifier, TARGET, scale=4.0),
        "classifier-free, w = 0": cfg_score_fn(conditional, None, TARGET, guidance_scale=0.0),
        "classifier-free, w = 3": cfg_score_fn(conditional, None, TARGET, guidance_scale=3.0),
    }
    results = {}
    for title, score_fn in rules.items():
        generator = torch.Generator().manual_seed(seed)
        results[title] = pc_sample(sde, score_fn, (num_samples, 2), corrector="none", generator=generator,
                                   dtype=torch.float64)
    return results


def fraction_in_component(samples: Tensor, k: int = TARGET) -> float:
    """The fraction of ``samples`` whose nearest component mean of the ring is that of component ``k``."""
    means = GaussianMixture.ring().means.to(samples)
    return float((torch.cdist(samples, means).argmin(dim=1) == k).double().mean())


def draw(results: dict[str, tuple[Tensor, int]], out: str | Path) -> Path:
    """One row of square scatter plots, one per panel, on common axes; written as a PNG to ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = GaussianMixture.ring().means
    figure = Figure(figsize=(3.0 * len(results), 3.4), dpi=100)
    FigureCanvasAgg(figure)
    for index, (title, (samples, nfe)) in enumerate(results.items()):
        axes = figure.add_subplot(1, len(results), index + 1)
        xy = samples.numpy()
        axes.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.5, linewidths=0)
        axes.scatter(means[:, 0], means[:, 1], s=12, marker="x", color="black", linewidths=0.8)
        axes.annotate("y = 0", means[TARGET].tolist(), xytext=(-10, 8), textcoords="offset points", fontsize=8)
        axes.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", xticks=[], yticks=[])
        std = samples.std(dim=0).mean()
        axes.set_title(f"{title}\n{fraction_in_component(samples):.0%} nearest y = 0, std {std:.2f}, NFE {nfe}", fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.85, wspace=0.05)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="guidance.png", help="PNG file to write")
    parser.add_argument("--samples", type=int, default=2000, help="points per panel")
    parser.add_argument("--steps", type=int, default=500, help="reverse-diffusion steps N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draw and the noise")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = panels(args.samples, args.steps, args.seed)
    for title, (samples, nfe) in results.items():
        print(f"{title}: {fraction_in_component(samples):.3f} of {len(samples)} samples nearest y = {TARGET}, NFE {nfe}")
    print(f"picture {draw(results, args.out)}")


if __name__ == "__main__":
    main()

"""Seeded 2-D toy densities: ``checkerboard``, ``moons``, ``swissroll``, ``8gaussians``, ``rings``, ``pinwheel``.

These are the usual benchmark densities of the FFJORD / score-matching literature, defined here precisely so
that tests can compare samples with exact statistics:

* ``8gaussians``: ``sde_lib.GaussianMixture.ring()``, 8 equal-weight Gaussians with means at radius 4 on the
  angles ``2 pi k / 8`` and standard deviation 0.3 per coordinate (the mixture the sampler tests use).
  Exact density.
* ``checkerboard``: uniform on the 8 squares ``[2i - 4, 2i - 2) x [2j - 4, 2j - 2)`` with ``i + j`` even of a
  4 x 4 board on ``[-4, 4]^2`` (density ``1/32`` there, 0 elsewhere). Exact density.
* ``rings``: 4 equally likely circles of radii 1, 2, 3, 4, the angle uniform, plus isotropic Gaussian noise of
  standard deviation 0.1. Exact density: a circle of radius ``R`` blurred by ``N(0, s^2 I)`` has
  ``p(x) = exp(-(|x|^2 + R^2) / (2 s^2)) I_0(|x| R / s^2) / (2 pi s^2)`` (integrate the Gaussian over the angle).
* ``moons``: two interleaved half circles (scikit-learn's ``make_moons`` layout, angle uniform on ``[0, pi]``,
  noise 0.1), centred at the origin and scaled by 2 (final noise 0.2). The two moons are mirror images through
  the origin, so the mean is exactly 0. No closed-form density.
* ``swissroll``: ``t = 1.5 pi (1 + 2 u)``, ``u ~ U[0, 1]``, the point ``(t cos t, t sin t) / 5`` plus noise of
  standard deviation 0.2 (FFJORD's scaling of ``make_swiss_roll(noise=1)``). No closed-form density.
* ``pinwheel``: 5 arms; radial and tangential Gaussian coordinates ``(1 + 0.3 a, 0.1 b)`` rotated by
  ``2 pi k / 5 + 0.25 exp(1 + 0.3 a)`` and scaled by 2 (FFJORD's definition). No closed-form density.

All samplers take a ``torch.Generator``, so the same seed gives the same points; they compute in float64 and
return float32 (or ``dtype``) on the generator's device.

Class labels (:func:`sample_toy_with_labels`, :data:`TOY_NUM_CLASSES`), for class-conditional generation: the
mixture component each point was drawn from, which is exact knowledge of the generative process: ``8gaussians``
the Gaussian (8 classes, the components of :func:`eight_gaussians`), ``checkerboard`` the square (8, in the
order of :func:`_checker_squares`), ``rings`` the circle (4, radii ascending), ``moons`` the moon (2: 0 the upper
one), ``pinwheel`` the arm (5). ``swissroll`` is one curve and has no classes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sde_lib import GaussianMixture
from base_lib.checks import check_positive_int

LogProb = Callable[[Tensor], Tensor]

#: rings: the radii of the (equally likely) circles and the noise standard deviation
RING_RADII = (1.0, 2.0, 3.0, 4.0)
RING_NOISE = 0.1
#: checkerboard: side of a square; the board covers [-2 * CHECKER_SIDE, 2 * CHECKER_SIDE]^2
CHECKER_SIDE = 2.0
#: moons: the noise added before centring and scaling, and the scale
MOONS_NOISE = 0.1
MOONS_SCALE = 2.0
#: swissroll: the divisor of FFJORD's roll and the final noise
SWISSROLL_DIVISOR = 5.0
SWISSROLL_NOISE = 0.2
#: pinwheel: arms, radial and tangential standard deviations, twist rate, scale
PINWHEEL_ARMS = 5
PINWHEEL_RADIAL_STD = 0.3
PINWHEEL_TANGENTIAL_STD = 0.1
PINWHEEL_RATE = 0.25
PINWHEEL_SCALE = 2.0


def eight_gaussians() -> GaussianMixture:
    """The ``8gaussians`` density: 8 Gaussians of std 0.3 at radius 4 (``GaussianMixture.ring()``)."""
    return GaussianMixture.ring(num_components=8, radius=4.0, std=0.3)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device, cols: int = 1) -> Tensor:
    return torch.rand((n, cols), generator=generator, device=device, dtype=torch.float64)


def _normal(n: int, generator: torch.Generator | None, device: torch.device, cols: int = 2) -> Tensor:
    return torch.randn((n, cols), generator=generator, device=device, dtype=torch.float64)


def _choice(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` indices drawn uniformly from ``{0, ..., k - 1}``."""
    return torch.randint(0, k, (n,), generator=generator, device=device)


def _checker_squares(device: torch.device) -> Tensor:
    """Lower-left corners ``(8, 2)`` of the board's squares with ``i + j`` even."""
    idx = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64, device=device)
    return CHECKER_SIDE * idx - 2 * CHECKER_SIDE


Labelled = tuple[Tensor, "Tensor | None"]  # points (n, 2) float64 and class labels (n,) int64 (None: no classes)


def _sample_checkerboard(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    corners = _checker_squares(device)
    square = _choice(n, len(corners), generator, device)
    return corners[square] + CHECKER_SIDE * _uniform(n, generator, device, 2), square


def _sample_rings(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    ring = _choice(n, len(RING_RADII), generator, device)
    radii = torch.tensor(RING_RADII, dtype=torch.float64, device=device)[ring]
    angle = 2 * math.pi * _uniform(n, generator, device)[:, 0]
    circle = radii[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return circle + RING_NOISE * _normal(n, generator, device), ring


def _sample_moons(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    angle = math.pi * _uniform(n, generator, device)[:, 0]
    upper = torch.stack([angle.cos() - 0.5, angle.sin() - 0.25], dim=1)  # the upper moon, shifted by the mean
    moon = _choice(n, 2, generator, device)  # 0: the upper moon; 1: the lower one, the upper one negated
    sign = 1.0 - 2.0 * moon.to(torch.float64)
    return MOONS_SCALE * (sign[:, None] * upper + MOONS_NOISE * _normal(n, generator, device)), moon


def _sample_swissroll(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, generator, device)[:, 0])
    roll = torch.stack([t * t.cos(), t * t.sin()], dim=1) / SWISSROLL_DIVISOR
    return roll + SWISSROLL_NOISE * _normal(n, generator, device), None


def _sample_pinwheel(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    features = _normal(n, generator, device) * torch.tensor([PINWHEEL_RADIAL_STD, PINWHEEL_TANGENTIAL_STD], dtype=torch.float64, device=device)
    features[:, 0] += 1.0
    arm = _choice(n, PINWHEEL_ARMS, generator, device)
    angle = 2 * math.pi * arm.to(torch.float64) / PINWHEEL_ARMS + PINWHEEL_RATE * torch.exp(features[:, 0])
    cos, sin = angle.cos(), angle.sin()
    rotated = torch.stack([cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]], dim=1)
    return PINWHEEL_SCALE * rotated, arm


def _sample_eight_gaussians(n: int, generator: torch.Generator | None, device: torch.device) -> Labelled:
    return eight_gaussians().sample_with_labels(n, generator=generator, device=device, dtype=torch.float64)


_SAMPLERS: dict[str, Callable[[int, torch.Generator | None, torch.device], Labelled]] = {
    "checkerboard": _sample_checkerboard,
    "moons": _sample_moons,
    "swissroll": _sample_swissroll,
    "8gaussians": _sample_eight_gaussians,
    "rings": _sample_rings,
    "pinwheel": _sample_pinwheel,
}

#: the names of the toy densities, as ``config.data.dataset`` values
TOY_DATASETS: tuple[str, ...] = tuple(_SAMPLERS)

#: the number of classes of each labelled toy density (module docstring); swissroll has none
TOY_NUM_CLASSES: dict[str, int] = {"checkerboard": 8, "moons": 2, "8gaussians": 8, "rings": len(RING_RADII), "pinwheel": PINWHEEL_ARMS}


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in _SAMPLERS:
        raise ValueError(f"unknown toy density {name!r}; known: {', '.join(TOY_DATASETS)}")
    return key


def sample_toy(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` i.i.d. points ``(n, 2)`` from the toy density ``name`` (see the module docstring), on ``device`` (default:
    the generator's). ``ValueError`` for an unknown name, listing the known ones."""
    return sample_toy_with_labels(name, n, generator, device, dtype)[0]


def sample_toy_with_labels(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor | None]:
    """:func:`sample_toy` and the class label ``(n,)`` int64 of each point (module docstring; ``None`` for
    ``swissroll``). The points are those :func:`sample_toy` draws from the same generator state."""
    key = _check_name(name)
    check_positive_int("n", n)
    device = torch.device(device) if device is not None else (generator.device if generator is not None else torch.device("cpu"))
    points, labels = _SAMPLERS[key](n, generator, device)
    return points.to(dtype), labels


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    """``log(1/32)`` on the dark squares, ``-inf`` elsewhere."""
    col = torch.floor((x[:, 0] + 2 * CHECKER_SIDE) / CHECKER_SIDE)
    row = torch.floor((x[:, 1] + 2 * CHECKER_SIDE) / CHECKER_SIDE)
    inside = (col >= 0) & (col < 4) & (row >= 0) & (row < 4) & ((col + row) % 2 == 0)
    log_density = -math.log(8 * CHECKER_SIDE**2)
    return torch.where(inside, torch.full_like(x[:, 0], log_density), torch.full_like(x[:, 0], -math.inf))


def _rings_log_prob(x: Tensor) -> Tensor:
    """``log sum_k w_k exp(-(r - R_k)^2 / (2 s^2)) i0e(r R_k / s^2) / (2 pi s^2)``, ``i0e(z) = exp(-z) I_0(z)``."""
    r = x.norm(dim=1, keepdim=True)  # (B, 1)
    radii = torch.tensor(RING_RADII, dtype=x.dtype, device=x.device)  # (K,)
    var = RING_NOISE**2
    log_terms = -(r - radii).square() / (2 * var) + torch.log(torch.special.i0e(r * radii / var)) - math.log(2 * math.pi * var)
    return torch.logsumexp(log_terms, dim=1) - math.log(len(RING_RADII))


def toy_classify(name: str, x: Tensor) -> Tensor | None:
    """The class ``(B,)`` int64 of points ``x`` ``(B, 2)`` by the geometry of the density, or ``None`` where there is
    no exact rule (``moons``, ``pinwheel``, ``swissroll``): for ``8gaussians`` the most probable component (equal
    weights and variances: the nearest mean, the Bayes classifier), for ``rings`` the nearest radius, for
    ``checkerboard`` the dark square holding the point (-1 outside every dark square)."""
    key = _check_name(name)
    x = x.detach().to(torch.float64)
    if key == "8gaussians":
        return torch.cdist(x, eight_gaussians().means.to(x)).argmin(dim=1)
    if key == "rings":
        return (x.norm(dim=1, keepdim=True) - torch.tensor(RING_RADII, dtype=x.dtype, device=x.device)).abs().argmin(dim=1)
    if key == "checkerboard":
        corners = _checker_squares(x.device)
        inside = ((x[:, None, :] >= corners) & (x[:, None, :] < corners + CHECKER_SIDE)).all(dim=2)  # (B, 8)
        return torch.where(inside.any(dim=1), inside.to(torch.int64).argmax(dim=1), torch.full_like(x[:, 0], -1, dtype=torch.int64))
    return None


def toy_gaussian_mixture(name: str) -> GaussianMixture | None:
    """The toy density as an :class:`sde_lib.GaussianMixture` (exact score under any SDE), or ``None`` if it is not one."""
    return eight_gaussians() if _check_name(name) == "8gaussians" else None


def toy_log_prob(name: str) -> LogProb | None:
    """The exact log-density ``log p(x)`` (``(B, 2) -> (B,)``) of the toy density, or ``None`` where it has no closed form
    (``moons``, ``swissroll``, ``pinwheel``)."""
    key = _check_name(name)
    if key == "8gaussians":
        return eight_gaussians().log_prob
    return {"checkerboard": _checkerboard_log_prob, "rings": _rings_log_prob}.get(key)

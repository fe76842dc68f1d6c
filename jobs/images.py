"""Saving samples: a PNG grid of images (Pillow / numpy) or a scatter plot of 2-D points (matplotlib), and ``.npz``.

torchvision's ``make_grid`` / ``save_image`` are not used (torchvision's wheels do not import beside the CPU torch
this project pins); :func:`image_grid` lays images out as they do: ``nrow`` images per row, ``padding`` pixels
of ``pad_value`` between and around them, values in ``[0, 1]`` quantized to 8 bits by ``floor(255 x + 0.5)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SCATTER_SIZE_INCHES = 5.0  # side of the square scatter plot
SCATTER_DPI = 100  # so the scatter PNG is 500 x 500 pixels


def to_uint8(images: Tensor) -> np.ndarray:
    """Images ``(N, C, H, W)`` with values in ``[0, 1]`` as uint8 ``(N, H, W, C)``: ``floor(255 x + 0.5)``, clipped;
    NaN becomes 0."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    x = torch.nan_to_num(images.detach().to("cpu", torch.float32), nan=0.0)
    return (x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile ``images`` ``(N, C, H, W)`` in ``[0, 1]`` (``C`` = 1 or 3) into one uint8 image ``(H', W', C)``.

    ``nrow`` images per row (default ``floor(sqrt(N))``, the reference's choice), ``ceil(N / nrow)`` rows, so
    ``H' = rows (H + padding) + padding`` and ``W' = nrow (W + padding) + padding`` (torchvision's layout).
    """
    n, channels, height, width = images.shape
    if channels not in (1, 3) or n < 1:
        raise ValueError(f"image_grid needs N >= 1 images with 1 or 3 channels, got shape {tuple(images.shape)}")
    columns = min(nrow if nrow is not None else max(int(math.isqrt(n)), 1), n)
    rows = math.ceil(n / columns)
    step_h, step_w = height + padding, width + padding
    grid = np.full((rows * step_h + padding, columns * step_w + padding, channels), pad_value, dtype=np.uint8)
    for index, image in enumerate(to_uint8(images)):
        row, col = divmod(index, columns)
        top, left = padding + row * step_h, padding + col * step_w
        grid[top : top + height, left : left + width] = image
    return grid


#: small images are enlarged (each pixel repeated) until a grid cell is at least this many pixels wide
MIN_CELL_PIXELS = 32


def grid_scale(image_size: int) -> int:
    """The whole-number enlargement of a grid of ``image_size`` images: ``ceil(MIN_CELL_PIXELS / image_size)``, at
    least 1 (8x8 digits are shown 4 times larger, 32x32 images as they are)."""
    return max(1, -(-MIN_CELL_PIXELS // image_size))


def save_image_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Write :func:`image_grid` as a PNG (greyscale for one channel, RGB for three), enlarged by
    :func:`grid_scale` with nearest-neighbour repetition so that small images stay visible."""
    from PIL import Image

    grid = image_grid(images, nrow=nrow, padding=padding)
    scale = grid_scale(max(images.shape[-2:]))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_scatter_plot(points: Tensor, path: str | os.PathLike, title: str | None = None, labels: Tensor | None = None) -> Path:
    """A square scatter plot (``SCATTER_SIZE_INCHES`` at ``SCATTER_DPI``) of the first two coordinates of ``points``
    ``(N, D)``, ``D >= 2``, on equal axes, each point coloured by its class in ``labels`` ``(N,)`` if given.
    Non-finite points are left out (and counted in the title)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if points.ndim != 2 or points.shape[1] < 2:
        raise ValueError(f"a scatter plot needs points of shape (N, D) with D >= 2, got {tuple(points.shape)}")
    xy = points.detach().to("cpu", torch.float64)[:, :2].numpy()
    finite = np.isfinite(xy).all(axis=1)
    figure = Figure(figsize=(SCATTER_SIZE_INCHES, SCATTER_SIZE_INCHES), dpi=SCATTER_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if labels is None:
        axes.scatter(xy[finite, 0], xy[finite, 1], s=4, alpha=0.6, linewidths=0)
    else:
        classes = labels.detach().to("cpu").numpy()
        if classes.shape != (len(xy),):
            raise ValueError(f"labels must have shape ({len(xy)},), one per point; got {classes.shape}")
        for k in np.unique(classes):
            chosen = finite & (classes == k)
            axes.scatter(xy[chosen, 0], xy[chosen, 1], s=4, alpha=0.6, linewidths=0, color=f"C{int(k) % 10}", label=f"class {int(k)}")
        axes.legend(loc="upper right", fontsize=7, markerscale=3)
    axes.set_aspect("equal", adjustable="datalim")
    dropped = int((~finite).sum())
    label = (title or "") + (f" ({dropped} non-finite points not shown)" if dropped else "")
    if label:
        axes.set_title(label, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=SCATTER_DPI)
    return path


def class_grid_columns(labels: Tensor | None) -> int | None:
    """Columns of a grid of class-conditional images: the number of classes when the labels cycle ``0, 1, ...,
    K - 1, 0, ...`` (one class per column), else the default layout (``None``)."""
    if labels is None:
        return None
    k = int(labels.max()) + 1
    cycling = torch.equal(labels.cpu(), torch.arange(len(labels)) % k)
    return k if cycling and k > 1 else None


def save_samples(samples: Tensor, folder: str | os.PathLike, title: str | None = None, labels: Tensor | None = None,
                 sample_rate: int | None = None) -> dict[str, Path]:
    """Write ``folder/sample.npz`` and ``folder/sample.png`` for samples in data space (after the inverse scaler).

    Images ``(N, C, H, W)``: ``samples`` in the npz is uint8 ``(N, H, W, C)`` (the reference's ``sample.np``
    layout) and the PNG is an :func:`image_grid`. Points ``(N, D)``: float32 ``(N, D)`` and a scatter plot.
    Class-conditional samples: their ``labels`` ``(N,)`` are saved too (``labels`` in the npz), the scatter plot
    colours each class and a grid of cycling labels shows one class per column.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png, npz = folder / "sample.png", folder / "sample.npz"
    extra = {} if labels is None else {"labels": labels.detach().to("cpu", torch.int64).numpy()}
    if samples.ndim == 4:
        np.savez_compressed(npz, samples=to_uint8(samples), **extra)
        save_image_grid(samples, png, nrow=class_grid_columns(labels))
    elif samples.ndim == 2:
        np.savez_compressed(npz, samples=samples.detach().to("cpu", torch.float32).numpy(), **extra)
        save_scatter_plot(samples, png, title=title, labels=labels)
    elif samples.ndim == 3:  # waveforms (N, 1, L): float32 in the npz, .wav files and spectrograms (jobs.audio)
        from .audio import DEFAULT_SAMPLE_RATE, save_waveforms

        np.savez_compressed(npz, samples=samples.detach().to("cpu", torch.float32).numpy(), **extra)
        save_waveforms(samples, png, sample_rate or DEFAULT_SAMPLE_RATE, title)
    else:
        raise ValueError(f"samples must be images (N, C, H, W), waveforms (N, 1, L) or points (N, D), got shape {tuple(samples.shape)}")
    return {"png": png, "npz": npz}

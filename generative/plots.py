"""Pictures the generative algorithms return from ``evaluate``/``sample`` (as ``lab.Image`` values)."""
from __future__ import annotations

import numpy as np
import torch

from lab.media import Image, image_grid


def samples_grid(images: torch.Tensor, nrow: int | None = None) -> Image:
    """Tile (N, C, H, W) images in [0, 1] into one picture."""
    return Image(image_grid(images.detach().float().clamp(0.0, 1.0).cpu(), nrow=nrow))


def enlarged(images: torch.Tensor, side: int = 32) -> torch.Tensor:
    """Images blown up by whole pixels (nearest neighbour) to at least ``side`` for viewing (8x8 -> 32x32)."""
    factor = -(-side // images.shape[-1])
    return images.repeat_interleave(factor, -1).repeat_interleave(factor, -2) if factor > 1 else images


def figure_image(figure) -> Image:
    """Render a matplotlib figure into an Image and close it."""
    import matplotlib.pyplot as plt
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return Image(pixels)


SCATTER_POINTS = 20_000
"""The most samples a scatter plot draws (the first ones): matplotlib holds far more per point than the
samples themselves, and a million points show no more than 20,000 do."""


def toy_scatter(samples: torch.Tensor, toy, title: str = "") -> Image:
    """Model samples (blue, the first ``SCATTER_POINTS``) over a large draw of the true distribution (grey)
    and its mode centres."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    reference = toy.sample(5000, torch.Generator().manual_seed(0)).numpy()
    points = samples[:SCATTER_POINTS].detach().float().cpu().numpy()
    figure, axis = plt.subplots(figsize=(4, 4), dpi=100)
    axis.scatter(reference[:, 0], reference[:, 1], s=2, c="0.75", label="data")
    axis.scatter(points[:, 0], points[:, 1], s=2, c="tab:blue", alpha=0.6, label="samples")
    if toy.centers is not None:
        axis.scatter(toy.centers[:, 0], toy.centers[:, 1], s=25, marker="x", c="tab:red", label="modes")
    low, high = reference.min(0) - 1.0, reference.max(0) + 1.0
    axis.set_xlim(low[0], high[0])
    axis.set_ylim(low[1], high[1])
    axis.set_aspect("equal")
    axis.set_title(title or toy.name, fontsize=9)
    legend = axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, fontsize=7, frameon=False)
    for handle in legend.legend_handles:
        handle.set_sizes([16])
    figure.tight_layout()
    return figure_image(figure)

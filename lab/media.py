"""Images and videos an algorithm returns in its metrics dict; the logger writes them to the run folder.

An algorithm never opens files: it returns ``{"samples/grid": Image(array)}`` from ``evaluate`` or
``sample`` and the trainer decides where that lands (``samples/``, ``videos/``, ``plots/``, TensorBoard).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def _to_uint8_hwc(array) -> np.ndarray:
    """Float in [0, 1] or uint8, HW / HWC / CHW -> uint8 HWC with 1, 3 or 4 channels."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


@dataclass
class Image:
    """One picture: an array HW, HWC or CHW, float in [0, 1] or uint8."""
    array: object

    def save(self, path: Path) -> Path:
        from PIL import Image as PILImage
        pixels = _to_uint8_hwc(self.array)
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
        path = path.with_suffix(".png")
        PILImage.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(path)
        return path


@dataclass
class Video:
    """A sequence of frames (T, H, W[, C]) as uint8 or float in [0, 1]; saved as MP4 when
    imageio-ffmpeg is installed (the ``atari`` extra), else as an animated GIF."""
    frames: object
    fps: int = 30

    def save(self, path: Path) -> Path:
        frames = [_to_uint8_hwc(f) for f in self.frames]
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (only checks that the MP4 writer is there)
            path = path.with_suffix(".mp4")
            imageio.mimwrite(path, [f if f.shape[-1] == 3 else np.repeat(f[..., :1], 3, -1) for f in frames],
                             fps=self.fps, macro_block_size=1)
        except ImportError:
            from PIL import Image as PILImage
            path = path.with_suffix(".gif")
            pil = [PILImage.fromarray(f[..., 0] if f.shape[-1] == 1 else f[..., :3]) for f in frames]
            pil[0].save(path, save_all=True, append_images=pil[1:], duration=max(1, round(1000 / self.fps)), loop=0)
        return path


def image_grid(images, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile N images (N, C, H, W) or (N, H, W) in [0, 1] into one (C, H', W') grid array."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = np.ones((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return grid


@dataclass
class Arrays:
    """Named arrays (for example raw samples and their labels), saved together as one ``.npz``."""
    arrays: dict

    def save(self, path: Path) -> Path:
        path = path.with_suffix(".npz")
        np.savez_compressed(path, **{k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                                     for k, v in self.arrays.items()})
        return path

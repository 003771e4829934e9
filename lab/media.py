"""Images and videos an algorithm returns in its metrics dict; the logger writes them to the run folder.

An algorithm never opens files: it returns ``{"samples/grid": Image(array)}`` from ``evaluate`` or
``sample`` and the trainer decides where that lands (``samples/``, ``videos/``, ``plots/``, TensorBoard).
"""
from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def to_uint8_hwc(array) -> np.ndarray:
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


READABLE_LONG_SIDE = 256    # px: smaller pictures are enlarged until their longer side reaches this
READABLE_SHORT_SIDE = 64    # px: ... and their shorter side this (a strip of small frames)


def readable_factor(height: int, width: int) -> int:
    """The integer enlargement that makes a picture readable (1 for pictures that already are)."""
    return max(1, -(-READABLE_LONG_SIDE // max(height, width)), -(-READABLE_SHORT_SIDE // min(height, width)))


def readable(pixels: np.ndarray) -> np.ndarray:
    """Enlarge a small uint8 HWC picture by ``readable_factor``, nearest neighbour (pixels stay sharp)."""
    factor = readable_factor(*pixels.shape[:2])
    return pixels.repeat(factor, 0).repeat(factor, 1) if factor > 1 else pixels


@dataclass
class Image:
    """One picture: an array HW, HWC or CHW, float in [0, 1] or uint8. Saved (and sent to TensorBoard)
    enlarged to a readable size when it is small (a grid of 8x8 digits is 73 px across)."""
    array: object

    def pixels(self) -> np.ndarray:
        """The picture as it is saved: uint8 HWC, enlarged by ``readable``."""
        return readable(to_uint8_hwc(self.array))

    def encode(self) -> tuple[str, bytes]:
        """(suffix, the file's bytes): a PNG."""
        from PIL import Image as PILImage
        pixels = self.pixels()
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
        out = io.BytesIO()
        PILImage.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(out, format="PNG")
        return ".png", out.getvalue()

    def save(self, path: Path) -> Path:
        """Write the PNG at ``path`` (a path the caller chose, outside any run folder)."""
        suffix, content = self.encode()
        path = Path(path).with_suffix(suffix)
        path.write_bytes(content)
        return path


@dataclass
class Video:
    """A sequence of frames (T, H, W[, C]) as uint8 or float in [0, 1]; saved as MP4 when
    imageio-ffmpeg is installed (the ``atari`` extra), else as an animated GIF."""
    frames: object
    fps: int = 30

    def encode(self) -> tuple[str, bytes]:
        """(suffix, the file's bytes): an MP4 (through a private temporary folder: ffmpeg writes to a path),
        else an animated GIF."""
        frames = [to_uint8_hwc(f) for f in self.frames]
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (only checks that the MP4 writer is there)
        except ImportError:
            from PIL import Image as PILImage
            pil = [PILImage.fromarray(f[..., 0] if f.shape[-1] == 1 else f[..., :3]) for f in frames]
            out = io.BytesIO()
            pil[0].save(out, format="GIF", save_all=True, append_images=pil[1:],
                        duration=max(1, round(1000 / self.fps)), loop=0)
            return ".gif", out.getvalue()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "video.mp4"
            imageio.mimwrite(path, [f if f.shape[-1] == 3 else np.repeat(f[..., :1], 3, -1) for f in frames],
                             fps=self.fps, macro_block_size=1)
            return ".mp4", path.read_bytes()



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


def labelled_grid(images, row_labels: list[str], nrow: int, pad: int = 2) -> np.ndarray:
    """``image_grid`` with ``nrow`` images (N, C, H, W) a row and a label left of each row, enlarged to a
    readable size first so that the text stays sharp; uint8 HWC."""
    from PIL import Image as PILImage, ImageDraw, ImageFont
    raw = to_uint8_hwc(image_grid(images, nrow=nrow, pad=pad))
    factor = readable_factor(*raw.shape[:2])
    grid = readable(raw)
    height = np.shape(images)[-2]
    font = ImageFont.load_default(size=max(11, min(18, factor * height // 2)))
    margin = 12 + int(max(font.getlength(label) for label in row_labels))
    canvas = PILImage.new("RGB" if grid.shape[-1] == 3 else "L", (margin + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(PILImage.fromarray(grid if grid.shape[-1] == 3 else grid[..., 0]), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(row_labels):
        middle = factor * (pad + r * (height + pad) + height / 2)
        draw.text((margin - 6, middle), label, fill=0, font=font, anchor="rm")
    pixels = np.asarray(canvas)
    return pixels if pixels.ndim == 3 else pixels[..., None]


@dataclass
class Arrays:
    """Named arrays (for example raw samples and their labels), saved together as one ``.npz``."""
    arrays: dict

    def encode(self) -> tuple[str, bytes]:
        """(suffix, the file's bytes): a compressed ``.npz``."""
        out = io.BytesIO()
        np.savez_compressed(out, **{k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                                    for k, v in self.arrays.items()})
        return ".npz", out.getvalue()

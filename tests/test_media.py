"""Pictures a person can read: small images are enlarged (nearest neighbour), grid rows are labelled."""
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from lab.media import Image, image_grid, labelled_grid, readable


def _saved_size(image: Image, tmp_path) -> tuple[int, int]:
    with PILImage.open(image.save(tmp_path / "picture")) as saved:
        return saved.size


@pytest.mark.parametrize("images, nrow, expected", [
    (torch.rand(64, 1, 8, 8), 8, (73 * 4, 73 * 4)),        # the GAN's digits grid, 73x73 before
    (torch.rand(11, 1, 16, 16), 11, (188 * 4, 18 * 4)),    # the DDPM denoising strip, 188x18 before
    (torch.rand(4, 3, 128, 128), 2, (259, 259)),            # large enough already: unchanged
])
def test_small_pictures_are_saved_enlarged_by_an_integer_factor(tmp_path, images, nrow, expected):
    assert _saved_size(Image(image_grid(images, nrow=nrow)), tmp_path) == expected


def test_enlarging_is_nearest_neighbour():
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    big = readable(pixels)
    factor = big.shape[0] // 2
    assert big.shape == (2 * factor, 3 * factor, 1) and 3 * factor >= 256
    assert (big[::factor, ::factor] == pixels).all() and set(np.unique(big)) == set(range(6))


def test_labelled_grid_writes_a_label_left_of_every_row():
    images = torch.ones(16, 1, 8, 8)                              # white digits: only labels are dark
    labels = ["sample", "nearest in train"] * 2
    pixels = labelled_grid(images, labels, nrow=4)
    grid = readable((image_grid(images, nrow=4, pad=2) * 255).astype(np.uint8).transpose(1, 2, 0))
    margin = pixels.shape[1] - grid.shape[1]
    assert margin > 0 and (pixels[:, margin:] == grid).all()   # the grid itself is untouched
    row_pitch = grid.shape[0] // len(labels)
    for r in range(len(labels)):
        band = pixels[r * row_pitch:(r + 1) * row_pitch, :margin]
        assert (band < 128).any(), f"row {r} has no label"


def test_memorization_grid_pairs_rows_of_samples_with_rows_of_their_neighbours():
    from generative.data import load_images
    from generative.metrics import memorization_grid
    test = load_images("digits", "test").images[:16]
    pixels = memorization_grid(test, "digits").pixels()
    assert pixels.shape[1] >= 256 and pixels.shape[0] == 4 * (4 * (8 + 2) + 2)   # 4 rows of 8x8 digits, x4

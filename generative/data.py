"""Data for the generative models: image sets that work offline, 2-D toys, and a device-side batcher.

    digits          sklearn's 1,797 8x8 handwritten digits (ships with scikit-learn; no download)
    mnist           28x28 MNIST, from the four IDX files (gzipped or not) under --data-dir
    fashion-mnist   28x28 Fashion-MNIST, same IDX layout
    cifar10         32x32x3 CIFAR-10, from the python pickle batches (cifar-10-batches-py/)
    ring8, grid25   the classic mode-collapse benchmarks: 8 Gaussians on a ring, 5x5 grid of 25
    moons, swissroll  two moons and a 2-D Swiss roll

Images are float32 (N, C, H, W) in [0, 1]; models rescale to [-1, 1] themselves. Nothing is ever
downloaded implicitly: ``download(name, data_dir)`` (or ``python -m generative.data download NAME
--data-dir DIR``) fetches a set from its usual mirror and verifies its MD5 checksums.
"""
from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import math
import os
import pickle
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from lab import safefs
from lab.errors import LabError

IMAGE_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
TOY_DATASETS: tuple[str, ...] = ("ring8", "grid25", "moons", "swissroll")
DATASETS: tuple[str, ...] = IMAGE_DATASETS + TOY_DATASETS

NATIVE_SHAPE = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10}
LEVELS = {"digits": 17, "mnist": 256, "fashion-mnist": 256, "cifar10": 256}
"""Discrete gray levels of each image set as stored (digits are counts 0..16, the others bytes)."""
TEST_BINARIZATION_SEED = 0
"""Seed of the one stochastic binarization of a test split (the same for every model, run and seed)."""
DIGITS_TEST_SIZE = 360
"""The digits test split: the last 360 of a fixed permutation (seed 0) of the 1,797 images (20 %)."""


def check_dataset(name: str, allowed=DATASETS) -> None:
    """Refuse an unknown data set with one sentence naming the known ones and the closest match."""
    if name in allowed:
        return
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    hint = f"; did you mean {close[0]}?" if close else "."
    raise LabError(f"unknown dataset {name!r}; known: {', '.join(allowed)}{hint}")


def default_data_dir() -> Path:
    """Where image files are looked for when no --data-dir is given: $LAB_DATA_DIR, else ./data."""
    return Path(os.environ.get("LAB_DATA_DIR", "data"))


# ============================================================================ image sets
@dataclass
class ImageSet:
    images: torch.Tensor
    """float32 (N, C, H, W) in [0, 1]."""
    labels: torch.Tensor
    """int64 (N,) class labels."""
    num_classes: int
    name: str
    levels: int | None
    """Number of discrete values a pixel takes: pixel = k / (levels - 1), k in 0..levels-1 (17 for
    digits, 256 for 8-bit sets, 2 binarized); None once interpolation has made the values continuous."""

    def binarized(self, seed: int = TEST_BINARIZATION_SEED) -> ImageSet:
        """Each pixel drawn once as Bernoulli(gray level) with a fixed seed: the binary test split
        every likelihood in the lab is scored on (training batches are binarized afresh each time)."""
        return ImageSet(binarize_once(self.images, seed), self.labels, self.num_classes, self.name, 2)

    def indices(self) -> torch.Tensor:
        """The pixels as level indices k in 0..levels-1 (int64, same shape as ``images``)."""
        if self.levels is None:
            raise LabError(f"{self.name} images were resized by interpolation, so their pixels have no "
                           "discrete levels; use the native size.")
        return level_indices(self.images, self.levels)


def level_indices(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Pixels k / (levels - 1) in [0, 1] -> their level indices k (int64)."""
    return (images * (levels - 1)).round().long()


def binarize_once(images: torch.Tensor, seed: int = TEST_BINARIZATION_SEED) -> torch.Tensor:
    """Binary images x ~ Bernoulli(gray levels), drawn once from a fixed seed."""
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


def load_images(name: str, split: str = "train", data_dir=None, size: int | None = None) -> ImageSet:
    """An image set's train or test split, optionally brought to ``size`` x ``size`` (see ``fit_size``)."""
    check_dataset(name, IMAGE_DATASETS)
    if split not in ("train", "test"):
        raise LabError(f"split must be train or test, got {split!r}.")
    if name == "digits":
        images, labels = _digits(split)
    else:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        images, labels = (_cifar10 if name == "cifar10" else _idx_set)(name, root, split)
    images = torch.from_numpy(images).float().div_(LEVELS[name] - 1)
    levels = LEVELS[name]
    if size is not None:
        levels = levels if _pads_only(images.shape[-1], size) else None
        images = fit_size(images, size)
    return ImageSet(images, torch.from_numpy(labels).long(), NUM_CLASSES[name], name, levels)


def _pads_only(h: int, size: int) -> bool:
    """Whether ``fit_size`` brings side h to ``size`` without interpolating (same size, or zero padding)."""
    return size == h or (h < size < 2 * h and (size - h) % 2 == 0)


def fit_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bring square images to ``size`` x ``size``: zero-pad when growing by less than 2x (MNIST 28 -> 32,
    the LeNet convention), bilinear interpolation otherwise (digits 8 -> 16 or 32)."""
    h = images.shape[-1]
    if size == h:
        return images
    if _pads_only(h, size):
        p = (size - h) // 2
        return F.pad(images, (p, p, p, p))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h)


@functools.cache
def _inverse_resize(h: int, size: int) -> torch.Tensor:
    """The least-squares inverse (h, size) of ``fit_size``'s resize along one axis (bilinear resizing
    is separable and linear: one (size, h) matrix per axis)."""
    columns = F.interpolate(torch.eye(h, dtype=torch.float64).view(h, 1, 1, h), size=(1, size), mode="bilinear",
                            align_corners=False, antialias=size < h)
    return torch.linalg.pinv(columns.view(h, size).T).float()


def to_native(images: torch.Tensor, name: str) -> torch.Tensor:
    """Undo ``fit_size``: images of any size back to the data set's native size. Padding is cropped;
    an interpolation is undone by its least-squares inverse, so ``to_native(fit_size(x, s)) == x``
    up to round-off, and a model's output is brought back the way its training data were brought up."""
    c, h, _ = NATIVE_SHAPE[name]
    if images.ndim != 4 or images.shape[1] != c or images.shape[-1] != images.shape[-2]:
        raise LabError(f"{name} samples must be square (N, {c}, S, S) images; got shape {tuple(images.shape)}.")
    size = images.shape[-1]
    if size == h:
        return images
    if h < size < 2 * h and (size - h) % 2 == 0:
        p = (size - h) // 2
        return images[..., p:p + h, p:p + h]
    inverse = _inverse_resize(h, size).to(images.device)
    return (inverse @ images.float() @ inverse.T).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    order = torch.randperm(len(digits.target), generator=torch.Generator().manual_seed(0)).numpy()
    return digits.images[order].astype(np.float32)[:, None], digits.target[order].astype(np.int64)


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits_all()   # pixel values 0..16
    cut = len(labels) - DIGITS_TEST_SIZE
    part = slice(None, cut) if split == "train" else slice(cut, None)
    return images[part].copy(), labels[part].copy()


# ---------------------------------------------------------------------------- MNIST / Fashion-MNIST
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


IDX_LIMIT = 2 * 10**9
"""The largest IDX payload read (bytes); MNIST's largest file holds 47 MB."""


@contextmanager
def _data_file(path: Path) -> Iterator[BinaryIO]:
    """A data file opened for reading (inflated when its name ends in .gz): the user's own path, so a link
    to it is followed, but a FIFO (which would hang) or a device (which never ends) is refused."""
    with safefs.opened(Path(path).resolve(), "rb") as f:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(fileobj=f) as inflated:
                yield inflated
        else:
            yield f


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped when its name ends in .gz): magic 0x0000 0x08 ndim, big-endian dims, uint8.

    The header is checked before the payload is read, so a file that promises more than it holds (or
    more than ``IDX_LIMIT``) is refused without inflating it.
    """
    try:
        with _data_file(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 4:
                raise LabError(f"{path} is not an IDX file of unsigned bytes (bad magic number {magic.hex()}).")
            header = f.read(4 * magic[3])
            if len(header) < 4 * magic[3]:
                raise LabError(f"{path} is truncated inside its IDX header.")
            dims = tuple(int.from_bytes(header[4 * i: 4 * i + 4], "big") for i in range(magic[3]))
            size = math.prod(dims)
            if size > IDX_LIMIT:
                raise LabError(f"{path} has an implausible IDX header: dimensions {dims} ({size:,} bytes).")
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:   # gzip.BadGzipFile is an OSError
        raise LabError(f"{path} is unreadable or not valid gzip ({type(error).__name__}).") from None
    if len(raw) != size:
        raise LabError(f"{path} does not match its header: it promises {size:,} bytes of data and holds "
                       f"{'more' if len(raw) > size else f'{len(raw):,}'}.")
    return np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(dims)


def _idx_dirs(name: str, root: Path) -> list[Path]:
    return [root / name, root / _TORCHVISION_FOLDER[name] / "raw", root]


def _find(dirs: list[Path], stem: str) -> Path | None:
    for folder in dirs:
        for candidate in (folder / stem, folder / (stem + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _idx_set(name: str, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    stems = IDX_FILES[split]
    paths = [_find(_idx_dirs(name, root), stem) for stem in stems]
    if None in paths:
        raise LabError(missing_message(name, root))
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    expected = NATIVE_SHAPE[name][1:]
    if images.ndim != 3 or images.shape[1:] != expected:
        side = "x".join(map(str, images.shape[1:]))
        raise LabError(f"{paths[0]} holds {side} images; {name} images are {expected[0]}x{expected[1]}.")
    if labels.ndim != 1 or labels.shape != images.shape[:1]:
        raise LabError(f"{paths[0]} and {paths[1]} do not match: images {images.shape}, labels {labels.shape}.")
    if labels.size and labels.max() >= NUM_CLASSES[name]:
        raise LabError(f"{paths[1]} holds label {labels.max()}; {name} labels are 0-{NUM_CLASSES[name] - 1}.")
    return images[:, None], labels.astype(np.int64)


# ---------------------------------------------------------------------------- CIFAR-10
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


CIFAR_BATCH_SIZE, CIFAR_PIXELS = 10_000, 3 * 32 * 32


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else: the only globals it resolves are the two numpy
    constructors an array needs, so a file that names any other callable (``os.system``,
    ``builtins.eval``, ...) is refused before anything runs."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds")
        return {"_reconstruct": _reconstruct_array, "_frombuffer": _array_from_bytes, "ndarray": np.ndarray,
                "dtype": _plain_dtype, "encode": _latin1_bytes}[name]


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """How pickle protocol 2 stores bytes written by Python 3; no other codec is accepted."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it decodes bytes with the {encoding!r} codec")
    return text.encode("latin1")


def _reconstruct_array(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("it builds an array of another type than numpy.ndarray")
    dtype = _plain_dtype(dtype)
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise pickle.UnpicklingError(f"it builds an array of shape {str(shape)[:80]}")
    if math.prod(shape) > CIFAR_BATCH_SIZE * CIFAR_PIXELS:    # checked before anything is allocated
        raise pickle.UnpicklingError(f"it declares an array of {math.prod(shape):,} elements, more than a "
                                     f"CIFAR-10 batch's {CIFAR_BATCH_SIZE * CIFAR_PIXELS:,}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _array_from_bytes(buffer, dtype, shape, order):
    """How pickle protocol 5 stores an array: its raw bytes, dtype, shape and memory order."""
    return np.frombuffer(buffer, dtype=_plain_dtype(dtype)).reshape(shape, order=order)


def _plain_dtype(spec, *args):
    dtype = np.dtype(spec, *args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("it holds an array of Python objects")
    return dtype


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python pickle batch -> (uint8 (N, 3, 32, 32), int64 (N,)), read so that it can never
    run code (a restricted unpickler) and checked: 10,000 x 3,072 uint8 images, as many labels in 0-9."""
    try:
        with _data_file(path) as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise LabError(f"refusing to read {path}: {error}.") from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError,
            RecursionError) as error:
        raise LabError(f"{path} is not a readable CIFAR-10 python batch ({type(error).__name__}).") from None
    if not isinstance(batch, dict):
        raise LabError(f"{path} is not a CIFAR-10 python batch (it holds a {type(batch).__name__}, not a dict).")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (CIFAR_BATCH_SIZE, CIFAR_PIXELS):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LabError(f"{path} is not a CIFAR-10 python batch: its data must be uint8 "
                       f"({CIFAR_BATCH_SIZE}, {CIFAR_PIXELS}), found {found}.")
    if not isinstance(labels, list) or len(labels) != CIFAR_BATCH_SIZE or not all(
            type(y) is int and 0 <= y < 10 for y in labels):
        raise LabError(f"{path} is not a CIFAR-10 python batch: it must hold {CIFAR_BATCH_SIZE} labels, "
                       "each an integer in 0-9.")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar10(name: str, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = next((d for d in (root / CIFAR_FOLDER, root / "cifar10" / CIFAR_FOLDER, root)
                   if all((d / b).is_file() for b in CIFAR_BATCHES[split])), None)
    if folder is None:
        raise LabError(missing_message(name, root))
    parts = [read_cifar_batch(folder / b) for b in CIFAR_BATCHES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def missing_message(name: str, root: Path) -> str:
    """One sentence saying exactly which files to place where (or how to fetch them)."""
    if name == "cifar10":
        files, where = ", ".join(CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"]), root / CIFAR_FOLDER
    else:
        files = ", ".join(s + "[.gz]" for split in ("train", "test") for s in IDX_FILES[split])
        where = root / name
    return (f"{name} is not in {root}: place {files} in {where}/ (or pass --data-dir DIR), "
            f"or where the network allows run `python -m generative.data download {name} --data-dir {root}`.")


def is_available(name: str, data_dir=None) -> bool:
    """Whether ``load_images(name, data_dir=...)`` would find its files (both splits)."""
    if name == "digits":
        return True
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "cifar10":
        return any(all((d / b).is_file() for b in CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"])
                   for d in (root / CIFAR_FOLDER, root / "cifar10" / CIFAR_FOLDER, root))
    return all(_find(_idx_dirs(name, root), s) for split in IDX_FILES.values() for s in split)


# ---------------------------------------------------------------------------- explicit download
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, data_dir) -> Path:
    """Fetch an image set from its usual mirror into ``data_dir`` and verify every file's MD5.

    Only ever called on request (never by training, evaluation or tests); returns the folder written.
    """
    check_dataset(name, tuple(MIRRORS))
    base, files = MIRRORS[name]
    target = Path(data_dir) / (name if name != "cifar10" else "")
    target.mkdir(parents=True, exist_ok=True)
    for filename, checksum in files.items():
        path = target / filename
        if not (path.is_file() and md5(path) == checksum):
            try:
                urllib.request.urlretrieve(base + filename, path.with_suffix(".part"))
            except OSError as error:
                raise LabError(f"could not download {base + filename} ({error}); "
                               f"{missing_message(name, Path(data_dir))}") from None
            path.with_suffix(".part").replace(path)
        if md5(path) != checksum:
            raise LabError(f"{path} has MD5 {md5(path)}, expected {checksum}; delete it and download again.")
    if name == "cifar10":
        import tarfile
        with tarfile.open(target / "cifar-10-python.tar.gz") as archive:
            archive.extractall(target, filter="data")
        target = target / CIFAR_FOLDER
    return target


# ============================================================================ 2-D toys
@dataclass
class Toy2D:
    name: str
    centers: torch.Tensor | None
    """(K, 2) mode centres (None for moons / swissroll, whose mass lies along curves)."""
    std: float
    """Standard deviation of each mode (or of the noise around the curve)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points (n, 2) float32 drawn from the distribution."""
        noise = self.std * torch.randn(n, 2, generator=generator)
        if self.centers is not None:
            pick = torch.randint(len(self.centers), (n,), generator=generator)
            return self.centers[pick] + noise
        t = torch.rand(n, generator=generator)
        if self.name == "moons":   # sklearn's make_moons: upper arc, and a lower arc shifted by (1, 0.5)
            upper = torch.rand(n, generator=generator) < 0.5
            angle = math.pi * t
            x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
            y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
            return torch.stack([x - 0.5, y - 0.25], 1) + noise
        turn = 1.5 * math.pi * (1.0 + 2.0 * t)   # sklearn's make_swiss_roll, (x, z) plane, scaled by 1/5
        return torch.stack([turn * torch.cos(turn), turn * torch.sin(turn)], 1) / 5.0 + noise


def toy_distribution(name: str) -> Toy2D:
    """ring8: 8 Gaussians on a circle of radius 2, std 0.02 (Metz et al. 2017, unrolled GANs; PacGAN's
    ring of radius 1, std 0.01, scaled by 2, which the 3-std metrics do not see);
    grid25: 25 Gaussians at {-4,-2,0,2,4}^2, std 0.05 (VEEGAN 2017, PacGAN 2018);
    moons: two interleaved half circles, noise 0.05; swissroll: a 2-D spiral, noise 0.05."""
    check_dataset(name, TOY_DATASETS)
    if name == "ring8":
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return Toy2D(name, (2.0 * torch.stack([angle.cos(), angle.sin()], 1)).float(), 0.02)
    if name == "grid25":
        axis = torch.arange(-4.0, 5.0, 2.0)
        return Toy2D(name, torch.cartesian_prod(axis, axis), 0.05)
    return Toy2D(name, None, 0.05)


# ============================================================================ batches on the device
class BatchIterator:
    """Endless shuffled minibatches of one or more tensors, reshuffled each epoch, on the device.

    The tensors are moved to the device once; each epoch draws one permutation from a seeded CPU
    generator and sends it over once, so a batch costs only an index on the device. Exact resume:
    ``state_dict`` holds the generator state before the current epoch's permutation and the position.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int, device, drop_last: bool = True):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise LabError("BatchIterator needs one or more tensors of the same length.")
        self.n = len(tensors[0])
        if batch_size <= 0 or (drop_last and batch_size > self.n):
            raise LabError(f"--batch-size must be in [1, {self.n}] for a set of {self.n} items, got {batch_size}.")
        self.tensors = tuple(t.to(device) for t in tensors)
        self.batch_size, self.drop_last, self.device = batch_size, drop_last, device
        self.generator = torch.Generator().manual_seed(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self._epoch_rng = self.generator.get_state()
        self.order = torch.randperm(self.n, generator=self.generator).to(self.device)
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        end = self.position + self.batch_size
        if end > self.n and (self.drop_last or self.position >= self.n):
            self._new_epoch()
            end = self.batch_size
        rows = self.order[self.position:end]
        self.position = min(end, self.n)
        return tuple(t[rows] for t in self.tensors)

    def state_dict(self) -> dict:
        return {"epoch_rng": self._epoch_rng.clone(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["epoch_rng"])
        self._new_epoch()
        self.position = int(state["position"])


# ============================================================================ `lab list datasets`
def describe() -> list[tuple[str, str, str]]:
    """Rows of (name, shape, where it comes from / whether it is available here)."""
    rows = []
    for name in IMAGE_DATASETS:
        shape = "x".join(map(str, NATIVE_SHAPE[name])) + f", {NUM_CLASSES[name]} classes"
        if name == "digits":
            status = "available (ships with scikit-learn; 1,437 train / 360 test)"
        elif is_available(name):
            status = f"available in {default_data_dir()}"
        else:
            what = "the python batches" if name == "cifar10" else "the 4 IDX files"
            where = default_data_dir() / (CIFAR_FOLDER if name == "cifar10" else name)
            status = (f"not here: place {what} in {where}/ or pass --data-dir "
                      f"(python -m generative.data download {name})")
        rows.append((name, shape, status))
    for name in TOY_DATASETS:
        toy = toy_distribution(name)
        modes = f"{len(toy.centers)} modes, std {toy.std}" if toy.centers is not None else f"noise {toy.std}"
        rows.append((name, "2-D points", f"available (generated; {modes})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """python -m generative.data download NAME --data-dir DIR"""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m generative.data",
                                     description="Fetch an image set (with MD5 checks) where the network allows.")
    parser.add_argument("command", choices=["download"])
    parser.add_argument("name", choices=list(MIRRORS))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)
    try:
        print(f"wrote {download(args.name, args.data_dir)}")
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data for the generative models: digits split, IDX/CIFAR readers on files written here, toys, batcher."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import no_hang
from generative import data
from lab.errors import LabError


def test_digits_split_is_fixed_disjoint_and_scaled():
    train, test = data.load_images("digits"), data.load_images("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.images.min() == 0.0 and train.images.max() == 1.0 and train.num_classes == 10
    assert set(test.labels.tolist()) == set(range(10))
    # no test image appears in the train split
    flat_train = {tuple(x) for x in train.images.flatten(1).mul(16).round().int().tolist()}
    overlap = sum(tuple(x) in flat_train for x in test.images.flatten(1).mul(16).round().int().tolist())
    assert overlap <= 2   # sklearn's digits hold one or two exact duplicates; a leaky split would give 360
    again = data.load_images("digits", "test")
    assert torch.equal(again.images, test.images)


def test_fit_size_pads_or_upsamples_and_to_native_inverts():
    digits = data.load_images("digits", "test", size=32).images
    assert digits.shape == (360, 1, 32, 32) and 0 <= digits.min() and digits.max() <= 1
    mnist_like = torch.rand(4, 1, 28, 28)
    padded = data.fit_size(mnist_like, 32)
    assert padded.shape == (4, 1, 32, 32) and padded[..., :2, :].abs().sum() == 0
    assert torch.equal(data.to_native(padded, "mnist"), mnist_like)
    assert data.to_native(digits, "digits").shape == (360, 1, 8, 8)


def _write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_parses_files_written_here(tmp_path, gz):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {}
    for split, n in (("train", 5), ("test", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        stem_images, stem_labels = data.IDX_FILES[split]
        suffix = ".gz" if gz else ""
        _write_idx(folder / (stem_images + suffix), images, gz)
        _write_idx(folder / (stem_labels + suffix), labels, gz)
        arrays[split] = images, labels
    for split in ("train", "test"):
        loaded = data.load_images("mnist", split, data_dir=tmp_path)
        images, labels = arrays[split]
        assert torch.allclose(loaded.images[:, 0] * 255, torch.from_numpy(images).float())
        assert loaded.labels.tolist() == labels.tolist()
    assert data.is_available("mnist", tmp_path) and not data.is_available("fashion-mnist", tmp_path)


def test_idx_reader_refuses_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(LabError, match="magic"):
        data.read_idx(tmp_path / "bad")


def test_cifar_reader_parses_batches_written_here(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CIFAR_BATCH_SIZE", 2)
    folder = tmp_path / data.CIFAR_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(1)
    written = {}
    for name in data.CIFAR_BATCHES["train"] + data.CIFAR_BATCHES["test"]:
        images, labels = rng.integers(0, 256, (2, 3072), dtype=np.uint8), rng.integers(0, 10, 2).tolist()
        write_cifar_batch(folder / name, {b"data": images, b"labels": labels}, protocol=2 if "test" in name else 5)
        written[name] = images, labels
    test = data.load_images("cifar10", "test", data_dir=tmp_path)
    assert test.images.shape == (2, 3, 32, 32)
    expected = torch.from_numpy(written["test_batch"][0].reshape(2, 3, 32, 32)).float() / 255
    assert torch.allclose(test.images, expected) and test.labels.tolist() == written["test_batch"][1]
    assert len(data.load_images("cifar10", "train", data_dir=tmp_path).labels) == 10


class _RunsCode:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_cifar_batch(path, payload, protocol: int = 2) -> None:
    """Protocol 2, as the published batches (written by Python 2); newer protocols read the same."""
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)


@pytest.mark.parametrize("where", ["top", "in-dict", "as-label"])
def test_a_cifar_batch_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch, where):
    monkeypatch.setattr(data, "CIFAR_BATCH_SIZE", 2)
    marker = tmp_path / "pwned"
    attack = _RunsCode(f"touch {marker}")
    images = np.zeros((2, 3072), np.uint8)
    payload = {"top": attack, "in-dict": {b"data": images, b"labels": [0, 1], b"x": attack},
               "as-label": {b"data": images, b"labels": [0, attack]}}[where]
    write_cifar_batch(tmp_path / "data_batch_1", payload)
    with pytest.raises(LabError, match="refusing to read .*posix.system|refusing to read .*os.system"):
        data.read_cifar_batch(tmp_path / "data_batch_1")
    assert not marker.exists()


@pytest.mark.parametrize("payload, problem", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.array([None, None], dtype=object), b"labels": [0, 1]}, "objects"),
    ([1, 2, 3], "dict"),
])
def test_a_malformed_cifar_batch_gets_one_sentence(tmp_path, monkeypatch, payload, problem):
    monkeypatch.setattr(data, "CIFAR_BATCH_SIZE", 2)
    write_cifar_batch(tmp_path / "batch", payload)
    with pytest.raises(LabError, match=problem):
        data.read_cifar_batch(tmp_path / "batch")


class _HugeArray:
    """What the pickle of an array says first: build an empty array of this shape (10^12 elements)."""

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (10 ** 12,), b"b")


def test_a_cifar_batch_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    write_cifar_batch(tmp_path / "batch", {b"data": _HugeArray(), b"labels": [0]})
    with pytest.raises(LabError, match="declares an array of 1,000,000,000,000 elements"):
        data.read_cifar_batch(tmp_path / "batch")


def test_random_bytes_as_a_cifar_batch_get_one_sentence(tmp_path):
    (tmp_path / "batch").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(LabError, match="batch"):
        data.read_cifar_batch(tmp_path / "batch")


def test_missing_files_name_what_to_place_where(tmp_path):
    with pytest.raises(LabError) as error:
        data.load_images("fashion-mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte" in message and str(tmp_path / "fashion-mnist") in message
    with pytest.raises(LabError, match="data_batch_1"):
        data.load_images("cifar10", data_dir=tmp_path)


def test_check_dataset_suggests_the_closest_name():
    data.check_dataset("grid25")
    with pytest.raises(LabError, match="did you mean digits"):
        data.check_dataset("digts")
    with pytest.raises(LabError):
        data.check_dataset("ring8", data.IMAGE_DATASETS)


def test_toys_put_their_mass_on_their_modes():
    generator = torch.Generator().manual_seed(0)
    for name in ("ring8", "grid25"):
        toy = data.toy_distribution(name)
        points = toy.sample(4000, generator)
        distance = torch.cdist(points, toy.centers).min(1).values
        assert (distance < 3 * toy.std).float().mean() > 0.98
        nearest = torch.cdist(points, toy.centers).argmin(1)
        assert torch.bincount(nearest, minlength=len(toy.centers)).min() > 4000 / len(toy.centers) / 2
    assert torch.allclose(data.toy_distribution("ring8").centers.norm(dim=1), torch.full((8,), 2.0))
    for name in ("moons", "swissroll"):
        points = data.toy_distribution(name).sample(500, generator)
        assert points.shape == (500, 2) and points.dtype == torch.float32 and torch.isfinite(points).all()


def test_batch_iterator_covers_each_epoch_and_resumes_exactly():
    x = torch.arange(10.0)
    batches = data.BatchIterator(x, x * 2, batch_size=3, seed=0, device="cpu")
    epoch = torch.cat([next(batches)[0] for _ in range(3)])   # drop_last: 3 batches of 3 per epoch
    assert len(set(epoch.tolist())) == 9
    a, b = next(batches)
    assert torch.equal(b, a * 2)
    state = batches.state_dict()
    expected = [next(batches)[0] for _ in range(7)]
    other = data.BatchIterator(x, x * 2, batch_size=3, seed=123, device="cpu")
    other.load_state_dict(state)
    assert all(torch.equal(e, next(other)[0]) for e in expected)
    whole = data.BatchIterator(x, batch_size=4, seed=0, device="cpu", drop_last=False)
    sizes = [len(next(whole)[0]) for _ in range(4)]
    assert sizes == [4, 4, 2, 4]
    with pytest.raises(LabError):
        data.BatchIterator(x, batch_size=11, seed=0, device="cpu")


def test_list_datasets_shows_every_set(lab):
    result = lab("list", "datasets")
    assert result.returncode == 0
    for name in data.DATASETS:
        assert name in result.stdout


def test_plots_return_images():
    from generative.plots import samples_grid, toy_scatter
    toy = data.toy_distribution("ring8")
    picture = toy_scatter(toy.sample(100), toy, "ring8")
    assert picture.array.ndim == 3 and picture.array.shape[-1] == 3
    assert samples_grid(torch.rand(6, 1, 8, 8), nrow=3).array.shape == (1, 19, 28)


def test_lab_train_on_a_poisoned_cifar_folder_exits_2_runs_nothing_and_leaves_no_run(tmp_path, lab):
    folder = tmp_path / "data" / data.CIFAR_FOLDER
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in data.CIFAR_BATCHES["train"] + data.CIFAR_BATCHES["test"]:
        write_cifar_batch(folder / name, {b"data": _RunsCode(f"touch {marker}"), b"labels": [0]})
    result = lab("train", "vae", "--data", "cifar10", "--data-dir", tmp_path / "data", "--device", "cpu",
                 "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "refusing to read" in result.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_image_sets_expose_their_discrete_levels():
    from generative.data import load_images
    digits = load_images("digits", "test")
    assert digits.levels == 17
    k = digits.indices()
    assert k.min() == 0 and k.max() == 16 and torch.equal(k.float() / 16, digits.images)   # pixels are k / 16
    binary = digits.binarized()
    assert binary.levels == 2 and set(binary.images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary.images, digits.binarized().images)   # one fixed draw, shared by every model
    assert load_images("digits", "test", size=16).levels is None  # interpolated: no longer discrete


@pytest.mark.parametrize("name", ["data_batch_1", "train-images-idx3-ubyte.gz"])
def test_a_data_file_that_is_a_fifo_or_a_device_is_refused_not_read(tmp_path, name):
    os.mkfifo(tmp_path / name)
    (tmp_path / "zero").symlink_to("/dev/zero")
    reader = data.read_cifar_batch if name.startswith("data") else data.read_idx
    with no_hang():                       # a reader that opens the FIFO blocks: the test fails, not hangs
        for path in (tmp_path / name, tmp_path / "zero"):
            with pytest.raises(LabError, match="not a regular file"):
                reader(path)

"""Sample-quality metrics: Fréchet distance, Inception Score, k-NN precision/recall, memorization,
toy mode coverage, and the digits feature classifier."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from generative import data
from generative.metrics import (frechet_distance, frechet_distance_of, inception_score, memorization_grid,
                                memorization_ratio, modes_captured, precision_recall, score_images, score_toy)
from generative.metrics import classifier
from lab.errors import LabError


# ---------------------------------------------------------------------------- Fréchet distance
def _reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Direct formula, independent route: Tr sqrt(S1 S2) from the eigenvalues of the symmetric
    S1^1/2 S2 S1^1/2 (same spectrum as S1 S2), S1^1/2 from the eigendecomposition (exact when singular)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(s1)
    root1 = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    eigenvalues = np.linalg.eigvalsh(root1 @ s2 @ root1).clip(min=0)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eigenvalues).sum())


def test_frechet_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 24))
    b = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5
    ours = frechet_distance_of(torch.from_numpy(a).float().double(), torch.from_numpy(b))
    assert ours == pytest.approx(_reference_frechet(a, b), rel=1e-6)


def test_frechet_is_zero_for_two_draws_of_one_gaussian_and_follows_the_mean_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, 8, generator=g), torch.randn(20000, 8, generator=g)
    assert 0 <= frechet_distance_of(a, b) < 5e-3
    shift = torch.tensor([1.0, -2.0, 0.5, 0, 0, 0, 0, 0])
    assert frechet_distance_of(a, b + shift) == pytest.approx(float(shift @ shift), rel=0.02)
    # closed forms on exact statistics: a mean shift adds |d|^2; isotropic scales give F (s1 - s2)^2
    mu, sigma = np.zeros(8), np.eye(8)
    assert frechet_distance(mu, sigma, mu + shift.numpy(), sigma) == pytest.approx(5.25, rel=1e-9)
    assert frechet_distance(mu, 4 * sigma, mu, 9 * sigma) == pytest.approx(8 * (2 - 3) ** 2, rel=1e-9)


def test_frechet_handles_singular_covariances_and_refuses_broken_ones():
    g = torch.Generator().manual_seed(1)
    few = frechet_distance_of(torch.randn(10, 32, generator=g), torch.randn(10, 32, generator=g))
    assert math.isfinite(few) and few > 0
    not_psd = np.diag([1.0, -1.0])   # a "covariance" with a negative eigenvalue has no real square root
    with pytest.raises(LabError, match="imaginary"):
        frechet_distance(np.zeros(2), not_psd, np.zeros(2), np.eye(2))


def _dead_unit_features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with constant (dead) units, as Inception's pool features have: exactly singular covariances."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(200, 64)), rng.normal(size=(200, 64)) * 1.5 + 0.3
    a[:, :16], b[:, 8:21] = 0.0, 1.0
    return a, b


def test_frechet_on_exactly_singular_statistics_is_exact_as_in_pytorch_fid():
    a, b = _dead_unit_features(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert np.linalg.matrix_rank(s1) < 64 and np.linalg.matrix_rank(s2) < 64
    ours = frechet_distance_of(a, b)
    assert ours == pytest.approx(_reference_frechet(a, b), rel=1e-8)   # eps * I would move it by 0.03
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    theirs = fid_score.calculate_frechet_distance(a.mean(0), s1, b.mean(0), s2)
    assert ours == pytest.approx(theirs, rel=1e-12)


# ---------------------------------------------------------------------------- Inception Score
def test_inception_score_bounds():
    constant = torch.softmax(torch.randn(1, 10), 1).repeat(1000, 1)
    assert inception_score(constant)[0] == pytest.approx(1.0, abs=1e-9)
    perfect = torch.eye(10).repeat(100, 1)   # confident and uniform over classes, in every split
    mean, std = inception_score(perfect, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    two_classes = torch.eye(10)[torch.arange(1000) % 2]
    assert inception_score(two_classes)[0] == pytest.approx(2.0, rel=1e-9)
    random = torch.softmax(3 * torch.randn(1000, 10, generator=torch.Generator().manual_seed(0)), 1)
    assert 1.0 < inception_score(random)[0] < 10.0


def _reference_inception_score(probs: np.ndarray, splits: int) -> tuple[float, float]:
    """The original code's loop (Salimans et al. 2016, improved-gan): parts cut at i * N // splits."""
    n, scores = len(probs), []
    for i in range(splits):
        part = probs[i * n // splits: (i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize("n, splits", [(12, 10), (1000, 10), (257, 3)])
def test_inception_score_splits_cut_like_the_original_code(n, splits):
    logits = 3 * torch.randn(n, 10, generator=torch.Generator().manual_seed(n))
    probs = torch.softmax(logits.double(), 1)
    assert inception_score(probs, splits) == pytest.approx(_reference_inception_score(probs.numpy(), splits), rel=1e-12)


def test_inception_score_agrees_with_torch_fidelity():
    inception = pytest.importorskip("torch_fidelity.metric_isc")
    logits = 3 * torch.randn(12, 10, generator=torch.Generator().manual_seed(0))
    theirs = inception.isc_featuresdict_to_metric({"logits_unbiased": logits.double()}, "logits_unbiased",
                                                   isc_splits=10, samples_shuffle=False, verbose=False)
    mean, std = inception_score(torch.softmax(logits.double(), 1), 10)
    assert (mean, std) == pytest.approx((theirs["inception_score_mean"], theirs["inception_score_std"]), rel=1e-9)


# ---------------------------------------------------------------------------- k-NN precision / recall
def test_precision_recall_identical_disjoint_and_half():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 16, generator=g)
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    collapsed = real[:1].repeat(500, 1) + 1e-3 * torch.randn(500, 16, generator=g)
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision == 1.0 and recall < 0.05   # mode collapse: every sample is real-looking, little is covered


def test_memorization_ratio_separates_copies_from_fresh_data():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(400, 20, generator=g), torch.randn(200, 20, generator=g)
    assert memorization_ratio(train[:100] + 1e-4, train, test) < 0.01
    assert memorization_ratio(torch.randn(200, 20, generator=g), train, test) == pytest.approx(1.0, abs=0.15)


# ---------------------------------------------------------------------------- toy mode coverage
def test_mode_coverage_is_exact_on_hand_made_samples():
    toy = data.toy_distribution("ring8")
    c, s = toy.centers, toy.std
    # 2,500 samples: modes 0-4 get 20 high-quality samples each (some at 2.9 std), mode 5 gets one (the
    # benchmark's threshold), mode 6 gets 30 samples just outside 3 std, the rest sit far from every mode
    pieces = [c[i].repeat(20, 1) + torch.tensor([2.9 * s, 0.0]) * (i % 2) for i in range(5)]
    pieces += [c[5:6], c[6].repeat(30, 1) + torch.tensor([0.0, 3.1 * s])]
    far = torch.zeros(2500 - 131, 2)
    samples = torch.cat(pieces + [far])
    scores = score_toy(samples, "ring8")
    assert scores["eval/modes"] == 6.0
    assert scores["eval/high_quality"] == pytest.approx(101 / 2500, abs=1e-12)
    assert scores["eval/n_samples"] == 2500.0
    assert modes_captured(samples, toy, min_share=20 / 2500) == 5
    assert modes_captured(samples, toy, min_share=21 / 2500) == 0
    perfect = score_toy(data.toy_distribution("grid25").sample(2500, torch.Generator().manual_seed(3)), "grid25")
    assert perfect["eval/modes"] == 25.0 and perfect["eval/high_quality"] > 0.98
    assert perfect["eval/precision"] > 0.9 and perfect["eval/recall"] > 0.9
    curve = score_toy(torch.full((100, 2), 50.0), "swissroll")
    assert curve["eval/high_quality"] == 0.0 and "eval/modes" not in curve


# ---------------------------------------------------------------------------- the digits classifier
@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    """Train the default digits classifier once into a fresh cache (what a first score_images does)."""
    old = os.environ.get("LAB_CACHE")
    os.environ["LAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    classifier._LOADED.clear()
    try:
        entry = classifier.train_default("digits")
        classifier._save(classifier.cache_path("digits"), entry)
        yield entry
    finally:
        classifier._LOADED.clear()
        if old is None:
            os.environ.pop("LAB_CACHE")
        else:
            os.environ["LAB_CACHE"] = old


def test_digits_classifier_reaches_97_percent(digits_classifier):
    assert digits_classifier["test_accuracy"] >= 0.97
    network = classifier.feature_classifier("digits")
    test = data.load_images("digits", "test")
    accuracy = (classifier.predict_logits(network, test.images, "cpu").argmax(1) == test.labels).float().mean()
    assert accuracy == pytest.approx(digits_classifier["test_accuracy"])


def test_score_images_ranks_real_above_noise_and_catches_copies(digits_classifier):
    train = data.load_images("digits", "train")
    fresh = data.load_images("digits", "test").images
    real = score_images(train.images[:360], "digits", labels=train.labels[:360])
    assert set(real) >= {"eval/fid", "eval/is", "eval/precision", "eval/recall", "eval/memorization",
                         "eval/n_samples", "eval/label_accuracy", "eval/fid_real"}
    assert real["eval/n_samples"] == 360 and real["eval/label_accuracy"] > 0.97
    assert real["eval/memorization"] == 0.0   # these samples ARE training images
    assert score_images(fresh, "digits")["eval/memorization"] == pytest.approx(1.0)
    upsampled = score_images(data.fit_size(train.images[:360], 32), "digits")   # any size is scored natively
    assert upsampled["eval/fid"] == pytest.approx(real["eval/fid"], rel=1e-4)
    noise = score_images(torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)), "digits")
    assert real["eval/fid"] < 5 < 50 < noise["eval/fid"]
    assert real["eval/is"] > 8 > 2 > noise["eval/is"]
    assert real["eval/precision"] > 0.8 and noise["eval/precision"] < 0.3 and noise["eval/recall"] < 0.1
    picture = memorization_grid(train.images[:8], "digits")
    assert picture.pixels().shape[-1] == 1 and picture.pixels().shape[1] >= 256   # gray, readable


def test_other_sets_without_a_classifier_say_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE", str(tmp_path))
    with pytest.raises(LabError, match="lab train classifier --data mnist"):
        classifier.feature_classifier("mnist")


def test_lab_train_classifier_runs_resumes_exactly_installs_and_refuses_bad_input(lab, tmp_path, monkeypatch):
    run = tmp_path / "run"
    result = lab("train", "classifier", "--data", "digits", "--total-steps", "20", "--checkpoint-every", "10",
                 "--keep-checkpoints", "--log-every", "1", "--eval-every", "10", "--run-dir", run)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/accuracy" in row for row in rows)
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.copy(resumed / "checkpoints" / "step-10.pt", resumed / "checkpoints" / "last.pt")
    assert lab("resume", resumed).returncode == 0
    again = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    losses = [[row["train/loss"] for row in table if row["step"] > 10 and "train/loss" in row]
              for table in (rows, again)]
    assert len(losses[0]) == 10 and losses[0] == losses[1]   # the same batches and updates after the resume
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))   # install the run as the scoring network
    assert classifier.main(["install", str(run)]) == 0
    installed = torch.load(classifier.cache_path("digits"), weights_only=True)
    assert installed["version"] == classifier.VERSION and 0 < installed["test_accuracy"] <= 1
    assert classifier.feature_classifier("digits").head.weight.shape == (10, 128)
    classifier._LOADED.clear()
    bad = lab("train", "classifier", "--data", "digts", "--run-dir", tmp_path / "bad")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "did you mean digits" in bad.stderr


# ---------------------------------------------------------------------------- optional Inception-v3
def test_inception_loads_a_local_weights_file_and_refuses_others(tmp_path):
    from generative.metrics.inception import FIDInceptionV3, inception_features_and_probs, load_inception
    torch.manual_seed(0)
    weights = tmp_path / "pt_inception.pth"
    reference = FIDInceptionV3().eval()
    torch.save(reference.state_dict(), weights)
    network = load_inception(weights)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), reference.state_dict().values()))
    features, probs = inception_features_and_probs(network, torch.rand(1, 1, 8, 8), "cpu")
    assert features.shape == (1, 2048) and probs.shape == (1, 1008) and torch.isfinite(features).all()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(LabError, match="not the FID Inception"):
        load_inception(tmp_path / "other.pth")
    with pytest.raises(LabError, match="never downloaded"):
        load_inception(tmp_path / "absent.pth")


def test_an_installed_mnist_classifier_scores_mnist_samples(lab, tmp_path, monkeypatch):
    """The non-digits path end to end, on a tiny MNIST-format set written here: train, install, score."""
    def write_idx(path, array):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        path.write_bytes(header + array.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    for split, n in (("train", 64), ("test", 32)):
        images, labels = data.IDX_FILES[split]
        write_idx(tmp_path / "mnist" / images, rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / "mnist" / labels, np.arange(n) % 10)
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    result = lab("train", "classifier", "--data", "mnist", "--data-dir", tmp_path, "--total-steps", "4",
                 "--batch-size", "16", "--run-dir", run)
    assert result.returncode == 0, result.stderr
    assert classifier.main(["install", str(run)]) == 0
    scores = score_images(torch.rand(8, 1, 32, 32), "mnist", data_dir=tmp_path)   # 32x32: the padding is cropped
    assert scores["eval/n_samples"] == 8 and all(math.isfinite(v) for v in scores.values())
    classifier._LOADED.clear()

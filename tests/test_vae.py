"""The VAE: the ELBO's pieces checked on hand-made cases, the importance-weighted bound against an
exact log-likelihood, and a short training run on digits (plus the lab commands around it)."""
import json
import math

import pytest
import torch
from torch import nn

from generative.vae.bound import (diagonal_gaussian_log_prob, free_bits_kl, gaussian_kl, log_mean_exp,
                                  reparameterize, standard_normal_log_prob)
from generative.vae.likelihoods import (Bernoulli, ContinuousBernoulli, Gaussian, continuous_bernoulli_log_norm,
                                        continuous_bernoulli_mean)
from generative.vae.model import VAE, log_likelihood_bounds
from generative.vae.nets import make_networks


# ---------------------------------------------------------------- the bound's maths
def test_closed_form_kl_equals_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.0, 0.0], [1.5, -0.7], [-2.0, 0.3]])
    log_var = torch.tensor([[0.0, 0.0], [-1.0, 0.8], [1.2, -2.5]])
    eps = torch.randn(200_000, *mu.shape, generator=g)
    z = reparameterize(mu, log_var, eps)
    log_ratio = diagonal_gaussian_log_prob(z, mu, log_var) - standard_normal_log_prob(z)   # log q/p
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(eps))
    exact = gaussian_kl(mu, log_var)
    assert exact[0].item() == 0.0
    assert torch.all((estimate - exact).abs() <= 4 * stderr + 1e-6), (estimate, exact, stderr)
    assert exact[1] > 1.0 and exact[2] > 1.0   # non-trivial cases


def test_reparameterized_sample_has_the_right_moments_and_carries_gradients():
    mu = torch.tensor([0.5, -2.0, 3.0], requires_grad=True)
    log_var = torch.tensor([0.0, -1.5, 1.0], requires_grad=True)
    eps = torch.randn(100_000, 3, generator=torch.Generator().manual_seed(1))
    z = reparameterize(mu, log_var, eps)
    std = torch.exp(0.5 * log_var.detach())
    assert torch.allclose(z.mean(0), mu.detach(), atol=4 * std.max().item() / math.sqrt(len(eps)))
    assert torch.allclose(z.var(0), std.square(), rtol=0.02)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.full((3,), float(len(eps))))                     # dz/dμ = 1
    assert torch.allclose(log_var.grad, (0.5 * std * eps).sum(0), rtol=1e-4, atol=1e-2)    # dz/dlogσ² = σε/2
    assert torch.all(log_var.grad.abs() > 0)


def test_log_mean_exp_is_stable_and_exact():
    values = torch.tensor([[1000.0, -1000.0], [1000.0, -1001.0]])
    assert torch.allclose(log_mean_exp(values, 0), torch.tensor([1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)]))
    small = torch.randn(7, 3)
    assert torch.allclose(log_mean_exp(small, 0), small.exp().mean(0).log(), atol=1e-6)


def test_free_bits_floor_stops_gradient_only_below_the_floor():
    kl = torch.tensor([[0.01, 2.0], [0.03, 4.0]], requires_grad=True)   # dim 0 mean 0.02, dim 1 mean 3
    assert torch.equal(free_bits_kl(kl, 0.0), kl.sum(-1))
    term = free_bits_kl(kl, 0.5)
    assert torch.allclose(term.mean(), torch.tensor(0.5 + 3.0))
    term.sum().backward()
    assert torch.equal(kl.grad, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


# ---------------------------------------------------------------- likelihoods
def test_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(2)
    logits = torch.cat([torch.randn(2, 40, generator=g) * 6, torch.tensor([[0.0, 1e-4, -3e-3, 0.02] * 10] * 2)])
    x = torch.rand(4, 40, generator=g)
    binary = torch.bernoulli(x, generator=g)
    cb = torch.distributions.ContinuousBernoulli(logits=logits.double())
    assert torch.allclose(ContinuousBernoulli().log_prob(logits, x).double(), cb.log_prob(x.double()).sum(1),
                          atol=1e-4)
    assert torch.allclose(continuous_bernoulli_mean(logits).double(), cb.mean, atol=1e-5)
    assert torch.allclose(continuous_bernoulli_log_norm(torch.zeros(1)), torch.tensor([math.log(2.0)]))
    bern = torch.distributions.Bernoulli(logits=logits)
    assert torch.allclose(Bernoulli().log_prob(logits, binary), bern.log_prob(binary).sum(1), atol=1e-4)
    gauss = Gaussian(std=0.3)
    normal = torch.distributions.Normal(logits, 0.3)
    assert torch.allclose(gauss.log_prob(logits, x), normal.log_prob(x).sum(1), atol=1e-3)


def test_discretized_gaussian_gives_probabilities_of_the_gray_levels():
    """Over the 17 gray levels of one pixel the probabilities sum to 1 whatever the mean and σ, and
    for a σ much smaller than a level's bin the level under the mean takes nearly all the mass."""
    from generative.vae.likelihoods import DiscretizedGaussian
    levels = torch.arange(17.0).view(17, 1) / 16
    for mean, std in ((0.5, 0.1), (0.03, 0.01), (1.2, 0.3), (0.49, 0.001)):
        p = DiscretizedGaussian(17, std).log_prob(torch.full((17, 1), mean), levels).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert p[8].item() > 0.999   # 0.49 lies in the bin of level 8/16 = 0.5 (half-width 1/32)


def test_learned_gaussian_sigma_is_a_parameter_and_fixed_is_not():
    learned, fixed = Gaussian(0.1, learned=True), Gaussian(0.1, learned=False)
    assert [n for n, _ in learned.named_parameters()] == ["log_std"]
    assert list(fixed.parameters()) == [] and "log_std" in fixed.state_dict()
    learned.log_prob(torch.zeros(2, 5), torch.full((2, 5), 0.5)).sum().backward()
    assert learned.log_std.grad.item() > 0   # errors of 0.5 >> σ = 0.1: a larger σ is more likely


@pytest.mark.parametrize("net", ["conv", "mlp"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_networks_map_images_to_latents_and_back(net, shape):
    encoder, decoder = make_networks(net, shape, latent_dim=5, width=8)
    mu, log_var = encoder(torch.rand(3, *shape))
    assert mu.shape == log_var.shape == (3, 5) and mu.dtype == torch.float32
    assert decoder(mu).shape == (3, *shape)


# ---------------------------------------------------------------- the importance-weighted bound, exactly
class _LinearEncoder(nn.Module):
    """q(z|x) = N(A (x − b), diag v): a fixed, deliberately imperfect Gaussian proposal."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, var: torch.Tensor):
        super().__init__()
        self.a, self.b, self.log_var = a, b, var.log()

    def forward(self, x):
        mu = (x - self.b) @ self.a.T
        return mu, self.log_var.expand_as(mu)


def test_importance_weighted_estimate_converges_to_the_exact_log_likelihood():
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) gives p(x) = N(b, WWᵀ + σ²I) in closed form."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2, generator=g, dtype=torch.float64).float()
    b = torch.randn(4, generator=g)
    sigma = 0.5
    decoder = nn.Linear(2, 4)
    with torch.no_grad():
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
    # the exact posterior, then spoiled: covariance made diagonal and twice too wide, mean shrunk by 30 %
    precision = torch.eye(2) + w.T @ w / sigma ** 2
    covariance = torch.linalg.inv(precision)
    a = 0.7 * covariance @ w.T / sigma ** 2
    model = VAE(_LinearEncoder(a, b, 2.0 * covariance.diagonal()), decoder, Gaussian(sigma), latent_dim=2)
    marginal = torch.distributions.MultivariateNormal(b, w @ w.T + sigma ** 2 * torch.eye(4))
    x = b + torch.randn(6, 4, generator=g) @ marginal.scale_tril.T
    exact = marginal.log_prob(x)

    def bounds(k):
        return log_likelihood_bounds(model, x, k, batch_size=4096, generator=torch.Generator().manual_seed(k))

    small, large = bounds(10), bounds(50_000)
    assert torch.all(large["elbo"] < exact - 0.1), (large["elbo"], exact)   # a strict lower bound for this q
    assert torch.allclose(large["iw"], exact, atol=0.02), (large["iw"], exact)
    assert (large["iw"] - exact).abs().max() < (small["iw"] - exact).abs().max()


# ---------------------------------------------------------------- training on digits
@pytest.fixture(scope="module")
def trained():
    """A small MLP VAE trained by the trainer for a few hundred steps on digits; its test bounds before
    (the same network freshly built from the same seed) and after."""
    from generative.vae.algo import Algorithm, Config
    from lab.runtime import RunOptions, Runtime
    from lab.session import train_in_memory

    config = Config(net="mlp", mlp_hidden=128, latent_dim=8, lr=3e-3, total_steps=200)

    def neg_elbo(algo):
        return -log_likelihood_bounds(algo.vae, algo.test_x, 4, generator=torch.Generator().manual_seed(0))[
            "elbo"].mean().item()

    before = neg_elbo(Algorithm(config, Runtime(RunOptions(device="cpu", seed=0))))
    algo = train_in_memory("vae", config, RunOptions(device="cpu", seed=0, eval_every=200)).algorithm
    return algo, before, neg_elbo(algo)


def test_short_training_lowers_the_test_negative_elbo_well_below_its_start(trained):
    _, before, after = trained
    assert before > 40.0               # about 64 log 2 = 44.4 nats: a coin per pixel
    assert after < before - 15.0, (before, after)


def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_k_on_a_trained_model(trained):
    algo, _, _ = trained
    def bound(k, seed):
        return log_likelihood_bounds(algo.vae, algo.test_x, k, generator=torch.Generator().manual_seed(seed))

    elbo = bound(1000, 0)["elbo"]   # its reconstruction term averaged over 1000 samples: nearly exact
    # E[IW_K] per image, estimated from independent repeats (a single IW_10 is noisy)
    iw = {k: torch.stack([bound(k, seed)["iw"] for seed in range(repeats)]).mean(0)
          for k, repeats in ((1, 50), (10, 20), (1000, 1))}

    def clearly_above(high, low):   # mean per-image difference more than 4 standard errors above 0
        difference = high - low
        return difference.mean() > 4 * difference.std() / math.sqrt(len(difference))

    assert abs(iw[1].mean() - elbo.mean()) < 0.3          # K = 1 is an estimate of the ELBO itself
    assert clearly_above(iw[10], elbo) and clearly_above(iw[1000], iw[10])
    assert iw[1000].mean() - elbo.mean() > 0.1, (elbo.mean(), {k: v.mean() for k, v in iw.items()})


# ---------------------------------------------------------------- the lab commands
TINY = ["--net", "mlp", "--mlp-hidden", "32", "--latent-dim", "2", "--batch-size", "32", "--eval-every", "10"]


def test_train_resume_eval_sample_through_the_lab_command(lab, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert lab("train", "vae", *TINY, "--total-steps", "20", "--run-dir", straight).returncode == 0
    assert lab("train", "vae", *TINY, "--total-steps", "10", "--run-dir", split).returncode == 0
    assert lab("resume", split, "--total-steps", "20").returncode == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])   # resume is exact

    result = lab("eval", split, "--k", "20", "--n", "40", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["eval/iw_k"] == 20 and metrics["eval/n_samples"] == 40
    assert metrics["eval/nll_iw"] < metrics["eval/neg_elbo"]
    assert metrics["eval/neg_elbo"] == pytest.approx(metrics["eval/reconstruction"] + metrics["eval/kl"])
    assert math.isfinite(metrics["eval/fid"])
    for name in ("reconstructions", "interpolation", "latent_map", "memorization"):
        assert list((split / "plots").glob(f"{name}-*.png")), name

    result = lab("sample", split, "--n", "64")
    assert result.returncode == 0, result.stderr
    assert any(p.endswith(".png") for p in result.stdout.split()) and list((split / "samples").glob("images-*.npz"))


@pytest.mark.parametrize("options", [{"likelihood": "gaussian"}, {"likelihood": "continuous-bernoulli"},
                                     {"likelihood": "discretized-gaussian"},
                                     {"binarize": "threshold", "net": "conv", "kl_warmup_steps": 5, "free_bits": 0.1}])
def test_every_likelihood_and_option_trains(options):
    from generative.vae.algo import Algorithm, Config
    from lab.runtime import RunOptions, Runtime

    config = Config(**{"net": "mlp", "mlp_hidden": 32, "latent_dim": 2, "batch_size": 32, "total_steps": 3, **options})
    algo = Algorithm(config, Runtime(RunOptions(device="cpu")))
    before = [p.detach().clone() for p in algo.model.parameters()]
    losses = [float(algo.train_step(step)["train/loss"]) for step in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert all(not torch.equal(p, q) for p, q in zip(before, algo.model.parameters()))   # all trained, σ too


@pytest.mark.parametrize("argv, words", [
    (["--data", "digts"], "did you mean digits"),
    (["--likelihood", "poisson"], "invalid choice 'poisson' for argument '--likelihood'"),
    (["--beta", "-1"], "--beta must be >= 0"),
    (["--data", "mnist", "--data-dir", "{tmp}"], "train-images-idx3-ubyte"),
])
def test_bad_input_is_one_clear_line(lab, tmp_path, argv, words):
    result = lab("train", "vae", *[a.format(tmp=tmp_path) for a in argv], "--run-dir", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lab: error: ") and words in result.stderr
    assert not (tmp_path / "run").exists()


def test_evaluation_passes_hold_no_more_than_the_default_on_28x28_images():
    """The pairs decoded per pass shrink with the image and the net, so a CIFAR-10 evaluation (9.0 GB peak
    with all 32,768 pairs at once) holds no wider activation than the default conv net on MNIST does."""
    from types import SimpleNamespace

    from generative.vae.algo import PASS_FLOATS, Algorithm, Config, EvalOptions
    default = EvalOptions().batch_size

    def pairs(shape, **fields):
        return Algorithm._pairs_per_pass(SimpleNamespace(config=Config(**fields), shape=shape), default)
    assert pairs((1, 28, 28)) == default == PASS_FLOATS // (16 * 784)
    assert pairs((1, 28, 28), net="mlp") == default                     # 512 hidden units: far below the bound
    for shape, channels in (((3, 32, 32), 16), ((1, 28, 28), 64)):
        assert pairs(shape, conv_channels=channels) * channels * math.prod(shape) <= PASS_FLOATS
        assert pairs(shape, conv_channels=channels) < default

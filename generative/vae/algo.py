"""Variational autoencoder (Kingma & Welling, 2014), trained on the ELBO.

log p(x) is intractable, so we maximize the variational lower bound

    ELBO(x) = E_q(z|x)[log p(x|z)] − KL(q(z|x) || p(z))  ≤  log p(x)

with q(z|x) = N(μ(x), diag σ²(x)) from the encoder, p(z) = N(0, I), one reparameterized sample
z = μ + σ ⊙ ε per example for the expectation and the Gaussian KL in closed form. Options: β-VAE
weighting of the KL (Higgins et al., 2017), a linear KL warm-up (Bowman et al., 2016; Sønderby et al.,
2016) and free bits (Kingma et al., 2016).

Likelihood (see likelihoods.py): the default is Bernoulli on dynamically binarized images (each
minibatch draws x ~ Bernoulli(gray levels) afresh; the test split is binarized once with a fixed seed),
the protocol of the MNIST log-likelihood literature, so -ELBO and -log p(x) are true nats per image.
Gaussian (fixed or learned σ) and continuous-Bernoulli model the gray levels themselves; theirs are
densities, not comparable with the Bernoulli figures. The discretized Gaussian integrates the Gaussian
over each discrete gray level's bin (17 levels for digits): probabilities again, so its -log p(x) is in
nats of the discrete image, the figure PixelCNN and the DDPM bound report on the same test split.

Evaluation reports, on the test split, -ELBO split into reconstruction and KL, and the importance-
weighted estimate of -log p(x) with K samples (Burda et al., 2016); ``lab eval`` adds the sample
scores of generative.metrics. One step is one optimizer step on a minibatch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from generative.data import IMAGE_DATASETS, BatchIterator, binarize_once, check_dataset, load_images
from generative.plots import enlarged, figure_image, samples_grid
from generative.vae.bound import free_bits_kl
from generative.vae.likelihoods import LIKELIHOODS, Likelihood, make_likelihood
from generative.vae.model import VAE, log_likelihood_bounds
from generative.vae.nets import make_networks
from lab.memory import require_batch
from lab.config import non_negative, one_of, positive
from lab.media import Arrays, Image, labelled_grid
from lab.runtime import Runtime, unwrap

TRAINING_EVAL_K = 16
"""Importance samples per test image in the evaluations during training (``lab eval`` takes --k)."""
PASS_FLOATS = 32768 * 16 * 784
"""The widest activation one evaluation pass may hold, in floats (1.6 GB): what the default --batch-size of
pairs takes with the default 16-channel conv net on 28x28 images. Larger images or wider nets decode fewer
pairs at once (CIFAR-10: a quarter), so they peak no higher: a CIFAR-10 end-of-run evaluation peaked at
9.0 GB with all 32,768 pairs in one pass, 3.3 GB with this bound (1.3 GB of it held before evaluating)."""


@dataclass(frozen=True)
class Config:
    """Variational autoencoder trained on the ELBO (Kingma & Welling, 2014)."""

    data: str = "digits"
    """Image data set: digits (8x8, ships with scikit-learn), mnist, fashion-mnist, cifar10."""
    data_dir: Path | None = None
    """Folder holding the mnist / fashion-mnist / cifar10 files (default $LAB_DATA_DIR, else ./data)."""
    net: Literal["conv", "mlp"] = "conv"
    """Encoder/decoder pair: conv (strided convolutions) or mlp (two hidden layers each way)."""
    latent_dim: int = 16
    """Size of the latent z (2 adds a latent map coloured by class to the evaluation plots)."""
    conv_channels: int = 16
    """Channels of the first conv layer (doubling at each stride-2 stage); used by --net conv.
    16 suits 8x8 digits on a CPU; 32 or more for MNIST-sized images."""
    mlp_hidden: int = 512
    """Units of each hidden layer; used by --net mlp."""
    likelihood: Likelihood = "bernoulli"
    """p(x|z): bernoulli on binarized pixels (nats comparable with the literature), gaussian or
    continuous-bernoulli densities on the gray levels, or discretized-gaussian: probabilities of the
    data's discrete gray levels (17 for digits), comparable with PixelCNN and the DDPM bound."""
    binarize: Literal["dynamic", "threshold"] = "dynamic"
    """How --likelihood bernoulli binarizes: dynamic (a fresh Bernoulli draw of every training batch;
    test split drawn once with a fixed seed) or threshold (pixel > 0.5, train and test)."""
    gaussian_variance: Literal["learned", "fixed"] = "learned"
    """--likelihood gaussian / discretized-gaussian: one learned σ shared by all pixels (σ-VAE), or σ
    fixed at --gaussian-std."""
    gaussian_std: float = 0.1
    """σ of the Gaussian likelihood (the starting value when it is learned)."""
    beta: float = 1.0
    """Weight of the KL term (β-VAE; 1 is the true ELBO)."""
    kl_warmup_steps: int = 0
    """Steps over which the KL weight rises linearly from 0 to --beta (0: no warm-up)."""
    free_bits: float = 0.0
    """Free bits: nats per latent dimension below which its KL is not pushed down (0: off)."""
    batch_size: int = 128
    """Minibatch size (global, split across torchrun processes)."""
    lr: float = 1e-3
    """Adam learning rate."""
    total_steps: int = 2000
    """Optimizer steps to train for (one step = one minibatch)."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the data set."""
        return self.data

    def __post_init__(self):
        check_dataset(self.data, IMAGE_DATASETS)
        positive(self, "latent_dim", "conv_channels", "mlp_hidden", "gaussian_std", "batch_size", "lr",
                 "total_steps")
        non_negative(self, "beta", "kl_warmup_steps", "free_bits")
        one_of(self, "net", ("conv", "mlp"))
        one_of(self, "likelihood", LIKELIHOODS)
        one_of(self, "binarize", ("dynamic", "threshold"))
        one_of(self, "gaussian_variance", ("learned", "fixed"))


@dataclass(frozen=True)
class EvalOptions:
    """Test-set bounds on log p(x), sample scores and plots of a VAE run."""

    k: int = 1000
    """Importance samples per test image for the estimate of -log p(x) (k = 1 gives the ELBO)."""
    batch_size: int = 32768
    """(image, latent sample) pairs decoded per forward pass; lower it if memory runs short."""
    n: int = 1000
    """Generated images scored by the data set's classifier (FID, IS, precision, recall)."""
    seed: int = 0
    """Seed of the evaluation's latent samples."""
    scores: bool = True
    """Score samples with the data set's classifier (digits: trained on first use; other data sets need
    one installed, see generative/metrics/classifier.py)."""

    def __post_init__(self):
        positive(self, "k", "batch_size", "n")
        non_negative(self, "seed")


@dataclass(frozen=True)
class SampleOptions:
    """Draw images z ~ p(z), x = mean of p(x|z)."""

    n: int = 64
    """Number of images."""
    seed: int = 0
    """Seed of the latent draws."""

    def __post_init__(self):
        positive(self, "n")
        non_negative(self, "seed")


class Algorithm:
    step_size = 1
    best_metric = None   # the only held-out split is the test split: no checkpoint is chosen on it

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        train = load_images(config.data, "train", config.data_dir)
        test = load_images(config.data, "test", config.data_dir)
        self.shape = tuple(train.images.shape[1:])
        self.dynamic = config.likelihood == "bernoulli" and config.binarize == "dynamic"
        self.test_gray = test.images.to(runtime.device)
        self.test_x = self._binarized(test.images).to(runtime.device)
        self.test_labels, self.num_classes = test.labels, test.num_classes
        self.batches = BatchIterator(train.images if self.dynamic else self._binarized(train.images),
                                     batch_size=config.batch_size, seed=runtime.derive_seed("real-data", per_rank=False),
                                     device=runtime.device)

        width = config.conv_channels if config.net == "conv" else config.mlp_hidden
        encoder, decoder = make_networks(config.net, self.shape, config.latent_dim, width)
        likelihood = make_likelihood(config.likelihood, config.gaussian_variance, config.gaussian_std, train.levels)
        self.model = runtime.wrap(VAE(encoder, decoder, likelihood, config.latent_dim))   # train through it
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.noise_rng = torch.Generator(runtime.device).manual_seed(runtime.derive_seed("noise", per_rank=False))

    @property
    def vae(self) -> VAE:
        """The VAE inside the training wrapper (``unwrap``): for evaluation, sampling and state."""
        return unwrap(self.model)

    def _binarized(self, images: torch.Tensor) -> torch.Tensor:
        """The targets p(x|z) scores: binary pixels for the Bernoulli likelihood, else the gray levels."""
        if self.config.likelihood != "bernoulli":
            return images
        if self.config.binarize == "threshold":
            return (images > 0.5).float()
        return binarize_once(images)

    def _kl_weight(self, step: int) -> float:
        warmup = self.config.kl_warmup_steps
        return self.config.beta * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    # ------------------------------------------------------------------ training
    def train_step(self, step: int) -> dict:
        (x,) = next(self.batches)           # the global batch, and its noise: each process keeps its rows
        if self.dynamic:
            x = torch.bernoulli(x, generator=self.noise_rng)   # dynamic binarization: a fresh binary image every time
        eps = torch.randn((len(x), self.config.latent_dim), generator=self.noise_rng, device=x.device)
        rows = self.rt.shard(self.config.batch_size)
        x, eps = x[rows], eps[rows]
        with self.rt.autocast():
            log_px_z, kl_per_dim = self.model(x, eps)
        kl = kl_per_dim.sum(-1)
        beta = self._kl_weight(step)
        # the ELBO: E_q(z|x)[log p(x|z)] − KL(q(z|x) || p(z)), one z per example (β, warm-up, free bits optional)
        elbo = log_px_z - beta * free_bits_kl(kl_per_dim, self.config.free_bits)
        loss = -elbo.mean()
        self.rt.optimize(loss, self.optimizer)
        return {"train/loss": loss.detach(), "train/neg_elbo": (kl - log_px_z).mean().detach(),
                "train/reconstruction": -log_px_z.mean().detach(), "train/kl": kl.mean().detach(),
                "train/beta": beta}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        final = not during_training
        options = options or (EvalOptions(k=TRAINING_EVAL_K) if during_training else EvalOptions())
        self.vae.eval()
        generator = torch.Generator(self.rt.device).manual_seed(options.seed)
        bounds = log_likelihood_bounds(self.vae, self.test_x, options.k, self._pairs_per_pass(options.batch_size),
                                       generator)
        results = {
            "eval/neg_elbo": -bounds["elbo"].mean().item(),
            "eval/reconstruction": -bounds["reconstruction"].mean().item(),
            "eval/kl": bounds["kl"].mean().item(),
            "eval/nll_iw": -bounds["iw"].mean().item(),
            "eval/iw_k": options.k,
            "eval/active_units": self._active_units(),
            "samples/grid": samples_grid(enlarged(self.vae.sample(64, generator)), nrow=8),
            "plots/reconstructions": self._reconstructions(),
            "plots/interpolation": self._interpolation(),
        }
        if self.config.latent_dim == 2:
            results["plots/latent_map"] = self._latent_map()
        if final and options.scores:
            from generative.metrics import memorization_grid, require_scorable, score_images
            require_scorable(options.n, self.shape, self.rt.device)
            samples = torch.cat([self.vae.sample(min(1000, n), generator)
                                 for n in range(options.n, 0, -1000)])
            results.update(score_images(samples, self.config.data, data_dir=self.config.data_dir,
                                        device=self.rt.device))
            results["plots/memorization"] = memorization_grid(samples, self.config.data,
                                                              data_dir=self.config.data_dir)
        self.vae.train()
        return results

    def _pairs_per_pass(self, batch_size: int) -> int:
        """``batch_size`` (image, latent) pairs, fewer where one pair's widest activation is larger."""
        width = self.config.conv_channels if self.config.net == "conv" else self.config.mlp_hidden
        floats = width * math.prod(self.shape) if self.config.net == "conv" else width + math.prod(self.shape)
        return max(1, min(batch_size, PASS_FLOATS // floats))

    def _posterior_means(self) -> torch.Tensor:
        """E_q[z|x] of every test image, encoded in passes of at most ``_pairs_per_pass`` images."""
        return torch.cat([self.vae.encoder(x)[0] for x in self.test_x.split(self._pairs_per_pass(len(self.test_x)))])

    def _active_units(self) -> int:
        """Latent dimensions the model uses: Cov_x(E_q[z]) > 0.01 (Burda et al., 2016)."""
        return int((self._posterior_means().var(0) > 0.01).sum().item())

    def _reconstructions(self, n: int = 32):
        """Columns of test images: the gray image, the binary image drawn from it and encoded (Bernoulli
        likelihood only), and the reconstruction, the mean of p(x|z = μ(x))."""
        x = self.test_x[:n]
        shown = {"test image": self.test_gray[:n]}
        if self.config.likelihood == "bernoulli":
            shown["binary input"] = x
        shown["reconstruction"] = self.vae.decode_mean(self.vae.encoder(x)[0])
        kinds = torch.stack(list(shown.values())).view(len(shown), 4, n // 4, *self.shape)   # (kind, row, column, C, H, W)
        images = enlarged(kinds.transpose(0, 1).flatten(0, 2)).clamp(0.0, 1.0)
        return Image(labelled_grid(images, list(shown) * 4, nrow=n // 4))

    def _interpolation(self, pairs: int = 8, steps: int = 10):
        """Each row: a test image, the decoded means along the straight line between the two posterior
        means, and the other test image."""
        ends = self.test_x[:2 * pairs].view(2, pairs, *self.shape)
        mu_a, mu_b = self.vae.encoder(ends[0])[0], self.vae.encoder(ends[1])[0]
        t = torch.linspace(0.0, 1.0, steps, device=mu_a.device).view(1, steps, 1)
        path = self.vae.decode_mean(((1 - t) * mu_a[:, None] + t * mu_b[:, None]).flatten(0, 1))
        gray = self.test_gray[:2 * pairs].view(2, pairs, 1, *self.shape)
        rows = torch.cat([gray[0], path.view(pairs, steps, *self.shape), gray[1]], 1)
        return samples_grid(enlarged(rows.flatten(0, 1)), nrow=steps + 2)

    def _latent_map(self):
        """The test set's posterior means in the 2-D latent space, coloured by class."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        mu = self._posterior_means().cpu().numpy()
        figure, axis = plt.subplots(figsize=(5, 4.5), dpi=100)
        points = axis.scatter(mu[:, 0], mu[:, 1], c=self.test_labels.numpy(), cmap="tab10", s=6,
                              vmin=-0.5, vmax=self.num_classes - 0.5)
        figure.colorbar(points, ax=axis, ticks=range(self.num_classes), label="class")
        axis.set_xlabel("z[0]")
        axis.set_ylabel("z[1]")
        axis.set_title(f"{self.config.data} test set: posterior means E[z|x]", fontsize=9)
        figure.tight_layout()
        return figure_image(figure)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, options: SampleOptions | None = None) -> dict:
        options = options or SampleOptions()
        # decoder activations for all n at once: about conv channels x pixels floats per sample
        require_batch(options.n, 4 * 4 * self.config.conv_channels * math.prod(self.shape), "--n", self.rt.device)
        self.vae.eval()
        images = self.vae.sample(options.n, torch.Generator(self.rt.device).manual_seed(options.seed))
        return {"samples/grid": samples_grid(enlarged(images)), "samples/images": Arrays({"images": images})}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "batches": self.batches.state_dict(), "noise_rng": self.noise_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.vae.load_state_dict(state["model"])
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        if "noise_rng" in state:   # runs written before the VAE had its own noise stream drew from torch's
            self.noise_rng.set_state(state["noise_rng"])


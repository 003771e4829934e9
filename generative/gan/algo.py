"""GANs: the two-player game min_G max_D E[log D(x)] + E[log(1 - D(G(z)))] and the fixes that make it train.

One ``train_step`` is one generator update preceded by ``n_critic`` discriminator updates, each on a
fresh real batch and fresh latents (Goodfellow et al. 2014, Algorithm 1):

    for n_critic times:   D <- D - lr * grad_D  L_D(D(x), D(G(z)))       (+ lambda * gradient penalty,
                                                                          + gamma / 2 * R1 on real data)
    (with --pack m, D reads m samples joined into one input, all real or all generated: PacGAN;
     with --instance-noise sigma, both inputs get N(0, sigma_t^2) noise, sigma_t -> 0 at half the run)
    once:                 G <- G - lr * grad_G  L_G(D(G(z)))
    (with --top-k, L_G averages only the k generated samples D scores highest: Top-k training)
    G_ema <- decay * G_ema + (1 - decay) * G                              (the copy used for sampling)
    lr <- lr_0 * (1 - t / T)                                              (unless --no-lr-decay)

On the 2-D toys the samples are then filtered by the discriminator (rejection.py, --drs-quantile).

The losses (minimax, non-saturating, wgan-gp, hinge) are the pure functions of ``losses.py``; the
networks (MLPs for the 2-D toys, DCGAN for images, spectral norm and label conditioning as options)
are in ``nets.py``. Data, scores and plots come from ``generative.data`` / ``metrics`` / ``plots``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from lab import Arrays, Image, Video
from lab.memory import require_batch
from lab.config import in_range, non_negative, one_of, positive, require
from lab.runtime import Runtime, unwrap
from generative.data import (DATASETS, IMAGE_DATASETS, NATIVE_SHAPE, TOY_DATASETS, BatchIterator, check_dataset,
                             load_images, toy_distribution)
from generative.gan.losses import LOSSES, gradient_penalty, r1_penalty
from generative.metrics import score_images, score_toy
from generative.gan.nets import DCGANGenerator, MLPGenerator, dcgan_discriminator, mlp_discriminator, pack
from generative.gan.rejection import rejection_sample
from generative.plots import samples_grid, toy_scatter

# loss -> (n_critic, Adam lr, beta1, beta2) as published
PUBLISHED = {
    "minimax": (1, 2e-4, 0.5, 0.999),          # DCGAN, Radford et al. 2016
    "non-saturating": (1, 2e-4, 0.5, 0.999),   # DCGAN, Radford et al. 2016
    "wgan-gp": (5, 1e-4, 0.0, 0.9),            # Gulrajani et al. 2017
    "hinge": (5, 2e-4, 0.0, 0.9),              # SN-GAN, Miyato et al. 2018
}
TOY_STEPS = 8000   # generator updates on the 2-D toys (images: 3,000); see the total_steps field
TOY_DRS_QUANTILE = 0.999   # rejection sampling of the toys' samples; see the drs_quantile field


def check_drs_quantile(quantile: float, data: str, pack_size: int) -> None:
    require(0.0 <= quantile < 1.0, f"--drs-quantile must be in [0, 1), got {quantile}.")
    require(quantile == 0.0 or data in TOY_DATASETS, f"--drs-quantile applies to the 2-D toys, not {data} images.")
    require(quantile == 0.0 or pack_size == 1,
            f"--drs-quantile needs --pack 1: a discriminator packed by {pack_size} scores samples together, not one.")


@dataclass(frozen=True)
class Config:
    """GAN training: minimax / non-saturating / WGAN-GP / hinge losses on 2-D toys or images."""

    data: str = "ring8"
    """Data set: ring8 or grid25 (the mode-collapse benchmarks), moons, swissroll, or digits / mnist /
    fashion-mnist / cifar10 images."""
    data_dir: Path | None = None
    """Folder holding MNIST / Fashion-MNIST / CIFAR-10 files (default $LAB_DATA_DIR, else ./data)."""
    image_size: int | None = None
    """Train on images resized to this many pixels a side, 8 to 32 (default: the data's native size;
    digits may use 8, 16 or 32; mnist 28 or 32)."""
    loss: str = "non-saturating"
    """minimax (the saturating original), non-saturating, wgan-gp (Wasserstein with gradient penalty)
    or hinge."""
    conditional: bool = False
    """Feed the class label to both networks (image data only)."""
    conditioning: str = "projection"
    """How the discriminator reads the label: projection (<embed(y), h> added to its score) or concat
    (one-hot planes appended to its input)."""
    spectral_norm: bool = False
    """Spectrally normalise every discriminator layer (largest singular value 1)."""
    latent_dim: int | None = None
    """Dimension of the generator's Gaussian input z (default: 2 on the 2-D toys, as in the VEEGAN / PacGAN
    benchmarks, 64 for images)."""
    hidden: int = 128
    """Units per hidden layer of the 2-D toy MLPs."""
    depth: int = 5
    """Hidden layers of the 2-D toy MLPs (5: at 8,000 steps, 5 seeds, 3 layers at lr 5e-4 gave grid25 24.2/25
    modes and 50.5 % high-quality samples, ring8 8/8 and 87.8 %; 5 layers at lr 2e-4 grid25 24.4/25 and
    73.5 %, ring8 7.8/8 and 95.5 %: a deeper generator jumps between modes more steeply, so fewer samples
    fall on the bridges a 2-D latent forces between them; deeper than 5 dropped modes)."""
    generator_depth: int | None = None
    """Hidden layers of the 2-D toy generator (default: depth; on grid25 at 8,000 steps and lr 5e-4, seed 0,
    a 5-layer generator against a 3-layer discriminator gave 22/25 modes and 67 % high-quality samples,
    5 layers in both 19/25 and 89 %)."""
    channels: int = 64
    """Channels of the DCGAN discriminator's first layer (and the generator's last hidden layer)."""
    batch_size: int = 256
    """Real (and generated) samples per discriminator and per generator update."""
    n_critic: int | None = None
    """Discriminator updates per generator update (default as published: 5 for wgan-gp and hinge, else 1;
    at least 2 on the 2-D toys, where on grid25 it raised the generator's high-quality share from 75-76 %
    to 81-82 %, seeds 0 and 2, for about 1.5x the time per step)."""
    lr: float | None = None
    """Adam learning rate of both networks (default as published: 1e-4 for wgan-gp, else 2e-4; on grid25
    with the 5-layer MLPs, 5e-4 kept 19/25 modes where 2e-4 kept 25, seed 0)."""
    beta1: float | None = None
    """Adam beta1 (default as published: 0.5 for minimax / non-saturating, 0 for wgan-gp / hinge)."""
    beta2: float | None = None
    """Adam beta2 (default as published: 0.999 for minimax / non-saturating, 0.9 for wgan-gp / hinge)."""
    gp_weight: float = 10.0
    """lambda, the weight of the WGAN-GP gradient penalty."""
    pack: int = 1
    """PacGAN packing (2-D toys only): the discriminator judges this many samples at once, all real or all
    generated (Lin et al. 2018); each update draws pack x batch_size samples (1: off; on grid25 at 3,000
    steps pack 4 left 1.6 % high-quality samples against ~25 % without, so it stays off by default)."""
    r1_weight: float = 0.0
    """gamma of the R1 penalty gamma / 2 * E[||grad D(x)||^2] on real data (Mescheder et al. 2018; 0: off;
    on grid25 at 3,000 steps, one seed, gamma 0.1 / 1 / 10 gave 26 / 23 / 30 % high-quality samples, within
    the seed-to-seed spread, for twice the time per step, so it stays off by default)."""
    lr_decay: bool = True
    """Decay both learning rates linearly to 0 over total_steps (ring8, 3,000 steps, 5 seeds: 77 % high-quality
    samples with it, 56 % without; on digits one seed scored a worse FID with it)."""
    top_k: float = 1.0
    """Top-k training of the generator (Sinha et al. 2020): its loss averages only the k generated samples
    the discriminator scores highest, k annealed from the whole batch down to this fraction of it (1: off;
    on grid25, seed 0, 0.5 / 0.75 raised the high-quality share from 28 to 36 / 37 % with 3x128 MLPs at
    3,000 steps but lowered it from 89 to 76 % with 5x128 ones at 8,000, so it stays off by default)."""
    top_k_decay: float = 0.999
    """Per-step decay of the kept fraction before it reaches top_k: k_t = max(top_k, decay^t) x batch."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of G's weights used for sampling (0: sample from G)."""
    instance_noise: float | None = None
    """Std of Gaussian noise added to the discriminator's real and fake inputs, annealed linearly to 0
    over the first half of training (Sonderby et al. 2017), the second half left to sharpen the samples
    (0: off; default 0.5 on the 2-D toys: on grid25 it kept modes that runs without it left empty, and
    annealed over the whole run instead it blurred the samples, seed 4 29 % high quality; 0 for images)."""
    drs_quantile: float | None = None
    """Discriminator rejection sampling of the 2-D toys' samples (Azadi et al. 2019, generative/gan/rejection.py):
    each generated point is kept with probability sigmoid(F(x) - gamma), gamma this quantile of F over each
    batch of 10,000 proposals; the higher, the closer to exact rejection sampling and the fewer kept
    (default 0.999 on the 2-D toys without --pack, keeping 0.6-7 % of the proposals: on grid25, 5 seeds, it
    lifted the emptiest mode from 0-4 to 18-48 of 2,500 samples where 0.95 left 1-11; 0: off, the
    generator's own samples; images: off)."""
    eval_samples: int = 2500
    """Samples drawn at each evaluation (2,500 as in the VEEGAN / PacGAN toy benchmarks)."""
    total_steps: int | None = None
    """Generator updates to train for, each preceded by n_critic discriminator updates (default: 8,000 on
    the 2-D toys, 3,000 for images)."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the data set."""
        return self.data

    def __post_init__(self):
        check_dataset(self.data, DATASETS)
        one_of(self, "loss", LOSSES)
        one_of(self, "conditioning", ("projection", "concat"))
        for name in ("latent_dim", "generator_depth", "total_steps"):
            if getattr(self, name) is not None:
                positive(self, name)
        positive(self, "hidden", "depth", "channels", "batch_size", "eval_samples")
        non_negative(self, "gp_weight", "r1_weight")
        if self.instance_noise is not None:
            non_negative(self, "instance_noise")
        if self.drs_quantile is not None:
            check_drs_quantile(self.drs_quantile, self.data, self.pack)
        positive(self, "pack")
        require(self.pack == 1 or self.data in TOY_DATASETS, f"--pack applies to the 2-D toys, not {self.data} images.")
        in_range(self, "ema_decay", 0.0, 1.0)
        in_range(self, "top_k", 0.0, 1.0)
        require(self.top_k > 0, f"--top-k must be > 0, got {self.top_k}.")
        in_range(self, "top_k_decay", 0.0, 1.0)
        if self.n_critic is not None:
            positive(self, "n_critic")
        if self.lr is not None:
            positive(self, "lr")
        for name in ("beta1", "beta2"):
            if getattr(self, name) is not None:
                in_range(self, name, 0.0, 0.9999)
        require(not (self.conditional and self.data in TOY_DATASETS),
                f"--conditional needs labelled images; {self.data} is a 2-D toy without classes.")
        if self.data in TOY_DATASETS:   # activations of both MLPs, forward and backward
            require_batch(self.batch_size * self.pack, 8 * 4 * self.hidden * max(self.depth, self.generator_depth or 0),
                          "--batch-size")
        if self.image_size is not None:
            require(self.data in IMAGE_DATASETS, f"--image-size applies to image data, not {self.data}.")
            require(self.image_size in (8, 16, 28, 32),
                    f"--image-size must be 8, 16, 28 or 32, got {self.image_size}.")

    @property
    def toy(self) -> bool:
        return self.data in TOY_DATASETS

    def resolved(self) -> Config:
        """A copy with the derived defaults written in: the loss's published n_critic, lr and betas, the
        latent dimension (2 on the toys, 64 for images), the generator's depth (depth), the run length
        (TOY_STEPS on the toys, 3,000 for images), instance noise and rejection sampling (on for the toys,
        off for images) and the native image size of image data."""
        defaults = dict(zip(("n_critic", "lr", "beta1", "beta2"), PUBLISHED[self.loss]),
                        latent_dim=2 if self.toy else 64, generator_depth=self.depth,
                        total_steps=TOY_STEPS if self.toy else 3000, instance_noise=0.5 if self.toy else 0.0,
                        drs_quantile=TOY_DRS_QUANTILE if self.toy and self.pack == 1 else 0.0)
        if self.toy:   # a second discriminator update per generator update sharpens the toys' samples
            defaults["n_critic"] = max(2, defaults["n_critic"])
        if self.data in IMAGE_DATASETS:
            defaults["image_size"] = NATIVE_SHAPE[self.data][-1]
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


@dataclass(frozen=True)
class EvalOptions:
    """Options of `lab eval` for a GAN run."""
    n: int = 0
    """Samples to score (0: the run's --eval-samples)."""
    drs_quantile: float | None = None
    """Discriminator rejection sampling's quantile (default: the run's --drs-quantile; 0: off)."""

    def __post_init__(self):
        non_negative(self, "n")


@dataclass(frozen=True)
class SampleOptions:
    """Options of `lab sample` for a GAN run."""
    n: int = 64
    """How many samples to draw."""
    label: int | None = None
    """Class to draw (conditional runs; default: every class in turn)."""
    truncation: float | None = None
    """Truncation trick: redraw latent entries whose magnitude exceeds this (BigGAN); default none."""
    seed: int = 0
    """Seed of the latents."""
    drs_quantile: float | None = None
    """Discriminator rejection sampling's quantile (default: the run's --drs-quantile; 0: off, the
    generator's own samples)."""


# ---------------------------------------------------------------- latents
def truncated_normal(shape: tuple[int, ...], threshold: float | None, generator: torch.Generator,
                     device) -> torch.Tensor:
    """z ~ N(0, I), entries with |z| > threshold redrawn until none is (Brock et al. 2019)."""
    z = torch.randn(shape, generator=generator, device=device)
    if threshold is None:
        return z
    outside = z.abs() > threshold
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=device)
        outside = z.abs() > threshold
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a, b (N, D) at fractions t (T,) -> (N, T, D)
    (White 2016: stays on the shell where Gaussian latents live)."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1 + 1e-6, 1 - 1e-6)
    omega = torch.acos(cos)[:, None, None]
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)


class Algorithm:
    step_size = 1

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        config = config.resolved()   # what the session hands over already; a Config built by hand gets the same
        self.config, self.rt, self.training = config, runtime, training
        device = runtime.device
        self.d_loss_fn, self.g_loss_fn = LOSSES[config.loss]
        self.toy = config.toy
        if self.toy:
            self.distribution = toy_distribution(config.data)
            self.num_classes = 0
            self.real_rng = torch.Generator().manual_seed(runtime.derive_seed("real-data"))
            generator = MLPGenerator(config.latent_dim, config.hidden, config.generator_depth)
            discriminator = mlp_discriminator(config.hidden, config.depth, dim=2 * config.pack,
                                              use_spectral_norm=config.spectral_norm)
            self.best_metric = None   # modes and quality pull apart; the last model is the one scored
        else:
            images = load_images(config.data, "train", config.data_dir, config.image_size)
            self.num_classes = images.num_classes if config.conditional else 0
            channels, size = images.images.shape[1], images.images.shape[-1]
            self.pixels = size * size
            self.batches = BatchIterator(images.images * 2 - 1, images.labels, batch_size=config.batch_size,
                                         seed=runtime.derive_seed("real-data"), device=device)
            generator = DCGANGenerator(config.latent_dim, config.channels, size, channels, self.num_classes)
            discriminator = dcgan_discriminator(
                config.channels, size, channels, self.num_classes, config.conditioning, config.spectral_norm,
                batch_norm=config.loss != "wgan-gp" and not config.spectral_norm)
            self.best_metric = ("eval/fid", "min")
        self.ema = copy.deepcopy(generator.to(device)).eval().requires_grad_(False)
        # one handle per network: train through the wrappers, unwrap them for the EMA and state
        self.generator, self.discriminator = runtime.wrap(generator), runtime.wrap(discriminator)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.noise_rng = torch.Generator(device).manual_seed(runtime.derive_seed("noise"))
        self.m = config.pack
        self.step = 0
        self.snapshots: list[torch.Tensor] = []   # toy samples at each training evaluation, for the GIF
        self.snapshot_steps: list[int] = []

    # ---------------------------------------------------------------- data and latents
    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self.rt.shard(self.config.batch_size)
        if self.toy:   # batch_size packs of m real samples each
            x = pack(self.distribution.sample(self.config.batch_size * self.m, self.real_rng), self.m)[rows]
            return x.to(self.rt.device), None
        x, y = next(self.batches)
        return x[rows], (y[rows] if self.num_classes else None)

    def _latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=self.noise_rng, device=self.rt.device)

    def _instance_noise(self, x: torch.Tensor) -> torch.Tensor:
        # sigma_t = sigma_0 * (1 - t / (T / 2)), 0 in the second half of training
        sigma = self.config.instance_noise * max(0.0, 1.0 - 2 * self.step / self.config.total_steps)
        if sigma == 0:
            return x
        return x + sigma * torch.randn(x.shape, generator=self.noise_rng, device=x.device)

    # ---------------------------------------------------------------- the game
    def _discriminator_step(self) -> dict:
        real, labels = self._real_batch()
        with torch.no_grad(), self.rt.autocast():
            fake = pack(self.generator(self._latent(len(real) * self.m), labels).float(), self.m)
        real, fake = self._instance_noise(real), self._instance_noise(fake)
        with self.rt.autocast():
            d_real = self.discriminator(real, labels).float()
            d_fake = self.discriminator(fake, labels).float()
        loss = self.d_loss_fn(d_real, d_fake)
        metrics = {"train/d_loss": loss.detach(), "train/d_real": d_real.mean().detach(),
                   "train/d_fake": d_fake.mean().detach()}
        if self.config.loss == "wgan-gp":
            epsilon = torch.rand(len(real), generator=self.noise_rng, device=real.device)
            penalty = gradient_penalty(lambda x: self.discriminator(x, labels).float(), real, fake, epsilon)
            loss = loss + self.config.gp_weight * penalty   # L_D + lambda * E[(||grad D(x_hat)|| - 1)^2]
            metrics["train/gradient_penalty"] = penalty.detach()
        if self.config.r1_weight > 0:
            penalty = r1_penalty(lambda x: self.discriminator(x, labels).float(), real)
            loss = loss + self.config.r1_weight / 2 * penalty   # L_D + gamma / 2 * E_data[||grad D(x)||^2]
            metrics["train/r1_penalty"] = penalty.detach()
        self.rt.optimize(loss, self.opt_d)
        return metrics

    def _generator_step(self) -> dict:
        n = self.config.batch_size // self.rt.world_size
        labels = (torch.randint(self.num_classes, (n,), generator=self.noise_rng, device=self.rt.device)
                  if self.num_classes else None)
        with self.rt.autocast():
            fake = pack(self.generator(self._latent(n * self.m), labels).float(), self.m)
            d_fake = self.discriminator(self._instance_noise(fake), labels).float()
        k = self._top_k(len(d_fake))
        if k < len(d_fake):   # Top-k: L_G over the k samples with the highest D(G(z)) (Sinha et al. 2020)
            d_fake = d_fake.topk(k).values
        loss = self.g_loss_fn(d_fake)
        self.rt.optimize(loss, self.opt_g)
        return {"train/g_loss": loss.detach()}

    def _top_k(self, n: int) -> int:
        # k_t = max(nu, gamma^t) * n, at least 1
        fraction = max(self.config.top_k, self.config.top_k_decay ** self.step)
        return max(1, min(n, round(fraction * n)))

    @torch.no_grad()
    def _update_ema(self) -> None:
        # G_ema <- decay * G_ema + (1 - decay) * G, with the decay warmed up over the first steps
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        generator = unwrap(self.generator)
        torch._foreach_lerp_(list(self.ema.parameters()), list(generator.parameters()), 1 - decay)
        for ema_buffer, buffer in zip(self.ema.buffers(), generator.buffers()):
            ema_buffer.copy_(buffer)

    def _set_learning_rates(self) -> None:
        # lr_t = lr * (1 - t / T): linear decay to 0 over the run
        lr = self.config.lr * (1 - self.step / self.config.total_steps) if self.config.lr_decay else self.config.lr
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def train_step(self, step: int) -> dict:
        self._set_learning_rates()
        self.discriminator.requires_grad_(True)
        for _ in range(self.config.n_critic):
            metrics = self._discriminator_step()
        self.discriminator.requires_grad_(False)   # G's update needs gradients through D, not of D
        metrics.update(self._generator_step())
        self._update_ema()
        self.step += 1
        return metrics

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples of the EMA generator: 2-D points, or images in [0, 1]."""
        out = self.ema(z.to(self.rt.device), None if labels is None else labels.to(self.rt.device)).float()
        return out if self.toy else (out + 1) / 2

    def _labels(self, n: int, label: int | None = None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if label is not None:
            return torch.full((n,), label, dtype=torch.long)
        return torch.arange(n) % self.num_classes

    def _interpolation_strip(self, rng: torch.Generator, truncation: float | None, label: int | None) -> Image:
        """Rows of 10 images along a spherical path between two latents (the label held fixed per row)."""
        rows, steps = 8, 10
        a = truncated_normal((rows, self.config.latent_dim), truncation, rng, self.rt.device)
        b = truncated_normal((rows, self.config.latent_dim), truncation, rng, self.rt.device)
        z = slerp(a, b, torch.linspace(0, 1, steps, device=a.device)).reshape(rows * steps, -1)
        labels = self._labels(rows, label)
        labels = None if labels is None else labels.repeat_interleave(steps)
        return samples_grid(self.generate(z, labels), nrow=steps)

    def _drs_quantile(self, requested: float | None) -> float:
        quantile = self.config.drs_quantile if requested is None else requested
        check_drs_quantile(quantile, self.config.data, self.m)
        return quantile

    @torch.no_grad()
    def rejection_sample(self, n: int, quantile: float, rng: torch.Generator,
                         truncation: float | None = None) -> tuple[torch.Tensor, float]:
        """n toy samples of the EMA generator kept by discriminator rejection sampling, and the share kept."""
        discriminator = unwrap(self.discriminator)
        training = discriminator.training
        discriminator.eval()   # no spectral-norm power iteration: sampling leaves the training state as it was
        try:
            return rejection_sample(
                lambda m: self.generate(truncated_normal((m, self.config.latent_dim), truncation, rng, self.rt.device)),
                lambda x: discriminator(x, None).float(),
                n, quantile, rng)
        finally:
            discriminator.train(training)

    @torch.no_grad()
    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        options = options or EvalOptions()
        n = options.n if options.n > 0 else self.config.eval_samples
        self._require_memory(n)
        rng = torch.Generator(self.rt.device).manual_seed(self.rt.derive_seed("eval", per_rank=False))   # same latents
        z = truncated_normal((n, self.config.latent_dim), None, rng, self.rt.device)
        labels = self._labels(n)
        samples = self.generate(z, labels)
        if self.toy:
            return self._evaluate_toy(samples, self._drs_quantile(options.drs_quantile), rng, during_training)
        scores = score_images(samples, self.config.data, data_dir=self.config.data_dir, labels=labels,
                              device=self.rt.device)
        shown = samples[:100] if self.num_classes else samples[:64]
        return {**scores, "samples/grid": samples_grid(shown, nrow=self.num_classes or None),
                "samples/interpolation": self._interpolation_strip(rng, None, None)}

    def _evaluate_toy(self, samples: torch.Tensor, quantile: float, rng: torch.Generator, during_training: bool) -> dict:
        """Scores of the samples the run draws (rejection-sampled when the quantile is > 0), and of the
        generator's own samples under eval/generator_*."""
        scores = score_toy(samples, self.config.data)
        title = f"step {self.step}"
        if quantile > 0:
            generator_scores = {k.replace("eval/", "eval/generator_"): v for k, v in scores.items()
                                if k in ("eval/modes", "eval/high_quality")}
            samples, kept = self.rejection_sample(len(samples), quantile, rng)
            scores = {**score_toy(samples, self.config.data), **generator_scores, "eval/drs_acceptance": kept}
            title += f", discriminator rejection sampling (kept {100 * kept:.0f} %)"
        results = {**scores, "plots/scatter": toy_scatter(samples, self.distribution, title)}
        if during_training:
            self.snapshots.append(samples[:1000].cpu())
            self.snapshot_steps.append(self.step)
        if self.step >= self.config.total_steps and self.snapshots:
            frames = [toy_scatter(s, self.distribution, f"step {t}").array
                      for s, t in zip(self.snapshots, self.snapshot_steps)]
            results["videos/training"] = Video(frames, fps=2)
        return results

    def _require_memory(self, n: int) -> None:
        """Refuse ``--n`` before drawing when the generator's activations for all n at once (about hidden x
        depth floats a sample on the toys, channels x pixels on images: more than scoring them takes) cannot fit."""
        per_sample = self.config.hidden * self.config.generator_depth if self.toy else self.config.channels * self.pixels
        require_batch(n, 4 * 4 * per_sample, "--n", self.rt.device)

    @torch.no_grad()
    def sample(self, options: SampleOptions | None = None) -> dict:
        options = options or SampleOptions()
        require(options.n > 0, f"--n must be > 0, got {options.n}.")
        require(options.truncation is None or options.truncation > 0,
                f"--truncation must be > 0, got {options.truncation}.")
        if options.label is not None:
            require(self.num_classes > 0, "--label needs a conditional run (trained with --conditional).")
            require(0 <= options.label < self.num_classes,
                    f"--label must be in [0, {self.num_classes - 1}], got {options.label}.")
        self._require_memory(options.n)
        quantile = self._drs_quantile(options.drs_quantile)
        rng = torch.Generator(self.rt.device).manual_seed(options.seed)
        if quantile > 0:
            samples, kept = self.rejection_sample(options.n, quantile, rng, options.truncation)
            return {"samples/scatter": toy_scatter(samples, self.distribution, f"{options.n} samples, discriminator "
                                                   f"rejection sampling (kept {100 * kept:.0f} %)"),
                    "samples/samples": Arrays({"samples": samples.cpu()})}
        z = truncated_normal((options.n, self.config.latent_dim), options.truncation, rng, self.rt.device)
        labels = self._labels(options.n, options.label)
        samples = self.generate(z, labels)
        arrays = Arrays({"samples": samples.cpu(), **({"labels": labels} if labels is not None else {})})
        if self.toy:
            return {"samples/scatter": toy_scatter(samples, self.distribution, f"{options.n} samples"),
                    "samples/samples": arrays}
        nrow = self.num_classes if self.num_classes and options.label is None else None
        return {"samples/grid": samples_grid(samples, nrow=nrow),
                "samples/interpolation": self._interpolation_strip(rng, options.truncation, options.label),
                "samples/samples": arrays}

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "generator": unwrap(self.generator).state_dict(), "discriminator": unwrap(self.discriminator).state_dict(),
            "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise_rng.get_state(), "step": self.step,
            "data": self.real_rng.get_state() if self.toy else self.batches.state_dict(),
            "snapshots": list(self.snapshots), "snapshot_steps": list(self.snapshot_steps),
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        if not self.training:
            return
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise_rng.set_state(state["noise_rng"])
        self.step = int(state["step"])
        if self.toy:
            self.real_rng.set_state(state["data"])
        else:
            self.batches.load_state_dict(state["data"])
        self.snapshots, self.snapshot_steps = list(state["snapshots"]), list(state["snapshot_steps"])

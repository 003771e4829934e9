"""DDPM (Ho et al., 2020): learn to undo a fixed Gaussian noising process, then sample by undoing it.

One ``train_step`` is one optimizer step of the simple loss (Ho et al., eq. 14), the reweighted
variational bound whose terms reduce to matching the posterior mean q(x_{t-1} | x_t, x_0):

    x_0 ~ data,  t ~ U{0, ..., T-1},  ε ~ N(0, I)
    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε                       (forward process, closed form)
    L = || f_θ(x_t, t, y) - target ||²   with target ε (default), v or x_0
    (--prediction levels: L = -log p_θ(x_0 | x_t), a softmax over the data's levels per pixel)
    θ_ema <- decay · θ_ema + (1 - decay) · θ                     (the weights used for sampling)

Sampling runs the learned reverse process p_θ(x_{t-1} | x_t) from x_T ~ N(0, I): ancestral DDPM or
DDIM, with classifier-free guidance for class-conditional models (labels dropped to a "no label"
token with probability ``label_dropout`` during training). The schedule (``schedule.py``), the
samplers (``sampler.py``) and the networks (``unet.py``, ``mlp.py``) are separate modules.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lab import Arrays, Image
from lab.config import in_range, non_negative, one_of, positive, require
from lab.media import image_grid
from lab.memory import require_batch
from lab.presets import fill_unset
from lab.runtime import Runtime, unwrap
from generative.data import (DATASETS, NATIVE_SHAPE, TOY_DATASETS, BatchIterator, check_dataset, level_indices,
                             load_images, toy_distribution)
from generative.diffusion.export import diffusers_files
from generative.diffusion.bound import reverse_step, step_term, variational_bound
from generative.diffusion.mlp import MLPDenoiser
from generative.diffusion.sampler import SAMPLERS, VARIANCES, SamplerName, Variance, ddim_sample, ddpm_sample, guided
from generative.diffusion.schedule import PREDICTIONS, SCHEDULES, NoiseSchedule, Prediction, Schedule
from generative.diffusion.unet import UNet
from generative.likelihood import bits_per_dim, discretized_gaussian_log_prob
from generative.plots import samples_grid, toy_scatter


@dataclass(frozen=True)
class Config:
    """DDPM: a denoiser trained on the simple noise-regression loss, sampled with DDPM or DDIM."""

    data: str = "digits"
    """Data set: digits / mnist / fashion-mnist / cifar10 images, or the 2-D toys ring8, grid25, moons, swissroll."""
    data_dir: Path | None = None
    """Folder holding MNIST / Fashion-MNIST / CIFAR-10 files (default $LAB_DATA_DIR, else ./data)."""
    image_size: int | None = None
    """Train on images this many pixels a side (default: 16 for digits, the native size otherwise)."""
    binarize: bool = False
    """Model binary images: training batches drawn afresh as Bernoulli(gray levels), the test split once
    with a fixed seed (the VAE's protocol), so the bound is comparable with the VAE's and PixelCNN's."""
    conditional: bool = False
    """Condition on the class label (image data); enables --label and --guidance at sampling time."""
    label_dropout: float = 0.1
    """Probability of replacing the label by the "no label" token while training (classifier-free
    guidance, Ho & Salimans 2021)."""
    schedule: Schedule = "linear"
    """Noise schedule: linear (β from 1e-4 to 0.02, Ho et al. 2020) or cosine (Nichol & Dhariwal 2021)."""
    diffusion_steps: int = 1000
    """Number T of noising steps of the forward process."""
    prediction: Prediction = "eps"
    """What the network predicts: eps (the noise, Ho et al.), v (Salimans & Ho 2022), x0, or levels: a softmax
    over the data's discrete levels per pixel trained by cross-entropy, x̂_0 its mean (as CDCD, Dieleman et al.
    2022, reads x̂_0 from a categorical), with the exact likelihood of x_t under each level added to the
    logits so that x̂_0 is exact once the noise is small: the bound no longer pays for the network's
    imprecision there (images at their native size)."""
    learn_variance: bool = False
    """Also learn the reverse variance, log Σ_θ = v log β_t + (1 - v) log β̃_t, with the hybrid loss
    L_simple + λ L_vlb, λ = 0.001 (Nichol & Dhariwal 2021); the bound uses it (sampling keeps β̃ / β).
    Needs images at their native size (the bound's decoder scores their discrete levels)."""
    width: int = 16
    """U-Net base channels (a multiple of 8: GroupNorm uses 8 groups)."""
    channel_mults: tuple[int, ...] = (1, 2, 2)
    """U-Net channel multiplier of each resolution level; the image halves between levels."""
    res_blocks: int = 1
    """Residual blocks per U-Net level on the way down (one more on the way up)."""
    attention_resolutions: tuple[int, ...] = ()
    """Resolutions (pixels a side) whose blocks add self-attention; the middle block always has it."""
    dropout: float = 0.0
    """Dropout inside the residual blocks (Ho et al. use 0.1 on CIFAR-10 at full size)."""
    mlp_width: int = 256
    """Hidden units of the 2-D toy denoiser."""
    mlp_depth: int = 3
    """Residual layers of the 2-D toy denoiser."""
    batch_size: int | None = None
    """Training examples per optimizer step (default: 64 for images, 256 for the 2-D toys)."""
    lr: float | None = None
    """Adam learning rate, warmed up linearly from 0 then decayed to 0 along a cosine (default: 1e-3 for
    images, 2e-3 for the 2-D toys)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0 turns clipping off)."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of the weights used for sampling (capped by
    (1 + step) / (10 + step) early on, as in diffusers' EMAModel)."""
    total_steps: int = 2000
    """Optimizer steps to train for (one step = one minibatch)."""
    eval_samples: int = 256
    """Samples drawn (DDIM, 50 steps) at each evaluation during training."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the data set."""
        return self.data

    def __post_init__(self):
        check_dataset(self.data, DATASETS)
        one_of(self, "schedule", SCHEDULES)
        require(self.schedule != "linear" or self.diffusion_steps > 20,
                f"--diffusion-steps must be > 20 with the linear schedule (its β, rescaled by 1000/T, would "
                f"reach 1), got {self.diffusion_steps}; use more steps or --schedule cosine.")
        one_of(self, "prediction", PREDICTIONS)
        positive(self, "diffusion_steps", "width", "res_blocks", "mlp_width", "mlp_depth", "total_steps",
                 "eval_samples")
        if self.batch_size is not None:
            positive(self, "batch_size")
        if self.lr is not None:
            positive(self, "lr")
        non_negative(self, "warmup_steps", "max_grad_norm")
        in_range(self, "label_dropout", 0.0, 1.0)
        in_range(self, "dropout", 0.0, 0.9)
        in_range(self, "ema_decay", 0.0, 1.0)
        require(len(self.channel_mults) > 0 and all(m > 0 for m in self.channel_mults),
                f"--channel-mults must be one or more positive integers, got {self.channel_mults}.")
        require(all(self.width * m % 8 == 0 for m in self.channel_mults),
                f"--width times every --channel-mults entry must be a multiple of 8, got {self.width} x {self.channel_mults}.")
        is_toy = self.data in TOY_DATASETS
        r = self.resolved()   # the preset's batch size and image size are checked like given ones
        require(not (self.conditional and is_toy), f"--conditional needs labelled image data; {self.data} has no labels.")
        require(not (is_toy and self.image_size is not None),
                f"--image-size applies to image data; {self.data} is a 2-D toy.")
        if is_toy:   # activations of the residual MLP, forward and backward
            require_batch(r.batch_size, 8 * 4 * self.mlp_width * self.mlp_depth, "--batch-size")
        require(not (self.binarize and is_toy), f"--binarize needs image data; {self.data} is 2-D points.")
        require(not (self.prediction == "levels" and is_toy),
                f"--prediction levels needs images on discrete levels; {self.data} is 2-D points.")
        if not is_toy:
            size = r.image_size
            levels = 2 ** (len(self.channel_mults) - 1)
            require(4 <= size <= 64 and size % levels == 0,
                    f"--image-size must be in [4, 64] and divisible by {levels} "
                    f"(one halving per extra --channel-mults level), got {size}.")

    def resolved(self) -> Config:
        """A copy with the derived defaults written in: batch size, learning rate and image size from the
        data set's preset (lab/presets/ddpm.toml), the native size for image sets it leaves open."""
        filled = fill_unset(self, "ddpm", self.data)
        if self.data not in TOY_DATASETS and filled.image_size is None:
            filled = dataclasses.replace(filled, image_size=NATIVE_SHAPE[self.data][-1])
        return filled


EXPORTS = {"diffusers": diffusers_files}
"""`lab export --format diffusers`: the files of a diffusers DDPMPipeline folder."""


@dataclass(frozen=True)
class EvalOptions:
    """How `lab eval` samples and scores a DDPM run. Runs on images at their native size (pixels on
    discrete levels) also get the variational bound on the test split in bits/dim and nats/image."""

    n: int = 1000
    """Samples to draw and score."""
    sampler: SamplerName = "ddim"
    """ddpm (ancestral) or ddim."""
    steps: int = 50
    """Sampling steps (0: all T for ddpm; min(50, T) for ddim)."""
    eta: float = 0.0
    """DDIM noise scale η (0: deterministic)."""
    guidance: float = 1.0
    """Classifier-free guidance scale w of a conditional model (1: plain conditional, 0: unconditional)."""
    seed: int = 0
    """Seed of x_T and of the sampling noise, and of the noise draws of the bound."""

    def __post_init__(self):
        positive(self, "n")
        non_negative(self, "steps", "eta", "guidance", "seed")
        one_of(self, "sampler", SAMPLERS)


@dataclass(frozen=True)
class SampleOptions:
    """What `lab sample` draws from a DDPM run."""

    n: int = 64
    """Number of samples."""
    sampler: SamplerName = "ddpm"
    """ddpm (ancestral) or ddim."""
    steps: int = 0
    """Sampling steps (0: all T for ddpm, 50 for ddim)."""
    eta: float = 0.0
    """DDIM noise scale η (0: deterministic given x_T)."""
    variance: Variance = "beta_tilde"
    """Ancestral σ_t²: beta_tilde (the posterior variance β̃_t) or beta (β_t)."""
    label: int | None = None
    """Class to draw (conditional models; default: the classes in turn)."""
    guidance: float = 1.0
    """Classifier-free guidance scale w (1: plain conditional, 0: unconditional, >1: sharper classes)."""
    seed: int = 0
    """Seed of x_T and of the sampling noise."""
    frames: int = 10
    """Frames in the strip of sample 0 going from x_T to x_0 (0: no strip)."""

    def __post_init__(self):
        positive(self, "n")
        non_negative(self, "steps", "eta", "guidance", "seed", "frames")
        one_of(self, "sampler", SAMPLERS)
        one_of(self, "variance", VARIANCES)


class Algorithm:
    step_size = 1
    best_metric = ("eval/fid", "min")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        config = config.resolved()   # what the session hands over already; a Config built by hand gets the same
        self.config, self.rt, self.training = config, runtime, training
        device = runtime.device
        self.is_toy = config.data in TOY_DATASETS
        self.schedule = NoiseSchedule.create(config.schedule, config.diffusion_steps, device)
        self.rows = runtime.shard(config.batch_size)   # every process draws the global batch and its noise, keeps these rows
        if self.is_toy:
            self.best_metric = ("eval/high_quality", "max")
            self.toy = toy_distribution(config.data)
            self.shape, self.num_classes = (2,), 0
            self.model = MLPDenoiser(2, config.mlp_width, config.mlp_depth)
            self.toy_rng = torch.Generator().manual_seed(runtime.derive_seed("real-data", per_rank=False))
            self.levels = None
            require(not config.learn_variance, f"--learn-variance needs image data; {config.data} is 2-D points.")
        else:
            data = load_images(config.data, "train", config.data_dir, config.image_size)
            self.shape, self.num_classes = tuple(data.images.shape[1:]), data.num_classes
            self.levels = 2 if config.binarize and data.levels else data.levels
            for flag, asked in (("--learn-variance", config.learn_variance),
                                ("--prediction levels", config.prediction == "levels")):
                require(self.levels is not None or not asked,
                        f"{flag} needs {config.data} at its native size, whose pixels take discrete levels "
                        f"(--image-size {NATIVE_SHAPE[config.data][-1]}); got --image-size {config.image_size}.")
            require(data.levels is not None or not config.binarize,
                    f"--binarize needs {config.data} at its native size (--image-size {NATIVE_SHAPE[config.data][-1]}); "
                    f"got --image-size {config.image_size}.")
            self.model = UNet(self.shape[0], config.width, config.channel_mults, config.res_blocks,
                              config.attention_resolutions, config.image_size, config.dropout,
                              self.num_classes if config.conditional else 0,
                              out_channels=self.shape[0] * ((self.levels if config.prediction == "levels" else 1)
                                                            + config.learn_variance))
            require(config.batch_size <= len(data.images),
                    f"--batch-size {config.batch_size} exceeds the {len(data.images)} training images of {config.data}.")
            self.batches = BatchIterator(data.images, data.labels, batch_size=config.batch_size,
                                         seed=runtime.derive_seed("real-data", per_rank=False), device=device)
        self.model.to(device)
        # --prediction levels: the values x_0 can take, -1 .. 1; the samplers and the bound read its mean as x̂_0
        self.level_values = (torch.linspace(-1, 1, self.levels, device=device) if config.prediction == "levels"
                             else None)
        self.sampled_prediction = "x0" if config.prediction == "levels" else config.prediction
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.model = runtime.wrap(self.model)   # the one handle: train through it, unwrap it for state
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.noise_rng = torch.Generator(device=device).manual_seed(runtime.derive_seed("noise", per_rank=False))

    # ------------------------------------------------------------------ training
    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 0 at total_steps."""
        warmup, total = self.config.warmup_steps, self.config.total_steps
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.is_toy:
            return self.toy.sample(self.config.batch_size, self.toy_rng).to(self.rt.device), None
        images, labels = next(self.batches)
        if self.config.binarize:
            images = torch.bernoulli(images, generator=self.noise_rng)   # a fresh binary image every time
        return images * 2 - 1, (labels if self.config.conditional else None)

    def train_step(self, step: int) -> dict:
        cfg, schedule = self.config, self.schedule
        x0, labels = self._batch()
        b, device = x0.shape[0], x0.device
        t = torch.randint(0, schedule.num_steps, (b,), generator=self.noise_rng, device=device)   # t ~ U{0..T-1}
        noise = torch.randn(x0.shape, generator=self.noise_rng, device=device)                 # ε ~ N(0, I)
        if labels is not None:
            drop = torch.rand(b, generator=self.noise_rng, device=device) < cfg.label_dropout
            labels = torch.where(drop, self.num_classes, labels)[self.rows]     # "no label" for guidance
        x0, t, noise = x0[self.rows], t[self.rows], noise[self.rows]
        x_t = schedule.add_noise(x0, t, noise)              # forward process: x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε
        self.model.train()
        with self.rt.autocast():
            output = self.model(x_t, t, labels).float()
        output, v = self._split(output)
        if cfg.prediction == "levels":
            log_posterior = schedule.level_log_posterior(output, x_t, t, self.level_values)
            level = level_indices((x0 + 1) / 2, self.levels)
            loss = F.nll_loss(log_posterior.transpose(1, 2), level)   # cross-entropy of x_0's level
            output = schedule.level_mean(log_posterior, self.level_values)
        else:
            loss = F.mse_loss(output, schedule.target(cfg.prediction, x0, t, noise))   # simple loss L_simple
        if v is not None:
            # hybrid loss: L_simple (or the levels' cross-entropy) + λ L_vlb with λ = 0.001, T L_t estimating
            # L_vlb and only the variance learning from it (the mean is detached); L_t in bits per dimension
            mean, log_var = reverse_step(schedule, output.detach(), x_t, t, self.sampled_prediction, v)
            vlb = step_term(schedule, x0, x_t, t, mean, log_var, self._decoder_nll) / (x0[0].numel() * math.log(2))
            loss = loss + schedule.num_steps / 1000 * vlb.mean()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * self._lr_factor(step)
        grad_norm = self.rt.optimize(loss, self.optimizer, cfg.max_grad_norm)
        self._update_ema(step)
        metrics = {"train/loss": loss.detach()}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        return metrics

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))   # warm-up: early weights fade fast
        for ema, param in zip(self.ema.parameters(), unwrap(self.model).parameters()):
            ema.lerp_(param, 1.0 - decay)                    # θ_ema <- decay θ_ema + (1 - decay) θ

    def _decoder_nll(self, x0: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """-log p(x_0 | x_1) per pixel under the discretized Gaussian decoder over the data's levels."""
        return -discretized_gaussian_log_prob(x0, mean, 0.5 * log_var, self.levels)

    # ------------------------------------------------------------------ the variational bound
    def test_bound(self, seed: int = 0, batch: int = 500) -> dict[str, torch.Tensor]:
        """The variational bound on -log p(x_0) of every test image (nats), with the EMA weights, one
        noise draw per term from ``seed``: {"prior", "diffusion", "decoder", "total"}."""
        require(self.levels is not None,
                f"the bound needs pixels on discrete levels; this run models "
                f"{'2-D points' if self.is_toy else f'{self.config.data} resized to {self.config.image_size} pixels'}.")
        test = load_images(self.config.data, "test", self.config.data_dir, self.config.image_size)
        test = test.binarized() if self.config.binarize else test
        images, labels = test.images * 2 - 1, test.labels if self.config.conditional else None
        generator = torch.Generator(self.rt.device).manual_seed(seed)
        parts = []
        from tqdm.auto import tqdm
        bar = tqdm(total=-(-len(images) // batch) * self.schedule.num_steps, unit="step", desc="bound",
                   leave=False, disable=None)
        for start in range(0, len(images), batch):
            x0 = images[start:start + batch].to(self.rt.device)
            y = None if labels is None else labels[start:start + batch].to(self.rt.device)

            def reverse(x_t, t):
                output, v = self._split(self.ema(x_t, t, y).float())
                return reverse_step(self.schedule, self._to_sampled_prediction(output, x_t, t), x_t, t,
                                    self.sampled_prediction, v)

            parts.append(variational_bound(reverse, self.schedule, x0, self._decoder_nll, generator,
                                           lambda done, total: bar.update(1)))
        bar.close()
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    # ------------------------------------------------------------------ sampling
    def _split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the prediction channels, the variance channels v of --learn-variance or None)."""
        if not self.config.learn_variance:
            return output, None
        prediction, v = output.split([output.shape[1] - self.shape[0], self.shape[0]], dim=1)
        return prediction, v

    def _to_sampled_prediction(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prediction in the space the samplers read (``sampled_prediction``): as it is, or for
        --prediction levels the mean x̂_0 = Σ_ℓ ℓ p(x_0 = ℓ | x_t)."""
        if self.config.prediction != "levels":
            return output
        log_posterior = self.schedule.level_log_posterior(output.float(), x_t, t, self.level_values)
        return self.schedule.level_mean(log_posterior, self.level_values)

    def _prediction_net(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The EMA network's ε̂ (or v̂, x̂_0), without the variance channels of --learn-variance."""
        return self._to_sampled_prediction(self._split(self.ema(x, t, labels))[0], x, t)

    @torch.no_grad()
    def generate(self, n: int, *, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
                 variance: str = "beta_tilde", labels: torch.Tensor | None = None, guidance: float = 1.0,
                 seed: int = 0, frames: int = 0, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples from the EMA model (images in [0, 1], toys as points), in batches of ``batch``;
        returns (samples, frames of sample 0 from x_T to x_0 mapped like the samples, or None)."""
        T = self.schedule.num_steps
        # the batches, their concatenation, [0, 1] copies, the host copy and the .npz of lab sample's media
        require_batch(n, 6 * 4 * math.prod(self.shape), "--n", self.rt.device)
        require(steps <= T, f"--steps must be at most the run's {T} diffusion steps, got {steps}.")
        steps = steps or (T if sampler == "ddpm" else min(50, T))
        device = self.rt.device
        generator = torch.Generator(device=device).manual_seed(seed)
        clip = None if self.is_toy else 1.0
        outputs, strip = [], None
        for start in range(0, n, batch):
            size = min(batch, n - start)
            x_T = torch.randn((size, *self.shape), generator=generator, device=device)
            chunk = None if labels is None else labels[start:start + size].to(device)
            denoiser = guided(self._prediction_net, chunk, guidance, self.num_classes)
            common = dict(prediction=self.sampled_prediction, clip=clip, generator=generator,
                          frames=frames if start == 0 else 0)
            if sampler == "ddpm":
                x, trajectory = ddpm_sample(denoiser, self.schedule, x_T, steps=steps, variance=variance, **common)
            else:
                x, trajectory = ddim_sample(denoiser, self.schedule, x_T, steps=steps, eta=eta, **common)
            outputs.append(x)
            strip = trajectory if start == 0 else strip
        samples = torch.cat(outputs)
        if self.is_toy:
            return samples, strip
        to_unit = lambda x: ((x + 1) / 2).clamp(0, 1)         # [-1, 1] -> [0, 1]
        return to_unit(samples), (None if strip is None else to_unit(strip))

    def _labels(self, n: int, label: int | None, guidance: float) -> torch.Tensor | None:
        """The class of each sample: the one asked for, else the classes in turn (conditional models)."""
        if not self.config.conditional:
            require(label is None, "--label needs a model trained with --conditional.")
            require(guidance == 1.0, "--guidance needs a model trained with --conditional.")
            return None
        if label is not None:
            require(0 <= label < self.num_classes, f"--label must be in [0, {self.num_classes - 1}], got {label}.")
            return torch.full((n,), label, dtype=torch.long)
        return torch.arange(n) % self.num_classes

    # ------------------------------------------------------------------ evaluation and `lab sample`
    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        final = not during_training
        if options is None:
            options = (EvalOptions(n=self.config.eval_samples, steps=min(50, self.schedule.num_steps))
                       if during_training else EvalOptions())
        from generative.metrics import require_scorable, score_images, score_toy   # the classifier loads when evaluating
        if not self.is_toy:
            require_scorable(options.n, self.shape, self.rt.device)
        labels = self._labels(options.n, None, options.guidance)
        samples, _ = self.generate(options.n, sampler=options.sampler, steps=options.steps, eta=options.eta,
                                   labels=labels, guidance=options.guidance, seed=options.seed)
        if self.is_toy:
            results = score_toy(samples.cpu(), self.config.data)
            results["plots/samples"] = toy_scatter(samples.cpu(), self.toy, f"DDPM on {self.config.data}")
            return results
        results = score_images(samples, self.config.data, data_dir=self.config.data_dir, labels=labels,
                               device=self.rt.device)
        results["samples/grid"] = samples_grid(samples[:64])
        if final and self.levels is not None:
            bound = {key: value.mean().item() for key, value in self.test_bound(options.seed).items()}
            results.update({"eval/bound_nll": bound["total"], "eval/bound_prior": bound["prior"],
                            "eval/bound_diffusion": bound["diffusion"], "eval/bound_decoder": bound["decoder"],
                            "eval/bound_bits_per_dim": bits_per_dim(bound["total"], math.prod(self.shape))})
        return results

    def sample(self, options: SampleOptions | None = None) -> dict:
        options = options or SampleOptions()
        labels = self._labels(options.n, options.label, options.guidance)
        samples, strip = self.generate(options.n, sampler=options.sampler, steps=options.steps, eta=options.eta,
                                       variance=options.variance, labels=labels, guidance=options.guidance,
                                       seed=options.seed, frames=options.frames)
        name = f"{options.sampler}{options.steps or ''}"
        arrays = {"samples": samples.cpu()}
        if labels is not None:
            arrays["labels"] = labels
        media = {f"samples/{name}": Arrays(arrays)}
        if self.is_toy:
            media[f"samples/{name}-scatter"] = toy_scatter(samples.cpu(), self.toy, f"DDPM {name}")
            return media
        media[f"samples/{name}-grid"] = samples_grid(samples, nrow=int(len(samples) ** 0.5) or None)
        if strip is not None:
            media[f"samples/{name}-denoising"] = Image(image_grid(strip.cpu(), nrow=len(strip)))
        return media

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        state = {"model": unwrap(self.model).state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "noise_rng": self.noise_rng.get_state()}
        if self.is_toy:
            state["toy_rng"] = self.toy_rng.get_state()
        else:
            state["batches"] = self.batches.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise_rng.set_state(state["noise_rng"])
        if self.is_toy:
            self.toy_rng.set_state(state["toy_rng"])
        else:
            self.batches.load_state_dict(state["batches"])

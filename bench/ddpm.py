"""Our DDPM against Hugging Face diffusers (UNet2DModel + DDPMScheduler / DDIMScheduler), side by side.

    lab bench ddpm                      defaults sized for a shared 2-core CPU (minutes)
    lab bench ddpm --full               3,000 steps, 1,000 samples per FID, 1,000-step FID, guided check
    lab bench ddpm --steps 1000 --fid-samples 1000 --ddpm-fid --guided

Both models are the same U-Net (digits brought to 16x16, base width 16, multipliers 1-2-2, one residual
block per level, attention in the middle: the parameter counts are printed and equal), trained with
the same data stream (generative.data.BatchIterator), batch, optimizer (Adam, warm-up + cosine decay,
gradient clipping at 1), EMA decay and number of steps, on the ε-prediction simple loss with the
linear schedule over T = 1,000. Training alternates chunks of ours and theirs in one process so the
machine's load hits both alike; throughputs are medians over chunks. Sampling uses the EMA weights.
FID is the digits-classifier FID of ``generative.metrics.score_images`` (lower is better).

Ours is trained by the lab's trainer (``lab.session.in_memory_trainer``, ``fit(until=...)`` chunk by
chunk): its training clock includes the trainer's own work per step (metric windows, a log line every
1/100 of the run), which the bare loop this benchmark had before did not; its one evaluation, at the last
step (8 DDIM-10 samples, not used), is not timed. Diffusers trains in its own recipe's loop (the peer).

Writes runs/bench/ddpm-<time>.json, or --out (bench/results/ddpm.json holds the committed one).
"""
from __future__ import annotations

import json
import platform
import statistics
import time
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from generative.data import BatchIterator, load_images
from generative.diffusion.algo import Algorithm, Config, EvalOptions
from generative.metrics import score_images
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, derive_seed
from lab.session import in_memory_trainer, train_in_memory

SIZE = 16


@dataclass(frozen=True)
class Options:
    """The lab's DDPM against diffusers' on the same digits: training and sampling speed, FID."""

    steps: int = 300
    """Optimizer steps per model."""
    batch: int = 64
    """Training batch."""
    width: int = 16
    """U-Net base width."""
    fid_samples: int = 500
    """DDIM-50 samples per model for the FID."""
    speed_samples: int = 32
    """Samples per model for the 1,000-step ancestral throughput."""
    ddpm_fid: bool = False
    """Also the FID of --fid-samples 1,000-step ancestral samples."""
    guided: bool = False
    """Also train our conditional model and classify guided samples (w = 3)."""
    chunks: int = 10
    """Alternating training chunks (the two models train in turn)."""
    seed: int = 0
    """Seed of both models and of the samples."""
    full: bool = False
    """The issue's size: --steps 3000 --fid-samples 1000 --ddpm-fid --guided."""
    out: ResultsPath = None


def parse_options(argv) -> Options:
    args = parse(Options, argv, "ddpm")
    if args.full:
        args = dataclasses.replace(args, steps=max(args.steps, 3000), fid_samples=1000, ddpm_fid=True, guided=True)
    return args


# ---------------------------------------------------------------------------- the diffusers side
class Diffusers:
    """The diffusers recipe (train_unconditional.py's loop) with our optimizer settings."""

    def __init__(self, width: int, batch: int, steps: int, seed: int, lr_factor):
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
        from diffusers.training_utils import EMAModel
        torch.manual_seed(seed)
        self.model = UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(width, 2 * width, 2 * width),
                                 down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                                 norm_num_groups=8, attention_head_dim=32)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)          # linear 1e-4..0.02, clip_sample, β̃
        self.ddim = DDIMScheduler.from_config(self.scheduler.config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.ema = EMAModel(self.model.parameters(), decay=0.995)
        data = load_images("digits", "train", size=SIZE)
        self.batches = BatchIterator(data.images * 2 - 1, data.labels, batch_size=batch,
                                     seed=derive_seed(seed, "real-data"), device="cpu")   # our data order
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "noise"))
        self.lr_factor = lr_factor

    def train(self, start: int, stop: int) -> None:
        """Steps ``start`` to ``stop`` of the peer: diffusers' own training loop, not the lab's."""
        for step in range(start, stop):
            self.train_step(step)

    def train_step(self, step: int) -> None:
        x0, _ = next(self.batches)
        noise = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=self.generator)
        noisy = self.scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(self.model(noisy, t).sample, noise)
        for group in self.optimizer.param_groups:
            group["lr"] = 1e-3 * self.lr_factor(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.ema.step(self.model.parameters())

    @torch.no_grad()
    def sample(self, n: int, sampler: str, steps: int, seed: int, batch: int = 500) -> torch.Tensor:
        self.ema.store(self.model.parameters())
        self.ema.copy_to(self.model.parameters())
        self.model.eval()
        scheduler = self.scheduler if sampler == "ddpm" else self.ddim
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, n, batch):
            x = torch.randn((min(batch, n - start), 1, SIZE, SIZE), generator=generator)
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                x = scheduler.step(self.model(x, t).sample, t, x, generator=generator).prev_sample
            out.append(((x + 1) / 2).clamp(0, 1))
        self.ema.restore(self.model.parameters())
        self.model.train()
        return torch.cat(out)


# ---------------------------------------------------------------------------- measuring
def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def our_config(args, conditional: bool = False) -> Config:
    return Config(data="digits", image_size=SIZE, width=args.width, batch_size=args.batch,
                  total_steps=args.steps, conditional=conditional)


def trainer_options(args) -> dict:
    """How the trainer runs ours: evaluated once, at the last step, on a few cheap samples (not used)."""
    return {"options": RunOptions(device="cpu", seed=args.seed, eval_every=args.steps),
            "eval_options": EvalOptions(n=8, steps=10, seed=args.seed)}


def train_side_by_side(ours, theirs: Diffusers, args) -> dict:
    """Chunks of ours (the trainer, paused at each chunk's end) and theirs in turn; images/s of each."""
    rates = {"ours": [], "diffusers": []}
    bounds = [round(i * args.steps / args.chunks) for i in range(args.chunks + 1)]
    for lo, hi in zip(bounds, bounds[1:]):
        before = ours.train_seconds
        ours.fit(until=hi)
        rates["ours"].append((hi - lo) * args.batch / (ours.train_seconds - before))
        _, seconds = timed(lambda: theirs.train(lo, hi))
        rates["diffusers"].append((hi - lo) * args.batch / seconds)
        print(f"  trained {hi}/{args.steps} steps", flush=True)
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv=None) -> int:
    args = parse_options(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("bench/ddpm.py compares against Hugging Face diffusers, which is not installed here: "
              "pip install diffusers (benchmark only; the lab does not need it).")
        return 1
    torch.manual_seed(args.seed)
    with in_memory_trainer("ddpm", our_config(args), **trainer_options(args)) as trainer:
        ours: Algorithm = trainer.algorithm
        theirs = Diffusers(args.width, args.batch, args.steps, args.seed, ours._lr_factor)
        params = {"ours": sum(p.numel() for p in ours.model.parameters()),
                  "diffusers": sum(p.numel() for p in theirs.model.parameters())}
        print(f"digits {SIZE}x{SIZE}, batch {args.batch}, {args.steps} steps; parameters {params}", flush=True)
        train = train_side_by_side(trainer, theirs, args)

    def sample(name: str, sampler: str, steps: int, n: int) -> torch.Tensor:
        if name == "ours":
            return ours.generate(n, sampler=sampler, steps=steps, seed=args.seed)[0]
        return theirs.sample(n, sampler, steps, args.seed)

    results = {"params": params, "train_images_per_s": train, "ddpm1000_images_per_s": {},
               "ddim50_images_per_s": {}, "fid_ddim50": {}, "fid_ddpm1000": {}}
    for name in ("ours", "diffusers"):
        samples, seconds = timed(lambda: sample(name, "ddim", 50, args.fid_samples))
        results["ddim50_images_per_s"][name] = args.fid_samples / seconds
        results["fid_ddim50"][name] = score_images(samples, "digits")["eval/fid"]
        n = args.fid_samples if args.ddpm_fid else args.speed_samples
        samples, seconds = timed(lambda: sample(name, "ddpm", 1000, n))
        results["ddpm1000_images_per_s"][name] = n / seconds
        if args.ddpm_fid:
            results["fid_ddpm1000"][name] = score_images(samples, "digits")["eval/fid"]
        print(f"  sampled and scored {name}", flush=True)

    if args.guided:
        conditional = train_in_memory("ddpm", our_config(args, conditional=True), **trainer_options(args)).algorithm
        labels = torch.arange(args.fid_samples) % 10
        guided_samples, _ = conditional.generate(args.fid_samples, sampler="ddim", steps=50, labels=labels,
                                                 guidance=3.0, seed=args.seed)
        scores = score_images(guided_samples, "digits", labels=labels)
        results["guided_w3"] = {"label_accuracy": scores["eval/label_accuracy"], "fid": scores["eval/fid"]}

    sizes = {"steps": args.steps, "batch": args.batch, "width": args.width, "fid_samples": args.fid_samples,
             "speed_samples": args.speed_samples if not args.ddpm_fid else args.fid_samples,
             "image_size": SIZE, "machine": f"{platform.processor() or platform.machine()}, "
                                            f"{torch.get_num_threads()} torch threads"}
    results["sizes"] = sizes
    print(table(results))
    out = results_path(args.out, "ddpm")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


def table(r: dict) -> str:
    s = r["sizes"]
    rows = [("parameters", r["params"], "{:,}", None),
            (f"training images/s (batch {s['batch']}, median of chunks)", r["train_images_per_s"], "{:.1f}", "max"),
            (f"DDPM-1000 sampling images/s ({s['speed_samples']} samples)", r["ddpm1000_images_per_s"], "{:.2f}", "max"),
            (f"DDIM-50 sampling images/s ({s['fid_samples']} samples)", r["ddim50_images_per_s"], "{:.1f}", "max"),
            (f"FID, DDIM-50 ({s['fid_samples']} samples)", r["fid_ddim50"], "{:.2f}", "min")]
    if r["fid_ddpm1000"]:
        rows.append((f"FID, DDPM-1000 ({s['fid_samples']} samples)", r["fid_ddpm1000"], "{:.2f}", "min"))
    lines = [f"DDPM on digits {s['image_size']}x{s['image_size']}, {s['steps']} optimizer steps, {s['machine']}",
             "", "| measure | ours | diffusers | ours / diffusers |", "|---|---|---|---|"]
    for label, values, fmt, _ in rows:
        ratio = values["ours"] / values["diffusers"] if values["diffusers"] else float("nan")
        lines.append(f"| {label} | {fmt.format(values['ours'])} | {fmt.format(values['diffusers'])} | {ratio:.2f} |")
    if r["fid_ddpm1000"]:
        for name in ("ours", "diffusers"):
            gap = r["fid_ddim50"][name] / r["fid_ddpm1000"][name] - 1
            lines.append(f"| DDIM-50 FID vs DDPM-1000 FID, {name} | {100 * gap:+.1f} % | | |")
    if "guided_w3" in r:
        g = r["guided_w3"]
        lines.append(f"| ours conditional, guidance w=3, DDIM-50: label accuracy / FID | "
                     f"{100 * g['label_accuracy']:.1f} % / {g['fid']:.2f} | n/a | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

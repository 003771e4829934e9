"""Likelihoods side by side: one table of -log p(x) on the digits test split, from every family that has one.

    lab bench likelihood                      digits, binarized and 17 gray levels, seed 0
    lab bench likelihood --steps 4000         longer training for every model
    lab bench likelihood --models pixelcnn vae  a subset (the GAN panel is left out unless all run)
    lab bench likelihood --data-dir DIR       also binarized MNIST (PixelCNN and VAE) against published figures

Each model is trained through ``lab.session.train_in_memory`` (the trainer of ``lab train``, no run
folder) and scored on the same test images at the same levels: binarized (each training batch drawn
afresh as Bernoulli(gray); the test split once with the fixed seed every model shares) and the 17 gray
levels of sklearn's digits. Figures are nats per image and bits per dimension:

    PixelCNN   the exact -log p(x)
    VAE        -ELBO and the importance-weighted bound with K samples (Burda et al., 2016); Bernoulli
               likelihood on binary pixels, the discretized Gaussian on the 17 levels
    DDPM       the variational bound L_T + Σ L_{t-1} + L_0 (x̂_0 from a softmax over the levels, cosine
               schedule, learned variance, hybrid loss, U-Net width 32), images at their native 8x8 size
    GAN        no likelihood: its samples only

Context rows: independent pixels (each pixel's histogram on the training split). Writes
runs/bench/likelihood-<time>.json and its -samples.png (every model's samples side by side), or --out
(bench/results/likelihood.json and likelihood-samples.png hold the committed ones).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from generative.data import is_available, load_images
from generative.diffusion.schedule import Prediction, Schedule
from generative.likelihood import LIKELIHOODS, bits_per_dim, require_likelihood
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions
from lab.session import train_in_memory

PIXELCNN_MNIST = 81.30
"""PixelCNN on binarized MNIST, nats (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent
Neural Networks", Table 4; the figure Papers with Code lists for arXiv:1601.06759)."""
BURDA_VAE_MNIST = 86.76
"""VAE with one stochastic layer, k = 1, on binarized MNIST, nats (Burda et al., 2016, Table 1), as
bench/vae.py quotes it (not re-checked against the paper here)."""
VARIANTS = ("binarized", "17 levels")


def configs(variant: str, steps: int, data: str = "digits", data_dir=None, ddpm: dict | None = None) -> dict:
    """The likelihood models' configs for one discretization of the data; ``ddpm`` overrides the DDPM's
    prediction, schedule and width (the bench's flags)."""
    from generative.diffusion.algo import Config as DDPMConfig
    from generative.pixelcnn.algo import Config as PixelCNNConfig
    from generative.vae.algo import Config as VAEConfig
    binary = variant == "binarized"
    return {
        "pixelcnn": PixelCNNConfig(data=data, data_dir=data_dir, binarize=binary, total_steps=steps),
        "vae": VAEConfig(data=data, data_dir=data_dir, likelihood="bernoulli" if binary else "discretized-gaussian",
                         total_steps=steps),
        "ddpm": DDPMConfig(data=data, data_dir=data_dir, image_size=8, channel_mults=(1, 2), binarize=binary,
                           learn_variance=True, total_steps=steps,
                           **{"prediction": "levels", "schedule": "cosine", "width": 32, **(ddpm or {})}),
    }


def train(algo: str, config, seed: int):
    """Train through the lab's trainer (one evaluation, at the end); returns (algorithm, train seconds)."""
    trainer = train_in_memory(algo, config, RunOptions(device="cpu", seed=seed, eval_every=config.total_steps))
    return trainer.algorithm, trainer.train_seconds


def score(algo: str, algorithm, k: int, seed: int) -> dict:
    """Per-image test figures of one trained model (nats), and 64 samples in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    if algo == "pixelcnn":
        samples, _ = algorithm.generate(64, seed, None)
        return {"nll": algorithm.test_nll().mean().item(), "samples": samples}
    if algo == "vae":
        from generative.vae.model import log_likelihood_bounds
        algorithm.vae.eval()
        bounds = log_likelihood_bounds(algorithm.vae, algorithm.test_x, k, generator=generator)
        return {"neg_elbo": -bounds["elbo"].mean().item(), "nll": -bounds["iw"].mean().item(),
                "samples": algorithm.vae.sample(64, generator)}
    terms = algorithm.test_bound(seed)
    per_step = terms.pop("steps").mean(0)                 # L_0, L_1, ..., L_{T-1}, averaged over the images
    bound = {key: value.mean().item() for key, value in terms.items()}
    samples, _ = algorithm.generate(64, sampler="ddim", steps=50, seed=seed)
    return {"nll": bound["total"], "bound_terms": bound, "bound_by_t": bound_by_t(per_step), "samples": samples}


def bound_by_t(per_step: torch.Tensor) -> dict[str, float]:
    """Where the bound is spent: the sum of its terms over ranges of the paper's t (L_{t-1} is term t)."""
    T, edges = len(per_step), [1, 2, 11, 101, 301]
    ranges = [(lo, hi - 1) for lo, hi in zip(edges, edges[1:] + [T + 1]) if lo <= T]
    return {(f"t={lo}" if lo == hi else f"t={lo}..{min(hi, T)}"): per_step[lo - 1:hi].sum().item() for lo, hi in ranges}


def independent_pixels(variant: str, data: str = "digits", data_dir=None) -> float:
    """-log p(x) of the test split under the best model of independent pixels (training histograms)."""
    train, test = load_images(data, "train", data_dir), load_images(data, "test", data_dir)
    if variant == "binarized":
        p = train.images.mean(0).clamp(1e-6, 1 - 1e-6)
        x = test.binarized().images
        return -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean().item()
    counts = torch.stack([(train.indices() == k).sum(0) for k in range(train.levels)]).double() + 0.5
    log_p = (counts / counts.sum(0)).log().flatten(1)                         # (levels, pixels)
    pixels = torch.arange(log_p.shape[1])
    return -log_p[test.indices().flatten(1), pixels].sum(1).mean().item()


def sample_figure(panels: dict, path: Path) -> None:
    """One PNG: a row per discretization, a column per model, 64 samples each with big pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from generative.plots import enlarged
    from lab.media import image_grid
    columns = ["pixelcnn", "vae", "ddpm", "gan"]
    titles = {"pixelcnn": "PixelCNN (exact)", "vae": "VAE (IWAE bound)", "ddpm": "DDPM (bound)",
              "gan": "GAN (no likelihood)"}
    figure, axes = plt.subplots(len(VARIANTS), len(columns), figsize=(4 * len(columns), 4.3 * len(VARIANTS)), dpi=100)
    for r, variant in enumerate(VARIANTS):
        for c, name in enumerate(columns):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            samples = panels.get((variant, name))
            if samples is None:
                note = "not trained on\nbinary images" if name == "gan" else "not run"
                axis.text(0.5, 0.5, note, ha="center", va="center", fontsize=10)
            else:
                grid = image_grid(enlarged(samples.float().clamp(0, 1).cpu(), 32), nrow=8, pad=2)
                axis.imshow(grid[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axis.set_title(f"{titles[name]}\n{variant}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@dataclass(frozen=True)
class Options:
    """Test-set -log p(x) of every model with a likelihood on the same discretized digits, and samples."""

    steps: int = 2000
    """Optimizer steps of every model."""
    gan_steps: int = 1500
    """Steps of the GAN (samples only; 0: no GAN)."""
    k: int = 1000
    """Importance samples per test image (VAE)."""
    models: tuple[str, ...] = tuple(LIKELIHOODS)
    """Models to score, among those with a likelihood: pixelcnn, vae, ddpm."""
    seed: int = 0
    """Seed of every model."""
    ddpm_prediction: Prediction = "levels"
    """What the DDPM predicts (eps, v, x0, levels; see `lab train ddpm --help`)."""
    ddpm_schedule: Schedule = "cosine"
    """The DDPM's noise schedule (linear or cosine)."""
    ddpm_width: int = 32
    """The DDPM U-Net's base channels."""
    data_dir: Path | None = None
    """Folder with the MNIST IDX files (the binarized-MNIST part runs only with them)."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "likelihood")
    for algo in args.models:
        require_likelihood(algo)

    report = {"command": "lab bench likelihood " + " ".join(argv or []), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "loadavg_start": _loadavg(),
              "steps": args.steps, "k": args.k, "seed": args.seed, "digits": {}}
    panels = {}
    ddpm = {"prediction": args.ddpm_prediction, "schedule": args.ddpm_schedule, "width": args.ddpm_width}
    for variant in VARIANTS:
        rows = {}
        for algo, config in configs(variant, args.steps, ddpm=ddpm).items():
            if algo not in args.models:
                continue
            started = time.perf_counter()
            algorithm, train_s = train(algo, config, args.seed)
            result = score(algo, algorithm, args.k, args.seed)
            panels[(variant, algo)] = result.pop("samples")
            result.update(train_s=train_s, eval_s=time.perf_counter() - started - train_s,
                          bits_per_dim=bits_per_dim(result["nll"], 64),
                          config={k: str(v) for k, v in vars(config).items()})
            rows[algo] = result
            print(f"{variant}: {algo} -log p(x) {'≤ ' if algo != 'pixelcnn' else ''}{result['nll']:.2f} nats "
                  f"({result['bits_per_dim']:.3f} bits/dim), {train_s:.0f} s training", flush=True)
            if "bound_by_t" in result:
                print("  the bound's terms by t: " + ", ".join(f"{k} {v:.2f}" for k, v in result["bound_by_t"].items()))
        rows["independent_pixels"] = {"nll": independent_pixels(variant)}
        report["digits"][variant] = rows

    if args.gan_steps > 0:
        from generative.gan.algo import Config as GANConfig
        gan, gan_s = train("gan", GANConfig(data="digits", total_steps=args.gan_steps), args.seed)
        panels[("17 levels", "gan")] = gan.generate(torch.randn(64, gan.config.latent_dim, generator=torch.Generator()
                                                                .manual_seed(args.seed)))
        report["digits"]["gan"] = {"train_s": gan_s, "nll": None, "note": "no likelihood"}

    report["mnist"] = _mnist(args)
    report["loadavg_end"] = _loadavg()
    print_table(report)
    out = results_path(args.out, "likelihood")
    figure = out.with_name(out.stem + "-samples.png")
    sample_figure(panels, figure)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out} and {figure}")
    return 0


def _mnist(args) -> dict:
    if args.data_dir is None or not is_available("mnist", args.data_dir):
        where = f"no MNIST files in {args.data_dir}" if args.data_dir else "no --data-dir given"
        print(f"\nMNIST: not run ({where}). Published on binarized MNIST: PixelCNN {PIXELCNN_MNIST} nats, "
              f"VAE {BURDA_VAE_MNIST} nats.")
        return {"status": f"not run: {where}"}
    rows = {}
    for algo, config in configs("binarized", args.steps, "mnist", args.data_dir).items():
        if algo == "ddpm" or algo not in args.models:
            continue   # 28x28 needs a U-Net level count that 8x8 does not; the digits table has the DDPM bound
        algorithm, train_s = train(algo, config, args.seed)
        result = score(algo, algorithm, args.k, args.seed)
        result.pop("samples")
        rows[algo] = {**result, "train_s": train_s, "bits_per_dim": bits_per_dim(result["nll"], 784)}
    return {"rows": rows, "published": {"pixelcnn": PIXELCNN_MNIST, "vae": BURDA_VAE_MNIST}}


def print_table(report: dict) -> None:
    names = {"pixelcnn": "PixelCNN, exact", "vae": "VAE, IWAE K={k} (-ELBO)", "ddpm": "DDPM, variational bound",
             "independent_pixels": "independent pixels (context)"}
    print(f"\ndigits 8x8 test split (360 images), nats per image (bits/dim); seed {report['seed']}, "
          f"{report['steps']} steps each")
    print(f"  {'model':<34}" + "".join(f"{v:>24}" for v in VARIANTS) + f"{'train s':>18}")
    for algo, label in names.items():
        if algo not in report["digits"][VARIANTS[0]]:
            continue
        cells, seconds = [], []
        for variant in VARIANTS:
            row = report["digits"][variant][algo]
            text = f"{row['nll']:.2f} ({bits_per_dim(row['nll'], 64):.3f})"
            if "neg_elbo" in row:
                text += f" [{row['neg_elbo']:.1f}]"
            cells.append(text)
            if "train_s" in row:
                seconds.append(f"{row['train_s']:.0f}")
        print(f"  {label.format(k=report['k']):<34}" + "".join(f"{c:>24}" for c in cells)
              + f"{' / '.join(seconds):>18}")
    if "gan" in report["digits"]:
        print(f"  {'GAN':<34}{'no likelihood':>48}{report['digits']['gan']['train_s']:>18.0f}")
    print(f"  load average at start / end: {report['loadavg_start']} / {report['loadavg_end']}")


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

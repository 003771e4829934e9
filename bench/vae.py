"""VAE quality: the test negative ELBO, the K = 1,000 importance-weighted estimate of -log p(x) (nats per
image), and the digits-classifier FID of samples, over seeds.

    lab bench vae                                  digits, the default conv VAE (`lab train vae`), seeds 0 1 2
    lab bench vae --steps 4000 --seeds 0 1 2 3 4
    lab bench vae --data-dir DIR                   also MNIST (dynamically binarized, 100 epochs) against the
                                                   single-stochastic-layer VAE of Burda et al. (2016)

Each run is ``lab train vae`` without a run folder (``lab.session.train_in_memory``: the same trainer),
evaluated once, at its last step, as ``lab eval`` does (``EvalOptions(k=..., n=...)``); the training
seconds are the trainer's (evaluation excluded, its logging cadence included). There is no peer
implementation to run beside it; the context rows are computed in the same process on the same
binarized test split: a model of independent pixels (the per-pixel training mean) and the
binarization-noise floor E Σ_i H(gray_i), below which no model's expected -log p(x) can go. Writes
runs/bench/vae-<time>.json, or --out (bench/results/vae.json holds the committed one).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from generative.data import is_available, load_images
from generative.metrics.classifier import cache_path
from generative.vae.algo import Algorithm, Config, EvalOptions
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, Runtime
from lab.session import train_in_memory

BURDA_VAE_MNIST = 86.76
"""-log p(x) of the one-stochastic-layer VAE (k = 1) on dynamically binarized MNIST, Burda et al. (2016),
Table 1, as remembered offline (the issue quotes "about 86-87"); check it against the paper before citing."""
METRICS = ("eval/neg_elbo", "eval/reconstruction", "eval/kl", "eval/nll_iw", "eval/active_units", "eval/fid",
           "eval/fid_real", "eval/is")


def run(config: Config, seed: int, k: int, n: int, device: str, scores: bool = True) -> dict:
    """Train one VAE, evaluated at its last step as `lab eval` does; returns its scores and timings."""
    trainer = train_in_memory("vae", config, RunOptions(seed=seed, device=device, eval_every=config.total_steps),
                              eval_options=EvalOptions(k=k, n=n, scores=scores))
    results = trainer.history[-1][1]
    out = {key: float(results[key]) for key in METRICS if key in results}
    out.update(seed=seed, k=k, train_s=trainer.train_seconds, eval_s=trainer.eval_seconds)
    return out


def context(config: Config) -> dict:
    """Reference figures on the binarized test split the VAE is scored on (nats per image)."""
    algorithm = Algorithm(config, Runtime(RunOptions(device="cpu")))
    train = load_images(config.data, "train", config.data_dir).images
    p = train.mean(0).clamp(1e-6, 1 - 1e-6)
    x = algorithm.test_x.cpu()
    independent = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean().item()
    gray = algorithm.test_gray.cpu().double().clamp(1e-12, 1 - 1e-12)
    noise = -(gray * gray.log() + (1 - gray) * (1 - gray).log())   # entropy of each pixel's Bernoulli draw
    return {"independent_pixels_nll": independent, "binarization_noise_floor": noise.flatten(1).sum(1).mean().item()}


def summary(runs: list[dict]) -> dict:
    out = {}
    for key in (*METRICS, "train_s", "eval_s"):
        if key not in runs[0]:
            continue
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def fmt(stat: dict | None, digits: int = 2) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat else "not scored"


def table(title: str, runs: list[dict], extra: list[tuple[str, str]]) -> dict:
    stats = summary(runs)
    print(f"\n{title} ({len(runs)} seeds, mean ± std)")
    rows = [("test -ELBO (nats/image)", fmt(stats["eval/neg_elbo"])),
            ("  reconstruction -E_q log p(x|z)", fmt(stats["eval/reconstruction"])),
            ("  KL(q(z|x) || p(z))", fmt(stats["eval/kl"])),
            (f"-log p(x), IW estimate K={runs[0].get('k', '?')}", fmt(stats["eval/nll_iw"])),
            ("active latent units", fmt(stats["eval/active_units"], 1)),
            ("classifier FID of samples", fmt(stats.get("eval/fid"))),
            ("  FID of real train images, same N", fmt(stats.get("eval/fid_real"))),
            ("classifier IS of samples", fmt(stats.get("eval/is"))),
            ("train seconds / eval seconds", f"{stats['train_s']['mean']:.0f} / {stats['eval_s']['mean']:.0f}"),
            *extra]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return stats


@dataclass(frozen=True)
class Options:
    """Test-set bounds on -log p(x) and sample scores of the VAE on digits (and MNIST when its files are there)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the digits runs."""
    steps: int = Config().total_steps
    """Digits training steps."""
    k: int = 1000
    """Importance samples per test image."""
    n: int = 1000
    """Samples scored for FID / IS."""
    device: str = "auto"
    """Torch device."""
    data_dir: Path | None = None
    """Folder with the MNIST IDX files (the MNIST part runs only with them)."""
    mnist_epochs: int = 100
    """MNIST training epochs."""
    mnist_seeds: tuple[int, ...] = (0,)
    """Seeds of the MNIST runs."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "vae")

    config = Config(total_steps=args.steps)
    ctx = context(config)
    print(f"digits: default conv VAE ({config.total_steps} steps, batch {config.batch_size}, latent "
          f"{config.latent_dim}, {config.likelihood} likelihood, {config.binarize} binarization), K = {args.k}, "
          f"{args.n} samples for FID", flush=True)
    runs = []
    for seed in args.seeds:
        runs.append(run(config, seed, args.k, args.n, args.device))
        r = runs[-1]
        print(f"  seed {seed}: -ELBO {r['eval/neg_elbo']:.2f}, -log p(x) {r['eval/nll_iw']:.2f}, "
              f"FID {r['eval/fid']:.2f} ({r['train_s']:.0f} s train, {r['eval_s']:.0f} s eval)", flush=True)
    report = {"digits": {"config": {k: str(v) for k, v in vars(config).items()}, "k": args.k,
                         "n_samples": args.n, "runs": runs, "context": ctx,
                         "summary": table("digits 8x8, dynamically binarized", runs, [
                             ("independent pixels -log p(x) (context)", f"{ctx['independent_pixels_nll']:.2f}"),
                             ("binarization-noise floor (context)", f"{ctx['binarization_noise_floor']:.2f}")])}}

    if args.data_dir is None or not is_available("mnist", args.data_dir):
        where = f"no MNIST files in {args.data_dir}" if args.data_dir else "no --data-dir given"
        print(f"\nMNIST: not run ({where}; this machine has no MNIST). Place the four IDX files in "
              f"DIR/mnist/ and pass --data-dir DIR to compare with Burda et al.'s {BURDA_VAE_MNIST} nats.")
        report["mnist"] = {"status": f"not run: {where}"}
    else:
        n_train = len(load_images("mnist", "train", args.data_dir).labels)
        mnist = Config(data="mnist", data_dir=args.data_dir, conv_channels=32, latent_dim=50,
                       total_steps=args.mnist_epochs * math.ceil(n_train / Config().batch_size))
        print(f"\nMNIST: conv VAE, {args.mnist_epochs} epochs ({mnist.total_steps} steps), latent 50", flush=True)
        scored = cache_path("mnist").is_file()
        if not scored:
            print(f"  (no MNIST feature classifier in {cache_path('mnist').parent}: FID / IS not scored; see "
                  "generative/metrics/classifier.py to install one)")
        mnist_runs = [run(mnist, seed, args.k, args.n, args.device, scored) for seed in args.mnist_seeds]
        report["mnist"] = {"config": {k: str(v) for k, v in vars(mnist).items()}, "runs": mnist_runs,
                           "published_vae_nll": BURDA_VAE_MNIST,
                           "summary": table("MNIST 28x28, dynamically binarized", mnist_runs, [
                               ("published: VAE, 1 stochastic layer (Burda et al.)", f"{BURDA_VAE_MNIST}")])}

    out = results_path(args.out, "vae")
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the metrics say about sets whose quality is known: a calibration table for reading model scores.

    python -m generative.metrics.calibrate [--n 1000]

Scores stand-in "models" on digits (copies of training images, noisy or blurred copies, one class
only, one image repeated, uniform noise) and on the 2-D toys (true samples, one mode, half the
modes, too wide), all with the same functions a generative run calls from ``evaluate``.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from generative.data import load_images, toy_distribution
from generative.metrics import score_images, score_toy


def image_cases(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    train = load_images("digits", "train")
    pick = torch.randperm(len(train.labels), generator=generator)[:n]
    copies = train.images[pick]
    zeros = train.images[train.labels == 0]
    return {
        "training images (a copying model)": copies,
        "training images + noise 0.1": (copies + 0.1 * torch.randn(copies.shape, generator=generator)).clamp(0, 1),
        "training images, 3x3 box blur": F.avg_pool2d(F.pad(copies, (1, 1, 1, 1), mode="replicate"), 3, stride=1),
        "one class (zeros) only": zeros[torch.randint(len(zeros), (n,), generator=generator)],
        "one image repeated": copies[:1].repeat(n, 1, 1, 1),
        "uniform noise": torch.rand(copies.shape, generator=generator),
    }


def toy_cases(name: str, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    toy = toy_distribution(name)
    true = toy.sample(n, generator)
    pick = torch.randint(len(toy.centers) // 2, (n,), generator=generator)
    return {
        "true samples": true,
        "one mode": toy.centers[0] + toy.std * torch.randn(n, 2, generator=generator),
        "half the modes": toy.centers[pick] + toy.std * torch.randn(n, 2, generator=generator),
        "modes 5x too wide": toy.centers[torch.randint(len(toy.centers), (n,), generator=generator)]
        + 5 * toy.std * torch.randn(n, 2, generator=generator),
    }


def table(rows: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(rows.values())))
    names = [k.removeprefix("eval/") for k in keys]
    width, columns = max(len(r) for r in rows), [max(8, len(n)) for n in names]
    lines = ["| " + " | ".join([f"{'samples':<{width}}"] + [f"{n:>{c}}" for n, c in zip(names, columns)]) + " |"]
    lines.append("|" + "|".join(["-" * (width + 2)] + ["-" * (c + 1) + ":" for c in columns]) + "|")
    for name, scores in rows.items():
        cells = [f"{scores[k]:>{c}.4g}" for k, c in zip(keys, columns)]
        lines.append("| " + " | ".join([f"{name:<{width}}"] + cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generative.metrics.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per stand-in model (digits: at most 1437)")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    print(f"digits, {args.n} samples against the 360 test images (classifier features):")
    print(table({name: score_images(images, "digits") for name, images in image_cases(args.n, generator).items()}))
    for name in ("ring8", "grid25"):
        print(f"\n{name}, {args.n} samples:")
        print(table({case: score_toy(points, name) for case, points in toy_cases(name, args.n, generator).items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

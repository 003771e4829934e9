"""Mode collapse measured: the 2-D benchmarks of Unrolled GAN / VEEGAN / PacGAN, and digits.

    lab bench gan                                   quick look: ring8 + grid25, every loss, seed 0, 1,000 steps
    lab bench gan --seeds 0 1 2 3 4 --steps 3000    the protocol of the issue (hours on a CPU)
    lab bench gan --digits --digits-steps 2000       also the digits FID and the conditional label accuracy
    lab bench gan --pack 4 --r1-weight 10           the toys with PacGAN packing and the R1 penalty
    lab bench gan --defaults --data ring8 --losses non-saturating --seeds 0 1 2 3 4
                                                    what `lab train gan --data ring8` does, on 5 seeds
    lab bench gan --defaults --data grid25 --losses non-saturating --drs-quantiles 0 0.95 0.999
                                                    each run also scored at other rejection-sampling quantiles

For each toy, loss and seed, one headless ``lab train gan`` run (``lab.session.train_in_memory``: the
same trainer as the CLI, no run folder), then its end-of-run evaluation: 2,500 samples of the EMA
generator (the config's ``eval_samples``), filtered by discriminator rejection sampling when the run
uses it (the toys' default; the generator's own samples are scored too), scored by ``generative.metrics.score_toy``:
modes captured (a mode needs 1 in 2,500 of the samples as its high-quality samples, PacGAN's rule) and the share of
high-quality samples (within 3 std of a centre). The published rows are printed beside ours. The
seconds reported are the trainer's training time (evaluation excluded; its logging cadence included).

Writes runs/bench/gan-<time>.json, or --out.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from typing import Literal

import torch

from generative.gan.algo import Algorithm, Config
from generative.gan.losses import LOSSES
from generative.metrics import score_toy
from generative.metrics.toy import mode_counts
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions
from lab.session import train_in_memory

# Published figures (modes captured, % high-quality samples; means over their runs). Quoted from the
# papers' tables as remembered in an offline session: check them against the papers before citing.
PUBLISHED = {
    "ring8": [
        ("GAN (VEEGAN Table 1)", "1", "99.3"),
        ("ALI (VEEGAN Table 1)", "2.8", "0.13"),
        ("Unrolled GAN (VEEGAN Table 1)", "7.6", "35.6"),
        ("VEEGAN (VEEGAN Table 1)", "8.0", "52.9"),
        ("PacGAN", "not quoted: figure not remembered with certainty", ""),
    ],
    "grid25": [
        ("GAN (VEEGAN Table 1)", "3.3", "0.5"),
        ("ALI (VEEGAN Table 1)", "15.8", "1.6"),
        ("Unrolled GAN (VEEGAN Table 1)", "23.6", "16"),
        ("VEEGAN (VEEGAN Table 1)", "24.6", "40"),
        ("GAN (PacGAN Table 3)", "17.3 ± 0.8", "94.8 ± 0.7"),
        ("PacGAN2 (PacGAN Table 3)", "23.8 ± 0.7", "91.3 ± 0.8"),
        ("PacGAN3 (PacGAN Table 3)", "24.6 ± 0.4", "94.2 ± 0.4"),
        ("PacGAN4 (PacGAN Table 3)", "24.8 ± 0.2", "93.6 ± 0.6"),
    ],
}
MODES = {"ring8": 8, "grid25": 25}


def train(config: Config, seed: int) -> tuple[dict[str, float], float, Algorithm]:
    """Train one run on the CPU through the headless trainer, evaluated once, at the end (with the run's
    own evaluation: ``eval_samples`` samples); returns its scalar scores, training seconds and algorithm."""
    trainer = train_in_memory("gan", config, RunOptions(seed=seed, device="cpu", eval_every=config.total_steps))
    results = trainer.history[-1][1]        # the evaluation at the last step
    scores = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
    return scores, trainer.train_seconds, trainer.algorithm


def quantile_sweep(algorithm: Algorithm, quantiles: tuple[float, ...], draws: int = 4) -> list[dict]:
    """The trained run's samples under rejection sampling at each quantile (0: the generator alone), on
    ``draws`` fresh draws of eval_samples points each: modes, high-quality share, the emptiest mode's
    high-quality samples and the share of proposals kept."""
    n, data = algorithm.config.eval_samples, algorithm.config.data
    rows = []
    for quantile in quantiles:
        draws_scored = []
        for draw in range(draws):
            rng = torch.Generator().manual_seed(1000 + draw)
            if quantile == 0:
                samples, kept = algorithm.generate(torch.randn(n, algorithm.config.latent_dim, generator=rng)), 1.0
            else:
                samples, kept = algorithm.rejection_sample(n, quantile, rng)
            score = score_toy(samples, data)
            draws_scored.append({"modes": score["eval/modes"], "high_quality": score["eval/high_quality"],
                                 "emptiest_mode": int(mode_counts(samples, algorithm.distribution)[1].min()),
                                 "kept": kept})
        rows.append({"quantile": quantile, "draws": draws_scored})
        print(f"    --drs-quantile {quantile}: modes {[d['modes'] for d in draws_scored]}, high quality "
              f"{[round(100 * d['high_quality'], 1) for d in draws_scored]} %, emptiest mode "
              f"{[d['emptiest_mode'] for d in draws_scored]} of {n}, kept "
              f"{100 * statistics.mean(d['kept'] for d in draws_scored):.1f} %", flush=True)
    return rows


def toy_rows(data: str, losses: list[str], seeds: list[int], steps: int, lr_decay: bool, pack: int,
             r1_weight: float, defaults: bool = False, drs_quantiles: tuple[float, ...] = ()) -> list[dict]:
    rows = []
    for loss in losses:
        runs = []
        for seed in seeds:
            config = (Config(data=data, loss=loss) if defaults else
                      Config(data=data, loss=loss, total_steps=steps, lr_decay=lr_decay, pack=pack, r1_weight=r1_weight))
            config = config.resolved()
            score, seconds, algorithm = train(config, seed)
            run = {"seed": seed, "modes": score["eval/modes"], "high_quality": score["eval/high_quality"],
                   "seconds": seconds}
            rejection = ""
            if "eval/drs_acceptance" in score:   # the generator's own samples, before rejection sampling
                run.update(generator_modes=score["eval/generator_modes"],
                           generator_high_quality=score["eval/generator_high_quality"],
                           drs_acceptance=score["eval/drs_acceptance"])
                rejection = (f" after rejection sampling (kept {100 * run['drs_acceptance']:.0f} %); generator's own: "
                             f"{run['generator_modes']:.0f} modes, {100 * run['generator_high_quality']:.1f}%")
            runs.append(run)
            print(f"  {data} {loss:<15} seed {seed}: {score['eval/modes']:.0f}/{MODES[data]} modes, "
                  f"{100 * score['eval/high_quality']:.1f}% high quality{rejection} ({seconds:.0f} s)", flush=True)
            if drs_quantiles:
                run["drs_quantiles"] = quantile_sweep(algorithm, drs_quantiles)
        modes = [r["modes"] for r in runs]
        quality = [100 * r["high_quality"] for r in runs]
        rows.append({"data": data, "loss": loss, "steps": config.total_steps, "pack": config.pack,
                     "r1_weight": config.r1_weight, "samples": config.eval_samples,
                     "config": {k: str(v) for k, v in vars(config).items()}, "runs": runs,
                     "modes_mean": statistics.mean(modes), "modes_std": statistics.pstdev(modes),
                     "modes_min": min(modes), "hq_mean": statistics.mean(quality), "hq_std": statistics.pstdev(quality),
                     "hq_min": min(quality),
                     "target_met": all(m == MODES[data] for m in modes) and min(quality) >= 90.0})
        if "drs_acceptance" in runs[0]:   # the generator's own samples, before rejection sampling
            own_modes = [r["generator_modes"] for r in runs]
            own_quality = [100 * r["generator_high_quality"] for r in runs]
            rows[-1].update(generator_modes_mean=statistics.mean(own_modes), generator_modes_min=min(own_modes),
                            generator_hq_mean=statistics.mean(own_quality), generator_hq_min=min(own_quality),
                            drs_acceptance_mean=statistics.mean(r["drs_acceptance"] for r in runs))
    return rows


def print_toy_table(data: str, rows: list[dict], seeds: list[int]) -> None:
    print(f"\n{data}: modes captured (of {MODES[data]}) and % high-quality samples, {len(seeds)} seeds, 2,500 samples")
    print(f"  {'method':<34} {'modes':>16} {'min':>5} {'% high quality':>18} {'min':>6}  all modes, >=90% on every seed")
    for r in rows:
        rejection = " + DRS" if "drs_acceptance_mean" in r else ""
        print(f"  {'ours: ' + r['loss'] + ' (' + str(r['steps']) + ' steps)' + rejection:<34} "
              f"{r['modes_mean']:>9.1f} ± {r['modes_std']:<4.1f} {r['modes_min']:>5.0f} "
              f"{r['hq_mean']:>11.1f} ± {r['hq_std']:<4.1f} {r['hq_min']:>6.1f}  {'yes' if r['target_met'] else 'no'}")
        if rejection:
            print(f"  {'  its generator alone':<34} {r['generator_modes_mean']:>9.1f} {'':6} {r['generator_modes_min']:>5.0f} "
                  f"{r['generator_hq_mean']:>11.1f} {'':6} {r['generator_hq_min']:>6.1f}  "
                  f"(DRS kept {100 * r['drs_acceptance_mean']:.1f} % of the proposals)")
    for name, modes, quality in PUBLISHED[data]:
        print(f"  {name:<34} {modes:>16} {'':>5} {quality:>18}")


def digits_rows(steps: int, seeds: list[int], lr_decay: bool) -> list[dict]:
    rows = []
    for conditional in (False, True):
        for seed in seeds:
            config = Config(data="digits", conditional=conditional, total_steps=steps, batch_size=64,
                            lr_decay=lr_decay)
            score, seconds, _ = train(config, seed)
            row = {"conditional": conditional, "seed": seed, "steps": steps, "seconds": seconds,
                   **{k.removeprefix("eval/"): v for k, v in score.items()}}
            rows.append(row)
            extra = f", label accuracy {100 * row['label_accuracy']:.1f}%" if conditional else ""
            print(f"  digits {'conditional' if conditional else 'unconditional'} seed {seed}: FID {row['fid']:.2f} "
                  f"(real images at this count: {row['fid_real']:.2f}){extra} ({seconds:.0f} s)", flush=True)
    return rows


@dataclass(frozen=True)
class Options:
    """Mode coverage of the GAN losses on the 2-D toys against the published rows (and digits FID)."""

    data: tuple[Literal["ring8", "grid25"], ...] = ("ring8", "grid25")
    """Toy data sets."""
    losses: tuple[Literal["minimax", "non-saturating", "wgan-gp", "hinge"], ...] = tuple(LOSSES)
    """GAN losses to train."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of the toy runs."""
    steps: int = 1000
    """Generator updates per toy run."""
    defaults: bool = False
    """Train the toys with the Config's defaults for each data set and loss, as `lab train gan --data ...`
    does (--steps, --lr-decay, --pack and --r1-weight are then ignored)."""
    lr_decay: bool = True
    """The Config's linear learning-rate decay (--no-lr-decay: constant rates)."""
    pack: int = 1
    """PacGAN packing of the toy runs (1: off)."""
    r1_weight: float = 0.0
    """gamma of the R1 penalty of the toy runs (0: off)."""
    drs_quantiles: tuple[float, ...] = ()
    """Also score each trained toy run with discriminator rejection sampling at these quantiles (0: the
    generator alone), on 4 fresh draws each."""
    digits: bool = False
    """Also train DCGANs on digits (FID, label accuracy)."""
    digits_steps: int = 2000
    """Generator updates per digits run."""
    digits_seeds: tuple[int, ...] = (0,)
    """Seeds of the digits runs."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "gan")
    torch.set_num_threads(1)

    results: dict = {"loadavg": os.getloadavg(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                     "toys": {}, "digits": []}
    for data in args.data:
        results["toys"][data] = toy_rows(data, list(args.losses), list(args.seeds), args.steps, args.lr_decay,
                                         args.pack, args.r1_weight, args.defaults, args.drs_quantiles)
    results["loadavg_end"] = os.getloadavg()
    if args.digits:
        results["digits"] = digits_rows(args.digits_steps, list(args.digits_seeds), args.lr_decay)
    for data, rows in results["toys"].items():
        print_toy_table(data, rows, args.seeds)
    if results["digits"]:
        print("\ndigits (8x8 DCGAN, 2,500 samples scored by the project's digits classifier; target label accuracy >= 90%)")
        for r in results["digits"]:
            accuracy = f"{100 * r['label_accuracy']:.1f}%" if r["conditional"] else "-"
            print(f"  {'conditional' if r['conditional'] else 'unconditional':<14} seed {r['seed']}  FID {r['fid']:.2f} "
                  f"(real {r['fid_real']:.2f})  IS {r['is']:.2f}  precision {r['precision']:.2f}  "
                  f"recall {r['recall']:.2f}  label accuracy {accuracy}")
    out = results_path(args.out, "gan")
    out.write_text(json.dumps({"command": "lab bench gan " + " ".join(argv or []), **results}, indent=2))
    print(f"\nwrote {out}")
    return 0

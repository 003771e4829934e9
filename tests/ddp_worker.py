"""Run by ``tests/test_ddp.py`` under torchrun (or alone): train ALGO's tiny config for STEPS steps through
the headless trainer and write this process's trained parameters to OUT/rank<r>.pt.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py ALGO STEPS OUT
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from lab import registry  # noqa: E402
from lab.runtime import RunOptions, unwrap  # noqa: E402
from lab.session import train_in_memory  # noqa: E402
from tiny_configs import TINY  # noqa: E402


def parameters(algorithm) -> dict[str, torch.Tensor]:
    """Every trainable parameter of every network the algorithm holds, by attribute and parameter name."""
    found = {}
    for attribute, value in vars(algorithm).items():
        if isinstance(value, torch.nn.Module):
            for name, p in unwrap(value).named_parameters():
                if p.requires_grad:
                    found[f"{attribute}.{name}"] = p.detach().cpu().clone()
    return found


if __name__ == "__main__":
    algo, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    _, module = registry.get(algo)
    config = module.Config(**TINY[algo], total_steps=steps)
    trainer = train_in_memory(algo, config, RunOptions(device="cpu", seed=0, deterministic=True, eval_every=10**9))
    torch.save(parameters(trainer.algorithm), out / f"rank{os.environ.get('RANK', '0')}.pt")

"""Run by ``tests/test_ddp.py`` under torchrun (or alone): train ALGO's tiny config for STEPS steps through
the headless trainer, write this process's trained parameters to OUT/rank<r>.pt, and fail if any thread
besides this one outlived the runtime (gloo's threads left running into interpreter shutdown abort the
process there, at random: "terminate called without an active exception").

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


def threads_besides_this_one() -> list[str]:
    """The names of this process's other threads (gloo's are gloo_tcp_loop and pt_gloo_runloop)."""
    if not os.path.isdir("/proc/self/task"):
        return []                                   # not Linux: nothing to check
    me = str(os.getpid())
    return sorted(Path(f"/proc/self/task/{task}/comm").read_text().strip()
                  for task in os.listdir("/proc/self/task") if task != me)


if __name__ == "__main__":
    algo, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    rank = os.environ.get("RANK", "0")
    _, module = registry.get(algo)
    config = module.Config(**TINY[algo], total_steps=steps)
    trainer = train_in_memory(algo, config, RunOptions(device="cpu", seed=0, deterministic=True, eval_every=10**9))
    torch.save(parameters(trainer.algorithm), out / f"rank{rank}.pt")
    left = threads_besides_this_one()
    if left:
        sys.exit(f"rank {rank}: threads outlived the runtime: {', '.join(left)}")

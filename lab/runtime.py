"""What an algorithm asks of the hardware: device, precision, the optimizer step, DDP, seeding.

The trainer builds one ``Runtime`` and hands it to the algorithm. An algorithm touches it in few
places (Fabric-style): ``rt.device``, ``with rt.autocast():``, ``rt.optimize(loss, optimizer)``,
``rt.wrap(module)``, ``rt.shard(batch_size)`` and ``rt.derive_seed(name)``. Everything else stays the
algorithm's own.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from lab.config import non_negative, require
from lab.ddp import ReleasableDDP, init_process_group
from lab.errors import LabError


@dataclass(frozen=True)
class RunOptions:
    """How to run a training job (the same flags for every algorithm)."""

    seed: int = 0
    """Seed of the run: the global generators of rank r are seeded with seed + r, and every named stream
    (envs, replay, noise, data, evaluation) with a hash of (seed, rank, name) (``derive_seed``)."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Where to train: auto picks cuda, then mps, then cpu."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision for forward passes (losses stay float32; fp16 adds a gradient scaler)."""
    compile: bool = False
    """Compile the networks with torch.compile (faster steps after a slow first one)."""
    deterministic: bool = False
    """Bit-reproducible kernels (slower); turns off TF32 and cuDNN autotuning."""
    log_every: int = 0
    """Log averaged training metrics every this many steps (0: 1/100 of the run)."""
    eval_every: int = 0
    """Evaluate every this many steps (0: 1/10 of the run, skipping evaluations while they have taken longer
    than training); always at the end."""
    checkpoint_every: int = 0
    """Write checkpoints/last.pt every this many steps (0: 1/10 of the run); always at the end."""
    keep_checkpoints: bool = False
    """Also keep checkpoints/step-N.pt at every checkpoint."""
    runs_dir: Path = Path("runs")
    """Folder under which a new run folder is created."""
    run_dir: Path | None = None
    """Exact run folder to create instead of runs/<algo>-<data>-<time>-s<seed>."""

    def __post_init__(self):
        non_negative(self, "log_every", "eval_every", "checkpoint_every")
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}.")

    def cadence(self, total_steps: int) -> tuple[int, int, int]:
        """(log, eval, checkpoint) periods in steps, with the 0 = automatic defaults resolved."""
        def auto(value: int, fraction: int) -> int:
            return value if value > 0 else max(1, total_steps // fraction)
        return auto(self.log_every, 100), auto(self.eval_every, 10), auto(self.checkpoint_every, 10)


def _resolve_device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            choice = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            choice = "mps"
        else:
            choice = "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise LabError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LabError("--device mps was asked for but this machine has no Apple GPU; use --device cpu or auto.")
    return torch.device(choice)


class Runtime:
    """Device, precision, distributed state and RNG handling for one process."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _resolve_device(options.device, self.local_rank)
        self._wrappers: list[weakref.ref] = []
        if self.world_size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[options.precision]
        if self.amp_dtype is not None and self.device.type == "cpu" and options.precision == "fp16":
            raise LabError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32.")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.precision == "fp16")
        self.seed = options.seed
        self.rank_seed = options.seed + self.rank
        self._bypassed: str | None = None
        self._configure_determinism(options.deterministic)
        seed_everything(self.rank_seed)

    # ---------------------------------------------------------------- set-up
    @staticmethod
    def _configure_determinism(deterministic: bool) -> None:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        else:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def derive_seed(self, name: str, per_rank: bool = True) -> int:
        """The seed of the random stream ``name`` ("envs/0", "replay", "noise", "real-data", "eval", ...) of
        this run: a stable hash of the run's seed, this process's rank and the name (``derive_seed``).

        ``per_rank=False`` gives every rank the same seed (rank 0's): streams that must agree across
        processes, such as evaluation episodes (every rank would evaluate the same ones) and a global batch
        that each rank then shards.
        """
        return derive_seed(self.seed, name, self.rank if per_rank else 0)

    # ---------------------------------------------------------------- the training step
    def autocast(self):
        """Mixed-precision context for forward passes; a no-op in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                 max_grad_norm: float | None = None) -> torch.Tensor | None:
        """zero_grad, backward (scaled in fp16), optional gradient-norm clipping, step.

        Returns the gradient norm before clipping when clipping is on (a tensor; no host sync).
        Under torchrun it refuses a loss computed through a DDP-wrapped network's raw module (its gradients
        would skip the all-reduce, and the ranks drift apart silently).
        """
        bypassed = getattr(self, "_bypassed", None)
        if bypassed is not None:
            self._bypassed = None
            raise AssertionError(
                f"{bypassed} ran forward with gradients outside the DistributedDataParallel wrapper that "
                "rt.wrap returned; train through the wrapper (its gradients are all-reduced), use "
                "lab.runtime.unwrap(wrapper) only for state_dict, evaluation and export.")
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = None
        if max_grad_norm:
            self.scaler.unscale_(optimizer)
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            grad_norm = clip_grad_norm(grads, max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        return grad_norm

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move to the device; wrap in DistributedDataParallel under torchrun; compile if asked.

        Train through the wrapper; ``unwrap(wrapper)`` is the module itself, for ``state_dict``, evaluation
        and export. Under torchrun a forward pass of the raw module (or any of its submodules) in training
        mode with gradients enabled makes the next ``optimize`` fail: those gradients skip the all-reduce
        (not checked with ``--compile``).
        """
        module = module.to(self.device)
        if self.distributed and any(p.requires_grad for p in module.parameters()):
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            raw = module
            module = ReleasableDDP(module, device_ids=device_ids)
            self._wrappers.append(weakref.ref(module))
            if not self.options.compile:   # hooks with Python side effects would break compiled graphs
                self._guard_raw_forward(raw, module)
        if self.options.compile:
            module = torch.compile(module)
        return module

    def _guard_raw_forward(self, raw: torch.nn.Module, wrapper: torch.nn.Module) -> None:
        """Record (for ``optimize`` to refuse) a training-mode, gradient-enabled forward pass of ``raw`` or
        its submodules that did not go through ``wrapper``."""
        depth = [0]

        def enter(module, args):
            depth[0] += 1

        def leave(module, args, output):
            depth[0] -= 1

        def check(module, args):
            if depth[0] == 0 and module.training and torch.is_grad_enabled() and self._bypassed is None:
                self._bypassed = f"{type(module).__name__} (inside {type(raw).__name__})" if module is not raw \
                    else type(raw).__name__

        wrapper.register_forward_pre_hook(enter)
        wrapper.register_forward_hook(leave, always_call=True)
        for submodule in raw.modules():
            submodule.register_forward_pre_hook(check)

    def shard(self, global_batch: int) -> slice:
        """The rows of a global batch that this process handles (all rows without torchrun)."""
        if global_batch % self.world_size:
            raise LabError(f"batch size {global_batch} is not divisible by the {self.world_size} processes "
                           "of this torchrun job; pick a multiple.")
        per_rank = global_batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    # ---------------------------------------------------------------- collectives
    def any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (a collective under torchrun)."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj):
        """A list of ``obj`` from every rank (just ``[obj]`` without torchrun)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """End the job's process group, joining its communication threads while the interpreter is alive.

        The wrappers ``wrap`` returned are released first (they forward straight to their modules from then
        on): each held the group, which would otherwise outlive ``destroy_process_group`` and keep gloo's
        threads running into interpreter shutdown, where one that wakes to free a tensor aborts the process
        ("terminate called without an active exception")."""
        for ref in self._wrappers:
            wrapper = ref()
            if wrapper is not None:
                wrapper.release()
        self._wrappers.clear()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # ---------------------------------------------------------------- RNG state
    @contextlib.contextmanager
    def isolated_rng(self):
        """Run a block (evaluation, sampling) without disturbing the training random streams."""
        state = rng_state()
        try:
            yield
        finally:
            set_rng_state(state)

    def state_dict(self, gather: bool = True) -> dict:
        """Gradient-scaler and per-rank RNG states. ``gather=False`` (only rank 0 calling) leaves the
        RNG states out under torchrun: such a checkpoint serves evaluation, not an exact resume."""
        rng = self.gather(rng_state()) if gather or not self.distributed else None
        return {"scaler": self.scaler.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        per_rank = state["rng"]
        if per_rank is None:
            return
        if len(per_rank) != self.world_size:
            raise LabError(f"the checkpoint was written by a job of {len(per_rank)} processes and this one has "
                           f"{self.world_size}; resume with the same --nproc-per-node.")
        set_rng_state(per_rank[self.rank])


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``'s arithmetic on the gradients themselves, without its per-call
    wrappers (a third of a small network's optimizer step on a CPU): scale by min(1, max_norm / (norm + 1e-6))."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


def derive_seed(seed: int, name: str, rank: int = 0) -> int:
    """The seed of the random stream ``name`` of rank ``rank`` in a run seeded ``seed``: the first 8 bytes of
    BLAKE2b("{seed}/{rank}/{name}"), shifted into [0, 2**63).

    Stable across processes, Python versions and machines (unlike ``hash()``, which is salted per process),
    and distinct streams never share a seed (seed + k gave stream k of rank r the seed of rank r + k).
    Benchmarks call it to play their peers' evaluation episodes with the seeds ``Algorithm.evaluate`` uses.
    """
    digest = hashlib.blake2b(f"{seed}/{rank}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside what ``Runtime.wrap`` returned: through torch.compile (``_orig_mod``) and
    DistributedDataParallel (``.module``); a plain module is returned as is."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, torch.nn.Module):
            module = module._orig_mod
        else:
            return module


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The python, numpy, torch CPU and CUDA generator states, as checkpoint-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """random.setstate needs tuples where a round trip may have produced lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value

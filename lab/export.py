"""`lab export RUN_DIR`: a trained model's weights in a portable format, with its config and a model card.

    lab export RUN_DIR --format safetensors     RUN_DIR/export/model.safetensors + config.json + README.md
    lab export RUN_DIR --format diffusers       a DDPM run as a folder diffusers.DDPMPipeline.from_pretrained loads

Only what inference needs is written: the networks of the loaded model (an agent's policy or Q-network,
a generative model's weights and its EMA copy), never optimizer state or replay buffers. The weights are
named ``<network>.<parameter>`` as in ``state_dict``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lab import session
from lab.config import to_dict
from lab.errors import LabError
from lab.logger import read_metrics
from lab.runtime import unwrap

FORMATS = ("safetensors", "diffusers")


def networks(algorithm: Any) -> dict[str, torch.nn.Module]:
    """The ``nn.Module`` attributes of a loaded algorithm, by attribute name: the modules inside wrappers
    (``unwrap``), and RL's separate ``train_*`` wrappers left out."""
    return {name: unwrap(value) for name, value in vars(algorithm).items()
            if isinstance(value, torch.nn.Module) and not name.startswith("train_")}


def weights(algorithm: Any) -> dict[str, torch.Tensor]:
    """Every network's tensors as one flat, contiguous CPU dict (shared tensors copied apart)."""
    flat = {}
    for name, module in networks(algorithm).items():
        for key, tensor in module.state_dict().items():
            flat[f"{name}.{key}"] = tensor.detach().to("cpu").contiguous().clone()
    return flat


def final_metrics(run_path: Path) -> dict[str, float]:
    """The last value of each metric the run logged (evaluation results included)."""
    last: dict[str, float] = {}
    for row in read_metrics(run_path / "metrics.jsonl"):
        last.update({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step" and not k.startswith("time/")})
    return last


def model_card(algo: str, config: dict, step: int, metrics: dict[str, float], files: list[str]) -> str:
    about = config.get("env_id") or config.get("data") or "-"
    rows = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return (f"# {algo} on {about}\n\nTrained with the lab (`lab train {algo}`) for {step:,} steps "
            f"(what a step counts: see `lab train {algo} --help`).\n\nFiles: {', '.join(files)}; the full "
            f"hyperparameters are in config.json.\n\n## Final metrics of the run\n\n| metric | value |\n|---|---|\n"
            f"{rows or '| (none logged) | |'}\n")


def export(run_path: Path, fmt: str = "safetensors", which: str = "best", out: Path | None = None) -> Path:
    """Write the export of a run's checkpoint into ``out`` (default RUN_DIR/export-<format>); returns it."""
    if fmt not in FORMATS:
        raise LabError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}.")
    run, saved, module, runtime, algorithm, step = session._restore(Path(run_path), which, device="cpu")
    try:
        out = Path(out) if out is not None else run.path / f"export-{fmt}"
        if fmt == "diffusers":
            from generative.diffusion.export import export_diffusers
            export_diffusers(algorithm, out)
            files = ["model_index.json", "unet/", "scheduler/"]
        else:
            try:
                from safetensors.torch import save_file
            except ImportError:
                raise LabError("--format safetensors needs the safetensors package: pip install safetensors.") from None
            out.mkdir(parents=True, exist_ok=True)
            save_file(weights(algorithm), str(out / "model.safetensors"),
                      metadata={"algo": saved["algo"], "step": str(step)})
            files = ["model.safetensors"]
        (out / "config.json").write_text(json.dumps({"algo": saved["algo"], "step": step, "config": saved["config"],
                                                     "options": saved.get("options", {})}, indent=2) + "\n")
        card = model_card(saved["algo"], to_dict(algorithm.config), step, final_metrics(run.path), files)
        (out / "README.md").write_text(card)
    except OSError as error:
        raise LabError(f"cannot write the export into {out}: {error.strerror}.") from None
    finally:
        session._close(algorithm)
        runtime.close()
    return out

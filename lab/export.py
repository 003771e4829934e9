"""`lab export RUN_DIR`: a trained model's weights in a portable format, with its config and a model card.

    lab export RUN_DIR --format safetensors     RUN_DIR/export/model.safetensors + config.json + README.md
    lab export RUN_DIR --format diffusers       a DDPM run as a folder diffusers.DDPMPipeline.from_pretrained loads

Only what inference needs is written: the networks of the loaded model (an agent's policy or Q-network,
a generative model's weights and its EMA copy), never optimizer state or replay buffers. The weights are
named ``<network>.<parameter>`` as in ``state_dict``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from lab import registry, safefs, session
from lab.config import to_dict
from lab.errors import LabError
from lab.logger import read_metrics
from lab.rundir import RunDir
from lab.runtime import unwrap

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
    for row in read_metrics(run_path / "metrics.jsonl", run_path):
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
    """Write the export of a run's checkpoint into ``out`` (default RUN_DIR/export-<format>); returns it.

    ``safetensors`` works for every run; other formats are what the algorithm's module lists in its
    ``EXPORTS`` (name -> a function of the loaded algorithm returning {relative path: bytes})."""
    run = RunDir.open(Path(run_path))
    saved = run.read_config()
    exporters = getattr(registry.get(saved.get("algo", "?"))[1], "EXPORTS", {})
    if fmt != "safetensors" and fmt not in exporters:
        known = ", ".join(["safetensors", *exporters])
        raise LabError(f"{saved['algo']} runs export as {known}, not {fmt}.")
    out, root = _destination(run, fmt, out)
    run, saved, module, runtime, algorithm, step = session._restore(run.path, which, device="cpu")
    try:
        files = exporters[fmt](algorithm) if fmt in exporters else {"model.safetensors": _safetensors(
            algorithm, {"algo": saved["algo"], "step": str(step)})}
        listed = list(dict.fromkeys(name.split("/")[0] + ("/" if "/" in name else "") for name in files))
        card = model_card(saved["algo"], to_dict(algorithm.config), step, final_metrics(run.path), listed)
        files["config.json"] = (json.dumps({"algo": saved["algo"], "step": step, "config": saved["config"],
                                            "options": saved.get("options", {})}, indent=2) + "\n").encode()
        files["README.md"] = card.encode()
    finally:
        session._close(algorithm)
        runtime.close()
    for name, content in files.items():
        safefs.write_atomically(out / name, content, root)
    return out


def _destination(run: RunDir, fmt: str, out: Path | None) -> tuple[Path, Path]:
    """The folder to write and the root no link below which is followed; an ``out`` that is a run
    folder (this run's or another's) is refused: its config.json would be overwritten."""
    if out is None:
        return run.path / f"export-{fmt}", run.path
    out = Path(out)
    if out.resolve() == run.path.resolve() or (os.path.lexists(out / "config.json")
                                               and os.path.lexists(out / "checkpoints")):
        raise LabError(f"--out {out} is a run folder; exporting there would overwrite its config.json "
                       "(pick a new folder, or leave --out out for RUN_DIR/export-FORMAT).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LabError(f"cannot create {out}: {error.strerror}.") from None
    return out, out


def _safetensors(algorithm: Any, metadata: dict[str, str]) -> bytes:
    try:
        from safetensors.torch import save
    except ImportError:
        raise LabError("--format safetensors needs the safetensors package: pip install safetensors.") from None
    return save(weights(algorithm), metadata=metadata)

"""One call records a dict at a step to every sink: metrics.jsonl (the source of truth), metrics.csv,
TensorBoard when installed, media files in the run folder, and the progress bar.

Metric keys are ``namespace/name``: ``train/loss``, ``rollout/ep_return``, ``eval/ep_return``,
``time/sps``. Values that are ``Image``, ``Video`` or ``Arrays`` are written as files under the
folder named by the namespace (``samples/``, ``videos/`` or ``plots/``; others go to ``samples/``).
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lab.media import Arrays, Image, Video
from lab.rundir import RunDir

MEDIA = (Image, Video, Arrays)
SOURCE = "source"   # a row's field naming the command that logged it after training (e.g. "evaluate-command")
_MEDIA_FOLDERS = ("samples", "videos", "plots")


def to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (an empty list when there is none yet); skips a torn last line."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class Logger:
    """Writes metrics and media of one run. ``run=None`` gives a logger that writes nothing (rank > 0)."""

    def __init__(self, run: RunDir | None, total_steps: int = 0, start_step: int = 0, progress: bool = True):
        self.run = run
        self._columns: list[str] = []
        self._tb = None
        self._bar = None
        self._last_shown: dict[str, float] = {}
        self._total = total_steps
        self._last_print = -math.inf
        if run is None:
            return
        existing = read_metrics(run.metrics_file)
        for row in existing:
            self._columns += [k for k in row if k not in self._columns]
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(run.path), purge_step=start_step or None)
        except ImportError:
            self._tb = None
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             disable=None, file=sys.stderr, smoothing=0.1)
            if self._bar.disable:
                self._bar = None

    # ------------------------------------------------------------ scalars and media
    def log(self, step: int, metrics: dict[str, Any], source: str | None = None) -> list[Path]:
        """Record ``metrics`` at ``step``; returns the media files written. ``source`` marks rows that a
        command (``lab eval``) logged after training, so plots keep them apart from the training curves."""
        if self.run is None:
            return []
        scalars = {k: to_float(v) for k, v in metrics.items() if not isinstance(v, MEDIA)}
        written = [self._save_media(step, k, v) for k, v in metrics.items() if isinstance(v, MEDIA)]
        if scalars:
            row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}}
            if source is not None:
                row[SOURCE] = source
            with open(self.run.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")
            self._write_csv(row)
            if self._tb is not None:
                for key, value in scalars.items():
                    self._tb.add_scalar(key, value, step)
            self._last_shown.update({k: v for k, v in scalars.items() if _shown(k)})
            self._report(step)
        return written

    def _save_media(self, step: int, key: str, value) -> Path:
        namespace, _, name = key.rpartition("/")
        folder = self.run.path / (namespace if namespace in _MEDIA_FOLDERS else "samples")
        folder.mkdir(exist_ok=True)
        stem = (name or namespace).replace("/", "-")
        base = f"{stem}-step{step:08d}"
        name, copy = base, 2
        while any(folder.glob(f"{name}.*")):   # never overwrite: a later `lab sample` gets its own file
            name, copy = f"{base}-{copy}", copy + 1
        path = value.save(folder / name)
        if self._tb is not None and isinstance(value, Image):
            from lab.media import _to_uint8_hwc
            self._tb.add_image(key, _to_uint8_hwc(value.array), step, dataformats="HWC")
        return path

    def _write_csv(self, row: dict[str, Any]) -> None:
        csv_path = self.run.path / "metrics.csv"
        new = [k for k in row if k not in self._columns]
        if new or not csv_path.exists():
            self._columns += new
            self.rewrite_csv()
            return
        with open(csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def rewrite_csv(self) -> None:
        """Regenerate metrics.csv from metrics.jsonl (new columns appeared, or the log was truncated)."""
        rows = read_metrics(self.run.metrics_file)
        for row in rows:
            self._columns += [k for k in row if k not in self._columns]
        with open(self.run.path / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after ``step`` (work a resume redoes); returns how many were dropped."""
        rows = read_metrics(self.run.metrics_file)
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) != len(rows):
            with open(self.run.metrics_file, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            self.rewrite_csv()
        return len(rows) - len(kept)

    # ------------------------------------------------------------ progress
    def advance(self, step: int) -> None:
        """Move the progress bar to ``step``."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def _report(self, step: int) -> None:
        shown = {k.split("/", 1)[-1] if k.startswith("train/") else k: _fmt(v)
                 for k, v in list(self._last_shown.items())[-5:]}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
        elif time.monotonic() - self._last_print >= 10 or step >= self._total:
            # without a terminal (CI, nohup) a line every 10 s stands in for the bar
            self._last_print = time.monotonic()
            text = " | ".join(f"{k} {v}" for k, v in shown.items())
            print(f"step {step}/{self._total} | {text}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """A line for the person watching (keeps the progress bar intact)."""
        if self.run is None:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _shown(key: str) -> bool:
    return key.startswith(("eval/", "rollout/")) or "loss" in key or key == "time/sps"


def _fmt(value: float) -> str:
    if value != value or math.isinf(value):
        return str(value)
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.4g}"

"""One call records a dict at a step to every sink: metrics.jsonl (the source of truth), metrics.csv,
TensorBoard when installed, media files in the run folder, and the progress (``lab.progress``).

Metric keys are ``namespace/name``: ``train/loss``, ``rollout/ep_return``, ``eval/ep_return``,
``time/sps``. Values that are ``Image``, ``Video`` or ``Arrays`` are written as files under the
folder named by the namespace (``samples/``, ``videos/`` or ``plots/``; others go to ``samples/``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lab import safefs
from lab.errors import LabError
from lab.media import Arrays, Image, Video, to_uint8_hwc
from lab.progress import Progress
from lab.rundir import RunDir

MEDIA = (Image, Video, Arrays)
SOURCE = "source"   # a row's field naming the command that logged it after training (e.g. "evaluate-command")
_MEDIA_FOLDERS = ("samples", "videos", "plots")


def to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


METRICS_LIMIT = 1 << 30
"""The largest metrics.jsonl read (a billion bytes: millions of rows)."""


def read_metrics(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (an empty list when there is none yet), read without following a link
    below ``root`` (the run folder; default: the file's folder) and bounded in size and depth.

    A torn last line (a kill or a full disk mid-write) is skipped; any other line that is not a JSON
    object with an integer ``step`` is one ``LabError`` sentence naming the file and the line.
    """
    data = safefs.read_bytes(path, root, limit=METRICS_LIMIT, missing_ok=True)
    if data is None:
        return []
    complete = data.decode("utf-8", errors="replace").split("\n")[:-1]   # after the last newline: unfinished
    rows = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = safefs.parse(line, path)
        except ValueError:          # not JSON, or an integer of more than 4,300 digits
            raise LabError(f"{path} is corrupt: line {number} is not JSON.") from None
        except LabError:
            raise LabError(f"{path} is corrupt: line {number} nests deeper than a metrics row.") from None
        if not isinstance(row, dict) or type(row.get("step")) is not int:
            raise LabError(f"{path} is corrupt: line {number} is not a metrics row with an integer step.")
        rows.append(row)
    return rows


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _drop_torn_tail(path: Path, root: Path) -> None:
    """Cut an unfinished last line (a kill or a full disk mid-write) so the next row starts cleanly."""
    if not os.path.lexists(path):
        return
    with safefs.opened(path, "r+b", root) as f:
        end = f.seek(0, os.SEEK_END)
        position = end
        while position > 0:                      # back from the end, a block at a time, to the last newline
            start = max(0, position - (1 << 16))
            f.seek(start)
            block = f.read(position - start)
            if position == end and block.endswith(b"\n"):
                return
            if b"\n" in block:
                f.truncate(start + block.rfind(b"\n") + 1)
                return
            position = start
        f.truncate(0)


def _replace_atomically(path: Path, root: Path, write) -> None:
    """Write a text file through a temporary file, fsync and rename: a kill leaves the old or the new file."""
    def write_text(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()
    safefs.write_atomically(path, write_text, root)


class Logger:
    """Writes metrics and media of one run. ``run=None`` gives a logger that writes no file (rank > 0, or
    training in memory, where ``progress`` still shows a transient bar). ``tensorboard=False`` writes no
    TensorBoard events (the commands that record into a finished run: one events file per training run)."""

    def __init__(self, run: RunDir | None, total_steps: int = 0, start_step: int = 0, progress: bool = True,
                 headline: str | None = None, tensorboard: bool = True):
        self.run = run
        self._columns: list[str] = []
        self._tb = None
        self._progress: Progress | None = None
        self._latest: dict[str, float] = {}
        self._headline = headline
        if progress:   # without a run folder (train_in_memory: tests, benchmarks) a transient one
            self._progress = Progress(total_steps, "train", unit="step", initial=start_step, leave=run is not None)
        if run is None:
            return
        existing = read_metrics(run.metrics_file, run.path)     # validated before anything is touched
        safefs.remove_temporaries(run.path, run.path)          # left by a process killed mid-rewrite
        try:
            _drop_torn_tail(run.metrics_file, run.path)
        except OSError as error:
            raise LabError(f"cannot repair {run.metrics_file}: {error.strerror}.") from None
        for row in existing:
            self._columns += [k for k in row if k not in self._columns]
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(run.path), purge_step=start_step or None)
        except ImportError:
            self._tb = None

    # ------------------------------------------------------------ scalars and media
    def log(self, step: int, metrics: dict[str, Any], source: str | None = None) -> list[Path]:
        """Record ``metrics`` at ``step``; returns the media files written. ``source`` marks rows that a
        command (``lab eval``) logged after training, so plots keep them apart from the training curves."""
        scalars = {k: to_float(v) for k, v in metrics.items() if not isinstance(v, MEDIA)}
        if self.run is None:
            self._report(scalars)
            return []
        written = [self._save_media(step, k, v) for k, v in metrics.items() if isinstance(v, MEDIA)]
        if scalars:
            row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}}
            if source is not None:
                row[SOURCE] = source
            try:
                with safefs.opened(self.run.metrics_file, "ab", self.run.path) as f:
                    f.write((json.dumps(row) + "\n").encode())
                self._write_csv(row)
            except OSError as error:
                raise LabError(f"cannot append to {self.run.metrics_file}: {error.strerror}.") from None
            if self._tb is not None:
                for key, value in scalars.items():
                    self._tb.add_scalar(key, value, step)
            if source is None:
                self._report(scalars)
        return written

    def _save_media(self, step: int, key: str, value) -> Path:
        namespace, _, name = key.rpartition("/")
        folder = self.run.path / (namespace if namespace in _MEDIA_FOLDERS else "samples")
        suffix, content = value.encode()
        taken = {n.rsplit(".", 1)[0] for n in safefs.names(folder, self.run.path, create=True)}
        stem = (name or namespace).replace("/", "-")
        base = f"{stem}-step{step:08d}"
        name, copy = base, 2
        while name in taken:   # never overwrite: a later `lab sample` gets its own file
            name, copy = f"{base}-{copy}", copy + 1
        path = folder / f"{name}{suffix}"
        safefs.create_new(path, content, self.run.path)
        if self._tb is not None and isinstance(value, Image):
            self._tb.add_image(key, value.pixels(), step, dataformats="HWC")
        if self._tb is not None and isinstance(value, Video):
            self._add_tb_video(key, value, step)
        return path

    def _add_tb_video(self, key: str, video: Video, step: int) -> None:
        """The video in TensorBoard too; its writer needs moviepy, without which the file alone is kept."""
        frames = torch.from_numpy(np.stack([to_uint8_hwc(f) for f in video.frames])).permute(0, 3, 1, 2)
        try:
            self._tb.add_video(key, frames[None], step, fps=video.fps)
        except ImportError:
            pass

    def hparams(self, config: dict[str, Any]) -> None:
        """The run's hyperparameters in TensorBoard's HParams tab (flattened; lists as text)."""
        if self._tb is None:
            return
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _flatten(config).items()}
        self._tb.add_hparams(flat, {}, run_name=".")

    def _write_csv(self, row: dict[str, Any]) -> None:
        csv_path = self.run.path / "metrics.csv"
        new = [k for k in row if k not in self._columns]
        if new or not os.path.lexists(csv_path):
            self._columns += new
            self.rewrite_csv()
            return
        line = io.StringIO(newline="")
        csv.DictWriter(line, fieldnames=self._columns).writerow(row)
        with safefs.opened(csv_path, "ab", self.run.path) as f:
            f.write(line.getvalue().encode())

    def rewrite_csv(self) -> None:
        """Regenerate metrics.csv from metrics.jsonl (new columns appeared, or the log was truncated)."""
        rows = read_metrics(self.run.metrics_file, self.run.path)
        for row in rows:
            self._columns += [k for k in row if k not in self._columns]

        def write(f) -> None:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)
        _replace_atomically(self.run.path / "metrics.csv", self.run.path, write)

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after ``step`` (work a resume redoes); returns how many were dropped. The log
        is replaced atomically: a kill mid-rewrite leaves the old or the new one, whole."""
        rows = read_metrics(self.run.metrics_file, self.run.path)
        kept = [r for r in rows if r["step"] <= step]
        if len(kept) != len(rows):
            _replace_atomically(self.run.metrics_file, self.run.path, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept))
            self.rewrite_csv()
        return len(rows) - len(kept)

    # ------------------------------------------------------------ progress
    def advance(self, step: int) -> None:
        """Move the progress bar to ``step``."""
        if self._progress is not None:
            self._progress.update_to(step)

    def _report(self, scalars: dict[str, float]) -> None:
        self._latest.update(scalars)
        if self._progress is not None:
            self._progress.show({_short(k): _fmt(self._latest[k]) for k in self.shown_keys()})

    def shown_keys(self) -> list[str]:
        """What the progress shows, always: the losses, the headline metric (the algorithm's best metric,
        else its first evaluation metric) and the training episodes' return."""
        losses = [k for k in self._latest if k.startswith("train/") and ("loss" in k or "elbo" in k)]
        headline = self._headline or next((k for k in self._latest if k.startswith("eval/")), None)
        return [k for k in losses + [headline, "rollout/ep_return"] if k in self._latest]

    def message(self, text: str) -> None:
        """A line for the person watching (keeps the progress bar intact)."""
        if self.run is None:
            return
        if self._progress is not None:
            self._progress.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _short(key: str) -> str:
    return key.split("/", 1)[1] if key.startswith("train/") else key


def _fmt(value: float) -> str:
    if value != value or math.isinf(value):
        return str(value)
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.4g}"

"""What every ``lab bench`` script shares: its flags, a documented dataclass read by tyro as every other
``lab`` command reads its own, and where its results go. A benchmark writes ``--out``, else a new file
under runs/bench/, so the committed results in bench/results/ change only when ``--out`` names them."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, TypeVar

import tyro

from lab.cli import parse_flags

Options = TypeVar("Options")

ResultsPath = Annotated[Path | None, tyro.conf.arg(
    help="Where to write the JSON results (default: a new runs/bench/NAME-<time>.json; name a file in "
         "bench/results/ to update the committed results).")]


def parse(options_cls: type[Options], argv: list[str] | None, name: str) -> Options:
    """The benchmark's options from its command line (``lab bench NAME --help`` documents them)."""
    return parse_flags(options_cls, list(argv or []), f"lab bench {name}", config=(tyro.conf.OmitArgPrefixes,))


def results_path(out: Path | None, name: str) -> Path:
    """``out``, else runs/bench/<name>-<yyyymmdd-hhmmss>.json under $LAB_RUNS_DIR (default ./runs); its folder made."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(os.environ.get("LAB_RUNS_DIR", "runs")) / "bench" / f"{name}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out

"""Progress of anything long (training, evaluation, sampling, solving, benchmarks), written once for all:
a bar with rate and ETA on a terminal, and without one (CI, nohup, a pipe) a plain line every few
seconds, each with the values given to ``show``, and a last line at the end (for a transient progress,
``leave=False``, only when it printed lines before: a short evaluation inside training stays silent).

    with Progress(total=len(jobs), what="episodes") as progress:
        for job in jobs:
            ...
            progress.update(1)
            progress.show({"return": f"{r:.1f}"})
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LINE_EVERY_S = 10.0   # without a terminal: seconds between lines
BAR_WIDTH = 24        # characters; fixed, so long values are cut at the edge instead of the bar shrinking


class Progress:
    """Progress towards ``total`` (None: unknown, then only the count and the rate are shown)."""

    def __init__(self, total: int | None, what: str, *, unit: str = "it", initial: int = 0, leave: bool = True,
                 line_every_s: float = LINE_EVERY_S):
        self.total, self.what, self.unit, self.leave = total, what, unit, leave
        self.n = initial
        self.values: dict[str, str] = {}
        self._start_n, self._started = initial, time.monotonic()
        self._line_every_s, self._last_line = line_every_s, time.monotonic()
        self._printed: tuple | None = None
        self._bar = None
        if sys.stderr.isatty():
            bar_format = (f"{{desc}}: {{percentage:3.0f}}%|{{bar:{BAR_WIDTH}}}| {{n_fmt}}/{{total_fmt}} "
                          "[{elapsed}<{remaining}, {rate_fmt}]{postfix}") if total else None
            self._bar = tqdm(total=total, initial=initial, desc=what, unit=unit, leave=leave, file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1, bar_format=bar_format)

    # ------------------------------------------------------------ what callers use
    def update(self, count: int = 1) -> None:
        self.update_to(self.n + count)

    def update_to(self, n: int) -> None:
        """Set the count to ``n`` (a step number, say)."""
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
        self.n = n
        self._maybe_line()

    def show(self, values: dict[str, str]) -> None:
        """The values shown after the count (they replace the previous ones)."""
        self.values = dict(values)
        if self._bar is not None:
            self._bar.set_postfix_str(" | ".join(f"{k} {v}" for k, v in self.values.items()), refresh=False)
        self._maybe_line()

    def write(self, text: str) -> None:
        """A message line that leaves the bar intact."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Leave the bar, or print the last line (once, with the last values)."""
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif (self.leave or self._printed is not None) and self._printed != self._state():
            self._print_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ lines without a terminal
    def line(self) -> str:
        """``what n/total unit (pct) | rate | ETA | values``, what a terminal's bar shows, as one line."""
        elapsed = time.monotonic() - self._started
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.what} {self.n}/{self.total} {self.unit}" if self.total else f"{self.what} {self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self.values.items()]
        return " | ".join(parts)

    def _state(self) -> tuple:
        return self.n, tuple(self.values.items())

    def _maybe_line(self) -> None:
        # the line at the end waits for close(), when every value of the last step is in
        finished = self.total is not None and self.n >= self.total
        if self._bar is None and not finished and time.monotonic() - self._last_line >= self._line_every_s:
            self._print_line()

    def _print_line(self) -> None:
        self._last_line, self._printed = time.monotonic(), self._state()
        print(self.line(), file=sys.stderr, flush=True)

"""Progress of a simulation: a line per round with counts, elapsed time and an ETA.

Every line goes through the simulation's ``log`` (so a caller or a test sees them). When tqdm is
installed, the log is the default one (print) and stderr is a terminal, a tqdm bar on stderr
shows the same counts and the lines are written above it with ``tqdm.write``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

__all__ = ["Progress", "format_seconds"]


def format_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}:{sec:02d} min"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d} h"


class Progress:
    """Counts ``total`` units of work (rounds); :meth:`advance` logs one line with the ETA."""

    def __init__(self, total: int, log: Callable[[str], None], *, bar: bool | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self.clock = clock
        self.t0 = clock()
        self._bar: Any = None
        self._log = log
        if bar is None:
            bar = _is_default_print(log) and getattr(sys.stderr, "isatty", lambda: False)()
        if bar:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, unit="round", file=sys.stderr, dynamic_ncols=True, leave=False)
                self._log = tqdm.write
            except ImportError:
                self._bar = None

    def eta(self) -> float | None:
        if self.done == 0:
            return None
        return (self.clock() - self.t0) / self.done * (self.total - self.done)

    def prefix(self) -> str:
        return f"[{self.done}/{self.total} rounds, {format_seconds(self.clock() - self.t0)} elapsed, ETA {format_seconds(self.eta())}]"

    def advance(self, msg: str, n: int = 1) -> None:
        self.done = min(self.total, self.done + int(n))
        if self._bar is not None:
            self._bar.update(int(n))
        self._log(f"{self.prefix()} {msg}")

    def log(self, msg: str) -> None:
        self._log(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_default_print(log: Callable[[str], None]) -> bool:
    return getattr(log, "__name__", "") == "_log_default"

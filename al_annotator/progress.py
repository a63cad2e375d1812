"""Progress bars for long work, in the idiom of each place.

Long operations (``create_project``, prediction, export) take a ``progress(done, total, what)``
callback and know nothing of bars. :class:`ProgressBars` is that callback as tqdm bars: one bar per
``what`` (a stage such as ``"import"``), with counts, rate and ETA. It uses ``tqdm.auto``, so the
same code draws a text bar on a terminal or in a SLURM job's log and an ipywidgets bar in a
notebook. napari's dock draws the same stages with ``napari.utils.progress`` in its activity panel
(``al_annotator.napari._progress``).

Examples
--------
>>> import io
>>> out = io.StringIO()
>>> with ProgressBars(file=out, unit="slice") as bar:
...     for done in (2, 4):
...         bar(done, 4, "import")
>>> "import: 100%" in out.getvalue() and "4/4" in out.getvalue()
True
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Callable, Hashable

from .simulate.progress import format_seconds

__all__ = ["ProgressBars", "Callback", "PhaseEta", "format_seconds"]

#: ``progress(done, total, what)``: ``done`` of ``total`` units of the stage ``what``
Callback = Callable[[int, int, str], None]


class ProgressBars:
    """A ``progress(done, total, what)`` callback that draws tqdm bars.

    A new ``what`` closes the previous stage's bar and opens its own; a stage reaching ``total``
    closes its bar (left on screen). By default ``tqdm.auto`` chooses (a widget bar in Jupyter, text on
    stderr elsewhere); ``file`` forces a text bar there. ``bar`` replaces tqdm by another class with
    its interface (napari's ``napari.utils.progress``).
    """

    def __init__(self, *, unit: str = "it", file: IO[str] | None = None, mininterval: float = 0.5,
                 bar: Callable[..., Any] | None = None, unit_scale: bool = False) -> None:
        self.unit = unit
        self.unit_scale = unit_scale  # tqdm's: 12.6M vox rather than 12582912 vox
        self.file = file
        self.mininterval = mininterval
        self._bar_class = bar
        self._bar: Any = None
        self._what: str | None = None

    def _new_bar(self, total: int, what: str) -> Any:
        if self._bar_class is not None:
            return self._bar_class(total=total, desc=what, unit=self.unit)
        if self.file is None:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        return tqdm(total=total, desc=what, unit=self.unit, unit_scale=self.unit_scale,
                    file=self.file if self.file is not None else sys.stderr,
                    mininterval=self.mininterval, dynamic_ncols=True, leave=True)

    def __call__(self, done: int, total: int, what: str) -> None:
        if what != self._what or self._bar is None:
            self.close()
            self._bar, self._what = self._new_bar(int(total), what), what
        bar = self._bar
        if bar.total != total:
            bar.total = int(total)
        bar.update(int(done) - bar.n)
        if done >= total:
            self.close()

    @property
    def bar(self) -> Any:
        """The bar of the stage in progress (``None`` between stages)."""
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._what = None

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PhaseEta:
    """The ETA of work reported as a fraction that runs 0 -> 1 per ``key`` (the trainer's round),
    from the rate seen since the first report of that key: what the front ends' trainer bars show.

    Examples
    --------
    >>> t = iter([0.0, 10.0, 20.0])
    >>> eta = PhaseEta(clock=lambda: next(t))
    >>> eta.update(1, 0.1), eta.update(1, 0.3), eta.update(1, 0.5)
    (None, 35.0, 25.0)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._key: Hashable = object()
        self._t0 = 0.0
        self._f0 = 0.0
        self._last: float | None = None

    def update(self, key: Hashable, fraction: float | None) -> float | None:
        """Seconds left, ``None`` until a rate is known (first report, a new key, a fraction that went back)."""
        now = self.clock()
        if fraction is None:
            self._last = None
            return None
        if key != self._key or self._last is None or fraction < self._last:
            self._key, self._t0, self._f0, self._last = key, now, float(fraction), float(fraction)
            return None
        self._last = float(fraction)
        if fraction >= 1.0 or fraction <= self._f0 or now <= self._t0:
            return None
        return (1.0 - fraction) * (now - self._t0) / (fraction - self._f0)

    def text(self, key: Hashable, fraction: float | None) -> str:
        """``"ETA 1:20 min"`` after :meth:`update`, ``""`` while unknown."""
        eta = self.update(key, fraction)
        return "" if eta is None else f"ETA {format_seconds(eta)}"

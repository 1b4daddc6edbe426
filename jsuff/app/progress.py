"""Progress and console lines of a long study: a bar on a terminal, timed lines elsewhere.

Lines go through the ``jsuff.study`` logger when the application has set up logging for INFO,
else to stderr (:func:`emit`, with :mod:`jsuff.progress`'s rule), so a study under ``tee``,
``nohup`` or a batch scheduler still reports how far it is.

Example:
    >>> bar = Progress(3, "explaining", quiet=True)
    >>> bar.update(2); bar.done
    2
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from jsuff.progress import duration
from jsuff.progress import emit as emit_to

__all__ = ["Progress", "emit", "log"]

_LOGGER = logging.getLogger("jsuff.study")


def emit(msg: str) -> None:
    """One console line of the study, through the ``jsuff.study`` logger (see the module doc)."""
    emit_to(_LOGGER, msg)


class Progress:
    """Progress of a long step as ``done/total`` with an ETA.

    On a terminal: a tqdm bar. Off a terminal (a pipe, ``tee``, nohup, a batch scheduler): a line
    such as ``explaining: 8/40 clips (20%), 1m05s elapsed, ETA 4m20s`` when the step starts, after
    the first unit, then at most every ``interval`` seconds, and when the step is done (see
    :func:`emit` for where lines go). ``quiet=True`` silences both; ``None`` or ``False``: whichever
    suits stderr.

    Example:
        >>> bar = Progress(4, "explaining", quiet=True)
        >>> bar.update(4); bar.close(); bar.done
        4
    """

    def __init__(self, total: int, desc: str, quiet: bool | None, *, unit: str = "clips",
                 interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self._interval, self._clock = interval, clock
        self._t0 = clock()
        self._shown: int | None = None  # `done` at the last line
        self._last = self._t0
        self._bar = None
        self._lines = False
        if quiet or self.total <= 0:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit.rstrip("s"), leave=False)
        else:
            self._lines = True
            self._line()

    def update(self, n: int) -> None:
        first = self.done == 0
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and (first or self.done >= self.total or self._clock() - self._last >= self._interval):
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and self._shown != self.done:
            self._line()

    def _line(self) -> None:
        now = self._clock()
        elapsed = now - self._t0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        if self.done:
            text += f", {duration(elapsed)} elapsed"
            if self.done < self.total:
                text += f", ETA {duration(elapsed / self.done * (self.total - self.done))}"
        emit(text)
        self._shown, self._last = self.done, now


def log(quiet: bool | None, msg: str) -> None:
    """:func:`emit` ``msg`` unless ``quiet``."""
    if not quiet:
        emit(msg)

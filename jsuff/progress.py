"""Progress of long library runs: lines with done/total, the time elapsed and an ETA.

Lines go through the ``jsuff`` logger hierarchy (``jsuff.explain`` for :func:`jsuff.explain`)
when the program has set logging up for INFO, and otherwise on stderr, so that a run under
``tee``, ``nohup`` or a batch scheduler shows them too. Whether a run talks at all is the
caller's ``quiet``: ``True`` never, ``False`` always, ``None`` (the default) only when the run is
expected to take at least :data:`LONG_RUN_SECONDS`.

Example:
    >>> clock = iter([0.0, 0.0, 30.0, 60.0]).__next__
    >>> p = RunProgress("explain", total=4.0, show=True, clock=clock, sink=print)
    >>> p.line("searching 2 clips", 0, 2, "clips")
    explain: searching 2 clips: 0/2 clips, ETA 4s
    >>> p.advance(2.0); p.line("search done; extracting", 0, 2, "clips")
    explain: search done; extracting: 0/2 clips, 30s elapsed, ETA 30s
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

__all__ = ["LONG_RUN_SECONDS", "LOGGER", "RunProgress", "duration", "emit"]

#: The root of jsuff's loggers; ``logging.getLogger("jsuff").setLevel(logging.INFO)`` plus a handler
#: routes every progress line through logging.
LOGGER = logging.getLogger("jsuff")

#: A run expected to take at least this many seconds reports its progress when ``quiet=None``.
LONG_RUN_SECONDS = 10.0


def emit(logger: logging.Logger, msg: str) -> None:
    """One progress line: through ``logger`` when the program has set logging up for INFO, else
    on stderr (flushed, so a pipe shows it at once)."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42s``, ``5m19s``, ``2h03m``.

    Example:
        >>> [duration(s) for s in (0.4, 61, 7384)]
        ['0s', '1m01s', '2h03m']
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RunProgress:
    """The lines of one run whose work was estimated up front (in seconds).

    The ETA is the estimated work left, scaled by how the run has kept to its estimate so far
    (elapsed / estimated work done); before any work is done, the estimate itself.

    Args:
        name: the line's prefix (``"explain"``).
        total: estimated seconds of the whole run (``None``: no ETA).
        show: print lines at all (``quiet`` decided by the caller).
        clock: seconds (``time.monotonic``); sink: where a line goes (default: :func:`emit` to the
            logger ``jsuff.<name>``).
    """

    def __init__(self, name: str, total: float | None, show: bool, *, clock: Callable[[], float] = time.monotonic,
                 sink: Callable[[str], None] | None = None):
        self.name, self.total, self.show = name, total, show
        self._clock = clock
        logger = LOGGER.getChild(name)
        self._emit = sink if sink is not None else (lambda msg: emit(logger, msg))
        self._t0 = clock()
        self.done = 0.0  # estimated seconds of the work finished

    def advance(self, estimated_seconds: float) -> None:
        """Mark work that was estimated at ``estimated_seconds`` as finished."""
        self.done += float(estimated_seconds)

    def say(self, text: str) -> None:
        """A line as it is (the cost before a run, a warning)."""
        if self.show:
            self._emit(f"{self.name}: {text}")

    def line(self, what: str, done: int, total: int, unit: str) -> None:
        """``name: what: done/total unit, elapsed, ETA``."""
        if not self.show:
            return
        elapsed = self._clock() - self._t0
        text = f"{self.name}: {what}: {done}/{total} {unit}"
        if elapsed >= 0.5:
            text += f", {duration(elapsed)} elapsed"
        if self.total is not None and done < total:
            left = max(self.total - self.done, 0.0)
            speed = elapsed / self.done if self.done > 0 else 1.0
            text += f", ETA {duration(left * speed)}"
        self._emit(text)

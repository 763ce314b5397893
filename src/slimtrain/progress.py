"""Progress of long work made of N similar items (sweep levels, compare runs, export stages).

On a terminal a live ``tqdm`` bar (elapsed time and ETA included); anywhere else (a log file, CI) plain lines,
at most one per ``every_s`` seconds plus the first and the last, so a recipe never needs to switch progress
off to keep its logs readable. Only values the caller already has on the host are shown: progress never
synchronises with an accelerator.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """A duration as people read it: ``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Item k of N of some work, its elapsed time and an ETA; a context manager.

    Call :meth:`step` as each item starts; leaving the ``with`` block ends the last one (on an error too, so a
    message is never glued to the bar's line).

    Args:
        total: The number of items.
        what: The work, e.g. ``"sweep run-a (unstructured)"``.
        unit: What an item is (``"level"``, ``"run"``, ``"stage"``).
        enabled: ``False`` shows nothing.
        stream: Where to write (default standard error); a bar only when it is a terminal.
        every_s: Least seconds between two plain lines (the first and the last item are always shown).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(2, "sweep demo", "level", stream=out, every_s=0) as progress:
        ...     for level in (0.5, 0.9):
        ...         progress.step(f"{level:g}")
        >>> print(out.getvalue().splitlines()[0])
        sweep demo: level 1/2 0.5
    """

    def __init__(
        self,
        total: int,
        what: str,
        unit: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.enabled = enabled and total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = -1  # items finished; -1 before the first step
        self._start = self._last_line = time.perf_counter()
        self._bar: tqdm | None = None
        if self.enabled and _is_terminal(self.stream):
            self._bar = tqdm(
                total=total, desc=what, unit=unit, file=self.stream, leave=False, dynamic_ncols=True
            )

    def step(self, label: str = "") -> None:
        """Item ``k`` starts (``label`` says which, e.g. a level or a run's name); item ``k - 1`` is done."""
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            if self.done:
                self._bar.update(1)
            self._bar.set_postfix_str(label, refresh=True)
            return
        now = time.perf_counter()
        if self.done and self.done + 1 < self.total and now - self._last_line < self.every_s:
            return
        self._last_line = now
        line = f"{self.what}: {self.unit} {self.done + 1}/{self.total}" + (f" {label}" if label else "")
        if self.done:
            elapsed = now - self._start
            eta = elapsed / self.done * (self.total - self.done)
            line += f"; {format_duration(elapsed)} elapsed, ETA {format_duration(eta)}"
        print(line, file=self.stream, flush=True)

    def close(self, *, failed: bool = False) -> None:
        """End the last item (``failed``: it did not finish): clear the bar, or print how long it all took."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.done >= 0:
            finished = self.done + (not failed)
            elapsed = format_duration(time.perf_counter() - self._start)
            head = f"{self.what}: stopped after" if failed else f"{self.what}:"
            print(f"{head} {finished}/{self.total} {self.unit}s in {elapsed}", file=self.stream, flush=True)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(failed=error is not None)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())

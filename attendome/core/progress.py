"""Progress reporting that suits where the output goes.

On a terminal: a tqdm bar. In a log file (DVC stages, CI, ``nohup``): plain lines, at most one every
``interval`` seconds plus the last one, e.g. ``[attendome] gemma3-270m: segment attention 120/568
(21%) 14.2 s`` -- never the multi-thousand-character carriage-return lines a bar becomes in a file.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

__all__ = ["progress", "is_terminal"]

T = TypeVar("T")


def is_terminal() -> bool:
    """Whether standard error is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Lines:
    """An iterator wrapper with tqdm's small API (``set_postfix``), printing periodic lines."""

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None, interval: float):
        self.it, self.desc, self.interval = iterable, desc, interval
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def _line(self, n: int, t0: float) -> None:
        frac = f"{n}/{self.total} ({100 * n / self.total:.0f}%)" if self.total else f"{n}"
        extra = f" {self.postfix}" if self.postfix else ""
        print(f"[attendome] {self.desc} {frac} {time.perf_counter() - t0:.1f} s{extra}", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[T]:
        t0 = last = time.perf_counter()
        n, printed = 0, -1
        for n, item in enumerate(self.it, 1):
            yield item
            now = time.perf_counter()
            if now - last >= self.interval:
                self._line(n, t0)
                last, printed = now, n
        if printed != n:  # the final line, unless the periodic one just printed it
            self._line(n, t0)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True,
             unit: str = "it", interval: float = 30.0):
    """Wrap ``iterable`` with a progress display (see module docstring); ``enabled=False`` for none."""
    if not enabled:
        return _Silent(iterable)
    if is_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit)
    return _Lines(iterable, desc, total, interval)


class _Silent:
    def __init__(self, iterable):
        self.it = iterable

    def set_postfix(self, **kw) -> None:
        pass

    def __iter__(self):
        return iter(self.it)

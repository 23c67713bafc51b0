"""Progress bars that stay quiet in logs.

On a terminal this is tqdm. When the stream is not a terminal (output redirected to a file, CI), tqdm's
carriage-return updates would fill the log, so :func:`progress` prints a plain line only every
``log_percent`` percent or ``log_seconds`` seconds (and at the end) instead.

Use it exactly like tqdm: ``for x in progress(items, desc="render"): ...`` or
``bar = progress(total=n); bar.update(1); bar.set_postfix(loss=...); bar.close()``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

LOG_PERCENT = 10.0
LOG_SECONDS = 30.0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """A tqdm-compatible subset that writes sparse, newline-terminated lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 initial: int = 0, disable: bool = False, file=None,
                 log_percent: float = LOG_PERCENT, log_seconds: float = LOG_SECONDS, unit: str = "it"):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, initial
        self.disable, self.file = disable, file if file is not None else sys.stderr
        self.log_percent, self.log_seconds, self.unit = log_percent, log_seconds, unit
        self.postfix = ""
        self.t0 = self._last_t = time.monotonic()
        self._last_n = initial
        self._closed = False

    def __iter__(self):
        for x in self.iterable if self.iterable is not None else ():
            yield x
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kw: Any) -> None:
        d = dict(ordered_dict or {}, **kw)
        self.postfix = ", ".join(f"{k}={v}" for k, v in d.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def _due(self, now: float) -> bool:
        if now - self._last_t >= self.log_seconds:
            return True
        if self.total:
            step = max(1.0, self.total * self.log_percent / 100.0)
            return self.n - self._last_n >= step
        return False

    def _line(self, now: float) -> str:
        el = now - self.t0
        rate = (self.n / el) if el > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            pct = 100.0 * self.n / self.total
            s = f"{head}{pct:3.0f}% {self.n}/{self.total} [{el:.0f}s, {rate:.2f} {self.unit}/s]"
        else:
            s = f"{head}{self.n} {self.unit} [{el:.0f}s, {rate:.2f} {self.unit}/s]"
        return s + (f" {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        if self._due(now):
            self._emit(now)

    def _emit(self, now: float) -> None:
        print(self._line(now), file=self.file, flush=True)
        self._last_t, self._last_n = now, self.n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._last_n:
            self._emit(time.monotonic())


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             initial: int = 0, disable: bool = False, file=None, **kw: Any):
    """tqdm on a terminal; sparse plain lines otherwise (see the module docstring)."""
    stream = file if file is not None else sys.stderr
    if _isatty(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc or None, initial=initial, disable=disable,
                    file=stream, **kw)
    kw = {k: v for k, v in kw.items() if k in ("log_percent", "log_seconds", "unit")}
    return LineProgress(iterable, total=total, desc=desc, initial=initial, disable=disable,
                        file=stream, **kw)

"""A one-line progress bar for long jobs (encode, decode, plot_rc), drawn on stderr.

Shown only when stderr is a terminal or when asked (`elfvc --progress`); otherwise it does
nothing, so logs and pipes stay clean. It redraws at most every `interval` seconds:

    encode [##########..........]  40/80 frames  3.1 fps  ETA 0:13  level 3.50
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts finished frames out of `total` (None: unknown, no bar or ETA)."""

    WIDTH = 20

    def __init__(
        self,
        label: str,
        total: Optional[int] = None,
        *,
        enabled: Optional[bool] = None,
        stream: Optional[TextIO] = None,
        interval: float = 0.2,
    ):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = -float("inf")
        self._width = 0

    def update(self, done: Optional[int] = None, note: str = "") -> None:
        """Marks one more frame done (or `done` frames in all); `note` is shown at the end."""
        self.done = self.done + 1 if done is None else done
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval and self.done != self.total:
            return
        self._last_draw = now
        self._draw(self.line(now, note))

    def line(self, now: Optional[float] = None, note: str = "") -> str:
        elapsed = (time.perf_counter() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [self.label]
        if self.total:
            filled = min(self.WIDTH, self.WIDTH * self.done // self.total)
            parts.append("[" + "#" * filled + "." * (self.WIDTH - filled) + "]")
            parts.append(f"{self.done:>{len(str(self.total))}}/{self.total} frames")
        else:
            parts.append(f"{self.done} frames")
        parts.append(f"{rate:.1f} fps")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        if note:
            parts.append(note)
        return "  ".join(parts)

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Ends the bar's line (so the summary starts on a fresh one)."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Progress a person sees: tqdm's widget in a live notebook, plain lines where nobody watches a widget.

`progress(...)` takes tqdm's arguments and returns an object with tqdm's methods (`update`,
`set_postfix`, `write`, `close`, iteration, `with`). Which kind it is follows these rules, first
match wins:

1. `VMM_PROGRESS` in the environment: `widget` (tqdm.auto), `bar` (tqdm's text bar), `lines`
   (plain lines, below) or `off`. `vmm run` sets `lines` for its notebooks.
2. Inside a Jupyter kernel: the widget when a live front end started the kernel (jupyter_server
   sets `JPY_SESSION_NAME` in a JupyterLab/Notebook kernel's environment; VS Code `VSCODE_PID`;
   Colab imports `google.colab`), else lines: papermill, nbclient and `nbconvert --execute` start
   kernels without a front end, where a widget shows `0%` and never moves.
3. Outside a kernel: tqdm's text bar when stderr is a terminal, else lines (piped, logged, CI).

A progress line reads `fit: 120/500 (24%) · 3.2 it/s · loss=0.431 · 0:37 elapsed · ETA 1:58`.
One comes at the first step, then one every `VMM_PROGRESS_INTERVAL` seconds (default 15) and one
when the bar closes. Lines go to stdout inside a kernel (the notebook's text output, and
`papermill --log-output`), to stderr outside one (so a command's JSON on stdout stays clean).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

MODES = ("widget", "bar", "lines", "off")
DEFAULT_INTERVAL_S = 15.0


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _live_frontend() -> bool:
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID")) or (
        "google.colab" in sys.modules
    )


def progress_mode() -> str:
    """`widget`, `bar`, `lines` or `off` under the rules of the module docstring."""
    forced = os.environ.get("VMM_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"VMM_PROGRESS={forced!r}; valid choices: {', '.join(MODES)}")
        return forced
    if _in_kernel():
        return "widget" if _live_frontend() else "lines"
    stream = sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int | float = 0,
    disable: bool = False,
    leave: bool = True,
    unit_scale: bool = False,
    interval_s: float | None = None,
    **tqdm_options: Any,
):
    """A progress bar of the kind this process should show (see the module docstring).

    Args:
        iterable: wrapped and iterated over, as with tqdm; `total` defaults to its length.
        interval_s: seconds between two progress lines (default `VMM_PROGRESS_INTERVAL` or 15).
        tqdm_options: passed to tqdm (the widget and text bar only).
    """
    mode = "off" if disable else progress_mode()
    if mode in ("widget", "bar"):
        if mode == "widget":
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                    unit_scale=unit_scale, **tqdm_options)  # fmt: skip
    if interval_s is None:
        interval_s = float(os.environ.get("VMM_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    return LineProgress(
        iterable, total=total, desc=desc, unit=unit, initial=initial, interval_s=interval_s,
        unit_scale=unit_scale, enabled=mode == "lines",
    )  # fmt: skip


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _amount(n: float, scale: bool) -> str:
    if not scale:
        return f"{n:g}" if isinstance(n, float) else str(n)
    for prefix in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.3g}{prefix}"
        n /= 1000
    return f"{n:.3g}T"


class LineProgress:
    """tqdm's interface, printing one plain line at the first step, every `interval_s` and at the end."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, interval_s=15.0,
                 unit_scale=False, enabled=True, file: TextIO | None = None):  # fmt: skip
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = initial
        self.interval_s, self.unit_scale, self.enabled = interval_s, unit_scale, enabled
        self.postfix: dict[str, Any] = {}
        self._file = file
        self._start = self._last = time.monotonic()
        self._printed_at_n: float | None = None
        self.closed = False
        if initial and total:  # a resumed loop says where it starts before its first step
            self.write(
                f"{desc + ': ' if desc else ''}starting at {_amount(initial, unit_scale)}/{_amount(total, unit_scale)}"
            )

    @property
    def file(self) -> TextIO:
        return self._file or (sys.stdout if _in_kernel() else sys.stderr)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._printed_at_n is None or now - self._last >= self.interval_s:
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def write(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.file, flush=True)

    def line(self, now: float | None = None) -> str:
        """The progress line as it would print now."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        count = _amount(self.n, self.unit_scale)
        parts = [f"{self.desc}: {count}" if self.desc else count]
        if self.total:
            parts[0] += f"/{_amount(self.total, self.unit_scale)} ({100 * self.n / self.total:.0f}%)"
        if rate > 0:
            parts.append(f"{_amount(rate, True) if self.unit_scale else f'{rate:.3g}'} {self.unit}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        parts.append(f"{_clock(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        return " · ".join(parts)

    def _emit(self, now: float) -> None:
        self._last, self._printed_at_n = now, self.n
        self.write(self.line(now))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._printed_at_n != self.n or self._printed_at_n is None:
            self._emit(time.monotonic())


__all__ = ["LineProgress", "progress", "progress_mode"]

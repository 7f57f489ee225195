"""What `vmm run` prints as a pipeline runs: each step's start and end (status, duration, metrics) as
it happens, then one table of every step.

A step starts on a Dask worker, possibly on another machine: `announce_start` sends a Dask event
(topic `vmm-steps`) that the client prints through `StepConsole.on_event`; outside a worker it
does nothing. Ends are printed by the client as each step's result comes back.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

TOPIC = "vmm-steps"


def announce_start(name: str) -> None:
    """Tell the client that step `name` starts now (a no-op outside a Dask worker)."""
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, {"event": "start", "step": name, "time": time.time()})
    except Exception:  # not on a worker (run_step called directly), or no distributed
        pass


def _clock(t: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _duration(seconds: float) -> str:
    seconds = float(seconds or 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _metrics_text(metrics: dict[str, Any], limit: int = 3) -> str:
    shown = [
        (k, v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return ", ".join(f"{k} {v:.4g}" for k, v in shown[:limit])


class StepConsole:
    """Prints a line when a step starts (`on_event`) and when it ends (`finished`)."""

    def __init__(self, pipeline: str, total: int, file: TextIO | None = None, enabled: bool = True):
        self.pipeline, self.total, self.file, self.enabled = pipeline, total, file, enabled
        self.started: set[str] = set()
        self.done = 0

    def _print(self, text: str) -> None:
        if not self.enabled:
            return
        print(text, file=self.file or sys.stdout, flush=True)

    def begin(self, workers: int) -> None:
        self._print(f"[{_clock()}] pipeline {self.pipeline}: {self.total} steps on {workers} worker(s)")

    def note(self, text: str) -> None:
        self._print(f"    {text}")

    def on_event(self, event: tuple[float, dict]) -> None:
        _, msg = event
        if msg.get("event") == "start" and msg.get("step") not in self.started:
            self.started.add(msg["step"])
            self._print(f"[{_clock(msg.get('time'))}] start  {msg['step']}")

    def finished(self, result: dict) -> None:
        self.done += 1
        line = f"[{_clock()}] {result['status']:<7}{result['name']} ({self.done}/{self.total})"
        if result["status"] != "blocked":
            line += f" in {_duration(result.get('duration_s', 0.0))}"
        metrics = _metrics_text(result.get("metrics") or {})
        if metrics:
            line += f" · {metrics}"
        if result.get("error"):
            line += f"\n    {result['error']}"
        self._print(line)


def steps_table(results: list[dict]) -> str:
    """A plain-text table: step, status, duration, first metrics; one row per step."""
    rows = [("step", "status", "duration", "metrics")]
    rows += [
        (r["name"], r["status"], "" if r["status"] == "blocked" else _duration(r.get("duration_s", 0.0)),
         _metrics_text(r.get("metrics") or {}))
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths)), row[3]]).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  -------")
    total = sum(float(r.get("duration_s") or 0.0) for r in results)
    lines.append(f"{len(results)} steps, {_duration(total)} of step time")
    return "\n".join(lines)


__all__ = ["StepConsole", "announce_start", "steps_table"]

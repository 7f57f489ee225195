"""Worker processes that die with their parent.

A `ProcessPoolExecutor` worker whose parent is killed with SIGKILL is orphaned: it waits on its
task queue forever. `process_pool` arms each worker with Linux's parent-death signal
(`prctl(PR_SET_PDEATHSIG, SIGKILL)`) and, for platforms without it (or a parent that died before it
was armed), a watchdog thread that exits once the parent process id changes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 1.0  # how often the watchdog looks at the parent process id


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of `workers` processes that die with this process, even on `kill -9`."""
    return ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))


def die_with_parent(parent: int) -> None:
    """Make this process exit when process `parent` dies (a pool initializer; returns at once)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()

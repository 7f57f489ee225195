"""Where the on-disk frame caches (`vmmlib.io.cache.FrameCache`) of a data folder live."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir_for"]


def cache_dir_for(data_dir: str | os.PathLike) -> Path:
    """The folder holding a data folder's frame caches (one subfolder per split).

    `<data_dir>/.vmm_cache` when the data folder is writable; otherwise (read-only data on a shared
    mount, or a folder that does not exist), `~/.cache/vmmlib/<name>-<hash of the absolute path>`, so
    two such folders of the same name never share a cache.

    Args:
        data_dir: the data folder.

    Returns:
        The cache folder (not created here).
    """
    data_dir = Path(data_dir).resolve()
    if os.access(data_dir, os.W_OK):
        return data_dir / ".vmm_cache"
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "vmmlib" / f"{data_dir.name}-{digest}"

"""`.npz` archives read through `vmmlib.io.safe` (kept beside it: safe.py is at its size limit).

`load_npz` gives what `np.load(path)` would, with the zip checked by `safe.open_zip` (member count,
sizes, ratios) and every numeric array by `safe.load_npy` (header checked before any data); text
arrays (a note, a JSON string) are read too, pickles refused. Errors are `InputError`s naming the
file and the member.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np

from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, load_npy, open_zip

__all__ = ["load_npz"]


def _npy_kind(raw: bytes) -> str:
    """The dtype kind an npy header declares ("" when it is not a readable header)."""
    fmt = np.lib.format
    try:
        f = io.BytesIO(raw[:4096])
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        return read[version](f, max_header_size=10_000)[2].kind
    except (ValueError, EOFError, KeyError, SyntaxError, TypeError):
        return ""


def load_npz(
    path: str | os.PathLike, names: Iterable[str] | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file; `names` (without `.npy`): only these members are read."""
    wanted = None if names is None else set(names)
    out = {}
    with open_zip(path, limits=limits) as z:
        for member in z.names():
            name = member.removesuffix(".npy")
            if wanted is not None and name not in wanted:
                continue
            raw, where = z.read(member), f"member {member!r}"
            if _npy_kind(raw) in ("U", "S"):  # text: no pickle involved, size bounded by the member's
                try:
                    out[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
                except (ValueError, EOFError, OSError) as e:
                    raise InputError(path, f"not an npy text array ({e})", where) from None
            else:
                out[name] = load_npy(raw, path=path, where=where, limits=limits)
    return out

"""`.npz` archives, and npy arrays that may hold fixed-width text, read through `vmmlib.io.safe` (kept beside safe.py, which is at its size limit).

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

from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, load_npy, npy_header, open_zip

__all__ = ["load_npy_kinds", "load_npz"]


def _npy_kind(raw: bytes) -> str:
    """The dtype kind an npy header declares ("" when it is not a readable header)."""
    try:
        return npy_header(io.BytesIO(raw[:4096]), None)[2].kind
    except InputError:
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


def load_npy_kinds(
    source: bytes, kinds: str, *, path: str | os.PathLike | None = None, where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> np.ndarray:  # fmt: skip
    """`load_npy` of an npy held in bytes that also accepts fixed-width text ("U", "S" in `kinds`),
    such as ids stored as strings; objects, structured and void dtypes stay refused, same limits."""
    f = io.BytesIO(source)
    shape, fortran, dtype = npy_header(f, path, where)
    if dtype.kind not in kinds or dtype.hasobject or dtype.fields is not None:
        raise InputError(path, f"npy dtype {dtype} is not one of the kinds {kinds!r}", where)
    if dtype.kind not in "US":
        return load_npy(source, path=path, where=where, limits=limits)
    if fortran or dtype.itemsize == 0:
        raise InputError(path, f"npy text array {dtype} in Fortran order or of width 0", where)
    header = io.BytesIO()  # the same bytes as a (..., itemsize) uint8 array: load_npy checks it all
    np.lib.format.write_array_header_2_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (*shape, dtype.itemsize)}
    )
    raw = load_npy(header.getvalue() + source[f.tell() :], path=path, where=where, limits=limits)
    return raw.view(dtype).reshape(shape)

"""Cheap hostile files for the reader tests: images whose headers declare huge sizes, npy headers
declaring huge or non-numeric arrays, zips with high-ratio members. Nothing here is big on disk."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid 16×16 JPEG whose SOF header is patched to declare `width` × `height` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: marker, length(2), precision(1), height(2), width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A valid 16×16 PNG whose IHDR is patched to declare `width` × `height` (CRC recomputed)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def npy_header(shape: tuple, descr: str = "<f2") -> bytes:
    """An npy v1.0 header (no data) declaring `shape` of `descr`."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


BOMB_MEMBER = b"\0" * (2 << 20)  # 2 MiB of zeros: deflates ~1000:1, over the 100:1 ratio limit

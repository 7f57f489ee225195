"""Is this an image? Checks of raw image files and of their base64 text, from a full decode down to
the signature and end-of-image marker (`vmm prepare muge`'s `check`; see `check_image`)."""

from __future__ import annotations

import binascii

from vmmlib.io.lmdb_store import URLSAFE_TO_STANDARD, decode_base64
from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, open_image

CHECKS = ("decode", "fast", "header", "none")


def _has_end_marker(raw: bytes, image_format: str | None) -> bool:
    tail = raw[-64:].rstrip(b"\x00")  # some encoders pad after the end marker
    if image_format == "JPEG":
        return tail.endswith(b"\xff\xd9")
    if image_format == "PNG":
        return b"IEND" in raw[-12:]
    if image_format == "GIF":
        return tail.endswith(b"\x3b")
    return True


def check_image(raw: bytes, check: str = "decode", *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise if `raw` is not an image Pillow can read, or one whose header declares more than
    `limits.max_image_pixels` (a decompression bomb: `vmmlib.io.safe.open_image`).

    Args:
        check: "decode" (decode it; JPEG at 1/8 scale, which still reads every entropy-coded byte, so
            truncation anywhere is caught), "fast" (header, plus the end-of-image marker of JPEG, PNG
            and GIF: catches truncation, not corrupted data, at a few µs), "header" (format and size
            only) or "none".
    """
    if check == "none":
        return
    with open_image(raw, limits=limits) as image:  # the pixel limit, from the header, before any decode
        if check == "decode":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG only
            image.load()
        elif check == "fast" and not _has_end_marker(raw, image.format):
            raise ValueError(f"{image.format} data without its end-of-image marker: truncated")


_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
HEAD_CHARS = 1 << 13  # base64 characters decoded for a header check (6 KiB of image; longer: all of it)


SIGNATURE_CHARS = 16  # base64 characters decoded for the file signature (12 bytes)
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def _signature(head: bytes) -> str | None:
    """The format whose magic number `head` starts with (JPEG, PNG, GIF), else None."""
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _decode_checked(piece: bytes) -> bytes:
    """Decode a 4-aligned piece of base64 text whose characters are already validated."""
    piece = piece.rstrip(b"=").translate(URLSAFE_TO_STANDARD)
    return binascii.a2b_base64(piece + b"=" * (-len(piece) % 4))


def check_encoded(b64: bytes, check: str = "decode") -> None:
    """Raise if base64 text (either alphabet) is not an image (`check` as in `check_image`).

    "fast" and "header" validate every character but decode only the head (and, for "fast", the
    tail) of the text, so their cost barely grows with the image; a header longer than the head
    falls back to decoding the whole. "fast" reads the file signature itself for JPEG, PNG and GIF
    (magic number, then the end-of-image marker: no header parse) and asks Pillow for the rest.
    """
    if check == "none":
        return
    if check == "decode":
        return check_image(decode_base64(b64), check)
    pad = len(b64) - len(b64.rstrip(b"=")) if b64[-1:] == b"=" else 0
    # what is left after deleting the alphabets must be the trailing padding alone (no copy of the text)
    if b64.translate(None, _B64_CHARS) != b"=" * pad or pad > 2 or (len(b64) - pad) % 4 == 1:
        raise ValueError("invalid base64: a character outside both alphabets, or a bad length")
    if check == "fast":
        image_format = _signature(_decode_checked(b64[:SIGNATURE_CHARS]))
        n = len(b64) - pad
        if image_format is not None:  # a known signature: no header parse, the end marker decides
            tail = _decode_checked(b64[(n - 128) // 4 * 4 : n] if n > 128 else b64[:n])
            if not _has_end_marker(tail, image_format):
                raise ValueError(f"{image_format} data without its end-of-image marker: truncated")
            return
    body = b64[: len(b64) - pad]
    head = decode_base64(body[:HEAD_CHARS])
    try:
        with open_image(head) as image:
            image_format = image.format
    except InputError as err:  # the head ended inside the header: decode it all
        if "pixels" in err.reason:
            raise
        if len(body) <= HEAD_CHARS:
            raise
        return check_image(decode_base64(body), "fast" if check == "fast" else "header")
    if check == "fast":
        tail = head if len(body) <= HEAD_CHARS else decode_base64(body[(len(body) - 128) // 4 * 4 :])
        if not _has_end_marker(tail, image_format):
            raise ValueError(f"{image_format} data without its end-of-image marker: truncated")

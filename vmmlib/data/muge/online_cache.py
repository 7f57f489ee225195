"""The online-learning image cache of Online-CNCLIP (seed 002; SPEC §1.3, §3.9): its layout and its reader.

Online-CNCLIP searches a shopping site for each query text and caches the first result as
`<cache>/<q>/1.jpg` (`<q>` = the query without white space and Chinese punctuation). Nothing here
reaches the network: only the cache folder is read. The sample writer (`vmmlib.data.muge.sample`)
writes this layout and `vmmlib.predict.online.online_adapt` learns from it.

- `cache_key` / `cache_path`: where a query's image lives in that layout.
- `load_cache`: the cached images of some queries; a missing file, one under 500 bytes (the seed's
  failed-download rule), one Pillow cannot decode, one whose header declares too many pixels and an
  entry outside the cache (`../x`, an absolute path, a link out) are reported and skipped
  (`CacheReport`); JPEGs decode in draft mode, so memory stays bounded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, decode_image, inside

if TYPE_CHECKING:
    import torch

MIN_BYTES = 500  # the seed counts a smaller file as a failed download
# Chinese punctuation (zhon.hanzi.punctuation: fullwidth ASCII-like marks, CJK marks, quotes, dashes).
CJK_PUNCTUATION = (
    "＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､\u3000、〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛"
    "〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏﹑﹔·！？｡。"
)
_STRIP = re.compile(f"[\\s{re.escape(CJK_PUNCTUATION)}]+")


def cache_key(text: str) -> str:
    """The cache folder name of a query: the text without white space and Chinese punctuation."""
    return _STRIP.sub("", text)


def cache_path(cache_dir: str | Path, text: str) -> Path:
    """`cache_dir/<cache_key(text)>/1.jpg`, the seed's layout."""
    return Path(cache_dir) / cache_key(text) / "1.jpg"


@dataclass
class CacheReport:
    """What `load_cache` found: usable entries and, by query text, the missing and broken ones."""

    used: int = 0
    missing: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "online_used": self.used,
            "online_missing": len(self.missing),
            "online_broken": len(self.broken),
        }


def load_cache(
    cache_dir: str | Path,
    texts: Sequence[str],
    transform: Callable,
    *,
    warn: bool = True,
    max_side: int = 1024,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[list[torch.Tensor | None], CacheReport]:
    """Each query's cached image as a (3, H, W) tensor (None where missing, broken or refused).

    Every image goes through `vmmlib.io.safe`: a query whose entry would lie outside `cache_dir`
    (a text like `../x` or `/abs`, or a link out of the cache) is refused unread, an image whose
    header declares more than `limits.max_image_pixels` is refused undecoded, and a JPEG is decoded
    in draft mode at the smallest scale whose sides still cover `max_side` (bounded memory). Refused
    entries are reported with the broken ones.

    Args:
        cache_dir: the cache folder (`<q>/1.jpg` per query).
        texts: the query texts.
        transform: PIL image → (3, H, W) tensor (the evaluation transform).
        warn: issue one warning listing the missing and broken entries.
        max_side: JPEG draft target (pixels per side) before `transform`.
    """
    if not Path(cache_dir).is_dir():
        raise InputError(cache_dir, "online cache is not a folder (expected <query>/1.jpg entries)")
    report, images, decoded = CacheReport(), [], {}
    for text in texts:
        key = cache_key(text)
        if key in decoded:
            images.append(decoded[key])
            report.used += decoded[key] is not None
            continue
        image = _cached_image(cache_dir, text, transform, report, max_side, limits)
        decoded[key] = image
        images.append(image)
        report.used += image is not None
    if warn and (report.missing or report.broken):
        warnings.warn(
            f"online cache {cache_dir}: {len(report.missing)} quer(ies) missing"
            f"{' (e.g. ' + repr(report.missing[0]) + ')' if report.missing else ''}, {len(report.broken)} broken"
            f"{' (e.g. ' + report.broken[0] + ')' if report.broken else ''}; skipped",
            RuntimeWarning,
            stacklevel=2,
        )
    return images, report


def _cached_image(
    cache_dir, text: str, transform: Callable, report: CacheReport, max_side: int, limits: Limits
):
    """One query's transformed image, or None with the reason added to `report`."""
    key = cache_key(text)
    try:
        if not key or "\x00" in key:
            raise InputError(cache_dir, f"query {text!r} has no usable cache key")
        path = inside(cache_dir, f"{key}/1.jpg", what="cache entry")
    except InputError as err:
        report.broken.append(f"{text} (refused: {err.reason})")
        return None
    if not path.is_file():
        report.missing.append(text)
        return None
    if path.stat().st_size < MIN_BYTES:
        report.broken.append(f"{text} ({path}: {path.stat().st_size} bytes, under {MIN_BYTES})")
        return None
    try:
        image = decode_image(path, mode="RGB", limits=limits, draft=(max_side, max_side))
        return transform(image)
    except InputError as err:
        report.broken.append(f"{text} ({err})")
    except Exception as err:  # noqa: BLE001 — any file the transform cannot take is reported and skipped
        report.broken.append(f"{text} ({path}: {type(err).__name__}: {err})")
    return None

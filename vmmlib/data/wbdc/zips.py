"""Lazy zip readers of the WBDC 2022 layout and the raw-frame decoding (SPEC §1.2).

- `FeatureZip`: `zip_feats/{split}.zip`, member `{id}.npy` float16 [num_frames, 768].
- `RawFrameZips`: the semi-final `zip_frames/{split}/{id[-3:]}/{id}.zip`, JPEG members whose name order
  is the time order.
- `decode_jpeg` (Pillow, with JPEG draft decoding) and `FrameTransform` (torch: resize the short side,
  centre crop, CLIP or ImageNet normalisation; no torchvision).

Zips are never extracted. Each process opens its own handle on first use; a handle inherited
through fork is reopened (checked by pid) and pickling drops it, so DataLoader workers each read
with their own. Every zip, member, npy header and JPEG header goes through `vmmlib.io.safe` (size,
ratio, shape and pixel limits); a member that is missing or cannot be read raises `FrameReadError`
(an `InputError`) naming the video, the zip file and the member.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vmmlib.io.safe import (
    DEFAULT_LIMITS,
    InputError,
    Limits,
    SafeZip,
    check_name,
    decode_image,
    image_size,
    inside,
    load_npy,
)

FEATURE_DIM = 768

# Image normalisation presets: (mean, std) of CLIP ViT (rank 8) and ImageNet (semi-final baseline)
IMAGE_STATS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class FrameReadError(InputError):
    """A video's frames could not be read: names the video, the zip file and the member."""

    def __init__(
        self, video_id: str, reason: str, path: str | os.PathLike | None = None, where: str | None = None
    ):
        super().__init__(path, f"video {video_id}: {reason}", where)
        self.video_id, self.reason = video_id, reason

    def __reduce__(self):  # keep the fields when pickled across DataLoader worker processes
        return (type(self), (self.video_id, self.reason, self.path, self.where))


class _LazyZip:
    """A zip file checked when made (`safe.SafeZip`: directory, member sizes and ratios) and reopened
    on first use in each process; never pickled with an open handle."""

    def __init__(self, path: str | Path, limits: Limits = DEFAULT_LIMITS):
        self.path, self.limits = Path(path), limits
        self._zip: SafeZip | None = None
        self._pid: int | None = None
        self.handle()  # a missing, broken or bomb-carrying zip is refused now, naming the file

    def handle(self) -> SafeZip:
        if self._zip is None or self._pid != os.getpid():  # a handle inherited through fork is not shared
            self._zip = SafeZip(self.path, limits=self.limits)
            self._pid = os.getpid()
        return self._zip

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": None}


class FeatureZip(_LazyZip):
    """`zip_feats/{split}.zip`: member `{id}.npy` holds float16 (num_frames, 768). Read lazily."""

    def __init__(self, path: str | Path, feature_dim: int = FEATURE_DIM, *, limits: Limits = DEFAULT_LIMITS):
        super().__init__(path, limits)
        self.feature_dim = feature_dim
        self._names: frozenset[str] | None = None

    def ids(self) -> frozenset[str]:
        """Video ids with a member in the zip (read from the central directory once per process)."""
        if self._names is None:
            self._names = frozenset(n[:-4] for n in self.handle().names() if n.endswith(".npy"))
        return self._names

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.ids()

    def read(self, video_id: str) -> np.ndarray:
        """(num_frames, feature_dim) float16 (as stored). Raises FrameReadError naming the id, the zip
        and the member: missing, corrupt, not a numeric npy, or declaring more than `limits` allow."""
        name = f"{video_id}.npy"
        where = f"member {name!r}"
        zf = self.handle()
        if name not in zf.members:
            raise FrameReadError(video_id, f"no member {name}", self.path, where)
        try:
            feats = load_npy(zf.read(name), path=self.path, where=where, limits=self.limits)
        except InputError as e:
            raise FrameReadError(video_id, e.reason, self.path, where) from None
        if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
            raise FrameReadError(
                video_id,
                f"features of shape {feats.shape}, expected (n, {self.feature_dim})",
                self.path,
                where,
            )
        return feats


class RawFrameZips:
    """Semi-final raw frames: `zip_frames/{split}/{id[-3:]}/{id}.zip`, JPEG members in name order.

    Only one frame zip is open at a time per process (the last one read), so memory stays flat. A
    video's zip must lie inside `root` (a link out of it is refused), and each JPEG's size is checked
    from its header before it is decoded (draft mode: at most what the transform needs).
    """

    def __init__(self, root: str | Path, *, limits: Limits = DEFAULT_LIMITS):
        self.root, self.limits = Path(root), limits
        if not self.root.is_dir():
            raise InputError(self.root, "not found (expected zip_frames/{split}/)")
        self._last: tuple[str, int, SafeZip, list[str]] | None = None

    def path(self, video_id: str) -> Path:
        return self.root / video_id[-3:] / f"{video_id}.zip"

    def __contains__(self, video_id: str) -> bool:
        return self.path(video_id).is_file()

    def _open(self, video_id: str) -> tuple[SafeZip, list[str]]:
        if self._last and self._last[0] == video_id and self._last[1] == os.getpid():
            return self._last[2], self._last[3]
        path = self.path(video_id)
        try:
            check_name(video_id, "video id")
            zf = SafeZip(inside(self.root, path.relative_to(self.root), what="frame zip"), limits=self.limits)
        except InputError as e:
            raise FrameReadError(video_id, e.reason, e.path, e.where) from None
        names = sorted(n for n in zf.names() if not n.endswith("/"))
        if self._last and self._last[1] == os.getpid():
            self._last[2].close()
        self._last = (video_id, os.getpid(), zf, names)
        return zf, names

    def num_frames(self, video_id: str) -> int:
        return len(self._open(video_id)[1])

    def read(self, video_id: str, indices: Sequence[int], transform: FrameTransform) -> torch.Tensor:
        """Decode the frames at `indices` → float (k, 3, S, S) via `transform`.

        A member that is not a decodable image, or whose header declares more pixels than `limits`
        allow, raises FrameReadError naming the id, the zip and the member.
        """
        zf, names = self._open(video_id)
        out = []
        for i in indices:
            where = f"member {names[i]!r}"
            try:
                out.append(
                    transform(decode_jpeg(zf.read(names[i]), transform.resize, path=zf.path, where=where))
                )
            except InputError as e:
                raise FrameReadError(video_id, f"frame {names[i]}: {e.reason}", zf.path, where) from None
        return torch.stack(out) if out else torch.zeros(0, 3, transform.crop, transform.crop)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_last": None}


def decode_jpeg(
    data: bytes,
    min_side: int | None = None,
    *,
    path: str | os.PathLike | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> np.ndarray:
    """JPEG (or any Pillow image) bytes → uint8 (H, W, 3) RGB; InputError (naming `path` and `where`)
    for an undecodable image or one whose header declares more than `limits.max_image_pixels`.

    With `min_side`, Pillow's JPEG draft mode decodes at the smallest 1/2, 1/4 or 1/8 scale whose
    shorter side still covers `min_side` (much faster for large frames).
    """
    w, h = image_size(data, path=path, where=where, limits=limits)
    draft = None
    if min_side:
        scale = max(min_side / min(w, h), 1e-6)
        draft = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
    image = decode_image(data, mode="RGB", path=path, where=where, limits=limits, draft=draft)
    return np.array(image)  # writable: torch.from_numpy needs it


class FrameTransform:
    """uint8 (H, W, 3) → float (3, crop, crop): resize the shorter side to `resize` (bilinear with
    antialiasing), centre crop, scale to [0, 1], normalise. Torch ops only (no torchvision).

    Args:
        resize: shorter side after resizing (224 for CLIP ViT; the semi-final baseline used 256).
        crop: output side (224).
        stats: "clip" or "imagenet" mean/std (IMAGE_STATS).
    """

    def __init__(self, resize: int = 224, crop: int = 224, stats: str = "clip"):
        if stats not in IMAGE_STATS:
            raise ValueError(f"unknown image stats {stats!r}; valid choices: {', '.join(IMAGE_STATS)}")
        if crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        self.resize, self.crop = resize, crop
        mean, std = IMAGE_STATS[stats]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = (
            torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(255.0)
        )  # (3, H, W)
        h, w = x.shape[1:]
        scale = self.resize / min(h, w)
        size = (max(self.resize, round(h * scale)), max(self.resize, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[:, top : top + self.crop, left : left + self.crop]
        return (x - self.mean) / self.std

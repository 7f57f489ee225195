"""Lazy zip readers of the WBDC 2022 layout and the raw-frame decoding (SPEC §1.2).

- `FeatureZip`: `zip_feats/{split}.zip`, member `{id}.npy` float16 [num_frames, 768].
- `RawFrameZips`: the semi-final `zip_frames/{split}/{id[-3:]}/{id}.zip`, JPEG members whose name order
  is the time order.
- `decode_jpeg` (Pillow, with JPEG draft decoding) and `FrameTransform` (torch: resize the short side,
  centre crop, CLIP or ImageNet normalisation; no torchvision).

Zips are never extracted. Each process opens its own handle on first use; a handle inherited
through fork is reopened (checked by pid) and pickling drops it, so DataLoader workers each read
with their own. A member that is missing or cannot be read raises `FrameReadError` naming the video.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vmmlib.io.safe import InputError

FEATURE_DIM = 768

# Image normalisation presets: (mean, std) of CLIP ViT (rank 8) and ImageNet (semi-final baseline)
IMAGE_STATS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class FrameReadError(InputError):
    """A video's frames could not be read; `video_id` names it (the reason names the zip).

    An `InputError` whose `where` is the video; `path` is the zip when the caller gives it."""

    def __init__(self, video_id: str, reason: str, path: str | os.PathLike | None = None):
        super().__init__(path, reason, f"video {video_id}")
        self.video_id = video_id

    def __reduce__(self):
        return (type(self), (self.video_id, self.reason, self.path))


class _LazyZip:
    """A zip file opened on first use in each process; never pickled with an open handle."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found")
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def handle(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():  # a handle inherited through fork is not shared
            self._zip = zipfile.ZipFile(self.path, "r")
            self._pid = os.getpid()
        return self._zip

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": None}


class FeatureZip(_LazyZip):
    """`zip_feats/{split}.zip`: member `{id}.npy` holds float16 (num_frames, 768). Read lazily."""

    def __init__(self, path: str | Path, feature_dim: int = FEATURE_DIM):
        super().__init__(path)
        self.feature_dim = feature_dim
        self._names: frozenset[str] | None = None

    def ids(self) -> frozenset[str]:
        """Video ids with a member in the zip (read from the central directory once per process)."""
        if self._names is None:
            self._names = frozenset(n[:-4] for n in self.handle().namelist() if n.endswith(".npy"))
        return self._names

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.ids()

    def read(self, video_id: str) -> np.ndarray:
        """(num_frames, feature_dim) float16 (as stored). Raises FrameReadError naming the id."""
        try:
            raw = self.handle().read(f"{video_id}.npy")
        except KeyError:
            raise FrameReadError(video_id, f"no member {video_id}.npy in {self.path}") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise FrameReadError(video_id, f"corrupt member {video_id}.npy in {self.path} ({e})") from None
        try:
            feats = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise FrameReadError(
                video_id, f"{video_id}.npy in {self.path} is not a .npy array ({e})"
            ) from None
        if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
            raise FrameReadError(
                video_id, f"features of shape {feats.shape}, expected (n, {self.feature_dim})"
            )
        return feats


class RawFrameZips:
    """Semi-final raw frames: `zip_frames/{split}/{id[-3:]}/{id}.zip`, JPEG members in name order.

    Only one frame zip is open at a time per process (the last one read), so memory stays flat.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} not found (expected zip_frames/{{split}}/)")
        self._last: tuple[str, int, zipfile.ZipFile, list[str]] | None = None

    def path(self, video_id: str) -> Path:
        return self.root / video_id[-3:] / f"{video_id}.zip"

    def __contains__(self, video_id: str) -> bool:
        return self.path(video_id).is_file()

    def _open(self, video_id: str) -> tuple[zipfile.ZipFile, list[str]]:
        if self._last and self._last[0] == video_id and self._last[1] == os.getpid():
            return self._last[2], self._last[3]
        path = self.path(video_id)
        if not path.is_file():
            raise FrameReadError(video_id, f"no frame zip {path}")
        try:
            zf = zipfile.ZipFile(path, "r")
        except (zipfile.BadZipFile, OSError) as e:
            raise FrameReadError(video_id, f"unreadable frame zip {path} ({e})") from None
        names = sorted(n for n in zf.namelist() if not n.endswith("/"))
        if self._last and self._last[1] == os.getpid():
            self._last[2].close()
        self._last = (video_id, os.getpid(), zf, names)
        return zf, names

    def num_frames(self, video_id: str) -> int:
        return len(self._open(video_id)[1])

    def read(self, video_id: str, indices: Sequence[int], transform: FrameTransform) -> torch.Tensor:
        """Decode the frames at `indices` → float (k, 3, S, S) via `transform`.

        A member that is not a decodable image raises FrameReadError naming the id and member.
        """
        zf, names = self._open(video_id)
        out = []
        for i in indices:
            try:
                out.append(transform(decode_jpeg(zf.read(names[i]), transform.resize)))
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
                raise FrameReadError(video_id, f"frame {names[i]} of {self.path(video_id)}: {e}") from None
        return torch.stack(out) if out else torch.zeros(0, 3, transform.crop, transform.crop)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_last": None}


def decode_jpeg(data: bytes, min_side: int | None = None) -> np.ndarray:
    """JPEG (or any Pillow image) bytes → uint8 (H, W, 3) RGB.

    With `min_side`, Pillow's JPEG draft mode decodes at the smallest 1/2, 1/4 or 1/8 scale whose
    shorter side still covers `min_side` (much faster for large frames).
    """
    with Image.open(io.BytesIO(data)) as img:
        if min_side and img.format == "JPEG":
            w, h = img.size
            scale = max(min_side / min(w, h), 1e-6)
            img.draft("RGB", (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
        return np.array(img.convert("RGB"))  # writable: torch.from_numpy needs it


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

"""Deterministic sample data for WBDC 2022 short-video classification, in its exact layout.

The layout is the real one (SPEC §1.2): `annotations/{labeled,unlabeled,test_a}.json` (JSON arrays
of id, category_id 'LLSS' for labelled videos only, title, asr, ocr [{time, text}]),
`zip_feats/{split}.zip` with one `{id}.npy` float16 [num_frames, 768] member per video, and for a
few videos per split the semi-final raw frames `zip_frames/{split}/{id[-3:]}/{id}.zip` (real JPEG
bytes, member name order = time order). A BERT vocabulary is written to `vocab.txt` (one token per
CJK character), since the real data ships none.

Planted structure: the 23 level-1 classes are the latent topics, each of the 200 level-2 classes a
sub-topic. Classes are drawn with the real labelled class frequencies (`LABELED_COUNTS`: 13 classes
hold half the videos, the largest 10.7 %), so the sample is as skewed as the competition. A video's
class drives its frame features (topic centroid + sub-topic offset + a nuisance "style" component
that says nothing about the class + per-frame noise), the Chinese characters of its title, OCR and
ASR (topic and sub-topic character pools mixed with common characters; ASR is the noisiest), and
the colours and shapes of its raw frames. Unlabeled videos follow the same process (for
pretraining). Same arguments → byte-identical files.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vmmlib.data._atomic import write_dataset_dir
from vmmlib.data.qqbrowser.sample import write_vocab
from vmmlib.io.wbdc_categories import CATEGORY_IDS, LABELED_COUNTS, LV2_TO_LV1, NUM_LV1, NUM_LV2

FEATURE_DIM = 768
_CJK_START = 0x4E00  # the vocabulary's character block (write_vocab: 1,200 characters from here)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: byte-identical zips
STYLE_DIMS = 16
FRAME_SIZE = (128, 96)  # raw JPEG frames, width × height


def _zip_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class _World:
    """Topics (lv1), sub-topics (lv2) and what they drive."""

    def __init__(self, rng: np.random.Generator, signal: float = 1.0):
        self.signal = signal
        self.lv1_centroids = rng.normal(0.0, 1.0, (NUM_LV1, FEATURE_DIM)).astype(np.float32)
        self.lv2_offsets = rng.normal(0.0, 0.9, (NUM_LV2, FEATURE_DIM)).astype(np.float32)
        self.style = rng.normal(0.0, 1.0, (STYLE_DIMS, FEATURE_DIM)).astype(np.float32)
        self.class_prob = LABELED_COUNTS / LABELED_COUNTS.sum()
        chars = [chr(_CJK_START + i) for i in rng.permutation(1200)]
        self.common = chars[:80]
        self.lv1_chars = [chars[80 + 18 * t : 80 + 18 * (t + 1)] for t in range(NUM_LV1)]
        start = 80 + 18 * NUM_LV1
        self.lv2_chars = [chars[start + 3 * c : start + 3 * (c + 1)] for c in range(NUM_LV2)]
        self.lv1_colours = rng.integers(30, 226, (NUM_LV1, 3))
        self.lv2_shapes = rng.integers(0, 3, NUM_LV2)  # 0 ellipse, 1 rectangle, 2 stripes

    def text(self, rng: np.random.Generator, lv2: int, length: int, signal: float) -> str:
        """`length` characters; each is topical with probability `signal` (half lv1, half lv2 pool)."""
        out, signal = [], min(1.0, signal * self.signal)
        for _ in range(length):
            u = rng.random()
            pool = (
                self.lv2_chars[lv2]
                if u < signal / 2
                else self.lv1_chars[LV2_TO_LV1[lv2]]
                if u < signal
                else self.common
            )
            out.append(pool[rng.integers(len(pool))])
        return "".join(out)

    def features(self, rng: np.random.Generator, lv2: int) -> np.ndarray:
        u = rng.random()
        n = (
            int(rng.integers(1, 4))
            if u < 0.05
            else int(rng.integers(33, 48))
            if u < 0.3
            else int(rng.integers(4, 33))
        )
        style = rng.normal(0.0, 0.25, STYLE_DIMS).astype(np.float32) @ self.style
        base = 0.6 * self.signal * (self.lv1_centroids[LV2_TO_LV1[lv2]] + self.lv2_offsets[lv2]) + style
        base += rng.normal(0.0, 0.5, FEATURE_DIM).astype(np.float32)
        frames = base + rng.normal(0.0, 1.0, (n, FEATURE_DIM)).astype(np.float32)
        return frames.astype(np.float16)

    def annotation(self, rng: np.random.Generator, vid: str, lv2: int, labelled: bool) -> dict:
        # a tenth of the videos carry another class's words: text alone cannot be perfect
        text_class = int(rng.choice(NUM_LV2, p=self.class_prob)) if rng.random() < 0.1 else lv2
        title = self.text(rng, text_class, int(rng.integers(0, 26)) if rng.random() > 0.03 else 0, 0.6)
        ocr = [
            {"time": int(t), "text": self.text(rng, text_class, int(rng.integers(2, 16)), 0.4)}
            for t in sorted(rng.choice(60, size=int(rng.integers(0, 5)), replace=False))
        ]
        asr = self.text(rng, text_class, int(rng.integers(0, 200)) if rng.random() > 0.3 else 0, 0.25)
        entry = {"id": vid}
        if labelled:
            entry["category_id"] = CATEGORY_IDS[lv2]
        entry.update(title=title, asr=asr, ocr=ocr)
        return entry

    def jpeg_frames(self, rng: np.random.Generator, lv2: int) -> list[bytes]:
        """4–10 JPEG frames: lv1 sets the colour, lv2 the shape, the video a drifting position."""
        colour = self.lv1_colours[LV2_TO_LV1[lv2]]
        background = tuple(int(c) for c in 255 - colour // 2)
        x, y = rng.uniform(10, 60), rng.uniform(10, 40)
        out = []
        for _ in range(int(rng.integers(4, 11))):
            img = Image.new("RGB", FRAME_SIZE, background)
            draw = ImageDraw.Draw(img)
            fill = tuple(int(c) for c in np.clip(colour + rng.normal(0, 12, 3), 0, 255))
            box = (x, y, x + 50, y + 40)
            shape = self.lv2_shapes[lv2]
            if shape == 0:
                draw.ellipse(box, fill=fill)
            elif shape == 1:
                draw.rectangle(box, fill=fill)
            else:
                for k in range(0, FRAME_SIZE[0], 16):
                    draw.rectangle((k, 0, k + 7, FRAME_SIZE[1]), fill=fill)
            noise = rng.normal(0, 8, (FRAME_SIZE[1], FRAME_SIZE[0], 3))
            pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
            out.append(buf.getvalue())
            x, y = x + rng.uniform(-4, 4), y + rng.uniform(-3, 3)
        return out


def write_wbdc_sample(
    out_dir: str | Path,
    *,
    labeled: int = 800,
    unlabeled: int = 800,
    test: int = 200,
    raw_frame_videos: int = 6,
    signal: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a WBDC sample dataset in the exact on-disk layout of the real one.

    Args:
        out_dir: target folder; written atomically (a temporary sibling, then renamed).
        labeled: videos in annotations/labeled.json (classes drawn with the real frequencies).
        unlabeled: videos in annotations/unlabeled.json (no category_id; for pretraining).
        test: videos in annotations/test_a.json (no category_id).
        raw_frame_videos: per split, how many videos also get a raw-frame JPEG zip.
        signal: strength of the class in the features and texts (1: a tiny model fine-tuned for a
            hundred steps on 800 videos reaches F1-mean ≈ 0.7–0.8; lower it, or label fewer videos, to
            leave more for pretraining on the unlabeled ones to add).
        seed: same seed and sizes → byte-identical files.

    Returns:
        The dataset folder.
    """
    sizes = {"labeled": labeled, "unlabeled": unlabeled, "test_a": test}
    return write_dataset_dir(
        out_dir, lambda tmp: _write(tmp, sizes, raw_frame_videos, signal, seed), overwrite=overwrite
    )


def _write(root: Path, sizes: dict[str, int], raw_frame_videos: int, signal: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    world = _World(rng, signal)
    total = sum(sizes.values())
    ids = iter(str(v) for v in 10**18 + rng.choice(9 * 10**18, size=total, replace=False))
    for sub in ("annotations", "zip_feats"):
        (root / sub).mkdir()
    write_vocab(root / "vocab.txt")
    for split, n in sizes.items():
        entries = []
        with zipfile.ZipFile(root / "zip_feats" / f"{split}.zip", "w") as zf:
            for k in range(n):
                vid, lv2 = next(ids), int(rng.choice(NUM_LV2, p=world.class_prob))
                entries.append(world.annotation(rng, vid, lv2, labelled=split == "labeled"))
                _zip_member(zf, f"{vid}.npy", _npy_bytes(world.features(rng, lv2)))
                if k < raw_frame_videos:
                    folder = root / "zip_frames" / split / vid[-3:]
                    folder.mkdir(parents=True, exist_ok=True)
                    with zipfile.ZipFile(folder / f"{vid}.zip", "w") as frames_zip:
                        for i, jpeg in enumerate(world.jpeg_frames(rng, lv2)):
                            _zip_member(frames_zip, f"{i:03d}.jpg", jpeg)
        text = json.dumps(entries, ensure_ascii=False, indent=None)
        (root / "annotations" / f"{split}.json").write_text(text, encoding="utf-8")

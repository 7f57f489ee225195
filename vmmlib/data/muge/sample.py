"""Deterministic MUGE sample data in the real raw layout (SPEC §1.3): TSV of base64 JPEGs + JSONL queries.

    out_dir/{train,valid,test}_imgs.tsv      image_id \\t base64(JPEG bytes), standard alphabet
    out_dir/{train,valid,test}_texts.jsonl   {"text_id": int, "text": str, "image_ids": [int, ...]}
    out_dir/online_cache/{valid,test}/<query>/1.jpg   one cached "web" image per query (online learning)
    out_dir/vocab.txt                        a BERT WordPiece vocabulary covering the sample's text
                                             (an extra: the real release ships none; pass the model's)

Planted structure: a topic is a (colour, pattern) pair. A query names its topic's colour and
pattern in Chinese plus a product word and sometimes a modifier (e.g. "红色条纹连衣裙"); each of its
images is a real JPEG whose background has the topic's colour and whose foreground carries the
topic's pattern (dots, stripes, checks, triangles, crosses, squares) at a random scale, phase and
shade, under pixel noise. Products and modifiers are not drawn, so queries of one topic match each
other's images equally: recall is learnable and bounded. Valid/test queries also draw `novel_topics`
topics of colours no training query names (the online cache shows them). Valid/test galleries
add distractor images of every topic; test queries have `image_ids: []`, as in the real test split.
Same arguments → byte-identical files (for one Pillow/libjpeg build).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vmmlib.data._atomic import write_dataset_dir

COLOURS = {  # word → RGB
    "红色": (200, 30, 40),
    "蓝色": (30, 60, 200),
    "绿色": (40, 160, 60),
    "黄色": (230, 200, 40),
    "紫色": (130, 50, 170),
    "黑色": (25, 25, 25),
    "白色": (235, 235, 235),
    "橙色": (240, 130, 30),
}
NOVEL_COLOURS = {  # colours of the topics only valid/test queries name: training never shows them
    "粉色": (240, 140, 190),
    "棕色": (120, 70, 30),
    "青色": (40, 180, 190),
}
PATTERNS = ("圆点", "条纹", "格子", "三角", "十字", "方块")
PRODUCTS = (
    "连衣裙",
    "衬衫",
    "抱枕",
    "杯子",
    "背包",
    "雨伞",
    "帽子",
    "袜子",
    "围巾",
    "毛衣",
    "手机壳",
    "地毯",
)
MODIFIERS = ("新款", "夏季", "韩版", "简约", "宽松", "可爱", "复古", "大号", "女士", "男士")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: str | Path) -> list[str]:
    """A WordPiece vocab: the BERT specials, ASCII, punctuation, then every CJK character of the word lists."""
    chars = sorted(
        {c for words in (COLOURS, NOVEL_COLOURS, PATTERNS, PRODUCTS, MODIFIERS) for w in words for c in w}
    )
    ascii_chars = list("0123456789abcdefghijklmnopqrstuvwxyz")
    tokens = SPECIAL_TOKENS + ascii_chars + ["##" + c for c in ascii_chars] + list("\"'!,.?，。！？") + chars
    Path(path).write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def _topics(n_topics: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    combos = [(c, p) for c in COLOURS for p in PATTERNS]
    if not 1 <= n_topics <= len(combos):
        raise ValueError(f"n_topics must be in 1..{len(combos)}, got {n_topics}")
    return [combos[i] for i in rng.choice(len(combos), size=n_topics, replace=False)]


def _novel_topics(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    combos = [(c, p) for c in NOVEL_COLOURS for p in PATTERNS]
    if not 0 <= n <= len(combos):
        raise ValueError(f"novel_topics must be in 0..{len(combos)}, got {n}")
    return [combos[i] for i in rng.choice(len(combos), size=n, replace=False)]


def _query(topic: tuple[str, str], rng: np.random.Generator) -> str:
    colour, pattern = topic
    product = PRODUCTS[rng.integers(len(PRODUCTS))]
    text = f"{colour}{pattern}{product}"
    if rng.random() < 0.5:
        text = MODIFIERS[rng.integers(len(MODIFIERS))] + text
    return text


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, size: int, rng: np.random.Generator, ink) -> None:
    step = int(rng.integers(size // 8, size // 4))
    off = int(rng.integers(0, step))
    r = max(2, step // 4)
    cells = [
        (x, y) for x in range(off - step, size + step, step) for y in range(off - step, size + step, step)
    ]
    if pattern == "条纹":  # diagonal stripes
        for k in range(-size, 2 * size, step):
            draw.line([(k, 0), (k + size, size)], fill=ink, width=max(2, step // 3))
    elif pattern == "格子":  # checks
        for x, y in cells:
            if ((x - off) // step + (y - off) // step) % 2 == 0:
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=ink)
    else:
        for x, y in cells:
            cx, cy = x + step // 2, y + step // 2
            if pattern == "圆点":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
            elif pattern == "三角":
                draw.polygon([(cx, cy - r - 1), (cx - r - 1, cy + r), (cx + r + 1, cy + r)], fill=ink)
            elif pattern == "十字":
                draw.line([(cx - r, cy), (cx + r, cy)], fill=ink, width=2)
                draw.line([(cx, cy - r), (cx, cy + r)], fill=ink, width=2)
            else:  # 方块: small squares
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=ink)


def topic_image(topic: tuple[str, str], rng: np.random.Generator, size: int = 96, quality: int = 85) -> bytes:
    """JPEG bytes of one image of `topic`: coloured background, the pattern in a contrasting shade, noise."""
    colour, pattern = topic
    base = np.array({**COLOURS, **NOVEL_COLOURS}[colour], np.float32) + rng.normal(0, 12, 3)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in np.clip(base, 0, 255)))
    light = base.mean() < 128
    shade = rng.uniform(0.55, 0.9)
    ink = tuple(int(v) for v in np.clip(base + (255 - base) * shade if light else base * (1 - shade), 0, 255))
    _draw_pattern(ImageDraw.Draw(image), pattern, size, rng, ink)
    pixels = np.asarray(image, np.float32) + rng.normal(0, 10, (size, size, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _write_split(root: Path, split: str, rows: list[dict], images: list[tuple[int, bytes]]) -> None:
    with open(root / f"{split}_imgs.tsv", "w", encoding="utf-8", newline="\n") as f:
        for image_id, data in images:
            f.write(f"{image_id}\t{base64.b64encode(data).decode('ascii')}\n")
    with open(root / f"{split}_texts.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _make_split(topics, n_texts, n_distractors, with_truth, rng, ids, image_size):
    """Queries (1–2 own images each) of topics drawn uniformly from `topics`, then distractors."""
    rows, images, row_topics = [], [], []
    for _ in range(n_texts):
        t = int(rng.integers(len(topics)))
        row_topics.append(t)
        own = []
        for _ in range(1 if rng.random() < 0.7 else 2):  # 1–2 positive images per query
            image_id = int(next(ids))
            images.append((image_id, topic_image(topics[t], rng, image_size)))
            own.append(image_id)
        rows.append(
            {
                "text_id": int(next(ids)),
                "text": _query(topics[t], rng),
                "image_ids": own if with_truth else [],
            }
        )
    for _ in range(n_distractors):  # gallery images no query of this split points to
        images.append((int(next(ids)), topic_image(topics[int(rng.integers(len(topics)))], rng, image_size)))
    order = rng.permutation(len(images))  # the TSV is not grouped by query
    return rows, [images[i] for i in order], row_topics


def _write_online_cache(root: Path, split: str, rows, row_topics, topics, rng, image_size, missing: float):
    """`online_cache/<split>/<query>/1.jpg`: a fresh image of each query's topic (the seed's web image),
    a `missing` fraction of the queries left out and one entry truncated under 500 bytes (broken)."""
    from vmmlib.data.muge.online_cache import cache_path

    written = set()
    for n, (row, t) in enumerate(zip(rows, row_topics)):
        path = cache_path(root / "online_cache" / split, row["text"])
        data = topic_image(topics[t], rng, image_size)
        if path in written or rng.random() < missing:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:300] if n == 0 else data)  # the first query's entry: a failed download
        written.add(path)


def write_muge_sample(
    out_dir: str | Path,
    *,
    train_texts: int = 600,
    valid_texts: int = 100,
    test_texts: int = 100,
    distractors: int = 50,
    n_topics: int = 24,
    novel_topics: int = 4,
    image_size: int = 96,
    seed: int = 0,
    online_cache: bool = True,
    online_missing: float = 0.05,
    overwrite: bool = False,
) -> Path:
    """Write a MUGE sample dataset in the real raw layout (see the module docstring).

    Args:
        out_dir: target folder; written atomically (a temporary sibling, then renamed).
        train_texts, valid_texts, test_texts: queries per split (each with 1–2 own images).
        distractors: extra gallery images in valid and test.
        n_topics: (colour, pattern) topics, at most 48.
        novel_topics: further topics, of colours no training query names (`NOVEL_COLOURS`), that
            only valid and test queries draw (at most 18): products the web knows and the training
            data does not, which the online-learning cache teaches.
        image_size: side of the square JPEGs (Chinese-CLIP squashes them to 224 anyway).
        seed: same seed and sizes → byte-identical files.
        online_cache: also write `online_cache/{valid,test}/<query>/1.jpg` (SPEC §1.3, the seed's
            cache of web images): a fresh image of each query's topic, `online_missing` of them
            left out and the first query's entry truncated (a failed download), for online learning.

    Returns:
        The dataset folder.
    """

    def write(root: Path) -> None:
        rng = np.random.default_rng(seed)
        topics = _topics(n_topics, rng)
        novel = _novel_topics(novel_topics, rng)
        total = 3 * (train_texts + valid_texts + test_texts) + 2 * distractors
        ids = iter(100_000 + rng.choice(900_000, size=total, replace=False))
        for split, n_texts, n_distract in (
            ("train", train_texts, 0),
            ("valid", valid_texts, distractors),
            ("test", test_texts, distractors),
        ):
            drawn = topics if split == "train" else topics + novel
            rows, images, row_topics = _make_split(
                drawn, n_texts, n_distract, split != "test", rng, ids, image_size
            )
            _write_split(root, split, rows, images)
            if online_cache and split != "train":
                _write_online_cache(root, split, rows, row_topics, drawn, rng, image_size, online_missing)
        write_vocab(root / "vocab.txt")

    return write_dataset_dir(out_dir, write, overwrite=overwrite)

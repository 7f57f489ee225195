"""Deterministic sample data for the QQ Browser 2021 video-similarity task, in its exact layout.

The layout is the real one (SPEC §1.1): `pointwise/pretrain_{i}.tfrecords`,
`pairwise/pairwise.tfrecords`, `pairwise/label.tsv`, `test_a/test_a.tfrecords`,
`test_b/test_b.tfrecords`, `tag_list.txt`, and a BERT vocabulary at
`chinese_L-12_H-768_A-12/vocab.txt`. Records are `tf.train.Example`s with `id`, `title`,
`asr_text`, `tag_id`, `category_id` and `frame_feature` (one little-endian float16 × 1536 bytes
element per frame).

Planted structure: every video has a latent topic mixture (a dominant and a secondary topic).
Topics drive the tags (Zipf long tail inside each topic), the category id, the frame features
(topic centroids + video offset + per-frame noise, varying frame counts, some videos with none),
the Chinese characters of titles and ASR, and the pair relevance (cosine of the two mixtures plus
noise). A model that reads frames or titles can therefore learn tags and similarities.
Same arguments → byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmmlib.data._atomic import write_dataset_dir
from vmmlib.io import TFRecordWriter, encode_example

FEATURE_DIM = 1536
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# A block of common CJK ideographs (U+4E00 ...): enough distinct characters for topic vocabularies.
_CJK_START, _CJK_COUNT = 0x4E00, 1200
STYLE_DIMS, STYLE_SCALE = 16, 0.4


def _chinese_chars() -> list[str]:
    return [chr(_CJK_START + i) for i in range(_CJK_COUNT)]


def write_vocab(path: str | Path) -> list[str]:
    """Write a BERT WordPiece vocab: specials, ASCII letters and digits, then one token per CJK char."""
    tokens = SPECIAL_TOKENS + [f"[unused{i}]" for i in range(1, 6)]
    ascii_chars = list("0123456789abcdefghijklmnopqrstuvwxyz")
    tokens += ascii_chars + ["##" + c for c in ascii_chars] + ["，", "。", "！", "？"]
    tokens += _chinese_chars()
    Path(path).write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


class _World:
    """The latent topics and everything they drive."""

    def __init__(self, rng: np.random.Generator, n_topics: int, n_tags: int):
        self.n_topics = n_topics
        self.centroids = rng.normal(0.0, 1.0, (n_topics, FEATURE_DIM)).astype(np.float32)
        # Nuisance ("style": lighting, camera, encoder) directions carry most of the frame variance
        # and nothing of the topic, so raw or randomly projected frames say little about similarity
        # until a model learns to look past them.
        self.style = rng.normal(0.0, 1.0, (STYLE_DIMS, FEATURE_DIM)).astype(np.float32)
        # Real tag ids are arbitrary integers; tag_list.txt holds the supervised ones.
        self.tag_ids = np.sort(rng.choice(np.arange(1, 60000), size=n_tags, replace=False))
        self.rare_tag_ids = np.setdiff1d(np.arange(60000, 60050), self.tag_ids)  # never in tag_list
        per_topic = n_tags // n_topics
        self.topic_tags = [self.tag_ids[t * per_topic : (t + 1) * per_topic] for t in range(n_topics)]
        zipf = 1.0 / np.arange(1, per_topic + 1) ** 1.1
        self.tag_prob = zipf / zipf.sum()
        chars = _chinese_chars()
        order = rng.permutation(len(chars))
        self.common_chars = [chars[i] for i in order[:80]]
        self.topic_chars = [
            [chars[i] for i in order[80 + t * 60 : 80 + (t + 1) * 60]] for t in range(n_topics)
        ]

    def mixture(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        dominant, secondary = rng.choice(self.n_topics, size=2, replace=False)
        theta = np.zeros(self.n_topics, np.float32)
        w = rng.uniform(0.6, 0.9)
        theta[dominant], theta[secondary] = w, 1.0 - w
        return int(dominant), theta

    def text(self, rng: np.random.Generator, theta: np.ndarray, length: int) -> str:
        topics = rng.choice(self.n_topics, size=length, p=theta)
        out = []
        for t in topics:
            pool = self.common_chars if rng.random() < 0.15 else self.topic_chars[t]
            out.append(pool[rng.integers(len(pool))])
        return "".join(out)

    def video(self, rng: np.random.Generator, vid: str, *, with_labels: bool) -> tuple[dict, np.ndarray]:
        dominant, theta = self.mixture(rng)
        u = rng.random()
        num_frames = 0 if u < 0.04 else int(rng.integers(1, 33)) if u < 0.85 else int(rng.integers(33, 61))
        style = rng.normal(0.0, STYLE_SCALE, STYLE_DIMS).astype(np.float32) @ self.style
        base = theta @ self.centroids + style + rng.normal(0.0, 0.5, FEATURE_DIM).astype(np.float32)
        drift = rng.normal(0.0, 0.3, FEATURE_DIM).astype(np.float32)
        steps = np.linspace(-1.0, 1.0, max(num_frames, 1), dtype=np.float32)[:num_frames, None]
        frames = base + steps * drift + rng.normal(0.0, 0.8, (num_frames, FEATURE_DIM)).astype(np.float32)
        frames = frames.astype("<f2")
        title_len = 0 if rng.random() < 0.03 else int(rng.integers(4, 30))
        asr_len = 0 if rng.random() < 0.3 else int(rng.integers(5, 120))
        record = {
            "id": vid,
            "title": self.text(rng, theta, title_len),
            "asr_text": self.text(rng, theta, asr_len),
            "frame_feature": [f.tobytes() for f in frames],
        }
        if with_labels:
            n_tags = int(rng.integers(1, 6))
            tags = []
            for _ in range(n_tags):
                t = dominant if rng.random() < theta[dominant] else int(rng.choice(self.n_topics, p=theta))
                tags.append(int(rng.choice(self.topic_tags[t], p=self.tag_prob)))
            if rng.random() < 0.1:
                tags.append(int(rng.choice(self.rare_tag_ids)))
            record["tag_id"] = np.array(sorted(set(tags)), dtype=np.int64)
            record["category_id"] = (100 + dominant) * 100 + int(rng.integers(0, 23))
        return record, theta


def _write_shard(path: Path, records: list[dict]) -> None:
    with TFRecordWriter(path) as writer:
        for rec in records:
            writer.write(encode_example(rec))


def write_qqbrowser_sample(
    out_dir: str | Path,
    *,
    videos: int = 600,
    pairs: int = 1500,
    pair_videos: int | None = None,
    test_videos: int = 150,
    shards: int = 20,
    n_topics: int = 12,
    n_tags: int = 240,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a QQ Browser sample dataset in the exact on-disk layout of the real one.

    Args:
        out_dir: target folder; written atomically (a temporary sibling, then renamed).
        videos: pointwise (pretraining) videos, spread over `shards` shards.
        pairs: labelled pairs in `pairwise/label.tsv`.
        pair_videos: videos in `pairwise/pairwise.tfrecords` (default: max(50, pairs // 4)).
        test_videos: videos in each of test_a and test_b.
        seed: same seed and sizes → byte-identical files.

    Returns:
        The dataset folder.
    """
    return write_dataset_dir(
        out_dir,
        lambda tmp: _write(tmp, videos, pairs, pair_videos, test_videos, shards, n_topics, n_tags, seed),
        overwrite=overwrite,
    )


def _write(root, videos, pairs, pair_videos, test_videos, shards, n_topics, n_tags, seed) -> None:
    rng = np.random.default_rng(seed)
    world = _World(rng, n_topics, n_tags)
    pair_videos = pair_videos or max(50, pairs // 4)
    ids = iter(10**9 + rng.choice(9 * 10**9, size=videos + pair_videos + 2 * test_videos, replace=False))

    for sub in ("pointwise", "pairwise", "test_a", "test_b", "chinese_L-12_H-768_A-12"):
        (root / sub).mkdir()
    write_vocab(root / "chinese_L-12_H-768_A-12" / "vocab.txt")
    (root / "tag_list.txt").write_text("\n".join(str(t) for t in world.tag_ids) + "\n")

    pointwise = [world.video(rng, str(next(ids)), with_labels=True)[0] for _ in range(videos)]
    for s in range(shards):
        _write_shard(root / "pointwise" / f"pretrain_{s}.tfrecords", pointwise[s::shards])

    pair_records, thetas = zip(
        *(world.video(rng, str(next(ids)), with_labels=True) for _ in range(pair_videos))
    )
    _write_shard(root / "pairwise" / "pairwise.tfrecords", list(pair_records))
    thetas = np.stack(thetas)
    unit = thetas / np.linalg.norm(thetas, axis=1, keepdims=True)
    if pairs > pair_videos * (pair_videos - 1) // 2:
        raise ValueError(f"{pairs} pairs need more than {pair_videos} pair videos")
    dominant = thetas.argmax(1)
    lines, seen = [], set()
    while len(lines) < pairs:
        a = int(rng.integers(pair_videos))
        # Half the pairs share a dominant topic, so relevance spans its whole range.
        pool = np.flatnonzero(dominant == dominant[a]) if rng.random() < 0.5 else np.arange(pair_videos)
        b = int(rng.choice(pool))
        if a == b:
            continue
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        relevance = float(np.clip(unit[a] @ unit[b] + rng.normal(0.0, 0.1), 0.0, 1.0))
        lines.append(f"{pair_records[a]['id']}\t{pair_records[b]['id']}\t{relevance:.2f}")
    (root / "pairwise" / "label.tsv").write_text("\n".join(lines) + "\n")

    for split in ("test_a", "test_b"):
        # The baseline inference reads no labels from test files; the sample leaves them out.
        records = [world.video(rng, str(next(ids)), with_labels=False)[0] for _ in range(test_videos)]
        _write_shard(root / split / f"{split}.tfrecords", records)

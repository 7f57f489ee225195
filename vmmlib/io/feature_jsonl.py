"""Chinese-CLIP's feature files: one JSON object a line, `{"image_id": 9, "feature": [0.1, ...]}` in
`{split}_imgs.img_feat.jsonl` and `{"text_id": 123, "feature": [...]}` in `{split}_texts.txt_feat.jsonl`
(what `cn_clip/eval/extract_features.py` writes and `make_topk_predictions.py` reads), so features
extracted here rank with Chinese-CLIP's tools and theirs load here.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vmmlib.io.safe import InputError, iter_jsonl

ID_KEYS = ("image_id", "text_id")
SUFFIXES = {"image_id": "img_feat.jsonl", "text_id": "txt_feat.jsonl"}


def feature_file(out_dir: str | Path, split: str, key: str) -> Path:
    """Chinese-CLIP's default name: `{split}_imgs.img_feat.jsonl` / `{split}_texts.txt_feat.jsonl`."""
    if key not in SUFFIXES:
        raise ValueError(f"unknown id key {key!r}; valid choices: {', '.join(ID_KEYS)}")
    stem = "imgs" if key == "image_id" else "texts"
    return Path(out_dir) / f"{split}_{stem}.{SUFFIXES[key]}"


def write_features(path: str | Path, key: str, ids: Sequence, features: np.ndarray) -> Path:
    """Write one `{key: id, "feature": [...]}` line per row (float32 values, as Chinese-CLIP's)."""
    if key not in ID_KEYS:
        raise ValueError(f"unknown id key {key!r}; valid choices: {', '.join(ID_KEYS)}")
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) != len(ids):
        raise ValueError(f"{len(ids)} ids for features of shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{path}: refusing to write non-finite features")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, row in zip(ids, features.tolist()):
            f.write(json.dumps({key: i.item() if hasattr(i, "item") else i, "feature": row}) + "\n")
    tmp.replace(path)
    return path


def read_features(path: str | Path) -> tuple[str, list, np.ndarray]:
    """(id key, ids, (N, E) float32 features) of a feature file, read through `vmmlib.io.safe`.

    Raises:
        InputError: naming the file and line of anything that is not `{"image_id"|"text_id": id,
            "feature": [E finite numbers]}` with one key and one dimension throughout, a repeated id,
            bytes that are not UTF-8, JSON nested too deep or a line over the line limit.
    """
    key, ids, seen = None, [], set()
    rows = array("f")
    width = None
    for line_no, obj in iter_jsonl(path, what="feature file"):
        where = f"line {line_no}"
        keys = [k for k in ID_KEYS if isinstance(obj, dict) and k in obj]
        if len(keys) != 1 or "feature" not in obj:
            raise InputError(path, "expected {'image_id' or 'text_id': id, 'feature': [...]}", where)
        if key is not None and keys[0] != key:
            raise InputError(path, f"{keys[0]} in a file of {key}s", where)
        key, value, feature = keys[0], obj[keys[0]], obj["feature"]
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InputError(path, f"{key} must be an int or a string, got {value!r}"[:200], where)
        if value in seen:
            raise InputError(path, f"{key} {value!r} repeated"[:200], where)
        if not _finite_list(feature):
            raise InputError(path, "'feature' must be a non-empty list of finite float32 numbers", where)
        if width is not None and len(feature) != width:
            raise InputError(path, f"{len(feature)} values where earlier lines have {width}", where)
        width = len(feature)
        seen.add(value)
        ids.append(value)
        rows.extend(feature)
    if key is None:
        raise InputError(path, "no features")
    return key, ids, np.frombuffer(rows, np.float32).reshape(len(ids), width).copy()


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite_list(feature) -> bool:
    """A non-empty list of numbers (not bools), each finite as float32 (1e39 would become inf)."""
    return (
        isinstance(feature, list)
        and bool(feature)
        and all(
            isinstance(x, (int, float))
            and not isinstance(x, bool)
            and math.isfinite(x)
            and abs(x) <= _FLOAT32_MAX
            for x in feature
        )
    )

"""Chinese-CLIP's feature files: one JSON object a line, `{"image_id": 9, "feature": [0.1, ...]}` in
`{split}_imgs.img_feat.jsonl` and `{"text_id": 123, "feature": [...]}` in `{split}_texts.txt_feat.jsonl`
(what `cn_clip/eval/extract_features.py` writes and `make_topk_predictions.py` reads), so features
extracted here rank with Chinese-CLIP's tools and theirs load here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    """(id key, ids, (N, E) float32 features) of a feature file.

    Raises:
        ValueError: naming the file and line of anything that is not `{"image_id"|"text_id": id,
            "feature": [E finite numbers]}` with one key and one dimension throughout, or a repeated id.
    """
    key, ids, rows, seen = None, [], [], set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not JSON ({err.msg})") from None
            keys = [k for k in ID_KEYS if isinstance(obj, dict) and k in obj]
            if len(keys) != 1 or "feature" not in obj:
                raise ValueError(f"{where}: expected {{'image_id' or 'text_id': id, 'feature': [...]}}")
            if key is not None and keys[0] != key:
                raise ValueError(f"{where}: {keys[0]} in a file of {key}s")
            key, value, feature = keys[0], obj[keys[0]], obj["feature"]
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(f"{where}: {key} must be an int or a string, got {value!r}")
            if value in seen:
                raise ValueError(f"{where}: {key} {value!r} repeated")
            ok = (
                isinstance(feature, list)
                and feature
                and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    for x in feature
                )
            )
            if not ok:
                raise ValueError(f"{where}: 'feature' must be a non-empty list of finite numbers")
            if rows and len(feature) != len(rows[0]):
                raise ValueError(f"{where}: {len(feature)} values where earlier lines have {len(rows[0])}")
            seen.add(value)
            ids.append(value)
            rows.append(feature)
    if key is None:
        raise ValueError(f"{path}: no features")
    return key, ids, np.asarray(rows, np.float32)

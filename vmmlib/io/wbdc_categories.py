"""WBDC 2022 category ids: the 200 level-2 classes and their 23 level-1 parents (SPEC §1.2).

A category id is a 4-character string 'LLSS': LL is the level-1 class (00…22), SS the sub-class.
The lv2 id of a category is its index in `CATEGORY_IDS` (the official `CATEGORY_ID_LIST`, shipped as
`wbdc_categories.txt` with each class's count in `annotations/labeled.json`); its lv1 id is
`int(category_id[:2])`. It lives in `vmmlib.io`, below all that share it: the readers
(`vmmlib.data.wbdc`), the submission checker and the metric (which imports nothing from `data/`). No torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vmmlib.io.safe import InputError

_TABLE = Path(__file__).with_name("wbdc_categories.txt")


def _read_table() -> tuple[tuple[str, ...], np.ndarray]:
    ids, counts = [], []
    for line in _TABLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            category, count = line.split("\t")
            ids.append(category)
            counts.append(int(count))
    return tuple(ids), np.asarray(counts, dtype=np.int64)


CATEGORY_IDS, LABELED_COUNTS = _read_table()  # (200,) 'LLSS' strings in lv2 order; (200,) int64 counts
NUM_LV2 = len(CATEGORY_IDS)  # 200
NUM_LV1 = 23
LV2_TO_LV1 = np.array([int(c[:2]) for c in CATEGORY_IDS], dtype=np.int64)  # (200,) lv2 id -> lv1 id
LV1_SIZES = np.bincount(LV2_TO_LV1, minlength=NUM_LV1)  # sub-classes per lv1: 9, 5, 9, 6, ... (sum 200)
_LV2_OF = {c: i for i, c in enumerate(CATEGORY_IDS)}


class UnknownCategoryError(KeyError, InputError):
    """A category id that is not one of the 200; the message names it and the valid form.

    A KeyError and an `InputError` (a ValueError); `path`/`where` when the caller knows the file."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, where: str | None = None):
        InputError.__init__(self, path, reason, where)

    def __reduce__(self):
        return (type(self), (self.reason, self.path, self.where))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def is_category(category_id: str) -> bool:
    """Whether `category_id` is one of the 200 'LLSS' strings."""
    return category_id in _LV2_OF


def category_to_lv2(category_id: str) -> int:
    """'LLSS' → lv2 id (0…199). Raises UnknownCategoryError (a KeyError and a ValueError)."""
    try:
        return _LV2_OF[category_id]
    except (KeyError, TypeError):
        raise UnknownCategoryError(
            f"unknown category id {category_id!r}; valid ids are the 200 'LLSS' strings "
            f"{CATEGORY_IDS[0]}…{CATEGORY_IDS[-1]} (vmmlib.io.wbdc_categories.CATEGORY_IDS)"
        ) from None


def lv2_to_category(lv2: int) -> str:
    """lv2 id (0…199) → 'LLSS'."""
    if not 0 <= int(lv2) < NUM_LV2:
        raise ValueError(f"lv2 id {lv2} out of range 0..{NUM_LV2 - 1}")
    return CATEGORY_IDS[int(lv2)]


def lv2_to_lv1(lv2: int | np.ndarray) -> int | np.ndarray:
    """lv2 id(s) → lv1 id(s), the official `lv2id_to_lv1id` (first two digits of the category id)."""
    out = LV2_TO_LV1[np.asarray(lv2, dtype=np.int64)]
    return int(out) if np.ndim(out) == 0 else out


def category_to_lv1(category_id: str) -> int:
    """'LLSS' → lv1 id, `int(category_id[:2])` (checked to be a known category first)."""
    return int(LV2_TO_LV1[category_to_lv2(category_id)])


def categories_to_lv2(category_ids: Iterable[str]) -> np.ndarray:
    """Many 'LLSS' strings → (N,) int64 lv2 ids."""
    return np.fromiter((category_to_lv2(c) for c in category_ids), dtype=np.int64)

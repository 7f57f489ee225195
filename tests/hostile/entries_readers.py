"""Hostile-input entries of the data readers: each task's `load` and split readers, the raw-frame and
feature zips, the MUGE texts and stored images, the avfusion annotations, the online cache, the QQ
Browser VideoStore and `label.tsv`, the YouTube-8M class list.

Two documented behaviours recur in `handled`:
- LINKED: a data folder's own fixed-name files (annotations, manifests, shard files, a path the user
  gave) may be the user's symbolic links, e.g. to data on another disk; only paths taken from data
  (video ids, manifest columns, cache keys) are held inside their root (`safe.inside`).
- Frames and images that fail inside a dataset are per-item problems (text-only fallback, skipped
  item); the entries below call the readers themselves, which raise.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from tests.hostile.registry import register
from vmmlib.data.avfusion import reader as A
from vmmlib.data.avfusion.folder import AVFusionData
from vmmlib.data.avfusion.reader import ClipReader
from vmmlib.data.image_checks import check_image
from vmmlib.data.muge import reader as muge
from vmmlib.data.muge.online_cache import cache_path, load_cache
from vmmlib.data.muge.sample import write_vocab as write_muge_vocab
from vmmlib.data.qqbrowser import reader as qq
from vmmlib.data.qqbrowser.reader import VideoStore
from vmmlib.data.qqbrowser.sample import write_vocab
from vmmlib.data.wbdc import folder as wbdc_data
from vmmlib.data.wbdc import reader as wbdc_reader
from vmmlib.data.wbdc.zips import FrameTransform, RawFrameZips
from vmmlib.data.yt8m.reader import SegmentClasses
from vmmlib.io import encode_example, write_tfrecord
from vmmlib.io.label_tsv import read_label_tsv
from vmmlib.io.safe import InputError, read_bytes
from vmmlib.io.wbdc_categories import CATEGORY_IDS

LINKED = "the folder's own fixed-name file may be the user's link (data on another disk); paths from data are contained"
GIVEN = "the path was given by the user (argument), not taken from data: a link is the user's choice"


def _jpeg(size=(48, 40), colour=(200, 40, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- WBDC

WBDC_IDS = ("1001", "1002")


def _wbdc(folder: Path) -> Path:

    root = folder / "wbdc"
    (root / "annotations").mkdir(parents=True)
    entries = [
        {
            "id": v,
            "title": "标题",
            "asr": "语音",
            "ocr": [{"time": 1, "text": "字"}],
            "category_id": CATEGORY_IDS[k],
        }
        for k, v in enumerate(WBDC_IDS)
    ]
    (root / "annotations" / "labeled.json").write_text(
        json.dumps(entries, ensure_ascii=False), encoding="utf-8"
    )
    (root / "zip_feats").mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(root / "zip_feats" / "labeled.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for v in WBDC_IDS:
            zf.writestr(f"{v}.npy", _npy(rng.standard_normal((3, 768)).astype(np.float16)))
    frames = root / "zip_frames" / "labeled" / "001"
    frames.mkdir(parents=True)
    with zipfile.ZipFile(frames / "1001.zip", "w") as zf:
        zf.writestr("000.jpg", _jpeg())
        zf.writestr("001.jpg", _jpeg(colour=(10, 200, 10)))
    write_vocab(root / "vocab.txt")
    return root


def _wbdc_load(root: Path) -> None:

    data = wbdc_data.load(root, max_text_len=16, max_frames=4, pretrain_splits=("labeled",))
    features = data.split("labeled")["features"]
    for v in data.ids("labeled"):
        features.read(v)  # the reader raises; the dataset would fall back to text only (documented)
    data.dataset("labeled")[0]


_JSON_HANDLED = {"symlink_out": LINKED}

register(
    name="wbdc.load",
    module="vmmlib.data.wbdc.folder",
    make=_wbdc,
    targets={
        "zip_feats/labeled.zip": "zip",
        "zip_feats/labeled.zip!1001.npy": "npy",
    },  # json: wbdc.annotations
    call=_wbdc_load,
    handled={"symlink_out": LINKED},
)

register(
    name="wbdc.annotations",
    module="vmmlib.data.wbdc.reader",
    make=_wbdc,
    targets={"annotations/labeled.json": "json"},
    call=lambda root: wbdc_reader.read_annotations(root / "annotations" / "labeled.json"),
    handled={"symlink_out": GIVEN},
)


def _wbdc_raw(root: Path) -> None:

    frames = RawFrameZips(root / "zip_frames" / "labeled")
    frames.read("1001", range(frames.num_frames("1001")), FrameTransform(32, 32))


register(
    name="wbdc.raw_frames",
    module="vmmlib.data.wbdc.zips",
    make=_wbdc,
    targets={"zip_frames/labeled/001/1001.zip": "zip", "zip_frames/labeled/001/1001.zip!000.jpg": "image"},
    call=_wbdc_raw,
)

# --------------------------------------------------------------------------------------------- MUGE


def _muge(folder: Path) -> Path:

    root = folder / "muge"
    root.mkdir()
    rows = [
        {"text_id": 1, "text": "红色连衣裙", "image_ids": [11]},
        {"text_id": 2, "text": "蓝色", "image_ids": [12, 13]},
    ]
    (root / "valid_texts.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (root / "img.jpg").write_bytes(_jpeg())
    write_muge_vocab(root / "vocab.txt")
    return root


def _muge_texts(root: Path) -> None:

    muge.load(root, context_length=8).queries("valid")


register(
    name="muge.texts",
    module="vmmlib.data.muge.reader",
    make=_muge,
    targets={"valid_texts.jsonl": "jsonl"},
    call=_muge_texts,
    handled={"symlink_out": LINKED},
)


def _muge_image(root: Path) -> None:

    path = root / "img.jpg"
    muge.decode_frames(read_bytes(path), 2, path=path)  # in real use the bytes come from the LMDB


def _checked_image(root: Path) -> None:

    path = root / "img.jpg"
    try:
        check_image(read_bytes(path), "decode")
    except InputError as err:
        raise InputError(path, err.reason, err.where) from None
    except (OSError, ValueError) as err:  # what `vmm prepare muge` counts as a bad image line
        raise InputError(path, f"bad image ({err})") from None


register(
    name="muge.stored_image",
    module="vmmlib.data.muge.reader",
    make=_muge,
    targets={"img.jpg": "image"},
    call=_muge_image,
    handled={"symlink_out": GIVEN},
)
register(
    name="muge.prepare_check",
    module="vmmlib.data.image_checks",
    make=_muge,
    targets={"img.jpg": "image"},
    call=_checked_image,
    handled={"symlink_out": GIVEN},
)

# ----------------------------------------------------------------------------------------- avfusion


def _avfusion(folder: Path) -> Path:
    root = folder / "av"
    for sub in ("videos", "audio", "text", "retrieval", "qa"):
        (root / sub).mkdir(parents=True)
    (root / "train.csv").write_text("video,audio,text\na.mp4,a.wav,a.txt\nb.mp4,b.wav,b.txt\n")
    (root / "validation.csv").write_text("video,audio,text\nc.mp4,c.wav,c.txt\n")
    for name in "abc":
        (root / "text" / f"{name}.txt").write_text(f"title {name}#more text")
    captions = [{"caption": "a dog runs", "clip_name": "v1"}, {"caption": "a cat sits", "clip_name": "v2"}]
    (root / "retrieval" / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    questions = [
        {"question": "what runs", "answer": "dog", "video_id": "v1", "answer_type": "what"},
        {"question": "what sits", "answer": "cat", "video_id": "v2", "answer_type": "what"},
    ]
    (root / "qa" / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (root / "qa" / "train_ans2label.json").write_text(json.dumps({"dog": 0, "cat": 1}))
    return root


def _avfusion_read(root: Path) -> None:

    A.read_manifest(root / "train.csv")
    A.read_retrieval_annotations(root / "retrieval" / "train.jsonl")
    A.read_qa_annotations(root / "qa" / "train.jsonl")
    A.AnswerVocab.read(root / "qa" / "train_ans2label.json")


_AV_HANDLED = {
    "symlink_out": LINKED,
    "duplicate_ids@train.csv": "a repeated manifest row is one more training sample, as in seed 004's reader",
    "duplicate_ids@retrieval/train.jsonl": "a repeated caption is one more caption of its clip (ALPRO keeps it)",
    "duplicate_ids@qa/train.jsonl": "a repeated question is one more question (ALPRO numbers lines)",
    "duplicate_ids@qa/train_ans2label.json": "a key written twice with the same label is the same mapping",
}

register(
    name="avfusion.annotations",
    module="vmmlib.data.avfusion.reader",
    make=_avfusion,
    targets={"retrieval/train.jsonl": "jsonl", "qa/train.jsonl": "jsonl"},  # the others: avfusion.folder
    call=_avfusion_read,
    handled=_AV_HANDLED,
)


def _avfusion_folder(root: Path) -> None:
    data = AVFusionData(root, tokenizer=None, reader=ClipReader(), eval_reader=ClipReader(), downstream="qa",
                        max_text_len=8, max_train_samples=0, max_eval_samples=0, with_audio=False,
                        title_only=True, audio_source="file", video_ext=".mp4", seed=0)  # fmt: skip
    data.manifest("train")
    data.retrieval("train")
    data.qa("train")
    len(data.answers)


register(
    name="avfusion.folder",
    module="vmmlib.data.avfusion.folder",
    make=_avfusion,
    targets={"train.csv": "csv", "qa/train_ans2label.json": "json"},  # the jsonl files: avfusion.annotations
    call=_avfusion_folder,
    handled=_AV_HANDLED,
)

# ------------------------------------------------------------------------------------- online cache


def _online(folder: Path) -> Path:
    root = folder / "cache"
    for key, colour in (("q1", (200, 0, 0)), ("q2", (0, 0, 200))):
        (root / key).mkdir(parents=True)
        (root / key / "1.jpg").write_bytes(_jpeg((64, 64), colour) + b"\0" * 600)  # over MIN_BYTES
    return root


def _online_load(root: Path) -> None:

    _, report = load_cache(root, ["q1", "q2"], lambda im: im.size, warn=False)
    if report.missing:
        raise InputError(cache_path(root, report.missing[0]), "missing (reported, the query is skipped)")
    if report.broken:  # reported and skipped by online_adapt; here, as `vmm` would show it
        raise InputError(root, "; ".join(report.broken)[:2000])


register(
    name="online.cache",
    module="vmmlib.data.muge.online_cache",
    make=_online,
    targets={"q1/1.jpg": "image"},
    call=_online_load,
)

# ------------------------------------------------------------------------------------ QQ Browser


def _qq_record(vid: str, title: str = "标题", tags=(1, 2)) -> bytes:

    frames = [np.full(1536, 0.1 * k, "<f2").tobytes() for k in range(2)]
    return encode_example({"id": vid, "title": title, "asr_text": "", "tag_id": list(tags), "category_id": [3],
                           "frame_feature": frames})  # fmt: skip


def _qq(folder: Path) -> Path:

    root = folder / "qq"
    for sub in ("pointwise", "pairwise", "chinese_L-12_H-768_A-12"):
        (root / sub).mkdir(parents=True)
    write_tfrecord(root / "pointwise" / "pretrain_0.tfrecords", [_qq_record("p1"), _qq_record("p2")])
    write_tfrecord(
        root / "pairwise" / "pairwise.tfrecords", [_qq_record("v1"), _qq_record("v2"), _qq_record("v3")]
    )
    (root / "pairwise" / "label.tsv").write_text("v1\tv2\t0.5\nv1\tv3\t0.9\n")
    (root / "tag_list.txt").write_text("1\n2\n3\n")
    write_vocab(root / "chinese_L-12_H-768_A-12" / "vocab.txt")
    return root


def _qq_load(root: Path) -> None:

    data = qq.load(root, max_text_len=8, max_frames=4)
    split = data.split("pairwise")
    pairs = qq.PairDataset(split, data.pairs)
    [pairs[i] for i in range(len(pairs))]


TRUNCATED_TEXT = (
    "a line-based text file cut inside its last line may still read as valid lines (no length is stored)"
)
_QQ_HANDLED = {
    "symlink_out": LINKED,
    "duplicate_ids@pairwise/label.tsv": "a repeated pair is scored twice, as the official util.test_spearmanr does",
    "truncated@tag_list.txt": TRUNCATED_TEXT,
    "empty@pairwise/label.tsv": "no labelled pairs: a folder of unlabelled videos (what `vmm extract` writes)",
    "empty@tag_list.txt": "no supervised tags (what `vmm extract` writes without tags)",
}

register(
    name="qqbrowser.load",
    module="vmmlib.data.qqbrowser.reader",
    make=_qq,
    targets={"pairwise/label.tsv": "tsv", "tag_list.txt": "text"},  # the records: qqbrowser.video_store
    call=_qq_load,
    handled=_QQ_HANDLED,
)


def _video_store(root: Path) -> None:

    store = VideoStore([root / "pairwise" / "pairwise.tfrecords"], root / "store_cache")
    [store[i] for i in range(len(store))]


register(
    name="qqbrowser.video_store",
    module="vmmlib.io.cache",
    make=_qq,
    targets={"pairwise/pairwise.tfrecords": "tfrecord"},
    call=_video_store,
    handled={"symlink_out": GIVEN},
)

register(
    name="label_tsv.read",
    module="vmmlib.io.label_tsv",
    make=lambda folder: _qq(folder) / "pairwise" / "label.tsv",
    targets={"": "tsv"},
    call=lambda path: read_label_tsv(path),
    handled={
        "symlink_out": GIVEN,
        "duplicate_ids": _QQ_HANDLED["duplicate_ids@pairwise/label.tsv"],
    },
)

# ------------------------------------------------------------------------------------- YouTube-8M


def _yt8m_classes(folder: Path) -> Path:
    path = folder / "segment_label_ids.csv"
    path.write_text("Index\n17\n4\n3861\n")
    return path


register(
    name="yt8m.segment_classes",
    module="vmmlib.data.yt8m.reader",
    make=_yt8m_classes,
    targets={"": "csv"},
    call=lambda path: SegmentClasses.read(path),
    handled={"symlink_out": GIVEN, "truncated": TRUNCATED_TEXT},
)

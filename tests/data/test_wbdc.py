"""WBDC data: categories, the sample layout, lazy zip reading (corrupt / missing / non-finite members),
frame sampling, text building, folds, and the raw-frame path on real JPEG photos."""

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import StratifiedKFold

from vmmlib.data.wbdc import reader as W
from vmmlib.io import wbdc_categories as C
from vmmlib.data.wbdc.sample import write_wbdc_sample
from vmmlib.data.tokenize import load_tokenizer
from vmmlib.io.safe import InputError

SIZES = dict(labeled=120, unlabeled=40, test=30, raw_frame_videos=3)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_wbdc_sample(tmp_path_factory.mktemp("wbdc") / "data", seed=1, **SIZES)


@pytest.fixture(scope="module")
def tokenizer(sample):
    return load_tokenizer(W.default_vocab(sample))


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _photos():
    """Real photographs shipped with scikit-image, as RGB uint8 arrays."""
    skdata = pytest.importorskip("skimage.data")
    return [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]


def _jpeg(image, quality=90):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------- categories


def test_category_list_has_200_ids_in_23_lv1_groups_with_the_official_sizes():
    assert len(C.CATEGORY_IDS) == 200 and len(set(C.CATEGORY_IDS)) == 200
    assert C.LV1_SIZES.tolist() == [9, 5, 9, 6, 6, 3, 3, 6, 6, 8, 4, 6, 6, 12, 4, 10, 11, 9, 7, 6, 16, 24, 24]
    assert C.CATEGORY_IDS[:3] == ("0000", "0001", "0002") and C.CATEGORY_IDS[9] == "0100"
    assert C.CATEGORY_IDS[-1] == "2223"
    assert (
        C.LABELED_COUNTS.sum() == 100_000
        and C.LABELED_COUNTS.max() == 10_656
        and C.LABELED_COUNTS.min() == 14
    )


def test_category_maps_round_trip_and_lv1_is_the_first_two_digits():
    for lv2, category in enumerate(C.CATEGORY_IDS):
        assert C.category_to_lv2(category) == lv2 and C.lv2_to_category(lv2) == category
        assert C.lv2_to_lv1(lv2) == int(category[:2]) == C.category_to_lv1(category)
    np.testing.assert_array_equal(C.lv2_to_lv1(np.array([0, 9, 199])), [0, 1, 22])


def test_unknown_category_raises_naming_it():
    with pytest.raises(KeyError, match="'9999'"):
        C.category_to_lv2("9999")
    with pytest.raises(ValueError, match="200 'LLSS'"):
        C.category_to_lv2("0009")  # lv1 00 has only 9 sub-classes: 0000..0008
    with pytest.raises(ValueError):
        C.lv2_to_category(200)


# ---------------------------------------------------------------- sample data


def test_sample_writes_the_real_layout(sample):
    layout = W.check_layout(sample)
    assert set(layout) == {"labeled", "unlabeled", "test_a"}
    for split, n in (("labeled", 120), ("unlabeled", 40), ("test_a", 30)):
        entries = W.read_annotations(layout[split]["annotations"])
        assert len(entries) == n
        assert all(set(e) >= {"id", "title", "asr", "ocr"} for e in entries)
        assert all(("category_id" in e) == (split == "labeled") for e in entries)
        with zipfile.ZipFile(layout[split]["features"]) as zf:
            assert sorted(zf.namelist()) == sorted(f"{e['id']}.npy" for e in entries)
            feats = np.load(io.BytesIO(zf.read(f"{entries[0]['id']}.npy")))
        assert feats.dtype == np.float16 and feats.shape[1] == 768 and len(feats) >= 1
        for e in entries[:3]:  # raw frames: zip_frames/{split}/{id[-3:]}/{id}.zip of real JPEGs
            path = sample / "zip_frames" / split / e["id"][-3:] / f"{e['id']}.zip"
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                assert names == sorted(names) and len(names) >= 4
                with Image.open(io.BytesIO(zf.read(names[0]))) as img:
                    assert img.format == "JPEG" and img.mode == "RGB"
    ocr = W.read_annotations(layout["labeled"]["annotations"])[0]["ocr"]
    assert all(set(o) == {"time", "text"} for o in ocr)


def test_same_seed_gives_byte_identical_files_across_processes(tmp_path):
    code = "import sys; from vmmlib.data.wbdc.sample import write_wbdc_sample as w; w(sys.argv[1], labeled=20, unlabeled=5, test=5, raw_frame_videos=2, seed=3)"
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_wbdc_sample(tmp_path / "c", labeled=20, unlabeled=5, test=5, raw_frame_videos=2, seed=4)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_sample_class_skew_follows_the_real_data(tmp_path):
    root = write_wbdc_sample(tmp_path / "skew", labeled=1500, unlabeled=0, test=0, raw_frame_videos=0, seed=0)
    labels = np.array(
        [
            C.category_to_lv2(e["category_id"])
            for e in W.read_annotations(root / "annotations" / "labeled.json")
        ]
    )
    counts = np.sort(np.bincount(labels, minlength=200))[::-1]
    assert counts[:13].sum() / len(labels) > 0.4  # the real data: 13 classes hold half the videos
    assert counts[0] / len(labels) < 0.2 and (counts > 0).sum() > 80


def _lv1_similarity_gap(root):
    """Mean cosine of mean frames: same lv1 class minus different lv1 class."""
    split = W.open_split(root, "labeled")
    lv1 = C.lv2_to_lv1(np.array([W.label_of(e) for e in split["entries"]]))
    means = np.stack([split["features"].read(e["id"]).astype(np.float32).mean(0) for e in split["entries"]])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    sim = means @ means.T
    same = lv1[:, None] == lv1[None, :]
    return sim[same & ~np.eye(len(lv1), dtype=bool)].mean() - sim[~same].mean()


def test_planted_structure_frames_and_titles_predict_the_category(sample, tmp_path):
    assert _lv1_similarity_gap(sample) > 0.1
    no_signal = write_wbdc_sample(
        tmp_path / "flat", labeled=120, unlabeled=0, test=0, raw_frame_videos=0, signal=0.0
    )
    assert abs(_lv1_similarity_gap(no_signal)) < 0.03
    split = W.open_split(sample, "labeled")
    labels = np.array([W.label_of(e) for e in split["entries"]])
    # titles of one lv2 class share characters far more often than titles of different classes
    titles = [set(e["title"]) for e in split["entries"]]
    pair = [(i, j) for i in range(len(titles)) for j in range(i + 1, len(titles)) if titles[i] and titles[j]]
    overlap = {True: [], False: []}
    for i, j in pair:
        overlap[bool(labels[i] == labels[j])].append(len(titles[i] & titles[j]) / len(titles[i] | titles[j]))
    assert np.mean(overlap[True]) > 2 * np.mean(overlap[False])


def test_check_layout_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        W.check_layout(tmp_path / "nope")
    (tmp_path / "annotations").mkdir()
    with pytest.raises(InputError, match="labeled.json"):
        W.check_layout(tmp_path)
    (tmp_path / "annotations" / "labeled.json").write_text("[]")
    with pytest.raises(InputError, match="zip_feats"):
        W.check_layout(tmp_path)
    (tmp_path / "zip_feats").mkdir()
    _write_zip(tmp_path / "zip_feats" / "labeled.zip", {})
    assert W.open_split(tmp_path, "labeled")["entries"] == []
    with pytest.raises(InputError, match="zip_frames/labeled"):
        W.open_split(tmp_path, "labeled", frames="raw")
    with pytest.raises(InputError, match="splits present: labeled"):
        W.open_split(tmp_path, "test_a")


# ---------------------------------------------------------------- feature zips


def _write_zip(path, members, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _corrupt_member(path, name):
    """Flip bytes inside a member's compressed data (the central directory stays valid)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 5, start + 25):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_features_are_read_from_the_zip_without_extracting_anything(sample, tmp_path):
    before = sorted(p.name for p in sample.rglob("*"))
    features = W.FeatureZip(sample / "zip_feats" / "labeled.zip")
    vid = next(iter(sorted(features.ids())))
    with zipfile.ZipFile(sample / "zip_feats" / "labeled.zip") as zf:
        expected = np.load(io.BytesIO(zf.read(f"{vid}.npy")))
    np.testing.assert_array_equal(features.read(vid), expected)
    assert sorted(p.name for p in sample.rglob("*")) == before
    # a pickled copy (what a spawned DataLoader worker gets) carries no open handle and reopens
    copy = pickle.loads(pickle.dumps(features))
    assert copy._zip is None
    np.testing.assert_array_equal(copy.read(vid), expected)
    features._pid = -1  # as if inherited through fork: the next read opens a fresh handle
    old = features._zip
    features.read(vid)
    assert features._zip is not old and features._pid == os.getpid()


def _broken_split(tmp_path):
    ok = np.arange(6 * 768, dtype=np.float16).reshape(6, 768) / 1000
    nan = ok.copy()
    nan[1, 3], nan[4, 0] = np.nan, np.inf
    members = {
        "ok.npy": _npy(ok),
        "bad.npy": _npy(np.random.default_rng(0).standard_normal((50, 768)).astype(np.float16)),
        "text.npy": b"not an npy",
        "nan.npy": _npy(nan),
    }
    path = _write_zip(tmp_path / "feats.zip", members, compress=zipfile.ZIP_DEFLATED)
    _corrupt_member(path, "bad.npy")
    entries = [{"id": v, "title": "标题", "asr": "", "ocr": []} for v in ("ok", "bad", "text", "nan", "gone")]
    return entries, W.FeatureZip(path)


def test_corrupt_missing_and_garbage_members_fall_back_to_text_only_and_are_reported_by_id(
    tmp_path, tokenizer
):
    entries, features = _broken_split(tmp_path)
    with pytest.warns(UserWarning, match="gone"):
        ds = W.WBDCDataset(entries, tokenizer, features=features, max_frames=4)
    assert ds.missing_ids == ["gone"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = {it["id"]: it for it in (ds[i] for i in range(len(ds)))}
    messages = " ".join(str(w.message) for w in caught)
    assert "feats.zip: member 'bad.npy': video bad: corrupt member" in messages and "video text:" in messages
    assert items["ok"]["frame_mask"].sum() == 4 and items["ok"]["frame_error"] == ""
    for vid in ("bad", "text", "gone"):
        assert items[vid]["frame_mask"].sum() == 0 and items[vid]["frames"].abs().sum() == 0
        assert items[vid]["frame_error"] and len(items[vid]["text_ids"]) > 2  # the text is still there
    with pytest.raises(W.FrameReadError, match="video bad"):
        features.read("bad")
    assert W.scan_features(features, [e["id"] for e in entries]).keys() == {"bad", "text", "nan", "gone"}


def test_an_epoch_through_dataloader_workers_never_crashes_and_counts_the_problems(tmp_path, tokenizer):
    entries, features = _broken_split(tmp_path)
    with pytest.warns(UserWarning):
        ds = W.WBDCDataset(entries * 2, tokenizer, features=features, max_frames=4)
    ctx = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, collate_fn=W.collate, multiprocessing_context=ctx
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    errors = [e for b in batches for e in b["frame_error"]]
    assert len(errors) == 10 and sum(bool(e) for e in errors) == 8  # bad, text, nan, gone — twice
    ids = [v for b in batches for v in b["id"]]
    assert ids == [e["id"] for e in entries * 2]


def test_non_finite_features_are_zeroed_or_their_frames_dropped(tmp_path, tokenizer):
    entries, features = _broken_split(tmp_path)
    nan_entry = [e for e in entries if e["id"] == "nan"]
    with pytest.warns(UserWarning, match="video nan: 2 non-finite feature values set to 0"):
        item = W.WBDCDataset(nan_entry, tokenizer, features=features, max_frames=8)[0]
    assert item["frame_mask"].sum() == 6 and torch.isfinite(item["frames"]).all()
    assert item["frames"][1, 3] == 0 and item["frames"][4, 0] == 0
    with pytest.warns(UserWarning, match="dropped the frames holding them \\(4 left\\)"):
        item = W.WBDCDataset(nan_entry, tokenizer, features=features, max_frames=8, nonfinite="drop")[0]
    assert item["frame_mask"].sum() == 4 and torch.isfinite(item["frames"]).all()
    with pytest.raises(ValueError, match="zero, drop"):
        W.WBDCDataset(nan_entry, tokenizer, features=features, nonfinite="keep")


# ---------------------------------------------------------------- frame sampling


def test_official_sampler_takes_the_first_frames_when_fewer_than_twice_max_frames():
    np.testing.assert_array_equal(W.frame_indices(40, 32, "official"), np.arange(32))
    np.testing.assert_array_equal(W.frame_indices(64, 32, "official"), np.arange(0, 64, 2))
    np.testing.assert_array_equal(W.frame_indices(70, 32, "official"), np.arange(0, 64, 2))
    np.testing.assert_array_equal(W.frame_indices(10, 32, "official"), np.arange(10))


def test_uniform_sampler_spreads_over_the_whole_video():
    idx = W.frame_indices(40, 32, "uniform")
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 39 and (np.diff(idx) >= 1).all()
    np.testing.assert_array_equal(W.frame_indices(5, 32), np.arange(5))
    with pytest.raises(ValueError, match="uniform, official"):
        W.frame_indices(40, 32, "random")


def test_training_draws_are_random_sorted_subsets():
    torch.manual_seed(0)
    draws = [W.random_frame_indices(50, 8) for _ in range(5)]
    for d in draws:
        assert len(d) == 8 and len(set(d)) == 8 and (np.diff(d) > 0).all() and d.max() < 50
    assert len({tuple(d) for d in draws}) > 1
    np.testing.assert_array_equal(W.random_frame_indices(6, 8), np.arange(6))


# ---------------------------------------------------------------- text


def test_truncation_removes_tokens_from_the_longest_piece_first():
    pieces = W.truncate_longest([list("ab"), list("cdefghij"), list("klmnop")], 10)
    assert pieces == [list("ab"), list("cdef"), list("klmn")]
    assert W.truncate_longest([list("abc"), list("def")], 4) == [list("ab"), list("de")]
    assert W.truncate_longest([list("ab"), [], list("c")], 10) == [list("ab"), [], list("c")]


def test_text_is_cls_title_sep_ocr_sep_asr_sep_and_fits_max_len(tokenizer):
    entry = {
        "id": "1",
        "title": "一二三",
        "ocr": [{"time": 0, "text": "丁"}, {"time": 3, "text": "七"}],
        "asr": "万" * 500,
    }
    ds = W.WBDCDataset([entry], tokenizer, max_text_len=16)
    tokens = tokenizer.convert_ids_to_tokens(ds[0]["text_ids"].tolist())
    assert tokens == ["[CLS]", "一", "二", "三", "[SEP]", "丁", "七", "[SEP]"] + ["万"] * 7 + ["[SEP]"]
    title_only = W.WBDCDataset([entry], tokenizer, text_fields="title", max_text_len=50)[0]
    assert tokenizer.convert_ids_to_tokens(title_only["text_ids"].tolist()) == [
        "[CLS]",
        "一",
        "二",
        "三",
        "[SEP]",
    ]
    empty = W.WBDCDataset([{"id": "2", "title": "", "asr": None, "ocr": None}], tokenizer, ict_texts=True)[0]
    assert tokenizer.convert_ids_to_tokens(empty["text_ids"].tolist()) == ["[CLS]", "[SEP]", "[SEP]", "[SEP]"]
    assert len(empty["title_ids"]) == 2 and len(empty["context_ids"]) == 3


def test_collate_pads_texts_per_batch_and_keeps_ids(sample, tokenizer):
    split = W.open_split(sample, "labeled")
    ds = W.WBDCDataset(
        split["entries"][:4], tokenizer, features=split["features"], max_frames=8, ict_texts=True
    )
    items = [ds[i] for i in range(4)]
    batch = W.collate(items)
    L = max(len(it["text_ids"]) for it in items)
    assert batch["text_ids"].shape == batch["text_mask"].shape == (4, L)
    assert batch["text_mask"].sum(1).tolist() == [len(it["text_ids"]) for it in items]
    assert batch["frames"].shape == (4, 8, 768) and batch["frames"].dtype == torch.float32
    assert batch["labels"].tolist() == [W.label_of(e) for e in split["entries"][:4]]
    assert batch["id"] == [e["id"] for e in split["entries"][:4]]
    assert {"title_ids", "title_mask", "context_ids", "context_mask"} <= set(batch)


# ---------------------------------------------------------------- folds


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_stratified_folds_are_the_seeds_sklearn_split_on_lv2():
    rng = np.random.default_rng(0)
    labels = rng.choice(20, size=300, p=np.arange(1, 21) / 210)
    train, val = W.stratified_folds(labels, 5, 1)
    ref = list(StratifiedKFold(5, shuffle=True, random_state=802).split(np.zeros(300), labels))[1]
    np.testing.assert_array_equal(train, ref[0])
    np.testing.assert_array_equal(val, ref[1])
    folds = W.fold_assignment(labels, 5)
    assert (folds >= 0).all() and np.bincount(folds).min() >= 55
    with pytest.raises(ValueError, match="0..4"):
        W.stratified_folds(labels, 5, 5)


# ---------------------------------------------------------------- raw frames on real photos


def _frame_zip(root, split, vid, jpegs):
    folder = root / "zip_frames" / split / vid[-3:]
    folder.mkdir(parents=True, exist_ok=True)
    return _write_zip(folder / f"{vid}.zip", {f"{i:03d}.jpg": data for i, data in enumerate(jpegs)})


def test_raw_frames_decode_real_jpeg_photos_in_name_order_with_the_clip_transform(tmp_path, tokenizer):
    photos = _photos()
    vid = "12345678901234567890"
    _frame_zip(tmp_path, "labeled", vid, [_jpeg(p) for p in photos])
    frames = W.RawFrameZips(tmp_path / "zip_frames" / "labeled")
    assert vid in frames and frames.num_frames(vid) == 4
    transform = W.FrameTransform(224, 224, "clip")
    out = frames.read(vid, [0, 2], transform)
    assert out.shape == (2, 3, 224, 224) and torch.isfinite(out).all()
    # the same pixels as decoding with Pillow directly and applying the transform
    decoded = np.asarray(Image.open(io.BytesIO(_jpeg(photos[2]))).convert("RGB"))
    torch.testing.assert_close(out[1], transform(decoded), atol=0.05, rtol=0)
    # normalised: roughly zero-mean, unit-scale; the astronaut photo's colours survive the resize
    assert abs(out.mean().item()) < 1.0 and 0.3 < out.std().item() < 2.0
    mean_rgb = torch.tensor(W.IMAGE_STATS["clip"][0]).view(3, 1, 1)
    std_rgb = torch.tensor(W.IMAGE_STATS["clip"][1]).view(3, 1, 1)
    pixels = (out[0] * std_rgb + mean_rgb).mean((1, 2)) * 255
    np.testing.assert_allclose(pixels.numpy(), photos[0][64:448, 64:448].reshape(-1, 3).mean(0), atol=12)
    ds = W.WBDCDataset(
        [{"id": vid, "title": "宇航员", "asr": "", "ocr": []}], tokenizer, raw_frames=frames, max_frames=3
    )
    item = ds[0]
    assert item["frames"].shape == (3, 3, 224, 224) and item["frame_mask"].tolist() == [1, 1, 1]


def test_jpeg_draft_decoding_keeps_the_short_side_above_the_target():
    big = np.kron(_photos()[0], np.ones((2, 2, 1), np.uint8))  # 1024 × 1024
    small = W.decode_jpeg(_jpeg(big), min_side=224)
    assert min(small.shape[:2]) >= 224 and small.shape[0] < 1024
    assert W.decode_jpeg(_jpeg(big)).shape == (1024, 1024, 3)


def test_a_broken_jpeg_falls_back_to_text_only(tmp_path, tokenizer):
    vid = "98765432109876543210"
    _frame_zip(tmp_path, "test_a", vid, [_jpeg(_photos()[1]), b"\xff\xd8 not really a jpeg"])
    ds = W.WBDCDataset(
        [{"id": vid, "title": "猫", "asr": "", "ocr": []}],
        tokenizer,
        raw_frames=W.RawFrameZips(tmp_path / "zip_frames" / "test_a"),
        max_frames=4,
    )
    with pytest.warns(UserWarning, match=f"video {vid}: frame 001.jpg"):
        item = ds[0]
    assert item["frame_mask"].sum() == 0 and "001.jpg" in item["frame_error"]


def test_sample_raw_frames_feed_the_dataset(sample, tokenizer):
    split = W.open_split(sample, "test_a", frames="raw")
    with pytest.warns(UserWarning, match="have no frames"):
        ds = W.WBDCDataset(
            split["entries"][:5], tokenizer, raw_frames=split["raw_frames"], max_frames=4, train=True
        )
    assert len(ds.missing_ids) == 2  # the sample gives raw frames to its first 3 videos only
    batch = W.collate([ds[i] for i in range(3)])
    assert batch["frames"].shape == (3, 4, 3, 224, 224) and (batch["frame_mask"].sum(1) == 4).all()
    assert json.loads((sample / "annotations" / "test_a.json").read_text())[0]["id"] == ds.ids[0]

"""WBDC readers under hostile input (issue 16): bombs, silent loss, reads outside the root, malformed
annotations. Every refusal is a `vmmlib.io.safe.InputError` naming the file (and member or line)."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest

from tests.data.hostile_files import BOMB_MEMBER, jpeg_claiming, npy_bytes, npy_header, write_zip
from vmmlib.data.wbdc import reader as W
from vmmlib.data.wbdc import folder as wbdc_data
from vmmlib.data.wbdc.sample import write_wbdc_sample
from vmmlib.data.tokenize import load_tokenizer
from vmmlib.io.safe import InputError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return write_wbdc_sample(tmp_path_factory.mktemp("wbdc") / "data", labeled=12, unlabeled=4, test=4,
                             raw_frame_videos=1, seed=3)  # fmt: skip


@pytest.fixture
def data(made, tmp_path):
    return shutil.copytree(made, tmp_path / "data")


def _annotations(root, split="labeled"):
    return json.loads((root / "annotations" / f"{split}.json").read_text(encoding="utf-8"))


def _write_annotations(root, entries, split="labeled"):
    text = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]"
    (root / "annotations" / f"{split}.json").write_text(text, encoding="utf-8")


def test_a_20000_square_jpeg_frame_is_refused_from_its_header_naming_zip_and_member(data):
    vid = _annotations(data)[0]["id"]
    zpath = write_zip(
        data / "zip_frames" / "labeled" / vid[-3:] / f"{vid}.zip", {"000.jpg": jpeg_claiming(20000, 20000)}
    )
    frames = W.RawFrameZips(data / "zip_frames" / "labeled")
    with pytest.raises(InputError, match=r"member '000.jpg'.*pixels") as err:
        frames.read(vid, [0], W.FrameTransform())
    assert err.value.path == os.fspath(zpath.resolve())
    tok = load_tokenizer(W.default_vocab(data))
    ds = W.WBDCDataset([{"id": vid, "title": "t"}], tok, raw_frames=frames, max_frames=2)
    with pytest.warns(UserWarning, match="000.jpg"):
        item = ds[0]  # the documented per-video fallback: text only, reported by id
    assert item["frame_mask"].sum() == 0 and "pixels" in item["frame_error"]


def test_decode_jpeg_refuses_a_bomb_before_decoding():
    with pytest.raises(InputError, match="frame.jpg"):
        W.decode_jpeg(jpeg_claiming(20000, 20000), 224, path="frame.jpg")


@pytest.mark.parametrize(
    "member, match",
    [
        (npy_header((2**40, 768)), "declares"),
        (npy_header((3, 768), "|O"), "not numeric"),
        (npy_header((3,), "<U10"), "not numeric"),
    ],
)
def test_an_npy_header_declaring_too_much_or_a_non_numeric_dtype_is_refused(tmp_path, member, match):
    path = write_zip(
        tmp_path / "feats.zip", {"v1.npy": member, "v2.npy": npy_bytes(np.zeros((2, 768), np.float16))}
    )
    feats = W.FeatureZip(path)
    with pytest.raises(InputError, match=f"member 'v1.npy'.*{match}") as err:
        feats.read("v1")
    assert err.value.path == os.fspath(path)
    assert feats.read("v2").shape == (2, 768)


def test_a_zip_member_with_a_huge_ratio_is_refused_naming_it(tmp_path):
    path = write_zip(tmp_path / "feats.zip", {"v1.npy": BOMB_MEMBER})
    with pytest.raises(InputError, match=r"feats.zip: member 'v1.npy': compression ratio"):
        W.FeatureZip(path)


@pytest.mark.parametrize("damage", ["missing", "garbage", "directory"])
def test_a_missing_or_unreadable_labeled_zip_is_an_error_unless_text_only_is_allowed(data, damage):
    zpath = data / "zip_feats" / "labeled.zip"
    zpath.unlink()
    if damage == "garbage":
        zpath.write_bytes(b"PK\x03\x04 not a zip at all")
    elif damage == "directory":
        zpath.mkdir()
    with pytest.raises(InputError, match="labeled.zip") as err:
        wbdc_data.load(data)
    assert "labeled.zip" in err.value.path
    if damage == "missing":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = wbdc_data.load(data, allow_text_only=True)
        assert [str(w.message) for w in caught if "allow_text_only" in str(w.message)] != []
        assert len([w for w in caught if "allow_text_only" in str(w.message)]) == 1
        assert d.split("labeled")["features"] is None and d.split("unlabeled")["features"] is not None


def test_duplicate_ids_are_refused_naming_file_and_line(data):
    entries = _annotations(data)
    _write_annotations(data, entries + [dict(entries[2])])
    with pytest.raises(
        InputError, match=rf"labeled.json: entry {len(entries)} \(line {len(entries) + 2}\): id .* repeated"
    ):
        W.read_annotations(data / "annotations" / "labeled.json")


@pytest.mark.parametrize(
    "bad, match",
    [
        ("not an object", "entry 1.*not an object"),
        ({"title": "no id"}, "entry 1.*'id' missing"),
        ({"id": "../../etc"}, "entry 1.*not a plain name"),
        ({"id": "v9", "title": 5}, "entry 1.*'title' is a int"),
        ({"id": "v9", "category_id": "9999"}, "entry 1.*unknown category"),
        ({"id": "v9", "ocr": {"a": 1}}, "entry 1.*'ocr'"),
    ],
)
def test_annotation_entries_of_the_wrong_shape_are_refused_naming_the_entry(tmp_path, bad, match):
    path = tmp_path / "labeled.json"
    path.write_text(json.dumps([{"id": "v1", "title": "t"}, bad]))
    with pytest.raises(InputError, match=match) as err:
        W.read_annotations(path)
    assert err.value.path == os.fspath(path)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        ('[{"id": "v1", "title": "\xe9"}]'.encode("latin-1"), "line 1: not valid UTF-8"),
        (b'[{"id": "v1",', "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"id": "v1"}', "JSON array"),
    ],
)
def test_malformed_annotation_files_are_refused_naming_the_file(tmp_path, raw, match):
    path = tmp_path / "labeled.json"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=match) as err:
        W.read_annotations(path)
    assert err.value.path == os.fspath(path)


def test_links_out_of_the_data_folder_are_refused(data, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    vid = _annotations(data)[0]["id"]
    target = write_zip(outside / "frames.zip", {"000.jpg": b"x"})
    link = data / "zip_frames" / "labeled" / vid[-3:] / f"{vid}.zip"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    with pytest.raises(InputError, match="leads outside"):
        W.RawFrameZips(data / "zip_frames" / "labeled").num_frames(vid)
    # the layout's own files may be the user's links (data on another disk); paths from data may not
    shutil.move(data / "zip_feats" / "labeled.zip", outside / "labeled.zip")
    (data / "zip_feats" / "labeled.zip").symlink_to(outside / "labeled.zip")
    assert wbdc_data.load(data).split("labeled")["features"] is not None

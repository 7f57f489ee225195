"""avfusion readers under hostile input (issue 16): manifest and annotation paths that are absolute,
climb out or link out of their root; malformed CSV, JSONL and answer vocabularies."""

import json
import os

import pandas as pd
import pytest

from vmmlib.data.avfusion import reader as A
from vmmlib.io.safe import InputError


def _manifest(tmp_path, rows):
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["video", "audio", "text"]).to_csv(path, index=False)
    return path


OK = ("a.mp4", "a.wav", "a.txt")


@pytest.mark.parametrize(
    "row, match",
    [
        (("/etc/passwd", "a.wav", "a.txt"), r"line 3: video '/etc/passwd' is an absolute path"),
        (("a.mp4", "../../secret.wav", "a.txt"), r"line 3: audio '../../secret.wav' climbs out"),
        (("a.mp4", "a.wav", "sub/../../x.txt"), r"line 3: text .* climbs out"),
    ],
)
def test_manifest_paths_that_are_absolute_or_climb_out_are_refused_naming_file_and_line(tmp_path, row, match):
    path = _manifest(tmp_path, [OK, row])
    with pytest.raises(InputError, match=match) as err:
        A.read_manifest(path)
    assert err.value.path == os.fspath(path)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b'video,audio,text\n"a.mp4,a.wav,a.txt\n', "malformed"),
        (b"video,audio,text\na.mp4,\xff\xfe.wav,a.txt\n", "UTF-8"),
        (b"", "missing column"),
        (b"clip,sound\nx,y\n", "missing column"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_file(tmp_path, raw, match):
    path = tmp_path / "train.csv"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=match) as err:
        A.read_manifest(path)
    assert err.value.path == os.fspath(path)


def test_a_text_linked_out_of_its_root_is_refused_when_read(tmp_path):
    roots = {name: tmp_path / name for name in ("videos", "audio", "text")}
    for root in roots.values():
        root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (roots["text"] / "a.txt").symlink_to(secret)
    ds = A.AVFusionDataset(A.read_manifest(_manifest(tmp_path, [OK])), roots["videos"], roots["audio"],
                           roots["text"], A.ClipReader(), tokenizer=None, train=False)  # fmt: skip
    with pytest.raises(InputError, match="text path 'a.txt' leads outside"):
        ds[0]


@pytest.mark.parametrize(
    "line, match",
    [
        ({"caption": "c", "clip_name": "../../etc/x"}, "record 2: clip_name .* climbs out"),
        ({"caption": "c", "clip_name": "/abs/clip"}, "record 2: clip_name .* absolute"),
        ({"caption": ["c"], "clip_name": "v2"}, "line 2: key.* must be strings"),
        ([1, 2], "line 2: expected a JSON object"),
    ],
)
def test_retrieval_annotations_with_bad_records_are_refused(tmp_path, line, match):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"caption": "a", "clip_name": "v1"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match=match) as err:
        A.read_retrieval_annotations(path)
    assert err.value.path == os.fspath(path)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "line 1: JSON nested deeper"),
        (b'{"question": "\xff"}', "line 1: not valid UTF-8"),
    ],
)
def test_qa_annotations_deep_or_not_utf8_are_refused(tmp_path, raw, match):
    path = tmp_path / "train.jsonl"
    path.write_bytes(raw + b"\n")
    with pytest.raises(InputError, match=match):
        A.read_qa_annotations(path)


def test_a_gallery_clip_linked_out_of_the_video_root_is_refused(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v1.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    with pytest.raises(InputError, match="leads outside"):
        A.VideoDataset(["v1"], tmp_path / "videos", A.ClipReader()).path(0)


@pytest.mark.parametrize("raw", [b'["yes", "no"]', b'{"yes": 0, "no": "1"}', b'{"yes": 0, "no": 2}', b"{"])
def test_an_answer_vocabulary_of_the_wrong_shape_is_refused(tmp_path, raw):
    path = tmp_path / "train_ans2label.json"
    path.write_bytes(raw)
    with pytest.raises(InputError) as err:
        A.AnswerVocab.read(path)
    assert err.value.path == os.fspath(path)

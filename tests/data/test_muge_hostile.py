"""MUGE readers under hostile input (issue 16): a bomb image stored by `prepare`, query files with
invalid UTF-8, repeated text ids, deep JSON and lines of the wrong shape."""

import base64
import io
import json
import os

import pytest
from PIL import Image

from tests.data.hostile_files import jpeg_claiming, png_claiming
from vmmlib.data.muge import reader as D
from vmmlib.data.muge.prepare import prepare_muge
from vmmlib.io.safe import InputError


def _jpeg_ok() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@pytest.mark.parametrize(
    "bomb", [jpeg_claiming(20000, 20000), png_claiming(20000, 20000)], ids=["jpeg", "png"]
)
def test_a_20000_square_image_stored_by_prepare_is_refused_from_its_header(tmp_path, bomb):
    ok = _jpeg_ok()
    (tmp_path / "valid_imgs.tsv").write_text(f"1\t{_b64(ok)}\n2\t{_b64(bomb)}\n")
    (tmp_path / "valid_texts.jsonl").write_text(
        json.dumps({"text_id": 7, "text": "猫", "image_ids": [1, 2]}) + "\n"
    )
    summary = prepare_muge(tmp_path, ["valid"], check="fast", progress=False, workers=0)
    gallery = D.MugeImageDataset(D.lmdb_split(tmp_path, "valid"))
    assert gallery[0]["frames"].shape[0] == 1
    if summary["valid"].images == 2:  # `--check fast` stored it: the dataset must refuse it
        with pytest.raises(InputError, match=r"imgs: image 2: .*pixels") as err:
            gallery[1]
        assert err.value.path == os.fspath(tmp_path / "lmdb" / "valid" / "imgs")
    with pytest.raises(InputError, match="pixels"):
        D.decode_frames(bomb, path="x.tsv")


def _texts(tmp_path, lines: list[bytes]):
    path = tmp_path / "valid_texts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


GOOD = json.dumps({"text_id": 1, "text": "红色", "image_ids": [5]}, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "bad, match",
    [
        ('{"text_id": 2, "text": "\xe9t\xe9", "image_ids": []}'.encode("latin-1"), "line 2: not valid UTF-8"),
        (GOOD, r"line 2: text_id 1 repeated \(first on line 1\)"),
        (b"[" * 100_000 + b"]" * 100_000, "line 2: JSON nested deeper"),
        (b'{"text_id": 2, "text": "x"', "line 2: invalid JSON"),
        (b"[1, 2]", "line 2: expected a JSON object"),
        (b'{"text_id": 2, "text": 5, "image_ids": []}', "line 2: text_id must be an int and text a string"),
        (b'{"text_id": 2, "text": "x", "image_ids": "1"}', "line 2: image_ids must be a list"),
        (b'{"text_id": 2, "text": "x", "image_ids": [NaN]}', "line 2: invalid JSON"),
    ],
)
def test_query_files_are_refused_naming_file_and_line(tmp_path, bad, match):
    path = _texts(tmp_path, [GOOD, bad])
    with pytest.raises(InputError, match=match) as err:
        D.read_texts(path)
    assert err.value.path == os.fspath(path)


def test_a_query_file_that_is_missing_or_a_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        D.read_texts(tmp_path / "valid_texts.jsonl")
    (tmp_path / "valid_texts.jsonl").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        D.load(tmp_path).texts("valid")


@pytest.mark.parametrize("check", ["decode", "header"])
def test_prepare_checks_refuse_a_bomb_from_its_header(check):
    from vmmlib.data.image_checks import check_encoded, check_image

    for bomb in (jpeg_claiming(12000, 12000), png_claiming(12000, 12000)):
        with pytest.raises(InputError, match="pixels"):
            check_image(bomb, check)
        with pytest.raises(InputError, match="pixels"):
            check_encoded(_b64(bomb).encode(), check)
    check_image(_jpeg_ok(), check)

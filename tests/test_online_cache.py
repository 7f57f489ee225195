"""The online cache under hostile input (issue 16): query texts that climb out of the cache, links
out of it, and decompression bombs, all refused unread (reported with the broken entries)."""

import io
import os
import warnings

import pytest
from PIL import Image

from tests.data.hostile_files import jpeg_claiming
from vmmlib.data.muge.online_cache import cache_path, load_cache
from vmmlib.io.safe import InputError


def _photo(size=(640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue() + b"\0" * 600  # over the seed's 500-byte failed-download rule


def _put(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _load(cache, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_cache(cache, texts, lambda im: im.size)


def test_query_texts_and_links_that_lead_out_of_the_cache_are_refused_unread(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    _put(cache / "好" / "1.jpg", _photo())
    _put(outside / "x" / "1.jpg", _photo())  # what `../outside/x` would reach
    _put(tmp_path / "abs" / "1.jpg", _photo())
    (cache / "link").mkdir()
    (cache / "link" / "1.jpg").symlink_to(outside / "x" / "1.jpg")
    texts = ["好", "../outside/x", f"{tmp_path}/abs", "link", "..", ""]
    images, report = _load(cache, texts)
    assert images[0] == (640, 480) and images[1:] == [None] * 5
    assert report.used == 1 and len(report.broken) == 5 and report.missing == []
    assert all("refused" in b for b in report.broken), report.broken


def test_a_12000_square_jpeg_is_refused_from_its_header_and_large_ones_decode_in_draft(tmp_path):
    cache = tmp_path / "cache"
    _put(cache / "bomb" / "1.jpg", jpeg_claiming(12000, 12000) + b"\0" * 600)
    _put(cache / "big" / "1.jpg", _photo((4000, 3000)))
    images, report = _load(cache, ["bomb", "big"])
    assert images[0] is None and "pixels" in report.broken[0] and "bomb" in report.broken[0]
    assert images[1] is not None and max(images[1]) <= 2000  # draft: 1/2 scale or less, never 4000×3000
    images, _ = load_cache(cache, ["big"], lambda im: im.size, max_side=256)
    assert images[0] == (500, 375)


def test_the_cache_folder_must_exist(tmp_path):
    with pytest.raises(InputError, match="not a folder") as err:
        load_cache(tmp_path / "nope", ["a"], lambda im: im)
    assert err.value.path == os.fspath(tmp_path / "nope")
    assert cache_path(tmp_path, "红 色，") == tmp_path / "红色" / "1.jpg"

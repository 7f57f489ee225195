"""The safe-input layer: every refusal is one InputError naming the file and the place."""

import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from vmmlib.io import safe
from vmmlib.io.safe import InputError, Limits


def test_input_error_names_file_place_and_reason_and_survives_pickling():
    e = InputError("a/b.json", "invalid JSON", "line 3")
    assert str(e) == "a/b.json: line 3: invalid JSON"
    again = pickle.loads(pickle.dumps(e))
    assert (again.path, again.where, again.reason) == ("a/b.json", "line 3", "invalid JSON")
    assert isinstance(e, ValueError)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "../../x", "a\nb", "", 5, None, "é"])
def test_check_name_refuses_anything_but_plain_names(name):
    with pytest.raises(InputError, match="not a plain name"):
        safe.check_name(name, "step name", source="p.yaml")


def test_check_name_accepts_plain_names():
    assert safe.check_name("finetune-fold_3.v2") == "finetune-fold_3.v2"


def test_inside_refuses_climbing_absolute_and_linked_paths(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert safe.inside(root, "sub/x.txt") == (root / "sub/x.txt").resolve()
    assert safe.inside(root, root / "sub") == (root / "sub").resolve()
    for bad in ["../secret", str(outside), "sub/../../secret", "link/file", "/etc/passwd"]:
        with pytest.raises(InputError, match="leads outside"):
            safe.inside(root, bad)


def test_read_text_names_the_line_of_invalid_utf8_and_drops_a_bom(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbfok\nfine\nbad \xff here\n")
    with pytest.raises(InputError, match=r"t.txt: line 3: not valid UTF-8"):
        safe.read_text(p)
    p.write_bytes(b"\xef\xbb\xbfhello")
    assert safe.read_text(p) == "hello"


def test_files_that_are_missing_folders_or_too_big_are_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        safe.read_text(tmp_path / "nope")
    with pytest.raises(InputError, match="not a regular file"):
        safe.read_text(tmp_path)
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(InputError, match="over the limit"):
        safe.read_text(tmp_path / "big", limits=Limits(max_text_bytes=10))


def test_iter_lines_streams_and_refuses_a_huge_line(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes(b"a\r\nbb\n" + b"c" * 50 + b"\nd")
    assert list(safe.iter_lines(p)) == [(1, "a"), (2, "bb"), (3, "c" * 50), (4, "d")]
    with pytest.raises(InputError, match="line 3: line longer than 20 bytes"):
        list(safe.iter_lines(p, limits=Limits(max_line_bytes=20)))


def test_json_errors_name_line_and_refuse_deep_nesting_nan_and_overflow(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1,\n "b": }')
    with pytest.raises(InputError, match=r"x.json: line 2 column 7: invalid JSON"):
        safe.read_json(p)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested deeper"):
        safe.read_json(p)
    p.write_text("[" * 70 + "]" * 70)
    with pytest.raises(InputError, match="nested deeper than 64"):
        safe.read_json(p)
    for text in ["[NaN]", "[1e999]", "[-Infinity]"]:
        p.write_text(text)
        with pytest.raises(InputError):
            safe.read_json(p)
    p.write_text('{"ok": [1.5, {"b": null}]}')
    assert safe.read_json(p) == {"ok": [1.5, {"b": None}]}


def test_jsonl_names_the_line_and_skips_blank_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{oops\n')
    it = safe.iter_jsonl(p)
    assert next(it) == (1, {"a": 1})
    assert next(it) == (3, {"a": 2})
    with pytest.raises(InputError, match=r"x.jsonl: line 4: invalid JSON"):
        next(it)


def test_csv_rows_and_pandas_errors_name_file_and_line(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text('id,v\n1,2\n"3,4\n')
    rows = safe.iter_csv_rows(p)
    assert next(rows) == (1, ["id", "v"])
    assert next(rows) == (2, ["1", "2"])
    with pytest.raises(InputError, match="line 3: malformed row"):
        next(rows)
    p.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(InputError, match=r"x.csv: line 3: malformed CSV"):
        safe.read_csv(p)
    p.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(InputError, match="line 2: not valid UTF-8"):
        safe.read_csv(p)
    p.write_text("")
    with pytest.raises(InputError, match="empty"):
        safe.read_csv(p)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(InputError, match=r"p.yaml: line \d+ column \d+: invalid YAML"):
        safe.read_yaml(p)
    p.write_text("a: {b: 1}\n")
    assert safe.read_yaml(p) == {"a": {"b": 1}}


def _zip(path, members, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_refuses_bombs_climbing_names_too_many_members_and_broken_files(tmp_path):
    z = _zip(tmp_path / "bomb.zip", {"a.npy": b"\0" * (8 << 20)})
    with pytest.raises(InputError, match=r"bomb.zip: member 'a.npy': compression ratio \d+:1"):
        safe.open_zip(z)
    z = _zip(tmp_path / "climb.zip", {"../evil.npy": b"x"})
    with pytest.raises(InputError, match="climbs out"):
        safe.open_zip(z)
    z = _zip(tmp_path / "many.zip", {f"{i}.npy": b"x" for i in range(5)})
    with pytest.raises(InputError, match="5 members, over the limit of 4"):
        safe.open_zip(z, limits=Limits(max_zip_members=4))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="broken.zip: not a readable zip"):
        safe.open_zip(tmp_path / "broken.zip")


def test_zip_read_checks_the_member_and_pickles(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"a.npy": b"hello"})
    with safe.open_zip(z) as zf:
        assert zf.read("a.npy") == b"hello"
        with pytest.raises(InputError, match="member 'b.npy': no such member"):
            zf.read("b.npy")
        again = pickle.loads(pickle.dumps(zf))
        assert again.read("a.npy") == b"hello"


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_npy_header_is_checked_before_reading():
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    np.testing.assert_array_equal(safe.load_npy(_npy(a), path="f.zip", where="member 'x.npy'"), a)
    huge = _npy(np.zeros((2, 768), np.float16)).replace(b"(2, 768)", b"(1099511627776, 768)")
    with pytest.raises(InputError, match=r"f.zip: member 'x.npy': npy shape .* declares"):
        safe.load_npy(huge, path="f.zip", where="member 'x.npy'")
    with pytest.raises(InputError, match="not numeric"):
        safe.load_npy(_npy(np.array([{"a": 1}], dtype=object)), path="f")
    with pytest.raises(InputError, match="its header declares"):
        safe.load_npy(_npy(a)[:-4], path="f")
    with pytest.raises(InputError, match="not an npy array"):
        safe.load_npy(b"garbage", path="f")


def test_npy_from_a_file(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.ones((2, 3), np.float32))
    assert safe.load_npy(p).shape == (2, 3)


def _jpeg(width, height) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


def test_images_over_the_pixel_limit_are_refused_from_the_header():
    raw = _jpeg(64, 48)
    assert safe.image_size(raw) == (64, 48)
    with pytest.raises(InputError, match=r"img.jpg: image of 64×48 pixels is over 1,000"):
        safe.image_size(raw, path="img.jpg", limits=Limits(max_image_pixels=1000))
    # a header that declares 20000×20000 (SOF0 height/width patched) is refused before decoding
    sof = raw.index(b"\xff\xc0")
    bomb = raw[: sof + 5] + struct.pack(">HH", 20000, 20000) + raw[sof + 9 :]
    with pytest.raises(InputError, match="pixels is over|not a readable image"):
        safe.decode_image(bomb, path="bomb.jpg")
    with pytest.raises(InputError, match="not a readable image"):
        safe.decode_image(b"nope", path="x.jpg")


def test_decode_image_with_draft_decodes_small():
    image = safe.decode_image(_jpeg(800, 800), draft=(100, 100))
    assert image.size == (100, 100) and image.mode == "RGB"


def test_json_file_written_by_json_dump_round_trips(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"1": [0.5] * 4}))
    assert safe.read_json(p) == {"1": [0.5] * 4}
    assert os.path.exists(p)

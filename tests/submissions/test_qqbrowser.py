"""`vmmlib.submissions.qqbrowser`: result.zip checks (issue 9, cases 4 and 5) and `vmm` on it."""

import json
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from vmmlib.app.cli import main
from vmmlib.submissions import InvalidSubmissionError, get_format, list_formats
from vmmlib.submissions import qqbrowser as S


def _labels(tmp_path):
    path = tmp_path / "label.tsv"
    path.write_text("a\tb\t0.9\na\tc\t0.1\nb\tc\t0.3\n")
    return path


def _zip(path, text: str, member: str = "result.json"):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return path


def _raw_zip(path, data: bytes, *, crc: int, size: int, flags: int = 0, name: bytes = b"result.json"):
    """A one-member zip written byte by byte (deflate method), so CRC, size and flags can lie."""
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 8, 0, 0, crc, len(data), size, len(name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        flags,
        8,
        0,
        0,
        crc,
        len(data),
        size,
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), len(body), 0)
    path.write_bytes(body + central + name + end)
    return path


def _deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush()


def _validate_cli(path, capsys, *extra) -> tuple[int, dict]:
    rc = main(["validate", "qqbrowser", str(path), *extra])
    return rc, json.loads(capsys.readouterr().out)


def test_get_format_lists_the_valid_tasks_on_an_unknown_one():
    assert get_format("qqbrowser") is S and "yt8m" in list_formats()
    with pytest.raises(ValueError, match="unknown task 'qq'; valid choices: " + ", ".join(list_formats())):
        get_format("qq")


def test_write_then_read_gives_the_float16_values_as_float64(tmp_path):
    path = S.write(tmp_path / "result.zip", ["1", "2"], np.array([[1 / 3, 2.0], [0.1, -7.5]], np.float32))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["result.json"]
    back = S.read(path)
    assert back["1"].dtype == np.float64 and back["1"].tolist() == [float(np.float16(1 / 3)), 2.0]
    assert S.validate(path) == [] and S.validate(path, ["1", "2"]) == []
    with pytest.raises(ValueError, match="ids repeat"):
        S.write(tmp_path / "x.zip", ["1", "1"], np.ones((2, 4)))


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '{"a": [1.0, 2.0], "b": [1, 0], "a": [3.0, 4.0]}',
            "1 id(s) appear more than once (JSON keeps the last), e.g. a",
        ),
        ('{"a": ["1.0", "2.0"], "b": [1, 0]}', "1 value(s) holds a string in place of a number, e.g. id a"),
        ('{"a": [true, false], "b": [1, 0]}', "1 value(s) holds a boolean in place of a number, e.g. id a"),
        (
            '{"a": {"x": 1}, "b": [1, 0]}',
            "1 value(s) holds an object in place of a list of numbers, e.g. id a",
        ),
        ('{"a": [1, 0], "b": [1, 0, 2]}', "embeddings have different lengths: 2 (id a), 3 (id b)"),
        ('{"a": [1, 0], "b": [NaN, 0]}', "1 embedding(s) hold NaN or inf, e.g. id b"),
        ('{"a": [1, 0], "b": [1e999, 0]}', "1 embedding(s) hold NaN or inf, e.g. id b"),
        (
            '{"a": [1, 0], "b": [1, 0]',
            "result.zip:result.json: invalid JSON at character 25: expecting ',' or '}'",
        ),
        ('{"a": [1, 0]} {}', "result.zip:result.json: extra data after the JSON object at character 14"),
        ("[[1, 0]]", "result.zip:result.json: the JSON must be an object id → embedding, got an array"),
        (
            '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "result.zip:result.json: arrays or objects nested too deeply to be a vector",
        ),
    ],
)
def test_each_defect_of_the_json_is_one_problem_line_and_exit_1(tmp_path, capsys, text, expected):
    path = _zip(tmp_path / "result.zip", text)
    assert S.validate(path) == [expected]
    rc, out = _validate_cli(path, capsys)
    assert rc == 1 and out["problems"] == [expected] and not out["valid"]


@pytest.mark.parametrize(
    "member, expected",
    [
        ("other.json", "no member named 'result.json' (found 'other.json')"),
        ("sub/result.json", "no member named 'result.json' (found 'sub/result.json')"),
        (
            "../result.json",
            "member '../result.json': member name is absolute or climbs out",
        ),  # vmmlib.io.safe
    ],
)
def test_the_member_must_be_named_result_json_as_the_official_evaluator_opens_it(
    tmp_path, capsys, member, expected
):
    path = _zip(tmp_path / "result.zip", '{"a": [1.0]}', member=member)
    (problem,) = S.validate(path)
    assert expected in problem
    assert _validate_cli(path, capsys)[0] == 1


def test_unreadable_members_are_problems_not_tracebacks(tmp_path, capsys):
    text = b'{"a": [1.0, 0.5], "b": [0.25, 1.0]}'
    data, crc = _deflate(text), zlib.crc32(text)
    cases = {
        "corrupt deflate": _raw_zip(tmp_path / "c.zip", b"\xff" * 40, crc=crc, size=len(text)),
        "bad crc": _raw_zip(tmp_path / "crc.zip", data, crc=crc ^ 1, size=len(text)),
        "encrypted": _raw_zip(tmp_path / "e.zip", data, crc=crc, size=len(text), flags=0x1),
        "truncated": _raw_zip(tmp_path / "t.zip", data[:-4], crc=crc, size=len(text)),
    }
    assert S.validate(_raw_zip(tmp_path / "ok.zip", data, crc=crc, size=len(text))) == []
    for what, path in cases.items():
        problems = S.validate(path)
        assert len(problems) == 1, (what, problems)
        assert ("encrypted" if what == "encrypted" else "cannot read it") in problems[0], what
        assert _validate_cli(path, capsys)[0] == 1


def test_a_1_gib_member_is_refused_from_its_declared_size_without_reading_it(tmp_path):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b" " * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # one MiB; after a full flush the
    data = block * 1024 + c.flush()  # next identical MiB compresses to the same bytes: 1 GiB of spaces
    path = _raw_zip(tmp_path / "bomb.zip", data, crc=0, size=1 << 30)
    assert path.stat().st_size < 1_100_000
    tracemalloc.start()
    problems = S.validate(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problems == [
        f"result.json is {1 << 30} bytes uncompressed, more than the {S.MAX_MEMBER_BYTES}-byte limit"
    ]
    assert peak < 4 << 20


def test_a_member_under_the_limit_is_parsed_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(2000)]
    text = json.dumps({v: rng.normal(size=64).astype(np.float16).tolist() for v in ids})
    padded = text[:-1] + " " * (24 << 20) + "}"  # 24 MiB of whitespace before the closing brace
    path = _zip(tmp_path / "result.zip", padded)
    tracemalloc.start()
    embeddings, problems = S.load(path, ids)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problems == [] and len(embeddings) == 2000
    assert peak < 12 << 20, peak  # ~1 MB of vectors + a few 1 MiB text chunks, not the 24 MiB text


def test_a_value_too_long_to_be_a_vector_is_refused(tmp_path):
    path = _zip(tmp_path / "result.zip", '{"a": [' + "0, " * 800_000 + "0]}")
    (problem,) = S.validate(path)
    assert "is over 1048576 characters" in problem


def test_evaluate_refuses_257_d_vectors_with_the_problem_list(tmp_path, capsys):
    ids = ["a", "b", "c"]
    path = _zip(tmp_path / "result.zip", json.dumps({v: [1.0 + i] * 257 for i, v in enumerate(ids)}))
    labels = _labels(tmp_path)
    with pytest.raises(InvalidSubmissionError) as info:
        S.evaluate(path, labels)
    assert info.value.problems == [
        "an embedding has 257 values (id a); each must be a list of 1..256 numbers"
    ]
    assert main(["evaluate", "qqbrowser", "--pred", str(path), "--truth", str(labels)]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out) == {"valid": False, "problems": info.value.problems}
    assert "257 values" in out.err


def test_evaluate_names_a_missing_pair_id_and_exits_1(tmp_path, capsys):
    path = S.write(tmp_path / "result.zip", ["a", "b"], np.ones((2, 4), np.float32))
    assert main(["evaluate", "qqbrowser", "--pred", str(path), "--truth", str(_labels(tmp_path))]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == ["1 required id(s) missing, e.g. c"]


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_evaluate_prints_strict_json_with_null_for_an_undefined_spearman(tmp_path, capsys):
    path = S.write(tmp_path / "result.zip", ["a", "b", "c"], np.ones((3, 4), np.float32))  # all cosines 1
    assert main(["evaluate", "qqbrowser", "--pred", str(path), "--truth", str(_labels(tmp_path))]) == 0
    out = capsys.readouterr()

    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")

    assert json.loads(out.out, parse_constant=refuse) == {"spearman": None, "pairs": 3}
    assert "spearman undefined (NaN)" in out.err


def test_validate_without_a_source_of_ids_checks_the_format_and_says_so(tmp_path, capsys):
    path = S.write(tmp_path / "result.zip", ["a"], np.ones((1, 4), np.float32))
    rc, out = _validate_cli(path, capsys)
    assert rc == 0 and out["valid"] and out["required_ids"] is None and "ids not checked" in out["note"]
    rc, out = _validate_cli(path, capsys, "--truth", str(_labels(tmp_path)))
    assert rc == 1 and out["required_ids"] == 3 and out["problems"] == ["2 required id(s) missing, e.g. b"]


def test_vmm_validate_on_a_result_zip_imports_no_torch(tmp_path):
    path = S.write(tmp_path / "result.zip", ["a", "b", "c"], np.ones((3, 4), np.float32))
    labels = _labels(tmp_path)
    code = (
        "import sys\n"
        "from vmmlib.app.cli import main\n"
        f"rc = main(['validate', 'qqbrowser', {str(path)!r}, '--truth', {str(labels)!r}])\n"
        "rc += main(['validate', 'qqbrowser', " + repr(str(path)) + "])\n"
        "print('torch' in sys.modules, rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False 0"

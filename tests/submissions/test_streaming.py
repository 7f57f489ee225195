"""Issue 16.6: validators stream, and streaming changes no answer.

`IdCounter` counts ids exactly whether they stay in memory or spill to disk; `validate` of qqbrowser
and wbdc gives the same problem lines with a tiny in-memory budget (everything spilled) as with the
default one. The memory figures themselves are in benchmarks/bench_validate_memory.py and, at a tiny
size, in the hostile test's RSS bound (entry validate.qqbrowser.memory).
"""

import json
import random
import zipfile

import pytest

from vmmlib.metrics.qqbrowser import read_label_tsv
from vmmlib.submissions import _ids
from vmmlib.submissions import qqbrowser as Q
from vmmlib.submissions import wbdc as W
from vmmlib.submissions._ids import IdCounter


def _reference(seq):
    valid_seen, first, repeats = set(), {}, {}
    for n, (key, valid) in enumerate(seq):
        first.setdefault(key, n)
        if key in valid_seen:
            r = repeats.setdefault(key, [n, 0])
            r[1] += 1
        elif valid:
            valid_seen.add(key)
    return {k: (first[k], *repeats.get(k, (None, 0))) for k in first}


@pytest.mark.parametrize("in_memory", [0, 7, 10_000])
def test_id_counter_is_exact_in_memory_and_spilled(in_memory):
    rng = random.Random(16)
    seq = [(f'k{rng.randrange(300)}\n" \\é\ud800', rng.random() < 0.8) for _ in range(3000)]
    with IdCounter(max_in_memory=in_memory, buckets=5) as counter:
        for key, valid in seq:
            counter.add(key, valid)
        got = {c.key: (c.first, c.repeat, c.repeats) for c in counter.counts()}
        repeated = {c.key: (c.first, c.repeat, c.repeats) for c in counter.counts(repeated_only=True)}
    assert got == _reference(seq)
    assert repeated == {k: v for k, v in got.items() if v[2]}


@pytest.fixture
def spill_everything(monkeypatch):
    monkeypatch.setattr(_ids.IdCounter.__init__, "__defaults__", (1, 3))


QQ_TEXTS = [
    '{"a": [1.0, 2.0], "b": [1, 0], "a": [3.0, 4.0], "c": ["x"], "b": [1, 2, 3], "c": [1, 1]}',
    '{"a": {"x": 1}, "a": [1, 0], "b": [NaN, 0], "a": [2, 2]}',
    '{"x": [1], "y": [1, 2], "z": [1, 2, 3]}',
]


@pytest.mark.parametrize("text", QQ_TEXTS)
def test_qqbrowser_validate_spilled_gives_the_same_problems_as_load(tmp_path, text, spill_everything):
    path = tmp_path / "result.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("result.json", text)
    expected = Q.load(path, ["a", "q"])[1]  # keeps every vector: the old behaviour
    assert expected and Q.validate(path, ["a", "q"]) == expected


def test_wbdc_validate_spilled_gives_the_same_problems(tmp_path, monkeypatch):
    rows = [f"{100 + i % 40},{'0000' if i % 7 else '9999'}" for i in range(120)] + ["", "bad line"]
    path = tmp_path / "result.csv"
    path.write_text("\n".join(rows) + "\n")
    required = [str(v) for v in range(120, 150)]
    expected = W.validate(path, required)
    monkeypatch.setattr(_ids.IdCounter.__init__, "__defaults__", (1, 3))
    assert W.validate(path, required) == expected
    assert any("40 duplicate id(s): 100, 101, 102, 103, 104, … (40 in all)" in p for p in expected)
    assert any("20 id(s) not in the test set: 100, 101, 102, 103, 104, … (20 in all)" in p for p in expected)


def test_wbdc_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "result.csv"
    path.write_bytes(b"111,0000\n2\xff2,0100\n")
    assert f"{path}:2: not valid UTF-8 (byte 0xff); the official reader fails" in W.validate(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-1e999", "high"])
def test_label_tsv_refuses_a_relevance_that_is_not_a_finite_number(tmp_path, value):
    path = tmp_path / "label.tsv"
    path.write_text(f"a\tb\t0.5\na\tc\t{value}\n")
    with pytest.raises(ValueError, match=rf"label.tsv: line 2: relevance '{value}' is not"):
        read_label_tsv(path)


def test_wbdc_truth_refuses_entries_that_are_not_objects_and_repeated_ids(tmp_path):
    path = tmp_path / "labeled.json"
    path.write_text(json.dumps([{"id": "1", "category_id": "0000"}, 5]))
    with pytest.raises(ValueError, match=r"labeled.json: entry 1: an annotation must be an object"):
        W.read_truth(path)
    path.write_text(json.dumps([{"id": "1", "category_id": "0000"}, {"id": "1", "category_id": "0100"}]))
    with pytest.raises(ValueError, match=r"entry 1: id 1 appears twice"):
        W.read_truth(path)

"""WBDC `result.csv`: write/read, every problem the official checker trips on, scoring against the truth."""

import json
import subprocess
import sys

import pytest

from vmmlib.io.wbdc_categories import CATEGORY_IDS
from vmmlib.submissions import InvalidSubmissionError, get_format
from vmmlib.submissions import wbdc as S

TRUTH = {"111": "0000", "222": "0100", "333": "2223", "444": "0001"}


@pytest.fixture
def truth(tmp_path):
    entries = [{"id": v, "category_id": c, "title": "标题", "asr": "", "ocr": []} for v, c in TRUTH.items()]
    path = tmp_path / "annotations" / "labeled.json"
    path.parent.mkdir()
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return path


def test_write_and_read_round_trip_without_a_header(tmp_path):
    path = S.write(tmp_path / "result.csv", ["111", "222"], ["0000", 9])  # 'LLSS' or lv2 id
    assert path.read_text() == "111,0000\n222,0100\n"
    assert S.read(path) == {"111": "0000", "222": "0100"}
    with pytest.raises(ValueError, match="duplicate"):
        S.write(tmp_path / "x.csv", ["1", "1"], ["0000", "0000"])
    with pytest.raises(ValueError, match="bad category '9999'"):
        S.write(tmp_path / "x.csv", ["1"], ["9999"])


def test_a_valid_file_has_no_problems(tmp_path, truth):
    path = S.write(tmp_path / "result.csv", list(TRUTH), list(TRUTH.values()))
    assert S.validate(path, list(TRUTH)) == []
    assert S.validate(path) == []


@pytest.mark.parametrize(
    "content, expected",
    [
        ("id,category_id\n111,0000\n222,0100\n333,2223\n444,0001\n", "header line"),
        (
            "111,0000\n111,0100\n333,2223\n444,0001\n",
            "duplicate id(s): 111",
        ),  # official: passes the count check
        ("111,0000\n222,0100\n333,2223\n", "missing: 444"),
        ("111,0000\n222,0100\n333,2223\n444,0001\n999,0000\n", "not in the test set: 999"),
        ("111,0000\n222,0199\n333,2223\n444,0001\n", "unknown category id (222:'0199')"),
        ("111,0000\n222;0100\n333,2223\n444,0001\n", ":2: expected 'id,category_id'"),
        ("111,0000\n\n222,0100\n333,2223\n444,0001\n", ":2: expected 'id,category_id', got an empty line"),
        ("\ufeff111,0000\n222,0100\n333,2223\n444,0001\n", "byte-order mark"),
    ],
)
def test_validate_reports_each_problem_the_official_checker_would_trip_on(tmp_path, content, expected):
    path = tmp_path / "result.csv"
    path.write_text(content, encoding="utf-8")
    problems = S.validate(path, list(TRUTH))
    assert problems and any(expected in p for p in problems), problems


def test_evaluate_validates_first_then_scores_the_official_f1_mean(tmp_path, truth):
    good = S.write(tmp_path / "good.csv", list(TRUTH), list(TRUTH.values()))
    assert S.evaluate(good, truth) == pytest.approx(
        {
            **dict.fromkeys(
                [
                    "lv1_acc",
                    "lv2_acc",
                    "lv1_f1_micro",
                    "lv1_f1_macro",
                    "lv2_f1_micro",
                    "lv2_f1_macro",
                    "mean_f1",
                ],
                1.0,
            ),
            "videos": 4.0,
        }
    )
    partly = S.write(
        tmp_path / "partly.csv", list(TRUTH), ["0000", "0100", "2223", "0000"]
    )  # 0001 → sibling 0000
    scores = S.evaluate(partly, truth)
    assert scores["lv1_f1_micro"] == 1.0 and scores["lv2_f1_micro"] == pytest.approx(0.75)
    assert scores["lv2_f1_macro"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)
    bad = tmp_path / "bad.csv"
    bad.write_text("111,0000\n111,0000\n")
    with pytest.raises(InvalidSubmissionError, match="duplicate") as err:
        S.evaluate(bad, truth)
    assert any("missing" in p for p in err.value.problems)
    csv_truth = S.write(
        tmp_path / "truth.csv", list(TRUTH), list(TRUTH.values())
    )  # the organisers' CSV truth
    assert S.evaluate(good, csv_truth)["mean_f1"] == 1.0


def test_required_ids_from_a_truth_file_or_a_data_folder(tmp_path, truth):
    assert S.required_ids(truth=truth) == list(TRUTH)
    data_dir = truth.parent.parent
    (data_dir / "annotations" / "test_a.json").write_text(json.dumps([{"id": "7"}, {"id": "8"}]))
    assert S.required_ids(data_dir=data_dir) == ["7", "8"]
    assert S.required_ids(data_dir=data_dir, split="labeled") == list(TRUTH)
    assert S.required_ids() is None
    with pytest.raises(ValueError, match="test_b.json"):
        S.required_ids(data_dir=data_dir, split="test_b")


def test_the_module_is_registered_and_imports_no_torch():
    assert get_format("wbdc") is S
    code = "import sys, vmmlib.submissions.wbdc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert len(CATEGORY_IDS) == 200

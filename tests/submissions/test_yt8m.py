"""`vmmlib.submissions.yt8m`: the Kaggle `Class,Segments` CSV and video-level predictions (issue 9, cases 4, 5)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vmmlib.app.cli import main
from vmmlib.data.yt8m.sample import write_yt8m_sample
from vmmlib.metrics.yt8m import read_kaggle_csv, read_segment_truth, segment_map
from vmmlib.submissions import InvalidSubmissionError
from vmmlib.submissions import yt8m as S


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    sizes = dict(videos=4, validate_videos=8, test_videos=2, train_shards=1, validate_shards=2, test_shards=1)
    return write_yt8m_sample(tmp_path_factory.mktemp("yt8m") / "data", seed=3, **sizes)


@pytest.fixture(scope="module")
def truth(root):
    from vmmlib.data.yt8m.reader import read_frame_level, split_files

    videos = list(read_frame_level(split_files(root, "frame/validate")))
    return read_segment_truth(
        *[[v[k] for v in videos] for k in ("id", "segment_start_times", "segment_labels", "segment_scores")]
    )


def _csv(path, rows: dict):
    path.write_text("Class,Segments\n" + "".join(f"{c},{' '.join(s)}\n" for c, s in rows.items()))
    return path


def test_a_segment_listed_many_times_is_invalid_and_not_scored(root, truth, tmp_path, capsys):
    segment, label = next(k for k, v in truth.items() if v > 0)
    rows = {c: [] for c in S.required_ids(data_dir=root)}
    once = S.write(tmp_path / "once.csv", {**rows, label: [segment]})
    assert 0 < S.evaluate(once, root)["segment_map"] <= 1.0
    repeated = S.write(tmp_path / "repeated.csv", {**rows, label: [segment] * 50})
    assert segment_map(read_kaggle_csv(repeated), truth) > 1  # what the official script would print
    with pytest.raises(InvalidSubmissionError) as info:
        S.evaluate(repeated, root)
    row = sorted(rows).index(label) + 2
    assert (
        f"line {row}: class {label} lists a segment more than once (e.g. {segment!r})" in info.value.problems
    )
    assert main(["evaluate", "yt8m", "--pred", str(repeated), "--truth", str(root)]) == 1
    assert json.loads(capsys.readouterr().out)["valid"] is False


def test_evaluate_checks_the_whitelist_of_a_data_folder_and_prints_strict_json(root, truth, tmp_path, capsys):
    classes = S.required_ids(data_dir=root)
    assert len(classes) == 1000 and S.required_ids() is None
    partial = _csv(tmp_path / "partial.csv", {classes[0]: []})
    assert main(["evaluate", "yt8m", "--pred", str(partial), "--truth", str(root)]) == 1
    assert "999 rated class(es) missing" in json.loads(capsys.readouterr().out)["problems"][-1]
    unrated = next(c for c in classes if c not in {c for (_, c), v in truth.items() if v > 0})
    empty = S.write(tmp_path / "empty.csv", {unrated: []})  # no submitted class has a positive: undefined
    shards = str(root / "frame" / "validate" / "*.tfrecord")  # shards only: no whitelist to check against
    assert main(["evaluate", "yt8m", "--pred", str(empty), "--truth", shards]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"invalid JSON {name}"))
    assert out["segment_map"] is None and out["classes_scored"] == 0


@pytest.mark.parametrize(
    "row, problem",
    [
        ("3,Ab12:\u0665", "line 2: segment id 'Ab12:٥' is not 'video_id:start'"),
        (
            "\u00b2,Ab12:5",
            "line 2: expected 'class_id,segment ids' (ASCII digits, no spaces), got '²,Ab12:5'",
        ),
        ("3,Ab12:" + "5" * 5000, "line 2: segment id 'Ab12:" + "5" * 35 + "' is not 'video_id:start'"),
        ("3,Ab12:0  Cd34:5", "line 2: segment id '' is not 'video_id:start'"),
        ("3,Ab12:05", "line 2: segment id 'Ab12:05' is not 'video_id:start'"),
        ("3,Ab\u00e912:5", "line 2: segment id 'Abé12:5' is not 'video_id:start'"),
        ("3861" + "0" * 3 + ",Ab12:5", "line 2: class 3861000 is outside the vocabulary [0, 3862)"),
        ("3,Ab12:5 Ab12:5", "line 2: class 3 lists a segment more than once (e.g. 'Ab12:5')"),
    ],
)
def test_each_bad_row_is_one_problem_line_and_never_a_python_error(tmp_path, capsys, row, problem):
    path = tmp_path / "sub.csv"
    path.write_text(f"Class,Segments\n{row}\n", encoding="utf-8")
    (got,) = S.validate(path)
    assert got.startswith(problem), got
    assert main(["validate", "yt8m", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == [got]


def test_validate_without_a_whitelist_checks_the_format_and_says_ids_were_not_checked(tmp_path, capsys):
    path = S.write(tmp_path / "sub.csv", {3: ["Ab12:0", "Cd34:5"], 9: []})
    assert main(["validate", "yt8m", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] and out["required_ids"] is None and "ids not checked" in out["note"]


def test_a_broken_file_is_summarised_in_a_bounded_problem_list(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("Class,Segments\n" + "".join(f"{c},x\n" for c in range(100)))
    problems = S.validate(path)
    assert len(problems) == S.MAX_PROBLEM_LINES + 1 and problems[-1] == "... and 80 more problem(s)"


def test_video_level_predictions_with_repeated_ids_or_nan_or_bad_numbers_are_invalid(root, tmp_path, capsys):
    rows = "VideoId,LabelConfidencePairs\nv1,3 0.5 7 0.25\n"
    cases = {
        "v1,3 0.5\n": "1 video id(s) repeat, e.g. 'v1'",
        "v2,3 nan\n": "is not 'label score'",
        "v2,\u00b2 0.5\n": "is not 'label score'",
        "v2,3 \u0665\n": "is not 'label score'",
        "v2,3 1e999\n": "1 video(s) have NaN or inf scores",
        "v2,9999 0.5\n": "is not 'label score'",
    }
    good = tmp_path / "good.csv"
    good.write_text(rows)
    assert S.validate(good) == [] and S.is_video_level(good)
    for extra, problem in cases.items():
        path = tmp_path / "bad.csv"
        path.write_text(rows + extra)
        (got,) = S.validate(path)
        assert problem in got, (extra, got)
        assert main(["evaluate", "yt8m", "--pred", str(path), "--truth", str(root)]) == 1
        capsys.readouterr()
    np.savez(tmp_path / "p.npz", ids=np.array(["a", "a"]), predictions=np.zeros((2, 3862), np.float32))
    assert S.validate(tmp_path / "p.npz") == ["1 video id(s) repeat, e.g. 'a'"]


def test_an_overlong_line_is_one_problem_and_is_not_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_LINE_CHARS", 64)
    path = S.write(tmp_path / "sub.csv", {3: [f"Ab12:{5 * k}" for k in range(40)], 9: ["Ab12:0"]})
    assert S.validate(path) == ["line 2: longer than 64 characters"]


def test_vmm_validate_on_a_csv_imports_no_torch(tmp_path):
    path = S.write(tmp_path / "sub.csv", {3: ["Ab12:0"]})
    code = f"import sys\nfrom vmmlib.app.cli import main\nrc = main(['validate', 'yt8m', {str(path)!r}])\nprint('torch' in sys.modules, rc)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False 0", done.stderr

"""avfusion prediction files: rankings and answers as jsonl or csv, refused when invalid, scored as ALPRO."""

import json

import numpy as np
import pytest

from vmmlib.submissions import InvalidSubmissionError, get_format

F = get_format("avfusion")
CAPTIONS = [("a red square", "v0"), ("a blue box", "v1"), ("green block", "v2"), ("red again", "v0")]
QUESTIONS = [
    ("what colour", "red", "v0", "what"),
    ("where", "left", "v0", "where"),
    ("what colour", "blue", "v1", "what"),
]


@pytest.fixture
def truth(tmp_path):
    ret = tmp_path / "retrieval.jsonl"
    ret.write_text("".join(json.dumps({"caption": c, "clip_name": v}) + "\n" for c, v in CAPTIONS))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": a, "video_id": v, "answer_type": t}) + "\n"
                          for q, a, v, t in QUESTIONS))  # fmt: skip
    return ret, qa


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_rankings_round_trip_and_score_as_alpro_with_1_indexed_ranks(tmp_path, truth, suffix):
    rankings = [["v0", "v1", "v2"], ["v0", "v1", "v2"], ["v2", "v0", "v1"], ["v1", "v2", "v0"]]
    path = F.write_rankings(tmp_path / f"sub.{suffix}", [0, 1, 2, 3], rankings)
    assert F.read(path) == dict(enumerate(rankings))
    scores = F.evaluate(path, truth[0])
    ranks = np.array([1, 2, 1, 3])  # the ground truth's 1-indexed position in each ranking
    assert scores["r1"] == pytest.approx(100 * np.mean(ranks <= 1))
    assert scores["r5"] == scores["r10"] == 100.0
    assert scores["medianR"] == np.median(ranks) and scores["meanR"] == ranks.mean()
    assert scores["score"] == pytest.approx((50 + 100 + 100) / 3)


def test_a_truncated_ranking_misses_its_ground_truth_and_drops_median_rank(tmp_path, truth):
    path = F.write_rankings(tmp_path / "sub.jsonl", [0, 1, 2, 3], [["v1"], ["v1"], ["v2"], ["v0"]])
    scores = F.evaluate(path, truth[0])
    assert scores["r1"] == 75.0 and "medianR" not in scores


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_answers_score_overall_and_per_type(tmp_path, truth, suffix):
    path = F.write_answers(tmp_path / f"answers.{suffix}", [0, 1, 2], ["red", "up", "blue"])
    scores = F.evaluate(path, truth[1])
    assert scores["overall_acc"] == pytest.approx(200 / 3) == scores["score"]
    assert scores["what_acc"] == 100.0 and scores["where_acc"] == 0.0 and scores["who_acc"] == 0.0


def _lines(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


@pytest.mark.parametrize(
    "lines, problem",
    [
        ([{"text_id": True, "video_ids": ["v0"]}], "text_id not an int"),
        ([{"text_id": 0, "video_ids": ["v0"]}, {"text_id": 0, "video_ids": ["v1"]}], "more than one line"),
        ([{"text_id": 0, "video_ids": ["v0", "v0"]}], "repeated video ids"),
        ([{"text_id": 0, "video_ids": []}], "non-empty list"),
        (["{not json"], "not JSON"),
        ([{"text_id": 0, "video_ids": ["v0"]}, {"question_id": 1, "answer": "x"}], "mixed kinds"),
        ([{"question_id": 0, "answer": 3}], "answer not a string"),
        ([{"video": 1}], "without text_id or question_id"),
    ],
)
def test_invalid_files_are_refused_with_the_reason(tmp_path, lines, problem):
    problems = F.validate(_lines(tmp_path / "bad.jsonl", lines))
    assert any(problem in p for p in problems), problems
    with pytest.raises(InvalidSubmissionError):
        F.read(tmp_path / "bad.jsonl")


def test_missing_and_unknown_ids_and_videos_outside_the_gallery_are_refused(tmp_path, truth):
    path = F.write_rankings(tmp_path / "sub.jsonl", [0, 1, 7], [["v0"], ["v1"], ["v9"]])
    problems = F.validate(path, F.required_ids(truth=truth[0]))
    assert any("without a line" in p for p in problems) and any(
        "not in the annotation" in p for p in problems
    )
    with pytest.raises(InvalidSubmissionError, match="outside the gallery"):
        F.evaluate(path, truth[0])


def test_required_ids_of_a_data_folder_hold_both_kinds_and_each_file_is_checked_against_its_own(
    tmp_path, truth
):
    (tmp_path / "retrieval").mkdir()
    (tmp_path / "qa").mkdir()
    truth[0].rename(tmp_path / "retrieval" / "test.jsonl")
    truth[1].rename(tmp_path / "qa" / "test.jsonl")
    required = F.required_ids(data_dir=tmp_path, split="test")
    assert sorted(required) == [("question", i) for i in range(3)] + [("text", i) for i in range(4)]
    answers = F.write_answers(tmp_path / "qa.csv", [0, 1, 2], ["a", "b", "c"])
    assert F.validate(answers, required) == []
    assert F.required_ids() is None


def test_a_qa_file_scored_against_a_retrieval_annotation_is_refused(tmp_path, truth):
    path = F.write_answers(tmp_path / "answers.jsonl", [0, 1, 2, 3], ["a", "b", "c", "d"])
    with pytest.raises(InvalidSubmissionError, match="question predictions"):
        F.evaluate(path, truth[0])

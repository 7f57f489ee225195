"""MUGE submission jsonl: scores equal Chinese-CLIP's own evaluators (both directions, both key
conventions), its quirks refused, every official check reported one line per kind."""

import importlib.util
import json

import numpy as np
import pytest

from vmmlib.metrics.muge import recall_at_k, transpose_truth
from vmmlib.submissions import InvalidSubmissionError, get_format
from vmmlib.submissions.muge import evaluate, read, read_truth, required_ids, validate, write

HAS_CN_CLIP = importlib.util.find_spec("cn_clip") is not None
needs_cn_clip = pytest.mark.skipif(not HAS_CN_CLIP, reason="cn-clip (the peer) is not installed")


def _truth_file(path, truth):
    path.write_text(
        "".join(json.dumps({"text_id": t, "text": "文", "image_ids": ids}) + "\n" for t, ids in truth.items())
    )
    return path


def _random_case(seed, n_texts=40, n_images=60):
    rng = np.random.default_rng(seed)
    truth = {
        int(1000 + t): [int(i) for i in rng.choice(n_images, rng.integers(1, 3), replace=False)]
        for t in range(n_texts)
    }
    preds = {t: [int(i) for i in rng.permutation(n_images)[:10]] for t in truth}
    for t in list(truth)[: n_texts // 3]:  # plant some hits at random ranks
        if truth[t][0] not in preds[t]:
            preds[t][int(rng.integers(10))] = truth[t][0]
    return truth, preds


@needs_cn_clip
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_chinese_clips_evaluator(tmp_path, seed):
    from cn_clip.eval.evaluation import compute_score

    truth, preds = _random_case(seed)
    gold = _truth_file(tmp_path / "valid_texts.jsonl", truth)
    pred = write(tmp_path / "pred.jsonl", list(preds), list(preds.values()))
    mean_recall, r1, r5, r10 = compute_score(str(gold), str(pred))
    scores = evaluate(pred, gold)
    assert scores == pytest.approx(
        {"score": mean_recall, "mean_recall": mean_recall, "r1": r1, "r5": r5, "r10": r10}
    )
    assert recall_at_k(preds, truth)["r10"] == pytest.approx(r10 / 100)
    # the Tianchi key convention scores the same
    tianchi = write(tmp_path / "tianchi.jsonl", list(preds), list(preds.values()), keys="query_id")
    assert '"query_id"' in tianchi.read_text() and evaluate(tianchi, gold) == pytest.approx(scores)


@needs_cn_clip
def test_image_to_text_scores_equal_chinese_clips_tr_evaluator(tmp_path):
    from cn_clip.eval import evaluation_tr

    truth, _ = _random_case(4, n_texts=60, n_images=20)
    tr_truth = transpose_truth(truth)
    rng = np.random.default_rng(5)
    preds = {img: [int(t) for t in rng.permutation(list(truth))[:10]] for img in tr_truth}
    gold = _truth_file(tmp_path / "valid_texts.jsonl", truth)
    tr_gold = tmp_path / "valid_texts.tr.jsonl"
    tr_gold.write_text(
        "".join(json.dumps({"image_id": i, "text_ids": t}) + "\n" for i, t in tr_truth.items())
    )
    pred = write(tmp_path / "pred_tr.jsonl", list(preds), list(preds.values()), keys="image_id")
    mean_recall, r1, r5, r10 = evaluation_tr.compute_score(str(tr_gold), str(pred))
    expected = {"score": mean_recall, "mean_recall": mean_recall, "r1": r1, "r5": r5, "r10": r10}
    assert evaluate(pred, gold) == pytest.approx(expected)  # transposed from the texts file
    assert evaluate(pred, tr_gold) == pytest.approx(expected)


@needs_cn_clip
def test_we_refuse_what_the_official_evaluator_silently_accepts(tmp_path):
    from cn_clip.eval.evaluation import compute_score

    truth = {1: [10], 2: [20]}
    gold = _truth_file(tmp_path / "valid_texts.jsonl", truth)
    row = list(range(10, 20))
    cases = {
        "unknown": [
            {"text_id": 1, "image_ids": row},
            {"text_id": 2, "image_ids": row},
            {"text_id": 3, "image_ids": row},
        ],
        "repeated": [
            {"text_id": 1, "image_ids": row},
            {"text_id": 2, "image_ids": row},
            {"text_id": 2, "image_ids": row[::-1]},
        ],
        "bool id": [{"text_id": 1, "image_ids": row}, {"text_id": 2, "image_ids": [True] + row[1:]}],
    }
    expected = {
        "unknown": "not reference queries",
        "repeated": "more than one line",
        "bool id": "not all ints",
    }
    for name, lines in cases.items():
        pred = tmp_path / f"{name}.jsonl"
        pred.write_text("".join(json.dumps(x) + "\n" for x in lines))
        compute_score(str(gold), str(pred))  # upstream scores it without a word
        problems = validate(pred, required_ids=[1, 2])
        assert len(problems) == 1 and expected[name] in problems[0], (name, problems)
        with pytest.raises(InvalidSubmissionError):
            evaluate(pred, gold)


def test_validate_reports_every_official_check_one_line_per_kind(tmp_path):
    row = list(range(10))
    lines = [
        json.dumps({"text_id": 1, "image_ids": row}),
        "",  # a blank line: upstream's json.loads("") fails
        json.dumps({"text_id": "2", "image_ids": row}),
        json.dumps({"text_id": 3, "image_ids": row[:9]}),
        json.dumps({"text_id": 4, "image_ids": row[:9] + [0]}),
        json.dumps({"text_id": 5, "image_ids": "0,1,2"}),
        json.dumps({"text_id": 6, "image_ids": [str(x) for x in row]}),
        json.dumps({"text_id": 7, "image_ids": row[:9] + [1.5]}),
        json.dumps({"query_id": 8, "item_ids": row}),
        json.dumps({"image_ids": row}),
        json.dumps({"text_id": False, "image_ids": row}),
    ]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    problems = validate(pred, required_ids=[1, 2, 9])
    text = "\n".join(problems)
    for kind in (
        "line is not JSON: 1 time(s), first line 2",
        "text_id not an int: 2 time(s), first line 3",
        "not 10 image_ids: 1 time(s), first line 4",
        "duplicate image_ids",
        "image_ids missing or not a list",
        "image_ids not all ints: 2 time(s)",
        "mixed key conventions: 1 time(s), first line 9",
        "line without text_id",
        "reference queries without a line: 1 time(s), first 2 missing, e.g. [2, 9]",
    ):
        assert kind in text, kind
    assert validate(tmp_path / "none.jsonl") == [f"submission file {tmp_path / 'none.jsonl'} not found"]
    with pytest.raises(InvalidSubmissionError, match="not JSON"):
        read(pred)


def test_write_read_round_trip_required_ids_and_registry(tmp_path):
    gold = _truth_file(tmp_path / "valid_texts.jsonl", {7: [1], 8: [2, 3]})
    pred = write(tmp_path / "p.jsonl", [7, 8], [list(range(10)), list(range(10, 20))])
    assert read(pred) == {7: list(range(10)), 8: list(range(10, 20))}
    assert validate(pred, required_ids(truth=gold)) == []
    assert required_ids(data_dir=tmp_path) == [7, 8] and required_ids() is None
    assert read_truth(gold) == {7: [1], 8: [2, 3]}
    with pytest.raises(ValueError, match="10 distinct"):
        write(tmp_path / "bad.jsonl", [7], [[1] * 10])
    with pytest.raises(ValueError, match="valid choices"):
        write(tmp_path / "bad.jsonl", [7], [list(range(10))], keys="qid")
    assert get_format("muge").evaluate is evaluate

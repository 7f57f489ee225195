import json
import zipfile

import numpy as np
import pytest

from vmmlib.cli import main
from vmmlib.metrics import qq_spearman
from vmmlib.tasks import get_task, list_tasks

T = get_task("qqbrowser")


def _labels(tmp_path):
    path = tmp_path / "label.tsv"
    path.write_text("a\tb\t0.9\na\tc\t0.1\nb\tc\t0.3\nc\td\t0.5\n")
    return path


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'qq'; valid choices: " + ", ".join(list_tasks())):
        get_task("qq")


def test_submission_is_the_official_json_in_a_zip_with_float16_values(tmp_path):
    emb = np.array([[1 / 3, 2.0], [0.1, -7.5]], np.float32)
    path = T.write_submission(tmp_path / "result.zip", ["1", "2"], emb)
    with zipfile.ZipFile(path) as zf:
        assert (
            zf.namelist() == ["result.json"]
            and zf.getinfo("result.json").compress_type == zipfile.ZIP_DEFLATED
        )
        raw = json.loads(zf.read("result.json"))
    assert raw["1"] == [float(np.float16(1 / 3)), 2.0]
    assert raw["2"] == [float(np.float16(0.1)), -7.5]
    back = T.read_submission(path)
    assert set(back) == {"1", "2"} and back["1"].dtype == np.float32
    with pytest.raises(ValueError, match="≤256"):
        T.write_submission(tmp_path / "x.zip", ["1"], np.zeros((1, 257), np.float32))
    with pytest.raises(ValueError, match="not finite in float16.*id 2"):
        T.write_submission(tmp_path / "x.zip", ["1", "2"], np.array([[1.0], [70000.0]], np.float32))
    assert not (tmp_path / "x.zip").exists()


def test_validate_reports_missing_ids_bad_shapes_and_non_finite_values(tmp_path):
    ok = T.write_submission(tmp_path / "ok.zip", ["a", "b"], np.ones((2, 4), np.float32))
    assert T.validate_submission(ok, ["a", "b"]) == []
    assert "required id(s) missing, e.g. c" in T.validate_submission(ok, ["a", "b", "c"])[0]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("result.json", json.dumps({"a": [1.0] * 300, "b": [float("nan")] * 300}))
    problems = " | ".join(T.validate_submission(bad, ["a", "b"]))
    assert "300" in problems and "NaN" in problems
    (tmp_path / "notzip.zip").write_text("[1, 2]")
    assert "JSON must be an object" in T.validate_submission(tmp_path / "notzip.zip", ["a"])[0]


def test_evaluate_cli_prints_the_official_spearman(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d"]
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    emb[3] = 0  # a zero vector has cosine 0, as sklearn computes it
    sub = T.write_submission(tmp_path / "result.zip", ids, emb)
    assert main(["evaluate", "qqbrowser", "--pred", str(sub), "--truth", str(_labels(tmp_path))]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = qq_spearman(T.read_submission(sub), T.qq.read_pairs(tmp_path / "label.tsv"))
    assert printed == {"spearman": expected, "pairs": 4}


def test_evaluate_cli_names_the_missing_id(tmp_path, capsys):
    sub = T.write_submission(tmp_path / "result.zip", ["a", "b", "c"], np.ones((3, 4), np.float32))
    assert main(["evaluate", "qqbrowser", "--pred", str(sub), "--truth", str(_labels(tmp_path))]) == 2
    assert "d NOT found" in capsys.readouterr().err


def test_validate_cli_checks_every_id_of_a_split(qq_sample, tmp_path, capsys):
    ids = T.required_ids_for(data_dir=qq_sample, split="test_a")
    assert len(ids) == 10
    sub = T.write_submission(tmp_path / "result.zip", ids[:-1], np.ones((9, 256), np.float32))
    assert main(["validate", "qqbrowser", str(sub), "--data-dir", str(qq_sample)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["valid"] and ids[-1] in out["problems"][0]


def test_objective_with_an_unknown_term_lists_the_valid_terms(qq_sample):
    data = T.load(qq_sample)
    with pytest.raises(ValueError, match="unknown objective term.*mlmm.*valid terms: tag, mlm, nce, distill"):
        T.pretrain_objective(data, {"mlmm": 1.0})
    with pytest.raises(ValueError, match="valid choices: asl, asl_seed, bce"):
        T.finetune_objective({"mse": 1}, tag_loss="focal")


def test_oof_score_of_a_weighted_sum_aligns_pairs_by_index(qq_sample):
    data = T.load(qq_sample)
    rng = np.random.default_rng(1)
    n = len(data.pairs)
    oof = {
        "pair": np.arange(n)[::-1].copy(),
        "fold": np.zeros(n),
        "emb_a": rng.normal(size=(n, 4)),
        "emb_b": rng.normal(size=(n, 4)),
    }
    shuffled = {k: v[::-1].copy() for k, v in oof.items()}
    single = T.oof_score([oof], [1.0], data)
    assert T.oof_score([oof, shuffled], [0.5, 0.5], data) == pytest.approx(single)
    bad = dict(shuffled, pair=np.arange(n) + 1)
    with pytest.raises(ValueError, match="out-of-fold pairs differ"):
        T.oof_score([oof, bad], [0.5, 0.5], data)

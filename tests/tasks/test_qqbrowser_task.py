import json

import numpy as np
import pytest
import torch

from vmmlib.app.cli import main
from vmmlib.data.qqbrowser.reader import read_pairs
from vmmlib.metrics import qq_spearman
from vmmlib.objectives import make_objective
from vmmlib.submissions import qqbrowser as result_zip
from vmmlib.tasks import get_task, list_tasks

T = get_task("qqbrowser")


def _labels(tmp_path):
    path = tmp_path / "label.tsv"
    path.write_text("a\tb\t0.9\na\tc\t0.1\nb\tc\t0.3\nc\td\t0.5\n")
    return path


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'qq'; valid choices: " + ", ".join(list_tasks())):
        get_task("qq")


def test_evaluate_cli_prints_the_official_spearman(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d"]
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    emb[3] = 0  # a zero vector has cosine 0, as sklearn computes it
    sub = result_zip.write(tmp_path / "result.zip", ids, emb)
    assert main(["evaluate", "qqbrowser", "--pred", str(sub), "--truth", str(_labels(tmp_path))]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = qq_spearman(result_zip.read(sub), read_pairs(tmp_path / "label.tsv"))
    assert printed == {"spearman": expected, "pairs": 4}


def test_validate_cli_checks_every_id_of_a_split(qq_sample, tmp_path, capsys):
    ids = result_zip.required_ids(data_dir=qq_sample, split="test_a")
    assert len(ids) == 10 and ids == T.required_ids(T.load(qq_sample), "test_a")
    sub = result_zip.write(tmp_path / "result.zip", ids[:-1], np.ones((9, 256), np.float32))
    assert main(["validate", "qqbrowser", str(sub), "--data-dir", str(qq_sample)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["valid"] and ids[-1] in out["problems"][0]


def test_objective_with_an_unknown_term_or_option_lists_the_valid_ones(qq_sample):
    data = T.load(qq_sample)
    with pytest.raises(ValueError, match="unknown objective term.*mlmm.*valid terms: tag, mlm, nce, distill"):
        make_objective(T.pretrain_objective, T.PRETRAIN_TERMS, data, {"mlmm": 1.0})
    with pytest.raises(ValueError, match="valid choices?: bce, asl, asl_seed"):
        make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"mse": 1}, {"tag_loss": "focal"})
    with pytest.raises(
        ValueError, match="unknown objective option.*tag_los.*valid objective options: tag_loss"
    ):
        make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"mse": 1}, {"tag_los": "asl"})


def test_branch_tag_losses_share_the_tag_weight(qq_sample):
    data = T.load(qq_sample)
    torch.manual_seed(0)
    net = T.build_model(data, "mixnextvlad_qq_tiny", {}, "").eval()  # no dropout: two forwards agree
    batch = torch.utils.data.default_collate([data.split("pointwise")[i] for i in range(4)])
    raw = T.pretrain_objective(data, ("tag",))(net, batch)
    terms = make_objective(T.pretrain_objective, T.PRETRAIN_TERMS, data, {"tag": 2.0})(net, batch)
    assert set(terms) == {"tag", "branch_tag"}
    torch.testing.assert_close(terms["branch_tag"], 2.0 * raw["branch_tag"])


def test_model_options_that_the_data_fixes_are_refused(qq_sample):
    data = T.load(qq_sample)
    with pytest.raises(ValueError, match="num_tags comes from the data"):
        T.build_model(data, "mixnextvlad_qq_tiny", {"num_tags": 5}, "")


def test_oof_scorer_of_a_weighted_sum_aligns_pairs_by_index(qq_sample):
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
    single = T.oof_scorer([oof], data)([1.0])
    assert T.oof_scorer([oof, shuffled], data)([0.5, 0.5]) == pytest.approx(single)
    bad = dict(shuffled, pair=np.arange(n) + 1)
    with pytest.raises(ValueError, match="out-of-fold pairs differ"):
        T.oof_scorer([oof, bad], data)
    assert T.fold_table(oof, data)["cosine"].between(-1, 1).all()


def test_a_real_text_model_folder_brings_its_own_tokenizer(qq_sample, tmp_path):
    """An English BERT-family folder (its own WordPiece vocabulary, not the data's 1,286 tokens)
    tokenises the texts and sizes the model; before, the data's vocabulary clashed with its vocab_size."""
    from transformers import BertTokenizer

    from vmmlib.models import build_text_backbone

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *"abcdefghijklmnopqrstuvwxyz",
        "the",
        "video",
        "##s",
    ]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    build_text_backbone("bert", vocab_size=len(words), hidden_size=32, num_attention_heads=4).save_pretrained(
        tmp_path
    )
    data = T.load(qq_sample, text_model_dir=str(tmp_path))
    assert len(data.tokenizer) == len(words) and data.tokenizer.tokenize("the videos") == [
        "the",
        "video",
        "##s",
    ]
    net = T.build_model(data, "uniter_qq_tiny", {}, str(tmp_path))
    batch = torch.utils.data.default_collate([data.split("pointwise")[i] for i in range(2)])
    assert int(batch["text_ids"].max()) < len(words)
    assert torch.isfinite(net(**{k: v for k, v in batch.items() if torch.is_tensor(v)})["embedding"]).all()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        T.load(qq_sample, text_model_dir=str(tmp_path / "missing"))

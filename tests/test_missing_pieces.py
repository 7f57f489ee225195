"""Every missing piece of a real run is named with the parameter that supplies it."""

import pytest
import torch

from vmmlib.data.tokenize import tokenizer_for
from vmmlib.predict.loop import fold_dirs
from vmmlib.runs import load_arrays
from vmmlib.train.checkpoint import load_weights


def test_a_folder_without_vocab_names_text_model_dir_and_vocab_path(tmp_path):
    # a real WBDC (or QQ Browser) folder ships no vocab.txt; the readers fall back to it (tokenizer_for)
    with pytest.raises(FileNotFoundError, match=r"text_model_dir.*data_options \{\"vocab_path\""):
        tokenizer_for("", tmp_path / "vocab.txt")
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match=r"text_model_dir .*model holds no tokenizer file"):
        tokenizer_for(tmp_path / "model", tmp_path / "vocab.txt")


def test_a_vocab_given_the_documented_way_is_used(tmp_path):
    vocab = tmp_path / "elsewhere.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"视频号比赛分类标签"]) + "\n")
    assert tokenizer_for("", vocab).tokenize("视频分类") == list("视频分类")


def test_missing_run_folders_name_their_parameter(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_dir"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="finetune_dirs"):
        fold_dirs([str(tmp_path / "finetune-fold*")])
    with pytest.raises(FileNotFoundError, match="inference_dirs"):
        load_arrays(tmp_path / "oof.npz")


def test_fold_dirs_are_folders_not_the_files_beside_them(tmp_path):
    (tmp_path / "finetune-fold0").mkdir()
    (tmp_path / "finetune-fold0.ipynb").write_text("{}")  # papermill's output saved next to the run
    assert fold_dirs([str(tmp_path / "finetune-fold*")]) == [tmp_path / "finetune-fold0"]
    (tmp_path / "finetune-fold0").rmdir()
    with pytest.raises(FileNotFoundError, match="finetune_dirs"):
        fold_dirs([str(tmp_path / "finetune-fold*")])

"""The pieces the tasks compose their objectives of (`vmmlib.objectives`): binding, multi-label and
class terms, the teacher lookup, the contrastive chunks."""

import numpy as np
import pytest
import torch

from vmmlib.objectives import objective_of
from vmmlib.objectives.classification import Teacher, class_ce
from vmmlib.objectives.contrastive import batch_chunks
from vmmlib.objectives.losses import tag_bce
from vmmlib.objectives.tagging import branch_loss, multilabel_loss


def test_objective_of_binds_the_options_and_passes_what_fit_adds():
    seen = {}

    def terms(model, batch, backward=None, *, scale):
        seen.update(model=model, backward=backward)
        return {"x": batch * scale}

    objective = objective_of(terms, scale=3.0)
    assert objective("net", torch.tensor(2.0))["x"] == 6.0 and seen == {"model": "net", "backward": None}
    objective("net", torch.tensor(1.0), backward=print)
    assert seen["backward"] is print


def test_multilabel_loss_with_unit_entry_weights_is_the_plain_bce_and_branches_add_up():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 6), (torch.rand(4, 6) > 0.5).float()
    plain = multilabel_loss(logits, labels, "bce")
    assert torch.equal(plain, tag_bce(logits, labels))
    torch.testing.assert_close(multilabel_loss(logits, labels, "bce", torch.ones(4, 6)), plain)
    half = torch.zeros(4, 6)
    half[:, :3] = 1.0  # only the first three classes are rated
    torch.testing.assert_close(
        multilabel_loss(logits, labels, "bce", half), tag_bce(logits[:, :3], labels[:, :3])
    )
    torch.testing.assert_close(branch_loss([logits, logits], labels, "bce"), 2 * plain)


def test_class_ce_ignores_label_minus_100():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    assert class_ce(logits, torch.tensor([0, -100])) == pytest.approx(
        float(class_ce(logits[:1], torch.tensor([0])))
    )


def test_teacher_looks_up_rows_by_id_and_names_its_source_for_a_missing_video():
    teacher = Teacher(np.array([7, 3]), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), source="t.npz")
    torch.testing.assert_close(teacher(["3", "7"]), torch.tensor([[0.2, 0.8], [0.9, 0.1]]))
    with pytest.raises(KeyError, match="t.npz holds no probabilities for video 5 .1 in this batch"):
        teacher(["3", "5"])


def test_batch_chunks_cut_the_clip_inputs_evenly_or_refuse():
    batch = {k: torch.arange(8) for k in ("frames", "frame_mask", "text_ids", "text_mask")} | {
        "id": list("abcdefgh")
    }
    chunks = batch_chunks(batch, 4)
    assert len(chunks) == 4 and set(chunks[0]) == {"frames", "frame_mask", "text_ids", "text_mask"}
    assert chunks[1]["text_ids"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="accumulate=3 must divide the batch size 8"):
        batch_chunks(batch, 3)

"""Task `wbdc`: WeChat Big Data Challenge 2022 short-video classification (seed 001, rank 8).

Data: `vmmlib.data.wbdc.reader` (the real layout: annotation JSON + feature / raw-frame zips),
`vmmlib.data.wbdc.folder` (`load` → `WBDCData`); sample data: `vmmlib.data.wbdc.sample`; models: the
official baseline, rank 8's single stream and dual stream (`vmmlib.models.wbdc_*`); pretraining:
rank 8's MLM / MFM / ITM / ICT / mask-modality and video–text CLIP (`vmmlib.objectives.video_text`)
on the unlabeled (+ labelled) videos; fine-tuning: cross-entropy over the 200 lv2 classes on rank 8's
stratified lv2 folds (`StratifiedKFold(5, shuffle, 802)`), and knowledge distillation from an
ensemble's saved class probabilities (the top team's main step); metric: the official F1-mean
(`vmmlib.metrics.wbdc`); submission: `result.csv` (`vmmlib.submissions.wbdc`).

Distillation: `write_submission` of the ensemble writes, besides `result.csv` and the ensembled test
probabilities (`ensemble_<split>.npz`), `teacher.npz` — the same weighted ensemble of the models'
out-of-fold probabilities of every labelled video (ids, probs) — when the ensemble option
`teacher_dirs` names the 30_inference folders (the `inference_dirs`, in order). A student's
20_finetune then takes `objective_options: {teacher: <ensemble run>/teacher.npz, temperature: T}`
and the `distill` term: KL(teacher^(1/T) ‖ softmax(logits / T)) · T² (Hinton et al., 2015).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vmmlib import dryrun
from vmmlib.data.wbdc import reader as W
from vmmlib.data.wbdc.folder import WBDCData, load  # noqa: F401 (the notebooks call T.load)
from vmmlib.explore import Split, Summary
from vmmlib.io.wbdc_categories import LV2_TO_LV1, NUM_LV1, NUM_LV2, lv2_to_category
from vmmlib.metrics import wbdc as M
from vmmlib.objectives import classification as CL
from vmmlib.objectives import video_text as VT
from vmmlib.objectives.compose import objective_of
from vmmlib.plots import plot_confusion_f1 as plot_fold  # noqa: F401 (the contract name)
from vmmlib.predict.loop import predict_all, predict_batches, tensors
from vmmlib.runs import load_arrays, save_arrays
from vmmlib.tasks import contract

NAME = "wbdc"  # submission: result.csv, id,category_id, no header
METRIC = "mean_f1"  # the official F1-mean: (lv1, lv2) × (micro, macro) F1 averaged
PRETRAIN_METRIC = "pretrain_acc"  # mean held-out accuracy of the pretraining tasks the model has heads for
# The text BERT of every family (rank 8 trains it at 5e-5 while the rest learns at 5e-4, SPEC §4.5),
# and the CLIP vision tower (1e-5 in the seed; one backbone_lr here).
BACKBONE_PREFIXES = ("bert.", "text.", "vision.")
PRETRAIN_TERMS = VT.TERMS  # mlm, mfm, itm, ict, mmm, clip
FINETUNE_TERMS = ("ce", "distill")
TEACHER_FILE = "teacher.npz"  # the ensemble's out-of-fold probabilities of the labelled videos


def summarize(data_dir: Path) -> Summary:
    """A WBDC folder for `explore`: videos per split, frames per video, title/OCR/ASR lengths, the lv2
    long tail over 200 classes, videos per lv1 class, and unreadable feature members."""
    unreadable: Counter = Counter()

    def read(split: str, item) -> tuple[dict, dict]:
        e, feats = item
        vid = str(e["id"])
        try:
            num_frames = len(feats.read(vid)) if feats is not None else 0
        except W.FrameReadError:
            num_frames, unreadable[split] = 0, unreadable[split] + 1
        return (
            {"id": vid, "num_frames": num_frames, "title_len": len(e.get("title") or ""),
             "ocr_len": len(W.ocr_text(e)), "asr_len": len(e.get("asr") or ""), "lv2": W.label_of(e)},
            {"id": vid, "category_id": e.get("category_id", ""), "title": (e.get("title") or "")[:30],
             "ocr": W.ocr_text(e)[:30], "num_frames": num_frames},
        )  # fmt: skip

    def split(name: str, found: dict) -> Split:
        entries = W.read_annotations(found["annotations"])
        feats = W.FeatureZip(found["features"]) if found["features"] else None
        raw = 0 if found["frames"] is None else sum(1 for _ in Path(found["frames"]).glob("*/*.zip"))
        counts = lambda rows: {"unreadable_features": unreadable[name], "raw_frame_videos": raw}  # noqa: E731
        return Split(name, 1 + (feats is not None), ((e, feats) for e in entries), counts)

    def finish(items: pd.DataFrame, splits: pd.DataFrame) -> dict:
        labelled = items[items["lv2"] >= 0]["lv2"]
        counts, lv1 = labelled.value_counts(), Counter(LV2_TO_LV1[labelled.to_numpy()].tolist())
        return {"label_counts": pd.Series([int(counts.get(c, 0)) for c in range(NUM_LV2)], name="videos"),
                "category_counts": pd.Series({f"lv1 {k:02d}": lv1.get(k, 0) for k in range(NUM_LV1)}, name="videos"),
                "targets": labelled.astype(float).rename("lv2 class"), "target_name": "lv2 class id"}  # fmt: skip

    splits = (split(name, found) for name, found in W.check_layout(data_dir).items())
    return Summary(splits, read, finish, ["num_frames", "title_len", "ocr_len", "asr_len"])


# --- model and objectives (the data folder opened for training: `vmmlib.data.wbdc.folder.WBDCData`) ---


def build_model(data: WBDCData, model: str, model_options: dict, text_model_dir: str):
    """The default build (sized by `WBDCData.model_overrides`), single-stream models with their
    pretraining heads and the dual stream with its CLIP temperature unless `model_options` says
    otherwise, so that a pretraining checkpoint and its fine-tuned model have the same parameters
    (weights are loaded strictly)."""
    from vmmlib.models import model_options as valid_options

    heads = {h: True for h in ("pretrain_heads", "clip_head") if h in valid_options(model)}
    return contract.build_model(data, model, {**heads, **(model_options or {})}, text_model_dir)


def pretrain_objective(data: WBDCData, terms: tuple[str, ...], *, mlm_prob: float = 0.3,
                       mfm_prob: float = 0.135, mmm_fraction: float = 0.25, ict_temperature: float = 1.0,
                       seed_masked_tokens_visible: bool = False,
                       seed_mfm_targets_unshuffled: bool = False):  # fmt: skip
    """Rank 8's pretraining terms (SPEC §4.4; `vmmlib.objectives.video_text`), raw.

    Args:
        terms: of `PRETRAIN_TERMS`; rank 8 sums mlm, mfm, itm, ict and mmm with weight 1 (model 1),
            and pretrains with clip alone for model 2.
        seed_masked_tokens_visible, seed_mfm_targets_unshuffled: the seed's two quirks (off).
    """
    return objective_of(VT.video_text_terms, terms=terms, tokens=VT.TokenSpec.from_tokenizer(data.tokenizer),
                        mlm_prob=mlm_prob, mfm_prob=mfm_prob, mmm_fraction=mmm_fraction,
                        ict_temperature=ict_temperature, seed_masked_tokens_visible=seed_masked_tokens_visible,
                        seed_mfm_targets_unshuffled=seed_mfm_targets_unshuffled)  # fmt: skip


def _teacher(path: str | Path) -> CL.Teacher:
    arrays = load_arrays(path)
    if "ids" not in arrays or "probs" not in arrays or arrays["probs"].shape[1:] != (NUM_LV2,):
        raise ValueError(f"{path} is not a teacher file: expected ids (N,) and probs (N, {NUM_LV2})")
    return CL.Teacher(arrays["ids"], arrays["probs"], source=str(path))


def finetune_objective(data: WBDCData, terms: tuple[str, ...], *, teacher: str = "", temperature: float = 2.0,
                       label_smoothing: float = 0.0):  # fmt: skip
    """Fine-tuning terms, raw (`vmmlib.objectives.classification.class_terms`): `ce` (cross-entropy over
    the 200 lv2 classes, as rank 8) and `distill` (`distill_kl` against the ensemble's saved
    probabilities of the same video).

    Args:
        teacher: a `teacher.npz` (ids, probs) written by the ensemble's `write_submission`; needed by
            `distill`, and it must hold every training video.
        temperature: T of the distillation term.
        label_smoothing: of the cross-entropy.
    """
    if "distill" in terms and not teacher:
        raise ValueError("the distill term needs objective_options teacher: <ensemble run>/teacher.npz")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return objective_of(CL.class_terms, terms=terms, label_smoothing=label_smoothing, temperature=temperature,
                        teacher=_teacher(teacher) if "distill" in terms else None)  # fmt: skip


# --- datasets and evaluation -------------------------------------------------------------------------


def pretrain_dataset(data: WBDCData) -> torch.utils.data.Dataset:
    """Every video of the pretraining splits (unlabeled + labelled) but the held-out ones, in train
    mode (random frame subsets), with the title and ocr+asr views for ict and clip."""
    parts, _ = data.pretrain_parts()
    return torch.utils.data.ConcatDataset([data.dataset(s, rows, train=True, ict=True) for s, rows in parts])


def pretrain_eval(data: WBDCData, *, batch_size: int = 64):
    """Held-out pretraining videos: MLM accuracy (fixed masks), ITM accuracy and in-batch video→title
    CLIP accuracy, each where the model has the head; `PRETRAIN_METRIC` is their mean."""
    split, rows = data.pretrain_parts()[1]
    dataset = data.dataset(split, rows, ict=True)
    tokens = VT.TokenSpec.from_tokenizer(data.tokenizer)

    def eval_fn(model) -> dict:
        totals: dict[str, list[int]] = {}
        for k, (batch, _) in enumerate(predict_batches(model, dataset, _no_output, batch_size=batch_size)):
            if dryrun.active() and k >= dryrun.DRY_RUN_BATCHES:  # the accuracies run the model here
                break
            device = next(model.parameters()).device
            inputs = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
            for task, (hit, n) in VT.pretrain_accuracies(model, inputs, tokens, seed=k).items():
                totals.setdefault(task, [0, 0])
                totals[task][0] += hit
                totals[task][1] += n
        accs = {f"{t}_acc": h / max(n, 1) for t, (h, n) in totals.items()}
        return {**accs, PRETRAIN_METRIC: float(np.mean(list(accs.values()))) if accs else 0.0}

    return eval_fn


def _no_output(model, batch) -> torch.Tensor:
    """A `predict_batches` step that computes nothing (the loop only sets eval mode and batches)."""
    return torch.zeros(len(batch["id"]))


def finetune_datasets(data: WBDCData, n_folds: int, fold: int, *, seed: int = W.FOLD_SEED):
    """(training items of the other folds, held-out indices into the labelled videos): rank 8's
    `StratifiedKFold(n_folds, shuffle=True, random_state=802)` on lv2."""
    train_idx, val_idx = data.folds(n_folds, fold, seed)
    return data.dataset("labeled", train_idx, train=True), val_idx


def _probs(model, batch) -> torch.Tensor:
    keys = ("frames", "frame_mask", "text_ids", "text_mask")
    return F.softmax(model(**{k: batch[k] for k in keys})["logits"].float(), dim=-1)


def class_probabilities(models, dataset, *, batch_size: int = 64, progress: bool = False, device=None):
    """(ids, float32 (N, 200)): the mean over `models` of the softmax class probabilities."""
    ids, probs = predict_all(
        models, dataset, _probs, batch_size=batch_size, progress=progress, desc="classes", device=device
    )
    return np.asarray(ids, dtype=str), probs.reshape(len(ids), NUM_LV2)


def finetune_eval(data: WBDCData, val_idx: np.ndarray, *, batch_size: int = 64):
    """The official F1-mean (and its four parts) of the fold's held-out videos."""
    dataset, labels = data.dataset("labeled", val_idx), data.labels[val_idx]

    def eval_fn(model) -> dict:
        _, probs = class_probabilities(model, dataset, batch_size=batch_size)
        scores = M.f1_mean_from_probs(labels, probs)
        return {k: scores[k] for k in (METRIC, *M.F1_KEYS)}

    return eval_fn


def predict_fold(model, data: WBDCData, val_idx: np.ndarray, fold: int, *, batch_size: int = 64):
    """The held-out videos' class probabilities: {ids (N,), probs (N, 200), labels (N,) lv2, fold (N,)}."""
    ids, probs = class_probabilities(model, data.dataset("labeled", val_idx), batch_size=batch_size)
    return {"ids": ids, "probs": probs, "labels": data.labels[val_idx], "fold": np.full(len(ids), fold)}


def predict(models: list, data: WBDCData, split: str, *, batch_size: int = 64, infer_backend: str = "eager",
            progress: bool = True):  # fmt: skip
    """A split's class probabilities, the mean over a model's fold models: {ids (N,), probs (N, 200),
    infer: {"infer_backend": ..., what "auto" measured} for the run's metrics (30_inference moves it)}.

    Args:
        infer_backend: "eager", a faster path of `vmmlib.predict.backends.BACKENDS` ("onnx", "onnx_int8",
            "int8"; the semi-final timed inference, SPEC §9.1), or "auto": the fastest of them that
            agrees with eager, timed on the split's first batches (`fast_inference.choose_backend`).
    """
    from itertools import islice

    from vmmlib.options import check_choice
    from vmmlib.predict.backends import CHOICES, prepare_models

    check_choice("infer_backend", infer_backend, CHOICES)
    dataset = data.dataset(split)
    sample = None
    if infer_backend == "auto":  # a few real batches, as the prediction loop will make them
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        keys = ("frames", "frame_mask", "text_ids", "text_mask")
        sample = [{k: tensors(b)[k] for k in keys} for b in islice(loader, 3)]
    fast, device, report = prepare_models(models, infer_backend, sample=sample)
    ids, probs = class_probabilities(fast, dataset, batch_size=batch_size, progress=progress, device=device)
    return {"ids": ids, "probs": probs, "infer": report}


# --- reports -------------------------------------------------------------------------------------------


def fold_table(oof: dict, data: WBDCData) -> pd.DataFrame:
    """Per-lv2-class F1 of out-of-fold predictions (`vmmlib.metrics.wbdc.per_class_f1`); `attrs` keeps
    the lv1 confusion matrix (23 × 23, rows = truth) and the four F1s for `plot_fold`."""
    pred = oof["probs"].argmax(1)
    table = M.per_class_f1(oof["labels"], pred)
    table.attrs["lv1_confusion"] = M.confusion_matrix(LV2_TO_LV1[oof["labels"]], LV2_TO_LV1[pred], NUM_LV1)
    scores = M.f1_mean(oof["labels"], pred)
    table.attrs["scores"] = {k: scores[k] for k in (METRIC, *M.F1_KEYS)}
    return table


# --- ensemble and submission ---------------------------------------------------------------------


def combine(predictions: list[dict], weights) -> dict:
    """The weighted mean Σ_m w_m p_m / Σ_m w_m of the models' class probabilities, aligned by video id
    (rank 8's ensemble: softmax outputs weighted 1 / 1 / 0.7 / 1, argmax); the weights are kept
    (`weights`) for the distillation teacher of `write_predictions`."""
    from vmmlib.ensemble import weighted_arrays

    out = weighted_arrays(predictions, weights, "ids", ("probs",), what="predictions")
    total = sum(float(w) for w in weights) or 1.0
    return {**out, "probs": out["probs"] / total, "weights": np.asarray(weights, np.float64)}


def score_oof(oof: dict, data: WBDCData) -> float:
    """Out-of-fold F1-mean of the argmax of the (ensembled) class probabilities."""
    return M.f1_mean(oof["labels"], np.asarray(oof["probs"]).argmax(1))[METRIC]


def write_predictions(out_dir: str | Path, prediction: dict, *, teacher_dirs: list | tuple = ()) -> Path:
    """The (ensembled) test probabilities → argmax → `result.csv`; the probabilities go to
    `ensemble_test.npz` (ids, probs). With `teacher_dirs` (the 30_inference folders, in the order of
    the ensemble's models) the same weighting of their out-of-fold probabilities is written to
    `teacher.npz` (ids, probs, labels) for a distilled student."""
    from vmmlib.runs import OOF_FILE, resolve_path
    from vmmlib.submissions import wbdc as result_csv

    out_dir = Path(out_dir)
    ids, probs = np.asarray(prediction["ids"], dtype=str), prediction["probs"]
    save_arrays(out_dir / "ensemble_test.npz", {"ids": ids, "probs": probs})
    if teacher_dirs:
        weights = prediction.get("weights", np.ones(1))
        if len(teacher_dirs) != len(weights):
            raise ValueError(
                f"{len(teacher_dirs)} teacher_dirs for {len(weights)} models (give the inference_dirs)"
            )
        teacher = combine([load_arrays(resolve_path(d) / OOF_FILE) for d in teacher_dirs], weights.tolist())
        teacher = {
            "ids": np.asarray(teacher["ids"], dtype=str),
            "probs": teacher["probs"],
            "labels": teacher["labels"],
        }
        save_arrays(out_dir / TEACHER_FILE, teacher)
    return result_csv.write(
        out_dir / result_csv.FILE_NAME, ids.tolist(), [lv2_to_category(int(c)) for c in probs.argmax(1)]
    )


def required_ids(data: WBDCData, split: str) -> list[str]:
    """Every video id of the split: `result.csv` must hold one line for each."""
    return data.ids(split)

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
from vmmlib.data.wbdc.sample import write_wbdc_sample
from vmmlib.explore import ExploreReport
from vmmlib.io.wbdc_categories import LV2_TO_LV1, NUM_LV1, NUM_LV2, lv2_to_category
from vmmlib.metrics import wbdc as M
from vmmlib.objectives import classification as CL
from vmmlib.objectives import video_text as VT
from vmmlib.objectives.compose import objective_of
from vmmlib.options import call_with_options
from vmmlib.predict.loop import predict_all, predict_batches, tensors
from vmmlib.progress import progress as progress_bar
from vmmlib.runs import load_arrays, save_arrays

NAME = "wbdc"
METRIC = "mean_f1"  # the official F1-mean: (lv1, lv2) × (micro, macro) F1 averaged
PRETRAIN_METRIC = "pretrain_acc"  # mean held-out accuracy of the pretraining tasks the model has heads for
SUBMISSION = "wbdc"  # result.csv: id,category_id, no header
# The text BERT of every family (rank 8 trains it at 5e-5 while the rest learns at 5e-4, SPEC §4.5),
# and the CLIP vision tower (1e-5 in the seed; one backbone_lr here).
BACKBONE_PREFIXES = ("bert.", "text.", "vision.")
PRETRAIN_TERMS = VT.TERMS  # mlm, mfm, itm, ict, mmm, clip
FINETUNE_TERMS = ("ce", "distill")
TEACHER_FILE = "teacher.npz"  # the ensemble's out-of-fold probabilities of the labelled videos
TOP_CLASSES = 30  # classes shown in the per-class F1 panel of `plot_fold`


def make_sample(out_dir: str | Path, **options) -> Path:
    """Write sample data in the real layout (see `write_wbdc_sample` for the options)."""
    return call_with_options(write_wbdc_sample, out_dir, options=options, what="sample option")


def explore(data_dir: str | Path, *, max_items_per_split: int = 0, progress: bool = True) -> ExploreReport:
    """Summarise a WBDC folder: videos per split, frames per video, title/OCR/ASR lengths, the lv2
    long tail over 200 classes, videos per lv1 class, and unreadable feature members.

    Args:
        max_items_per_split: read at most this many videos of each split (0: all).
    """
    layout = W.check_layout(data_dir)
    rows, examples, split_rows, counts = [], [], [], Counter()
    for split, found in layout.items():
        entries = W.read_annotations(found["annotations"])
        if max_items_per_split:
            entries = entries[:max_items_per_split]
        feats = W.FeatureZip(found["features"]) if found["features"] else None
        unreadable = 0
        for e in progress_bar(entries, desc=f"reading {split}", disable=not progress, leave=False):
            vid, lv2 = str(e["id"]), W.label_of(e)
            try:
                num_frames = len(feats.read(vid)) if feats is not None else 0
            except W.FrameReadError:
                num_frames, unreadable = 0, unreadable + 1
            if lv2 >= 0:
                counts[lv2] += 1
            rows.append(
                {"split": split, "id": vid, "num_frames": num_frames, "title_len": len(e.get("title") or ""),
                 "ocr_len": len(W.ocr_text(e)), "asr_len": len(e.get("asr") or ""), "lv2": lv2}
            )  # fmt: skip
            if len(examples) < 3 * len(split_rows) + 3 and sum(r["split"] == split for r in rows) <= 3:
                examples.append(
                    {"split": split, "id": vid, "category_id": e.get("category_id", ""),
                     "title": (e.get("title") or "")[:30], "ocr": W.ocr_text(e)[:30], "num_frames": num_frames}
                )  # fmt: skip
        split_rows.append(
            {"split": split, "files": 1 + (feats is not None), "items": len(entries),
             "unreadable_features": unreadable, "raw_frame_videos": _raw_videos(found["frames"])}
        )  # fmt: skip
    items = pd.DataFrame(rows)
    lv1 = Counter({int(LV2_TO_LV1[c]): n for c, n in counts.items()})
    labelled = items[items["lv2"] >= 0]["lv2"]
    return ExploreReport(
        splits=pd.DataFrame(split_rows),
        items=items,
        distributions=["num_frames", "title_len", "ocr_len", "asr_len"],
        label_counts=pd.Series([counts.get(c, 0) for c in range(NUM_LV2)], name="videos"),
        category_counts=pd.Series({f"lv1 {k:02d}": lv1.get(k, 0) for k in range(NUM_LV1)}, name="videos"),
        targets=labelled.astype(float).rename("lv2 class"),
        target_name="lv2 class id",
        examples=pd.DataFrame(examples),
    )


def _raw_videos(folder: Path | None) -> int:
    return 0 if folder is None else sum(1 for _ in Path(folder).glob("*/*.zip"))


# --- model and objectives (the data folder opened for training: `vmmlib.data.wbdc.folder.WBDCData`) ---


def build_model(data: WBDCData, model: str, model_options: dict, text_model_dir: str):
    """A registered WBDC model sized to the data (the vocabulary; refused in `model_options`).

    Single-stream models are built with their pretraining heads and the dual stream with its CLIP
    temperature unless `model_options` says otherwise, so that a pretraining checkpoint and its
    fine-tuned model have the same parameters (weights are loaded strictly).
    """
    from vmmlib.models import create_model
    from vmmlib.models import model_options as valid_options

    options, sized = dict(model_options or {}), data.model_overrides(text_model_dir)
    fixed = sorted(set(options) & {*sized, "text_model_dir", "num_classes"})
    if fixed:
        raise ValueError(
            f"model option(s) {', '.join(fixed)} come from the data or the text_model_dir parameter; "
            "leave them out of model_options"
        )
    fields = valid_options(model)
    for head in ("pretrain_heads", "clip_head"):
        if head in fields:
            options.setdefault(head, True)
    if text_model_dir:
        options["text_model_dir"] = str(text_model_dir)
    return create_model(model, num_classes=NUM_LV2, **options, **sized)


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
    table.attrs["scores"] = M.f1_mean(oof["labels"], pred)
    return table


def plot_fold(table: pd.DataFrame, title: str = ""):
    """The lv1 confusion heat map (row-normalised) and the per-class F1 of the largest lv2 classes."""
    import matplotlib.pyplot as plt

    confusion = table.attrs.get("lv1_confusion")
    fig, axes = plt.subplots(1, 2 if confusion is not None else 1, figsize=(13, 5.2), squeeze=False)
    if confusion is not None:
        ax = axes[0][0]
        rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(NUM_LV1)
        ax.set_xticks(ticks, [f"{t:02d}" for t in ticks], fontsize=7, rotation=90)
        ax.set_yticks(ticks, [f"{t:02d}" for t in ticks], fontsize=7)
        ax.set(xlabel="predicted lv1", ylabel="true lv1", title="lv1 confusion (share of each true class)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    ax = axes[0][-1]
    top = table.head(TOP_CLASSES)  # the largest classes by support (per_class_f1 sorts by it)
    ax.barh(np.arange(len(top)), top["f1"], color=plt.cm.tab20(top["lv1"].to_numpy() % 20))
    ax.set_yticks(
        np.arange(len(top)), [f"{c} ({n})" for c, n in zip(top["category_id"], top["support"])], fontsize=7
    )
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="F1", title=f"per-class F1, {len(top)} largest lv2 classes (support)")
    scores = table.attrs.get("scores")
    if scores:
        ax.set_title(
            ax.get_title() + "\n" + "  ".join(f"{k} {scores[k]:.3f}" for k in (METRIC, *M.F1_KEYS)),
            fontsize=8,
        )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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


def ensemble_search_space(options: dict) -> dict[str, tuple[float, float]]:
    """Nothing searched besides the model weights; `teacher_dirs` (the distillation teacher) is taken."""
    unknown = sorted(set(options) - {"teacher_dirs"})
    if unknown:
        raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}; wbdc takes teacher_dirs")
    return {}


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

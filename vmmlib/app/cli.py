"""The `vmm` command: sample data, run pipelines, evaluate and validate submissions.

Five tasks; each has sample data (`vmm sample TASK DIR`), a sample pipeline
(`vmm run params/pipelines/TASK_sample.yaml`) and full recipes in `params/TASK/`:
  qqbrowser  QQ Browser 2021 video similarity, seed 000          metric spearman
  yt8m       YouTube-8M 2019 temporal segments, seed 003         metric segment_map
  wbdc       WeChat Big Data Challenge 2022, seed 001            metric mean_f1
  muge       MUGE retrieval on Chinese-CLIP, seed 002            metric mean_recall
  avfusion   text+audio+video retrieval and QA, seed 004         metric score
A notebook runs any of them from `-p task TASK` alone; `papermill --help-notebook
notebooks/20_finetune.ipynb` lists a notebook's parameters.

vmm sample TASK DIR [--videos N] [--pairs M (qqbrowser)] [--seed S]
vmm run params/pipelines/qqbrowser_sample.yaml [--scheduler tcp://host:8786] [--workers N] [--force]
vmm run params/pipelines/wbdc_full.yaml --set data_dir=/data/wbdc --set text_model_dir=/models/macbert [--dry-run]
vmm run params/pipelines/yt8m_sample.yaml
vmm evaluate qqbrowser --pred result.zip --truth label.tsv
vmm evaluate yt8m --pred submission.csv --truth DATA_DIR   (segment CSV, or video-level predictions)
vmm validate TASK SUBMISSION [--truth T | --data-dir D [--split S]]
vmm prepare muge DATA_DIR [--splits train,valid,test] [--check decode|fast] [--workers N]
vmm track RUN_DIR [...] --uri sqlite:///runs/mlflow.db   (log run folders to MLflow; vmm run --track URI does it live)
vmm compare RUN_A RUN_B [...] [--html FILE]   (parameters that differ, metric deltas, training curves)
vmm extract VIDEO_DIR OUT_DIR --format qqbrowser|wbdc|yt8m [--backbone DIR] [--texts FILE] [--split S]

`evaluate` and `validate` use `vmmlib.submissions` only (no torch): they answer in about a second;
without --truth or --data-dir, `validate` checks the format alone and says that ids were not checked.
An invalid submission exits 1 with its problem list; output is always valid JSON (an undefined
score, e.g. Spearman of constant cosines, is null). A user file that cannot be accepted (a
`vmmlib.io.safe.InputError`: malformed, too large, outside its root) prints one line
`error: <file>: <where>: <reason>` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from vmmlib.io.safe import InputError
from vmmlib.submissions import InvalidSubmissionError, get_format, list_formats
from vmmlib.tasks import list_tasks


def _sample(args: argparse.Namespace) -> int:
    options = {
        k: v
        for k, v in {
            "videos": args.videos,
            "pairs": args.pairs,
            "seed": args.seed,
            "val_videos": args.val_videos,
            "test_videos": args.test_videos,
            "num_frames": args.num_frames,
            "frame_size": args.frame_size,
            "labeled": args.labeled,
            "unlabeled": args.unlabeled,
            "test": args.test,
            "signal": args.signal,
            "train_texts": args.train_texts,
            "valid_texts": args.valid_texts,
            "test_texts": args.test_texts,
            "image_size": args.image_size,
        }.items()  # fmt: skip
        if v is not None
    }
    if args.overwrite:
        options["overwrite"] = True
    from vmmlib.tasks import get_task

    out = get_task(args.task).make_sample(args.dir, **options)
    print(f"wrote {args.task} sample data to {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from vmmlib.tasks import get_task

    splits = args.splits.split(",") if args.splits else None
    summary = get_task(args.task).prepare(
        args.data_dir, splits=splits, lmdb_dir=args.lmdb_dir, on_error=args.on_error, check=args.check,
        workers=args.workers, progress=not args.no_progress,
    )  # fmt: skip
    print(_json(summary))
    return 0


def _run(args: argparse.Namespace) -> int:
    from vmmlib.app.pipeline import pipeline_summary, run_pipeline
    from vmmlib.app.pipeline_log import steps_table
    from vmmlib.app.pipeline_settings import parse_settings

    results = run_pipeline(
        args.pipeline, scheduler=args.scheduler, workers=args.workers, force=args.force, track=args.track,
        settings=parse_settings(args.set), dry_run=args.dry_run,
    )  # fmt: skip
    print(steps_table(results))
    summary = pipeline_summary(results)
    print(json.dumps(summary))
    if results:
        from pathlib import Path

        print(f"index: {Path(results[0]['out_dir']).parent / 'index.html'}")
    return 1 if summary["failed"] or summary["blocked"] else 0


def _json(value) -> str:
    """JSON with every non-finite float as null (json.dumps would write the invalid NaN)."""

    def finite(v):
        if isinstance(v, np.generic):  # numpy scalars as Python numbers
            v = v.item()
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps(finite(value), allow_nan=False)


def _evaluate(args: argparse.Namespace) -> int:
    try:
        scores = get_format(args.task).evaluate(args.pred, args.truth)
    except InvalidSubmissionError as e:
        print(_json({"valid": False, "problems": e.problems}))
        print(f"vmm evaluate: error: {e}", file=sys.stderr)
        return 1
    undefined = [k for k, v in scores.items() if isinstance(v, (float, np.floating)) and not math.isfinite(v)]
    if undefined:
        print(f"vmm evaluate: {', '.join(undefined)} undefined (NaN), printed as null", file=sys.stderr)
    print(_json(scores))
    return 0


def _validate(args: argparse.Namespace) -> int:
    fmt = get_format(args.task)
    required = fmt.required_ids(truth=args.truth, data_dir=args.data_dir, split=args.split)
    problems = fmt.validate(args.submission, required)
    report = {
        "valid": not problems,
        "problems": problems,
        "required_ids": None if required is None else len(required),
    }
    if required is None:
        report["note"] = "format checked; ids not checked (give --truth or --data-dir)"
        print(f"vmm validate: {report['note']}", file=sys.stderr)
    print(_json(report))
    return 1 if problems else 0


def _extract(args: argparse.Namespace) -> int:
    from vmmlib.extract.run import extract

    result = extract(
        args.video_dir, args.out_dir, format=args.format, backbone=args.backbone, texts=args.texts,
        split=args.split, fps=args.fps, max_frames=args.max_frames, batch_size=args.batch_size,
        workers=args.workers, device=args.device, pca=args.pca, vocab=args.vocab, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    print(_json(result.summary()))
    if result.failed:
        print(
            f"vmm extract: skipped {len(result.failed)} unreadable video(s), listed under 'failed'",
            file=sys.stderr,
        )
    return 0


def _track(args: argparse.Namespace) -> int:
    from vmmlib.app.track import track_dir

    for run_dir in args.run_dir:
        try:
            logged = track_dir(args.uri, run_dir)
        except ImportError as e:  # MLflow is an optional extra
            print(f"vmm track: error: {e}", file=sys.stderr)
            return 2
        for step, run_id in logged:
            print(f"{step}: MLflow run {run_id}")
    print(f"browse: mlflow ui --backend-store-uri {args.uri}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from vmmlib.app.compare import compare_runs

    comparison = compare_runs(args.runs, html=args.html)
    print(comparison.table())
    if comparison.html_path:
        print(f"report: {comparison.html_path}")
    return 0


def _add_track_parsers(sub) -> None:
    p = sub.add_parser(
        "track", help="log run folders (a pipeline's or one step's) to MLflow after the fact (idempotent)"
    )
    p.add_argument("run_dir", nargs="+")
    p.add_argument("--uri", required=True, help="MLflow tracking URI, e.g. sqlite:///runs/mlflow.db")
    p.set_defaults(func=_track)
    p = sub.add_parser(
        "compare", help="parameters that differ, metric deltas and training curves of two or more runs"
    )
    p.add_argument("runs", nargs="+", help="step folders, or pipeline run folders (steps matched by name)")
    p.add_argument("--html", help="where the HTML page goes (default: compare.html beside the first run)")
    p.set_defaults(func=_compare)


def _add_sample_parser(sub) -> None:
    """`vmm sample TASK DIR [options]`: the options each task's `make_sample` takes."""
    p = sub.add_parser("sample", help="write deterministic sample data in a task's real layout")
    p.add_argument("task", choices=list_tasks())
    p.add_argument("dir")
    p.add_argument("--videos", type=int, help="number of (pretraining) videos (yt8m: frame/train videos)")
    p.add_argument("--pairs", type=int, help="number of labelled pairs (qqbrowser)")
    p.add_argument("--seed", type=int, help="same seed → byte-identical files")
    p.add_argument("--val-videos", type=int, help="avfusion: clips of the val split (and validation.csv)")
    p.add_argument("--test-videos", type=int, help="avfusion: clips of the test split")
    p.add_argument("--num-frames", type=int, help="avfusion: frames per mp4")
    p.add_argument("--frame-size", type=int, help="avfusion: frame side in pixels (even)")
    p.add_argument("--labeled", type=int, help="wbdc: labelled videos (annotations/labeled.json)")
    p.add_argument("--unlabeled", type=int, help="wbdc: unlabeled videos (for pretraining)")
    p.add_argument("--test", type=int, help="wbdc: test_a videos")
    p.add_argument("--signal", type=float, help="wbdc: class signal strength (1: default; lower: harder)")
    for split in ("train", "valid", "test"):
        p.add_argument(f"--{split}-texts", type=int, help=f"muge: {split} queries (each with 1-2 images)")
    p.add_argument("--image-size", type=int, help="muge: side of the JPEGs in pixels")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=_sample)


def _add_prepare_parser(sub) -> None:
    """`vmm prepare TASK DATA_DIR`: the task's `prepare` (muge: TSV + JSONL → Chinese-CLIP's LMDB layout)."""
    p = sub.add_parser(
        "prepare",
        help="convert a data folder's raw files (muge: TSV + JSONL into Chinese-CLIP's LMDB layout)",
    )
    p.add_argument("task", choices=list_tasks())
    p.add_argument("data_dir")
    p.add_argument("--splits", help="comma-separated (default: every split whose files exist)")
    p.add_argument("--lmdb-dir", help="output root (default DATA_DIR/lmdb)")
    p.add_argument(
        "--on-error", choices=["skip", "raise"], default="skip", help="a bad line: report and skip, or fail"
    )
    p.add_argument("--check", choices=["decode", "fast", "header", "none"], default="fast",
                   help="how each image is checked (fast: every base64 character, signature, end marker; "
                        "decode: Pillow decodes it, ~5x slower)")  # fmt: skip
    p.add_argument(
        "--workers",
        type=int,
        help="processes checking images (0: this one; default: CPUs - 1 for a large TSV)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_prepare)


def _add_run_parser(sub) -> None:
    """`vmm run PIPELINE [options]`: the notebook DAG (`vmmlib.app.pipeline.run_pipeline`)."""
    p = sub.add_parser("run", help="run a pipeline of notebooks (params/pipelines/<name>.yaml)")
    p.add_argument("pipeline")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, help="local Dask workers (default: the pipeline's `workers`)")
    p.add_argument("--force", action="store_true", help="re-run steps that already hold a finished result")
    p.add_argument(
        "--track",
        metavar="URI",
        help="log each step to MLflow, e.g. sqlite:///runs/mlflow.db (pip install vmmlib[track])",
    )
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a pipeline setting (its `settings:`, run_dir, data_dir), e.g. "
                        "--set data_dir=/data/wbdc --set text_model_dir=/models/macbert; repeatable")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="every step for real at the recipe's size but 2 steps, a few batches, a few "
                        "ensemble probes, in <run_dir>-dry-run (vmmlib.dryrun)")  # fmt: skip
    p.set_defaults(func=_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_sample_parser(sub)

    _add_prepare_parser(sub)
    _add_track_parsers(sub)

    _add_run_parser(sub)

    p = sub.add_parser(
        "evaluate", help="score a submission with the competition's official metric (prints JSON)"
    )
    p.add_argument("task", choices=list_formats())
    p.add_argument(
        "--pred",
        required=True,
        help="the submission (qqbrowser: result.zip; yt8m: a Class,Segments CSV or a VideoId,LabelConfidencePairs CSV)",
    )
    p.add_argument(
        "--truth",
        required=True,
        help="the labels (qqbrowser: a label.tsv of pairs; yt8m: frame-level validate shards: a data folder, a shard folder or a glob)",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("validate", help="check a submission's format and that every required id is present")
    p.add_argument("task", choices=list_formats())
    p.add_argument("submission")
    p.add_argument(
        "--truth",
        help="labels whose ids must all be present (qqbrowser: label.tsv; yt8m: segment_label_ids.csv or a data folder)",
    )
    p.add_argument("--data-dir", help="data folder whose split's ids must all be present")
    p.add_argument("--split", help="the split of --data-dir (default: the task's test split, e.g. test_a)")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "extract",
        help="per-second frame features of a folder of videos, written in a task's format (resumable)",
    )
    p.add_argument("video_dir")
    p.add_argument("out_dir", help="a new folder, or a data folder to add the split to")
    p.add_argument("--format", required=True, choices=["qqbrowser", "wbdc", "yt8m"])
    p.add_argument(
        "--backbone", default="", help="a local Hugging Face vision model folder (default: tiny built-in)"
    )
    p.add_argument(
        "--texts", help="titles/ASR/labels per video id: .json, .jsonl, .tsv or .csv with an id column"
    )
    p.add_argument("--split", help="where the videos go (default: the test split: test_a, test_a, test)")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    p.add_argument("--max-frames", type=int, default=300, help="at most this many frames per video")
    p.add_argument(
        "--batch-size", type=int, help="frames per backbone batch (default 64 on a GPU, 16 on CPU)"
    )
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--pca", help="reuse the projection saved in this earlier OUT_DIR")
    p.add_argument(
        "--vocab", help="BERT vocab.txt for a fresh qqbrowser/wbdc folder (default: bert-base-chinese's)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start again: drop saved features and projections"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_extract)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:  # a user file we cannot accept: one line naming file, place and reason
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"vmm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

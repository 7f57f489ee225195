"""Chinese-CLIP's LMDB layout: safe pair unpickling, base64 in both alphabets, split access."""

import base64
import os
import pickle

import lmdb
import pytest

from vmmlib.io.lmdb_store import (
    NUM_IMAGES_KEY,
    NUM_SAMPLES_KEY,
    LMDBSplit,
    UnsafePickleError,
    canonical_base64,
    decode_base64,
    dumps_pair,
    loads_pair,
    open_env,
    put_batch,
)


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling would call os.system("touch <path>")
        return (os.system, (f"touch {self.path}",))


def test_a_crafted_pair_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps((1, 2, _Exploit(marker)))
    with pytest.raises(UnsafePickleError, match="system"):
        loads_pair(payload)
    assert not marker.exists()
    # and the plain pickle really would have run it: the test can fail
    pickle.loads(payload)
    assert marker.exists()


def test_a_crafted_lmdb_pair_is_refused_with_its_key(tmp_path):
    marker = tmp_path / "pwned"
    env = open_env(tmp_path / "split" / "pairs", write=True)
    put_batch(env, [(b"0", pickle.dumps(_Exploit(marker))), (NUM_SAMPLES_KEY, b"1")])
    env.close()
    with pytest.raises(ValueError, match="key 0"):
        LMDBSplit(tmp_path / "split").pair(0)
    assert not marker.exists()


def test_pairs_are_pickled_exactly_as_chinese_clip_pickles_them():
    pair = (1002, 7, "红色连衣裙“新款”")
    assert dumps_pair(*pair) == pickle.dumps(pair)  # the builder's call, Python's default protocol
    assert loads_pair(dumps_pair(*pair)) == pair
    with pytest.raises(ValueError, match="tuple"):
        loads_pair(pickle.dumps([1, 2, "x"]))


def test_base64_decodes_both_alphabets_and_missing_padding_but_refuses_garbage():
    data = bytes(range(256)) * 3  # every byte value: the encodings contain + / and - _
    standard, urlsafe = base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()
    assert "+" in standard and "-" in urlsafe
    assert decode_base64(standard) == data
    assert decode_base64(urlsafe) == data
    assert decode_base64(urlsafe.rstrip("=")) == data
    # what a plain b64decode does to url-safe text: silently drops - and _ (SPEC §9.2)
    assert base64.b64decode(urlsafe) != data
    for bad in ("abc$def=", "a", "ab=c"):
        with pytest.raises(ValueError):
            decode_base64(bad)
    assert canonical_base64(urlsafe.rstrip("=")) == urlsafe
    assert base64.urlsafe_b64decode(canonical_base64(standard.rstrip("="))) == data  # cn_clip reads it


def test_split_reads_counts_pairs_images_and_lists_ids(tmp_path):
    root = tmp_path / "valid"
    imgs, pairs = open_env(root / "imgs", write=True), open_env(root / "pairs", write=True)
    put_batch(imgs, [(b"11", b"aGVsbG8="), (b"12", b"d29ybGQ"), (NUM_IMAGES_KEY, b"2")])
    put_batch(
        pairs, [(b"0", dumps_pair(11, 1, "a")), (b"1", dumps_pair(12, 1, "a")), (NUM_SAMPLES_KEY, b"2")]
    )
    imgs.close()
    pairs.close()
    split = LMDBSplit(root)
    assert (split.num_images, split.num_samples) == (2, 2)
    assert list(split.pairs()) == [(11, 1, "a"), (12, 1, "a")]
    assert split.image_ids() == ["11", "12"]
    assert split.image_bytes(11) == b"hello" and split.image_bytes("12") == b"world"
    with pytest.raises(KeyError, match="13"):
        split.image_base64(13)
    with pytest.raises(IndexError):
        split.pair(2)
    assert isinstance(pickle.loads(pickle.dumps(split)), LMDBSplit)  # crosses into DataLoader workers
    with pytest.raises(FileNotFoundError, match="vmm prepare muge"):
        LMDBSplit(tmp_path / "nothing")
    assert isinstance(split._env("imgs"), lmdb.Environment)
    split.close()

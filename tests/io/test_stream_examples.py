"""Streaming many shards: seeded shuffles, round-robin interleave, a bounded buffer, and every record
exactly once across DataLoader workers and ranks."""

import itertools
from collections import Counter

import pytest
import torch.utils.data

from vmmlib.io import (
    RecordError,
    TFRecordIterableDataset,
    encode_example,
    plan_shards,
    stream_examples,
    tfrecord_index,
    write_tfrecord,
)
from vmmlib.io.stream import _shuffle_buffer


def _write_shards(directory, sizes):
    """Shards of records {"idx": global index, "shard": s}; returns the paths."""
    paths, idx = [], 0
    for s, n in enumerate(sizes):
        p = directory / f"part-{s:02d}.tfrecords"
        write_tfrecord(p, [encode_example({"idx": idx + i, "shard": s}) for i in range(n)])
        paths.append(p)
        idx += n
    return paths


def record_index(record) -> int:
    return int(record["idx"][0])


def test_seeded_shuffle_is_deterministic_and_changes_with_epoch_and_seed(tmp_path):
    paths = _write_shards(tmp_path, [30, 30, 30, 30])

    def order(**kw):
        return [record_index(r) for r in stream_examples(paths, shuffle_buffer=16, **kw)]

    first = order(seed=1, epoch=0)
    assert sorted(first) == list(range(120))
    assert order(seed=1, epoch=0) == first
    assert order(seed=1, epoch=1) != first
    assert order(seed=2, epoch=0) != first
    assert first != sorted(first)


def test_without_shuffle_records_come_round_robin_in_file_order(tmp_path):
    paths = _write_shards(tmp_path, [3, 1, 2])  # idx 0-2 | 3 | 4-5
    got = [record_index(r) for r in stream_examples(paths, cycle_length=2)]
    # slots: [part0, part1] -> part1 ends, part2 takes its slot
    assert got == [0, 3, 1, 4, 2, 5]
    assert [record_index(r) for r in stream_examples(paths, cycle_length=1)] == list(range(6))


def test_shuffle_buffer_never_holds_more_than_its_size():
    consumed = 0

    def source():
        nonlocal consumed
        for i in range(1000):
            consumed += 1
            yield i

    out = []
    for i, item in enumerate(_shuffle_buffer(source(), 50, __import__("random").Random(0))):
        assert (
            consumed - i <= 51
        )  # the items read but not yet given out fit in the buffer (+ the one in hand)
        out.append(item)
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    # an item can only come out after the buffer has seen it, and at most 50 places early
    assert all(pos >= item - 50 for pos, item in enumerate(out))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
@pytest.mark.parametrize("sizes, num_workers", [([9, 7, 8, 5, 6], 2), ([40], 2), ([11, 13], 3), ([4] * 7, 3)])
def test_every_record_exactly_once_across_dataloader_workers(tmp_path, sizes, num_workers):
    paths = _write_shards(tmp_path, sizes)
    ds = TFRecordIterableDataset(
        paths, transform=record_index, shuffle_buffer=8, seed=3, num_workers=num_workers
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers)
    got = [int(i) for i in loader]
    assert Counter(got) == Counter(range(sum(sizes)))
    assert len(ds) == sum(sizes)


@pytest.mark.parametrize("world_size, num_shards", [(2, 5), (3, 2), (2, 1)])
def test_every_record_exactly_once_across_ranks(tmp_path, world_size, num_shards):
    paths = _write_shards(tmp_path, [10 + s for s in range(num_shards)])
    total = sum(10 + s for s in range(num_shards))
    seen = []
    for rank in range(world_size):
        ds = TFRecordIterableDataset(
            paths, transform=record_index, shuffle_buffer=4, rank=rank, world_size=world_size
        )
        ids = list(ds)
        assert len(ds) == len(ids)
        seen += ids
    assert Counter(seen) == Counter(range(total))


def test_ranks_and_workers_together_cover_everything_once(tmp_path):
    paths = _write_shards(tmp_path, [6, 7, 8])  # 3 shards < 2 ranks x 2 workers: split by record
    seen = []
    for rank in range(2):
        ds = TFRecordIterableDataset(paths, transform=record_index, rank=rank, world_size=2, num_workers=2)
        ids = [int(i) for i in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)]
        assert len(ds) == len(ids)
        seen += ids
    assert Counter(seen) == Counter(range(21))


def test_plan_splits_by_shard_when_there_are_enough_shards_else_by_record():
    shards = [f"s{i}" for i in range(6)]
    plans = [plan_shards(shards, shuffle=True, seed=0, worker_id=w, num_workers=3) for w in range(3)]
    assert all(shard is None for plan in plans for _, shard in plan)
    assert sorted(p for plan in plans for p, _ in plan) == shards
    # a rank's share is the same whatever the number of workers per rank
    many = [f"s{i}" for i in range(8)]
    for rank in range(2):
        alone = plan_shards(many, shuffle=True, rank=rank, world_size=2)
        split = [
            plan_shards(many, shuffle=True, rank=rank, world_size=2, worker_id=w, num_workers=2)
            for w in range(2)
        ]
        assert sorted(alone) == sorted(split[0] + split[1])
    plan = plan_shards(shards[:2], shuffle=False, rank=1, world_size=2, worker_id=1, num_workers=2)
    assert plan == [("s0", (3, 4)), ("s1", (3, 4))]  # consumer = worker_id * world_size + rank


def test_record_split_skips_other_consumers_records_without_reading_them(tmp_path):
    (path,) = _write_shards(tmp_path, [6])
    raw = bytearray(path.read_bytes())
    offset = int(tfrecord_index(path)[1])
    raw[offset + 20] ^= 0xFF  # corrupt record 1, which belongs to consumer 1 of 2
    path.write_bytes(raw)
    mine = [record_index(r) for r in stream_examples([path], rank=0, world_size=2)]
    assert mine == [0, 2, 4]
    with pytest.raises(RecordError) as e:
        list(stream_examples([path], rank=1, world_size=2))
    assert e.value.offset == offset


def test_set_epoch_reshuffles_the_dataset(tmp_path):
    paths = _write_shards(tmp_path, [20, 20])
    ds = TFRecordIterableDataset(paths, transform=record_index, shuffle_buffer=10, seed=0)
    first = list(ds)
    assert list(ds) == first
    ds.set_epoch(1)
    second = list(ds)
    assert second != first and sorted(second) == sorted(first)
    assert list(itertools.islice(ds, 3)) == second[:3]

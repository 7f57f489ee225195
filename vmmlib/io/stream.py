"""Stream decoded records from many TFRecord shards with bounded memory, split across workers and ranks.

The pipeline, per consumer (one DataLoader worker of one rank):

    shard order shuffled with (seed, epoch) -> this consumer's part -> `cycle_length` shards read
    round robin -> seeded shuffle buffer -> transform

Consumers are the `world_size * num_workers` (rank, worker) pairs. With at least that many shards,
each consumer reads whole shards; otherwise every consumer reads every shard and keeps the records
whose index in the file is its own modulo the number of consumers (the others are skipped after their
12-byte header, never decoded). Either way each record goes to exactly one consumer. Rank `r` always
owns the units (shards or records) congruent to `r` modulo `world_size`, so a rank's share does not
depend on how many workers each rank runs. Ranks can get unequal counts; DDP training that needs
equal steps per rank must cap or pad them.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch.utils.data

from vmmlib.io.example import read_examples
from vmmlib.io.tfrecord import tfrecord_index

__all__ = ["TFRecordIterableDataset", "plan_shards", "stream_examples"]


def _as_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def plan_shards(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    worker_id: int = 0,
    num_workers: int = 1,
) -> list[tuple[str, tuple[int, int] | None]]:
    """What one consumer reads: `[(path, record_shard)]` in reading order.

    `record_shard` is None (read every record of the file) or `(k, n)` (only records with index
    `i % n == k`). See the module docstring for the rule.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if not 0 <= worker_id < num_workers:
        raise ValueError(f"worker_id must be in [0, {num_workers}), got {worker_id}")
    order = _as_paths(paths)
    if shuffle:
        random.Random(f"shards:{seed}:{epoch}").shuffle(
            order
        )  # str seeds hash with sha512: same in every process
    consumers = world_size * num_workers
    consumer = worker_id * world_size + rank  # rank r owns units = r (mod world_size)
    if len(order) >= consumers:
        return [(p, None) for p in order[consumer::consumers]]
    return [(p, (consumer, consumers)) for p in order]


def _interleave(sources: list, open_source: Callable[[Any], Iterator], cycle_length: int) -> Iterator:
    """Round robin over `cycle_length` open sources; an exhausted one is replaced by the next source."""
    pending = iter(sources)
    active: deque[Iterator] = deque()
    for source in pending:
        active.append(open_source(source))
        if len(active) == cycle_length:
            break
    while active:
        it = active.popleft()
        for item in it:
            yield item
            active.append(it)
            break
        else:  # exhausted: its slot goes to the next source, read at once
            source = next(pending, None)
            if source is not None:
                active.appendleft(open_source(source))


def _shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """Uniform shuffle within a window of `size` items; memory holds at most `size` items."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def stream_examples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    epoch: int = 0,
    cycle_length: int = 4,
    keys: Iterable[str] | None = None,
    schema: Mapping[str, str] | None = None,
    sequence: bool = False,
    rank: int = 0,
    world_size: int = 1,
    transform: Callable[[Any], Any] | None = None,
    verify_crc: bool = True,
    raw_dtypes: Mapping[str, Any] | None = None,
    shuffle_shards: bool | None = None,
) -> Iterator[Any]:
    """Stream decoded records (see `read_examples`) from many shards.

    Args:
        paths: TFRecord shards.
        shuffle_buffer: size of the seeded shuffle buffer; 0 keeps reading order (evaluation).
        seed, epoch: seed the shard order and the buffer; a new epoch gives a new order.
        cycle_length: shards read at once, round robin (1: one file after the other).
        keys, schema, sequence, verify_crc, raw_dtypes: as in `read_examples`.
        rank, world_size: this process's place in distributed training.
        transform: applied to each record after shuffling.
        shuffle_shards: shuffle the shard order; default: when `shuffle_buffer > 0`.

    Yields:
        one decoded record (or `transform` of it) at a time; inside a DataLoader worker, only that
        worker's share.
    """
    worker_id, num_workers = _worker()
    shuffle = shuffle_buffer > 0 if shuffle_shards is None else shuffle_shards
    plan = plan_shards(
        paths,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        worker_id=worker_id,
        num_workers=num_workers,
    )

    def open_source(source):
        path, shard = source
        return read_examples(
            path,
            keys=keys,
            schema=schema,
            sequence=sequence,
            verify_crc=verify_crc,
            raw_dtypes=raw_dtypes,
            shard=shard,
        )

    records = _interleave(plan, open_source, max(1, cycle_length))
    if shuffle_buffer > 0:
        rng = random.Random(f"buffer:{seed}:{epoch}:{rank}:{worker_id}")
        records = _shuffle_buffer(records, shuffle_buffer, rng)
    if transform is not None:
        records = map(transform, records)
    return records


def _count_records(path: str, shard: tuple[int, int] | None, counts: dict[str, int]) -> int:
    if path not in counts:
        counts[path] = len(tfrecord_index(path))
    n = counts[path]
    if shard is None:
        return n
    k, every = shard
    return len(range(k, n, every))


class TFRecordIterableDataset(torch.utils.data.IterableDataset):
    """A torch IterableDataset over TFRecord shards, built on `stream_examples`.

    Call `set_epoch(epoch)` before each epoch for a new shuffle; with `persistent_workers=True` the
    workers keep the epoch they started with, so leave it False. `len()` counts the records this rank
    will yield (all its workers together) from the record headers; pass the DataLoader's
    `num_workers` when `world_size > 1` (it decides between the shard and record splits).

    Example:
        >>> ds = TFRecordIterableDataset(shards, transform=to_tensors, shuffle_buffer=2048, seed=0)
        >>> loader = DataLoader(ds, batch_size=64, num_workers=2)
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Callable[[Any], Any] | None = None,
        *,
        num_workers: int = 0,
        **stream_kwargs,
    ):
        super().__init__()
        self.paths = _as_paths(paths)
        self.transform = transform
        self.epoch = stream_kwargs.pop("epoch", 0)
        self.num_workers = num_workers
        self.stream_kwargs = stream_kwargs
        self._counts: dict[str, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        return stream_examples(self.paths, epoch=self.epoch, transform=self.transform, **self.stream_kwargs)

    def __len__(self) -> int:
        kw = self.stream_kwargs
        shuffle = kw.get("shuffle_shards")
        shuffle = kw.get("shuffle_buffer", 0) > 0 if shuffle is None else shuffle
        total = 0
        workers = max(1, self.num_workers)
        for worker_id in range(workers):
            plan = plan_shards(
                self.paths,
                shuffle=shuffle,
                seed=kw.get("seed", 0),
                epoch=self.epoch,
                rank=kw.get("rank", 0),
                world_size=kw.get("world_size", 1),
                worker_id=worker_id,
                num_workers=workers,
            )
            total += sum(_count_records(path, shard, self._counts) for path, shard in plan)
        return total

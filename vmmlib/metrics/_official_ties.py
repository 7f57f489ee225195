"""The order in which the official YouTube-8M evaluator ranks tied scores, computed fast.

The behaviour of google/youtube-8m's `AveragePrecisionCalculator` (SPEC §2.3), described here and
implemented from the description: before ranking a list of n (prediction, actual) pairs, the evaluator
reseeds Python's global RNG with 0 and permutes the list with `random.sample` over all n indices (not
`random.shuffle`, which gives another permutation), so the pair whose index is drawn j-th comes j-th;
then it sorts by prediction, descending, with a stable sort. Among equal scores the pair drawn
earlier therefore ranks first. When an accumulating calculator ranks (GAP, per-class AP), the list
is the array of its binary min-heap: the (prediction, actual) tuples pushed one by one with `heapq`
in push order. Only the relative order of tied items with different positivity changes an AP; this
module reproduces both orders exactly:

- `sample_positions(n, items)`: where items land in `random.sample(range(n), n)` after
  `random.seed(0)` (CPython 3: Mersenne Twister + `_randbelow` rejection sampling), without touching
  Python's global RNG. Small n calls a private `random.Random(0)`; large n replays the same 32-bit
  Twister stream with numpy's MT19937, vectorises the rejection sampling, and follows only the
  requested items through the pool swaps.
- `heap_order(keys)`: the heap list after pushing `keys` one by one with `heapq.heappush`.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import random

import numpy as np

_DIRECT_BELOW = 1 << 14  # below this size random.Random(0).sample itself is cheap enough
_TAIL = 2048  # the last draws (small ranges) are replayed one by one
_CHUNK = 1 << 16  # draws resolved together; kept far below the drawn range so the fixed point converges fast


class _TwisterWords:
    """The 32-bit outputs of the Mersenne Twister of `random.Random(0)`, in order, buffered."""

    def __init__(self) -> None:
        key = random.Random(0).getstate()[1]  # 624 state words + position
        self._bitgen = np.random.MT19937()
        state = self._bitgen.state
        state["state"] = {"key": np.asarray(key[:624], dtype=np.uint32), "pos": int(key[624])}
        self._bitgen.state = state
        self._buf = np.empty(0, np.int64)
        self._pos = 0

    def peek(self, count: int) -> np.ndarray:
        if self._buf.size - self._pos < count:
            fresh = self._bitgen.random_raw(max(count, 1 << 16)).astype(np.int64)  # one 32-bit output each
            self._buf = np.concatenate([self._buf[self._pos :], fresh])
            self._pos = 0
        return self._buf[self._pos : self._pos + count]

    def advance(self, count: int) -> None:
        self._pos += count


def _randbelow_draws(n: int) -> np.ndarray:
    """`draws[i] = _randbelow(n - i)` for i in 0..n-1, exactly as `random.Random(0).sample(range(n), n)` draws.

    `_randbelow(m)`: k = m.bit_length(); r = getrandbits(k) (= next 32-bit word >> (32 - k)); redraw while
    r >= m. Word q of a chunk is accepted iff r_q < m_start - (words accepted before q); this causal
    recurrence is solved by fixed-point iteration (its fixed point is unique and is reached from any start).
    """
    words = _TwisterWords()
    draws = np.empty(n, np.int64)
    i = 0
    while i < n:
        remaining = n - i
        if remaining <= _TAIL:
            for step in range(i, n):  # the last, small ranges one by one
                m = n - step
                shift = 32 - m.bit_length()
                while True:
                    r = int(words.peek(1)[0]) >> shift
                    words.advance(1)
                    if r < m:
                        break
                draws[step] = r
            break
        bits = remaining.bit_length()
        stop = max(1 << (bits - 1), _TAIL + 1)  # every range in this chunk has the same bit length
        steps = min(remaining - stop + 1, _CHUNK, 1 << max(bits - 5, 0))
        need = 2 * steps + 64  # acceptance probability is at least 1/2
        while True:
            r = words.peek(need) >> (32 - bits)
            accepted = r < remaining
            while True:
                before = np.cumsum(accepted) - accepted  # accepted words before each word
                update = r < remaining - before
                if np.array_equal(update, accepted):
                    break
                accepted = update
            idx = np.flatnonzero(accepted)
            if idx.size >= steps:
                break
            need *= 2
        used = idx[:steps]
        draws[i : i + steps] = r[used]
        words.advance(int(used[-1]) + 1)
        i += steps
    return draws


def _stable_argsort_small_ints(values: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative ints < 2**32 with numpy's radix sort (two 16-bit passes)."""
    if values.size and int(values.max()) < (1 << 16):
        return np.argsort(values.astype(np.uint16), kind="stable")
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    high = np.argsort((values[low] >> 16).astype(np.uint16), kind="stable")
    return low[high]


@functools.lru_cache(maxsize=2)
def _draw_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws of `random.Random(0).sample(range(n), n)` and, sorted, `slot * n + step` for each draw.

    Cached: GAP over one validation set always shuffles n = videos x k items, so repeated evaluations
    reuse it (`_draw_index.cache_clear()` to drop it). Both arrays are read-only.
    """
    draws = _randbelow_draws(n)
    order = _stable_argsort_small_ints(draws.astype(np.int32))  # draws grouped by slot, in step order
    slot_step = draws[order] * n + order
    draws.setflags(write=False)
    slot_step.setflags(write=False)
    return draws, slot_step


def sample_positions(n: int, items: np.ndarray) -> np.ndarray:
    """Where each of `items` (indices into range(n)) lands in `random.seed(0); random.sample(range(n), n)`.

    Python's global RNG is untouched. `sample` keeps a pool: step i draws slot `j_i = _randbelow(n - i)`,
    outputs `pool[j_i]` and moves the last live element `pool[n-1-i]` into slot j_i. An element in slot
    p from step s on is output at the first step >= s that draws p; if none does, at step n-1-p it is
    the last live element and moves to slot j_{n-1-p} < p, and the search goes on from there.

    Returns:
        (len(items),) int64 positions in the sampled list.
    """
    items = np.asarray(items, dtype=np.int64)
    if n >= 1 << 31:
        raise ValueError(f"n = {n} is too large for the replay (int32 slots)")
    if n < _DIRECT_BELOW:
        position = np.empty(n, np.int64)
        position[random.Random(0).sample(range(n), n)] = np.arange(n)
        return position[items]
    draws, slot_step = _draw_index(n)
    slot = items.copy()
    first_step = np.zeros(items.size, np.int64)
    out = np.empty(items.size, np.int64)
    active = np.arange(items.size)
    while active.size:
        query = slot[active] * n + first_step[active]
        by_query = np.argsort(query)  # searchsorted is much faster on sorted needles
        at = np.empty(active.size, np.int64)
        at[by_query] = np.searchsorted(slot_step, query[by_query])
        hit = at < n
        hit[hit] = slot_step[at[hit]] // n == slot[active[hit]]
        out[active[hit]] = slot_step[at[hit]] % n
        active = active[~hit]
        last = n - 1 - slot[active]  # the step at which the slot is the last live one
        slot[active] = draws[last]
        first_step[active] = last + 1
    return out


def sample_permutation(n: int) -> np.ndarray:
    """`random.Random(0).sample(range(n), n)` as an int64 array (the whole list; see `sample_positions`)."""
    permutation = np.empty(n, np.int64)
    permutation[sample_positions(n, np.arange(n))] = np.arange(n)
    return permutation


def heap_order(keys: np.ndarray) -> np.ndarray:
    """The list `heapq.heappush` leaves after pushing `keys` (1-D ints) one at a time, in push order."""
    heap: list[int] = []
    collections.deque(map(heapq.heappush, itertools.repeat(heap), keys.tolist()), maxlen=0)  # C-level loop
    return np.fromiter(heap, dtype=np.int64, count=len(heap))

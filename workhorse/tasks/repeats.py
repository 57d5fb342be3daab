"""Which 64-bit hashes occur more than once: the inner loop of the duplicate-id check, compiled.

The audit checks that request ids are unique across logs of 10M rows and more. DuckDB hashes each
id in one parallel scan; this module finds the hashes that repeat. Sorting 10M hashes takes
~0.7 s here, and numpy's vectorised sift (rounds of scatter and gather over a table larger than
the cache) ~0.6 s, more than the audit's whole aggregate query. Compiled, the work is two
sequential passes that split the hashes into cache-sized partitions by their top bits, then
one small hash set per partition: ~0.07 s.

numba compiles each function on its first call and keeps the machine code on disk
(``cache=True``), so a later process only loads it. It is imported lazily, because most commands
never check a duplicate.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

# Hashes per partition, on average: its hash set (twice as many slots, 9 bytes each) stays in L2.
PARTITION_SIZE = 1 << 14


def repeated_hashes(chunks: Sequence[np.ndarray]) -> np.ndarray:
    """The distinct values present more than once across ``chunks`` (uint64 arrays), sorted; exact.

    Chunks, not one array, so that batches (of an Arrow reader, say) need not be joined first.
    """
    chunks = [_read_only(chunk) for chunk in chunks]
    total = sum(len(chunk) for chunk in chunks)
    if total < 2:
        return np.empty(0, np.uint64)
    partition_bits = max(1, (total // PARTITION_SIZE).bit_length())
    shift = np.uint64(64 - partition_bits)
    # A counting sort on the top bits: partition p becomes grouped[starts[p]:starts[p + 1]].
    starts = np.zeros((1 << partition_bits) + 1, np.int64)
    for chunk in chunks:
        _count_by_top_bits(chunk, shift, starts[1:])
    np.cumsum(starts, out=starts)
    grouped, filled = np.empty(total, np.uint64), starts[:-1].copy()
    for chunk in chunks:
        _place_by_top_bits(chunk, shift, filled, grouped)
    return np.unique(grouped[_repeats_within_partitions(grouped, starts)])


def _read_only(chunk: np.ndarray) -> np.ndarray:
    # numba compiles once per argument type, and a read-only array (Arrow's zero-copy numpy view)
    # is another type than a writable one: one type means one compilation, cached and warmed once.
    view = np.ascontiguousarray(chunk, dtype=np.uint64).view()
    view.flags.writeable = False
    return view


@numba.njit(nogil=True, cache=True)
def _count_by_top_bits(hashes, shift, counts):
    for h in hashes:
        counts[h >> shift] += 1


@numba.njit(nogil=True, cache=True)
def _place_by_top_bits(hashes, shift, filled, grouped):
    for h in hashes:
        p = h >> shift
        grouped[filled[p]] = h
        filled[p] += 1


@numba.njit(nogil=True, cache=True)
def _repeats_within_partitions(grouped, starts):
    """True for every hash already seen earlier in its partition (open addressing, linear probing).

    Equal hashes share their top bits, hence their partition, so each partition is checked alone;
    the slot comes from the low bits, which vary within a partition. Each partition's table is
    sized to it, at most half full, so skewed hashes cost neither long probes nor clearing a
    large table once per partition.
    """
    largest = np.max(starts[1:] - starts[:-1])
    seen = np.empty(_table_size(largest), np.uint64)
    used = np.zeros(_table_size(largest), np.bool_)
    repeated = np.zeros(len(grouped), np.bool_)
    for p in range(len(starts) - 1):
        size = _table_size(starts[p + 1] - starts[p])
        mask = np.uint64(size - 1)
        used[:size] = False
        for i in range(starts[p], starts[p + 1]):
            h = grouped[i]
            slot = h & mask
            while used[slot] and seen[slot] != h:
                slot = (slot + np.uint64(1)) & mask
            if used[slot]:
                repeated[i] = True
            else:
                used[slot] = True
                seen[slot] = h
    return repeated


@numba.njit(nogil=True, cache=True)
def _table_size(hashes):
    """The smallest power of two that holds ``hashes`` at most half full (16 at least)."""
    size = 16
    while size < 2 * hashes:
        size *= 2
    return size

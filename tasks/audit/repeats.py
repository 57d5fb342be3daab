"""Which 64-bit hashes occur more than once: the inner loop of the duplicate-id check, compiled.

The audit checks that request ids are unique across logs of 10M rows and more. DuckDB hashes each
id in one parallel scan; this module finds the hashes that repeat. Sorting 10M hashes takes
~0.7 s here, and numpy's vectorised sift (rounds of scatter and gather over a table larger than
the cache) ~0.6 s, more than the audit's whole aggregate query. Compiled, the work is two
sequential passes that move the hashes into cache-sized partitions by their top bits, then
one small hash set per partition: ~0.1 s, in place.

numba compiles each function on its first call and keeps the machine code on disk
(``cache=True``), so a later process only loads it. It is imported lazily, because most commands
never check a duplicate.
"""

from __future__ import annotations

import numba
import numpy as np

# The most hashes per partition, on average (the partition count is a power of two, so the
# average lies between half this and this). A partition's hash set (twice as many slots, 9 bytes
# each) is then 0.6-2.4 MB (1.2 MB for 10M hashes): past one core's L2 (1 MB), well inside the
# 32 MB L3, and fewer partitions spread the partitioning pass's writes over fewer pages.
# Timings of 2^14, 2^16 and 2^18: benchmarks/NOTES.md.
PARTITION_SIZE = 1 << 16


def repeated_hashes(hashes: np.ndarray) -> np.ndarray:
    """The distinct values present more than once in ``hashes`` (uint64), sorted; exact.

    The array is the work space: it is reordered and overwritten. A second array of 10M hashes
    for the partitions would be fresh memory, and faulting in 80 MB takes 0.01-0.17 s on these
    VMs (the kernel compacts memory for huge pages, or not), more than the partitioning itself.
    """
    if hashes.dtype != np.uint64 or not hashes.flags.c_contiguous or not hashes.flags.writeable:
        raise TypeError("repeated_hashes needs a writable, contiguous uint64 array it may overwrite")
    if len(hashes) < 2:
        return np.empty(0, np.uint64)
    partition_bits = max(1, (len(hashes) // PARTITION_SIZE).bit_length())
    shift = np.uint64(64 - partition_bits)
    # A counting sort on the top bits, in place: partition p becomes hashes[starts[p]:starts[p + 1]].
    starts = np.zeros((1 << partition_bits) + 1, np.int64)
    _count_by_top_bits(hashes, shift, starts[1:])
    np.cumsum(starts, out=starts)
    _move_into_partitions(hashes, shift, starts)
    return np.unique(hashes[: _repeats_to_front(hashes, starts)])


@numba.njit(nogil=True, cache=True)
def _count_by_top_bits(hashes, shift, counts):
    for h in hashes:
        counts[h >> shift] += 1


@numba.njit(nogil=True, cache=True)
def _move_into_partitions(hashes, shift, starts):
    """One American-flag-sort pass: each misplaced hash is swapped into the next free place of
    its partition, and the hash it displaces moves on the same way, until the cycle closes."""
    filled = starts[:-1].copy()
    for p in range(len(starts) - 1):
        while filled[p] < starts[p + 1]:
            h = hashes[filled[p]]
            q = h >> shift
            while q != p:
                place = filled[q]
                filled[q] += 1
                hashes[place], h = h, hashes[place]
                q = h >> shift
            hashes[filled[p]] = h
            filled[p] += 1


@numba.njit(nogil=True, cache=True)
def _repeats_to_front(hashes, starts):
    """Move every hash already seen earlier in its partition to the front; return how many.

    Equal hashes share their top bits, hence their partition, so each partition is checked alone
    with one hash set (open addressing, linear probing); the slot comes from the low bits, which
    vary within a partition. Each partition's table is sized to it, at most half full, so skewed
    hashes cost neither long probes nor clearing a large table once per partition. A repeat is
    written at ``found`` <= i, a place already read whose value lives on in the set.
    """
    largest = np.max(starts[1:] - starts[:-1])
    seen = np.empty(_table_size(largest), np.uint64)
    used = np.zeros(_table_size(largest), np.bool_)
    found = 0
    for p in range(len(starts) - 1):
        size = _table_size(starts[p + 1] - starts[p])
        mask = np.uint64(size - 1)
        used[:size] = False
        for i in range(starts[p], starts[p + 1]):
            h = hashes[i]
            slot = h & mask
            while used[slot] and seen[slot] != h:
                slot = (slot + np.uint64(1)) & mask
            if used[slot]:
                hashes[found] = h
                found += 1
            else:
                used[slot] = True
                seen[slot] = h
    return found


@numba.njit(nogil=True, cache=True)
def _table_size(hashes):
    """The smallest power of two that holds ``hashes`` at most half full (16 at least)."""
    size = 16
    while size < 2 * hashes:
        size *= 2
    return size

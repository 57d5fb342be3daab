"""The duplicate-id check's compiled inner loop against numpy's own count of repeated values.

The kernel overwrites its input, so each call gets a copy and numpy counts the original."""

import numpy as np
import pytest

from workhorse.tasks.audit.repeats import PARTITION_SIZE, repeated_hashes

TOP = np.iinfo(np.uint64).max


def repeated_by_numpy(hashes: np.ndarray) -> np.ndarray:
    values, counts = np.unique(hashes, return_counts=True)
    return values[counts > 1]


def repeated(hashes: np.ndarray) -> np.ndarray:
    return repeated_hashes(hashes.copy())


def random_hashes(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TOP, n, dtype=np.uint64, endpoint=True)


@pytest.mark.parametrize("n", [0, 1, 2, 17, PARTITION_SIZE - 1, PARTITION_SIZE * 5 + 3, 400_000])
def test_planted_repeats_are_found_and_nothing_else(n):
    hashes = random_hashes(n)
    rng = np.random.default_rng(n)
    if n >= 4:  # copies of a few values, some repeated more than twice, far apart in the input
        sources = rng.integers(0, n, 3 + n // 1000)
        targets = rng.integers(0, n, len(sources) * 2)
        hashes[targets] = np.repeat(hashes[sources], 2)
    found = repeated(hashes)
    assert np.array_equal(found, repeated_by_numpy(hashes))
    assert (len(found) > 0) == (n >= 4)


def test_copies_far_apart_and_at_the_ends_are_found():
    hashes = random_hashes(200_000)
    hashes[150_000:150_010] = hashes[:10]
    hashes[-1] = hashes[0]  # three copies: the value is reported once
    assert np.array_equal(repeated(hashes), np.sort(hashes[:10]))


def test_input_it_cannot_overwrite_is_refused_rather_than_copied_silently():
    hashes = random_hashes(100)
    for unusable in (hashes.astype(np.int64), hashes[::2], np.frombuffer(hashes.tobytes(), np.uint64)):
        with pytest.raises(TypeError, match="writable, contiguous uint64"):
            repeated_hashes(unusable)


def test_extreme_values_and_one_value_everywhere():
    hashes = np.array([0, TOP, 0, 5, TOP, 6, 2**63, 2**63 - 1], np.uint64)
    assert repeated(hashes).tolist() == [0, TOP]
    assert repeated(np.full(100_000, 42, np.uint64)).tolist() == [42]


def test_hashes_that_share_their_top_bits_all_land_in_one_partition_and_are_still_exact():
    # Adversarial input for the partitioning: only the low 20 bits vary, so every hash goes to
    # partition 0 and many collide by design.
    hashes = random_hashes(300_000) & np.uint64(2**20 - 1)
    assert np.array_equal(repeated(hashes), repeated_by_numpy(hashes))


def test_values_that_differ_only_in_the_bits_that_pick_the_slot_are_not_confused():
    # Same low bits (the slot inside a partition), different high bits: a sloppy probe that
    # compared slots instead of values would call them repeats.
    low = np.uint64(12345)
    hashes = (np.arange(1, 5000, dtype=np.uint64) << np.uint64(44)) | low
    assert len(repeated(hashes)) == 0
    assert repeated(np.concatenate([hashes, hashes[:3]])).tolist() == sorted(hashes[:3].tolist())

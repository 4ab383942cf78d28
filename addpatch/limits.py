"""The ranges addpatch accepts for its numbers, checked before anything is written.

Each bound is stated in the error: the catalog stores seeds and sizes as 32-bit integers, and
a dataset's pairs are generated in memory (100,000 pairs take about 0.1 GB; far more would
run for minutes and exhaust memory before anything is stored).
"""

from __future__ import annotations

from addpatch.errors import BadInput

MAX_SEED = 2**31 - 1
MAX_SIZE = 100_000
MAX_BATCH_SIZE = 16_384
MAX_THREADS = 1_024
MAX_BATCHES_PER_TASK = 10_000


def check_range(name: str, value: int, low: int, high: int, why: str = "") -> None:
    if not low <= value <= high:
        raise BadInput(f"{name} must be {low:,}..{high:,}, got {value}{why}")


def check_dataset_numbers(*, size: int, seed: int) -> None:
    check_range("--size", size, 1, MAX_SIZE, " (pairs are generated in memory)")
    check_range("--seed", seed, 0, MAX_SEED, " (a 32-bit seed)")


def check_run_numbers(
    *, size: int, seed: int, batch_size: int, threads: int = 0, batches_per_task: int = 1
) -> None:
    """BadInput for a number out of range; `threads` 0 means torch's default."""
    check_dataset_numbers(size=size, seed=seed)
    check_range("--batch-size", batch_size, 1, MAX_BATCH_SIZE)
    check_range("--threads", threads, 0, MAX_THREADS, " (0: torch's default)")
    check_range("--batches-per-task", batches_per_task, 1, MAX_BATCHES_PER_TASK)

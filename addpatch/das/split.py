"""Train and test examples for trained interventions: a seeded split of a dataset's examples.

Every example of the dataset (kept by the model or not) is assigned a part once, so the split
does not depend on the model: a model's kept pairs fall into train and test by that assignment,
and train and test never share an example. Splits are stored with the dataset
(`dataset_splits`), named by seed and test share (`seed0-test20`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from addpatch.errors import BadInput


@dataclass(frozen=True)
class Split:
    name: str
    parts: dict[int, str]  # example id -> train | test

    def ids(self, part: str, kept: list[int]) -> list[int]:
        """The kept examples in `part`, in the order given."""
        return [i for i in kept if self.parts.get(i) == part]

    def sha256(self, kept: list[int]) -> str:
        """Identifies the train/test assignment of the kept examples (stored with subspaces)."""
        text = ",".join(f"{i}:{self.parts[i]}" for i in sorted(kept))
        return hashlib.sha256(text.encode()).hexdigest()


def split_name(seed: int, test_share: float) -> str:
    return f"seed{seed}-test{round(test_share * 100)}"


def check_test_share(test_share: float) -> None:
    if not 0 < test_share < 1:  # NaN fails too
        raise BadInput(f"--test-share must be between 0 and 1 (e.g. 0.2), got {test_share}")


def make_split(example_ids: list[int], seed: int, test_share: float) -> Split:
    """The examples shuffled by `seed`; the first round(n x test_share) are the test part."""
    check_test_share(test_share)
    ordered = sorted(example_ids)
    random.Random(seed).shuffle(ordered)
    test = round(len(ordered) * test_share)
    parts = {i: ("test" if n < test else "train") for n, i in enumerate(ordered)}
    return Split(split_name(seed, test_share), parts)


def check_sides(train: list[int], test: list[int], minimum_train: int) -> None:
    """BadInput when the kept pairs leave a side empty or too few to train on."""
    if not test or len(train) < minimum_train:
        raise BadInput(
            f"the split leaves {len(train)} kept pairs to train and {len(test)} to test; "
            f"DAS needs at least {minimum_train} to train and 1 to test: use a larger --size "
            "(or another --test-share)"
        )

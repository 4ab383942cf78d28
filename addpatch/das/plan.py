"""The driver side of a DAS run: which cells to train, on which pairs, with which labels.

A DAS run is a run (method `das`) whose "batches" are its cells: one per target x control x
k x layer x unit, in that order, each trained on the train part of the kept pairs and
evaluated on the test part. Its configuration (and so its id for resuming) is the full-vector
run's plus the DAS settings, the split and the cells.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from addpatch.das.cells import SHUFFLED, DasCell
from addpatch.das.split import Split, check_sides, check_test_share, make_split
from addpatch.das.training import TrainSettings
from addpatch.engine.patching import PromptPair
from addpatch.errors import BadInput
from addpatch.experiment.interventions import RunPlan
from addpatch.store import catalog
from addpatch.store.store import Store
from addpatch.store.subspaces import insert_split, read_split, target_labels

MINIMUM_TRAIN = 8  # fewer train pairs than this cannot fit a subspace
DEFAULT_KS = (1, 4, 16)


@dataclass(frozen=True)
class DasOptions:
    """`--method das` settings (defaults measured on the shipped adders: docs/das.md)."""

    ks: tuple[int, ...] = DEFAULT_KS
    learning_rate: float = 1e-2
    epochs: int = 4
    batch_size: int = 32
    seed: int = 0  # the subspaces' initialisation and batch order
    test_share: float = 0.2
    split_seed: int = 0
    control: bool = False  # also train each cell on shuffled labels (what rank k alone finds)

    def settings(self) -> TrainSettings:
        return TrainSettings(
            k=self.ks[0],
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def record(self) -> dict[str, Any]:
        return {
            "ks": list(self.ks),
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "test_share": self.test_share,
            "split_seed": self.split_seed,
            "control": SHUFFLED if self.control else None,
            "component": "resid",
        }


MAX_EPOCHS = 10_000
MAX_RANK = 1_000_000


def check_numbers(options: DasOptions) -> None:
    """BadInput for DAS numbers no run could use (checked whatever the method, as every
    option's value is)."""
    if not options.ks or any(not 1 <= k <= MAX_RANK for k in options.ks):
        raise BadInput(f"--k needs ranks of at least 1 (e.g. --k 1,4,16), got {list(options.ks)}")
    if not 1 <= options.epochs <= MAX_EPOCHS:
        raise BadInput(f"--epochs must be between 1 and {MAX_EPOCHS:,}, got {options.epochs}")
    if not 1 <= options.batch_size <= MAX_EPOCHS:
        raise BadInput(f"the DAS batch size must be at least 1, got {options.batch_size}")
    if not (math.isfinite(options.learning_rate) and 0 < options.learning_rate <= 10):
        raise BadInput(f"--lr must be a positive rate such as 0.01, got {options.learning_rate}")
    check_test_share(options.test_share)


def check_options(
    options: DasOptions, targets: list[str] | None, components: tuple[str, ...]
) -> None:
    """BadInput for DAS settings that are wrong before any model is loaded."""
    check_numbers(options)
    if not targets:
        raise BadInput(
            "--method das trains a subspace for a target variable: name it with --targets "
            "(e.g. --targets C_1,C_2)"
        )
    if tuple(components) != ("resid",):
        raise BadInput("--method das trains subspaces of the residual stream: drop --components")


def check_ranks(options: DasOptions, width: int) -> None:
    bad = [k for k in options.ks if k > width]
    if bad:
        raise BadInput(
            f"--k {bad[0]} is larger than the residual stream's width {width}; use k <= {width}"
        )


@dataclass(frozen=True)
class DasPlan:
    run: RunPlan
    options: DasOptions
    targets: list[str]
    cells: list[DasCell]
    train: list[PromptPair]
    test: list[PromptPair]
    labels: dict[str, dict[int, int]] = field(default_factory=dict)
    split: str = ""
    split_sha256: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return {
            **self.run.config,
            "method": "das",
            "das": {**self.options.record(), "targets": self.targets, "split": self.split},
        }

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()


def ensure_split(store: Store, dataset_id: int, seed: int, test_share: float) -> Split:
    """The dataset's split by (seed, share), stored the first time it is asked for."""
    with store.connect(read_only=True) as conn:
        ids = [e.example_id for e in catalog.dataset_examples(conn=conn, dataset_id=dataset_id)]
    split = make_split(ids, seed, test_share)
    with store.connect(read_only=True) as conn:
        stored = read_split(conn=conn, dataset_id=dataset_id, split=split.name)
    if stored is None:
        with store.writer(), store.connect() as conn:
            insert_split(conn=conn, dataset_id=dataset_id, split=split.name, parts=split.parts)
    elif stored != split.parts:
        raise BadInput(f"split {split.name} of dataset {dataset_id} is stored differently")
    return split


def plan_das(
    store: Store,
    run: RunPlan,
    options: DasOptions,
    targets: list[str],
    width: int,
) -> DasPlan:
    """The cells of a DAS run over the run's layers and positions, and its train/test pairs.
    `targets` are canonical and labelled already."""
    check_ranks(options, width)
    split = ensure_split(store, run.dataset_id, options.split_seed, options.test_share)
    pairs = [p for batch in run.batches for p in batch]
    kept = [p.example_id for p in pairs]
    train_ids, test_ids = set(split.ids("train", kept)), set(split.ids("test", kept))
    check_sides(sorted(train_ids), sorted(test_ids), MINIMUM_TRAIN)
    with store.connect(read_only=True) as conn:
        labels = {t: target_labels(conn=conn, dataset_id=run.dataset_id, target=t) for t in targets}
    controls: list[str | None] = [None, SHUFFLED] if options.control else [None]
    cells = [
        DasCell(0, target, control, k, layer, unit, position)
        for target in targets
        for control in controls
        for k in options.ks
        for layer in run.layers
        for position, unit in enumerate(run.positions)
    ]
    cells = [
        DasCell(i, c.target, c.control, c.k, c.layer, c.unit, c.position)
        for i, c in enumerate(cells)
    ]
    return DasPlan(
        run,
        options,
        targets,
        cells,
        [p for p in pairs if p.example_id in train_ids],
        [p for p in pairs if p.example_id in test_ids],
        labels,
        split.name,
        split.sha256(kept),
    )

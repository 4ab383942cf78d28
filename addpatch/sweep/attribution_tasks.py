"""The model work of an attribution run, as a plain function a worker runs (here or on Ray).

Like `patch_task`, it never touches the catalog: it writes each batch's Parquet file under the
store's attributions/ and returns what it wrote, for the driver alone to register.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from addpatch.engine.patching import PromptPair
from addpatch.experiment.attribution import attribute_batch_to_file
from addpatch.experiment.interventions import OutputFile
from addpatch.sweep.tasks import ModelSpec, engine_for


@dataclass(frozen=True)
class AttributionShard:
    """Consecutive batches of one attribution run, scored by one task."""

    model_id: int
    run_id: int
    batches: list[tuple[int, list[PromptPair]]]  # (batch index, pairs)
    labels: dict[str, dict[int, int]]  # target -> example id -> label (the shard's examples)
    layers: list[int]
    positions: list[str]
    max_new_tokens: int
    components: tuple[str, ...] = ("resid",)


def attribution_task(spec: ModelSpec, store_root: str, shard: AttributionShard) -> list[OutputFile]:
    """Score every cell of the shard's batches; one Parquet file per batch, none registered."""
    engine = engine_for(spec)
    return [
        attribute_batch_to_file(
            Path(store_root),
            engine,
            model_id=shard.model_id,
            run_id=shard.run_id,
            batch_index=index,
            batch=batch,
            labels=shard.labels,
            layers=shard.layers,
            positions=shard.positions,
            max_new_tokens=shard.max_new_tokens,
            components=shard.components,
        )
        for index, batch in shard.batches
    ]

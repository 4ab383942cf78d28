"""The training recipes of the shipped models (see their card.json for what they reached)."""

from __future__ import annotations

from addpatch.models.train_tiny import TrainConfig

RECIPES: dict[str, TrainConfig] = {
    "tiny-adder-digits": TrainConfig(),
}

"""The training recipes of the shipped models (see their card.json for what they reached).

`tiny-adder-digits` is one model for 2-4 digit addends (each addend's width drawn on its own);
the chunked tokenizer trains far slower, so `tiny-adder-chunks` ships one checkpoint per width.
The 3- and 4-digit chunked schedules are long (hours on one CPU thread); training checkpoints
at every evaluation and resumes where it stopped (`addpatch model train-tiny` again).
"""

from __future__ import annotations

from addpatch.models.train_tiny import TrainConfig

_CHUNKS = dict(
    grouping="chunks", num_layers=2, hidden_size=128, num_heads=4, ffn_size=512, eval_every=500
)

# A chunk's embedding is fixed to the sum of orthonormal (place, digit) and length vectors: with
# the embeddings tied, the sum is then read out digit by digit. Trained freely they drift, and
# 3-digit chunks learn ~15x slower (3.9% vs 59% held-out exact match after 1,000 steps).
_FROZEN_DIGITS = dict(number_init="orthogonal", number_scale=1.0, freeze_numbers=True)

RECIPES: dict[str, TrainConfig] = {
    "tiny-adder-digits": TrainConfig(),
    "tiny-adder-chunks-d2": TrainConfig(
        name="tiny-adder-chunks-d2", train_widths=(2,), eval_widths=(2,), steps=4000, **_CHUNKS
    ),
    "tiny-adder-chunks-d3": TrainConfig(
        name="tiny-adder-chunks-d3",
        train_widths=(1, 2, 3, 3),  # each addend's own width; 3 digits half the time
        eval_widths=(3,),
        steps=6000,
        **_FROZEN_DIGITS,
        **_CHUNKS,
    ),
    # 4-digit addends are two chunks each (`1234` -> `123`, `4`): one more layer, and 3-digit
    # (one-chunk) addends mixed in, each addend's width drawn on its own as for the digits model.
    "tiny-adder-chunks-d4": TrainConfig(
        name="tiny-adder-chunks-d4",
        train_widths=(3, 4),
        eval_widths=(4,),
        steps=8000,
        **_FROZEN_DIGITS,
        **{**_CHUNKS, "num_layers": 3},
    ),
}

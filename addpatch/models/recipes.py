"""The training recipes of the shipped models (see their card.json for what they reached).

`tiny-adder-digits` is one model for 2-4 digit addends (each addend's width drawn on its own);
the chunked tokenizer trains far slower, so `tiny-adder-chunks` ships one checkpoint per width,
`-d4` trained on from `-d3`. Training checkpoints at every evaluation and resumes where it
stopped (`addpatch model train-tiny` again).
"""

from __future__ import annotations

from dataclasses import replace

from addpatch.models.train_tiny import TrainConfig

_CHUNKS = TrainConfig(
    grouping="chunks", num_layers=2, hidden_size=128, num_heads=4, ffn_size=512, eval_every=500
)

# A chunk's embedding is fixed to the sum of orthonormal (place, digit) and length vectors: with
# the embeddings tied, the sum is then read out digit by digit. Trained freely they drift, and
# 3-digit chunks were at 3.9% held-out exact match after 1,000 steps instead of 65%.
_FROZEN_CHUNKS = replace(_CHUNKS, number_init="orthogonal", number_scale=1.0, freeze_numbers=True)

RECIPES: dict[str, TrainConfig] = {
    "tiny-adder-digits": TrainConfig(),
    "tiny-adder-chunks-d2": replace(
        _FROZEN_CHUNKS,
        name="tiny-adder-chunks-d2",
        train_widths=(2,),
        eval_widths=(2,),
        steps=3000,
    ),
    "tiny-adder-chunks-d3": replace(
        _FROZEN_CHUNKS,
        name="tiny-adder-chunks-d3",
        train_widths=(1, 2, 3, 3),  # each addend's own width; 3 digits half the time
        eval_widths=(3,),
        steps=6000,
    ),
    # 4-digit addends are two chunks each (`1234` -> `123`, `4`), and the answer's first chunk is
    # the 3-digit model's sum of the first chunks plus the ones' carry: so the 4-digit model
    # starts from the 3-digit one (a curriculum) and reaches 99% in ~500 steps, where from
    # scratch it was at 7% after 2,000.
    "tiny-adder-chunks-d4": replace(
        _FROZEN_CHUNKS,
        name="tiny-adder-chunks-d4",
        train_widths=(4,),
        eval_widths=(4,),
        steps=2000,
        init_from="tiny-adder-chunks-d3",
    ),
}

"""The training recipes of the shipped LoRA adapters (see their card.json for what they reached).

`smollm2-adder`: SmolLM2-135M-Instruct, rank 16 on the attention and MLP projections, 1-3 digit
problems (both addends of one width, drawn per problem), batch 32, lr 1e-3 with cosine decay,
400 steps (`AdapterConfig`'s defaults).
"""

from __future__ import annotations

from addpatch.models.train_adapter import AdapterConfig

ADAPTER_RECIPES: dict[str, AdapterConfig] = {"smollm2-adder": AdapterConfig()}

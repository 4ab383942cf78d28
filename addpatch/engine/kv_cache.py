"""A minimal key/value cache that Hugging Face attention layers write into.

Layers call `cache.update(keys, values, layer_idx)` and attend over what it returns. Tensors are
concatenated, never written in place, so a cache seeded from a base run's tensors leaves them
untouched and many patched runs can share one base run.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int) -> None:
        # per layer: keys and values, each (batch, kv_heads, pos, head_dim)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def seed(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys[layer] = keys
        self.values[layer] = values

    def update(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        layer_idx: int,
        cache_kwargs: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k is not None and old_v is not None:
            keys = torch.cat([old_k, keys], dim=-2)
            values = torch.cat([old_v, values], dim=-2)
        self.keys[layer_idx] = keys
        self.values[layer_idx] = values
        return keys, values

    def copy(self) -> KVCache:
        """A cache that shares these tensors; updates to either leave the other as it was."""
        twin = KVCache(len(self.keys))
        twin.keys, twin.values = list(self.keys), list(self.values)
        return twin

    @staticmethod
    def concat(caches: list[KVCache]) -> KVCache:
        """Caches of equal length stacked along the batch."""
        if len(caches) == 1:
            return caches[0]
        joined = KVCache(len(caches[0].keys))
        for layer in range(len(joined.keys)):
            keys = [c.keys[layer] for c in caches]
            values = [c.values[layer] for c in caches]
            assert all(k is not None for k in keys) and all(v is not None for v in values)
            joined.seed(layer, torch.cat(keys), torch.cat(values))  # type: ignore[arg-type]
        return joined

    def get_seq_length(self, layer_idx: int = 0) -> int:
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

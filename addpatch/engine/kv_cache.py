"""A minimal key/value cache that Hugging Face attention layers write into.

Layers call `cache.update(keys, values, layer_idx)` and attend over what it returns. A cache
seeded from a base run's tensors never writes into them (updates concatenate), so many patched
runs can share one base run. A cache made by `concat(..., reserve=n)` owns its buffers and has
room for n more positions: decoding then writes in place instead of copying the cache each step.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int) -> None:
        # per layer: keys and values, each (batch, kv_heads, pos, head_dim); with a buffer,
        # the tensors are (batch, kv_heads, capacity, head_dim) and `lengths` says what is used
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths: list[int | None] = [None] * num_layers  # None: no spare room, concatenate

    def seed(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys[layer] = keys
        self.values[layer] = values
        self.lengths[layer] = None

    def update(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        layer_idx: int,
        cache_kwargs: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        used = self.lengths[layer_idx]
        if old_k is not None and old_v is not None and used is not None:
            end = used + keys.shape[-2]
            if end <= old_k.shape[-2]:  # room left in the owned buffer: write in place
                old_k[:, :, used:end] = keys
                old_v[:, :, used:end] = values
                self.lengths[layer_idx] = end
                return old_k[:, :, :end], old_v[:, :, :end]
            old_k, old_v = old_k[:, :, :used], old_v[:, :, :used]
            self.lengths[layer_idx] = None
        if old_k is not None and old_v is not None:
            keys = torch.cat([old_k, keys], dim=-2)
            values = torch.cat([old_v, values], dim=-2)
        self.keys[layer_idx] = keys
        self.values[layer_idx] = values
        return keys, values

    def copy(self) -> KVCache:
        """A cache that shares these tensors; updates to either leave the other as it was."""
        assert all(n is None for n in self.lengths), "copy() is for caches without buffers"
        twin = KVCache(len(self.keys))
        twin.keys, twin.values = list(self.keys), list(self.values)
        return twin

    @staticmethod
    def concat(caches: list[KVCache], reserve: int = 0) -> KVCache:
        """Caches of equal length stacked along the batch, with room for `reserve` positions."""
        joined = KVCache(len(caches[0].keys))
        for layer in range(len(joined.keys)):
            keys = [c.keys[layer] for c in caches]
            values = [c.values[layer] for c in caches]
            assert all(k is not None for k in keys) and all(v is not None for v in values)
            first = keys[0]
            assert first is not None
            batch = sum(k.shape[0] for k in keys)  # type: ignore[union-attr]
            heads, length, dim = first.shape[1], first.shape[2], first.shape[3]
            shape = (batch, heads, length + reserve, dim)
            k_buffer = first.new_empty(shape)
            v_buffer = first.new_empty(shape)
            row = 0
            for k, v in zip(keys, values, strict=True):
                assert k is not None and v is not None and k.shape[2] == length
                k_buffer[row : row + k.shape[0], :, :length] = k
                v_buffer[row : row + v.shape[0], :, :length] = v
                row += k.shape[0]
            joined.keys[layer], joined.values[layer] = k_buffer, v_buffer
            joined.lengths[layer] = length
        return joined

    def get_seq_length(self, layer_idx: int = 0) -> int:
        used = self.lengths[layer_idx]
        if used is not None:
            return used
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

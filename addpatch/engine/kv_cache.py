"""A minimal key/value cache that Hugging Face attention layers write into.

Layers call `cache.update(keys, values, layer_idx)` and attend over what it returns. A `copy()`
of a base run's cache never writes into its tensors (updates concatenate), so the base run's
cache stays as it was. A cache made by `allocate` owns buffers with room to spare: the
patched prompt and then each decoding step write into them in place, instead of copying.
"""

from __future__ import annotations

from typing import Any

import torch


class KVCache:
    def __init__(self, num_layers: int) -> None:
        # per layer: keys and values, each (batch, kv_heads, pos, head_dim); with a buffer,
        # the tensors are (batch, kv_heads, capacity, head_dim) and `lengths` says what is used
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths: list[int | None] = [None] * num_layers  # None: no spare room, concatenate

    def update(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        layer_idx: int,
        cache_kwargs: dict[str, Any] | None = None,
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
    def allocate(like: KVCache, batch: int, capacity: int) -> KVCache:
        """An empty cache owning buffers for `batch` rows and `capacity` positions per layer,
        with `like`'s heads, head width, dtype and device."""
        owned = KVCache(len(like.keys))
        for layer, keys in enumerate(like.keys):
            assert keys is not None
            shape = (batch, keys.shape[1], capacity, keys.shape[3])
            owned.keys[layer] = keys.new_empty(shape)
            owned.values[layer] = keys.new_empty(shape)
            owned.lengths[layer] = 0
        return owned

    def rows(self, start: int, stop: int) -> KVCache:
        """A cache over rows start..stop-1 of this one's buffers: writing it writes them."""
        view = KVCache(len(self.keys))
        for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            assert keys is not None and values is not None
            view.keys[layer], view.values[layer] = keys[start:stop], values[start:stop]
        view.lengths = list(self.lengths)
        return view

    def fill(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy keys/values (rows, kv_heads, n, head_dim) into the buffer's first n positions."""
        own_k, own_v = self.keys[layer], self.values[layer]
        assert own_k is not None and own_v is not None and self.lengths[layer] is not None
        length = keys.shape[2]
        own_k[:, :, :length] = keys
        own_v[:, :, :length] = values
        self.lengths[layer] = length

    def set_lengths(self, length: int) -> None:
        """Mark the first `length` positions of every layer's buffer as filled."""
        self.lengths = [length] * len(self.keys)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        used = self.lengths[layer_idx]
        if used is not None:
            return used
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

"""The weights hash that provenance records is computed once per file and reused."""

from __future__ import annotations

import json
import os

from addpatch.caches import cache_dir
from addpatch.models.loading import model_record, resolve_model
from addpatch.models.weights import HASH_CACHE_FILE, sha256_file, sha256_file_cached


def _cache_entries() -> dict:
    return json.loads((cache_dir() / HASH_CACHE_FILE).read_text())


def test_hash_is_cached_by_path_size_and_mtime(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    first = sha256_file_cached(weights)
    assert first == sha256_file(weights)
    [entry] = _cache_entries().values()
    assert entry == {
        "size": weights.stat().st_size,
        "mtime_ns": weights.stat().st_mtime_ns,
        "sha256": first,
    }

    # an unchanged file is not read again: the cached hash is what comes back
    cache = cache_dir() / HASH_CACHE_FILE
    planted = {k: {**v, "sha256": "0" * 64} for k, v in _cache_entries().items()}
    cache.write_text(json.dumps(planted))
    assert sha256_file_cached(weights) == "0" * 64

    # a new modification time (same size and bytes) makes it hash the file again
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert sha256_file_cached(weights) == first

    # so does a new size
    weights.write_bytes(b"other" * 10)
    assert sha256_file_cached(weights) == sha256_file(weights) != first


def test_damaged_cache_is_rebuilt(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    cache = cache_dir() / HASH_CACHE_FILE
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    assert sha256_file_cached(weights) == sha256_file(weights)
    assert str(weights.resolve()) in _cache_entries()
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".weights-sha256-")]


def test_model_record_reuses_the_cached_weights_hash():
    resolved = resolve_model("tiny-adder-digits")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolved.path)
    record = model_record(resolved, config)
    weights = resolved.path / "model.safetensors"
    assert str(weights.resolve()) in _cache_entries()
    # planting another hash for the unchanged file shows the record takes it from the cache
    cache = cache_dir() / HASH_CACHE_FILE
    entries = _cache_entries()
    entries[str(weights.resolve())]["sha256"] = "f" * 64
    cache.write_text(json.dumps(entries))
    assert model_record(resolved, config).weights_sha256 != record.weights_sha256

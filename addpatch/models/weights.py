"""Content hashes of weight and tokenizer files, for provenance.

Hashing a 16 GB checkpoint reads every byte (~11 s), so a file's hash is kept in a small JSON
cache outside the store (`~/.cache/addpatch/weights-sha256.json`, or `$ADDPATCH_CACHE_DIR`) keyed
by the file's resolved path, size and modification time, and reused until one of those changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from addpatch.caches import cache_dir, write_cache_file

HASH_CACHE_FILE = "weights-sha256.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: start afresh
    return entries if isinstance(entries, dict) else {}


def _write_cache(cache_file: Path, entries: dict[str, dict[str, Any]]) -> None:
    write_cache_file(cache_file, json.dumps(entries, indent=1, sort_keys=True))


def sha256_file_cached(path: Path, cache_file: Path | None = None) -> str:
    """sha256 of `path`, read from the hash cache when its path, size and mtime are unchanged."""
    cache_file = cache_file or cache_dir() / HASH_CACHE_FILE
    resolved = path.resolve()
    stat = resolved.stat()
    key = str(resolved)
    entries = _read_cache(cache_file)
    entry = entries.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        sha256: str = entry["sha256"]
        return sha256
    sha = sha256_file(resolved)
    entries = _read_cache(cache_file)  # another process may have added entries meanwhile
    entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    _write_cache(cache_file, entries)
    return sha


def sha256_files(paths: list[Path], *, cached: bool = False) -> str:
    """One hash over several files, in the given order (names included); with `cached`, each
    file's own hash comes from the hash cache when the file is unchanged."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update((sha256_file_cached(path) if cached else sha256_file(path)).encode())
    return digest.hexdigest()

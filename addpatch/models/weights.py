"""Content hashes of weight and tokenizer files, for provenance.

Hashing a 16 GB checkpoint reads every byte (~11 s), so a file's hash is kept in a small JSON
cache outside the store (`~/.cache/addpatch/weights-sha256.json`, or `$ADDPATCH_CACHE_DIR`) keyed
by the file's resolved path, size and modification time, and reused until one of those changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "ADDPATCH_CACHE_DIR"
HASH_CACHE_FILE = "weights-sha256.json"


def cache_dir() -> Path:
    """Where addpatch keeps caches that are not results (never inside a store)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "addpatch"


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
    """Replace the cache file atomically; a cache that cannot be written is only a lost speed-up."""
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".weights-sha256-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(tmp, cache_file)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise


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

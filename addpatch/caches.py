"""Where addpatch keeps caches that are not results (never inside a store), and how it writes them.

`~/.cache/addpatch`, or `$ADDPATCH_CACHE_DIR`. A cache that cannot be read is rebuilt and one
that cannot be written is only a lost speed-up: neither is ever an error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

CACHE_ENV = "ADDPATCH_CACHE_DIR"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "addpatch"


def write_cache_file(path: Path, text: str) -> None:
    """Replace `path` atomically with `text` (a reader sees the old file or the new, never half);
    an error writing it is swallowed."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise

"""What a store holds on disk, to check that a refused or failed command changed nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path


def store_snapshot(root: Path) -> dict[str, str]:
    """Every file below `root`: its relative path and the SHA-256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }

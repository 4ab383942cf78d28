"""Output paths checked before anything is written: a directory that can be made and written,
a file whose directory exists and is writable, never a directory where a file goes."""

from __future__ import annotations

import os
from pathlib import Path

from addpatch.errors import BadInput


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def output_dir_check(path: Path | str | None) -> None:
    """BadInput unless `path` is (or can be made as) a writable directory."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{path} is a file, not a directory; choose a directory for the output")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise BadInput(f"cannot make the directory {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(
            f"cannot write in {existing} (permission denied); choose a writable directory"
        )


def output_file_check(path: Path | str | None) -> None:
    """BadInput unless `path` can be written as a file (its directory exists and is writable)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path} is a directory; give a file name for the output")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise BadInput(f"the directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BadInput(f"cannot write {path} (permission denied); choose a writable path")

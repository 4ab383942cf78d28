"""Where the shipped SQL queries and migrations live, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    bundled = _PACKAGE / "_bundled" / name  # inside an installed wheel
    if bundled.is_dir():
        return bundled
    checkout = _PACKAGE.parent / name  # editable install / source checkout
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"addpatch is installed without its {name}/ folder; reinstall addpatch")


def queries_dir() -> Path:
    return _find("queries")


def migrations_dir() -> Path:
    return _find("migrations")


def shipped_models_dir() -> Path:
    return _PACKAGE / "models" / "shipped"

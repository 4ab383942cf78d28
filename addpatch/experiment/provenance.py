"""What a run records about where its numbers came from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import duckdb
import torch
import transformers

import addpatch


def git_commit() -> str:
    """The addpatch source commit when running from a checkout, else 'unknown'."""
    root = Path(addpatch.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def environment() -> dict[str, str | int]:
    return {
        "addpatch_version": addpatch.__version__,
        "addpatch_commit": git_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }

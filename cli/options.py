"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from addpatch.settings import DEFAULT_STORE, STORE_ENV

StoreOption = Annotated[
    Path,
    typer.Option("--store", envvar=STORE_ENV, help="Store directory.", show_default=True),
]
STORE_DEFAULT = Path(DEFAULT_STORE)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Shipped model name (see `addpatch model list`), local checkpoint directory, or "
        "Hugging Face id in the local cache.",
    ),
]
DigitsOption = Annotated[int, typer.Option("--digits", "-d", help="Digits per addend (1-6).")]
AddendsOption = Annotated[int, typer.Option("--addends", "-k", help="Number of addends (2-4).")]
SizeOption = Annotated[int, typer.Option("--size", "-n", help="Counterfactual pairs to generate.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the pair generator.")]
KindOption = Annotated[
    str, typer.Option("--kind", help="Pair generator: random, sum_to_nine, one_digit, carry_flip.")
]
LayersOption = Annotated[
    str, typer.Option(help="all (embeddings as -1, then every layer), or e.g. -1,0,3 or 0-11.")
]
PositionsOption = Annotated[
    str,
    typer.Option(help="all (every prompt token), numbers, digits, last, or names like a0.d1,last."),
]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", help="Examples per batch.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOption = Annotated[
    str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16.")
]
TargetsOption = Annotated[
    str | None,
    typer.Option(
        "--targets",
        "-t",
        help="Comma-separated target variables (digit_0_1, C_1, O_2, raw_output, "
        "digit_0_0+digit_1_1, A<-B); default: every digit, carry and output digit, and raw_output.",
    ),
]


def split_targets(targets: str | None) -> list[str] | None:
    if targets is None:
        return None
    chosen = [t.strip() for t in targets.split(",") if t.strip()]
    if not chosen:
        from addpatch.errors import BadInput

        raise BadInput("--targets is empty; name variables (e.g. C_1,O_2) or leave it out")
    return chosen

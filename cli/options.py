"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from addpatch.settings import DEFAULT_STORE, STORE_ENV

if TYPE_CHECKING:
    from addpatch.das.plan import DasOptions
    from addpatch.task.addition import AdditionTask

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
ComponentsOption = Annotated[
    str,
    typer.Option(
        help="What to patch: resid (residual stream), attn (attention output), mlp (MLP output), "
        "heads (each attention head), or a list like resid,attn,mlp,heads."
    ),
]
HeadsPositionOption = Annotated[
    str | None,
    typer.Option(
        help="Token position of the report's layer x head heatmaps (e.g. last, a0.d1; "
        "default: each target's best residual-stream position, else last)."
    ),
]
PositionsOption = Annotated[
    str,
    typer.Option(
        help="auto (query with --prefix/--shots/--chat, else all), all (every prompt token), "
        "query (the query's tokens, not the prefix, shots or chat wrapper), numbers, digits, "
        "last, or names like a0.d1,last; join names by + to patch them together as one unit "
        "(docs/units.md). Example: --positions query, or --positions a0.d1,a1.d1+last"
    ),
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


KOption = Annotated[str, typer.Option("--k", help="DAS: subspace ranks to train, e.g. 1,4,16.")]
EpochsOption = Annotated[int, typer.Option(help="DAS: passes over the train pairs.")]
LrOption = Annotated[float, typer.Option(help="DAS: Adam learning rate.")]
TestShareOption = Annotated[
    float, typer.Option(help="DAS: share of the dataset's pairs held out for testing.")
]
ControlOption = Annotated[
    bool,
    typer.Option(
        help="DAS: also train every cell on shuffled labels (what a subspace of that rank fits "
        "without the variable)."
    ),
]


def das_options(k: str, epochs: int, lr: float, test_share: float, control: bool) -> DasOptions:
    """The DAS options as given (`--k 1,4,16` -> (1, 4, 16)); the library checks the values."""
    from addpatch.das.plan import DasOptions
    from addpatch.errors import BadInput

    try:
        ks = tuple(int(part) for part in k.split(",") if part.strip())
    except ValueError:
        raise BadInput(f"cannot read --k {k!r}; give ranks like 1,4,16") from None
    if not ks:
        raise BadInput("--k is empty; give the ranks to train, like 1,4,16")
    return DasOptions(
        ks=ks, learning_rate=lr, epochs=epochs, test_share=test_share, control=control
    )


TemplateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--template",
        help="Prompt template with {num0}, {num1}, ... (one per addend); repeat it to draw one "
        "per example (seeded). Default: 'The sum of {num0} and {num1} is'. "
        "Example: --template '{num0} + {num1} =' --template 'What is {num0} plus {num1}?'",
    ),
]
PrefixOption = Annotated[
    str,
    typer.Option(
        help="Text before the prompt (and before any worked examples). "
        "Example: --prefix $'Add the numbers.\\n'"
    ),
]
SuffixOption = Annotated[
    str,
    typer.Option(help="Text after the prompt. Example: --template '{num0}+{num1}' --suffix ' ='"),
]
ShotsOption = Annotated[
    int,
    typer.Option(
        "--shots",
        help="Worked examples before each prompt ('The sum of 12 and 34 is 46.' in the same "
        "template, never the query itself). Example: --shots 2",
    ),
]
ChatOption = Annotated[
    bool,
    typer.Option(
        "--chat",
        help="Wrap the prompt in the tokenizer's own chat template (user turn, generation "
        "prompt), for Instruct models; worked examples (--shots) become turns of their own, a "
        "user turn asking and an assistant turn answering. Example: --shots 3 --chat",
    ),
]
AnswerPrefixOption = Annotated[
    str,
    typer.Option(
        "--answer-prefix",
        help="Text the reply starts with (assistant prefill), so the model goes on with the "
        "number: after the chat template's generation prompt with --chat, else at the very end "
        "of the prompt. No digits. Example: --chat --answer-prefix 'The answer is'",
    ),
]
InterventionsOnlyOption = Annotated[
    bool,
    typer.Option(
        "--interventions-only",
        help="Stop after storing patched outputs (and labels): no scores or report now; score "
        "later with `addpatch score`, report with `addpatch report`.",
    ),
]
NoFilterOption = Annotated[
    bool,
    typer.Option(
        "--no-filter",
        help="Patch every pair, not only those the model answers right (for a model that "
        "cannot add, e.g. a random-init checkpoint); the run is recorded as unfiltered. "
        "Example: --no-filter",
    ),
]


def prompt_task(
    *,
    addends: int,
    digits: int,
    template: list[str] | None = None,
    prefix: str = "",
    suffix: str = "",
    shots: int = 0,
    chat: bool = False,
    answer_prefix: str = "",
) -> AdditionTask:  # AdditionTask is imported lazily to keep --help fast
    """The addition task of the prompt options (BadInput for a bad template, --shots or
    --answer-prefix)."""
    from addpatch.task.addition import AdditionTask

    return AdditionTask(
        num_addends=addends,
        num_digits=digits,
        templates=tuple(template) if template else None,
        prompt_prefix=prefix,
        prompt_suffix=suffix,
        num_shots=shots,
        chat=chat,
        answer_prefix=answer_prefix,
    )


InformativeOption = Annotated[
    bool,
    typer.Option(
        "--informative",
        help="Score only the examples whose label differs from the base answer for that target.",
    ),
]

MethodOption = Annotated[
    str,
    typer.Option(
        "--method",
        help="patch (exact interchange interventions, one patched run per cell) or attribution "
        "(attribution patching: every cell's effect estimated from two forwards and a backward "
        "per batch; see docs/attribution.md) or das (a rank-k subspace trained per cell and "
        "target on the train pairs, evaluated on the held-out ones; needs --targets; see "
        "docs/das.md). Example: --method attribution",
    ),
]
ValidateOption = Annotated[
    int | None,
    typer.Option(
        "--validate",
        help="With --method attribution: also patch exactly N cells per component drawn at "
        "random (seeded by --seed; all of a component with fewer), so the report can plot the "
        "estimates against exact IIA; 0: none. Default: 64 without --screen, 0 with it. "
        "Example: --method attribution --validate 128",
    ),
]
ScreenOption = Annotated[
    int | None,
    typer.Option(
        "--screen",
        help="With --method attribution: then patch exactly the N cells with the largest mean "
        "estimate per target (their union), recording which were screened in. Example: "
        "--method attribution --screen 20",
    ),
]
